"""The local repository: ``REPO/<system>/<backup-id>/{*.zst.age, manifest.json, manifest.sig}``.

Writes happen in ``REPO/.staging/<system>.<backup-id>/`` and become visible only
through an atomic rename after every file is fsynced. One lock file per system
(``REPO/.locks/<system>.lock``, flock) keeps overlapping runs from
interleaving; the kernel releases it when a holder dies, even by SIGKILL, so a
staging directory found while holding the lock belongs to a dead run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .errors import ConfigError, JobFailed, LockTimeout
from .names import is_backup_id

logger = logging.getLogger(__name__)

STAGING = ".staging"
LOCKS = ".locks"
TRASH = ".trash"
QUARANTINE = ".quarantine"
OWNER = "owner.json"


def new_backup_id(now: datetime | None = None) -> str:
    """A new backup ID: its UTC start time with milliseconds, and a random suffix. The time is
    information only: the order of backups is their ledger sequence, never the clock."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z-" + secrets.token_hex(3)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(path)


@dataclass(frozen=True)
class BackupRef:
    system: str
    backup_id: str
    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"


class Repository:
    def __init__(self, root: Path):
        self.root = root

    def ensure(self) -> None:
        try:
            for d in (self.root, self.root / STAGING, self.root / LOCKS):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root / STAGING, 0o700)
        except OSError as e:
            raise ConfigError(f"repository {self.root}: cannot create ({e.strerror}); check 'repository:' in the config") from None

    # ---- locking -------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, system: str, timeout: float) -> Iterator[None]:
        """Hold the system's lock; wait up to ``timeout`` seconds, then raise LockTimeout."""
        self.ensure()
        path = self.root / LOCKS / f"{system}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        holder = path.read_text().strip() or "another process"
                        raise LockTimeout(
                            f"system {system}: another backupkit run ({holder}) holds {path} for over {timeout:.0f}s; "
                            "let it finish, or raise lock_timeout in the config"
                        ) from None
                    time.sleep(0.2)
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
            yield
        finally:
            os.close(fd)

    # ---- staging -------------------------------------------------------

    def new_staging(self, system: str, backup_id: str, *, operator: str) -> Path:
        self.ensure()
        d = self.root / STAGING / f"{system}.{backup_id}"
        d.mkdir(mode=0o700)
        os.chmod(d, 0o700)  # whatever the umask: dumps and snapshots are plaintext until encrypted
        (d / OWNER).write_text(
            json.dumps(
                {"system": system, "backup_id": backup_id, "pid": os.getpid(), "host": socket.gethostname(),
                 "operator": operator, "started": datetime.now(timezone.utc).isoformat()}
            )
        )
        return d

    def leftover_staging(self, system: str) -> list[tuple[Path, dict]]:
        """Staging directories of ``system`` left by dead runs. Call only while holding the lock."""
        out = []
        base = self.root / STAGING
        if not base.is_dir():
            return out
        for d in sorted(base.glob(f"{system}.*")):
            try:
                info = json.loads((d / OWNER).read_text())
            except (OSError, ValueError):
                info = {"system": system, "backup_id": d.name.split(".", 1)[-1]}
            if info.get("system") == system:
                out.append((d, info))
        return out

    @staticmethod
    def discard(staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def commit(self, staging: Path, system: str, backup_id: str) -> BackupRef:
        """Make a staged backup durable and visible with one rename."""
        work = staging / "work"
        if work.exists():
            shutil.rmtree(work)
        (staging / OWNER).unlink(missing_ok=True)
        fsync_tree(staging)
        dest_parent = self.root / system
        dest_parent.mkdir(exist_ok=True)
        dest = dest_parent / backup_id
        if dest.exists():
            raise JobFailed(f"repository {self.root}: backup {system}/{backup_id} already exists")
        os.rename(staging, dest)
        fsync_dir(dest_parent)
        fsync_dir(self.root / STAGING)
        return BackupRef(system, backup_id, dest)

    # ---- listing -------------------------------------------------------

    def scan(self, system: str) -> tuple[dict[str, BackupRef], list[str]]:
        """(backup directories of ``system`` by ID, warnings about everything else found there).

        A backup directory is a real directory (not a symlink) named by a backup ID that holds a
        ``manifest.json``. Whether it is one this repository committed is the ledger's to say
        (provenance.py), never the directory's. Stray entries are reported, never fatal."""
        refs: dict[str, BackupRef] = {}
        warnings: list[str] = []
        d = self.root / system
        if not d.is_dir():
            return refs, warnings
        for b in sorted(d.iterdir()):
            if not is_backup_id(b.name):
                warnings.append(f"{b}: not a backup ID; ignored (move it out of the repository)")
            elif b.is_symlink() or not b.is_dir():
                warnings.append(f"{b}: not a directory (a symlink or file); ignored")
            elif not (b / "manifest.json").exists() and not (b / "manifest.json").is_symlink():
                warnings.append(f"{b}: has no manifest.json (an incomplete or damaged backup); ignored")
            else:
                refs[b.name] = BackupRef(system, b.name, b)
        return refs, warnings

    def backups(self, system: str | None = None) -> list[BackupRef]:
        """Backup directories, by name (use provenance.History.ordered for the ledger's order)."""
        if not self.root.is_dir():
            return []
        systems = [system] if system else sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return [ref for s in systems for ref in self.scan(s)[0].values()]

    def get(self, system: str, backup_id: str) -> BackupRef:
        ref = self.scan(system)[0].get(backup_id)
        if ref is None:
            raise ConfigError(f"backup {system}/{backup_id} not found in repository {self.root}; see 'backupkit list'")
        return ref

    def _aside(self, ref: BackupRef, where: str) -> Path:
        base = self.root / where
        base.mkdir(exist_ok=True)
        dest = base / f"{ref.system}.{ref.backup_id}.{secrets.token_hex(3)}"
        os.rename(ref.path, dest)
        fsync_dir(ref.path.parent)
        return dest

    def remove(self, ref: BackupRef) -> None:
        """Delete a backup as one step: rename it out of the listing, then delete the files."""
        shutil.rmtree(self._aside(ref, TRASH), ignore_errors=True)

    def quarantine(self, ref: BackupRef) -> Path:
        """Move a directory that is not a committed backup out of every listing, keeping it for inspection."""
        return self._aside(ref, QUARANTINE)

    def empty_trash(self) -> None:
        """Finish deletions a killed prune began (they left every listing already)."""
        shutil.rmtree(self.root / TRASH, ignore_errors=True)
