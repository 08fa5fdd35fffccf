"""SftpTarget against a real OpenSSH sshd: the Target contract, verification
methods, corruption detection and remote filesystem faults."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from backupkit.errors import JobFailed
from backupkit.targets import open_target, unwrap
from backupkit.targets.sftp import SftpTarget
from fixtures.sshd import make_blob

pytestmark = pytest.mark.sftp

KEY = "his/20261126T020000Z-1a2b3c/data.zst.age"


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_round_trip_and_idempotent_put(sshd, tmp_path):
    remote = sshd.remote_dir("rt")
    blob = make_blob(tmp_path / "data", 3_000_000 + 17)
    with SftpTarget("offsite", sshd.target_config(remote)) as t:
        res = t.put(KEY, blob)
        assert t._transport.local_cipher == "aes128-gcm@openssh.com"  # preferred when the server offers it
        assert (res.key, res.size, res.sha256, res.bytes_sent, res.resumed_from) == (KEY, blob.size, blob.sha256, blob.size, 0)
        stored = remote / KEY
        assert sha(stored) == blob.sha256
        assert not (remote / (KEY + ".partial")).exists()

        assert t.stat(KEY) == blob.size
        assert t.stat("his/nope") is None
        assert t.sha256(KEY) == (blob.sha256, res.verify_method)
        with t.open_read(KEY) as f:
            assert hashlib.sha256(f.read()).hexdigest() == blob.sha256

        # an interrupted upload's leftovers are never listed
        (stored.parent / "manifest.json.partial").write_bytes(b"{")
        small = make_blob(tmp_path / "m", 10, seed=2)
        t.put("his/20261126T020000Z-1a2b3c/manifest.json", small)
        t.put("pacs/x/data.zst.age", small)
        assert t.list() == [KEY, "his/20261126T020000Z-1a2b3c/manifest.json", "pacs/x/data.zst.age"]
        assert t.list("his/") == [KEY, "his/20261126T020000Z-1a2b3c/manifest.json"]
        assert t.list("his/20261126T020000Z-1a2b3c/data") == [KEY]
        assert t.list("lis/") == []

        mtime = stored.stat().st_mtime_ns
        again = t.put(KEY, blob)
        assert again.bytes_sent == 0 and again.sha256 == blob.sha256
        assert stored.stat().st_mtime_ns == mtime  # not rewritten

        t.remove(KEY)
        t.remove(KEY)  # missing is not an error
        assert not stored.exists() and t.stat(KEY) is None
        assert KEY not in t.list()
    assert "root@127.0.0.1" in t.describe() and str(remote) in t.describe()


def test_put_replaces_a_wrong_object_of_the_right_size(sshd, tmp_path):
    remote = sshd.remote_dir("wrong")
    blob = make_blob(tmp_path / "data", 100_000)
    (remote / "k").parent.mkdir(parents=True, exist_ok=True)
    (remote / "k").write_bytes(b"\0" * blob.size)
    with SftpTarget("offsite", sshd.target_config(remote)) as t:
        res = t.put("k", blob)
    assert res.bytes_sent == blob.size and sha(remote / "k") == blob.sha256


@pytest.mark.parametrize("verify", ["read-back", "remote-sha256sum", "auto"])
def test_verify_methods(sshd, tmp_path, verify):
    remote = sshd.remote_dir(verify)
    blob = make_blob(tmp_path / "data", 1_500_000, seed=3)
    with SftpTarget("offsite", sshd.target_config(remote, verify=verify)) as t:
        res = t.put("a/b", blob)
        expected = "read-back" if verify == "read-back" else "remote-sha256sum"
        assert res.verify_method == expected
        assert t.sha256("a/b") == (blob.sha256, expected)


def test_auto_falls_back_to_read_back_when_exec_is_refused(sshd_factory, tmp_path):
    # ForceCommand internal-sftp: the account can only speak SFTP, as on many
    # hosted storage boxes; exec'ing sha256sum gets an SFTP server instead.
    server = sshd_factory(("ForceCommand internal-sftp",))
    remote = server.remote_dir("auto")
    blob = make_blob(tmp_path / "data", 700_000, seed=4)
    with SftpTarget("offsite", server.target_config(remote, verify="auto")) as t:
        res = t.put("k", blob)
        assert res.verify_method == "read-back"
        assert t.sha256("k") == (blob.sha256, "read-back")
    with SftpTarget("offsite", server.target_config(remote, verify="remote-sha256sum")) as t:
        with pytest.raises(JobFailed, match="cannot run sha256sum.*verify: read-back"):
            t.sha256("k")


@pytest.mark.parametrize("verify", ["read-back", "remote-sha256sum"])
def test_corrupted_or_truncated_remote_file_is_detected(sshd, tmp_path, verify):
    remote = sshd.remote_dir("corrupt")
    blob = make_blob(tmp_path / "data", 2_000_000, seed=5)
    with SftpTarget("offsite", sshd.target_config(remote, verify=verify)) as t:
        t.put(KEY, blob)
        stored = remote / KEY
        with open(stored, "r+b") as f:  # flip one byte in the middle
            f.seek(1_000_000)
            b = f.read(1)
            f.seek(1_000_000)
            f.write(bytes([b[0] ^ 0xFF]))
        digest, method = t.sha256(KEY)
        assert method == verify and digest != blob.sha256 and digest == sha(stored)
        assert t.stat(KEY) == blob.size

        os.truncate(stored, 1_234_567)
        digest, _ = t.sha256(KEY)
        assert digest != blob.sha256 and t.stat(KEY) == 1_234_567

        # put repairs it
        assert t.put(KEY, blob).sha256 == blob.sha256 and sha(stored) == blob.sha256


def test_read_only_remote_directory_then_fixed(sshd, tmp_path, test_user):
    # Root ignores file modes, so this test logs in as the unprivileged OS user
    # backupkit-test (created by the fixture) and owns the target dir by it.
    remote = sshd.remote_dir("ro", owner=test_user)
    os.chmod(remote, 0o555)
    blob = make_blob(tmp_path / "data", 300_000, seed=6)
    cfg = sshd.target_config(remote, user=test_user)
    with SftpTarget("offsite", cfg) as t:
        with pytest.raises(JobFailed) as e:
            t.put(KEY, blob)
        msg = str(e.value)
        assert "target offsite" in msg and "permission denied" in msg and str(remote) in msg and "writable by" in msg
        assert list(remote.iterdir()) == []

        os.chmod(remote, 0o755)  # the operator fixes it
        res = t.put(KEY, blob)
        assert res.sha256 == blob.sha256 and sha(remote / KEY) == blob.sha256


def test_remote_disk_full_then_fixed(sshd, tmp_path):
    remote = sshd.remote_dir("full")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(remote)], check=True)
    try:
        blob = make_blob(tmp_path / "data", 3_000_000, seed=7)
        with SftpTarget("offsite", sshd.target_config(remote)) as t:
            with pytest.raises(JobFailed) as e:
                t.put("big", blob)
            msg = str(e.value)
            assert "target offsite" in msg and str(remote) in msg and "full" in msg and "free space" in msg
            assert t.list() == []
            subprocess.run(["mount", "-o", "remount,size=8m", str(remote)], check=True)
            assert t.put("big", blob).sha256 == blob.sha256
            assert sha(remote / "big") == blob.sha256
    finally:
        subprocess.run(["umount", "-l", str(remote)], check=False)


def test_open_target_builds_wrapped_sftp(sshd, tmp_path):
    remote = sshd.remote_dir("factory")
    cfg = sshd.target_config(remote, max_rate="50MB/s", retry={"attempts": 3, "max_time": 5, "initial_delay": 0})
    t = open_target("offsite", cfg)
    try:
        assert isinstance(unwrap(t), SftpTarget)
        blob = make_blob(tmp_path / "data", 50_000, seed=8)
        assert t.put("x", blob).sha256 == blob.sha256
        assert t.list() == ["x"]
    finally:
        t.close()
    shutil.rmtree(remote)
