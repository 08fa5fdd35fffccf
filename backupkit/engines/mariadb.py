"""The MariaDB engine (works for MySQL too): consistent ``mariadb-dump`` SQL dumps
with fingerprints from the dump's own point in time, drills into an ephemeral
``mariadbd`` or a scratch database, and real restores into an operator-named
database.

Dump. ``mariadb-dump --single-transaction --routines --triggers --events
--hex-blob`` streams SQL into the sink; the password reaches it through a 0600
option file (``--defaults-extra-file``), never argv. Fingerprints come from a
second connection's ``START TRANSACTION WITH CONSISTENT SNAPSHOT``, made to see
exactly the data the dump sees:

1. connection L: ``FLUSH LOCAL TABLES``, then ``FLUSH TABLES WITH READ LOCK``
   (bounded by ``lock_wait_timeout``). From now on no transaction can commit.
2. connection F: ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY``;
   the binlog/GTID position is read here, under the lock.
3. ``mariadb-dump -v`` starts. It prints ``-- Setting savepoint...`` on stderr
   only after its own ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` returned
   (client/mysqldump.c: ``start_transaction`` in ``main`` precedes
   ``dump_databases``, which prints that line before reading any table).
4. When that line arrives, L runs ``UNLOCK TABLES``. Both snapshots were
   created while no commit could happen, so they contain the same
   transactions. The lock was held for milliseconds.

In full mode, InnoDB tables with a primary key take their content hash from the
dump's own INSERT statements (mariadb_dumptext) and get only ``COUNT(*)`` in
that snapshot; the other tables are hashed in SQL there.

Exact for tables of transactional engines (InnoDB). The record says
``exactness: approximate`` and why when the lock could not be taken (no
RELOAD privilege, lock wait timeout) or a table's engine is not transactional
(MyISAM, Aria, MEMORY: the dump reads those later, at whatever state they are).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..errors import BackupkitError, ConfigError, JobFailed
from . import kit
from .base import (
    CheckResult, DatabaseScratchMixin, DumpResult, DumpSink, Engine, RestoreSource, Scratch, run_beside,
)
from .mariadb_conn import (
    Endpoint,
    connect,
    dsn_endpoint,
    error_reason,
    option_file,
    query,
    same_server_by_address,
    scalar,
    server_identity,
    source_endpoint,
)
from .mariadb_fingerprint import (
    DATABASE_KEY,
    FORMAT as FINGERPRINT_FORMAT,
    TEXT_METHOD,
    all_fingerprints,
    base_tables,
    quote_ident,
    table_key,
    transactional_engines,
)
from .mariadb_dumptext import TEXT_OPTIONS, HashingTap, InsertHasher, text_tables
from .mariadb_server import EphemeralServer, new_server

logger = logging.getLogger(__name__)

CLIENT_PACKAGE = "mariadb-client"
SNAPSHOT_MARKER = "-- Setting savepoint..."  # mariadb-dump -v: printed right after its snapshot started
DEFAULT_FINGERPRINT_SESSIONS = 2  # full-mode fingerprint sessions sharing the dump's snapshot (options.fingerprint_sessions)
SCRATCH_FINGERPRINT_SESSIONS = 2  # on the restored copy (quiescent: any number of sessions see the same data)
DEFAULT_LOCK_WAIT = 30  # seconds FLUSH TABLES WITH READ LOCK may wait, and the dump may take to open its snapshot
DUMP_OPTIONS = ["--single-transaction", "--routines", "--triggers", "--events", "--hex-blob", "--quick",
                "--verbose", "--default-character-set=utf8mb4", "--tz-utc", "--max-allowed-packet=1G",
                "--skip-dump-date"]


def dump_options(mode: str) -> list[str]:
    """mariadb-dump's options: in full mode with the text options the dump-text hashes need
    (--order-by-primary costs about 3% of the dump, so rows mode goes without)."""
    if mode != "full":
        return list(DUMP_OPTIONS)
    return ["--single-transaction", "--routines", "--triggers", "--events", "--quick", "--verbose", *TEXT_OPTIONS,
            "--skip-dump-date"]


def dump_tool(bin_dir: str | None = None) -> kit.Tool:
    return kit.find_tool(["mariadb-dump", "mysqldump"], package=CLIENT_PACKAGE, bin_dir=bin_dir,
                         version_pattern=r"(?:Distrib |Ver )(\d+)\.(\d+)\.(\d+)", min_version=(10, 3))


def client_tool(bin_dir: str | None = None) -> kit.Tool:
    return kit.find_tool(["mariadb", "mysql"], package=CLIENT_PACKAGE, bin_dir=bin_dir,
                         version_pattern=r"(?:Distrib |Ver )(\d+)\.(\d+)\.(\d+)", min_version=(10, 3))


def _options(policy) -> dict[str, Any]:
    return dict(policy.source.options or {})


@dataclass
class MariaScratch:
    """Engine-private part of a Scratch: where and how to restore."""

    endpoint: Endpoint  # the database restored into
    workdir: Path  # private space for the option file
    create_database: bool  # create the database (with the backup's character set and collation) before restoring
    client: kit.Tool | None = None
    server: EphemeralServer | None = None
    starting: threading.Thread | None = None
    start_error: list[BaseException] = field(default_factory=list)

    def wait_ready(self) -> None:
        if self.starting is not None:
            self.starting.join()
            self.starting = None
        if self.start_error:
            raise self.start_error[0]


SPOOL_LIMIT = 512 << 20  # bytes of the SQL stream spooled to the private workdir while the scratch server starts


class _ClientFeed:
    """The writer a restore streams the SQL into. While an ephemeral server is still starting, the
    decrypted SQL goes to a spool file in the drill's private workdir (so decryption overlaps the
    server's startup, as PostgreSQL's restore does); once the server is up, ``starter()`` starts the
    mariadb client, the spool is replayed into it and the rest of the stream goes straight to it."""

    def __init__(self, handle: MariaScratch, what: str, err, spool_dir: Path):
        self.handle, self.what, self.err, self.spool_dir = handle, what, err, spool_dir
        self.starter = None
        self.proc: subprocess.Popen | None = None
        self.spool = None
        self.spooled = 0

    def _ready(self) -> bool:
        t = self.handle.starting
        return t is None or not t.is_alive()

    def _start(self) -> None:
        self.proc = self.starter()
        if self.spool is not None:
            self.spool.seek(0)
            while chunk := self.spool.read(1 << 20):
                self.proc.stdin.write(chunk)
            self.spool.close()
            self.spool = None

    def write(self, data) -> int:
        if self.proc is None:
            if self._ready() or self.spooled + len(data) > SPOOL_LIMIT:
                self._start()
            else:
                if self.spool is None:
                    self.spool = tempfile.TemporaryFile(dir=self.spool_dir)  # unlinked at once; workdir is private
                self.spool.write(data)
                self.spooled += len(data)
                return len(data)
        self.proc.stdin.write(data)
        return len(data)

    def flush(self) -> None:
        if self.proc is not None:
            self.proc.stdin.flush()

    def finish(self) -> None:
        if self.proc is None:
            self._start()

    def close_and_wait(self) -> int:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        return self.proc.wait()

    def abort(self) -> None:
        if self.spool is not None:
            with contextlib.suppress(Exception):
                self.spool.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def fill_text_hashes(fingerprints: dict[str, dict[str, Any]], hasher: InsertHasher, *, what: str) -> None:
    """Put the dump-text hashes into the entries ``table_fingerprints`` left for them. A table with rows
    of which the dump wrote no INSERT line fails: its hash would prove nothing."""
    for name, digest in hasher.hashes().items():
        entry = fingerprints.get(table_key(name))
        if entry is None:
            continue
        if entry.get("rows") and not hasher.lines[name]:
            raise JobFailed(f"{what} holds no INSERT line for table {table_key(name)}, which has {entry['rows']} "
                            "row(s); its content cannot be fingerprinted from the dump")
        entry["hash"] = digest


class MariadbEngine(DatabaseScratchMixin, Engine):
    """MariaDB and MySQL via PyMySQL, mariadb-dump and the mariadb client."""

    name = "mariadb"
    # measured on the benchmark's dump (155 MB of SQL text): long-distance matching made the artifact 2% larger
    # and cost 38% more compression CPU (docs/benchmarks.md)
    long_distance = False
    scratch_kinds = ("ephemeral", "database")
    fingerprint_modes = ("rows", "full")
    restore_to = True

    def describe_source(self, policy) -> str:
        return f"MariaDB at {source_endpoint(policy, with_password=False).label}"

    # ---- dump -------------------------------------------------------------------------------

    def dump(self, *, policy, sink: DumpSink) -> DumpResult:
        """Given a policy, stream mariadb-dump's SQL into ``sink`` and return the consistency point and
        the fingerprints taken in a snapshot equal to the dump's (or marked approximate, with why)."""
        what = f"policy {policy.system}"
        mode = policy.drill.fingerprint
        opts = _options(policy)
        src = source_endpoint(policy)
        try:
            tool = dump_tool(opts.get("bin_dir"))
        except ConfigError as e:
            raise ConfigError(f"{what}: {e}") from None
        lock_wait = int(opts.get("lock_wait_timeout") or DEFAULT_LOCK_WAIT)
        sessions = int(opts.get("fingerprint_sessions") or DEFAULT_FINGERPRINT_SESSIONS) if mode == "full" else 1
        conns: list = []
        try:
            for _ in range(1 + sessions):
                conns.append(connect(src, what=what))
            lock, fp, extra = conns[0], conns[1], conns[2:]
            facts = self._server_facts(fp, src.database)
            with option_file(src, Path(sink.workdir), what) as cnf:
                argv = [str(tool.path), f"--defaults-extra-file={cnf}", *src.client_args(), *dump_options(mode),
                        src.database]
                consistency, fingerprints, stream = self._dump_in_snapshot(
                    lock, fp, argv, tool, sink, src.database, mode, lock_wait, what, extra=extra)
        finally:
            for c in reversed(conns):
                with contextlib.suppress(Exception):
                    c.close()
        details = {**facts, "dump_tool": f"{tool.path} ({tool.version_text})", "dump_format": "sql",
                   "dump_options": dump_options(mode), "fingerprint_mode": mode, "fingerprint_format": FINGERPRINT_FORMAT,
                   **stream}
        return DumpResult(server_version=facts["server_version"], consistency=consistency,
                          fingerprints=fingerprints, details=details)

    @staticmethod
    def _server_facts(conn, database: str) -> dict[str, Any]:
        row = query(conn, "SELECT @@version, @@version_comment, @@log_bin, @@character_set_server, "
                          "@@collation_server, @@lower_case_table_names")[0]
        ident = server_identity(conn)
        flavour = "MariaDB" if "mariadb" in f"{row[0]} {row[1]}".lower() else "MySQL"
        return {"server_version": f"{flavour} {row[0]}", "version_comment": row[1], "log_bin": bool(int(row[2])),
                "character_set_server": row[3], "collation_server": row[4],
                "lower_case_table_names": int(row[5]), "database": database,
                "server_identity": {k: v for k, v in ident.items() if k != "key"}}

    def _dump_in_snapshot(self, lock, fp, argv, tool: kit.Tool, sink, database: str, mode: str, lock_wait: int,
                          what: str, extra: list | None = None):
        why: list[str] = []
        locked = False
        t_lock = time.monotonic()
        try:
            with lock.cursor() as cur:
                cur.execute("SET SESSION lock_wait_timeout = %s", (lock_wait,))
                cur.execute("FLUSH LOCAL TABLES")
                cur.execute("FLUSH TABLES WITH READ LOCK")
            locked = True
        except Exception as e:  # no RELOAD privilege, lock wait timeout: go on, but never claim exact
            why.append(f"FLUSH TABLES WITH READ LOCK failed ({error_reason(e)}), so transactions committed between "
                       "the fingerprint snapshot and the dump's snapshot may differ")
        child: kit.Child | None = None
        marker = threading.Event()
        try:
            extra = list(extra or []) if locked else []  # without the lock their snapshots could differ
            for c in (fp, *extra):
                with c.cursor() as cur:
                    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            at = scalar(fp, "SELECT UTC_TIMESTAMP(6)")
            position = self._position(fp)
            for c in extra:  # all started under the lock; their binlog snapshot positions must agree too
                other = self._position(c)
                if other != position:
                    raise JobFailed(f"{what}: fingerprint sessions started under the global read lock report "
                                    f"different snapshot positions ({position} vs {other}); not fingerprinting")
            engines = transactional_engines(fp)
            tables = base_tables(fp, database)
            texts = text_tables(fp, database) if mode == "full" else set()
            child = kit.Child(argv, what=what, tool=tool.path.name,
                              watch=lambda line: marker.set() if line.strip() == SNAPSHOT_MARKER else None).start()
            deadline = time.monotonic() + max(lock_wait, 10)
            while not marker.wait(0.01):
                if not child.running() or time.monotonic() > deadline:
                    break
            snapshot_seen = marker.is_set()
        except BaseException:
            if child is not None:
                child.kill()
                child.close()
            raise
        finally:
            if locked:
                with contextlib.suppress(Exception), lock.cursor() as cur:
                    cur.execute("UNLOCK TABLES")
            lock_seconds = round(time.monotonic() - t_lock, 3)
        if not snapshot_seen:
            if child.running():  # it never opened its snapshot in time: do not stream a dump we cannot vouch for
                child.kill()
                child.close()
                raise JobFailed(f"{what}: {tool.path.name} did not start its consistent snapshot within "
                                f"{max(lock_wait, 10)}s: {child.stderr_tail() or 'no message'}")
            why.append(f"{tool.path.name} did not report its snapshot (no '{SNAPSHOT_MARKER}' line)")
        non_tx = sorted(f"{t} ({e})" for t, e in tables if (e or "").lower() not in engines)
        if non_tx:
            why.append("tables of non-transactional engines are read by the dump outside any snapshot: "
                       + ", ".join(non_tx))
        consistency = {"kind": "mariadb", "time": at.replace(tzinfo=timezone.utc).isoformat() if at else
                       datetime.now(timezone.utc).isoformat(), **position,
                       "method": "global read lock held while both snapshots started" if locked else "none",
                       "lock_seconds": lock_seconds if locked else 0,
                       "exactness": "approximate" if why else "exact"}
        if why:
            consistency["approximate_because"] = why
            logger.warning("%s: fingerprints are approximate: %s", what, "; ".join(why))
        else:
            consistency["proof"] = ("FLUSH TABLES WITH READ LOCK was held from before the fingerprint transaction's "
                                    "START TRANSACTION WITH CONSISTENT SNAPSHOT until mariadb-dump reported "
                                    f"'{SNAPSHOT_MARKER}' (after its own snapshot started); no commit can happen "
                                    "under that lock, so both snapshots hold the same transactions"
                                    + (f"; the {len(extra)} further fingerprint session(s) started their snapshots "
                                       "under the same lock and report the same binlog snapshot position"
                                       if extra else ""))

        fp_ids = [scalar(c, "SELECT CONNECTION_ID()") for c in (fp, *extra)]
        result: dict[str, Any] = {}

        def fingerprint() -> None:
            t0 = time.monotonic()
            try:
                result["value"] = all_fingerprints(fp, database, mode, extra, counted=texts)
            except BaseException as e:
                result["error"] = e
            result["seconds"] = round(time.monotonic() - t0, 3)

        def cancel() -> None:
            for fp_id in fp_ids:
                with contextlib.suppress(Exception), lock.cursor() as cur:
                    cur.execute(f"KILL QUERY {int(fp_id)}")

        worker = threading.Thread(target=fingerprint, name="mariadb-fingerprint", daemon=True)
        worker.start()
        t0 = time.monotonic()
        hasher = InsertHasher(texts)
        try:
            info = kit.stream_child(child, sink, "data", on_error=cancel,
                                    reader=HashingTap(child.stdout, hasher) if texts else None)
        except BaseException:
            worker.join(timeout=60)
            raise
        stream_seconds = time.monotonic() - t0
        worker.join()
        if "error" in result:
            e = result["error"]
            raise JobFailed(f"{what}: fingerprinting in the dump's snapshot failed: {e}") from None
        fill_text_hashes(result["value"], hasher, what=f"{what}: the dump")
        for c in (fp, *extra):
            with contextlib.suppress(Exception), c.cursor() as cur:
                cur.execute("COMMIT")
        stream = {"stream_seconds": round(stream_seconds, 3), "fingerprint_seconds": result["seconds"],
                  "fingerprint_sessions": 1 + len(extra), "tables": len(tables), "content_bytes": info.content_bytes}
        logger.info("%s: %s streamed %d bytes in %.1fs; %d tables fingerprinted (%s) in %.1fs; snapshot %s",
                    what, tool.path.name, info.content_bytes, stream_seconds, len(tables), mode, result["seconds"],
                    consistency["exactness"])
        return consistency, result["value"], stream

    @staticmethod
    def _position(conn) -> dict[str, Any]:
        """Binlog file/position of the snapshot (MariaDB's binlog_snapshot_*) and the GTID position, when kept."""
        out: dict[str, Any] = {}
        status = {r[0].lower(): r[1] for r in query(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'")}
        if status.get("binlog_snapshot_file"):
            out["binlog_file"] = status["binlog_snapshot_file"]
            out["binlog_position"] = int(status.get("binlog_snapshot_position") or 0)
        with contextlib.suppress(Exception):
            gtid = scalar(conn, "SELECT @@gtid_binlog_pos")
            if gtid:
                out["gtid_binlog_pos"] = gtid
        with contextlib.suppress(Exception):  # MySQL
            gtid = scalar(conn, "SELECT @@gtid_executed")
            if gtid:
                out["gtid_executed"] = gtid
        return out

    # ---- scratch --------------------------------------------------------------------------------

    def scratch(self, *, policy, workdir: Path) -> contextlib.AbstractContextManager[Scratch]:
        """Given a policy and a private workdir, provision the drill scratch (an ephemeral mariadbd or a
        uniquely named database on the scratch server), yield it, and destroy it with proof on exit."""
        spec = policy.drill.scratch
        if spec.type == "database":
            return self._database_scratch(policy, Path(workdir))
        return self._ephemeral_scratch(policy, Path(workdir))

    @contextlib.contextmanager
    def _ephemeral_scratch(self, policy, workdir: Path) -> Iterator[Scratch]:
        opts = _options(policy)
        database = source_endpoint(policy, with_password=False).database
        client = client_tool(opts.get("bin_dir"))
        server = new_server(workdir, server_bin_dir=opts.get("server_bin_dir"))
        scratch = Scratch(kind="ephemeral")
        handle = MariaScratch(endpoint=server.endpoint(database), workdir=workdir, create_database=True,
                              client=client, server=server)
        scratch.handle = handle
        scratch.info = {"engine": "mariadb", "datadir": str(server.datadir), "networking": "off (--skip-networking)",
                        "os_user": server.run_as or os.environ.get("USER", str(os.getuid())), "database": database,
                        "event_scheduler": "OFF",
                        "not_production": "fresh data directory (new system tables) created for this drill, "
                                          "reachable only on a private Unix socket"}

        def start() -> None:
            t0 = time.monotonic()
            try:
                server.start()
                handle.endpoint = server.endpoint(database)
                scratch.info.update(socket=str(server.socket), server_pid=server.pid, server_version=server.version,
                                    provision_seconds=round(time.monotonic() - t0, 3),
                                    initialized_by=server.bootstrapped or "mariadb-install-db")
            except BaseException as e:
                handle.start_error.append(e)

        handle.starting = threading.Thread(target=start, name="mariadb-scratch-start", daemon=True)
        handle.starting.start()
        try:
            yield scratch
        finally:
            with contextlib.suppress(BaseException):
                handle.wait_ready()
            scratch.teardown_proof = server.stop()

    def _refuse_source(self, policy, target: Endpoint, what: str, *, same_database_only: bool) -> dict[str, Any]:
        """Raise ConfigError when ``target`` is the policy's source server (or, with
        ``same_database_only``, the source database); return what was compared."""
        src = source_endpoint(policy, with_password=False)
        subject = "the source database" if same_database_only else "the source server"
        refusal = (f"{what}: {target.label if same_database_only else target.server_label} is {subject} of policy "
                   f"{policy.system}; a drill or restore must never write into production. "
                   "Name a different server" + (" or database" if same_database_only else ""))
        db_equal = (target.database or "") == (src.database or "")
        by_address = same_server_by_address(src, target)
        if by_address and (db_equal or not same_database_only):
            raise ConfigError(refusal)
        checked: dict[str, Any] = {"by_address": {True: "same server", False: "different",
                                                  None: "undecided (socket vs TCP)"}[by_address],
                                   "by_identity": "not checked (source unreachable)"}
        src_id = tgt_id = None
        with contextlib.suppress(BackupkitError, Exception):
            probe = source_endpoint(policy)
            with contextlib.closing(connect(dataclasses.replace(probe, connect_timeout=5), what=what,
                                            database=False, pinned=False)) as c:
                src_id = server_identity(c)
        if src_id is not None:
            with contextlib.closing(connect(target, what=what, database=False, pinned=False)) as c:
                tgt_id = server_identity(c)
            if src_id["key"] == tgt_id["key"] and (db_equal or not same_database_only):
                raise ConfigError(refusal + f" (same server identity {src_id['key']})")
            checked["by_identity"] = "same server, other database" if src_id["key"] == tgt_id["key"] else "different"
            checked["source_identity"], checked["target_identity"] = src_id["key"], tgt_id["key"]
        return checked

    @contextlib.contextmanager
    def _database_scratch(self, policy, workdir: Path) -> Iterator[Scratch]:
        spec = policy.drill.scratch
        what = f"policy {policy.system}: drill scratch"
        if not spec.dsn:
            raise ConfigError(f"policy {policy.system}: drill.scratch.type database needs drill.scratch.dsn")
        admin = self._scratch_admin(spec, what)
        # A MariaDB database is a schema of a shared server: restored events, triggers and definers would
        # live on production, so the scratch server must not be the source server at all.
        checked = self._refuse_source(policy, admin.with_db(None), what, same_database_only=False)
        client = client_tool(_options(policy).get("bin_dir"))
        name = self._scratch_database_name(policy, workdir)
        with contextlib.closing(connect(admin, what=what, database=False)) as conn:
            version, scheduler = query(conn, "SELECT @@version, @@event_scheduler")[0]
        scratch = Scratch(kind="database")
        scratch.handle = MariaScratch(endpoint=admin.with_db(name), workdir=workdir, create_database=True,
                                      client=client)
        scratch.info = {"engine": "mariadb", "server": admin.server_label, "server_version": version,
                        "database": name, "refusal_checks": checked, "event_scheduler": scheduler,
                        "not_production": "uniquely named database created for this drill on the scratch server"}
        try:
            yield scratch
        finally:
            scratch.teardown_proof = self._drop_database(admin, name, what)

    @staticmethod
    def _scratch_admin(spec, what: str) -> Endpoint:
        return dsn_endpoint(spec.dsn, what=what, password_file=spec.password_file, password_env=spec.password_env)

    @staticmethod
    def _drop_database(admin: Endpoint, name: str, what: str) -> dict[str, Any]:
        proof: dict[str, Any] = {"server": admin.server_label, "database": name}
        try:
            with contextlib.closing(connect(admin, what=what, database=False)) as conn:
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
                exists = scalar(conn, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            proof["database_exists"] = bool(exists)
        except Exception as e:
            proof["database_exists"] = None
            proof["error"] = " ".join(str(e).split())
        logger.info("%s: scratch database teardown: %s", what, proof)
        return proof

    # ---- restore target (backupkit restore --to) --------------------------------------------

    @contextlib.contextmanager
    def restore_target(self, *, policy, dsn: str | None, replace_source: bool = False) -> Iterator[Scratch]:
        """Given the operator's ``--to`` DSN (``mariadb://user@host:3306/database``), refuse the source
        database, check the server is reachable and yield it as a Scratch of kind "target". With
        ``replace_source`` the destination is the policy's own source database (emergency restore)."""
        what = f"policy {policy.system}: restore target"
        if replace_source:
            target = source_endpoint(policy)
            checked: dict[str, Any] = {"replace_source": "the operator chose to replace the source database"}
        else:
            target = dsn_endpoint(str(dsn), what=what)
            if not target.database:
                raise ConfigError(f"{what}: the DSN {dsn!r} names no database; write mariadb://user@host:3306/database")
            checked = self._refuse_source(policy, target, what, same_database_only=True)
        with contextlib.closing(connect(target, what=what, database=False)) as conn:
            version = scalar(conn, "SELECT @@version")
        workdir = Path(tempfile.mkdtemp(prefix="backupkit-restore-"))
        scratch = Scratch(kind="target", info={"engine": "mariadb", "target": target.label, "server_version": version,
                                               "refusal_checks": checked})
        scratch.handle = MariaScratch(endpoint=target, workdir=workdir, create_database=True,
                                      client=client_tool(_options(policy).get("bin_dir")))
        try:
            yield scratch
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def is_empty(self, *, scratch: Scratch) -> bool:
        """True when the destination database does not exist or holds no table, view, routine or event."""
        h: MariaScratch = scratch.handle
        db = h.endpoint.database
        with contextlib.closing(connect(h.endpoint, what=f"{scratch.kind} {h.endpoint.label}", database=False)) as conn:
            n = scalar(conn, "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s) + "
                             "(SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s) + "
                             "(SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s)", (db, db, db))
        return int(n) == 0

    # ---- restore ---------------------------------------------------------------------------------

    def restore(self, *, policy, scratch: Scratch, source: RestoreSource) -> None:
        """Given a provisioned scratch and a backup, create the database with the recorded character set
        and collation (when missing) and stream the SQL into the mariadb client."""
        h: MariaScratch = scratch.handle
        fmt = ((scratch.manifest or {}).get("details") or {}).get("dump_format", "sql")
        if fmt != "sql":
            raise ConfigError(f"policy {policy.system}: this backup is a {fmt} stream (taken in mode physical), not "
                              "an SQL dump; drill it with the policy's source.mode as it was at backup time")
        where = f"database {h.endpoint.database}" if h.starting is not None else h.endpoint.label
        what = f"policy {policy.system}: restore into {scratch.kind} {where}"
        props = (((scratch.manifest or {}).get("fingerprints") or {}).get(DATABASE_KEY)) or {}
        client = h.client or client_tool(_options(policy).get("bin_dir"))
        h.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with contextlib.ExitStack() as stack:
            err = stack.enter_context(tempfile.TemporaryFile())
            feed = _ClientFeed(h, what, err, spool_dir=h.workdir)
            stack.callback(feed.abort)

            def start_client():
                h.wait_ready()  # the ephemeral server started while the first part of the stream was spooled
                if h.create_database:
                    scratch.info["database_created"] = self._create_database(h.endpoint, props, what)
                cnf = stack.enter_context(option_file(h.endpoint, h.workdir, what))
                argv = [str(client.path), f"--defaults-extra-file={cnf}", *h.endpoint.client_args(),
                        f"--database={h.endpoint.database}", "--binary-mode", "--batch", "--max-allowed-packet=1G",
                        "--default-character-set=utf8mb4", "--silent"]
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, cwd="/",
                                        env=kit.child_env())
                kit.set_pipe_size(proc.stdin)
                return proc

            feed.starter = start_client
            try:
                source.stream_to("data", feed)
                feed.finish()
            except BrokenPipeError:  # the client stopped reading: its stderr says why
                rc = feed.close_and_wait()
                err.seek(0)
                raise JobFailed(f"{what}: {client.path.name} failed (exit {rc}): {kit.tail_text(err.read())}") from None
            rc = feed.close_and_wait()
            if rc != 0:
                err.seek(0)
                raise JobFailed(f"{what}: {client.path.name} failed (exit {rc}): {kit.tail_text(err.read())}")
        scratch.info["restore_spooled_bytes"] = feed.spooled
        logger.info("%s: restored in %.1fs", what, time.monotonic() - t0)

    @staticmethod
    def _create_database(endpoint: Endpoint, props: dict[str, Any], what: str) -> str:
        name = endpoint.database
        with contextlib.closing(connect(endpoint, what=what, database=False)) as conn:
            if scalar(conn, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,)):
                return "existed"
            stmt = f"CREATE DATABASE {quote_ident(name)}"
            if props.get("character_set"):
                stmt += f" CHARACTER SET {props['character_set']}"
            if props.get("collation"):
                stmt += f" COLLATE {props['collation']}"
            try:
                with conn.cursor() as cur:
                    cur.execute(stmt)
            except Exception as e:
                raise JobFailed(f"{what}: {stmt} failed: {error_reason(e)}") from None
        return stmt

    # ---- checks on the restored copy ----------------------------------------------------------

    def _connect(self, scratch: Scratch):
        h: MariaScratch = scratch.handle
        h.wait_ready()
        return connect(h.endpoint, what=f"{scratch.kind} scratch {h.endpoint.label}")

    def integrity_check(self, *, scratch: Scratch) -> list[CheckResult]:
        """CHECK TABLE ... EXTENDED on every base table and view of the restored database."""
        with contextlib.closing(self._connect(scratch)) as conn:
            db = scratch.handle.endpoint.database
            names = [r[0] for r in query(conn, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                                               "AND TABLE_TYPE <> 'SEQUENCE' ORDER BY TABLE_NAME", (db,))]
            if not names:
                return [CheckResult("CHECK TABLE EXTENDED", "passed", "no tables")]
            t0 = time.monotonic()
            rows = []
            for i in range(0, len(names), 50):
                rows += query(conn, "CHECK TABLE " + ", ".join(quote_ident(n) for n in names[i:i + 50]) + " EXTENDED")
        bad = [f"{r[0]}: {r[2]} {r[3]}" for r in rows
               if str(r[2]).lower() == "error" or (str(r[2]).lower() == "status" and str(r[3]).upper() != "OK")]
        data = {"tables": len(names), "seconds": round(time.monotonic() - t0, 3)}
        if bad:
            return [CheckResult("CHECK TABLE EXTENDED", "failed", "; ".join(bad)[:2000], data=data)]
        return [CheckResult("CHECK TABLE EXTENDED", "passed", f"{len(names)} tables and views OK", data=data)]

    def check_restored(self, *, scratch: Scratch, mode: str, like: dict | None = None, key: bytes | None = None
                       ) -> tuple[list[CheckResult], dict[str, dict[str, Any]]]:
        """CHECK TABLE ... EXTENDED on its own connection beside the fingerprints. Neither sees what the
        other creates: CHECK TABLE changes no row and no definition the fingerprints read (rows, and
        information_schema fields other than check times), and nothing else writes to the restored copy."""
        return self.integrity_beside(scratch, lambda: self.fingerprints(scratch=scratch, mode=mode, like=like),
                                     name="mariadb-check-table")

    def fingerprints(self, *, scratch: Scratch, mode: str, like: dict | None = None) -> dict[str, dict[str, Any]]:
        """Fingerprints of the restored database, computed exactly as at dump time; in full mode over
        several sessions (nothing writes to a restored copy, so their snapshots hold the same data)."""
        sessions = SCRATCH_FINGERPRINT_SESSIONS if mode == "full" else 1
        database = scratch.handle.endpoint.database
        with contextlib.ExitStack() as stack:
            conns = [stack.enter_context(contextlib.closing(self._connect(scratch))) for _ in range(sessions)]
            for c in conns:
                with c.cursor() as cur:
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            try:
                names = [t for t, _ in base_tables(conns[0], database)]
                texts = {t for t in names if mode == "full" and
                         ((like or {}).get(table_key(t)) or {}).get("method") == TEXT_METHOD}
                def sql() -> dict[str, dict[str, Any]]:
                    return all_fingerprints(conns[0], database, mode, conns[1:], counted=texts)
                if not texts:
                    return sql()
                # the restored tables' INSERT lines, dumped with the backup's text options beside the SQL
                hasher, out = run_beside(lambda: self._redump(scratch, set(names) - texts, texts), sql,
                                         name="mariadb-redump")
                fill_text_hashes(out, hasher, what=f"the second dump of {scratch.kind} scratch "
                                                   f"{scratch.handle.endpoint.label}")
                return out
            finally:
                for c in conns:
                    with contextlib.suppress(Exception), c.cursor() as cur:
                        cur.execute("ROLLBACK")

    @staticmethod
    def _redump(scratch: Scratch, others: set[str], texts: set[str]) -> InsertHasher:
        """Dump the restored copy's data (tables in ``others`` ignored) with the backup's text options,
        hashing the INSERT lines of ``texts``; the output goes nowhere."""
        h: MariaScratch = scratch.handle
        what = f"{scratch.kind} scratch {h.endpoint.label}: second dump for the dump-text fingerprints"
        tool = dump_tool(str(h.client.path.parent) if h.client is not None else None)
        db = h.endpoint.database
        with option_file(h.endpoint, h.workdir, what) as cnf:
            argv = [str(tool.path), f"--defaults-extra-file={cnf}", *h.endpoint.client_args(),
                    "--single-transaction", "--quick", "--no-create-info", "--skip-triggers", *TEXT_OPTIONS,
                    "--skip-dump-date", *(f"--ignore-table={db}.{t}" for t in sorted(others)), db]
            hasher = InsertHasher(texts)
            kit.drain_child(kit.Child(argv, what=what, tool=tool.path.name).start(), hasher.feed)
        return hasher

    def query_scalar(self, *, scratch: Scratch, sql: str) -> Any:
        """Run a policy assertion read-only with the pinned settings; first column of the first row."""
        with contextlib.closing(self._connect(scratch)) as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute("START TRANSACTION READ ONLY")
                    cur.execute(sql)
                    row = cur.fetchone() if cur.description else None
            except Exception as e:
                raise JobFailed(f"assertion SQL failed on the scratch copy: {error_reason(e)}") from None
            finally:
                with contextlib.suppress(Exception), conn.cursor() as cur:
                    cur.execute("ROLLBACK")
        return row[0] if row else None
