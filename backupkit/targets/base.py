"""The contract every offsite target implements (after restic's Backend).

A target stores opaque files under relative keys such as
``his/20261126T020000Z-1a2b3c/data.zst.age``. It knows nothing about backups,
manifests or the ledger. Behaviour every target needs (retries, bandwidth
limits) lives in ``targets/wrappers.py`` and composes around any target.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

CHUNK = 1 << 20


@dataclass(frozen=True)
class Blob:
    """A local file to upload, with the size and SHA-256 it must have remotely."""

    path: Path
    size: int
    sha256: str
    # Wrappers (bandwidth limit, progress) decorate the reader; the target calls
    # ``open(offset)`` and never opens ``path`` itself.
    opener: Callable[[Path, int], BinaryIO] | None = None

    def open(self, offset: int = 0) -> BinaryIO:
        if self.opener is not None:
            return self.opener(self.path, offset)
        f = open(self.path, "rb")
        f.seek(offset)
        return f


@dataclass
class PutResult:
    """What an upload did: how it verified the remote copy and how many bytes it sent."""

    key: str
    size: int
    sha256: str
    verify_method: str  # "local-rehash" | "remote-sha256sum" | "read-back"
    bytes_sent: int
    resumed_from: int = 0


class Target(abc.ABC):
    """One offsite destination. All methods may raise JobFailed naming the target."""

    name: str

    @abc.abstractmethod
    def put(self, key: str, blob: Blob) -> PutResult:
        """Store ``blob`` at ``key`` atomically.

        Write to ``key + ".partial"`` (resuming from its size when it is a prefix
        of the blob), verify the remote SHA-256 equals ``blob.sha256``, then
        rename into place. A key that already exists with the right hash is
        left alone. Idempotent: safe to call again after any failure.
        Raises VerificationFailed if the remote hash does not match after upload.
        """

    @abc.abstractmethod
    def stat(self, key: str) -> int | None:
        """Size of the object at ``key``, or None if it does not exist."""

    @abc.abstractmethod
    def sha256(self, key: str) -> tuple[str, str]:
        """(hex SHA-256 of the object at ``key``, method used). Must re-read or
        re-hash the stored bytes; never trust a cached value."""

    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """Open the object for streaming read. The caller closes it. Idempotent."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (recursive), excluding ``.partial`` files."""

    @abc.abstractmethod
    def remove(self, key: str) -> None:
        """Delete ``key``; a missing key is not an error."""

    def close(self) -> None:
        """Release connections. Safe to call more than once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> str:
        """Human label without secrets, e.g. ``sftp backup@dr.example.org:22/srv/backupkit``."""
        return self.name

