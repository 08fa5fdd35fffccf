"""Offsite copies over SFTP through the real CLI, against a real sshd."""

import json
import os
import sqlite3

import pytest

from test_sftp_resume import settled_size

pytestmark = pytest.mark.sftp


def use_sftp(ws, sshd, remote, **overrides):
    cfg = sshd.target_config(remote, **overrides).model_dump(mode="json")
    ws.edit_config(lambda c: c["targets"].update({"offsite-sftp": cfg}))
    ws.edit_policy(lambda p: p.update(targets=["offsite-sftp"]))


def grow_database(ws, mb: int = 12):
    """Incompressible rows so the artifact is several MB (enough to cut mid-transfer)."""
    db = sqlite3.connect(ws.db)
    db.execute("CREATE TABLE scans (id INTEGER PRIMARY KEY, image BLOB)")
    db.executemany("INSERT INTO scans(image) VALUES (?)", ((os.urandom(8192),) for _ in range(mb * 128)))
    db.commit()
    db.close()


def copies(ws):
    return [json.loads(r[3]) for r in ws.ledger_rows("copy")]


def test_sftp_round_trip_backup_verify_drill_from_offsite(workspace, sshd):
    remote = sshd.remote_dir("dr")
    use_sftp(workspace, sshd, remote)
    workspace.ok("backup", "demo-lis")
    (bdir,) = workspace.backups()
    there = remote / "demo-lis" / bdir.name
    assert sorted(p.name for p in there.iterdir()) == ["data.zst.age", "fpkey.zst.age", "manifest.json", "manifest.sig"]
    assert (remote / "_ledger" / "ledger.db").exists() and (remote / "_ledger" / "head").exists()  # the DR site alone can audit
    (c,) = copies(workspace)
    assert c["status"] == "ok" and c["files"][0]["verify"] == "remote-sha256sum"
    assert "0 failed" in workspace.ok("verify", "--target", "offsite-sftp").out
    # the disaster case: the local repository is gone, the drill restores from the offsite copy
    import shutil

    shutil.rmtree(bdir)
    rec = json.loads(workspace.ok("drill", "demo-lis", "--from", "offsite-sftp", "--json").out)
    assert rec["verdict"] == "passed" and rec["copy"]["target"] == "offsite-sftp"
    assert rec["backup_id"] == bdir.name


def test_sftp_read_back_verification_is_recorded(workspace, sshd):
    use_sftp(workspace, sshd, sshd.remote_dir("rb"), verify="read-back")
    workspace.ok("backup", "demo-lis")
    assert {f["verify"] for f in copies(workspace)[0]["files"]} == {"read-back"}


def test_sftp_cut_connection_then_copy_resumes(workspace, sshd, relay):
    grow_database(workspace)
    remote = sshd.remote_dir("cut")
    cutting = relay(drop_after=6 << 20)
    use_sftp(workspace, sshd, remote, port=cutting.port, retry={"attempts": 1})
    r = workspace.run("backup", "demo-lis")
    assert r.code == 1, r
    assert "offsite-sftp" in r.err and "run 'backupkit copy'" in r.err
    assert len(workspace.backups()) == 1  # the local backup is good and recorded
    assert copies(workspace)[0]["status"] == "failed"
    (bdir,) = workspace.backups()
    size = (bdir / "data.zst.age").stat().st_size
    partial = next((remote / "demo-lis").rglob("data.zst.age.partial"))
    assert 0 < settled_size(partial) < size  # the server kept what arrived before the cut
    clean = relay()
    use_sftp(workspace, sshd, remote, port=clean.port)
    assert "copied 1" in workspace.ok("copy").out
    data = copies(workspace)[-1]["files"][0]
    assert data["resumed_from"] > 0
    assert data["bytes_sent"] == size - data["resumed_from"] < size  # resumed, not restarted
    assert "0 failed" in workspace.ok("verify", "--target", "offsite-sftp").out


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_sftp_damaged_remote_copy_verify_exit_3(workspace, sshd, damage):
    remote = sshd.remote_dir("dmg")
    use_sftp(workspace, sshd, remote)
    workspace.ok("backup", "demo-lis")
    (bdir,) = workspace.backups()
    art = remote / "demo-lis" / bdir.name / "data.zst.age"
    data = bytearray(art.read_bytes())
    if damage == "truncate":
        art.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 3] ^= 0xFF
        art.write_bytes(bytes(data))
    r = workspace.run("verify", "--target", "offsite-sftp")
    assert r.code == 3, r
    assert bdir.name in r.err
    assert "0 failed" in workspace.ok("verify").out  # the local copy is untouched


def test_sftp_changed_host_key_exit_2_nothing_written(workspace, sshd):
    remote = sshd.remote_dir("hk")
    use_sftp(workspace, sshd, remote)
    sshd.regenerate_host_key()
    r = workspace.run("backup", "demo-lis")
    assert r.code == 2, r
    assert "host key" in r.err.lower() and "SHA256:" in r.err and "targets trust offsite-sftp" in r.err
    assert list(remote.iterdir()) == []
    assert len(workspace.backups()) == 1 and copies(workspace)[0]["status"] == "failed"
    # after the operator checks and trusts the new key, copy completes
    workspace.ok("targets", "trust", "offsite-sftp", "--yes")
    assert "copied 1" in workspace.ok("copy").out


def test_sftp_read_only_remote_then_fixed(workspace, sshd, test_user):
    remote = sshd.remote_dir("ro", owner=test_user)
    os.chmod(remote, 0o555)
    use_sftp(workspace, sshd, remote, user=test_user)
    r = workspace.run("backup", "demo-lis")
    assert r.code == 1, r
    assert "offsite-sftp" in r.err and "ermission" in r.err
    assert len(workspace.backups()) == 1 and copies(workspace)[0]["status"] == "failed"
    assert "0 failed" in workspace.ok("verify").out
    os.chmod(remote, 0o755)
    assert "copied 1" in workspace.ok("copy").out
    assert "0 failed" in workspace.ok("verify", "--target", "offsite-sftp").out


@pytest.mark.parametrize("what", ["user", "key"])
def test_sftp_wrong_user_or_key_exit_1(workspace, sshd, tmp_path, what):
    from fixtures.sshd import keygen

    remote = sshd.remote_dir("auth")
    if what == "user":
        use_sftp(workspace, sshd, remote, user="nobody-here")
    else:
        key = keygen(tmp_path / "other_key")
        use_sftp(workspace, sshd, remote, key_file=key)
    r = workspace.run("backup", "demo-lis")
    assert r.code == 1, r
    assert "offsite-sftp" in r.err and "127.0.0.1" in r.err
    assert "PRIVATE KEY" not in r.err + r.out
    assert list(remote.iterdir()) == []


def test_sftp_world_readable_key_exit_2(workspace, sshd):
    use_sftp(workspace, sshd, sshd.remote_dir("mode"))
    os.chmod(sshd.client_key, 0o644)
    r = workspace.run("backup", "demo-lis")
    assert r.code == 2, r
    assert str(sshd.client_key) in r.err and "chmod 600" in r.err
