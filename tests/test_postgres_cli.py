"""PostgreSQL through the real CLI: backup, verify, drill into an ephemeral
cluster, emergency restore, and the faults of the PostgreSQL issue."""

import json
import os
import signal
import subprocess
import time

import psycopg
import pytest
import yaml

from backupkit.actions.drill import run_drill
from backupkit.context import Context
from fixtures.postgres import pg_dsn, pg_exec, pg_scalar

HOSPITAL_SQL = [
    "CREATE TABLE patients (id bigint PRIMARY KEY, name text NOT NULL, born date, photo bytea, tags text[])",
    "CREATE TABLE encounters (id bigint PRIMARY KEY, patient_id bigint REFERENCES patients(id), "
    "admitted timestamptz NOT NULL, ward text, data jsonb, cost numeric(12,2))",
    "CREATE TABLE audit_log (at timestamptz, what text)",  # no primary key
    "INSERT INTO patients SELECT g, '患者' || g, date '1950-01-01' + g % 20000, "
    "CASE WHEN g % 3 = 0 THEN decode(md5(g::text), 'hex') END, ARRAY['a' || g % 5, NULL] FROM generate_series(1, 3000) g",
    "INSERT INTO encounters SELECT g, 1 + g % 3000, now() - (g || ' minutes')::interval, "
    "(ARRAY['内科','外科','ICU'])[1 + g % 3], jsonb_build_object('bp', 120 + g % 30), g * 1.25 FROM generate_series(1, 6000) g",
    "INSERT INTO audit_log SELECT now(), 'login' FROM generate_series(1, 50)",
    "INSERT INTO audit_log SELECT now(), 'login' FROM generate_series(1, 50)",
]


@pytest.fixture
def pg_workspace(workspace, pg_database):
    db = pg_database("bk_his")
    pg_exec(db, *HOSPITAL_SQL)
    policy = {
        "system": "his", "title": "医院信息系统 HIS", "tier": "30m", "rpo": "24h", "engine": "postgres",
        "source": {"dsn": pg_dsn(db)}, "targets": ["offsite"],
        "drill": {"fingerprint": "full", "assertions": [
            {"name": "patients present", "sql": "SELECT count(*) FROM patients", "expect": "> 0"},
            {"name": "newest admission within RPO", "sql": "SELECT max(admitted) FROM encounters",
             "expect": ">= backup_time - 1 day"}]},
        "controls": ["mlps2-l3"],
    }
    workspace.policy_file("demo-lis").unlink()
    workspace.policy_file("his").write_text(yaml.safe_dump(policy, allow_unicode=True))
    workspace.pg_db = db
    return workspace


def test_pg_backup_verify_drill_restore(pg_workspace, pg_database):
    ws = pg_workspace
    ws.ok("backup", "his")
    (bdir,) = ws.backups("his")
    manifest = json.loads((bdir / "manifest.json").read_text())
    assert sorted(s["name"] for s in manifest["streams"]) == ["data", "fpkey", "globals"]
    assert manifest["consistency"]["kind"] == "postgres" and manifest["consistency"]["lsn"]
    assert manifest["fingerprints"]["public.audit_log"]["rows"] == 100
    assert "0 failed" in ws.ok("verify", "--deep").out

    rec = json.loads(ws.ok("drill", "his", "--from", "offsite", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]
    assert rec["scratch"]["kind"] == "ephemeral"
    td = rec["teardown"]
    assert td["datadir_exists"] is False and td["port_open"] is False and td["postmaster_running"] is False
    assert not os.path.exists(td["datadir"])
    passed = {c["name"] for c in rec["checks"] if c["status"] == "passed"}
    assert {"fingerprint public.patients", "fingerprint public.audit_log", "amcheck"} <= passed

    target = pg_database("bk_restore")
    r = ws.ok("restore", "his", "--to", pg_dsn(target))
    assert "fingerprints match" in r.out
    assert pg_scalar(target, "SELECT count(*) FROM encounters") == 6000
    assert pg_scalar(target, "SELECT name FROM patients WHERE id = 7") == "患者7"
    r = ws.run("restore", "his", "--to", pg_dsn(target))
    assert r.code == 2 and "not empty" in r.err and "--force" in r.err, r
    assert len(ws.ledger_rows("restore")) == 1
    # --force over a damaged copy: objects the archive recreates are replaced, and fingerprints match
    pg_exec(target, "DELETE FROM encounters WHERE id > 10", "UPDATE patients SET name = 'damaged'")
    r = ws.ok("restore", "his", "--to", pg_dsn(target), "--force")
    assert "fingerprints match" in r.out
    assert pg_scalar(target, "SELECT count(*) FROM encounters") == 6000
    assert pg_scalar(target, "SELECT count(*) FROM patients WHERE name = 'damaged'") == 0
    assert json.loads(ws.ledger_rows("restore")[-1][3])["forced"] is True


@pytest.mark.parametrize("dsn_tail,needle", [
    ("host=127.0.0.1 port=1 user=postgres dbname=x", "127.0.0.1"),
    ("host=127.0.0.1 port=5432 user=postgres dbname=bk_does_not_exist", "bk_does_not_exist"),
])
def test_pg_unreachable_or_missing_database_exit_1(pg_workspace, dsn_tail, needle):
    ws = pg_workspace
    ws.edit_policy(lambda p: p["source"].update(dsn=dsn_tail), system="his")
    r = ws.run("backup", "his")
    assert r.code == 1, r
    assert "his" in r.err and needle in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not ws.backups("his") and not ws.ledger_rows("backup")


def test_pg_wrong_password_names_host_never_the_password(pg_workspace, scram_cluster, tmp_path):
    ws = pg_workspace
    pw = tmp_path / "his.pass"
    pw.write_text("definitely-Wrong-Secret-42\n")
    pw.chmod(0o600)
    ws.edit_policy(lambda p: p.update(source={"host": str(scram_cluster.sockdir), "port": scram_cluster.port,
                                              "user": "alice", "database": "clinic", "password_file": str(pw)}),
                   system="his")
    r = ws.run("backup", "his")
    assert r.code == 1, r
    assert "his" in r.err and str(scram_cluster.sockdir) in r.err and "password authentication failed" in r.err
    assert "definitely-Wrong-Secret-42" not in r.err + r.out


def test_pg_dump_killed_mid_stream(pg_workspace):
    ws = pg_workspace
    pg_exec(ws.pg_db, "CREATE TABLE scans AS SELECT g AS id, decode(repeat(md5(g::text), 64), 'hex') AS img "
                      "FROM generate_series(1, 150000) g")
    ws.edit_policy(lambda p: p.update(backup={"compression_level": 19, "threads": 0}), system="his")
    proc = ws.popen("backup", "his", "--no-copy")
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and not killed:
        kids = subprocess.run(["pgrep", "-P", str(proc.pid), "-x", "pg_dump"], capture_output=True, text=True).stdout.split()
        arts = list((ws.repo / ".staging").glob("his.*/data.zst.age")) if (ws.repo / ".staging").exists() else []
        if kids and arts and arts[0].stat().st_size > 0:
            os.kill(int(kids[0]), signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    assert killed, "pg_dump never ran long enough to be killed"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "pg_dump" in err and "Traceback" not in err
    assert not ws.backups("his") and not ws.ledger_rows("backup")
    assert not list((ws.repo / ".staging").iterdir())
    ws.edit_policy(lambda p: p.update(backup={"compression_level": 1}), system="his")
    ws.ok("backup", "his", "--no-copy")
    assert len(ws.backups("his")) == 1


def test_pg_tampered_restore_fails_drill_with_exit_3(pg_workspace):
    ws = pg_workspace
    ws.ok("backup", "his", "--no-copy")
    ctx = Context.load(ws.config)

    def tamper(engine, scratch):
        with engine._connect(scratch) as conn:
            conn.execute("UPDATE encounters SET ward = 'X' WHERE id = 42")
            conn.commit()

    out = run_drill(ctx, ctx.policy("his"), after_restore=tamper)
    ctx.close()
    assert out.exit_code == 3
    bad = [c for c in out.record["checks"] if c["status"] == "failed"]
    assert [c["name"] for c in bad] == ["fingerprint public.encounters"]
    assert "rows=6000" in bad[0]["detail"]
    assert out.record["teardown"]["datadir_exists"] is False


def test_pg_scratch_dsn_equal_to_source_exit_2(pg_workspace):
    ws = pg_workspace
    ws.ok("backup", "his", "--no-copy")
    before = pg_scalar("postgres", "SELECT count(*) FROM pg_database")
    ws.edit_policy(lambda p: p["drill"].update(scratch={"type": "database", "dsn": p["source"]["dsn"]}), system="his")
    r = ws.run("drill", "his")
    assert r.code == 2, r
    assert "source" in r.err
    assert pg_scalar("postgres", "SELECT count(*) FROM pg_database") == before
    assert not ws.ledger_rows("drill")


def test_pg_failing_drill_tears_down(pg_workspace):
    ws = pg_workspace
    ws.edit_policy(lambda p: p["drill"]["assertions"].append(
        {"name": "broken sql", "sql": "SELECT no_such_column FROM patients", "expect": "> 0"}), system="his")
    ws.ok("backup", "his", "--no-copy")
    r = ws.run("drill", "his", "--json")
    assert r.code == 1, r
    rec = json.loads(r.out)
    assert rec["verdict"] == "failed" and any("broken sql" in d for d in rec["deviations"])
    td = rec["teardown"]
    assert td["postmaster_running"] is False and not os.path.exists(td["datadir"])
    leftovers = subprocess.run(["pgrep", "-f", td["datadir"]], capture_output=True, text=True).stdout
    assert leftovers.strip() == ""


def test_pg_concurrent_writes_during_backup_still_drill_clean(pg_workspace):
    ws = pg_workspace
    stop = time.time() + 4
    proc = ws.popen("backup", "his", "--no-copy")
    with psycopg.connect(pg_dsn(ws.pg_db), autocommit=True) as conn:
        i = 100000
        while proc.poll() is None and time.time() < stop:
            conn.execute("INSERT INTO audit_log VALUES (now(), %s)", (f"write {i}",))
            i += 1
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rec = json.loads(ws.ok("drill", "his", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]
