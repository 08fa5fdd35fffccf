"""The artifact read path (a decrypting thread, the decompressing one, a thread that hashes and
writes): digests, corruption, truncation, a failing destination, and no thread left behind."""

from __future__ import annotations

import errno
import io
import os
import threading

import pytest
from pyrage import x25519

from backupkit import artifact
from backupkit.errors import JobFailed, VerificationFailed
from backupkit.keys import Identity, Recipient

SIZE = 9 * artifact.CHUNK + 12345  # many more chunks than the hand-off holds


def _identity() -> Identity:
    secret = x25519.Identity.generate()
    return Identity(secret=secret, recipient=Recipient(str(secret.to_public())))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    ident = _identity()
    content = os.urandom(SIZE // 2) + b"backupkit " * (SIZE // 20)  # half incompressible, half repetitive
    path = tmp_path_factory.mktemp("art") / "data.zst.age"
    info = artifact.write_stream(io.BytesIO(content), path, [ident.recipient], level=1, threads=2)
    return ident, content, path, info


def _read(path, ident, info, writer=None):
    out = writer if writer is not None else io.BytesIO()
    with open(path, "rb") as f:
        artifact.read_stream(f, out, [ident], info, what="backup t/1")
    return out


def _no_decrypt_thread():
    return not any(t.name in ("age-decrypt", "plain-write") and t.is_alive() for t in threading.enumerate())


def test_round_trip_checks_both_digests(written):
    ident, content, path, info = written
    assert _read(path, ident, info).getvalue() == content
    assert _no_decrypt_thread()


@pytest.mark.parametrize("where", [0.1, 0.5, 0.97])
def test_a_flipped_byte_fails_authentication(written, tmp_path, where):
    ident, _, path, info = written
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x40
    bad = tmp_path / "flipped.zst.age"
    bad.write_bytes(bytes(data))
    with pytest.raises(VerificationFailed, match="fails age authentication|SHA-256 differs"):
        _read(bad, ident, info)
    assert _no_decrypt_thread()


def test_a_truncated_artifact_fails(written, tmp_path):
    ident, _, path, info = written
    bad = tmp_path / "short.zst.age"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VerificationFailed):
        _read(bad, ident, info)
    assert _no_decrypt_thread()


def test_a_different_manifest_digest_fails_after_the_bytes(written):
    ident, content, path, info = written
    forged = artifact.StreamInfo(**{**info.__dict__, "content_sha256": "0" * 64})
    out = io.BytesIO()
    with pytest.raises(VerificationFailed, match="content SHA-256 differs"):
        _read(path, ident, forged, out)
    assert out.getvalue() == content  # written, then judged: the engine must not trust it


def test_the_wrong_identity_is_a_job_failure_naming_the_keys(written):
    _, _, path, info = written
    with pytest.raises(JobFailed, match="no identity matches"):
        _read(path, _identity(), info)
    assert _no_decrypt_thread()


class _FullDisk(io.RawIOBase):
    def __init__(self, limit: int):
        self.limit, self.n = limit, 0

    def writable(self):
        return True

    def write(self, b):
        if self.n + len(b) > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.n += len(b)
        return len(b)


@pytest.mark.parametrize("short_by", [None, -2 * artifact.CHUNK, 1], ids=["first-write", "middle", "last-byte"])
def test_a_full_destination_stops_decryption_and_raises_its_own_error(written, short_by):
    # The last-byte case fails on the writing thread after decompression has finished: the error
    # must still be raised as itself, not lost and not reported as a corrupt artifact.
    ident, content, path, info = written
    limit = 0 if short_by is None else (-short_by if short_by < 0 else len(content) - short_by)
    with pytest.raises(OSError) as e:
        _read(path, ident, info, _FullDisk(limit))
    assert e.value.errno == errno.ENOSPC
    assert not isinstance(e.value, BrokenPipeError)
    assert _no_decrypt_thread()
