"""OracleAdapter (tests/contract_support.py) proven as far as it can be without an Oracle server.

The adapter runs the engine contract against a developer's real Oracle when BACKUPKIT_TEST_ORACLE_DSN is
set. Here, without one, its code paths run against:

- a recording connection (below) for the statements the recording stand-in does not model, DDL and DML:
  the exact SQL and positional ``:n`` binds it sends to create, fill, change and drop the source schema;
- the recording stand-in of tests/fixtures/oracle_fake.py for everything it does model, through the real
  actions and the contract's own helpers: the policy it writes, the table keys, the tamper statements on the
  drill's connection, the teardown check, the failpoint its kill test relies on, and the refusal of every
  address form of the source (by DBID, before anything is created);
- python-oracledb's own connect-string parser, for the address forms.

What only a real database proves is listed in docs/oracle.md ("Running the opt-in tests").
"""

from __future__ import annotations

import os
import re
from decimal import Decimal

import oracledb
import pytest

from backupkit.engines.oracle import RESET_SCHEMA_BLOCK, OracleEngine
from backupkit.errors import ConfigError
from backupkit.policy import load_policy

import test_engine_contract as contract
from contract_support import (ORACLE_BULK, ORACLE_DRILL_USERS, ORACLE_IMPORT_JOBS, ORACLE_INSERT_PATIENTS,
                              ORACLE_INSERT_VISITS, ORACLE_SCHEMA_TABLES, ORACLE_SERVICES, ORACLE_TABLES, PATIENTS,
                              SYSTEM, VISITS, OracleAdapter, OracleTestEnv, oracle_variants)
from fixtures.oracle_fake import PASSWORD

SOURCE_DSN = "localhost:1521/FREEPDB1"
SCRATCH_DSN = "localhost:1521/DRILLPDB"


@pytest.fixture
def env(secrets_dir) -> OracleTestEnv:
    return OracleTestEnv.from_env({"BACKUPKIT_TEST_ORACLE_DSN": SOURCE_DSN,
                                   "BACKUPKIT_TEST_ORACLE_SCRATCH_DSN": SCRATCH_DSN,
                                   "BACKUPKIT_TEST_ORACLE_PASSWORD_FILE": str(secrets_dir / "source.pass")})


class Recorder:
    """python-oracledb connections that record what is sent; queries answer from ``answers`` (SQL -> rows),
    and a statement listed in ``fail`` raises that ORA- error."""

    def __init__(self, answers: dict | None = None, fail: dict | None = None, version: str = "23.5.0.24.7"):
        self.log: list[tuple] = []
        self.specs: list = []
        self.answers, self.fail, self.version = answers or {}, fail or {}, version

    def connect(self, spec):
        self.specs.append(spec)
        return _RecConnection(self, len(self.specs))

    def sent(self, conn: int | None = None) -> list[tuple]:
        return [e[2:] if e[0] in ("execute", "executemany") else e[:1] for e in self.log if conn in (None, e[1])]


class _RecConnection:
    def __init__(self, rec: Recorder, n: int):
        self.rec, self.n, self.autocommit, self.version = rec, n, False, rec.version

    def cursor(self):
        return _RecCursor(self)

    def commit(self):
        self.rec.log.append(("commit", self.n))

    def close(self):
        self.rec.log.append(("close", self.n))


class _RecCursor:
    def __init__(self, conn: _RecConnection):
        self.conn, self.rows = conn, []

    def execute(self, sql, params=None):
        self.conn.rec.log.append(("execute", self.conn.n, sql, params))
        if sql in self.conn.rec.fail:
            raise oracledb.DatabaseError(self.conn.rec.fail[sql])
        self.rows = list(self.conn.rec.answers.get(sql, []))

    def executemany(self, sql, rows):
        self.conn.rec.log.append(("executemany", self.conn.n, sql, list(rows)))

    def fetchall(self):
        out, self.rows = self.rows, []
        return out

    def close(self):
        pass


def adapter_with(workspace, tmp_path, env, connector) -> OracleAdapter:
    a = OracleAdapter(workspace, tmp_path, env=env)
    a.connector = connector
    return a


# ---- opt-in --------------------------------------------------------------------------------------------


def test_the_oracle_variant_exists_only_when_a_real_database_is_named():
    assert oracle_variants({}) == [] and oracle_variants({"BACKUPKIT_TEST_ORACLE_DSN": ""}) == []
    assert oracle_variants({"BACKUPKIT_TEST_ORACLE_DSN": SOURCE_DSN}) == ["oracle-database"]
    # the contract module's lists carry it exactly then (an ordinary run has no Oracle test, not a skipped one)
    assert contract.ORACLE == oracle_variants(os.environ)
    for variants in (contract.DRILL_VARIANTS, contract.ENGINES, contract.REFUSAL_VARIANTS):
        assert variants[len(variants) - len(contract.ORACLE):] == contract.ORACLE


def test_missing_companion_variables_and_a_non_easy_connect_dsn_are_named(workspace, tmp_path, env):
    with pytest.raises(RuntimeError, match="BACKUPKIT_TEST_ORACLE_SCRATCH_DSN, BACKUPKIT_TEST_ORACLE_PASSWORD_FILE"):
        OracleTestEnv.from_env({"BACKUPKIT_TEST_ORACLE_DSN": SOURCE_DSN})
    assert env.user == "SYSTEM" and env.client == {}
    with pytest.raises(RuntimeError, match="write it as host:port/service"):
        OracleAdapter(workspace, tmp_path, env=OracleTestEnv(dsn="HISDB", scratch_dsn=SCRATCH_DSN, user="SYSTEM",
                                                             password_file=env.password_file))


# ---- the SQL the adapter sends (DDL and DML: not modelled by the stand-in) -----------------------------------


def test_create_source_makes_a_locked_schema_and_fills_it_with_positional_binds(workspace, tmp_path, env):
    rec = Recorder()
    a = adapter_with(workspace, tmp_path, env, rec.connect)
    a.create_source()
    schema = a.schema
    assert re.fullmatch(r"BKCT_[0-9A-F]{8}", schema)
    [(create, none)] = [e for e in rec.sent(1) if len(e) == 2]
    assert none is None and re.fullmatch(
        rf'CREATE USER "{schema}" IDENTIFIED BY "Bk[0-9a-f]{{24}}" DEFAULT TABLESPACE USERS QUOTA UNLIMITED ON USERS '
        "ACCOUNT LOCK", create)
    in_schema = (f'ALTER SESSION SET CURRENT_SCHEMA = "{schema}"', None)
    assert rec.sent(2) == [in_schema, (ORACLE_TABLES["patients"], None), (ORACLE_TABLES["visits"], None),
                           ("commit",), ("close",)]
    assert ORACLE_TABLES == {
        "patients": "CREATE TABLE patients (id NUMBER(10) PRIMARY KEY, name NVARCHAR2(40) NOT NULL, born DATE, "
                    "balance NUMBER(12,2))",
        "visits": "CREATE TABLE visits (id NUMBER(10) PRIMARY KEY, patient_id NUMBER(10), ward VARCHAR2(20 CHAR), "
                  "cost NUMBER(12,3))"}
    assert rec.sent(3) == [in_schema, (ORACLE_INSERT_PATIENTS, PATIENTS), ("commit",), ("close",)]
    assert rec.sent(4) == [in_schema, (ORACLE_INSERT_VISITS, VISITS), ("commit",), ("close",)]
    assert ORACLE_INSERT_PATIENTS == ("INSERT INTO patients (id, name, born, balance) "
                                      "VALUES (:1, :2, TO_DATE(:3, 'YYYY-MM-DD'), :4)")
    # one positional bind per value of a row; born travels as ISO text, money as Decimal (NUMBER, exact)
    for sql, rows in ((ORACLE_INSERT_PATIENTS, PATIENTS), (ORACLE_INSERT_VISITS, VISITS)):
        assert re.findall(r":(\d+)", sql) == [str(i + 1) for i in range(len(rows[0]))]
    assert PATIENTS[6][1:] == ("患者7 张", "1950-09-17", Decimal("12.25"))
    assert all(isinstance(r[3], Decimal) for r in PATIENTS + VISITS)
    # every connection: the configured account, its password from the 0600 file, the source DSN
    assert {(s.dsn, s.user, s.password) for s in rec.specs} == {(SOURCE_DSN, "SYSTEM", PASSWORD)}

    # the policy it writes loads with backupkit's own checks, and holds no password
    text = workspace.policy_file(SYSTEM).read_text()
    assert PASSWORD not in text
    pol = load_policy(workspace.policy_file(SYSTEM))
    assert pol.engine == "oracle" and pol.source.dsn == SOURCE_DSN and pol.source.user == "SYSTEM"
    assert pol.source.oracle.schema_name == schema and pol.source.oracle.mode == "datapump"
    sc = pol.drill.scratch
    assert (sc.type, sc.dsn, sc.oracle.user, sc.oracle.directory, sc.oracle.tablespace) == (
        "database", SCRATCH_DSN, "SYSTEM", a.scratch_directory, "USERS")
    assert pol.drill.fingerprint == "full"


def test_thick_mode_reaches_the_policy_and_the_adapters_own_connections(workspace, tmp_path, env):
    lib = "/opt/oracle/instantclient_19_23"
    thick = OracleTestEnv(dsn=SOURCE_DSN, scratch_dsn=SCRATCH_DSN, user="SYSTEM", password_file=env.password_file,
                          client_lib_dir=lib)
    rec = Recorder(answers={"SELECT COUNT(*) FROM visits": [(0,)]})
    a = adapter_with(workspace, tmp_path, thick, rec.connect)
    a.write_policy()
    pol = load_policy(workspace.policy_file(SYSTEM))
    assert str(pol.source.oracle.client_lib_dir) == lib and str(pol.drill.scratch.oracle.client_lib_dir) == lib
    a.count("visits")
    assert str(rec.specs[0].client.client_lib_dir) == lib and rec.specs[0].client.thick_mode


def test_a_failed_create_source_drops_the_schema_again(workspace, tmp_path, env):
    rec = Recorder(fail={ORACLE_TABLES["visits"]: "ORA-01536: space quota exceeded for tablespace 'USERS'"})
    a = adapter_with(workspace, tmp_path, env, rec.connect)
    with pytest.raises(oracledb.DatabaseError, match="ORA-01536"):
        a.create_source()
    assert rec.sent()[-2:] == [(f'DROP USER "{a.schema}" CASCADE', None), ("close",)]
    assert not workspace.policy_file(SYSTEM).exists()  # no policy for a source that was not made


def test_cleanup_drops_the_schema_and_tolerates_only_a_missing_user(workspace, tmp_path, env):
    rec = Recorder()
    a = adapter_with(workspace, tmp_path, env, rec.connect)
    drop = f'DROP USER "{a.schema}" CASCADE'
    a.cleanup()
    assert rec.sent() == [(drop, None), ("close",)]
    rec.fail[drop] = f"ORA-01918: user '{a.schema}' does not exist"
    a.cleanup()
    rec.fail[drop] = "ORA-01940: cannot drop a user that is currently connected"
    with pytest.raises(oracledb.DatabaseError, match="ORA-01940"):
        a.cleanup()


def test_drop_table_if_exists_runs_on_every_release_and_make_big_fills_a_table(workspace, tmp_path, env):
    rec = Recorder()
    a = adapter_with(workspace, tmp_path, env, rec.connect)
    a.execute("DROP TABLE IF EXISTS bulk")  # the kill test's statement; Oracle before 23ai has no IF EXISTS
    a.make_big()
    in_schema = (f'ALTER SESSION SET CURRENT_SCHEMA = "{a.schema}"', None)
    assert rec.sent(1) == [in_schema, ("BEGIN EXECUTE IMMEDIATE 'DROP TABLE bulk PURGE'; EXCEPTION WHEN OTHERS THEN "
                                       "IF SQLCODE != -942 THEN RAISE; END IF; END;", None), ("commit",), ("close",)]
    assert rec.sent(2) == [in_schema, (ORACLE_BULK[0], None), (ORACLE_BULK[1], None), ("commit",), ("close",)]
    assert OracleAdapter.portable("UPDATE patients SET name = 'x'") == "UPDATE patients SET name = 'x'"


def test_writer_count_and_created_state(workspace, tmp_path, env):
    rec = Recorder(answers={"SELECT COUNT(*) FROM visits": [(1500,)], ORACLE_DRILL_USERS: [("BKD_0123456789AB",)]})
    a = adapter_with(workspace, tmp_path, env, rec.connect)
    conn, ph = a.writer()
    assert conn.autocommit is True and ph == ":1"
    conn.cursor().execute(f"INSERT INTO visits VALUES ({ph}, 1, 'concurrent', 1.5)", (1_000_000,))  # as the test does
    assert rec.sent(1) == [(f'ALTER SESSION SET CURRENT_SCHEMA = "{a.schema}"', None),
                           ("INSERT INTO visits VALUES (:1, 1, 'concurrent', 1.5)", (1_000_000,))]
    assert a.count("visits") == 1500
    assert a.created_state() == ([("BKD_0123456789AB",)], [], [])
    assert rec.sent(3) == [(ORACLE_DRILL_USERS, {}), (ORACLE_IMPORT_JOBS, {}),
                           (ORACLE_SCHEMA_TABLES, {"owner": a.schema}), ("close",)]
    assert ORACLE_DRILL_USERS == (r"SELECT username FROM all_users WHERE username LIKE 'BKD\_%' ESCAPE '\' "
                                  "ORDER BY username")
    assert a.kill_env() == {"BACKUPKIT_FAILPOINT": "oracle-export-running"} and a.dump_programs == ()
    assert a.use_password() == PASSWORD


# ---- through the stand-in and the real actions ---------------------------------------------------------------


@pytest.fixture
def standin(oracle_servers, workspace, tmp_path, env, monkeypatch):
    """An adapter whose source and scratch are the stand-in's two databases (DBIDs 1111 and 2222); the source
    holds what create_source would have made. Every other DSN reaches the source database."""
    src, scr = oracle_servers
    a = OracleAdapter(workspace, tmp_path, env=env)

    def stored(rows):  # the stand-in keeps rows as JSON in its dump file: NUMBER values as text
        return [tuple(str(v) if isinstance(v, Decimal) else v for v in r) for r in rows]

    src.add_table(a.schema, "PATIENTS", [("ID", "NUMBER"), ("NAME", "NVARCHAR2"), ("BORN", "DATE"),
                                         ("BALANCE", "NUMBER")], stored(PATIENTS))
    src.add_table(a.schema, "VISITS", [("ID", "NUMBER"), ("PATIENT_ID", "NUMBER"), ("WARD", "VARCHAR2"),
                                       ("COST", "NUMBER")], stored(VISITS))

    def connect(spec):
        return (scr if spec.dsn == SCRATCH_DSN else src).connect(spec)

    monkeypatch.setattr(OracleEngine, "connect", staticmethod(connect))  # the actions make their own engine
    a.connector = connect
    a.write_policy()
    return a, src, scr


def test_round_trip_tamper_and_teardown_with_the_contract_helpers(standin):
    a, src, scr = standin
    manifest = contract._backup(a)
    fps = manifest["fingerprints"]
    assert fps[a.table_key("patients")]["rows"] == 300 and fps[a.table_key("visits")]["rows"] == 1500
    assert set(fps) == {"PATIENTS", "VISITS", "schema"}
    a.ws.edit_policy(lambda d: d.update(rpo="5000d"), SYSTEM)  # the stand-in reads its SCN at a fixed past time
    scr.assertions.update({"SELECT name FROM patients WHERE id = 7": "患者7 张", "SELECT COUNT(*) FROM visits": 1500,
                           # the stand-in runs no DML: it records the tamper statements and answers them
                           "UPDATE patients SET name = '篡改' WHERE id = 7": 1, "DELETE FROM visits WHERE id = 11": 1})
    seen = {}

    def look_then_tamper(engine, scratch):
        seen.update(kind=scratch.kind, user=scratch.handle.user,
                    name=engine.query_scalar(scratch=scratch, sql="SELECT name FROM patients WHERE id = 7"))
        a.tamper(engine, scratch)

    out = contract._drill(a, after_restore=look_then_tamper)
    rec = out.record
    assert out.exit_code == 0 and rec["verdict"] == "passed", rec["deviations"]  # the stand-in's data did not change
    assert seen["kind"] == a.scratch_type == "database" and seen["name"] == "患者7 张"
    user = seen["user"]
    sql = [c.sql for c in scr.calls]
    i = sql.index("UPDATE patients SET name = '篡改' WHERE id = 7")
    assert sql[i - 1:i + 3] == [f'ALTER SESSION SET CURRENT_SCHEMA = "{user}"',
                                "UPDATE patients SET name = '篡改' WHERE id = 7", "DELETE FROM visits WHERE id = 11",
                                RESET_SCHEMA_BLOCK]
    assert {c.conn for c in scr.calls[i - 1:i + 3]} == {scr.calls[i].conn}  # on the drill's own connection
    contract._assert_torn_down(a, rec)  # kit-form proof, and the adapter's own look at the scratch database
    assert rec["teardown"]["user"] == user and user not in scr.users
    later = [c for c in scr.calls if c.conn > scr.calls[i].conn]  # the adapter's check, after the drill's teardown
    assert [c.binds for c in later if "FROM all_users" in c.sql] == [{"username": user}]
    assert sorted(c.binds["file_name"] for c in later if "UTL_FILE.FGETATTR" in c.sql) == [
        f"BKI_{user[4:]}.dmp", f"BKI_{user[4:]}.log"]


def test_teardown_check_fails_when_the_scratch_user_survived(standin):
    a, src, scr = standin
    scr.users.add("BKD_0123456789AB")
    proof = {"user": "BKD_0123456789AB", "user_created": True, "user_exists": False, "job_exists": False,
             "file_exists": False}
    with pytest.raises(AssertionError, match="BKD_0123456789AB still exists"):
        a.assert_scratch_gone({"teardown": proof})
    scr.users.discard("BKD_0123456789AB")
    scr.directories["DATA_PUMP_DIR"]["BKI_0123456789AB.log"] = bytearray(b"left")
    with pytest.raises(AssertionError, match=r"BKI_0123456789AB\.log"):
        a.assert_scratch_gone({"teardown": proof})


def test_the_kill_tests_failpoint_fires_while_the_export_runs_on_the_server(standin, monkeypatch):
    a, src, _ = standin
    import backupkit.engines.oracle as oracle_engine

    fired = []
    monkeypatch.setattr(oracle_engine, "failpoint",
                        lambda name: fired.append((name, {j.name: j.state for j in src.jobs.values()})))
    contract._backup(a)
    [(name, jobs)] = fired
    assert name == a.kill_env()["BACKUPKIT_FAILPOINT"]
    assert list(jobs.values()) == ["EXECUTING"]  # started, not yet polled: a kill here orphans a running job
    assert src.jobs == {}  # this run then finished and detached as usual


def test_every_address_form_of_the_source_is_refused_by_dbid_before_anything_is_created(standin, monkeypatch):
    a, src, scr = standin
    monkeypatch.setattr(a, "_is_local", lambda h: h.lower() in ("localhost", "127.0.0.1", "[::1]"))
    monkeypatch.setattr(a, "_reachable", lambda h, p: True)
    src.assertions[ORACLE_SERVICES] = "BKALIAS"  # a second service the DBA started on the source database
    attempts = a.refusals()
    forms = a.address_forms()
    assert forms == [
        ("as written", "localhost:1521/FREEPDB1"),
        ("service name in lower case", "localhost:1521/freepdb1"),
        ("host name in upper case", "LOCALHOST:1521/FREEPDB1"),
        ("with //", "//localhost:1521/FREEPDB1"),
        ("with tcp://", "tcp://localhost:1521/FREEPDB1"),
        ("connect descriptor",
         "(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST=localhost)(PORT=1521))(CONNECT_DATA=(SERVICE_NAME=FREEPDB1)))"),
        ("connect descriptor with spaces", "(DESCRIPTION = (ADDRESS = (PROTOCOL = TCP)(HOST = localhost)(PORT = 1521)) "
                                           "(CONNECT_DATA = (SERVICE_NAME = FREEPDB1)))"),
        ("port left to its default", "localhost/FREEPDB1"),
        ("host 127.0.0.1", "127.0.0.1:1521/FREEPDB1"),
        ("host [::1]", "[::1]:1521/FREEPDB1"),
        ("service BKALIAS of the same database", "localhost:1521/BKALIAS")]
    # python-oracledb reads every written form as the same listener address and service
    for _, dsn in forms:
        p = oracledb.ConnectParams()
        p.parse_connect_string(dsn)
        assert (p.port, p.protocol) == (1521, "tcp"), dsn
        assert p.host.lower() in ("localhost", "127.0.0.1", "::1") and p.service_name.upper() in ("FREEPDB1", "BKALIAS")
    assert len(attempts) == len(forms) + 1  # and the source written as a connect descriptor
    src.calls.clear()
    for label, attempt in attempts:
        with pytest.raises(ConfigError) as e:
            attempt()
        assert "is the source database (DBID 1111" in str(e.value) and "\n" not in str(e.value), label
    assert not [c for c in src.calls if c.sql.startswith(("CREATE", "DROP")) or "DBMS_" in c.sql or "UTL_FILE" in c.sql]
    assert not scr.calls and not (a.tmp / "refused-workdir").exists()


def test_a_discovered_name_that_reaches_another_database_is_not_an_address_of_the_source(standin, monkeypatch):
    a, src, scr = standin
    monkeypatch.setattr(a, "_is_local", lambda h: True)
    monkeypatch.setattr(a, "_reachable", lambda h, p: h != "[::1]")  # nothing listens on ::1
    monkeypatch.setattr("socket.gethostname", lambda: "drillhost")
    monkeypatch.setattr("socket.getfqdn", lambda: "drillhost")
    src.assertions[ORACLE_SERVICES] = "FREEXDB"  # the XML DB dispatcher: no dedicated sessions
    real = a.connector

    def connect(spec):  # drillhost is another machine's listener: the scratch database answers there
        return scr.connect(spec) if spec.dsn.startswith("drillhost") else real(spec)

    a.connector = connect
    labels = [label for label, _ in a.address_forms()]
    assert "host 127.0.0.1" in labels and "host [::1]" not in labels and "host drillhost" not in labels
    assert not [x for x in labels if x.endswith("of the same database")]
