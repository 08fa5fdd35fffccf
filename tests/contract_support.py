"""Engine adapters for the engine contract suite (tests/test_engine_contract.py).

One adapter per engine knows, against the real server, how to create the source database (two small
tables, the same rows for every engine), how to write its policy, how to change a restored scratch, which
addresses of the source a user could write, and whether a scratch is really gone. The tests themselves
never branch on the engine: a new engine joins the contract by adding an adapter here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import yaml

from backupkit.engines import kit

SYSTEM = "contract"
PATIENTS = [(i, f"患者{i} 张", (date(1950, 1, 1) + timedelta(days=i * 37 % 20000)).isoformat(),
             Decimal(i * 7 % 1000) / 4) for i in range(1, 301)]
VISITS = [(i, 1 + i % 300, f"病房{i % 7}", Decimal(i) / 8) for i in range(1, 1501)]
WRITER_FIRST_ID = 1_000_000


def proc_children(pid: int) -> list[int]:
    """Direct children of every thread of ``pid`` (from /proc/PID/task/*/children)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            out += [int(x) for x in open(f"/proc/{pid}/task/{t}/children").read().split()]
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    todo, seen = proc_children(pid), []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += proc_children(p)
    return seen


def proc_comm(pid: int) -> str | None:
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return None


def io_wchar(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/io"):
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class ChildSpy:
    """Watches every descendant of this process while active and keeps each one's comm, cmdline and environ
    (read while it runs, after it has exec'd: re-read until the comm no longer is the parent's)."""

    def __init__(self):
        self.seen: dict[int, tuple[str, bytes, bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._me = proc_comm(os.getpid())

    def _run(self):
        while not self._stop.is_set():
            for pid in descendants(os.getpid()):
                comm = proc_comm(pid)
                if comm is None or (pid in self.seen and self.seen[pid][0] != self._me):
                    continue
                try:
                    cmd = open(f"/proc/{pid}/cmdline", "rb").read()
                    env = open(f"/proc/{pid}/environ", "rb").read()
                except OSError:
                    continue
                self.seen[pid] = (comm, cmd, env)
            time.sleep(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def programs(self) -> set[str]:
        return {c for c, _, _ in self.seen.values()}


@dataclass
class Adapter:
    """What the contract needs to know about one engine and one scratch type."""

    ws: Any  # fixtures.common.Workspace
    tmp: Path
    scratch_type: str = "ephemeral"
    engine: str = ""
    dump_programs: tuple[str, ...] = ()  # the dump children a kill or a spy looks for
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.engine}-{self.scratch_type}"

    # ---- source ---------------------------------------------------------------------------
    def create_source(self) -> None:
        self.execute(*self.ddl())
        self.executemany("INSERT INTO patients VALUES (?, ?, ?, ?)", PATIENTS)
        self.executemany("INSERT INTO visits VALUES (?, ?, ?, ?)", VISITS)
        self.write_policy()

    def write_policy(self, source: dict | None = None, backup: dict | None = None) -> None:
        if source is not None:
            self.extra["source"] = source
        policy = {"system": SYSTEM, "tier": "30m", "rpo": "24h", "engine": self.engine,
                  "source": self.extra.get("source") or self.source(),
                  "drill": {"fingerprint": "full", "scratch": self.scratch_spec()}}
        if backup:
            policy["backup"] = backup
        for p in self.ws.policies.glob("*.yaml"):
            p.unlink()
        self.ws.policy_file(SYSTEM).write_text(yaml.safe_dump(policy, allow_unicode=True))

    def scratch_spec(self) -> dict:
        return {"type": "ephemeral"}

    def count(self, table: str) -> int:
        return int(self.scalar(f"SELECT COUNT(*) FROM {table}"))

    def table_key(self, name: str) -> str:
        raise NotImplementedError

    # ---- scratch ---------------------------------------------------------------------------
    def tamper(self, engine, scratch) -> None:
        """Keep row counts of one table, lose a row of the other: both must be named."""
        self.scratch_execute(engine, scratch, "UPDATE patients SET name = '篡改' WHERE id = 7",
                             "DELETE FROM visits WHERE id = 11")

    def assert_scratch_gone(self, record: dict) -> None:
        raise NotImplementedError

    def refusals(self) -> list[tuple[str, Callable[[], Any]]]:
        """(label, attempt) for every form of the source's address a user could write; each must raise ConfigError."""
        raise NotImplementedError

    def created_state(self) -> Any:
        """What exists on the source side, to prove that a refusal created nothing."""
        raise NotImplementedError

    def make_big(self) -> None:
        """Make the source big enough that its dump runs for a while (for killing it mid-stream)."""

    def kill_env(self) -> dict:
        """Environment for a backup that must be killed mid-way by a failpoint (engines without a dump child)."""
        return {}

    def use_password(self) -> str | None:
        """Point the policy at a login with a real password (a 0600 password_file); return the password."""
        return None

    def cleanup(self) -> None:
        """Remove what create_source made outside the test's own directories (run after every test)."""


class SqliteAdapter(Adapter):
    def __init__(self, ws, tmp, scratch_type="ephemeral"):
        super().__init__(ws, tmp, scratch_type, "sqlite", ())
        self.path = tmp / "src" / "clinic.sqlite"
        self.path.parent.mkdir()
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")  # a writer commits while the backup's reader holds its snapshot
        conn.close()

    def ddl(self):
        return ["CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT NOT NULL, born TEXT, balance NUMERIC)",
                "CREATE TABLE visits (id INTEGER PRIMARY KEY, patient_id INTEGER, ward TEXT, cost NUMERIC)"]

    def _conn(self):
        return sqlite3.connect(self.path, timeout=30)

    def execute(self, *statements, params=None):
        with self._conn() as conn:
            for s in statements:
                conn.execute(s, params or ())
        conn.close()

    def executemany(self, sql, rows):
        with self._conn() as conn:
            conn.executemany(sql, [tuple(str(v) if isinstance(v, Decimal) else v for v in r) for r in rows])
        conn.close()

    def scalar(self, sql):
        conn = self._conn()
        try:
            return conn.execute(sql).fetchone()[0]
        finally:
            conn.close()

    def source(self):
        return {"path": str(self.path)}

    def table_key(self, name):
        return name

    def scratch_execute(self, engine, scratch, *statements):
        conn = sqlite3.connect(scratch.handle)
        with conn:
            for s in statements:
                conn.execute(s)
        conn.close()

    def writer(self):
        return sqlite3.connect(self.path, timeout=30, isolation_level=None), "?"

    def assert_scratch_gone(self, record):
        td = record["teardown"]
        assert not Path(td["path"]).exists() and not Path(td["path"] + "-wal").exists(), td
        assert td["path_exists"] is False, td

    def created_state(self):
        return (sorted(os.listdir(self.path.parent)), self.path.stat().st_mtime_ns,
                hashlib.sha256(self.path.read_bytes()).hexdigest())

    def refusals(self):
        from backupkit.engines.sqlite import SqliteEngine
        from backupkit.policy import Policy

        policy = Policy.model_validate({"system": SYSTEM, "tier": "30m", "engine": "sqlite", "source": self.source()})
        link = self.tmp / "link.sqlite"
        link.symlink_to(self.path)
        linkdir = self.tmp / "linkdir"
        linkdir.symlink_to(self.path.parent)
        forms = {"same path": str(self.path), "via a symlink": str(link), "via a symlinked directory":
                 str(linkdir / self.path.name), "via ..": str(self.path.parent / ".." / "src" / self.path.name),
                 "with // and ./": str(self.path.parent).replace("/", "//") + "/./" + self.path.name}
        engine = SqliteEngine()

        def attempt(dsn):
            with engine.restore_target(policy=policy, dsn=dsn):
                raise AssertionError("the restore target body must not run")

        return [(f"restore --to {label}", lambda d=d: attempt(d)) for label, d in forms.items()]

    def kill_env(self):
        return {"BACKUPKIT_FAILPOINT": "sqlite-snapshot-written"}


class PostgresAdapter(Adapter):
    def __init__(self, ws, tmp, scratch_type, pg_database):
        super().__init__(ws, tmp, scratch_type, "postgres", ("pg_dump",))
        self.db = pg_database("bk_contract")

    def ddl(self):
        return ["CREATE TABLE patients (id bigint PRIMARY KEY, name text NOT NULL, born date, balance numeric(12,2))",
                "CREATE TABLE visits (id bigint PRIMARY KEY, patient_id bigint, ward text, cost numeric(12,3))"]

    def _conn(self):
        import psycopg

        from fixtures.postgres import pg_dsn

        return psycopg.connect(self.extra.get("dsn") or pg_dsn(self.db), autocommit=True)

    def execute(self, *statements, params=None):
        with self._conn() as conn:
            for s in statements:
                conn.execute(s, params)

    def executemany(self, sql, rows):
        with self._conn() as conn, conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    def scalar(self, sql):
        with self._conn() as conn:
            return conn.execute(sql).fetchone()[0]

    def source(self):
        from fixtures.postgres import pg_dsn

        return {"dsn": pg_dsn(self.db)}

    def scratch_spec(self):
        from fixtures.postgres import ADMIN_DSN

        # a uniquely named database on the same server is allowed: only the source *database* is refused
        return {"type": "database", "dsn": ADMIN_DSN} if self.scratch_type == "database" else {"type": "ephemeral"}

    def table_key(self, name):
        return f"public.{name}"

    def scratch_execute(self, engine, scratch, *statements):
        with engine._connect(scratch) as conn:
            for s in statements:
                conn.execute(s)
            conn.commit()

    def writer(self):
        return self._conn(), "%s"

    def databases(self) -> set[str]:
        import psycopg

        from fixtures.postgres import ADMIN_DSN

        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}

    def assert_scratch_gone(self, record):
        td = record["teardown"]
        if self.scratch_type == "database":
            assert td["database_exists"] is False and td["database"] not in self.databases(), td
        else:
            assert not os.path.exists(td["datadir"]) and not kit.process_running(td.get("postmaster_pid")), td

    def created_state(self):  # other test runs share the server: only what a drill of this system would create
        return sorted(d for d in self.databases() if d.startswith(f"backupkit_drill_{SYSTEM}_") or d == self.db)

    def refusals(self):
        from backupkit.engines.postgres import PostgresEngine
        from backupkit.policy import Policy

        host = socket.gethostname()
        db = self.db
        sources = {"key=value 127.0.0.1": {"dsn": f"host=127.0.0.1 port=5432 user=postgres dbname={db}"},
                   "URL localhost, port defaulted": {"dsn": f"postgresql://postgres@localhost/{db}"},
                   "fields, socket dir": {"host": "/var/run/postgresql", "port": 5432, "user": "postgres",
                                          "database": db}}
        scratches = [f"host=127.0.0.1 port=5432 user=postgres dbname={db}",
                     f"host=localhost user=postgres dbname={db}",
                     f"host={host} port=5432 user=postgres dbname={db}",
                     f"host=/var/run/postgresql port=5432 user=postgres dbname={db}",
                     f"host=/var/run/postgresql/ user=postgres dbname={db}",
                     f"postgresql://postgres@127.0.0.1:5432/{db}",
                     f"postgresql://postgres@localhost/{db}",
                     f"postgresql://postgres@{host}/{db}",
                     f"postgresql:///{db}?host=/var/run/postgresql&user=postgres",
                     f"postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/{db}"]
        engine = PostgresEngine()
        out = []
        for label, src in sources.items():
            for dsn in scratches:
                policy = Policy.model_validate({"system": SYSTEM, "tier": "30m", "engine": "postgres", "source": src,
                                                "drill": {"scratch": {"type": "database", "dsn": dsn}}})
                out.append((f"source {label} / scratch {dsn}",
                            lambda p=policy: _enter_scratch(engine, p, self.tmp / "refused-workdir")))
        return out

    def make_big(self):
        self.execute("CREATE TABLE bulk (id int PRIMARY KEY, pad text)",
                     "INSERT INTO bulk SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 60000) g")

    def use_password(self):
        cluster = self.extra["request"].getfixturevalue("scram_cluster")  # role alice, SCRAM over its socket
        pw = self.tmp / "contract.pass"
        password = "correct-horse-42"
        pw.write_text(password + "\n")
        pw.chmod(0o600)
        src = {"host": str(cluster.sockdir), "port": cluster.port, "user": "alice", "database": "clinic",
               "password_file": str(pw)}
        self.extra["dsn"] = f"host={cluster.sockdir} port={cluster.port} user=postgres dbname=clinic"
        self.execute("SET ROLE alice", "CREATE TABLE filler (id int PRIMARY KEY, pad text)",
                     "INSERT INTO filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g")
        self.write_policy(src)
        return password


class MariadbAdapter(Adapter):
    def __init__(self, ws, tmp, scratch_type, mdb_database, scratch_server=None):
        super().__init__(ws, tmp, scratch_type, "mariadb", ("mariadb-dump",))
        self.db = mdb_database("bk_contract")
        self.scratch_server = scratch_server

    def ddl(self):
        return ["CREATE TABLE patients (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, born DATE, "
                "balance DECIMAL(12,2)) ENGINE=InnoDB CHARACTER SET utf8mb4",
                "CREATE TABLE visits (id BIGINT PRIMARY KEY, patient_id BIGINT, ward VARCHAR(20), cost DECIMAL(12,3)) "
                "ENGINE=InnoDB CHARACTER SET utf8mb4"]

    def _conn(self):
        from fixtures.mariadb import mdb_connect

        return mdb_connect(self.db)

    def execute(self, *statements, params=None):
        conn = self._conn()
        try:
            with conn.cursor() as cur:
                for s in statements:
                    cur.execute(s, params)
        finally:
            conn.close()

    def executemany(self, sql, rows):
        conn = self._conn()
        try:
            with conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)
        finally:
            conn.close()

    def scalar(self, sql):
        conn = self._conn()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()[0]
        finally:
            conn.close()

    def source(self):
        from fixtures.mariadb import mdb_dsn

        return {"dsn": mdb_dsn(self.db)}

    def scratch_spec(self):
        if self.scratch_type == "database":
            return {"type": "database", "dsn": f"mariadb://root@127.0.0.1:{self.scratch_server.port}/"}
        return {"type": "ephemeral"}

    def table_key(self, name):
        return f"`{name}`"

    def scratch_execute(self, engine, scratch, *statements):
        conn = engine._connect(scratch)
        try:
            with conn.cursor() as cur:
                for s in statements:
                    cur.execute(s)
            conn.commit()
        finally:
            conn.close()

    def writer(self):
        return self._conn(), "%s"

    def schemata(self, port=None) -> set[str]:
        from fixtures.mariadb import mdb_connect

        conn = mdb_connect(None, **({"port": port} if port else {}))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
                return {r[0] for r in cur.fetchall()}
        finally:
            conn.close()

    def assert_scratch_gone(self, record):
        td = record["teardown"]
        if self.scratch_type == "database":
            assert td["database_exists"] is False, td
            assert td["database"] not in self.schemata(self.scratch_server.port), td
        else:
            assert not os.path.exists(td["datadir"]) and not kit.process_running(td.get("server_pid")), td

    def created_state(self):  # other test runs share the server: only what a drill of this system would create
        return sorted(d for d in self.schemata() if d.startswith(f"backupkit_drill_{SYSTEM}_") or d == self.db)

    def refusals(self):
        from backupkit.engines.mariadb import MariadbEngine
        from backupkit.policy import Policy

        from fixtures.mariadb import mdb_scalar

        sock = mdb_scalar(None, "SELECT @@socket")
        host = socket.gethostname()
        db = self.db
        sources = {"DSN 127.0.0.1": {"dsn": f"mariadb://root@127.0.0.1:3306/{db}"},
                   "fields, socket": {"socket": sock, "user": "root", "database": db},
                   "DSN localhost, port defaulted": {"dsn": f"mariadb://root@localhost/{db}"}}
        scratches = ["mariadb://root@127.0.0.1:3306/", "mariadb://root@127.0.0.1/", f"mariadb://root@localhost:3306/{db}",
                     "mariadb://root@localhost/", f"mariadb://root@localhost/?socket={sock}",
                     f"mariadb://root@{host}:3306/", "mariadb://root@[::1]:3306/"]
        engine = MariadbEngine()
        out = []
        for label, src in sources.items():
            for dsn in scratches:
                if "socket" in src and "[::1]" in dsn:
                    continue  # the server does not listen on ::1: from a socket source that address is not the source
                policy = Policy.model_validate({"system": SYSTEM, "tier": "30m", "engine": "mariadb", "source": src,
                                                "drill": {"scratch": {"type": "database", "dsn": dsn}}})
                out.append((f"source {label} / scratch {dsn}",
                            lambda p=policy: _enter_scratch(engine, p, self.tmp / "refused-workdir")))
        return out

    def make_big(self):
        self.execute("CREATE TABLE bulk (id INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB",
                     "INSERT INTO bulk SELECT seq, REPEAT(MD5(seq), 8) FROM seq_1_to_60000")

    def use_password(self):
        from fixtures.mariadb import MDB_HOST, MDB_PORT, mdb_exec

        password = 'Correct "horse" \\ battery#42;'
        user = f"bk_ct_{secrets.token_hex(3)}"
        mdb_exec(None, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password.replace(chr(92), chr(92) * 2)}'",
                 f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD ON *.* TO '{user}'@'127.0.0.1'")
        self.extra["drop_user"] = f"DROP USER '{user}'@'127.0.0.1'"
        self.execute("CREATE TABLE filler (id INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB",
                     "INSERT INTO filler SELECT seq, REPEAT(MD5(seq), 8) FROM seq_1_to_20000")
        pw = self.tmp / "contract.pass"
        pw.write_text(password + "\n")
        pw.chmod(0o600)
        self.write_policy({"host": MDB_HOST, "port": MDB_PORT, "user": user, "database": self.db, "password_file": str(pw)})
        return password


# ---- Oracle: an opt-in variant, run against a real database only when BACKUPKIT_TEST_ORACLE_DSN is set ----

ORACLE_DSN_ENV = "BACKUPKIT_TEST_ORACLE_DSN"


def oracle_variants(env=None) -> list[str]:
    """``["oracle-database"]`` when BACKUPKIT_TEST_ORACLE_DSN is set, else ``[]``: without a real Oracle the
    contract has no Oracle test at all (not a skipped one). The one visible signal that Oracle was not proven
    on a run is the skip of tests/test_oracle_integration.py."""
    env = os.environ if env is None else env
    return ["oracle-database"] if env.get(ORACLE_DSN_ENV) else []


@dataclass(frozen=True)
class OracleTestEnv:
    """The developer's Oracle, from the environment (the variables of tests/test_oracle_integration.py)."""

    dsn: str  # the source database, host:port/service (e.g. localhost:1521/FREEPDB1)
    scratch_dsn: str  # another database (another PDB, or another XE with its own DBID)
    user: str  # an account with DBA rights on both (default SYSTEM): it also creates the source schema
    password_file: Path  # its password, mode 0600
    client_lib_dir: str | None = None  # Oracle Client 19c+ for thick mode (Oracle 11.2)

    @classmethod
    def from_env(cls, env=None) -> "OracleTestEnv":
        env = os.environ if env is None else env
        needed = (ORACLE_DSN_ENV, "BACKUPKIT_TEST_ORACLE_SCRATCH_DSN", "BACKUPKIT_TEST_ORACLE_PASSWORD_FILE")
        missing = [v for v in needed if not env.get(v)]
        if missing:
            raise RuntimeError(f"{ORACLE_DSN_ENV} is set, so the Oracle contract variant runs; it also needs "
                               f"{', '.join(missing)} (docs/oracle.md, 'Running the opt-in tests')")
        return cls(dsn=env[ORACLE_DSN_ENV], scratch_dsn=env["BACKUPKIT_TEST_ORACLE_SCRATCH_DSN"],
                   user=env.get("BACKUPKIT_TEST_ORACLE_USER", "SYSTEM").upper(),
                   password_file=Path(env["BACKUPKIT_TEST_ORACLE_PASSWORD_FILE"]).expanduser(),
                   client_lib_dir=env.get("BACKUPKIT_TEST_ORACLE_CLIENT_LIB_DIR") or None)

    @property
    def client(self) -> dict:
        """The ``oracle`` client settings of a policy endpoint (thick mode when a client library is named)."""
        return {"client_lib_dir": self.client_lib_dir} if self.client_lib_dir else {}


# Easy Connect without options: the form the address variants are derived from
_EASY_CONNECT = re.compile(r"^(?:tcp://)?(?://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)"
                           r"(?::(?P<port>\d{1,5}))?/(?P<service>[A-Za-z0-9][A-Za-z0-9_.$#-]*)$")
ORACLE_TABLES = {
    "patients": "CREATE TABLE patients (id NUMBER(10) PRIMARY KEY, name NVARCHAR2(40) NOT NULL, born DATE, "
                "balance NUMBER(12,2))",
    "visits": "CREATE TABLE visits (id NUMBER(10) PRIMARY KEY, patient_id NUMBER(10), ward VARCHAR2(20 CHAR), "
              "cost NUMBER(12,3))",
}
ORACLE_INSERT_PATIENTS = "INSERT INTO patients (id, name, born, balance) VALUES (:1, :2, TO_DATE(:3, 'YYYY-MM-DD'), :4)"
ORACLE_INSERT_VISITS = "INSERT INTO visits (id, patient_id, ward, cost) VALUES (:1, :2, :3, :4)"
ORACLE_CREATE_SCHEMA = ('CREATE USER "{schema}" IDENTIFIED BY "{password}" DEFAULT TABLESPACE USERS '
                        "QUOTA UNLIMITED ON USERS ACCOUNT LOCK")
ORACLE_DROP_SCHEMA = 'DROP USER "{schema}" CASCADE'
ORACLE_CURRENT_SCHEMA = 'ALTER SESSION SET CURRENT_SCHEMA = "{schema}"'
# Oracle before 23ai has no DROP TABLE IF EXISTS: the contract's statement becomes this block
ORACLE_DROP_TABLE_IF_EXISTS = ("BEGIN EXECUTE IMMEDIATE 'DROP TABLE {table} PURGE'; EXCEPTION WHEN OTHERS THEN "
                               "IF SQLCODE != -942 THEN RAISE; END IF; END;")
ORACLE_BULK = ("CREATE TABLE bulk (id NUMBER(10) PRIMARY KEY, pad VARCHAR2(300))",
               "INSERT INTO bulk SELECT level, RPAD(TO_CHAR(level), 256, 'x') FROM dual CONNECT BY level <= 60000")
ORACLE_DRILL_USERS = "SELECT username FROM all_users WHERE username LIKE 'BKD\\_%' ESCAPE '\\' ORDER BY username"
ORACLE_IMPORT_JOBS = ("SELECT job_name FROM user_datapump_jobs WHERE job_name LIKE 'BKI\\_%' ESCAPE '\\' "
                      "ORDER BY job_name")
ORACLE_SCHEMA_TABLES = "SELECT table_name FROM all_tables WHERE owner = :owner ORDER BY table_name"
ORACLE_SERVICES = ("SELECT name FROM v$active_services WHERE network_name IS NOT NULL AND name NOT LIKE 'SYS$%' "
                   "ORDER BY name")
ORACLE_CON_DBID = "SELECT SYS_CONTEXT('USERENV', 'CON_DBID') FROM dual"
ORACLE_DBID = "SELECT dbid FROM v$database"


def _ora_rows(conn, sql: str, binds: dict | None = None) -> list[tuple]:
    """Every row of ``sql`` (the engine's own helper; imported late: python-oracledb only when Oracle runs)."""
    from backupkit.engines.oracle import _rows

    return _rows(conn, sql, binds)


class OracleAdapter(Adapter):
    """Engine oracle, mode datapump, scratch type database, against the developer's real Oracle (opt-in).

    Each test gets its own source schema ``BKCT_<hex>`` (a locked user: nobody logs in as it), created and
    filled through the admin account as ``CURRENT_SCHEMA`` and dropped after the test. The drill imports it
    into a ``BKD_<hex>`` user of the scratch database, which the engine creates and drops.

    Where the contract's means do not fit Oracle:

    - ``dump_programs`` is empty: Data Pump runs inside the database server, so backupkit has no dump child
      to spy on or SIGKILL. The kill test uses the failpoint ``oracle-export-running`` instead: backupkit
      SIGKILLs itself right after ``START_JOB``, while the export job runs on the server; the next backup
      must stop that orphan job and remove its files.
    - the secrets test sees no child at all (python-oracledb thin mode talks to the server itself); it
      still checks the account's real password and the key material stay out of logs, ledger and manifests.
    - the tables use NVARCHAR2 (name) and VARCHAR2 CHAR (ward) for the Chinese text, DATE for born and
      NUMBER for money; the source database's character set must hold Chinese (AL32UTF8, the default of
      Oracle Database Free and XE, or ZHS16GBK), and the scratch's must be the same.
    """

    connector = None  # None: the engine's oracle_conn.open_connection; the adapter's own tests put a stand-in here
    scratch_directory = "DATA_PUMP_DIR"  # drill.scratch.oracle.directory, left at its default

    def __init__(self, ws, tmp, scratch_type="database", env: OracleTestEnv | None = None):
        super().__init__(ws, tmp, "database", "oracle", ())
        self.env = env or OracleTestEnv.from_env()
        self.schema = f"BKCT_{secrets.token_hex(4).upper()}"
        m = _EASY_CONNECT.fullmatch(self.env.dsn)
        if not m:
            raise RuntimeError(f"{ORACLE_DSN_ENV}={self.env.dsn!r}: write it as host:port/service (Easy Connect); "
                               "the contract derives the other forms of the source's address from it")
        self.host, self.port, self.service = m.group("host"), int(m.group("port") or 1521), m.group("service")

    # ---- connections ---------------------------------------------------------------------------
    def password(self) -> str:
        from backupkit.engines.kit import read_secret

        return read_secret(password_file=self.env.password_file, password_env=None, what="Oracle contract test")

    def _connect(self, dsn: str | None = None, schema: str | None = None):
        """An admin connection (python-oracledb, as the engine opens it), in ``schema`` when given."""
        from backupkit.engines.oracle_config import OracleClient
        from backupkit.engines.oracle_conn import ConnectSpec, open_connection

        spec = ConnectSpec(dsn=dsn or self.env.dsn, user=self.env.user, client=OracleClient(**self.env.client),
                           password=self.password(), what="Oracle contract test")
        conn = (self.connector or open_connection)(spec)
        if schema:
            cur = conn.cursor()
            try:
                cur.execute(ORACLE_CURRENT_SCHEMA.format(schema=schema))
            finally:
                cur.close()
        return conn

    def _run(self, statements, *, schema: str | None, dsn: str | None = None, params=None) -> None:
        conn = self._connect(dsn, schema)
        try:
            cur = conn.cursor()
            try:
                for s in statements:
                    if params is None:
                        cur.execute(self.portable(s))
                    else:
                        cur.execute(self.portable(s), params)
            finally:
                cur.close()
            conn.commit()
        finally:
            conn.close()

    @staticmethod
    def portable(sql: str) -> str:
        """The contract's generic SQL in a form every Oracle release from 11.2 runs."""
        m = re.fullmatch(r"DROP TABLE IF EXISTS (\w+)", sql.strip(), re.I)
        return ORACLE_DROP_TABLE_IF_EXISTS.format(table=m.group(1)) if m else sql

    # ---- source ----------------------------------------------------------------------------------
    def ddl(self):
        return list(ORACLE_TABLES.values())

    def create_source(self) -> None:
        password = "Bk" + secrets.token_hex(12)  # the schema is locked: this password is never used
        try:
            self._run([ORACLE_CREATE_SCHEMA.format(schema=self.schema, password=password)], schema=None)
            self.execute(*self.ddl())
            self.executemany(ORACLE_INSERT_PATIENTS, PATIENTS)
            self.executemany(ORACLE_INSERT_VISITS, VISITS)
        except BaseException:
            self.cleanup()
            raise
        self.write_policy()

    def execute(self, *statements, params=None):
        self._run(statements, schema=self.schema, params=params)

    def executemany(self, sql, rows):
        conn = self._connect(schema=self.schema)
        try:
            cur = conn.cursor()
            try:
                cur.executemany(sql, rows)
            finally:
                cur.close()
            conn.commit()
        finally:
            conn.close()

    def scalar(self, sql):
        conn = self._connect(schema=self.schema)
        try:
            return _ora_rows(conn, sql)[0][0]
        finally:
            conn.close()

    def source(self, dsn: str | None = None):
        return {"dsn": dsn or self.env.dsn, "user": self.env.user, "password_file": str(self.env.password_file),
                "oracle": {"schema": self.schema, "poll_seconds": 1, **self.env.client}}

    def scratch_spec(self, dsn: str | None = None):
        return {"type": "database", "dsn": dsn or self.env.scratch_dsn, "password_file": str(self.env.password_file),
                "oracle": {"user": self.env.user, "poll_seconds": 1, **self.env.client}}

    def table_key(self, name):
        return name.upper()  # the engine's keys are the table names without the schema (it is remapped)

    def cleanup(self) -> None:
        conn = self._connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute(ORACLE_DROP_SCHEMA.format(schema=self.schema))
            except Exception as e:
                if "ORA-01918" not in str(e):  # user does not exist: create_source failed before creating it
                    raise
            finally:
                cur.close()
        finally:
            conn.close()

    # ---- scratch ---------------------------------------------------------------------------------
    def scratch_execute(self, engine, scratch, *statements):
        """On the drill's own admin connection, with the scratch user BKD_<hex> as the current schema."""
        from backupkit.engines.oracle import RESET_SCHEMA_BLOCK

        h = scratch.handle  # OracleScratchHandle: conn, user
        cur = h.conn.cursor()
        try:
            cur.execute(ORACLE_CURRENT_SCHEMA.format(schema=h.user))
            try:
                for s in statements:
                    cur.execute(s)
                h.conn.commit()
            finally:
                cur.execute(RESET_SCHEMA_BLOCK)  # the engine's session goes back to its own schema
        finally:
            cur.close()

    def writer(self):
        conn = self._connect(schema=self.schema)
        conn.autocommit = True
        return conn, ":1"

    def assert_scratch_gone(self, record):
        from backupkit.engines.oracle import USER_EXISTS_SQL
        from backupkit.engines.oracle_datapump import DataPump

        td = record["teardown"]
        user = td["user"]
        assert re.fullmatch(r"BKD_[0-9A-F]{12}", user) and td["user_created"] is True, td
        assert td["user_exists"] is False and td["job_exists"] is False and td["file_exists"] is False, td
        job = "BKI_" + user[4:]  # the drill's import job, and its files BKI_<hex>.dmp/.log
        conn = self._connect(self.env.scratch_dsn)  # asked again, on a connection of our own
        try:
            assert _ora_rows(conn, USER_EXISTS_SQL, {"username": user}) == [(0,)], f"{user} still exists"
            dp = DataPump(conn, directory=self.scratch_directory, what="Oracle contract test")
            assert dp.job_state(job) is None, f"Data Pump job {job} still exists"
            left = [f for f in (f"{job}.dmp", f"{job}.log") if dp.file_length(f) >= 0]
            assert left == [], f"still in DIRECTORY {self.scratch_directory}: {left}"
        finally:
            conn.close()

    def created_state(self):
        """On the source database: the BKD_ users and BKI_ import jobs a drill creates, and the schema's tables.
        (SQL cannot list a DIRECTORY; a drill writes its files only after creating its user.)"""
        conn = self._connect()
        try:
            return (_ora_rows(conn, ORACLE_DRILL_USERS), _ora_rows(conn, ORACLE_IMPORT_JOBS),
                    _ora_rows(conn, ORACLE_SCHEMA_TABLES, {"owner": self.schema}))
        finally:
            conn.close()

    # ---- the source's address, every way a user could write it -----------------------------------
    def address_forms(self) -> list[tuple[str, str]]:
        """(label, DSN): the source DSN rewritten (case, prefixes, default port, connect descriptors), other
        names of a local host, and the other services of the source database. Written forms always reach the
        source; a discovered host name or service is kept only when it connects to the source's DBID."""
        h, p, svc = self.host, self.port, self.service
        bare = h.strip("[]")  # a descriptor's HOST takes an IPv6 address without brackets
        forms = [("as written", self.env.dsn),
                 ("service name in lower case", f"{h}:{p}/{svc.lower()}"),
                 ("service name in upper case", f"{h}:{p}/{svc.upper()}"),
                 ("host name in upper case", f"{h.upper()}:{p}/{svc}"),
                 ("with //", f"//{h}:{p}/{svc}"),
                 ("with tcp://", f"tcp://{h}:{p}/{svc}"),
                 ("connect descriptor", f"(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST={bare})(PORT={p}))"
                                        f"(CONNECT_DATA=(SERVICE_NAME={svc})))"),
                 ("connect descriptor with spaces", f"(DESCRIPTION = (ADDRESS = (PROTOCOL = TCP)(HOST = {bare})"
                                                    f"(PORT = {p})) (CONNECT_DATA = (SERVICE_NAME = {svc})))")]
        if p == 1521:
            forms.append(("port left to its default", f"{h}/{svc}"))
        found = [(f"host {alias}", f"{alias}:{p}/{svc}") for alias in self.host_aliases()]
        found += [(f"service {other} of the same database", f"{h}:{p}/{other}") for other in self.other_services()]
        if found:
            source_id = self.database_id(self.env.dsn)
            forms += [(label, dsn) for label, dsn in found if self.reaches(dsn, source_id)]
        seen, out = set(), []
        for label, dsn in forms:
            if dsn not in seen:
                seen.add(dsn)
                out.append((label, dsn))
        return out

    def host_aliases(self) -> list[str]:
        """When the source host is this machine: the other names of this machine that reach the listener."""
        if not self._is_local(self.host):
            return []
        names = ["localhost", "127.0.0.1", "[::1]", socket.gethostname(), socket.getfqdn()]
        out = []
        for n in names:
            if n.lower() != self.host.lower() and n not in out and self._is_local(n) and self._reachable(n, self.port):
                out.append(n)
        return out

    @staticmethod
    def _is_local(host: str) -> bool:
        try:
            infos = socket.getaddrinfo(host.strip("[]"), None)
        except OSError:
            return False
        return any(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)

    @staticmethod
    def _reachable(host: str, port: int) -> bool:
        try:
            socket.create_connection((host.strip("[]"), port), timeout=2).close()
            return True
        except OSError:
            return False

    def other_services(self) -> list[str]:
        """Services of the source database other than the DSN's (an XML DB dispatcher, ``...XDB``, is not one)."""
        conn = self._connect()
        try:
            names = [r[0] for r in _ora_rows(conn, ORACLE_SERVICES)]
        finally:
            conn.close()
        return [n for n in names if n.upper() != self.service.upper() and not n.upper().endswith("XDB")]

    def database_id(self, dsn: str) -> int:
        """The DBID that identifies the data behind ``dsn``: the PDB's (CON_DBID) on 12c and later."""
        conn = self._connect(dsn)
        try:
            major = int(conn.version.split(".")[0])
            return int(_ora_rows(conn, ORACLE_CON_DBID if major >= 12 else ORACLE_DBID)[0][0])
        finally:
            conn.close()

    def reaches(self, dsn: str, source_id: int) -> bool:
        """True when ``dsn`` connects to the database whose DBID is ``source_id``."""
        try:
            return self.database_id(dsn) == source_id
        except Exception:  # noqa: BLE001 - does not connect: not an address of the source
            return False

    def refusals(self):
        from backupkit.engines.oracle import OracleEngine
        from backupkit.policy import Policy

        forms = self.address_forms()
        descriptor = dict((label, dsn) for label, dsn in forms)["connect descriptor"]
        engine = OracleEngine()
        if self.connector is not None:
            engine.connect = self.connector
        out = []
        for source_label, source_dsn in (("as written", self.env.dsn), ("connect descriptor", descriptor)):
            for label, dsn in (forms if source_label == "as written" else forms[:1]):
                policy = Policy.model_validate({"system": SYSTEM, "tier": "30m", "engine": "oracle",
                                                "source": self.source(source_dsn),
                                                "drill": {"scratch": self.scratch_spec(dsn)}})
                out.append((f"source {source_label} / scratch {label}: {dsn}",
                            lambda p=policy: _enter_scratch(engine, p, self.tmp / "refused-workdir")))
        return out

    # ---- kill, password --------------------------------------------------------------------------
    def make_big(self):
        self.execute(*ORACLE_BULK)

    def kill_env(self):
        return {"BACKUPKIT_FAILPOINT": "oracle-export-running"}

    def use_password(self):
        """The account's own password (already in the policy through its 0600 password_file)."""
        password = self.password()
        if len(password) < 8:
            raise RuntimeError("the Oracle test account's password is searched for in logs and records: give it "
                               "at least 8 characters that are not an ordinary word")
        self.write_policy()
        return password


def _enter_scratch(engine, policy, workdir: Path) -> None:
    with engine.scratch(policy=policy, workdir=workdir):
        raise AssertionError("the scratch body must not run")
