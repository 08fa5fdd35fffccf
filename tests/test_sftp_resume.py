"""Interrupted uploads through a relay that cuts the connection: resume, retry."""

from __future__ import annotations

import hashlib
import time

import pytest

from backupkit.config import RetryConfig
from backupkit.errors import JobFailed
from backupkit.targets.sftp import SftpTarget
from backupkit.targets.wrappers import RetryTarget
from fixtures.sshd import make_blob

pytestmark = pytest.mark.sftp

SIZE = 8 << 20
CUT = 3 << 20


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def settled_size(path) -> int:
    """The file's size once the server has written what it had received before the cut."""
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        size = path.stat().st_size
        if size != last:
            last, stable_since = size, time.monotonic()
        elif time.monotonic() - stable_since > 0.5:
            return size
        time.sleep(0.05)
    return last


def test_cut_connection_then_resume(sshd, relay, tmp_path):
    remote = sshd.remote_dir("resume")
    blob = make_blob(tmp_path / "data", SIZE)
    cutting = relay(drop_after=CUT)
    with SftpTarget("offsite", sshd.target_config(remote, port=cutting.port)) as t:
        with pytest.raises(JobFailed) as e:
            t.put("his/b/data.zst.age", blob)
    msg = str(e.value)
    assert "target offsite" in msg and "lost" in msg and f"127.0.0.1:{cutting.port}" in msg
    assert cutting.dropped == 1
    partial = remote / "his/b/data.zst.age.partial"
    have = settled_size(partial)
    assert 0 < have < SIZE
    assert not (remote / "his/b/data.zst.age").exists()

    clean = relay()
    with SftpTarget("offsite", sshd.target_config(remote, port=clean.port)) as t:
        res = t.put("his/b/data.zst.age", blob)
    assert res.resumed_from == have
    assert res.bytes_sent == SIZE - have < SIZE
    assert clean.c2s < SIZE  # the wire carried less than the whole file
    assert sha(remote / "his/b/data.zst.age") == blob.sha256
    assert not partial.exists()


def test_resume_rejects_a_partial_that_is_not_a_prefix(sshd, tmp_path):
    remote = sshd.remote_dir("bad-partial")
    blob = make_blob(tmp_path / "data", 3 << 20, seed=1)
    (remote / "k.partial").write_bytes(b"x" * (1 << 20))  # from some other file
    with SftpTarget("offsite", sshd.target_config(remote)) as t:
        res = t.put("k", blob)
    assert res.resumed_from == 0 and res.bytes_sent == blob.size
    assert sha(remote / "k") == blob.sha256


def test_resume_with_a_corrupt_early_prefix_starts_over(sshd, tmp_path):
    # The tail matches (so we resume) but an early byte was damaged: the final
    # hash catches it and the upload restarts from zero instead of failing.
    remote = sshd.remote_dir("corrupt-prefix")
    blob = make_blob(tmp_path / "data", 4 << 20, seed=2)
    prefix = bytearray(open(blob.path, "rb").read(3 << 20))
    prefix[10] ^= 0xFF
    (remote / "k.partial").write_bytes(bytes(prefix))
    with SftpTarget("offsite", sshd.target_config(remote)) as t:
        res = t.put("k", blob)
    assert res.resumed_from == 0 and res.bytes_sent == (1 << 20) + blob.size
    assert sha(remote / "k") == blob.sha256


def test_retry_target_resumes_within_one_call(sshd, relay, tmp_path, caplog):
    remote = sshd.remote_dir("retry")
    blob = make_blob(tmp_path / "data", SIZE, seed=3)
    # Every connection is cut after 3 MiB on the wire; each gets ~1-1.5 MiB
    # written (the rest was in flight), so it takes several resumed attempts.
    cutting = relay(drop_after=CUT)
    sleeps = []
    inner = SftpTarget("offsite", sshd.target_config(remote, port=cutting.port))
    with RetryTarget(inner, RetryConfig(attempts=20, max_time=120, initial_delay=0.01), sleep=sleeps.append) as t:
        res = t.put("k", blob)
    assert cutting.dropped >= 2 and cutting.connections >= 3
    assert res.resumed_from > 0 and res.bytes_sent < SIZE
    assert sha(remote / "k") == blob.sha256
    assert sleeps[:2] == [0.01, 0.02]  # exponential backoff
    assert sum("attempt 1 of 20 failed" in r.getMessage() for r in caplog.records) == 1


def test_retry_gives_up_with_the_last_error(sshd, relay, tmp_path):
    remote = sshd.remote_dir("give-up")
    blob = make_blob(tmp_path / "data", SIZE, seed=4)
    cutting = relay(drop_after=200_000)  # too little progress to ever finish in 2 attempts
    inner = SftpTarget("offsite", sshd.target_config(remote, port=cutting.port))
    with RetryTarget(inner, RetryConfig(attempts=2, max_time=60, initial_delay=0), sleep=lambda s: None) as t:
        with pytest.raises(JobFailed) as e:
            t.put("k", blob)
    msg = str(e.value)
    assert msg.startswith("target offsite: upload of k failed after 2 attempts") and "lost" in msg
    assert cutting.connections == 2
