"""The ``local`` target: a directory such as a mounted NAS or USB disk.

The base directory must already exist: if a NAS is not mounted we must not
quietly fill the local disk under its mount point.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

from ..artifact import sha256_file
from ..errors import JobFailed, VerificationFailed
from ..files import open_regular
from .base import CHUNK, Blob, PutResult, Target


class LocalTarget(Target):
    def __init__(self, name: str, cfg):
        self.name = name
        self.base = Path(cfg.path)

    def describe(self) -> str:
        return f"local {self.base}"

    def _path(self, key: str) -> Path:
        if not self.base.is_dir():
            raise JobFailed(
                f"target {self.name}: directory {self.base} does not exist; mount the disk or create the directory"
            )
        parts = key.split("/")
        if key.startswith("/") or ".." in parts:
            raise ValueError(f"key {key!r} escapes the target directory")
        # the last component is never followed: a stream replaced by a symlink is found by stat/open_read
        p = self.base / key
        if self.base.resolve() not in p.parent.resolve().parents and p.parent.resolve() != self.base.resolve():
            raise VerificationFailed(f"target {self.name}: {p.parent} leads outside {self.base} (a symlinked directory)")
        return p

    def _fail(self, e: OSError, path: Path, doing: str) -> JobFailed:
        hint = {28: "the disk is full; free space", 30: "the file system is read-only; remount it read-write",
                13: "permission denied; fix ownership/permissions"}.get(e.errno, e.strerror or str(e))
        return JobFailed(f"target {self.name}: cannot {doing} {path}: {hint}, then run 'backupkit copy'")

    def put(self, key: str, blob: Blob) -> PutResult:
        dest = self._path(key)
        if dest.exists() and dest.stat().st_size == blob.size and sha256_file(dest)[0] == blob.sha256:
            return PutResult(key, blob.size, blob.sha256, "local-rehash", 0)
        partial = dest.with_name(dest.name + ".partial")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            offset = partial.stat().st_size if partial.exists() else 0
            if offset > blob.size:
                partial.unlink()
                offset = 0
            sent = 0
            with blob.open(offset) as src, open(partial, "ab" if offset else "wb") as out:
                while True:
                    b = src.read(CHUNK)
                    if not b:
                        break
                    out.write(b)
                    sent += len(b)
                out.flush()
                os.fsync(out.fileno())
        except OSError as e:
            raise self._fail(e, partial, "write") from None
        digest, size = sha256_file(partial)
        if digest != blob.sha256 or size != blob.size:
            partial.unlink(missing_ok=True)
            raise VerificationFailed(f"target {self.name}: {key} hash after copy differs from the source; copy discarded")
        try:
            os.replace(partial, dest)
        except OSError as e:
            raise self._fail(e, dest, "rename into") from None
        return PutResult(key, size, digest, "local-rehash", sent, resumed_from=offset)

    def stat(self, key: str) -> int | None:
        try:
            return os.lstat(self._path(key)).st_size  # a symlink's own size: it never matches a manifest
        except (FileNotFoundError, NotADirectoryError):
            return None

    def sha256(self, key: str) -> tuple[str, str]:
        p = self._path(key)
        try:
            return sha256_file(p)[0], "local-rehash"
        except FileNotFoundError:
            raise JobFailed(f"target {self.name}: {key} is missing") from None

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open_regular(self._path(key), f"target {self.name}")
        except FileNotFoundError:
            raise JobFailed(f"target {self.name}: {key} is missing") from None

    def list(self, prefix: str = "") -> list[str]:
        root = self._path(prefix) if prefix else self.base
        if not root.exists():
            return []
        return sorted(
            str(p.relative_to(self.base)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".partial")
        )

    def remove(self, key: str) -> None:
        p = self._path(key)
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
        base = self.base.resolve()
        for parent in p.parents:  # drop directories the removal emptied, never the base itself
            if parent == base or base not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break
