"""OracleEngine (mode: datapump) against the recording stand-in of tests/fixtures/oracle_fake.py.

Oracle cannot run here: these tests hold the engine to the exact PL/SQL and binds it sends, the SCN
it uses everywhere, its cleanup of stopped and killed jobs, its chunked file transfers and its
refusals and messages. tests/test_oracle_integration.py runs against a real database when
BACKUPKIT_TEST_ORACLE_DSN is set.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import yaml

from backupkit.artifact import DirectorySink
from backupkit.engines import get_engine, kit
from backupkit.engines.oracle import OracleEngine
from backupkit.engines.oracle_datapump import EXPORT_BLOCK
from backupkit.engines.oracle_fingerprint import METHOD_ORA_HASH, METHOD_SHA256, canonical, table_sql
from backupkit.errors import ConfigError, JobFailed, TransientError
from backupkit.policy import Policy, load_policy
from backupkit.verdict import compare_fingerprints

from fixtures.oracle_fake import PASSWORD, ora
from fixtures.postgres import open_source

COLUMNS = [("ID", "NUMBER"), ("NAME", "VARCHAR2"), ("ADMITTED", "DATE"), ("NOTE", "CLOB")]
ROWS = [(1, "王小明", "2026-01-01", "青霉素过敏"), (2, "李四", None, None), (2, "李四", None, None)]




def policy(secrets_dir: Path, *, source: dict | None = None, scratch: dict | None = None, **drill) -> Policy:
    data = {
        "system": "his", "tier": "30m", "engine": "oracle",
        "source": {"dsn": "his-db:1521/HIS", "user": "BACKUPKIT", "password_file": str(secrets_dir / "source.pass"),
                   "oracle": {"schema": "his", "directory": "DATA_PUMP_DIR", "poll_seconds": 1}, **(source or {})},
        "drill": {"fingerprint": "full", **drill,
                  "scratch": {"type": "database", "dsn": "drill-db:1521/DRILL",
                              "password_file": str(secrets_dir / "scratch.pass"),
                              "oracle": {"user": "system", "tablespace": "users"}, **(scratch or {})}},
    }
    return Policy.model_validate(data)


@pytest.fixture
def servers(oracle_servers):
    src, scratch = oracle_servers
    src.add_table("HIS", "PATIENTS", COLUMNS, ROWS)
    src.add_table("HIS", "EMPTY", [("ID", "NUMBER")], [])
    return src, scratch


@pytest.fixture
def engine(servers) -> OracleEngine:
    src, scratch = servers
    by_dsn = {"his-db:1521/HIS": src, "drill-db:1521/DRILL": scratch}
    e = OracleEngine()
    e.connect = lambda spec: by_dsn[spec.dsn].connect(spec)  # the one seam
    return e


def backup(engine, pol, dump_dir):
    sink = DirectorySink(dump_dir(), [])
    return engine.dump(policy=pol, sink=sink), sink


@pytest.fixture
def sink_factory(dump_dir, age_keys):
    def make():
        return DirectorySink(dump_dir(), age_keys.recipients)
    return make


def drill(engine, pol, sink, result, age_keys, tmp_path):
    with engine.scratch(policy=pol, workdir=tmp_path / "drill") as scratch:
        scratch.manifest = {"fingerprints": result.fingerprints, "details": result.details,
                            "consistency": result.consistency}
        engine.restore(policy=pol, scratch=scratch, source=open_source(sink, age_keys))
        actual = engine.fingerprints(scratch=scratch, mode="full", like=result.fingerprints)
        checks = engine.integrity_check(scratch=scratch)
        info = dict(scratch.info)
    return scratch, actual, checks, info


# ---- backup ---------------------------------------------------------------------------------------


def test_export_sends_exact_plsql_and_uses_one_scn_everywhere(engine, servers, secrets_dir, sink_factory):
    src, _ = servers
    pol = policy(secrets_dir)
    sink = sink_factory()
    result = engine.dump(policy=pol, sink=sink)

    scn = result.consistency["scn"]
    assert result.consistency == {"kind": "oracle", "scn": 5_000_000, "time": "2026-03-01T02:00:00.000000+00:00",
                                  "dbid": 1111, "schema": "HIS"}
    assert result.server_version == "Oracle 19.3.0.0.0"
    [open_call] = src.sql("DBMS_DATAPUMP.OPEN")
    assert open_call.sql == EXPORT_BLOCK
    assert "h := DBMS_DATAPUMP.OPEN(operation => 'EXPORT', job_mode => 'SCHEMA', job_name => :job_name, " \
           "version => :version);" in open_call.sql
    assert "DBMS_DATAPUMP.SET_PARAMETER(handle => h, name => 'FLASHBACK_SCN', value => :scn);" in open_call.sql
    assert "COMPRESSION" not in open_call.sql and "ENCRYPTION" not in open_call.sql  # licensed options: never
    job = open_call.binds["job_name"]
    assert re.fullmatch(r"BK[0-9A-F]{6}_[0-9A-F]{8}", job) and len(job) <= 30
    dmp, log = f"{job[:9]}EXPORT.dmp", f"{job[:9]}EXPORT.log"  # one name per policy: see the killed-run test
    assert open_call.binds == {"job_name": job, "version": "COMPATIBLE", "dump_file": dmp,
                               "log_file": log, "directory": "DATA_PUMP_DIR",
                               "schema_expr": "IN ('HIS')", "scn": scn, "handle": "<out>"}
    # every fingerprint query reads AS OF SCN with the export's SCN
    fp_calls = src.sql("SELECT COUNT(*), LPAD")
    assert len(fp_calls) == 2 and all(c.sql.endswith(" AS OF SCN :scn t)") and c.binds == {"scn": scn} for c in fp_calls)
    # polled until COMPLETED, then detached
    assert [c.binds["handle"] for c in src.sql("DBMS_DATAPUMP.GET_STATUS")] == [1, 1]
    assert src.sql("DBMS_DATAPUMP.GET_STATUS")[0].binds["timeout"] == 1
    assert len(src.sql("DBMS_DATAPUMP.DETACH")) == 1 and not src.sql("STOP_JOB(handle => :handle")
    # the dump was streamed in ≤ 32767-byte DBMS_LOB.READ calls at contiguous offsets, then removed with its log
    reads = [c.binds for c in src.sql("DBMS_LOB.READ") if c.binds["file_name"] == dmp]
    assert len(reads) > 2 and all(r["amount"] <= 32767 for r in reads)
    offsets = [r["offset"] for r in reads]
    assert offsets == [1 + sum(r["amount"] for r in reads[:i]) for i in range(len(reads))]
    assert sink.streams[0].name == "data" and sink.streams[0].content_bytes == result.details["datapump"]["dump_bytes"]
    assert sum(r["amount"] for r in reads) == result.details["datapump"]["dump_bytes"]
    # swept before the export (nothing left by an earlier run here), removed after it
    assert [c.binds["file_name"] for c in src.sql("UTL_FILE.FREMOVE")] == [dmp, log, dmp, log]
    assert src.directories["DATA_PUMP_DIR"] == {} and src.jobs == {} and src.master_tables == set()
    assert result.details["server_files_removed"] == [dmp, log] and "orphans_cleaned" not in result.details

    fp = result.fingerprints
    assert set(fp) == {"PATIENTS", "EMPTY", "schema"}
    assert fp["PATIENTS"]["rows"] == 3 and len(fp["PATIENTS"]["hash"]) == 32
    assert fp["PATIENTS"]["method"] == METHOD_SHA256 and fp["PATIENTS"]["columns"] == ["ID", "NAME", "ADMITTED", "NOTE"]
    assert fp["EMPTY"]["rows"] == 0
    assert result.details["datapump"]["log_rows"] == "equal to the fingerprints"
    assert result.details["charset"] == "ZHS16GBK" and result.details["tablespaces"] == ["HIS_DATA", "HIS_IDX"]


def test_writes_after_the_scn_are_not_in_the_fingerprints_or_the_dump(engine, servers, secrets_dir, sink_factory,
                                                                     age_keys, tmp_path):
    src, _ = servers
    src.after_scn_read = lambda: src.write("HIS", "PATIENTS", ROWS + [(9, "late", None, None)])
    sink = sink_factory()
    result = engine.dump(policy=policy(secrets_dir), sink=sink)
    assert result.fingerprints["PATIENTS"]["rows"] == 3  # as of the SCN, not the newer version
    _, actual, _, _ = drill(engine, policy(secrets_dir), sink, result, age_keys, tmp_path)
    assert all(c["status"] == "passed" for c in compare_fingerprints(result.fingerprints, actual))


def test_11g_uses_ora_hash_fallback_and_thick_mode_settings_reach_connect(servers, secrets_dir, sink_factory, tmp_path):
    src, _ = servers
    src.version = "11.2.0.4.0"
    lib = tmp_path / "instantclient_19_23"
    lib.mkdir()
    e = OracleEngine()
    e.connect = src.connect
    pol = policy(secrets_dir, source={"oracle": {"schema": "HIS", "client_lib_dir": str(lib)}})
    result = e.dump(policy=pol, sink=sink_factory())
    assert result.fingerprints["PATIENTS"]["method"] == METHOD_ORA_HASH
    assert len(result.fingerprints["PATIENTS"]["hash"]) == 16  # 64 bits: two 32-bit ORA_HASH seeds
    assert all("ORA_HASH(" in c.sql and "STANDARD_HASH" not in c.sql for c in src.sql("SELECT COUNT(*), LPAD"))
    assert not src.sql("CON_DBID")  # 11g has no CON_DBID; v$database.dbid is the database's
    spec = src.connects[0]
    assert spec.client.thick_mode and spec.client.client_lib_dir == lib
    assert spec.password == PASSWORD and PASSWORD not in repr(spec)


def test_fingerprint_sql_is_exact():
    cols = [("ID", canonical("ID", "NUMBER", None, METHOD_SHA256)[0]),
            ("NAME", canonical("NAME", "VARCHAR2", None, METHOD_SHA256)[0]),
            ("AT", canonical("AT", "TIMESTAMP(6) WITH TIME ZONE", None, METHOD_SHA256)[0]),
            ("DOC", canonical("DOC", "BLOB", None, METHOD_SHA256)[0])]
    assert table_sql("HIS", "T", cols, mode="full", method=METHOD_SHA256, as_of_scn=True) == (
        "SELECT COUNT(*), "
        "LPAD(TO_CHAR(MOD(NVL(SUM(TO_NUMBER(SUBSTR(d, 1, 16), 'XXXXXXXXXXXXXXXX')), 0), 18446744073709551616), "
        "'FMXXXXXXXXXXXXXXXX'), 16, '0'), "
        "LPAD(TO_CHAR(MOD(NVL(SUM(TO_NUMBER(SUBSTR(d, 17, 16), 'XXXXXXXXXXXXXXXX')), 0), 18446744073709551616), "
        "'FMXXXXXXXXXXXXXXXX'), 16, '0') "
        "FROM (SELECT RAWTOHEX(STANDARD_HASH(RAWTOHEX(STANDARD_HASH("
        "CASE WHEN t.\"ID\" IS NULL THEN 'N' ELSE RAWTOHEX(STANDARD_HASH("
        "TO_CHAR(t.\"ID\", 'TM9', 'NLS_NUMERIC_CHARACTERS=''.,'''), 'SHA256')) END || "
        "CASE WHEN t.\"NAME\" IS NULL THEN 'N' ELSE RAWTOHEX(STANDARD_HASH(t.\"NAME\", 'SHA256')) END || "
        "CASE WHEN t.\"AT\" IS NULL THEN 'N' ELSE RAWTOHEX(STANDARD_HASH("
        "TO_CHAR(t.\"AT\", 'SYYYY-MM-DD HH24:MI:SS.FF9 TZR'), 'SHA256')) END || "
        "CASE WHEN t.\"DOC\" IS NULL THEN 'N' ELSE RAWTOHEX(STANDARD_HASH("
        "CASE WHEN DBMS_LOB.GETLENGTH(t.\"DOC\") = 0 THEN '0:' ELSE DBMS_LOB.GETLENGTH(t.\"DOC\") || ':' || "
        "RAWTOHEX(DBMS_CRYPTO.HASH(t.\"DOC\", 4)) END, 'SHA256')) END, 'SHA256')), 'SHA256')) AS d "
        "FROM \"HIS\".\"T\" AS OF SCN :scn t)")
    ora11 = table_sql("HIS", "T", cols[:1], mode="full", method=METHOD_ORA_HASH, as_of_scn=False)
    assert "ORA_HASH(TO_CHAR(t.\"ID\", 'TM9', 'NLS_NUMERIC_CHARACTERS=''.,'''), 4294967295, 1)" in ora11
    assert "SUBSTR(d, 17" not in ora11 and ora11.endswith("FROM \"HIS\".\"T\" t)")
    assert table_sql("HIS", "T", cols, mode="rows", method=METHOD_SHA256, as_of_scn=True) == \
        'SELECT COUNT(*) FROM "HIS"."T" AS OF SCN :scn t'
    assert canonical("L", "LONG", None, METHOD_SHA256) == (None, "LONG cannot be used in SQL expressions")
    assert canonical("B", "BLOB", None, METHOD_ORA_HASH)[0].endswith("DBMS_CRYPTO.HASH(t.\"B\", 3)) END")


def test_ora_01555_is_a_clear_failure_and_leaves_nothing_behind(engine, servers, secrets_dir, sink_factory):
    src, _ = servers
    src.undo_retention = 60
    src.after_scn_read = lambda: setattr(src, "undo_floor", src.scn + 1)  # undo overwritten during the export
    with pytest.raises(JobFailed) as ei:
        engine.dump(policy=policy(secrets_dir), sink=sink_factory())
    msg = str(ei.value)
    assert "ORA-01555" in msg and "snapshot too old" in msg and "SCN 5000000" in msg
    assert "raise UNDO_RETENTION (now 60s)" in msg
    assert src.directories["DATA_PUMP_DIR"] == {} and src.jobs == {} and src.master_tables == set()


def test_undo_retention_shorter_than_the_expected_export_is_warned(engine, servers, secrets_dir, sink_factory, caplog):
    src, _ = servers
    src.undo_retention = 1  # 12 MB of segments at 0.01 MB/s: about 1200 s expected
    pol = policy(secrets_dir, source={"oracle": {"schema": "HIS", "export_mb_per_second": 0.01}})
    with caplog.at_level(logging.WARNING):
        result = engine.dump(policy=pol, sink=sink_factory())
    assert any("UNDO_RETENTION is 1s" in w and "ORA-01555" in w for w in result.details["warnings"])
    assert "UNDO_RETENTION is 1s" in caplog.text


def test_stopped_job_is_cleaned_up_and_recorded_as_failed(engine, servers, secrets_dir, sink_factory):
    src, _ = servers
    src.status_script = ["EXECUTING", ("STOPPED", ["ORA-39171: Job is experiencing a resumable wait.",
                                                   "ORA-01653: unable to extend table HIS.PATIENTS"])]
    src.stop_keeps_master = True  # the master table survives STOP_JOB: the engine drops it
    sink = sink_factory()
    with pytest.raises(JobFailed) as ei:
        engine.dump(policy=policy(secrets_dir), sink=sink)
    assert "ended STOPPED" in str(ei.value) and "ORA-01653" in str(ei.value)
    [stop] = src.sql("DBMS_DATAPUMP.STOP_JOB(handle => :handle, immediate => 1, keep_master => 0)")
    job = src.sql("DBMS_DATAPUMP.OPEN")[0].binds["job_name"]
    [drop] = src.sql("DROP TABLE")
    assert drop.sql == f'DROP TABLE "{job}" PURGE'
    assert src.master_tables == set() and src.jobs == {} and src.directories["DATA_PUMP_DIR"] == {}
    assert sink.streams == []  # nothing reached the artifact pipeline
    assert not src.sql("SELECT COUNT(*), LPAD")  # no fingerprints of a failed export


def test_killed_job_is_attached_stopped_and_its_master_table_dropped(engine, servers, secrets_dir, sink_factory):
    src, _ = servers
    src.status_script = ["EXECUTING", ora("ORA-31626: job does not exist")]
    src.stop_keeps_master = True
    with pytest.raises(JobFailed) as ei:
        engine.dump(policy=policy(secrets_dir), sink=sink_factory())
    assert "ended LOST" in str(ei.value) and "ORA-31626" in str(ei.value)
    job = src.sql("DBMS_DATAPUMP.OPEN")[0].binds["job_name"]
    [attach] = src.sql("DBMS_DATAPUMP.ATTACH")
    assert attach.binds == {"job_name": job}
    assert "h := DBMS_DATAPUMP.ATTACH(job_name => :job_name, job_owner => USER);" in attach.sql
    assert src.jobs == {} and src.master_tables == set()


def test_jobs_left_by_a_killed_run_are_cleaned_at_the_next_backup(engine, servers, secrets_dir, sink_factory):
    src, _ = servers
    from backupkit.engines.oracle import job_prefix
    from fixtures.oracle_fake import Job

    # a run killed -9 mid-export: the job keeps running server-side and its files stay behind
    left = job_prefix("his") + "DEADBEEF"
    src.jobs[left] = Job(left, "EXPORT", 99, {}, [], attached=False, state="NOT RUNNING")
    src.master_tables.add(left)
    src.directories["DATA_PUMP_DIR"][f"{left}.dmp"] = bytearray(b"partial")
    result = engine.dump(policy=policy(secrets_dir), sink=sink_factory())
    assert result.details["orphans_cleaned"][0]["job"] == left
    assert result.details["orphans_cleaned"][0]["files_removed"] == [f"{left}.dmp"]
    assert src.jobs == {} and src.master_tables == set() and src.directories["DATA_PUMP_DIR"] == {}


def test_files_of_a_run_killed_after_its_export_finished_are_removed_at_the_next_backup(engine, servers, secrets_dir,
                                                                                       sink_factory, caplog):
    """Killed after the export completed: no job is left to find the files by, but their names are the
    policy's own, so the next backup removes the plaintext dump before it exports again."""
    from backupkit.engines.oracle import export_files

    src, _ = servers
    dmp, log = export_files("his")
    src.directories["DATA_PUMP_DIR"][dmp] = bytearray(b"a whole plaintext export of HIS")
    src.directories["DATA_PUMP_DIR"][log] = bytearray(b"Job successfully completed")
    caplog.set_level(logging.WARNING)
    result = engine.dump(policy=policy(secrets_dir), sink=sink_factory())
    assert result.details["orphans_cleaned"] == [{"files_removed": [dmp, log]}]
    assert f"removed {dmp} and {log} left in DATA_PUMP_DIR by an interrupted run" in caplog.text
    assert src.directories["DATA_PUMP_DIR"] == {}
    assert result.details["datapump"]["dump_bytes"] > len(b"a whole plaintext export of HIS")  # a new export


def test_interrupt_stops_the_job(engine, servers, secrets_dir, sink_factory):
    src, _ = servers
    src.status_script = ["EXECUTING", KeyboardInterrupt()]
    with pytest.raises(KeyboardInterrupt):
        engine.dump(policy=policy(secrets_dir), sink=sink_factory())
    assert src.jobs == {} and src.master_tables == set() and src.directories["DATA_PUMP_DIR"] == {}


def test_privileges_ora_31631_and_bad_directory_ora_39002(engine, servers, secrets_dir, sink_factory):
    src, _ = servers
    src.start_error = "ORA-31631: privileges are required\nORA-06512: at \"SYS.DBMS_DATAPUMP\""
    with pytest.raises(JobFailed) as ei:
        engine.dump(policy=policy(secrets_dir), sink=sink_factory())
    assert "DATAPUMP_EXP_FULL_DATABASE" in str(ei.value)
    src.start_error = None
    pol = policy(secrets_dir, source={"oracle": {"schema": "HIS", "directory": "NO_SUCH_DIR"}})
    with pytest.raises(JobFailed) as ei:
        engine.dump(policy=pol, sink=sink_factory())
    assert "ORA-39002" in str(ei.value) and "DIRECTORY object" in str(ei.value)


def test_connect_errors_name_the_fix_and_never_the_password(engine, servers, secrets_dir, sink_factory, caplog):
    src, _ = servers
    src.connect_error = "ORA-01017: invalid username/password; logon denied"
    with caplog.at_level(logging.DEBUG), pytest.raises(JobFailed) as ei:
        engine.dump(policy=policy(secrets_dir), sink=sink_factory())
    assert "check the password file" in str(ei.value) and PASSWORD not in str(ei.value)
    src.connect_error = "ORA-12541: TNS:no listener"
    with pytest.raises(TransientError) as ei:
        engine.dump(policy=policy(secrets_dir), sink=sink_factory())
    assert "lsnrctl" in str(ei.value)
    assert PASSWORD not in caplog.text


def test_password_file_must_be_private(engine, servers, secrets_dir, sink_factory):
    os.chmod(secrets_dir / "source.pass", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        engine.dump(policy=policy(secrets_dir), sink=sink_factory())


# ---- drill ------------------------------------------------------------------------------------------


def test_drill_round_trip_through_the_pipeline(engine, servers, secrets_dir, sink_factory, age_keys, tmp_path, caplog):
    src, scr = servers
    pol = policy(secrets_dir)
    sink = sink_factory()
    with caplog.at_level(logging.DEBUG):
        result = engine.dump(policy=pol, sink=sink)
        scratch, actual, checks, info = drill(engine, pol, sink, result, age_keys, tmp_path)
    assert compare_fingerprints(result.fingerprints, actual) and all(
        c["status"] == "passed" for c in compare_fingerprints(result.fingerprints, actual))
    assert [c.status for c in checks] == ["passed"]
    user = info["user"]
    assert re.fullmatch(r"BKD_[0-9A-F]{12}", user) and info["dbid"] == 2222 and info["source_dbid"] == 1111
    [create] = scr.sql("CREATE USER")
    assert re.fullmatch(rf'CREATE USER "{user}" IDENTIFIED BY "[A-Za-z0-9]+" DEFAULT TABLESPACE "USERS" '
                        rf'QUOTA UNLIMITED ON "USERS" ACCOUNT LOCK', create.sql)
    # upload: UTL_FILE.PUT_RAW in ≤ 32767-byte chunks, 'wb' then 'ab'
    puts = [c.binds for c in scr.sql("UTL_FILE.PUT_RAW")]
    assert puts[0]["open_mode"] == "wb" and {p["open_mode"] for p in puts[1:]} == {"ab"}
    assert all(len(p["chunk"]) <= 32767 for p in puts) and len(puts) > 2
    assert sum(len(p["chunk"]) for p in puts) == result.details["datapump"]["dump_bytes"] == info["upload"]["bytes"]
    [imp] = scr.sql("DBMS_DATAPUMP.OPEN")
    assert "h := DBMS_DATAPUMP.OPEN(operation => 'IMPORT', job_mode => 'SCHEMA', job_name => :job_name);" in imp.sql
    assert ("DBMS_DATAPUMP.METADATA_REMAP(handle => h, name => 'REMAP_SCHEMA', old_value => :source_schema, "
            "value => :scratch_schema);") in imp.sql
    assert imp.sql.count("name => 'REMAP_TABLESPACE'") == 2
    job = imp.binds["job_name"]
    assert imp.binds == {"job_name": job, "dump_file": f"{job}.dmp", "log_file": f"{job}.log",
                         "directory": "DATA_PUMP_DIR", "schema_expr": "IN ('HIS')",
                         "exclude_expr": "IN ('USER', 'SYSTEM_GRANT', 'ROLE_GRANT', 'DEFAULT_ROLE', "
                                         "'TABLESPACE_QUOTA', 'OBJECT_GRANT')",
                         "source_schema": "HIS", "scratch_schema": user, "scratch_tablespace": "USERS",
                         "tablespace_1": "HIS_DATA", "tablespace_2": "HIS_IDX", "handle": "<out>"}
    # the scratch is read as is (no AS OF SCN), with the backup's method
    assert all("AS OF SCN" not in c.sql and "STANDARD_HASH" in c.sql for c in scr.sql("SELECT COUNT(*), LPAD"))
    # teardown: user dropped, files gone, no job; proven by querying afterwards
    assert [c.sql for c in scr.sql("DROP USER")] == [f'DROP USER "{user}" CASCADE']
    assert scratch.teardown_proof == {"user": user, "user_created": True, "dbid": 2222,
                                      "user_exists_after_teardown": False, "jobs_after_teardown": [],
                                      "files_after_teardown": [], "user_exists": False, "job_exists": False,
                                      "file_exists": False}
    assert kit.proof_clean(scratch.teardown_proof)
    assert scr.directories["DATA_PUMP_DIR"] == {} and user not in scr.users
    # the source was only read during the drill (identity check)
    assert not [c for c in src.calls if c.conn > 1 and "DBMS_" in c.sql]
    # no secret in any recorded statement, bind, log line or record
    create_pw = re.search(r'IDENTIFIED BY "([^"]+)"', create.sql).group(1)
    recorded = src.recorded_text() + scr.recorded_text()
    assert PASSWORD not in recorded
    for text in (caplog.text, json.dumps(result.details), json.dumps(result.consistency), json.dumps(info),
                 json.dumps(scratch.teardown_proof)):
        assert PASSWORD not in text and create_pw not in text
    assert all(s.password == PASSWORD for s in src.connects + scr.connects)


def test_a_scratch_user_that_survives_teardown_makes_the_proof_unclean(engine, servers, secrets_dir, sink_factory,
                                                                       age_keys, tmp_path, monkeypatch):
    """The proof states its facts in kit's form (``*_exists``): kit.proof_clean, the contract suite and the
    evidence report judge them, and a user that could not be dropped is a fact, not a log line."""
    from fixtures.oracle_fake import FakeCursor

    plain = FakeCursor.execute

    def execute(self, sql, binds=None, **kw):
        if sql.startswith("DROP USER"):
            raise ora("ORA-01940: cannot drop a user that is currently connected")
        return plain(self, sql, binds, **kw)

    monkeypatch.setattr(FakeCursor, "execute", execute)
    pol = policy(secrets_dir)
    sink = sink_factory()
    result = engine.dump(policy=pol, sink=sink)
    scratch, *_ = drill(engine, pol, sink, result, age_keys, tmp_path)
    proof = scratch.teardown_proof
    assert (proof["user_exists"], proof["job_exists"], proof["file_exists"]) == (True, False, False), proof
    assert proof["user_exists_after_teardown"] is True and "ORA-01940" in proof["errors"][0]
    assert not kit.proof_clean(proof)


def test_drill_catches_a_changed_table(engine, servers, secrets_dir, sink_factory, age_keys, tmp_path):
    src, scr = servers
    pol = policy(secrets_dir)
    sink = sink_factory()
    result = engine.dump(policy=pol, sink=sink)
    with engine.scratch(policy=pol, workdir=tmp_path) as scratch:
        scratch.manifest = {"fingerprints": result.fingerprints, "details": result.details,
                            "consistency": result.consistency}
        engine.restore(policy=pol, scratch=scratch, source=open_source(sink, age_keys))
        scr.schemas[scratch.info["user"]]["PATIENTS"].versions[-1][1][0] = (1, "王小明", "2026-01-02", "青霉素过敏")
        actual = engine.fingerprints(scratch=scratch, mode="full", like=result.fingerprints)
    [bad] = [c for c in compare_fingerprints(result.fingerprints, actual) if c["status"] == "failed"]
    assert bad["name"] == "fingerprint PATIENTS" and "rows=3" in bad["detail"]


def test_scratch_that_is_the_source_database_is_refused_before_anything_is_created(servers, secrets_dir, tmp_path):
    src, scr = servers
    e = OracleEngine()
    e.connect = src.connect  # drill.scratch.dsn reaches the production database
    with pytest.raises(ConfigError, match=r"is the source database \(DBID 1111, HISDB\)"):
        with e.scratch(policy=policy(secrets_dir), workdir=tmp_path):
            pass
    assert not src.sql("CREATE USER") and not src.sql("DBMS_") and not src.sql("DROP")


def test_source_unreachable_then_the_manifest_dbid_is_checked(servers, secrets_dir, tmp_path, age_keys):
    src, scr = servers
    scr.dbid = 1111  # a storage clone of production that kept its DBID
    src.connect_error = "ORA-12541: TNS:no listener"
    e = OracleEngine()
    e.connect = lambda spec: (src if spec.dsn.startswith("his") else scr).connect(spec)
    with e.scratch(policy=policy(secrets_dir), workdir=tmp_path) as scratch:
        assert scratch.info["source_checked"] == "manifest (source unreachable)"
        scratch.manifest = {"consistency": {"dbid": 1111, "schema": "HIS"}, "details": {"schema": "HIS"}}
        with pytest.raises(ConfigError, match="is the source database"):
            e.restore(policy=policy(secrets_dir), scratch=scratch, source=None)
    assert not scr.sql("CREATE USER") and scratch.teardown_proof["user_created"] is False


def test_charset_zhs16gbk_into_al32utf8_says_what_to_do(engine, servers, secrets_dir, sink_factory, age_keys, tmp_path):
    src, scr = servers
    scr.charset = "AL32UTF8"
    pol = policy(secrets_dir)
    sink = sink_factory()
    result = engine.dump(policy=pol, sink=sink)
    with pytest.raises(JobFailed) as ei:
        drill(engine, pol, sink, result, age_keys, tmp_path)
    msg = str(ei.value)
    assert "ZHS16GBK" in msg and "AL32UTF8" in msg and "ORA-12899" in msg
    assert "CHARACTER SET ZHS16GBK" in msg
    assert not scr.sql("CREATE USER")  # refused before anything was created


def test_ora_12899_in_the_import_log_fails_the_restore_with_the_charset_hint(engine, servers, secrets_dir,
                                                                             sink_factory, age_keys, tmp_path):
    src, scr = servers
    pol = policy(secrets_dir)
    sink = sink_factory()
    result = engine.dump(policy=pol, sink=sink)
    result.details["charset"] = scr.charset  # an old manifest without the check's data would get here
    scr.import_log_errors = ['ORA-02374: conversion error loading table "BKD"."PATIENTS"',
                             'ORA-12899: value too large for column NAME (actual: 9, maximum: 6)']
    with pytest.raises(JobFailed) as ei:
        drill(engine, pol, sink, result, age_keys, tmp_path)
    assert "ORA-12899" in str(ei.value) and "value too large" in str(ei.value)
    assert scr.sql("DROP USER") and scr.directories["DATA_PUMP_DIR"] == {}  # torn down anyway


def test_assertions_run_read_only_in_the_scratch_schema(engine, servers, secrets_dir, sink_factory, age_keys, tmp_path):
    src, scr = servers
    pol = policy(secrets_dir)
    sink = sink_factory()
    result = engine.dump(policy=pol, sink=sink)
    scr.assertions["SELECT COUNT(*) FROM patients WHERE name IS NOT NULL"] = 3
    with engine.scratch(policy=pol, workdir=tmp_path) as scratch:
        scratch.manifest = {"fingerprints": result.fingerprints, "details": result.details,
                            "consistency": result.consistency}
        engine.restore(policy=pol, scratch=scratch, source=open_source(sink, age_keys))
        assert engine.query_scalar(scratch=scratch, sql="SELECT COUNT(*) FROM patients WHERE name IS NOT NULL") == 3
        user = scratch.info["user"]
    seq = [c.sql for c in scr.calls]
    i = seq.index(f'ALTER SESSION SET CURRENT_SCHEMA = "{user}"')
    assert seq[i + 1:i + 4] == ["SET TRANSACTION READ ONLY", "SELECT COUNT(*) FROM patients WHERE name IS NOT NULL",
                                "BEGIN EXECUTE IMMEDIATE 'ALTER SESSION SET CURRENT_SCHEMA = ' || "
                                "DBMS_ASSERT.ENQUOTE_NAME(SYS_CONTEXT('USERENV', 'SESSION_USER'), FALSE); END;"]


def test_rman_mode_needs_its_ssh_block(secrets_dir):
    """mode rman is built (tests/test_oracle_rman.py); without the database host it is refused at load."""
    with pytest.raises(ValueError, match=r"source.oracle.ssh\n\s+mode rman needs source.oracle.ssh"):
        policy(secrets_dir, source={"oracle": {"schema": "HIS", "mode": "rman"}})


def test_get_engine_returns_the_oracle_engine():
    assert isinstance(get_engine("oracle"), OracleEngine)


# ---- policy load --------------------------------------------------------------------------------------


def write_policy(tmp_path: Path, secrets_dir: Path, source: dict, scratch: dict | None = None) -> Path:
    f = tmp_path / "his.yaml"
    data = {"system": "his", "tier": "30m", "engine": "oracle",
            "source": {"user": "BACKUPKIT", "password_file": str(secrets_dir / "source.pass"), **source}}
    if scratch is None:  # an Oracle drill needs a scratch database (checked at load)
        scratch = {"type": "database", "dsn": "drill-db:1521/DRILL", "password_file": str(secrets_dir / "scratch.pass"),
                   "oracle": {"user": "system"}}
    data["drill"] = {"scratch": scratch}
    f.write_text(yaml.safe_dump(data, allow_unicode=True))
    return f


@pytest.mark.parametrize("dsn, message", [
    ("his-db:1521", "is not an Easy Connect string"),
    ("his-db:99999/HIS", "is not between 1 and 65535"),
    ("backupkit/secret@his-db:1521/HIS", "contains a user or password"),
    ("(DESCRIPTION=(ADDRESS=(HOST=x)(PORT=1521))", "unbalanced parentheses"),
    ("HISPROD", "is a TNS alias but oracle.tns_admin is not set"),
    ("his db/x", "is not an Easy Connect string"),
])
def test_bad_connect_descriptors_are_refused_at_load_naming_the_field(tmp_path, secrets_dir, dsn, message):
    f = write_policy(tmp_path, secrets_dir, {"dsn": dsn, "oracle": {"schema": "HIS"}})
    with pytest.raises(ConfigError) as ei:
        load_policy(f)
    assert str(ei.value).startswith(f"{f}: field 'source.dsn': ") and message in str(ei.value)


def test_tns_alias_must_be_in_tnsnames(tmp_path, secrets_dir):
    tns = tmp_path / "tns"
    tns.mkdir()
    (tns / "tnsnames.ora").write_text("HISPROD =\n  (DESCRIPTION = (ADDRESS = (PROTOCOL = TCP)(HOST = db)(PORT = 1521))"
                                      "\n    (CONNECT_DATA = (SERVICE_NAME = HIS)))\n")
    ok = write_policy(tmp_path, secrets_dir, {"dsn": "HISPROD", "oracle": {"schema": "HIS", "tns_admin": str(tns)}})
    assert load_policy(ok).source.oracle.tns_admin == tns
    bad = write_policy(tmp_path, secrets_dir, {"dsn": "HISDEV", "oracle": {"schema": "HIS", "tns_admin": str(tns)}})
    with pytest.raises(ConfigError, match=r"field 'source.dsn': TNS alias 'HISDEV' is not defined in .*tnsnames.ora"):
        load_policy(bad)


def test_credentials_and_blocks_are_checked_at_load(tmp_path, secrets_dir):
    f = write_policy(tmp_path, secrets_dir, {"dsn": "db:1521/HIS", "password_file": None, "oracle": {"schema": "HIS"}})
    with pytest.raises(ConfigError, match=r"field 'source.password_file': engine oracle needs password_file"):
        load_policy(f)
    f = write_policy(tmp_path, secrets_dir, {"dsn": "db:1521/HIS", "password_file": None,
                                             "oracle": {"schema": "HIS", "wallet_location": "/etc/bk/wallet"}})
    with pytest.raises(ConfigError, match=r"field 'source.oracle.wallet_location': .*needs thick mode"):
        load_policy(f)
    f = write_policy(tmp_path, secrets_dir, {"dsn": "db:1521/HIS"})
    with pytest.raises(ConfigError, match=r"field 'source.oracle': is required for engine oracle: at least 'schema'"):
        load_policy(f)
    f = write_policy(tmp_path, secrets_dir, {"dsn": "db:1521/HIS", "oracle": {"schema": "HIS"}},
                     scratch={"type": "database", "dsn": "drill:1521", "password_file": str(secrets_dir / "s.pass"),
                              "oracle": {"user": "SYSTEM"}})
    with pytest.raises(ConfigError, match=r"field 'drill.scratch.dsn': 'drill:1521' is not an Easy Connect"):
        load_policy(f)
    f = write_policy(tmp_path, secrets_dir, {"dsn": "db:1521/HIS", "oracle": {"schema": "HIS; DROP"}})
    with pytest.raises(ConfigError, match=r"field 'source.oracle.schema'.*is not an Oracle schema name"):
        load_policy(f)


def test_what_a_killed_drill_left_on_the_scratch_database_is_dropped_by_cleanup(engine, servers, secrets_dir,
                                                                                sink_factory, age_keys, tmp_path,
                                                                                monkeypatch):
    """A drill killed before its teardown leaves the scratch user (the restored schema, patient data) and the
    uploaded dump on the scratch database; ``drop_leftover_scratch`` finds them by the name derived from the
    dead drill's work directory and drops them, with the proof."""
    from backupkit.engines.oracle import scratch_user

    src, scratch_db = servers
    pol = policy(secrets_dir)
    sink = sink_factory()
    result = engine.dump(policy=pol, sink=sink)
    with monkeypatch.context() as m:  # as if SIGKILLed after the import: no teardown ran
        m.setattr(OracleEngine, "_teardown", lambda self, h: {})
        drill(engine, pol, sink, result, age_keys, tmp_path)
    user = scratch_user(tmp_path / "drill")
    files = [f"BKI_{user[4:]}.dmp", f"BKI_{user[4:]}.log"]
    assert user in scratch_db.users and "PATIENTS" in scratch_db.schemas[user]
    for f in files:  # killed during the import: the uploaded dump and the log are still there too
        scratch_db.directories["DATA_PUMP_DIR"][f] = bytearray(b"plaintext dump")
    other = scratch_user(tmp_path / "another-drill")
    scratch_db.users.add(other)  # a live drill's user: never touched
    proof = engine.drop_leftover_scratch(policy=pol, workdir=tmp_path / "drill")
    assert user not in scratch_db.users and not set(files) & set(scratch_db.directories["DATA_PUMP_DIR"])
    assert other in scratch_db.users
    assert proof["user"] == user and (proof["user_exists"], proof["job_exists"], proof["file_exists"]) == (
        False, False, False) and kit.proof_clean(proof) and "errors" not in proof
    again = engine.drop_leftover_scratch(policy=pol, workdir=tmp_path / "drill")  # nothing left: still clean
    assert again["user_created"] is False and kit.proof_clean(again) and "errors" not in again
