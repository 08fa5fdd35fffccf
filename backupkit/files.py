"""Reading files an attacker may have planted: regular files only, never
through a symlink, never more than a bound.

A repository or an offsite directory is writable by more people than hold
the keys. A stream replaced by a symlink to ``/dev/zero`` or a FIFO must fail
verification at once instead of hanging it, and a multi-gigabyte "manifest"
must not be read into memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import VerificationFailed

MANIFEST_MAX = 64 << 20  # a manifest with fingerprints of many thousand tables stays far below this
SIGNATURE_MAX = 4096


def open_regular(path: Path, what: str) -> BinaryIO:
    """Open ``path`` for reading; raise VerificationFailed unless it is a regular file reached without a symlink.

    Raises FileNotFoundError when it does not exist (callers turn that into "missing")."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == 40:  # ELOOP: the last component is a symlink
            raise VerificationFailed(f"{what}: {path} is a symbolic link, not a regular file; refusing to follow it") from None
        if isinstance(e, FileNotFoundError):
            raise
        if isinstance(e, IsADirectoryError):
            raise VerificationFailed(f"{what}: {path} is a directory, not a regular file") from None
        raise VerificationFailed(f"{what}: cannot open {path} ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, FIFO or socket"
        raise VerificationFailed(f"{what}: {path} is {kind}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """Read a small regular file whole; raise VerificationFailed when it exceeds ``limit`` bytes."""
    with open_regular(path, what) as f:
        data = f.read(limit + 1) if limit else b""
        while len(data) <= limit:
            more = f.read(limit + 1 - len(data))
            if not more:
                break
            data += more
    if len(data) > limit:
        raise VerificationFailed(f"{what}: {path.name} is larger than {limit} bytes; it is not a backupkit file")
    return data


def is_regular(path: Path) -> bool:
    """True when ``path`` itself (not a symlink target) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def create_private(path: Path, mode: str = "wb") -> BinaryIO:
    """Create (or truncate) ``path`` with mode 0600 from the first byte, whatever the umask, never via a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if mode.startswith("a") else os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)
