"""MariaDB through the real CLI: backup, verify, drill into an ephemeral mariadbd and into a
database scratch on a second real server, emergency restore, and the faults of issue 12."""

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from backupkit.actions.drill import run_drill
from backupkit.context import Context
from fixtures.mariadb import mdb_connect, mdb_dsn, mdb_exec, mdb_scalar

HOSPITAL_SQL = [
    "CREATE TABLE patients (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, born DATE, photo BLOB) "
    "ENGINE=InnoDB CHARACTER SET utf8mb4",
    "CREATE TABLE encounters (id BIGINT PRIMARY KEY, patient_id BIGINT, admitted DATETIME(6) NOT NULL, "
    "ward VARCHAR(10), data JSON, cost DECIMAL(12,2)) ENGINE=InnoDB",
    "CREATE TABLE ward_notes (id INT PRIMARY KEY, note VARCHAR(100)) ENGINE=InnoDB CHARACTER SET gbk",
    "CREATE TABLE audit_log (at DATETIME(6), what VARCHAR(20)) ENGINE=InnoDB",  # no primary key
    "INSERT INTO patients SELECT seq, CONCAT('患者', seq), DATE '1950-01-01' + INTERVAL seq % 20000 DAY, "
    "IF(seq % 3 = 0, UNHEX(MD5(seq)), NULL) FROM seq_1_to_3000",
    "INSERT INTO encounters SELECT seq, 1 + seq % 3000, UTC_TIMESTAMP(6) - INTERVAL seq MINUTE, "
    "ELT(1 + seq % 3, '内科', '外科', 'ICU'), JSON_OBJECT('bp', 120 + seq % 30), seq * 1.25 FROM seq_1_to_6000",
    "INSERT INTO ward_notes SELECT seq, CONCAT('病房记录', seq) FROM seq_1_to_200",
    "INSERT INTO audit_log SELECT '2024-01-01 00:00:00', 'login' FROM seq_1_to_100",
    "CREATE VIEW icu AS SELECT id, patient_id FROM encounters WHERE ward = 'ICU'",
    "CREATE TRIGGER enc_audit AFTER INSERT ON encounters FOR EACH ROW INSERT INTO audit_log VALUES (NEW.admitted, 'enc')",
    "CREATE PROCEDURE census() SELECT COUNT(*) FROM patients",
    "CREATE EVENT purge_audit ON SCHEDULE EVERY 1 DAY DO DELETE FROM audit_log WHERE at < NOW() - INTERVAL 1 YEAR",
]


@pytest.fixture
def mdb_workspace(workspace, mdb_database):
    db = mdb_database("bk_lis")
    mdb_exec(db, *HOSPITAL_SQL)
    policy = {
        "system": "lis", "title": "检验信息系统 LIS", "tier": "30m", "rpo": "24h", "engine": "mariadb",
        "source": {"dsn": mdb_dsn(db)}, "targets": ["offsite"],
        "drill": {"fingerprint": "full", "assertions": [
            {"name": "patients present", "sql": "SELECT COUNT(*) FROM patients", "expect": "> 0"},
            {"name": "newest admission within RPO", "sql": "SELECT MAX(admitted) FROM encounters",
             "expect": ">= backup_time - 1 day"}]},
        "controls": ["mlps2-l3"],
    }
    workspace.policy_file("demo-lis").unlink()
    workspace.policy_file("lis").write_text(yaml.safe_dump(policy, allow_unicode=True))
    workspace.mdb_db = db
    return workspace


def test_mariadb_backup_verify_drill_restore(mdb_workspace, mdb_scratch_server):
    ws = mdb_workspace
    ws.ok("backup", "lis")
    (bdir,) = ws.backups("lis")
    manifest = json.loads((bdir / "manifest.json").read_text())
    assert manifest["engine"] == "mariadb" and manifest["server_version"].startswith("MariaDB ")
    assert manifest["consistency"]["kind"] == "mariadb" and manifest["consistency"]["exactness"] == "exact"
    assert manifest["fingerprints"]["`audit_log`"]["rows"] == 100
    assert "0 failed" in ws.ok("verify", "--deep").out

    rec = json.loads(ws.ok("drill", "lis", "--from", "offsite", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]
    assert rec["scratch"]["kind"] == "ephemeral"
    td = rec["teardown"]
    assert td["datadir_exists"] is False and td["server_pid_running"] is False and td["socket_open"] is False
    assert not os.path.exists(td["datadir"])
    passed = {c["name"] for c in rec["checks"] if c["status"] == "passed"}
    assert {"fingerprint `patients`", "fingerprint `ward_notes`", "fingerprint schema", "fingerprint database",
            "CHECK TABLE EXTENDED", "assertion patients present", "assertion newest admission within RPO"} <= passed

    # the same backup into a uniquely named database on another (real) server, dropped afterwards
    ws.edit_policy(lambda p: p["drill"].update(scratch={
        "type": "database", "dsn": f"mariadb://root@127.0.0.1:{mdb_scratch_server.port}/"}), system="lis")
    rec = json.loads(ws.ok("drill", "lis", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]
    assert rec["scratch"]["kind"] == "database" and rec["teardown"]["database_exists"] is False

    target = f"{ws.mdb_db}_restored"
    try:
        r = ws.ok("restore", "lis", "--to", mdb_dsn(target))
        assert "fingerprints match" in r.out
        assert mdb_scalar(target, "SELECT COUNT(*) FROM encounters") == 6000
        assert mdb_scalar(target, "SELECT name FROM patients WHERE id = 7") == "患者7"
        assert mdb_scalar(target, "SELECT note FROM ward_notes WHERE id = 3") == "病房记录3"
        r = ws.run("restore", "lis", "--to", mdb_dsn(target))
        assert r.code == 2 and "not empty" in r.err and "--force" in r.err, r
        mdb_exec(target, "DELETE FROM encounters WHERE id > 10", "UPDATE patients SET name = 'damaged'")
        r = ws.ok("restore", "lis", "--to", mdb_dsn(target), "--force")
        assert "fingerprints match" in r.out
        assert mdb_scalar(target, "SELECT COUNT(*) FROM encounters") == 6000
        assert json.loads(ws.ledger_rows("restore")[-1][3])["forced"] is True
        r = ws.run("restore", "lis", "--to", mdb_dsn(ws.mdb_db))
        assert r.code == 2 and "source database" in r.err, r
    finally:
        mdb_exec(None, f"DROP DATABASE IF EXISTS `{target}`")


def test_mariadb_change_in_scratch_fails_drill_with_exit_3(mdb_workspace):
    ws = mdb_workspace
    ws.ok("backup", "lis", "--no-copy")
    ctx = Context.load(ws.config)

    def tamper(engine, scratch):
        conn = engine._connect(scratch)
        try:
            with conn.cursor() as cur:
                cur.execute("UPDATE encounters SET ward = 'X' WHERE id = 42")
        finally:
            conn.close()

    out = run_drill(ctx, ctx.policy("lis"), after_restore=tamper)
    ctx.close()
    assert out.exit_code == 3
    bad = [c for c in out.record["checks"] if c["status"] == "failed"]
    assert [c["name"] for c in bad] == ["fingerprint `encounters`"]
    assert "rows=6000" in bad[0]["detail"]
    assert out.record["teardown"]["datadir_exists"] is False


def test_mariadb_scratch_equal_to_source_exit_2(mdb_workspace):
    ws = mdb_workspace
    ws.ok("backup", "lis", "--no-copy")
    ws.edit_policy(lambda p: p["drill"].update(scratch={"type": "database", "dsn": "mariadb://root@localhost:3306/"}),
                   system="lis")
    r = ws.run("drill", "lis")
    assert r.code == 2 and "source server" in r.err, r
    assert not mdb_scalar(None, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'backupkit_drill_lis_%'")
    assert not ws.ledger_rows("drill")


@pytest.mark.parametrize("dsn_tail,needle", [
    ("mariadb://root@127.0.0.1:1/lis", "127.0.0.1:1"),
    ("mariadb://root@127.0.0.1:3306/bk_does_not_exist", "bk_does_not_exist"),
])
def test_mariadb_unreachable_or_missing_database_exit_1(mdb_workspace, dsn_tail, needle):
    ws = mdb_workspace
    ws.edit_policy(lambda p: p["source"].update(dsn=dsn_tail), system="lis")
    r = ws.run("backup", "lis")
    assert r.code == 1, r
    assert "lis" in r.err and needle in r.err and "Traceback" not in r.err
    assert not ws.backups("lis") and not ws.ledger_rows("backup")


def test_mariadb_wrong_password_never_printed_nor_recorded(mdb_workspace, tmp_path):
    ws = mdb_workspace
    user = f"bk_cli_{os.getpid()}"
    mdb_exec(None, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'right-Secret-77'",
             f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD ON *.* TO '{user}'@'127.0.0.1'")
    try:
        pw = tmp_path / "lis.pass"
        pw.write_text("definitely-Wrong-Secret-42\n")
        pw.chmod(0o600)
        ws.edit_policy(lambda p: p.update(source={"host": "127.0.0.1", "port": 3306, "user": user,
                                                  "database": ws.mdb_db, "password_file": str(pw)}), system="lis")
        r = ws.run("backup", "lis")
        assert r.code == 1, r
        assert "Access denied" in r.err and "127.0.0.1:3306" in r.err
        assert "definitely-Wrong-Secret-42" not in r.err + r.out
        pw.unlink()
        pw.write_text("right-Secret-77\n")
        pw.chmod(0o600)
        ws.ok("backup", "lis", "--no-copy")
        ledger = ws.ledger.read_bytes() + b"".join(p.read_bytes() for p in ws.repo.rglob("manifest.json"))
        assert b"right-Secret-77" not in ledger and b"definitely-Wrong" not in ledger
    finally:
        mdb_exec(None, f"DROP USER '{user}'@'127.0.0.1'")


def test_mariadb_dump_killed_mid_stream_records_nothing(mdb_workspace):
    ws = mdb_workspace
    mdb_exec(ws.mdb_db, "CREATE TABLE scans (id INT PRIMARY KEY, img LONGBLOB) ENGINE=InnoDB",
             "INSERT INTO scans SELECT seq, REPEAT(UNHEX(MD5(seq)), 4096) FROM seq_1_to_3000")
    ws.edit_policy(lambda p: p.update(backup={"compression_level": 19, "threads": 0}), system="lis")
    proc = ws.popen("backup", "lis", "--no-copy")
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and not killed:
        kids = subprocess.run(["pgrep", "-P", str(proc.pid), "-x", "mariadb-dump"], capture_output=True,
                              text=True).stdout.split()
        for kid in kids:  # kill it once it has written 4 MiB of SQL into the pipeline
            try:
                io = dict(line.split(": ") for line in open(f"/proc/{kid}/io").read().splitlines())
                if int(io["wchar"]) > 4 << 20:
                    os.kill(int(kid), signal.SIGKILL)
                    killed = True
            except (OSError, ProcessLookupError, KeyError, ValueError):
                continue
        time.sleep(0.01)
    assert killed, "mariadb-dump never ran long enough to be killed"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "mariadb-dump" in err and "Traceback" not in err
    assert not ws.backups("lis") and not ws.ledger_rows("backup")
    assert not list((ws.repo / ".staging").iterdir())
    ws.edit_policy(lambda p: p.update(backup={"compression_level": 1}), system="lis")
    ws.ok("backup", "lis", "--no-copy")
    assert len(ws.backups("lis")) == 1


def test_mariadb_concurrent_writes_during_backup_still_drill_exact(mdb_workspace):
    ws = mdb_workspace
    stop = time.time() + 4
    proc = ws.popen("backup", "lis", "--no-copy")
    conn = mdb_connect(ws.mdb_db)
    try:
        i = 100000
        with conn.cursor() as cur:
            while proc.poll() is None and time.time() < stop:
                cur.execute("INSERT INTO encounters VALUES (%s, 1, UTC_TIMESTAMP(6), 'ICU', NULL, 1.50)", (i,))
                i += 1
    finally:
        conn.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert i > 100000, "no write happened during the backup"
    (bdir,) = ws.backups("lis")
    assert json.loads((bdir / "manifest.json").read_text())["consistency"]["exactness"] == "exact"
    rec = json.loads(ws.ok("drill", "lis", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]


def _zstd_window(ws, bdir) -> int:
    """The zstd window of the backup's dump stream, read from its frame header after age decryption."""
    import pyrage
    import zstandard

    manifest = json.loads((bdir / "manifest.json").read_text())
    stream = next(s for s in manifest["streams"] if s["name"] == "data")
    identity = pyrage.x25519.Identity.from_str(
        next(ln for ln in (ws.keys / "identity.txt").read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-")))
    frame = pyrage.decrypt((bdir / stream["file"]).read_bytes(), [identity])
    return zstandard.get_frame_parameters(frame[:18]).window_size


def test_mariadb_dumps_are_compressed_without_long_distance_matching_unless_the_policy_asks(mdb_workspace):
    """SQL text gains nothing from a 16 MiB window (docs/benchmarks.md): MariaDB's default is off, the policy
    can still turn it on; PostgreSQL keeps it (tests/test_postgres_cli.py backs up with the default)."""
    ws = mdb_workspace
    ws.ok("backup", "lis", "--no-copy")
    (first,) = ws.backups("lis")
    assert _zstd_window(ws, first) < 16 << 20
    ws.edit_policy(lambda p: p.update(backup={"long_distance": True}), system="lis")
    ws.ok("backup", "lis", "--no-copy")
    (second,) = [b for b in ws.backups("lis") if b != first]
    assert _zstd_window(ws, second) == 16 << 20
