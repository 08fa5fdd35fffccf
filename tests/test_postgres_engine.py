"""PostgresEngine against the real PostgreSQL server: dump through the real artifact
pipeline, restore into real scratch instances, compare fingerprints.

Needs the fixtures module ``fixtures.postgres`` (registered in tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import threading
import time
from pathlib import Path

import psycopg
import pytest

from backupkit.artifact import DirectorySink
from backupkit.engines.pg_cluster import process_running, process_uid
from backupkit.engines.pg_fingerprint import (
    copy_text_hash,
    fingerprints as relation_fingerprints,
    set_fingerprint_session,
    table_names,
)
from backupkit.engines.postgres import PostgresEngine
from backupkit.errors import ConfigError, JobFailed
from backupkit.verdict import compare_fingerprints

from fixtures.common import children_named
from fixtures.postgres import ADMIN_DSN, make_policy, open_source, pg_dsn, pg_exec, pg_scalar

pytestmark = pytest.mark.postgres

ALL_TYPES_SQL = [
    """CREATE TABLE patients (
        id bigint PRIMARY KEY, name text NOT NULL, note text, photo bytea, record jsonb, tags text[],
        scores numeric(12,4)[], balance numeric, weight double precision, admitted timestamptz,
        born date, stay interval, active boolean, uid uuid)""",
    """INSERT INTO patients VALUES
        (1, '王小明', '过敏史: 青霉素', '\\x00ff10'::bytea, '{"b": [1, 2.50, null], "a": "值"}', '{a,"b c",NULL}',
         '{1.5,NULL,3.1415}', 12345678901234567890.123456789, 0.1, '2024-03-01 08:30:00+08', '1980-02-29',
         '1 year 2 mons 3 days 04:05:06.789', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
        (2, '李四', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (3, 'Ελένη "quoted", comma', E'line1\\nline2\\ttab\\\\', '\\x'::bytea, '[]', '{}', '{}', 'NaN', 'Infinity',
         'infinity', '-infinity', '-1 day', false, NULL)""",
    "CREATE TABLE events (kind text, at timestamptz, qty int)",  # no primary key, duplicate rows
    """INSERT INTO events VALUES ('visit', '2024-01-01 00:00:00+00', 1), ('visit', '2024-01-01 00:00:00+00', 1),
        ('visit', '2024-01-01 00:00:00+00', 1), (NULL, NULL, NULL), (NULL, NULL, NULL)""",
    "CREATE SCHEMA lab",
    "CREATE TABLE lab.results (id serial PRIMARY KEY, patient_id bigint REFERENCES patients(id), value numeric, unit text)",
    "INSERT INTO lab.results (patient_id, value, unit) SELECT 1 + g % 3, g / 7.0, 'mmol/L' FROM generate_series(1, 2000) g",
    "CREATE INDEX results_patient_idx ON lab.results (patient_id)",
    "CREATE TABLE empty_table (id int PRIMARY KEY)",
    # json and point have no hash function: this table falls back to the text method
    "CREATE TABLE devices (id int PRIMARY KEY, config json, loc point)",
    """INSERT INTO devices VALUES (1, '{"ward": "ICU", "beds": [1, 2]}', '(1.5,2)'), (2, NULL, NULL)""",
]


def scratch_conn(scratch) -> psycopg.Connection:
    return psycopg.connect(scratch.handle.endpoint.conninfo(), autocommit=True)


def dump(engine, policy, directory: Path, age, sink_cls=DirectorySink):
    sink = sink_cls(directory, age.recipients)
    return engine.dump(policy=policy, sink=sink), sink


def restore(engine, policy, scratch, sink, age, result):
    """Restore as drill and restore do: with the manifest's fingerprints and details at hand."""
    scratch.manifest = {"fingerprints": result.fingerprints, "details": result.details}
    engine.restore(policy=policy, scratch=scratch, source=open_source(sink, age))


TABLES = {"public.patients", "public.events", "lab.results", "public.empty_table", "public.devices"}


def tables(fp: dict) -> dict:
    return {k: v for k, v in fp.items() if v.get("kind") == "table"}


def assert_torn_down(scratch):
    proof = scratch.teardown_proof
    assert proof["datadir_exists"] is False
    assert proof["port_open"] is False
    assert proof["postmaster_running"] is False
    # Verify the facts ourselves too.
    assert not Path(proof["datadir"]).exists()
    assert not Path(proof["datadir"]).parent.exists()
    assert not process_running(proof["postmaster_pid"])


def test_round_trip_full_all_types_and_tamper_detection(pg_source_db, age_keys, dump_dir, tmp_path):
    pg_exec(pg_source_db, *ALL_TYPES_SQL)
    engine = PostgresEngine()
    policy = make_policy(pg_source_db, drill={"fingerprint": "full"})
    result, sink = dump(engine, policy, dump_dir(), age_keys)

    assert result.server_version.startswith(str(pg_scalar(pg_source_db, "SHOW server_version_num"))[:2])
    c = result.consistency
    assert c["kind"] == "postgres" and c["snapshot"] and "/" in c["lsn"] and isinstance(c["xmin"], int)
    assert c["txid_snapshot"].split(":")[0] == str(c["xmin"])
    assert c["time"].endswith("+00:00")
    assert [s.name for s in sink.streams] == ["globals", "data"]
    fp = result.fingerprints
    assert set(tables(fp)) == TABLES
    assert set(fp) - TABLES == {"sequence lab.results_id_seq", "large objects", "schema", "database"}
    assert result.details["fingerprint_format"] == 4 and result.details["fingerprint_keys"] == "quoted"
    assert result.details["sequences_from"] == "archive"
    assert result.details["dump_text"] == {"tables": len(TABLES), "sql_instead": {}}
    assert fp["public.events"]["rows"] == 5 and fp["lab.results"]["rows"] == 2000
    # every table here is hashed from the COPY rows pg_dump wrote into the backup (format 4, dump-text)
    assert fp["public.empty_table"] == {"kind": "table", "rows": 0, "hash": hashlib.sha256(b"").hexdigest(),
                                        "method": "dump-text"}
    assert fp["sequence lab.results_id_seq"] == {"kind": "sequence", "last_value": 2000, "is_called": True}
    assert all(v["method"] == "dump-text" and len(v["hash"]) == 64 for v in tables(fp).values())
    with psycopg.connect(pg_dsn(pg_source_db), autocommit=True) as conn:
        for key, (schema, name) in table_names(conn, sorted(TABLES)).items():
            assert fp[key]["hash"] == copy_text_hash(conn, schema, name), key  # the definition, row by row
        set_fingerprint_session(conn)
        sql_fp = relation_fingerprints(conn, "full", side="source")  # the SQL method (row64)
    # row64: binary hash only where it is content-exact and OID-free; numeric and interval by their send
    # form; float, jsonb, arrays by text
    assert sql_fp["public.patients"]["binary"] == ["id", "name", "note", "photo", "admitted", "born", "active", "uid"]
    assert sql_fp["public.patients"]["send"] == [["balance", "numeric_send"], ["stay", "interval_send"]]
    assert sql_fp["public.patients"]["text"] == ["record", "tags", "scores", "weight"]
    assert sql_fp["public.devices"]["text"] == ["config", "loc"] and sql_fp["lab.results"]["text"] == []
    assert sql_fp["lab.results"]["send"] == [["value", "numeric_send"]]
    assert sql_fp["public.empty_table"] == {"kind": "table", "rows": 0, "hash": "0" * 16, "method": "row64",
                                            "binary": ["id"], "send": [], "text": []}

    with engine.scratch(policy=policy, workdir=tmp_path / "drill") as scratch:
        assert scratch.kind == "ephemeral"
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="full", like=fp) == fp
        restored_sql = engine.fingerprints(scratch=scratch, mode="full", like=sql_fp)
        assert {k: restored_sql[k] for k in sql_fp} == sql_fp
        # the column split recorded in the manifest is honoured: another split gives another hash
        other = {**sql_fp, "lab.results": {**sql_fp["lab.results"], "binary": ["id", "patient_id"], "send": [],
                                           "text": ["value", "unit"]}}
        forced = engine.fingerprints(scratch=scratch, mode="full", like=other)
        assert forced["lab.results"]["text"] == ["value", "unit"] and forced["lab.results"]["hash"] != sql_fp["lab.results"]["hash"]
        assert forced["lab.results"]["rows"] == sql_fp["lab.results"]["rows"]
        checks = engine.integrity_check(scratch=scratch)
        assert [(ch.name, ch.status) for ch in checks] == [("amcheck", "passed")]
        assert checks[0].data["indexes"] >= 4
        assert engine.query_scalar(scratch=scratch, sql="SELECT count(*) FROM patients") == 3
        assert engine.query_scalar(scratch=scratch, sql="SELECT name FROM patients WHERE id = 1") == "王小明"
        assert engine.query_scalar(scratch=scratch, sql="SELECT 1 WHERE false") is None
        with pytest.raises(JobFailed, match="read-only"):
            engine.query_scalar(scratch=scratch, sql="DELETE FROM patients")

        with scratch_conn(scratch) as conn:
            # Delete ONE of three identical rows in a table without a primary key.
            conn.execute("DELETE FROM events WHERE ctid = (SELECT min(ctid) FROM events WHERE kind = 'visit')")
            # Change one value without changing the row count.
            conn.execute("UPDATE lab.results SET value = value + 0.0001 WHERE id = 7")
            # Change a bytea byte.
            conn.execute("UPDATE patients SET photo = '\\x00ff11' WHERE id = 1")
        after = engine.fingerprints(scratch=scratch, mode="full")
        assert after["public.events"]["rows"] == 4 and after["public.events"]["hash"] != fp["public.events"]["hash"]
        assert after["lab.results"]["rows"] == 2000 and after["lab.results"]["hash"] != fp["lab.results"]["hash"]
        assert after["public.patients"]["hash"] != fp["public.patients"]["hash"]
        assert after["public.empty_table"] == fp["public.empty_table"]
    assert_torn_down(scratch)


def test_duplicate_rows_are_not_cancelled_by_the_hash(pg_source_db, age_keys, dump_dir, tmp_path):
    """{a,a,b,b} -> {a,a,a,a}: same row count, and an XOR of row hashes would be 0 for both.
    The summed hash must still differ."""
    pg_exec(pg_source_db, "CREATE TABLE t (v text)", "INSERT INTO t VALUES ('a'), ('a'), ('b'), ('b')")
    engine = PostgresEngine()
    policy = make_policy(pg_source_db)
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="full") == result.fingerprints
        with scratch_conn(scratch) as conn:
            conn.execute("UPDATE t SET v = 'a' WHERE v = 'b'")
        after = engine.fingerprints(scratch=scratch, mode="full")
    assert after["public.t"]["rows"] == 4
    assert after["public.t"]["hash"] != result.fingerprints["public.t"]["hash"]


def test_rows_mode_counts_only(pg_source_db, age_keys, dump_dir, tmp_path):
    pg_exec(pg_source_db, *ALL_TYPES_SQL)
    engine = PostgresEngine()
    policy = make_policy(pg_source_db, drill={"fingerprint": "rows"})
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    assert result.fingerprints["lab.results"] == {"kind": "table", "rows": 2000, "hash": None}
    assert all(v["hash"] is None for v in tables(result.fingerprints).values())
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="rows") == result.fingerprints
        with scratch_conn(scratch) as conn:
            conn.execute("DELETE FROM lab.results WHERE id = 1")
        assert engine.fingerprints(scratch=scratch, mode="rows")["lab.results"]["rows"] == 1999
    assert_torn_down(scratch)


class SlowStartSink(DirectorySink):
    """Holds the data stream back for a moment so concurrent writers commit during the dump."""

    def write_stream(self, name, reader):
        if name == "data":
            time.sleep(1.0)
        return super().write_stream(name, reader)


def test_concurrent_inserts_during_dump_are_consistent(pg_source_db, age_keys, dump_dir, tmp_path):
    pg_exec(pg_source_db, "CREATE TABLE orders (id bigserial PRIMARY KEY, item text, at timestamptz DEFAULT now())",
            "CREATE TABLE audit (order_id bigint, note text)",
            "INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 50000) g")
    stop = threading.Event()
    inserted = [0]

    def writer():
        with psycopg.connect(pg_dsn(pg_source_db), autocommit=True) as conn:
            while not stop.is_set():
                with conn.transaction():  # both tables in one transaction: a consistent dump has equal deltas
                    oid = conn.execute("INSERT INTO orders (item) VALUES ('concurrent') RETURNING id").fetchone()[0]
                    conn.execute("INSERT INTO audit VALUES (%s, 'x')", (oid,))
                inserted[0] += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.3)
        engine = PostgresEngine()
        policy = make_policy(pg_source_db)
        result, sink = dump(engine, policy, dump_dir(), age_keys, sink_cls=SlowStartSink)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    fp = result.fingerprints
    assert fp["public.orders"]["rows"] - 50000 == fp["public.audit"]["rows"]  # same snapshot for both tables
    assert pg_scalar(pg_source_db, "SELECT count(*) FROM orders") > fp["public.orders"]["rows"]  # writes went on
    assert fp["sequence public.orders_id_seq"]["last_value"] >= fp["public.orders"]["rows"]
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="full", like=fp) == fp


def test_unreachable_port_and_missing_database(pg_source_db, age_keys, dump_dir):
    engine = PostgresEngine()
    policy = make_policy(source={"dsn": "postgresql://postgres@127.0.0.1:1/his"})
    with pytest.raises(JobFailed) as e:
        engine.dump(policy=policy, sink=DirectorySink(dump_dir(), age_keys.recipients))
    assert str(e.value).startswith("policy his: cannot connect to PostgreSQL at 127.0.0.1:1 database his: ")
    assert "refused" in str(e.value).lower()

    policy = make_policy(source={"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "no_such_db_bk"})
    with pytest.raises(JobFailed, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:5432 database no_such_db_bk: .*does not exist"):
        engine.dump(policy=policy, sink=DirectorySink(dump_dir(), age_keys.recipients))


def test_password_file_must_be_private(pg_source_db, age_keys, dump_dir, tmp_path):
    pw = tmp_path / "his.pass"
    pw.write_text("secret\n")
    pw.chmod(0o644)
    policy = make_policy(source={"dsn": pg_dsn(pg_source_db), "password_file": str(pw)})
    with pytest.raises(ConfigError, match="chmod 600"):
        PostgresEngine().dump(policy=policy, sink=DirectorySink(dump_dir(), age_keys.recipients))


def test_dsn_with_password_is_refused():
    with pytest.raises(Exception, match="password"):
        make_policy(source={"dsn": "postgresql://u:pw@127.0.0.1/db"})


def test_wrong_password_and_right_password(scram_cluster, age_keys, dump_dir, tmp_path, monkeypatch):
    engine = PostgresEngine()
    src = {"host": str(scram_cluster.sockdir), "port": scram_cluster.port, "user": "alice", "database": "clinic"}
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("wrong-password-zz9\n")
    wrong.chmod(0o600)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(JobFailed) as e:
        engine.dump(policy=make_policy(source={**src, "password_file": str(wrong)}),
                    sink=DirectorySink(dump_dir(), age_keys.recipients))
    msg = str(e.value)
    assert msg.startswith(f"policy his: cannot connect to PostgreSQL at {scram_cluster.sockdir}:{scram_cluster.port} database clinic")
    assert "password authentication failed" in msg
    assert "wrong-password-zz9" not in msg

    # The right password through password_env reaches psycopg *and* pg_dump/pg_dumpall (via a temporary PGPASSFILE).
    monkeypatch.setenv("BK_TEST_PW", "correct-horse-42")
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    result = engine.dump(policy=make_policy(source={**src, "password_env": "BK_TEST_PW"}), sink=sink)
    assert result.fingerprints["public.visits"]["rows"] == 100
    assert not [p for p in sink.workdir.iterdir() if p.name.startswith(".pgpass")]


class KillingSink(DirectorySink):
    """Kills pg_dump after the first chunk of the data stream."""

    def write_stream(self, name, reader):
        if name != "data":
            return super().write_stream(name, reader)
        outer = self

        class Reader:
            def __init__(self):
                self.n = 0

            def read(self, size=-1):
                data = reader.read(size)
                self.n += 1
                if self.n == 1:
                    for pid in children_named("pg_dump"):
                        os.kill(pid, 9)
                        outer.killed = pid
                return data

        return super().write_stream(name, Reader())


class FullDiskSink(DirectorySink):
    def write_stream(self, name, reader):
        if name == "data":
            reader.read(1 << 16)
            self.pg_dumps = children_named("pg_dump")
            raise OSError(28, "No space left on device")
        return super().write_stream(name, reader)


@pytest.fixture
def big_source(pg_source_db):
    pg_exec(pg_source_db, "CREATE TABLE blob (id int, payload text)",
            "INSERT INTO blob SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 100000) g")
    return pg_source_db


def test_pg_dump_killed_mid_stream_fails_the_job(big_source, age_keys, dump_dir):
    sink = KillingSink(dump_dir(), age_keys.recipients)
    with pytest.raises(JobFailed, match=r"policy his: pg_dump failed \(exit -9\)"):
        PostgresEngine().dump(policy=make_policy(big_source), sink=sink)
    assert getattr(sink, "killed", None)


def test_sink_error_kills_pg_dump_and_propagates(big_source, age_keys, dump_dir):
    sink = FullDiskSink(dump_dir(), age_keys.recipients)
    with pytest.raises(OSError, match="No space left"):
        PostgresEngine().dump(policy=make_policy(big_source), sink=sink)
    assert sink.pg_dumps  # pg_dump was running when the sink failed...
    assert not any(process_running(p) for p in sink.pg_dumps)  # ...and is gone now
    assert not children_named("pg_dump")


def _drill_databases() -> set[str]:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'backupkit_drill_%'")}


def test_database_scratch_equal_to_source_is_refused_before_anything(pg_source_db, tmp_path):
    before = _drill_databases()
    engine = PostgresEngine()
    for dsn in (pg_dsn(pg_source_db), f"postgresql://postgres@localhost:5432/{pg_source_db}"):
        policy = make_policy(pg_source_db, drill={"scratch": {"type": "database", "dsn": dsn}})
        with pytest.raises(ConfigError, match="source database of policy his"):
            with engine.scratch(policy=policy, workdir=tmp_path / "w"):
                pytest.fail("the body must not run")
    assert _drill_databases() == before
    assert not (tmp_path / "w").exists()


def test_database_scratch_round_trip_and_drop(pg_source_db, age_keys, dump_dir, tmp_path):
    pg_exec(pg_source_db, *ALL_TYPES_SQL)
    engine = PostgresEngine()
    policy = make_policy(pg_source_db, drill={"scratch": {"type": "database", "dsn": ADMIN_DSN}})
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    with engine.scratch(policy=policy, workdir=tmp_path / "w") as scratch:
        name = scratch.info["database"]
        assert name.startswith("backupkit_drill_his_")
        restore(engine, policy, scratch, sink, age_keys, result)  # creates it with the recorded locale
        assert name in _drill_databases()
        actual = engine.fingerprints(scratch=scratch, mode="full", like=result.fingerprints)
        checks = compare_fingerprints(result.fingerprints, actual)
        assert [c for c in checks if c["status"] != "passed"] == []
        # restored with --no-owner --no-privileges: owners and grants are said to be not compared
        assert "not compared: owners and grants" in next(c for c in checks if c["name"] == "fingerprint schema")["detail"]
    assert scratch.teardown_proof == {"server": "127.0.0.1:5432", "database": name, "database_exists": False}
    assert name not in _drill_databases()


class GarbageSource:
    """A RestoreSource whose data stream is not a pg_dump archive."""

    def stream_names(self):
        return ["data"]

    def stream_to(self, name, writer):
        writer.write(b"PGDMP this is not an archive")

    def to_file(self, name, path):
        with open(path, "wb") as f:
            self.stream_to(name, f)
        return path


def test_failing_restore_still_tears_down_ephemeral_cluster(pg_source_db, tmp_path):
    engine = PostgresEngine()
    policy = make_policy(pg_source_db)
    with pytest.raises(JobFailed, match="pg_restore"):
        with engine.scratch(policy=policy, workdir=tmp_path / "w") as scratch:
            scratch.handle.wait_ready()  # the cluster starts in the background
            pid = scratch.info["postmaster_pid"]
            assert process_running(pid)
            engine.restore(policy=policy, scratch=scratch, source=GarbageSource())
    assert_torn_down(scratch)
    assert not process_running(pid)
    assert not [p for p in (tmp_path / "w").iterdir()] if (tmp_path / "w").exists() else True


def test_exception_in_body_tears_down(pg_source_db, tmp_path):
    engine = PostgresEngine()
    with pytest.raises(RuntimeError):
        with engine.scratch(policy=make_policy(pg_source_db), workdir=tmp_path / "w") as scratch:
            raise RuntimeError("boom")
    assert_torn_down(scratch)


def test_ephemeral_server_runs_as_postgres_when_root(pg_source_db, tmp_path):
    engine = PostgresEngine()
    with engine.scratch(policy=make_policy(pg_source_db), workdir=tmp_path / "w") as scratch:
        scratch.handle.wait_ready()
        uid = process_uid(scratch.info["postmaster_pid"])
        if os.geteuid() == 0:
            assert uid == pwd.getpwnam("postgres").pw_uid != 0
            assert scratch.info["os_user"] == "postgres"
        else:
            assert uid == os.getuid()
        assert scratch.info["listen_addresses"] == ""
        assert Path(scratch.info["socket_dir"], f".s.PGSQL.{scratch.info['port']}").exists()
    assert_torn_down(scratch)


def test_restore_target_refuses_source_and_restores_into_empty_db(pg_source_db, pg_database, age_keys, dump_dir):
    pg_exec(pg_source_db, *ALL_TYPES_SQL)
    engine = PostgresEngine()
    policy = make_policy(pg_source_db)
    with pytest.raises(ConfigError, match="source database"):
        with engine.restore_target(policy=policy, dsn=pg_dsn(pg_source_db)):
            pytest.fail("must refuse")
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    target_db = pg_database("bk_target")
    with engine.restore_target(policy=policy, dsn=pg_dsn(target_db)) as target:
        assert target.kind == "target"
        assert engine.is_empty(scratch=target)
        restore(engine, policy, target, sink, age_keys, result)
        assert not engine.is_empty(scratch=target)
        assert engine.fingerprints(scratch=target, mode="full") == result.fingerprints
    assert target.teardown_proof == {}
    assert pg_scalar(target_db, "SELECT count(*) FROM lab.results") == 2000  # not torn down
