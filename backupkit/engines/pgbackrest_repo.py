"""pgBackRest as a program, and its repository as files.

- ``PgBackrest``: run ``pgbackrest`` (as the repository's OS user when we are root) with a
  minimal environment (no secret ever on argv or in the environment), return its stdout,
  fail with one line and the tail of its stderr;
- ``repo_members``: the files of one backup (its whole chain: a diff/incr references files
  of earlier sets) and of the WAL range it needs, as (path, name inside the tar);
- ``pack``: a tar of those files, streamed through a pipe (never held whole on disk or in memory);
- ``unpack``: the reverse, from a RestoreSource stream into a private directory.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import os
import pwd
import queue
import re
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import BackupkitError, ConfigError, JobFailed, VerificationFailed
from .kit import find_tool, minimal_env, run_as_argv, set_pipe_size, tail_text

logger = logging.getLogger(__name__)

DEFAULT_REPO = Path("/var/lib/pgbackrest")
MIN_VERSION = (2, 36)  # info --output=json with lsn, --target-exclusive, --tablespace-map-all
TAR_ROOT = "repo"  # every member of the data stream lives under repo/ (the layout of a pgBackRest repository)


def child_env() -> dict[str, str]:
    """The environment of every pgbackrest child: no PGBACKREST_* (the cipher pass would travel there)."""
    return minimal_env()


@dataclass
class PgBackrest:
    bin: Path
    stanza: str
    config: Path | None
    run_as: str | None
    what: str

    def argv(self, command: str, *options: str, params: tuple[str, ...] = ()) -> list[str]:
        base = [str(self.bin)]
        if self.config is not None:
            base.append(f"--config={self.config}")
        return run_as_argv(self.run_as, [*base, f"--stanza={self.stanza}", *options, command, *params])

    def run(self, command: str, *options: str, timeout: float | None = None, params: tuple[str, ...] = ()) -> str:
        argv = self.argv(command, *options, params=params)
        try:
            proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, env=child_env(), cwd="/",
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise JobFailed(f"{self.what}: pgbackrest {command} did not finish within {timeout}s") from None
        if proc.returncode != 0:
            raise JobFailed(f"{self.what}: pgbackrest {command} failed (exit {proc.returncode}): "
                            f"{tail_text(proc.stderr or proc.stdout) or 'no message'}")
        return proc.stdout.decode("utf-8", "replace")

    def info(self) -> list[dict[str, Any]]:
        out = self.run("info", "--output=json")
        try:
            return json.loads(out)
        except ValueError as e:
            raise JobFailed(f"{self.what}: pgbackrest info --output=json printed no JSON ({e})") from None


def find_pgbackrest(bin_path: Path | None) -> Path:
    if bin_path is not None:
        p = Path(bin_path)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ConfigError(f"source.pgbackrest.bin {p} is not an executable file; install the Debian package "
                              "pgbackrest or correct the path")
        return p
    path = find_tool(["pgbackrest"], package="pgbackrest", versioned=False).path  # it has no --version
    try:
        out = subprocess.run([str(path), "version"], capture_output=True, text=True, timeout=30, check=False,
                             stdin=subprocess.DEVNULL, env=child_env()).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    m = re.search(r"pgBackRest (\d+)\.(\d+)", out)
    if not m or (int(m.group(1)), int(m.group(2))) < MIN_VERSION:
        raise ConfigError(f"{path} is not pgBackRest {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer "
                          f"({out.strip() or 'no version'}); install the Debian package pgbackrest")
    return path


DEFAULT_CONFIG = Path("/etc/pgbackrest/pgbackrest.conf")


def config_option(cfg, option: str) -> str | None:
    """An option of the stanza (or [global]) in pgBackRest's configuration file, or None."""
    path = Path(cfg.config) if cfg.config is not None else DEFAULT_CONFIG
    if not path.is_file():
        return None
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError) as e:
        raise ConfigError(f"pgBackRest configuration {path} cannot be read ({e}); set source.pgbackrest.repo_path "
                          "and check the file") from None
    for section in (cfg.stanza, "global"):
        if parser.has_option(section, option):
            return parser.get(section, option).strip()
    return None


def repo_path(cfg, repo: int = 1) -> Path:
    """The repository directory: ``repo_path`` of the policy, else ``repoN-path`` of the config, else the default."""
    if cfg.repo_path is not None:
        return Path(cfg.repo_path)
    value = config_option(cfg, f"repo{repo}-path")
    return Path(value) if value else DEFAULT_REPO


def repo_cipher(cfg, repo: int = 1) -> str:
    """``repoN-cipher-type`` of the configuration (``none`` when unset). Never reads the pass itself."""
    return config_option(cfg, f"repo{repo}-cipher-type") or "none"


def repo_owner(path: Path) -> str | None:
    """The OS user owning the repository (pgBackRest runs as that user when we are root)."""
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (OSError, KeyError):
        return None


def _walk(root: Path, arc: str) -> list[tuple[Path, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            out.append((p, f"{arc}/{p.relative_to(root).as_posix()}"))
    return out


def segment_files(archive_dir: Path, segments: list[str]) -> tuple[list[Path], list[str]]:
    """The repository files of ``segments`` (``<seg>-<sha1>[.gz|.lz4|.zst|...]``) and the names missing."""
    found, missing = [], []
    for seg in segments:
        d = archive_dir / seg[:16]
        hits = sorted(d.glob(f"{seg}-*")) if d.is_dir() else []
        if hits:
            found.append(hits[0])
        else:
            missing.append(seg)
    return found, missing


ARCHIVE_WAIT = 120.0  # seconds to wait for a switched WAL segment to reach the repository


def wait_archived(archive_dir: Path, segment: str, what: str, timeout: float = ARCHIVE_WAIT) -> None:
    """Wait until ``segment`` is in the repository's archive (JobFailed naming it after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not segment_files(archive_dir, [segment])[0]:
        if time.monotonic() > deadline:
            raise JobFailed(f"{what}: WAL segment {segment} did not reach the pgBackRest archive {archive_dir} "
                            f"within {int(timeout)}s; check archive_command (pg_stat_archiver)")
        time.sleep(0.2)


def repo_members(repo: Path, stanza: str, labels: list[str], archive_id: str,
                 segments: list[str]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Files to pack for a backup: info files, every set of its chain, the timeline history files and
    the WAL segments; returns (members, missing segment names)."""
    members: list[tuple[Path, str]] = []
    bdir = repo / "backup" / stanza
    adir = repo / "archive" / stanza
    for d, arc in ((bdir, f"{TAR_ROOT}/backup/{stanza}"), (adir, f"{TAR_ROOT}/archive/{stanza}")):
        for name in ("backup.info", "backup.info.copy", "archive.info", "archive.info.copy"):
            if (d / name).is_file():
                members.append((d / name, f"{arc}/{name}"))
    for label in labels:
        sdir = bdir / label
        if not sdir.is_dir():
            raise JobFailed(f"pgBackRest backup set {sdir} is missing from the repository; take a full backup "
                            "(source.pgbackrest.type: full)")
        members += _walk(sdir, f"{TAR_ROOT}/backup/{stanza}/{label}")
    arch = adir / archive_id
    for hist in sorted(arch.glob("*.history")) if arch.is_dir() else []:
        members.append((hist, f"{TAR_ROOT}/archive/{stanza}/{archive_id}/{hist.name}"))
    files, missing = segment_files(arch, segments)
    members += [(f, f"{TAR_ROOT}/archive/{stanza}/{archive_id}/{f.parent.name}/{f.name}") for f in files]
    return members, missing


class MemberFeed:
    """Tar members known in two parts: ``first`` at once (the backup set), the rest later (the WAL,
    known only after the fingerprint snapshot): iterating yields ``first``, then blocks until
    ``finish(rest)`` (or raises what ``cancel`` was given), so packing can start before the rest is known."""

    def __init__(self, first: list[tuple[Path, str]]):
        self.first = first
        self._rest: queue.Queue = queue.Queue(maxsize=1)
        self._cancelled: BaseException | None = None

    def __iter__(self) -> Iterator[tuple[Path, str]]:
        for member in self.first:
            if self._cancelled is not None:  # stop at the next file, not after the whole set
                raise self._cancelled
            yield member
        rest = self._rest.get()
        if isinstance(rest, BaseException):
            raise rest
        yield from rest

    def finish(self, rest: list[tuple[Path, str]]) -> None:
        self._rest.put_nowait(rest)

    def cancel(self, why: str = "the backup stopped before its WAL was known") -> None:
        self._cancelled = JobFailed(why)
        with contextlib.suppress(queue.Full):
            self._rest.put_nowait(self._cancelled)


class Packer:
    """A tar of ``members`` (a list, or a MemberFeed) written by a thread into a pipe; ``reader`` is the
    pipe's read end."""

    def __init__(self, members: Iterable[tuple[Path, str]]):
        self.members = members
        r, w = os.pipe()
        self.reader = os.fdopen(r, "rb", buffering=0)
        set_pipe_size(self.reader)
        self._w = os.fdopen(w, "wb", buffering=1 << 20)
        self.error: BaseException | None = None
        self.count = 0
        self.thread = threading.Thread(target=self._run, name="pgbackrest-pack", daemon=True)

    def start(self) -> "Packer":
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with tarfile.open(fileobj=self._w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path, arc in self.members:
                    info = tar.gettarinfo(str(path), arcname=arc)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                    self.count += 1
        except BaseException as e:  # reported by finish() in the calling thread
            self.error = e
        finally:
            try:
                self._w.close()
            except OSError:
                pass

    def finish(self, what: str) -> int:
        self.thread.join()
        self.reader.close()
        if self.error is not None:
            e = self.error
            raise JobFailed(f"{what}: packing the pgBackRest repository files failed: "
                            f"{getattr(e, 'strerror', None) or e} ({getattr(e, 'filename', '') or ''})") from None
        return self.count

    def abort(self) -> None:
        self.reader.close()  # the writer gets EPIPE and stops
        self.thread.join(timeout=30)


def unpack(source, name: str, dest: Path, what: str) -> int:
    """Stream ``name`` of a RestoreSource (a tar) into ``dest``; return the member count. Refuses
    members outside ``repo/``. The caller must not use ``dest`` unless this returns (hashes are
    checked after the last byte)."""
    r, w = os.pipe()
    reader = os.fdopen(r, "rb")
    writer = os.fdopen(w, "wb")
    err: list[BaseException] = []

    def feed() -> None:
        try:
            source.stream_to(name, writer)
        except BaseException as e:
            err.append(e)
        finally:
            try:
                writer.close()
            except OSError:
                pass

    t = threading.Thread(target=feed, name="pgbackrest-unpack", daemon=True)
    t.start()
    count = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for m in tar:
                parts = Path(m.name).parts
                if not parts or parts[0] != TAR_ROOT or ".." in parts or m.name.startswith("/") or not (m.isfile() or m.isdir()):
                    raise VerificationFailed(f"{what}: unexpected member {m.name!r} in the data stream")
                tar.extract(m, dest, set_attrs=False, filter="data") if hasattr(tarfile, "data_filter") \
                    else tar.extract(m, dest, set_attrs=False)
                count += 1
    except BaseException as e:
        reader.close()
        t.join()
        if err and isinstance(err[0], BackupkitError):  # the stream's own failure (hash mismatch) comes first
            raise err[0] from None
        if isinstance(e, tarfile.TarError):
            raise VerificationFailed(f"{what}: the data stream is not a readable tar ({e})") from None
        raise
    # drain whatever follows the tar end marker so the writer finishes and the hash is checked
    while reader.read(1 << 20):
        pass
    reader.close()
    t.join()
    if err:
        raise err[0]
    return count
