"""MariadbEngine against the real MariaDB server on 127.0.0.1:3306 and real ephemeral
servers: dump through the real artifact pipeline, restore into real scratches,
compare fingerprints. Nothing is mocked; missing servers or programs fail the tests.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import threading
import time
from pathlib import Path

import pytest

from backupkit.artifact import DirectorySink, DirectorySource
from backupkit.engines import kit
from backupkit.engines.mariadb import MariadbEngine
from backupkit.errors import ConfigError, JobFailed
from backupkit.policy import load_policy
from backupkit.verdict import compare_fingerprints

from fixtures.common import children_named
from fixtures.mariadb import MDB_HOST, MDB_PORT, make_mdb_policy, mdb_connect, mdb_dsn, mdb_exec, mdb_scalar

ALL_TYPES_SQL = [
    """CREATE TABLE patients (
        id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, note TEXT, photo BLOB, record JSON,
        balance DECIMAL(12,2), weight DOUBLE, admitted DATETIME(6), seen TIMESTAMP(3) NULL, born DATE,
        flags BIT(5), kind ENUM('门诊','住院'), active TINYINT(1)
    ) ENGINE=InnoDB CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci""",
    """INSERT INTO patients VALUES
        (1, '王小明', '过敏史: 青霉素 😀', x'00ff10', '{"b": [1, 2.50, null], "a": "值"}', 1.50, 0.1,
         '2024-03-01 08:30:00.123456', '2024-03-01 00:00:00.500', '1980-02-29', b'10101', '住院', 1),
        (2, '李四', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (3, 'Ελένη "quoted", comma', 'line1\\nline2\\ttab\\\\', x'', '[]', -0.01, -1e300,
         '1000-01-01 00:00:00.000001', NULL, '9999-12-31', b'0', '门诊', 0)""",
    """CREATE TABLE gbk_notes (id INT PRIMARY KEY, ward VARCHAR(20), memo TEXT)
        ENGINE=InnoDB CHARACTER SET gbk COLLATE gbk_chinese_ci""",
    "INSERT INTO gbk_notes VALUES (1, '内科', '患者主诉头痛三天'), (2, '外科', '术后复查'), (3, NULL, '')",
    # GB18030 is not a MariaDB 10.11 character set (MySQL has it); a binary-collated GBK table instead
    """CREATE TABLE gbk_bin_notes (id INT PRIMARY KEY, txt VARCHAR(40))
        ENGINE=InnoDB CHARACTER SET gbk COLLATE gbk_bin""",
    "INSERT INTO gbk_bin_notes VALUES (1, '龥 张三'), (2, '张三')",
    "CREATE TABLE events_log (kind VARCHAR(10), at DATETIME(6), qty INT) ENGINE=InnoDB",  # no primary key
    """INSERT INTO events_log VALUES ('visit', '2024-01-01 00:00:00', 1), ('visit', '2024-01-01 00:00:00', 1),
        ('visit', '2024-01-01 00:00:00', 1), (NULL, NULL, NULL), (NULL, NULL, NULL)""",
    "CREATE TABLE results (id INT AUTO_INCREMENT PRIMARY KEY, patient_id BIGINT, value DECIMAL(10,4), "
    "unit VARCHAR(10), INDEX (patient_id), FOREIGN KEY (patient_id) REFERENCES patients(id)) ENGINE=InnoDB",
    "INSERT INTO results (patient_id, value, unit) SELECT 1 + seq % 3, seq / 7, 'mmol/L' FROM seq_1_to_2000",
    "CREATE TABLE empty_table (id INT PRIMARY KEY) ENGINE=InnoDB",
    "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40)) ENGINE=InnoDB",
    "CREATE VIEW active_patients AS SELECT id, name FROM patients WHERE active = 1",
    "CREATE TRIGGER patients_audit AFTER UPDATE ON patients FOR EACH ROW INSERT INTO audit (what) VALUES (CONCAT('u', NEW.id))",
    "CREATE FUNCTION bmi(w DOUBLE, h DOUBLE) RETURNS DOUBLE DETERMINISTIC RETURN w / (h * h)",
    "CREATE PROCEDURE purge_audit() DELETE FROM audit",
    "CREATE EVENT nightly_purge ON SCHEDULE EVERY 1 DAY DO DELETE FROM audit",
]

TABLES = {"`patients`", "`gbk_notes`", "`gbk_bin_notes`", "`events_log`", "`results`", "`empty_table`", "`audit`"}


def tables(fp: dict) -> dict:
    return {k: v for k, v in fp.items() if v.get("kind") == "table"}


def dump(engine, policy, directory: Path, age, sink_cls=DirectorySink):
    sink = sink_cls(directory, age.recipients)
    return engine.dump(policy=policy, sink=sink), sink


def open_source(sink, age) -> DirectorySource:
    return DirectorySource(sink.directory, [dataclasses.asdict(s) for s in sink.streams], age.identities,
                           what="test backup", recipient_ids=[r.id for r in age.recipients])


def restore(engine, policy, scratch, sink, age, result):
    scratch.manifest = {"fingerprints": result.fingerprints, "details": result.details}
    engine.restore(policy=policy, scratch=scratch, source=open_source(sink, age))


def scratch_exec(scratch, *statements):
    import pymysql

    ep = scratch.handle.endpoint
    kw = {"unix_socket": ep.socket} if ep.via_socket else {"host": ep.host, "port": ep.port}
    conn = pymysql.connect(user=ep.user, database=ep.database, autocommit=True, charset="utf8mb4", **kw)
    try:
        with conn.cursor() as cur:
            out = None
            for s in statements:
                cur.execute(s)
                out = cur.fetchall() if cur.description else out
            return out
    finally:
        conn.close()


def assert_torn_down(scratch):
    proof = scratch.teardown_proof
    assert kit.proof_clean(proof), proof
    assert not Path(proof["datadir"]).exists()
    assert not kit.process_running(proof["server_pid"])


def test_round_trip_all_types_charsets_and_tamper(mdb_database, age_keys, dump_dir, tmp_path):
    db = mdb_database("bk_src")
    mdb_exec(db, *ALL_TYPES_SQL)
    engine = MariadbEngine()
    policy = make_mdb_policy(db)
    result, sink = dump(engine, policy, dump_dir(), age_keys)

    assert result.server_version.startswith("MariaDB 10.")
    c = result.consistency
    assert c["kind"] == "mariadb" and c["exactness"] == "exact" and "proof" in c and c["lock_seconds"] < 10
    assert [s.name for s in sink.streams] == ["data"]
    fp = result.fingerprints
    assert set(tables(fp)) == TABLES
    assert set(fp) - TABLES == {"schema", "database"}
    assert fp["database"] == {"kind": "database", "character_set": "utf8mb4", "collation": "utf8mb4_unicode_ci"}
    assert fp["`events_log`"]["rows"] == 5 and fp["`results`"]["rows"] == 2000
    # InnoDB tables with a primary key hash the dump's INSERT lines (none: SHA-256 of nothing); the table
    # without a primary key keeps the SQL hash
    assert fp["`empty_table`"] == {"kind": "table", "rows": 0, "method": "dump-text", "info": {"engine": "InnoDB"},
                                   "hash": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
    assert {k for k, v in tables(fp).items() if v.get("method") == "dump-text"} == TABLES - {"`events_log`"}
    assert "method" not in fp["`events_log`"] and len(fp["`events_log`"]["hash"]) == 32
    items = fp["schema"]["items"]
    for name in ("view `active_patients`", "trigger `patients_audit`", "function `bmi`", "procedure `purge_audit`",
                 "event `nightly_purge`", "column `gbk_notes`.`memo`", "index `results`.`patient_id`"):
        assert name in items, name

    with engine.scratch(policy=policy, workdir=tmp_path / "drill") as scratch:
        assert scratch.kind == "ephemeral"
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="full", like=fp) == fp
        assert [(ch.name, ch.status) for ch in engine.integrity_check(scratch=scratch)] == [("CHECK TABLE EXTENDED", "passed")]
        # text and collations came back exactly
        assert engine.query_scalar(scratch=scratch, sql="SELECT memo FROM gbk_notes WHERE id = 1") == "患者主诉头痛三天"
        assert engine.query_scalar(scratch=scratch, sql="SELECT txt FROM gbk_bin_notes WHERE id = 1") == "龥 张三"
        assert engine.query_scalar(scratch=scratch, sql="SELECT note FROM patients WHERE id = 1") == "过敏史: 青霉素 😀"
        assert engine.query_scalar(scratch=scratch, sql="SELECT CAST(balance AS CHAR) FROM patients WHERE id = 1") == "1.50"
        assert scratch_exec(scratch, "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES WHERE "
                                     "TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'gb%' ORDER BY 1") == (
            ("gbk_bin_notes", "gbk_bin"), ("gbk_notes", "gbk_chinese_ci"))
        assert engine.query_scalar(scratch=scratch, sql="SELECT 1 WHERE false") is None
        with pytest.raises(JobFailed, match="READ ONLY"):
            engine.query_scalar(scratch=scratch, sql="DELETE FROM patients")
        # the restored event exists but never fires in the scratch
        assert scratch_exec(scratch, "SELECT @@event_scheduler") == (("OFF",),)

        # Changes that keep the row count: all caught
        scratch_exec(scratch,
                     "DELETE FROM events_log WHERE kind = 'visit' LIMIT 1",  # one of three identical rows
                     "INSERT INTO events_log VALUES (NULL, NULL, NULL)",
                     "UPDATE gbk_notes SET memo = '患者主诉头痛四天' WHERE id = 1",
                     "ALTER TABLE patients MODIFY balance DECIMAL(12,1)")  # 1.50 becomes 1.5
        after = engine.fingerprints(scratch=scratch, mode="full", like=fp)
        assert after["`events_log`"]["rows"] == 5 and after["`events_log`"]["hash"] != fp["`events_log`"]["hash"]
        assert after["`gbk_notes`"]["hash"] != fp["`gbk_notes`"]["hash"]
        assert after["`patients`"]["rows"] == 3 and after["`patients`"]["hash"] != fp["`patients`"]["hash"]
        bad = {ch["name"] for ch in compare_fingerprints(fp, after) if ch["status"] == "failed"}
        assert bad == {"fingerprint `events_log`", "fingerprint `gbk_notes`", "fingerprint `patients`", "fingerprint schema"}
        pid = scratch.info["server_pid"]
        if os.geteuid() == 0:
            assert kit.process_uid(pid) == pwd.getpwnam("mysql").pw_uid
        assert "--skip-networking" in kit.process_cmdline(pid)
        # temporary tables and sort files (patient data) stay in the drill's private directory, not /tmp
        tmpdir = Path(scratch.info["datadir"]).parent / "tmp"
        assert f"--tmpdir={tmpdir}" in kit.process_cmdline(pid) and tmpdir.stat().st_mode & 0o077 == 0
    assert_torn_down(scratch)


def test_rows_mode_counts_only(mdb_database, age_keys, dump_dir, tmp_path):
    db = mdb_database("bk_src")
    mdb_exec(db, *ALL_TYPES_SQL)
    engine = MariadbEngine()
    policy = make_mdb_policy(db, drill={"fingerprint": "rows"})
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    assert result.fingerprints["`results`"] == {"kind": "table", "rows": 2000, "hash": None, "info": {"engine": "InnoDB"}}
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="rows") == result.fingerprints
        scratch_exec(scratch, "DELETE FROM results WHERE id = 1")
        assert engine.fingerprints(scratch=scratch, mode="rows")["`results`"]["rows"] == 1999
    assert_torn_down(scratch)


class SlowStartSink(DirectorySink):
    """Holds the data stream back so concurrent writers commit while the dump runs."""

    def write_stream(self, name, reader):
        time.sleep(1.0)
        return super().write_stream(name, reader)


def test_concurrent_writes_during_dump_are_exact(mdb_database, age_keys, dump_dir, tmp_path):
    db = mdb_database("bk_src")
    mdb_exec(db, "CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40), at DATETIME(6)) ENGINE=InnoDB",
             "CREATE TABLE audit (order_id BIGINT, note VARCHAR(10)) ENGINE=InnoDB",
             "INSERT INTO orders (item, at) SELECT CONCAT('item ', seq), NOW(6) FROM seq_1_to_50000")
    stop = threading.Event()
    inserted = [0]

    def writer():
        conn = mdb_connect(db, autocommit=False)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():  # both tables in one transaction: a consistent dump has equal deltas
                    cur.execute("INSERT INTO orders (item, at) VALUES ('concurrent', NOW(6))")
                    cur.execute("INSERT INTO audit VALUES (LAST_INSERT_ID(), 'x')")
                    conn.commit()
                    inserted[0] += 1
        finally:
            conn.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.3)
        engine = MariadbEngine()
        policy = make_mdb_policy(db)
        result, sink = dump(engine, policy, dump_dir(), age_keys, sink_cls=SlowStartSink)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    fp = result.fingerprints
    assert result.consistency["exactness"] == "exact"
    assert fp["`orders`"]["rows"] - 50000 == fp["`audit`"]["rows"] > 0  # one snapshot for both tables
    assert mdb_scalar(db, "SELECT COUNT(*) FROM orders") > fp["`orders`"]["rows"]  # writes went on during the dump
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="full", like=fp) == fp  # the dump saw the same data


def test_non_transactional_table_is_recorded_approximate(mdb_database, age_keys, dump_dir):
    db = mdb_database("bk_src")
    mdb_exec(db, "CREATE TABLE legacy (id INT) ENGINE=MyISAM", "INSERT INTO legacy VALUES (1)")
    result, _ = dump(MariadbEngine(), make_mdb_policy(db), dump_dir(), age_keys)
    c = result.consistency
    assert c["exactness"] == "approximate"
    assert any("legacy (MyISAM)" in why for why in c["approximate_because"])


class KillingSink(DirectorySink):
    """Kills mariadb-dump after the first chunk of the data stream."""

    def write_stream(self, name, reader):
        outer = self

        class Reader:
            n = 0

            def read(self, size=-1):
                data = reader.read(size)
                self.n += 1
                if self.n == 1:
                    for pid in children_named("mariadb-dump"):
                        os.kill(pid, 9)
                        outer.killed = pid
                return data

        return super().write_stream(name, Reader())


class SpySink(DirectorySink):
    """Records the command line and environment of mariadb-dump while it runs."""

    def write_stream(self, name, reader):
        self.seen = [((Path(f"/proc/{p}/cmdline").read_bytes()), Path(f"/proc/{p}/environ").read_bytes())
                     for p in children_named("mariadb-dump")]
        self.cnf_files = [p for p in self.workdir.rglob("*") if p.is_file()]
        self.cnf_modes = [oct(p.stat().st_mode & 0o777) for p in self.cnf_files]
        return super().write_stream(name, reader)


class FullDiskSink(DirectorySink):
    def write_stream(self, name, reader):
        reader.read(1 << 16)
        self.dumps = children_named("mariadb-dump")
        raise OSError(28, "No space left on device")


@pytest.fixture
def big_source(mdb_database):
    db = mdb_database("bk_big")
    mdb_exec(db, "CREATE TABLE blob_t (id INT PRIMARY KEY, payload TEXT) ENGINE=InnoDB",
             "INSERT INTO blob_t SELECT seq, REPEAT(MD5(seq), 20) FROM seq_1_to_100000")
    return db


def test_mariadb_dump_killed_mid_stream_fails_the_job(big_source, age_keys, dump_dir):
    sink = KillingSink(dump_dir(), age_keys.recipients)
    with pytest.raises(JobFailed, match=r"policy lis: mariadb-dump failed \(exit -9\)"):
        MariadbEngine().dump(policy=make_mdb_policy(big_source), sink=sink)
    assert getattr(sink, "killed", None)


def test_sink_error_kills_mariadb_dump_and_propagates(big_source, age_keys, dump_dir):
    sink = FullDiskSink(dump_dir(), age_keys.recipients)
    with pytest.raises(OSError, match="No space left"):
        MariadbEngine().dump(policy=make_mdb_policy(big_source), sink=sink)
    assert sink.dumps and not any(kit.process_running(p) for p in sink.dumps)
    assert not children_named("mariadb-dump")


@pytest.fixture
def secret_user(mdb_database):
    db = mdb_database("bk_sec")
    mdb_exec(db, "CREATE TABLE visits (id INT PRIMARY KEY, who VARCHAR(10)) ENGINE=InnoDB",
             "INSERT INTO visits SELECT seq, CONCAT('p', seq) FROM seq_1_to_100",
             # more than a pipe holds: mariadb-dump is still running (blocked on the pipe) when the sink
             # starts reading, so the spy sees its live command line and environment, not a zombie's
             "CREATE TABLE filler (id INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB",
             "INSERT INTO filler SELECT seq, REPEAT('x', 1000) FROM seq_1_to_6000")
    user = f"bk_u_{os.getpid()}"
    password = 'Correct "horse" \\ battery#42;'
    mdb_exec(None, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password.replace(chr(92), chr(92) * 2)}'",
             f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD ON *.* TO '{user}'@'127.0.0.1'")
    yield db, user, password
    mdb_exec(None, f"DROP USER '{user}'@'127.0.0.1'")


def test_password_reaches_dump_through_option_file_never_argv(secret_user, age_keys, dump_dir, tmp_path, monkeypatch):
    db, user, password = secret_user
    pw = tmp_path / "lis.pass"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    src = {"host": MDB_HOST, "port": MDB_PORT, "user": user, "database": db, "password_file": str(pw)}
    sink = SpySink(dump_dir(), age_keys.recipients)
    result = MariadbEngine().dump(policy=make_mdb_policy(source=src), sink=sink)
    assert result.fingerprints["`visits`"]["rows"] == 100 and result.consistency["exactness"] == "exact"
    assert sink.seen, "mariadb-dump was not running while the sink read"
    for cmdline, environ in sink.seen:
        assert password.encode() not in cmdline and password.encode() not in environ
        assert b"--defaults-extra-file=" in cmdline
    assert sink.cnf_modes and all(m == "0o600" for m in sink.cnf_modes)
    assert not [p for p in sink.workdir.rglob("*") if p.is_file()]  # removed afterwards

    wrong = tmp_path / "wrong.pass"
    wrong.write_text("wrong-password-zz9\n")
    wrong.chmod(0o600)
    with pytest.raises(JobFailed) as e:
        MariadbEngine().dump(policy=make_mdb_policy(source={**src, "password_file": str(wrong)}),
                             sink=DirectorySink(dump_dir(), age_keys.recipients))
    msg = str(e.value)
    assert msg.startswith(f"policy lis: cannot connect to MariaDB at {MDB_HOST}:{MDB_PORT} database {db}: Access denied")
    assert "wrong-password-zz9" not in msg

    pw.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        MariadbEngine().dump(policy=make_mdb_policy(source=src), sink=DirectorySink(dump_dir(), age_keys.recipients))


def test_unreachable_server(age_keys, dump_dir):
    with pytest.raises(JobFailed, match=r"policy lis: cannot connect to MariaDB at 127\.0\.0\.1:1 database his: .*(refused|Can't connect)"):
        MariadbEngine().dump(policy=make_mdb_policy(source={"dsn": "mariadb://root@127.0.0.1:1/his"}),
                             sink=DirectorySink(dump_dir(), age_keys.recipients))


def _drill_dbs(port_kw=None) -> set:
    conn = mdb_connect(None, **(port_kw or {}))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'backupkit_drill_%'")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def test_database_scratch_on_the_source_server_is_refused_before_anything(mdb_database, tmp_path):
    db = mdb_database("bk_src")
    before = _drill_dbs()
    engine = MariadbEngine()
    socket_path = mdb_scalar(None, "SELECT @@socket")
    for dsn in (mdb_dsn(db), mdb_dsn(""), f"mariadb://root@localhost:{MDB_PORT}/", "mariadb://root@[::1]:3306/",
                f"mariadb://root@localhost/?socket={socket_path}"):
        policy = make_mdb_policy(db, drill={"scratch": {"type": "database", "dsn": dsn}})
        with pytest.raises(ConfigError, match="source server of policy lis"):
            with engine.scratch(policy=policy, workdir=tmp_path / "w"):
                pytest.fail("the body must not run")
    assert _drill_dbs() == before
    assert not (tmp_path / "w").exists()


def test_database_scratch_round_trip_and_drop(mdb_database, mdb_scratch_server, age_keys, dump_dir, tmp_path):
    db = mdb_database("bk_src")
    mdb_exec(db, *ALL_TYPES_SQL)
    engine = MariadbEngine()
    dsn = f"mariadb://root@127.0.0.1:{mdb_scratch_server.port}/"
    policy = make_mdb_policy(db, drill={"scratch": {"type": "database", "dsn": dsn}})
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    with engine.scratch(policy=policy, workdir=tmp_path / "w") as scratch:
        name = scratch.info["database"]
        assert name.startswith("backupkit_drill_lis_")
        assert scratch.info["refusal_checks"]["by_identity"] == "different"
        restore(engine, policy, scratch, sink, age_keys, result)
        checks = compare_fingerprints(result.fingerprints, engine.fingerprints(scratch=scratch, mode="full", like=result.fingerprints))
        assert [c for c in checks if c["status"] != "passed"] == []
        assert name in _drill_dbs({"port": mdb_scratch_server.port})
    assert scratch.teardown_proof == {"server": f"127.0.0.1:{mdb_scratch_server.port}", "database": name,
                                      "database_exists": False}
    assert name not in _drill_dbs({"port": mdb_scratch_server.port})


def test_restore_target_refuses_source_and_restores_into_new_database(mdb_database, age_keys, dump_dir):
    db = mdb_database("bk_src")
    mdb_exec(db, *ALL_TYPES_SQL)
    engine = MariadbEngine()
    policy = make_mdb_policy(db)
    for dsn in (mdb_dsn(db), f"mariadb://root@localhost:{MDB_PORT}/{db}"):
        with pytest.raises(ConfigError, match="source database"):
            with engine.restore_target(policy=policy, dsn=dsn):
                pytest.fail("must refuse")
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    target_db = f"{db}_restored"
    try:
        with engine.restore_target(policy=policy, dsn=mdb_dsn(target_db)) as target:
            assert target.kind == "target" and engine.is_empty(scratch=target)
            restore(engine, policy, target, sink, age_keys, result)
            assert not engine.is_empty(scratch=target)
            assert engine.fingerprints(scratch=target, mode="full", like=result.fingerprints) == result.fingerprints
        assert mdb_scalar(target_db, "SELECT COUNT(*) FROM results") == 2000  # not torn down
        assert mdb_scalar(None, f"SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{target_db}'") == "utf8mb4_unicode_ci"
    finally:
        mdb_exec(None, f"DROP DATABASE IF EXISTS `{target_db}`")


@pytest.mark.parametrize("source,scratch,needle", [
    ({"dsn": "postgresql://u@h/db"}, None, "is not a MariaDB DSN"),
    ({"dsn": "mariadb://u:secret@h/db"}, None, "contains a password"),
    ({"host": "db1"}, None, "needs the database"),
    ({"dsn": "mariadb://u@h/db", "options": {"lock_wait": 3}}, None, "field 'source.options.lock_wait': unknown MariaDB option"),
    ({"dsn": "mariadb://u@h/db"}, {"type": "database"}, "field 'drill': scratch.dsn is required"),
    ({"dsn": "mariadb://u@h/db"}, {"type": "database", "dsn": "host=x"}, "scratch.dsn"),
])
def test_policy_fields_are_validated_at_load(tmp_path, source, scratch, needle):
    import yaml

    f = tmp_path / "lis.yaml"
    data = {"system": "lis", "tier": "30m", "engine": "mariadb", "source": source}
    if scratch:
        data["drill"] = {"scratch": scratch}
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_policy(f)
    assert str(f) in str(e.value) and needle in str(e.value), str(e.value)
    assert "secret" not in str(e.value)
