"""Host-key checking, authentication failures and `targets trust` against a real sshd."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from backupkit.actions.targets import trust
from backupkit.errors import ConfigError, JobFailed
from backupkit.targets.sftp import SftpTarget
from fixtures.sshd import free_port, keygen, make_blob

pytestmark = pytest.mark.sftp


def server_fingerprint(sshd) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(sshd.host_key) + ".pub"], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]  # "256 SHA256:... comment (ED25519)"


def accepted_logins(sshd) -> int:
    return sshd.log_file.read_text().count("Accepted publickey")


def test_hashed_known_hosts_entry_is_accepted(sshd, tmp_path):
    assert sshd.known_hosts.read_text().startswith("|1|")  # the fixture writes a hashed entry
    with SftpTarget("offsite", sshd.target_config(sshd.remote_dir("h"))) as t:
        assert t.list() == []


def test_changed_host_key_is_refused_and_nothing_written(sshd, tmp_path):
    remote = sshd.remote_dir("changed")
    blob = make_blob(tmp_path / "data", 10_000)
    sshd.regenerate_host_key()
    new_fp = server_fingerprint(sshd)
    before = accepted_logins(sshd)
    with SftpTarget("offsite", sshd.target_config(remote)) as t:
        with pytest.raises(ConfigError) as e:
            t.put("k", blob)
    msg = str(e.value)
    assert e.value.exit_code == 2
    assert f"127.0.0.1:{sshd.port}" in msg and new_fp in msg and "CHANGED" in msg
    assert "backupkit targets trust offsite" in msg
    assert list(remote.iterdir()) == []
    assert accepted_logins(sshd) == before  # we never even authenticated


def test_unknown_host_is_refused(sshd, tmp_path):
    remote = sshd.remote_dir("unknown")
    empty = tmp_path / "known_hosts"
    empty.write_text(f"[127.0.0.1]:{sshd.port + 1} {sshd.host_public_line()}\n")  # other port only
    with SftpTarget("offsite", sshd.target_config(remote, known_hosts=empty)) as t:
        with pytest.raises(ConfigError) as e:
            t.put("k", make_blob(tmp_path / "d", 10))
    msg = str(e.value)
    assert f"127.0.0.1:{sshd.port}" in msg and server_fingerprint(sshd) in msg
    assert "not in known_hosts" in msg and "backupkit targets trust offsite" in msg
    assert list(remote.iterdir()) == []


def test_missing_known_hosts_file_is_unknown_host(sshd, tmp_path):
    cfg = sshd.target_config(sshd.remote_dir("m"), known_hosts=tmp_path / "nope" / "known_hosts")
    with pytest.raises(ConfigError, match="targets trust offsite"):
        SftpTarget("offsite", cfg).list()
    assert not (tmp_path / "nope").exists()


def no_secrets(msg: str, sshd) -> None:
    private = sshd.client_key.read_text()
    body = "".join(line for line in private.splitlines() if not line.startswith("-----"))
    public_b64 = (sshd.client_key.parent / (sshd.client_key.name + ".pub")).read_text().split()[1]
    assert body[:20] not in msg and public_b64 not in msg and "PRIVATE KEY" not in msg


def test_wrong_user_fails_naming_target_and_host(sshd, tmp_path):
    with SftpTarget("offsite", sshd.target_config(sshd.remote_dir("u"), user="nosuchuser")) as t:
        with pytest.raises(JobFailed) as e:
            t.list()
    msg = str(e.value)
    assert e.value.exit_code == 1
    assert "target offsite" in msg and f"nosuchuser@127.0.0.1:{sshd.port}" in msg and "authorized_keys" in msg
    no_secrets(msg, sshd)


def test_wrong_key_fails_without_leaking_it(sshd, tmp_path):
    other = keygen(tmp_path / "other_ed25519")
    with SftpTarget("offsite", sshd.target_config(sshd.remote_dir("k"), key_file=other)) as t:
        with pytest.raises(JobFailed) as e:
            t.list()
    msg = str(e.value)
    assert "target offsite" in msg and f"127.0.0.1:{sshd.port}" in msg and str(other) in msg
    assert other.read_text().splitlines()[1][:20] not in msg
    no_secrets(msg, sshd)


def test_key_file_readable_by_others_is_refused(sshd, tmp_path):
    key = tmp_path / "loose"
    key.write_bytes(sshd.client_key.read_bytes())
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        SftpTarget("offsite", sshd.target_config(sshd.remote_dir("l"), key_file=key)).list()


def test_unreachable_host_fails_fast(sshd, tmp_path):
    port = free_port()  # nothing listens there
    cfg = sshd.target_config(sshd.remote_dir("x"), port=port, timeout=3)
    start = time.monotonic()
    with pytest.raises(JobFailed) as e:
        SftpTarget("offsite", cfg).list()
    assert time.monotonic() - start < 3
    assert f"127.0.0.1:{port}" in str(e.value) and "target offsite" in str(e.value)


def test_silent_server_times_out(tmp_path, sshd):
    import socket

    with socket.socket() as listener:  # accepts TCP but never says SSH-2.0
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        cfg = sshd.target_config(sshd.remote_dir("s"), port=listener.getsockname()[1], timeout=1)
        start = time.monotonic()
        with pytest.raises(JobFailed, match=f"127.0.0.1:{listener.getsockname()[1]}"):
            SftpTarget("offsite", cfg).list()
        assert time.monotonic() - start < 5


def test_trust_adds_key_only_when_confirmed(sshd, tmp_path):
    kh = tmp_path / "etc" / "known_hosts"
    cfg = sshd.target_config(sshd.remote_dir("t"), known_hosts=kh)
    questions = []

    with pytest.raises(ConfigError, match="not trusted"):
        trust("offsite", cfg, confirm=lambda q: questions.append(q) or False)
    assert not kh.exists()
    assert server_fingerprint(sshd) in questions[0] and "ssh-ed25519" in questions[0]

    msg = trust("offsite", cfg, confirm=lambda q: True)
    assert server_fingerprint(sshd) in msg
    assert kh.read_text() == sshd.known_hosts_line()
    assert oct(kh.parent.stat().st_mode & 0o777) == "0o755" and oct(kh.stat().st_mode & 0o777) == "0o644"
    with SftpTarget("offsite", cfg) as t:
        assert t.list() == []
    # already trusted: no question
    assert "already trusted" in trust("offsite", cfg, confirm=lambda q: pytest.fail("asked again"))


def test_trust_replaces_a_changed_key(sshd, tmp_path):
    cfg = sshd.target_config(sshd.remote_dir("t2"))
    kh = sshd.known_hosts
    kh.write_text("# keep me\n" + kh.read_text() + "[other.example]:22 " + sshd.host_public_line() + "\n")
    sshd.regenerate_host_key()
    asked = []
    trust("offsite", cfg, confirm=lambda q: asked.append(q) or True)
    assert "CHANGED" in asked[0] and server_fingerprint(sshd) in asked[0]
    lines = kh.read_text().splitlines()
    assert lines[0] == "# keep me" and len(lines) == 3  # the old hashed entry is gone, the other host kept
    with SftpTarget("offsite", cfg) as t:
        assert t.list() == []
