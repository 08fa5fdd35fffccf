"""Where plaintext lives while backupkit works, and proof of who owns it.

Drills and restores decrypt patient data into a work directory: restored
SQLite files, decrypted PostgreSQL archives, downloaded copies, scratch
cluster data directories. Everything there is created private from the first
byte: the CLI sets umask 077, directories are made 0700 (0711 where the
scratch server's OS user must traverse them), files 0600.

A work directory holds ``owner.json`` with the drill's identity and the PID
and start time of the process that made it, and that process holds an
``flock`` on it for its whole life. The kernel drops the lock when the
process dies, even by SIGKILL, so ``cleanup`` knows for certain that a
directory whose lock it can take was left by a dead run, and never touches a
live one. Scratch servers are stopped only when their command line names a
data directory inside such a dead directory, so an unrelated process is never
killed.

``work_dir`` (config) may point at a volume the hospital controls; a work
directory under a parent that others can write without the sticky bit is
refused, because anyone could rename it away or plant a symlink in its place.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .errors import ConfigError

PREFIX = "backupkit-drill-"
MARKER = "owner.json"


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot): with the PID, a process's identity."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()[19]


def check_parents(path: Path, setting: str = "work_dir") -> None:
    """Refuse ``path`` when it or a parent is writable by others without the sticky bit."""
    p = path.resolve()
    for d in [p, *p.parents]:
        try:
            st = os.stat(d)
        except FileNotFoundError:
            continue
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise ConfigError(
                f"{setting} {path}: {d} is writable by every user and has no sticky bit, so anyone could replace "
                f"backupkit's plaintext work files; chmod o-w {d} (or +t), or choose another {setting}"
            )


def base_dir(work_dir: Path | None) -> Path:
    if work_dir is None:
        return Path(tempfile.gettempdir())
    try:
        work_dir.mkdir(parents=True)
        os.chmod(work_dir, 0o711)  # ours: traversable, never listable, so a scratch server running as
    except FileExistsError:  # another OS user (postgres, mysql) can keep its data under it
        pass
    except OSError as e:
        raise ConfigError(f"work_dir {work_dir}: cannot create it ({e.strerror}); check 'work_dir:' in the config") from None
    check_parents(work_dir)
    return work_dir


class WorkDir:
    """A private work directory with its owner marker; holds the marker's flock until ``close()``."""

    def __init__(self, work_dir: Path | None, *, kind: str, system: str, ident: str, mode: int = 0o711):
        base = base_dir(work_dir)
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
        os.chmod(self.path, mode)  # 0711: a scratch server running as another OS user may traverse, never list
        self.info = {"kind": kind, "system": system, "id": ident, "pid": os.getpid(),
                     "process_start": process_start_time(os.getpid()), "host": socket.gethostname(),
                     "started": datetime.now(timezone.utc).isoformat(), "uid": os.getuid()}
        fd = os.open(self.path / MARKER, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps(self.info).encode())
        os.fsync(fd)
        self._fd: int | None = fd

    def note(self, **extra) -> None:
        """Add facts to the marker (e.g. a scratch data directory outside this directory)."""
        self.info.update(extra)
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(self.info).encode(), 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def try_claim(directory: Path) -> tuple[int | None, dict]:
    """Take the marker lock of a work directory left by a dead run: (fd holding the lock, marker info).

    Returns (None, info) while its owner lives. A directory without a readable marker (killed before
    it was written, or made by an older version) is claimed with empty info."""
    marker = directory / MARKER
    try:
        fd = os.open(marker, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return -1, {}
    except OSError:
        return None, {}
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None, {}
    try:
        info = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except ValueError:
        info = {}
    return fd, info if isinstance(info, dict) else {}
