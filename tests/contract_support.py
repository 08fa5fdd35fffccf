"""Engine adapters for the engine contract suite (tests/test_engine_contract.py).

One adapter per engine knows, against the real server, how to create the source database (two small
tables, the same rows for every engine), how to write its policy, how to change a restored scratch, which
addresses of the source a user could write, and whether a scratch is really gone. The tests themselves
never branch on the engine: a new engine joins the contract by adding an adapter here.
"""

from __future__ import annotations

import hashlib
import os
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


def _enter_scratch(engine, policy, workdir: Path) -> None:
    with engine.scratch(policy=policy, workdir=workdir):
        raise AssertionError("the scratch body must not run")
