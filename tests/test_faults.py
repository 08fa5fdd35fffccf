"""Bad input and faults from the core issue: each breaks something for real."""

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest


def test_unknown_policy_field_exit_2(workspace):
    workspace.edit_policy(lambda p: p["drill"].update(fingerprnt="full"))
    r = workspace.run("backup", "demo-lis")
    assert r.code == 2, r
    assert str(workspace.policy_file()) in r.err and "drill.fingerprnt" in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize("field,value,expect", [
    ("tier", "soon", "tier"),
    ("controls", ["mlps3"], "controls"),
    ("engine", "db2", "engine"),
    ("system", "HIS System", "system"),
])
def test_invalid_policy_value_exit_2(workspace, field, value, expect):
    workspace.edit_policy(lambda p: p.update({field: value}))
    r = workspace.run("status")
    assert r.code == 2, r
    assert f"'{expect}'" in r.err and str(workspace.policy_file()) in r.err


def test_bad_assertion_expect_exit_2(workspace):
    workspace.edit_policy(lambda p: p["drill"]["assertions"][0].update(expect="roughly 5"))
    r = workspace.run("backup", "demo-lis")
    assert r.code == 2 and "drill.assertions.0.expect" in r.err, r


def test_missing_signing_key_exit_2(workspace):
    (workspace.keys / "signing.pem").unlink()
    r = workspace.run("backup", "demo-lis")
    assert r.code == 2, r
    assert str(workspace.keys / "signing.pem") in r.err and "not found" in r.err


def test_world_readable_identity_exit_2(workspace):
    workspace.ok("backup", "demo-lis")
    os.chmod(workspace.keys / "identity.txt", 0o644)
    r = workspace.run("drill", "demo-lis")
    assert r.code == 2, r
    assert str(workspace.keys / "identity.txt") in r.err and "chmod 600" in r.err
    assert "AGE-SECRET-KEY" not in r.err + r.out


def test_group_readable_signing_key_exit_2(workspace):
    os.chmod(workspace.keys / "signing.pem", 0o640)
    r = workspace.run("backup", "demo-lis")
    assert r.code == 2 and "signing.pem" in r.err and "0640" in r.err, r
    assert not workspace.backups()


def test_wrong_identity_at_drill_exit_1(workspace):
    from backupkit.keys import generate_identity

    workspace.ok("backup", "demo-lis")
    manifest = json.loads((workspace.backups()[0] / "manifest.json").read_text())
    ident, _ = generate_identity()
    (workspace.keys / "identity.txt").unlink()
    fd = os.open(workspace.keys / "identity.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, ident.encode())
    os.close(fd)
    r = workspace.run("drill", "demo-lis")
    assert r.code == 1, r
    assert "no identity matches" in r.err
    assert manifest["recipients"][0] in r.err  # lists the key IDs the backup needs
    assert "AGE-SECRET-KEY" not in r.err + r.out


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_verify_and_drill_exit_3(workspace):
    workspace.ok("backup", "demo-lis")
    (bdir,) = workspace.backups()
    art = bdir / "data.zst.age"
    _flip_byte(art, art.stat().st_size // 2)
    r = workspace.run("verify")
    assert r.code == 3, r
    assert bdir.name in r.err
    r = workspace.run("drill", "demo-lis")
    assert r.code == 3, r
    assert bdir.name in r.err or bdir.name in r.out
    (row,) = workspace.ledger_rows("drill")
    body = json.loads(row[3])
    assert body["verdict"] == "failed" and body["failed_step"] == "verify_hash"
    assert "provision" not in [s["step"] for s in body["timeline"]]  # never restored a corrupt artifact


def test_edited_manifest_signature_fails(workspace):
    workspace.ok("backup", "demo-lis")
    (bdir,) = workspace.backups()
    m = bdir / "manifest.json"
    m.write_text(m.read_text().replace('"tier":"30m"', '"tier":"6h"'))
    r = workspace.run("verify")
    assert r.code == 3 and "signature" in r.err and bdir.name in r.err, r


def test_ledger_row_edited_with_sqlite3_cli(workspace):
    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis")
    # The trigger refuses a plain UPDATE ...
    p = subprocess.run(["sqlite3", str(workspace.ledger), "UPDATE records SET subject='x' WHERE seq=1;"],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "append-only" in p.stderr
    # ... so a tamperer drops it first and edits the drill verdict.
    p = subprocess.run(["sqlite3", str(workspace.ledger),
                        "DROP TRIGGER records_no_update; "
                        "UPDATE records SET body=replace(body, '\"verdict\":\"passed\"', '\"verdict\":\"failed\"') "
                        "WHERE kind='drill';"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    seq = workspace.ledger_rows("drill")[0][0]
    r = workspace.run("ledger", "verify")
    assert r.code == 3, r
    assert f"record seq {seq}" in r.err and "edited" in r.err


def test_ledger_deleted_row_detected(workspace):
    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis")
    subprocess.run(["sqlite3", str(workspace.ledger), "DROP TRIGGER records_no_delete; DELETE FROM records WHERE seq=2;"],
                   check=True)
    r = workspace.run("ledger", "verify")
    assert r.code == 3 and "seq 2 is missing" in r.err, r


def _make_slow(workspace):
    """Make the dump take seconds: a bigger, incompressible database and zstd level 19 on one thread."""
    db = sqlite3.connect(workspace.db)
    db.execute("CREATE TABLE scans (id INTEGER PRIMARY KEY, image BLOB)")
    db.executemany("INSERT INTO scans(image) VALUES (?)", ((os.urandom(4096) + bytes(4096),) for _ in range(12000)))
    db.commit()
    db.close()
    workspace.edit_policy(lambda p: p["backup"].update(compression_level=19, threads=0))


def _wait_for_staging(workspace, proc, timeout=60):
    staging = workspace.repo / ".staging"
    deadline = time.time() + timeout
    while time.time() < deadline:
        arts = list(staging.glob("demo-lis.*/data.zst.age")) if staging.exists() else []
        if arts and arts[0].stat().st_size > 0:
            return arts[0].parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the backup never started writing its artifact")


def test_sigkill_mid_dump_leaves_nothing_recorded(workspace):
    _make_slow(workspace)
    proc = workspace.popen("backup", "demo-lis", "--no-copy")
    staging = _wait_for_staging(workspace, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert staging.exists()  # the killed run left its staging behind
    assert not workspace.backups()
    assert workspace.ledger_rows("backup") == []
    # the next run cleans up, records the abandoned run and succeeds
    workspace.edit_policy(lambda p: p["backup"].update(compression_level=1, threads=None))
    workspace.ok("backup", "demo-lis", "--no-copy")
    assert not staging.exists()
    abandoned = workspace.ledger_rows("abandoned")
    assert len(abandoned) == 1 and abandoned[0][2] == staging.name.split(".", 1)[1]
    assert len(workspace.backups()) == 1 and len(workspace.ledger_rows("backup")) == 1
    assert "0 failed" in workspace.ok("verify", "--deep").out


def test_sigterm_mid_dump_cleans_up_and_records(workspace):
    _make_slow(workspace)
    proc = workspace.popen("backup", "demo-lis", "--no-copy")
    staging = _wait_for_staging(workspace, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "interrupted" in err
    assert not staging.exists() and not workspace.backups()
    assert workspace.ledger_rows("backup") == [] and len(workspace.ledger_rows("abandoned")) == 1


def test_concurrent_backups_do_not_interleave(workspace):
    _make_slow(workspace)
    workspace.edit_config(lambda c: c.update(lock_timeout=0))
    first = workspace.popen("backup", "demo-lis", "--no-copy")
    _wait_for_staging(workspace, first)
    second = workspace.run("backup", "demo-lis", "--no-copy")
    assert second.code == 1, second
    assert "holds" in second.err and "demo-lis.lock" in second.err
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(workspace.backups()) == 1
    assert "0 failed" in workspace.ok("verify", "--deep").out


def test_concurrent_backups_wait_for_the_lock(workspace):
    workspace.edit_config(lambda c: c.update(lock_timeout=120))
    procs = [workspace.popen("backup", "demo-lis", "--no-copy") for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert len(workspace.backups()) == 2
    assert len(workspace.ledger_rows("backup")) == 2 and not workspace.ledger_rows("abandoned")
    assert "0 failed" in workspace.ok("verify", "--deep").out


def test_missing_target_dir_keeps_backup_and_copy_completes_later(workspace):
    workspace.offsite.rmdir() if workspace.offsite.exists() else None
    r = workspace.run("backup", "demo-lis")
    assert r.code == 1, r
    assert "target offsite" in r.err and "does not exist" in r.err
    assert len(workspace.backups()) == 1 and len(workspace.ledger_rows("backup")) == 1
    copies = [json.loads(row[3]) for row in workspace.ledger_rows("copy")]
    assert copies[0]["status"] == "failed" and "does not exist" in copies[0]["error"]
    assert json.loads(workspace.ok("status", "--json").out if False else workspace.run("status", "--json").out)[0]["offsite_ok"] is False
    workspace.offsite.mkdir()
    r = workspace.ok("copy")
    assert "copied 1" in r.out
    assert "0 failed" in workspace.ok("verify", "--target", "offsite").out
    workspace.ok("drill", "demo-lis", "--from", "offsite")


def test_read_only_target_keeps_backup(workspace, tmp_path):
    # root ignores permission bits, so make the target a read-only bind mount
    ro = tmp_path / "ro"
    ro.mkdir()
    workspace.offsite.mkdir(exist_ok=True)
    p = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(workspace.offsite)], capture_output=True, text=True)
    if p.returncode != 0 and os.geteuid() == 0:
        pytest.fail(f"cannot create a read-only bind mount for this test: {p.stderr.strip()}")
    try:
        if p.returncode != 0:  # not root: plain permissions work
            os.chmod(workspace.offsite, 0o555)
        r = workspace.run("backup", "demo-lis")
        assert r.code == 1, r
        assert "target offsite" in r.err and "read-only" in r.err or "permission" in r.err
        assert len(workspace.backups()) == 1
        assert json.loads(workspace.ledger_rows("copy")[0][3])["status"] == "failed"
    finally:
        if p.returncode == 0:
            subprocess.run(["umount", str(workspace.offsite)], check=True)
        else:
            os.chmod(workspace.offsite, 0o755)
    assert "copied 1" in workspace.ok("copy").out


def test_round_trip_without_backupkit(workspace, tmp_path):
    """The Debian age and zstd CLIs restore the byte-identical SQLite file."""
    import hashlib

    workspace.ok("backup", "demo-lis", "--no-copy")
    (bdir,) = workspace.backups()
    manifest = json.loads((bdir / "manifest.json").read_text())
    out = tmp_path / "restored.sqlite"
    age = subprocess.Popen(["age", "-d", "-i", str(workspace.keys / "identity.txt"), str(bdir / "data.zst.age")],
                           stdout=subprocess.PIPE)
    with open(out, "wb") as f:
        z = subprocess.run(["zstd", "-d", "-c"], stdin=age.stdout, stdout=f)
    age.stdout.close()
    assert age.wait() == 0 and z.returncode == 0
    data = out.read_bytes()
    data_stream = next(s for s in manifest["streams"] if s["name"] == "data")
    assert hashlib.sha256(data).hexdigest() == data_stream["content_sha256"]
    assert len(data) == data_stream["content_bytes"]
    # and it is a working database with the same content as the source
    from backupkit.engines.sqlite import table_fingerprints
    from backupkit.keyed import decode_key, keyed

    a = table_fingerprints(sqlite3.connect(out), "full")
    b = table_fingerprints(sqlite3.connect(workspace.db), "full")
    assert a == b
    # the manifest's digests are keyed: without the key they say nothing; with it (decrypted by the same CLIs)
    # an auditor recomputes them exactly
    assert all(manifest["fingerprints"][t]["hash"] != a[t]["hash"] for t in a)
    age = subprocess.run(["age", "-d", "-i", str(workspace.keys / "identity.txt"), str(bdir / "fpkey.zst.age")],
                         capture_output=True, check=True)
    key = decode_key(subprocess.run(["zstd", "-d", "-c"], input=age.stdout, capture_output=True, check=True).stdout)
    assert keyed(a, key) == manifest["fingerprints"]


def test_repository_disk_full_records_nothing_as_good(workspace):
    """A full repository disk: exit 1 naming the problem, staging removed, no backup record."""
    workspace.ok("backup", "demo-lis", "--no-copy")  # creates the repository layout
    workspace.repo.mkdir(exist_ok=True)
    full = workspace.repo / "demo-lis"
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(workspace.repo / ".staging")],
                       capture_output=True, text=True)
    assert p.returncode == 0, f"this test needs root to mount a tiny tmpfs: {p.stderr}"
    try:
        r = workspace.run("backup", "demo-lis", "--no-copy")
        assert r.code == 1, r
        assert "full" in r.err.lower() and "free space under" in r.err and "Traceback" not in r.err, r
        assert len(workspace.backups()) == 1 and len(workspace.ledger_rows("backup")) == 1
        assert list((workspace.repo / ".staging").iterdir()) == []
        assert len(workspace.ledger_rows("abandoned")) == 1
    finally:
        subprocess.run(["umount", str(workspace.repo / ".staging")], check=True)
    assert full.exists()
    workspace.ok("backup", "demo-lis", "--no-copy")
    assert "0 failed" in workspace.ok("verify", "--deep").out


def test_an_incomplete_engine_policy_is_a_clear_config_error_at_load(workspace):
    workspace.edit_policy(lambda p: p.update(engine="oracle", source={"dsn": "his-db/HISPDB"}))
    r = workspace.run("backup", "demo-lis")
    assert r.code == 2 and str(workspace.policy_file()) in r.err and "field 'source" in r.err, r
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
