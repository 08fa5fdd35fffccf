"""MariaDB physical mode (``source.mode: physical``) against the real MariaDB on 127.0.0.1:3306:
real mariadb-backup streams through the real artifact pipeline, real mbstream/--prepare, a real
private mariadbd on the prepared copy. Nothing is mocked; missing programs fail the tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from backupkit.actions.drill import run_drill
from backupkit.artifact import DirectorySink, DirectorySource
from backupkit.context import Context
from backupkit.engines import engine_for, kit
from backupkit.engines.mariadb_physical import MariadbPhysicalEngine
from backupkit.errors import ConfigError, JobFailed
from backupkit.policy import load_policy

from fixtures.common import children_named
from fixtures.mariadb import MDB_HOST, MDB_PORT, make_mdb_policy, mdb_connect, mdb_dsn, mdb_exec

SQL = [
    "CREATE TABLE patients (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, born DATE, photo BLOB, "
    "record JSON, balance DECIMAL(12,2)) ENGINE=InnoDB CHARACTER SET utf8mb4",
    "CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40), at DATETIME(6)) ENGINE=InnoDB",
    "CREATE TABLE audit (order_id BIGINT, note VARCHAR(10)) ENGINE=InnoDB",  # no primary key
    "CREATE TABLE ward_notes (id INT PRIMARY KEY, note VARCHAR(100)) ENGINE=InnoDB CHARACTER SET gbk",
    "INSERT INTO patients SELECT seq, CONCAT('患者', seq), DATE '1950-01-01' + INTERVAL seq % 20000 DAY, "
    "IF(seq % 3 = 0, UNHEX(MD5(seq)), NULL), JSON_OBJECT('bp', seq % 30), seq * 1.25 FROM seq_1_to_3000",
    "INSERT INTO orders (item, at) SELECT CONCAT('item ', seq), NOW(6) FROM seq_1_to_20000",
    "INSERT INTO ward_notes SELECT seq, CONCAT('病房记录', seq) FROM seq_1_to_200",
    "CREATE VIEW recent AS SELECT id, item FROM orders WHERE id > 19000",
    "CREATE PROCEDURE census() SELECT COUNT(*) FROM patients",
]


def physical_policy(db: str, **source):
    return make_mdb_policy(source={"dsn": mdb_dsn(db), "mode": "physical", **source})


def open_source(sink, age) -> DirectorySource:
    return DirectorySource(sink.directory, [dataclasses.asdict(s) for s in sink.streams], age.identities,
                           what="test backup", recipient_ids=[r.id for r in age.recipients])


@pytest.fixture
def physical_source(mdb_database):
    for tool in ("mariadb-backup", "mbstream"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is required by the physical-mode tests; run scripts/test.sh (installs mariadb-backup)")
    db = mdb_database("bk_phys")
    mdb_exec(db, *SQL)
    return db


def test_physical_backup_and_drill_exact_under_concurrent_writes(physical_source, age_keys, dump_dir, tmp_path):
    db = physical_source
    stop = threading.Event()
    committed = [0]

    def writer():  # both tables in one transaction: one point in time gives equal deltas
        conn = mdb_connect(db, autocommit=False)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute("INSERT INTO orders (item, at) VALUES ('concurrent', NOW(6))")
                    cur.execute("INSERT INTO audit VALUES (LAST_INSERT_ID(), 'x')")
                    conn.commit()
                    committed[0] += 1
        finally:
            conn.close()

    engine = MariadbPhysicalEngine()
    policy = physical_policy(db)
    assert isinstance(engine_for(policy), MariadbPhysicalEngine)
    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.3)
        sink = DirectorySink(dump_dir(), age_keys.recipients)
        result = engine.dump(policy=policy, sink=sink)
        time.sleep(0.2)
    finally:
        stop.set()
        t.join()
    c = result.consistency
    assert c["exactness"] == "exact", c
    assert "BLOCK_COMMIT" in c["method"] and "proof" in c and c["pause_seconds"] < 5 and 0 < c["lock_seconds"] < 30
    assert isinstance(c["lsn"], int) and c["lsn"] >= c["checkpoint_lsn"] > 0
    assert result.server_version.startswith("MariaDB 10.")
    d = result.details
    assert d["dump_format"] == "xbstream" and d["checkpoints"]["last_lsn"] == str(c["lsn"])
    assert d["backup_info"]["tool_version"].split(".")[:2] == d["server_identity"]["version"].split(".")[:2]
    assert [s.name for s in sink.streams] == ["data"]
    fp = result.fingerprints
    assert fp["`orders`"]["rows"] - 20000 == fp["`audit`"]["rows"] > 0  # one point in time for both tables
    assert committed[0] > fp["`audit`"]["rows"]  # writes went on after the backup's point

    with engine.scratch(policy=policy, workdir=tmp_path / "drill") as scratch:
        scratch.manifest = {"fingerprints": fp, "details": d, "consistency": c}
        engine.restore(policy=policy, scratch=scratch, source=open_source(sink, age_keys))
        info = scratch.info
        assert info["prepared_lsn"] == str(c["lsn"])
        server = scratch.handle.server
        assert kit.process_uid(server.pid) == pwd.getpwnam("mysql").pw_uid
        assert "--skip-networking" in kit.process_cmdline(server.pid)
        checks = engine.integrity_check(scratch=scratch)
        assert [x.status for x in checks] == ["passed"] and "tables" in checks[0].detail
        assert engine.fingerprints(scratch=scratch, mode="full", like=fp) == fp  # the backup holds that same point
        assert engine.query_scalar(scratch=scratch, sql="SELECT name FROM patients WHERE id = 7") == "患者7"
    proof = scratch.teardown_proof
    assert kit.proof_clean(proof), proof
    assert not Path(proof["datadir"]).exists() and not kit.process_running(proof["server_pid"])


@pytest.fixture
def phys_workspace(workspace, physical_source):
    db = physical_source
    policy = {"system": "lis", "tier": "30m", "rpo": "24h", "engine": "mariadb",
              "source": {"dsn": mdb_dsn(db), "mode": "physical"}, "targets": ["offsite"],
              "drill": {"fingerprint": "full", "assertions": [
                  {"name": "patients present", "sql": "SELECT COUNT(*) FROM patients", "expect": "> 0"}]}}
    workspace.policy_file("demo-lis").unlink()
    workspace.policy_file("lis").write_text(yaml.safe_dump(policy, allow_unicode=True))
    workspace.mdb_db = db
    return workspace


def test_cli_backup_drill_passes_and_change_in_scratch_is_caught(phys_workspace):
    ws = phys_workspace
    ws.ok("backup", "lis")
    (bdir,) = ws.backups("lis")
    manifest = json.loads((bdir / "manifest.json").read_text())
    assert manifest["consistency"]["exactness"] == "exact" and manifest["details"]["dump_format"] == "xbstream"
    rec = json.loads(ws.ok("drill", "lis", "--from", "offsite", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]
    assert rec["scratch"]["mode"] == "physical" and rec["scratch"]["prepared_lsn"] == str(manifest["consistency"]["lsn"])
    passed = {x["name"] for x in rec["checks"] if x["status"] == "passed"}
    assert {"fingerprint `patients`", "fingerprint `orders`", "fingerprint schema", "fingerprint database",
            "CHECK TABLE EXTENDED", "assertion patients present"} <= passed
    td = rec["teardown"]
    assert td["datadir_exists"] is False and td["server_pid_running"] is False and td["socket_open"] is False

    ctx = Context.load(ws.config)

    def tamper(engine, scratch):
        conn = engine._connect(scratch)
        try:
            with conn.cursor() as cur:
                cur.execute("UPDATE ward_notes SET note = 'X' WHERE id = 42")
        finally:
            conn.close()

    out = run_drill(ctx, ctx.policy("lis"), after_restore=tamper)
    ctx.close()
    assert out.exit_code == 3
    bad = [x for x in out.record["checks"] if x["status"] == "failed"]
    assert [x["name"] for x in bad] == ["fingerprint `ward_notes`"]
    assert out.record["teardown"]["datadir_exists"] is False


def test_killed_mariadb_backup_records_nothing(phys_workspace):
    ws = phys_workspace
    ws.edit_policy(lambda p: p.update(backup={"compression_level": 19, "threads": 0}), system="lis")
    proc = ws.popen("backup", "lis", "--no-copy")
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and not killed and proc.poll() is None:
        kids = subprocess.run(["pgrep", "-P", str(proc.pid), "-x", "mariadb-backup"], capture_output=True,
                              text=True).stdout.split()
        for kid in kids:  # once it has streamed 8 MiB into the pipeline
            try:
                io = dict(line.split(": ") for line in open(f"/proc/{kid}/io").read().splitlines())
                if int(io["wchar"]) > 8 << 20:
                    os.kill(int(kid), signal.SIGKILL)
                    killed = True
            except (OSError, KeyError, ValueError):
                continue
        time.sleep(0.005)
    assert killed, "mariadb-backup never ran long enough to be killed"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "mariadb-backup failed (exit -9)" in err and "Traceback" not in err
    assert not ws.backups("lis") and not ws.ledger_rows("backup")
    assert not list((ws.repo / ".staging").iterdir())


class SpySink(DirectorySink):
    """Records mariadb-backup's command line and environment while it runs."""

    def write_stream(self, name, reader):
        self.seen = [(Path(f"/proc/{p}/cmdline").read_bytes(), Path(f"/proc/{p}/environ").read_bytes())
                     for p in children_named("mariadb-backup")]
        self.cnf_modes = [oct(p.stat().st_mode & 0o777) for p in self.workdir.rglob("my-cnf-*")]
        return super().write_stream(name, reader)


def test_secrets_never_in_argv_or_environment_and_wrong_password_is_one_line(physical_source, age_keys, dump_dir,
                                                                            tmp_path, monkeypatch):
    db = physical_source
    user = f"bk_pu_{os.getpid()}"
    password = 'Phys "horse" \\ battery#42;'
    mdb_exec(None, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password.replace(chr(92), chr(92) * 2)}'",
             f"GRANT SELECT, SHOW VIEW, RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO '{user}'@'127.0.0.1'")
    try:
        monkeypatch.setenv("BK_PHYS_PW", password)  # an environment password never reaches the child
        src = {"host": MDB_HOST, "port": MDB_PORT, "user": user, "database": db, "password_env": "BK_PHYS_PW"}
        pol = make_mdb_policy(source={**src, "mode": "physical"})
        sink = SpySink(dump_dir(), age_keys.recipients)
        result = MariadbPhysicalEngine().dump(policy=pol, sink=sink)
        assert result.consistency["exactness"] == "exact" and result.fingerprints["`ward_notes`"]["rows"] == 200
        assert sink.seen, "mariadb-backup was not running while the sink read"
        for cmdline, environ in sink.seen:
            assert password.encode() not in cmdline and password.encode() not in environ
            assert b"--defaults-extra-file=" in cmdline
        assert sink.cnf_modes and all(m == "0o600" for m in sink.cnf_modes)
        assert not list(sink.workdir.rglob("my-cnf-*"))
        assert password not in json.dumps([result.consistency, result.details], default=str)

        monkeypatch.setenv("BK_PHYS_PW", "wrong-Phys-zz9")
        with pytest.raises(JobFailed) as e:
            MariadbPhysicalEngine().dump(policy=pol, sink=DirectorySink(dump_dir(), age_keys.recipients))
        msg = str(e.value)
        assert msg.startswith(f"policy lis: cannot connect to MariaDB at {MDB_HOST}:{MDB_PORT} database {db}: "
                              "Access denied") and "\n" not in msg and "wrong-Phys-zz9" not in msg
    finally:
        mdb_exec(None, f"DROP USER '{user}'@'127.0.0.1'")


def _policy_file(tmp_path, source: dict, drill: dict | None = None) -> Path:
    p = tmp_path / "lis.yaml"
    p.write_text(yaml.safe_dump({"system": "lis", "tier": "30m", "engine": "mariadb", "source": source,
                                 "drill": {"fingerprint": "full", **(drill or {})}}))
    return p


@pytest.mark.parametrize("source,drill,needle", [
    ({"dsn": "mariadb://root@127.0.0.1:3306/his", "mode": "physical"},
     {"scratch": {"type": "database", "dsn": "mariadb://root@10.0.0.9:3306/"}}, "ephemeral"),
    ({"dsn": "mariadb://root@127.0.0.1:3306/his", "options": {"parallel": 4}}, None, "only with mode: physical"),
    ({"dsn": "mariadb://root@127.0.0.1:3306/his", "mode": "physical", "options": {"lock_wait_timeout": 5}}, None,
     "only with mode: dump"),
    ({"dsn": "mariadb://root@127.0.0.1:3306/his", "mode": "physical", "options": {"parallel": 0}}, None,
     "options.parallel"),
])
def test_physical_policy_checked_at_load(tmp_path, source, drill, needle):
    with pytest.raises(ConfigError) as e:
        load_policy(_policy_file(tmp_path, source, drill))
    assert needle in str(e.value) and "\n" not in str(e.value)
    load_policy(_policy_file(tmp_path, {"dsn": "mariadb://root@127.0.0.1:3306/his", "mode": "physical",
                                        "options": {"parallel": 2}}))


def test_database_scratch_refused_at_drill_start_before_anything(physical_source, tmp_path):
    loaded = physical_policy(physical_source)
    scratch = loaded.drill.scratch.model_copy(update={"type": "database", "dsn": "mariadb://root@10.0.0.9:3306/"})
    # a policy that got past the load-time check (frozen models: model_copy skips validation)
    policy = loaded.model_copy(update={"drill": loaded.drill.model_copy(update={"scratch": scratch})})
    with pytest.raises(ConfigError, match="drills only into drill.scratch.type ephemeral"):
        with MariadbPhysicalEngine().scratch(policy=policy, workdir=tmp_path / "d"):
            pass
    assert not (tmp_path / "d").exists()


def test_a_dump_mode_backup_is_not_fed_to_mbstream(physical_source, tmp_path):
    policy = physical_policy(physical_source)
    engine = MariadbPhysicalEngine()
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        scratch.manifest = {"details": {"dump_format": "sql"}, "consistency": {}, "fingerprints": {}}
        with pytest.raises(ConfigError, match="taken in mode dump"):
            engine.restore(policy=policy, scratch=scratch, source=None)
        assert not scratch.handle.server.datadir.exists()
    assert kit.proof_clean(scratch.teardown_proof), scratch.teardown_proof


@pytest.fixture
def binlog_server(tmp_path):
    """A second real server (loopback TCP) that keeps a binary log, so GTID positions exist."""
    from backupkit.engines.mariadb_server import new_server

    server = new_server(tmp_path / "binlog-server", tcp=True)
    server.extra = ["--log-bin=mysql-bin", "--server-id=7", "--gtid-domain-id=3"]  # after --skip-log-bin: wins
    server.start()
    try:
        yield server
    finally:
        assert kit.proof_clean(server.stop())


def test_binlog_and_gtid_positions_recorded_and_agree(binlog_server, age_keys, dump_dir, tmp_path):
    import pymysql

    def run(*sql):
        conn = pymysql.connect(host="127.0.0.1", port=binlog_server.port, user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                for s in sql:
                    cur.execute(s)
                return cur.fetchall()
        finally:
            conn.close()

    run("CREATE DATABASE his", "CREATE TABLE his.t (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB",
        "INSERT INTO his.t SELECT seq, 'x' FROM his.seq_1_to_500")
    assert run("SELECT @@log_bin")[0][0] == 1
    policy = make_mdb_policy(source={"dsn": f"mariadb://root@127.0.0.1:{binlog_server.port}/his", "mode": "physical"})
    engine = MariadbPhysicalEngine()
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    result = engine.dump(policy=policy, sink=sink)
    c = result.consistency
    assert c["exactness"] == "exact", c
    assert c["gtid_binlog_pos"].startswith("3-7-") and c["binlog_file"].startswith("mysql-bin.")
    assert f"GTID of the last change '{c['gtid_binlog_pos']}'" in c["backup_binlog_pos"]
    assert result.details["source_datadir"].rstrip("/") == str(binlog_server.datadir)
    with engine.scratch(policy=policy, workdir=tmp_path / "drill") as scratch:
        scratch.manifest = {"fingerprints": result.fingerprints, "details": result.details, "consistency": c}
        engine.restore(policy=policy, scratch=scratch, source=open_source(sink, age_keys))
        assert engine.fingerprints(scratch=scratch, mode="full") == result.fingerprints
