"""The PostgreSQL engine: consistent dumps with fingerprints from the same
snapshot, drills into an ephemeral cluster or a scratch database, and real
restores into an operator-named database.

Dump: a REPEATABLE READ, READ ONLY transaction exports its snapshot; ``pg_dump
-Fc -Z0 --snapshot`` streams the archive uncompressed into the sink (backupkit
compresses with multi-threaded zstd), while a thread computes the fingerprints
in that same transaction. Roles go into a second stream, ``globals``, from
``pg_dumpall --globals-only --no-role-passwords``.

Restore: pg_restore needs a seekable file for ``-j``, so the ``data`` stream is
written to the scratch workdir first. Globals: replayed into an ephemeral
cluster and into a restore target (missing roles only; owners and grants are
kept), skipped for a ``database`` scratch on a shared server (creating roles
there would outlive the drill; the restore uses --no-owner --no-privileges).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import re
import secrets
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any, Iterator

import psycopg
from psycopg import sql

from ..errors import BackupkitError, ConfigError, JobFailed
from .base import CheckResult, DumpResult, DumpSink, Engine, RestoreSource, Scratch
from .pg_cluster import EphemeralCluster, find_tool, newest_server_bindir, private_root, server_os_user
from .pg_conn import (
    Endpoint,
    client_env,
    connect,
    dsn_endpoint,
    read_password,
    same_database_by_address,
    server_identity,
    source_endpoint,
)
from .pg_fingerprint import parallel_table_fingerprints, table_fingerprints
from .pg_globals import filter_globals, psql_errors

logger = logging.getLogger(__name__)

PIPE_SIZE = 1 << 20  # 1 MiB pipe buffer: fewer context switches between pg_dump and the sink
STDERR_TAIL = 1500


@dataclass
class PgScratch:
    """Engine-private part of a Scratch: where and how to restore."""

    endpoint: Endpoint  # the database restored into
    bindir: Path  # pg_restore and psql live here
    workdir: Path  # private space for the seekable archive and PGPASSFILE
    globals_mode: str  # "missing": create roles the destination lacks; "skip"
    keep_owners: bool
    create_database: bool  # ephemeral: create the database with the archive's encoding
    subscriptions: bool = False  # never restore subscriptions into a scratch
    cluster: EphemeralCluster | None = None
    starting: threading.Thread | None = None  # the ephemeral cluster starting in the background
    start_error: list[BaseException] = field(default_factory=list)

    def wait_ready(self) -> None:
        """Block until the background cluster start finished; re-raise its failure."""
        if self.starting is not None:
            self.starting.join()
            self.starting = None
        if self.start_error:
            raise self.start_error[0]


def _tail(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(text.strip()[-STDERR_TAIL:].split())


def _set_pipe_size(fileobj) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fileobj.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class PostgresEngine(Engine):
    """PostgreSQL via psycopg 3 and the pg_dump/pg_restore of the server's major version."""

    name = "postgres"

    def describe_source(self, policy) -> str:
        return f"PostgreSQL at {source_endpoint(policy, with_password=False).label}"

    # ---- dump ---------------------------------------------------------------------------

    def dump(self, *, policy, sink: DumpSink) -> DumpResult:
        """Given a policy, stream pg_dump's archive (and the globals) into ``sink`` and return
        the snapshot's consistency point and fingerprints taken in that same snapshot."""
        what = f"policy {policy.system}"
        mode = policy.drill.fingerprint
        src = source_endpoint(policy)
        bin_dir = (policy.source.options or {}).get("bin_dir")
        conn = connect(src, what=what)
        try:
            facts = self._server_facts(conn)
            major = facts["server_major"]
            try:
                pg_dump = find_tool("pg_dump", major, bin_dir=bin_dir)
                pg_dumpall = find_tool("pg_dumpall", major, bin_dir=bin_dir)
            except ConfigError as e:
                raise ConfigError(f"{what}: {e}") from None
            with client_env(src, Path(sink.workdir)) as env:
                globals_info = self._dump_globals(pg_dumpall, src, env, sink, what)
                consistency, fingerprints, data_info = self._dump_data(conn, pg_dump, src, env, sink, mode, what,
                                                                       facts["in_recovery"])
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        details = {
            **facts,
            "pg_dump": str(pg_dump),
            "fingerprint_mode": mode,
            "globals_bytes": globals_info.content_bytes,
            "dump_format": "custom",
            **data_info,
        }
        return DumpResult(server_version=facts["server_version"], consistency=consistency,
                          fingerprints=fingerprints, details=details)

    @staticmethod
    def _server_facts(conn: psycopg.Connection) -> dict[str, Any]:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
            "pg_is_in_recovery(), current_database(), current_setting('server_encoding')"
        ).fetchone()
        sysid, _ = server_identity(conn)
        return {"server_version": row[0], "server_version_num": row[1], "server_major": row[1] // 10000,
                "in_recovery": row[2], "database": row[3], "encoding": row[4], "system_identifier": sysid}

    def _dump_globals(self, pg_dumpall: Path, src: Endpoint, env: dict, sink: DumpSink, what: str):
        argv = [str(pg_dumpall), "--globals-only", "--no-role-passwords", "--dbname", src.conninfo()]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env)
            try:
                info = sink.write_stream("globals", proc.stdout)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                proc.stdout.close()
            rc = proc.wait()
            err.seek(0)
            if rc != 0:
                raise JobFailed(f"{what}: pg_dumpall --globals-only failed (exit {rc}): {_tail(err.read())}")
        return info

    def _dump_data(self, conn, pg_dump: Path, src: Endpoint, env: dict, sink: DumpSink, mode: str, what: str,
                   in_recovery: bool):
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        lsn_fn = "pg_last_wal_replay_lsn()" if in_recovery else "pg_current_wal_lsn()"
        snapshot, lsn, xmin, at = conn.execute(
            f"SELECT pg_export_snapshot(), {lsn_fn}::text, txid_snapshot_xmin(txid_current_snapshot()), now()"
        ).fetchone()
        consistency = {"kind": "postgres", "lsn": lsn, "snapshot": snapshot, "xmin": int(xmin),
                       "time": at.astimezone(timezone.utc).isoformat(), "standby": bool(in_recovery)}

        argv = [str(pg_dump), "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--dbname", src.conninfo()]
        fp_result: dict[str, Any] = {}

        def fingerprint() -> None:
            t0 = time.monotonic()
            try:
                fp_result["value"] = table_fingerprints(conn, mode)
            except BaseException as e:  # reported by the main thread
                fp_result["error"] = e
            fp_result["seconds"] = round(time.monotonic() - t0, 3)

        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                    bufsize=0)
            _set_pipe_size(proc.stdout)
            worker = threading.Thread(target=fingerprint, name="pg-fingerprint", daemon=True)
            worker.start()
            t0 = time.monotonic()
            try:
                info = sink.write_stream("data", proc.stdout)
            except BaseException:
                proc.kill()
                proc.wait()
                with contextlib.suppress(Exception):
                    conn.cancel()
                worker.join(timeout=30)
                raise
            finally:
                proc.stdout.close()
            rc = proc.wait()
            stream_seconds = time.monotonic() - t0
            if rc != 0:
                with contextlib.suppress(Exception):
                    conn.cancel()
                worker.join(timeout=30)
                err.seek(0)
                reason = _tail(err.read()) or ("killed by signal %d" % -rc if rc < 0 else "no message")
                raise JobFailed(f"{what}: pg_dump failed (exit {rc}): {reason}")
            worker.join()
        if "error" in fp_result:
            e = fp_result["error"]
            raise JobFailed(f"{what}: fingerprinting in the dump's snapshot failed: {' '.join(str(e).split())}") from None
        conn.execute("COMMIT")
        data_info = {"stream_seconds": round(stream_seconds, 3), "fingerprint_seconds": fp_result["seconds"],
                     "tables": len(fp_result["value"]), "content_bytes": info.content_bytes}
        logger.info("%s: pg_dump streamed %d bytes in %.1fs; %d tables fingerprinted (%s) in %.1fs", what,
                    info.content_bytes, stream_seconds, len(fp_result["value"]), mode, fp_result["seconds"])
        return consistency, fp_result["value"], data_info

    # ---- scratch --------------------------------------------------------------------------

    def scratch(self, *, policy, workdir: Path) -> contextlib.AbstractContextManager[Scratch]:
        """Given a policy and a private workdir, provision the drill scratch (ephemeral cluster
        or a uniquely named database), yield it, and destroy it with verified proof on exit."""
        spec = policy.drill.scratch
        if spec.type == "database":
            return self._database_scratch(policy, Path(workdir))
        return self._ephemeral_scratch(policy, Path(workdir))

    @contextlib.contextmanager
    def _ephemeral_scratch(self, policy, workdir: Path) -> Iterator[Scratch]:
        """An initdb cluster on a private socket. It starts in the background so that initdb and
        startup overlap the decryption of the archive; every use of it waits until it is up."""
        bin_dir = (policy.source.options or {}).get("bin_dir")
        run_as = server_os_user()
        major, bindir = newest_server_bindir(bin_dir)
        dbname = source_endpoint(policy, with_password=False).dbname
        root = private_root(workdir, run_as)
        cluster = EphemeralCluster(bindir=bindir, major=major, root=root, run_as=run_as)
        scratch = Scratch(kind="ephemeral")
        handle = PgScratch(endpoint=Endpoint({}), bindir=bindir, workdir=workdir, globals_mode="missing",
                           keep_owners=True, create_database=True, cluster=cluster)
        scratch.handle = handle
        scratch.info = {
            "engine": "postgres",
            "server_major": major,
            "datadir": str(cluster.datadir),
            "port": cluster.port,
            "listen_addresses": "",
            "os_user": run_as or os.environ.get("USER", str(os.getuid())),
            "database": dbname,
            "not_production": "fresh initdb cluster created for this drill, reachable only on a private Unix socket",
        }

        def start() -> None:
            t0 = time.monotonic()
            try:
                cluster.start()
                handle.endpoint = Endpoint(cluster.params(dbname))
                scratch.info.update(socket_dir=str(cluster.sockdir), postmaster_pid=cluster.pid,
                                    provision_seconds=round(time.monotonic() - t0, 3))
            except BaseException as e:  # re-raised by wait_ready in the thread that uses the cluster
                handle.start_error.append(e)

        handle.starting = threading.Thread(target=start, name="pg-scratch-start", daemon=True)
        handle.starting.start()
        try:
            yield scratch
        finally:
            with contextlib.suppress(BaseException):
                handle.wait_ready()
            scratch.teardown_proof = cluster.stop()

    def _refuse_source(self, policy, target: Endpoint, what: str) -> dict[str, Any]:
        """Raise ConfigError when ``target`` is the policy's source database; return what was compared."""
        src = source_endpoint(policy, with_password=False)
        refusal = (f"{what}: {target.label} is the source database of policy {policy.system}; "
                   "a drill or restore must never write into production. Name a different server or database")
        if same_database_by_address(target, src):
            raise ConfigError(refusal)
        checked: dict[str, Any] = {"by_address": "different", "by_identity": "not checked (source unreachable)"}
        src_id = tgt_id = None
        with contextlib.suppress(BackupkitError, psycopg.Error):
            probe = Endpoint({**src.params, "connect_timeout": "5"},
                             read_password(password_file=policy.source.password_file,
                                           password_env=policy.source.password_env, what=what))
            with connect(probe, what=what, pinned=False) as c:
                src_id = server_identity(c)
            with connect(target, what=what, pinned=False) as c:
                tgt_id = server_identity(c)
        if src_id and tgt_id:
            if src_id[0] and src_id[0] == tgt_id[0] and src_id[1] == tgt_id[1]:
                raise ConfigError(refusal + f" (same system_identifier {src_id[0]} and database)")
            checked["by_identity"] = "different" if src_id[0] and tgt_id[0] else "not checked (system_identifier not readable)"
        return checked

    @contextlib.contextmanager
    def _database_scratch(self, policy, workdir: Path) -> Iterator[Scratch]:
        spec = policy.drill.scratch
        what = f"policy {policy.system}: drill scratch"
        if not spec.dsn:
            raise ConfigError(f"policy {policy.system}: drill.scratch.type database needs drill.scratch.dsn")
        admin = dsn_endpoint(spec.dsn, what=what, password_file=spec.password_file, password_env=spec.password_env)
        checked = self._refuse_source(policy, admin, what)
        name = f"backupkit_drill_{policy.system.replace('-', '_')}_{secrets.token_hex(4)}"
        with connect(admin, what=what) as conn:
            major = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0]
            bindir = self._client_bindir(policy, major, what)
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        logger.info("%s: created scratch database %s on %s", what, name, admin.label)
        scratch = Scratch(kind="database")
        try:
            scratch.handle = PgScratch(endpoint=admin.with_db(name), bindir=bindir, workdir=workdir,
                                       globals_mode="skip", keep_owners=False, create_database=False)
            scratch.info = {"engine": "postgres", "server": f"{admin.host}:{admin.port}", "server_major": major,
                            "database": name, "refusal_checks": checked,
                            "not_production": "uniquely named database created for this drill on the scratch server"}
            yield scratch
        finally:
            scratch.teardown_proof = self._drop_database(admin, name, what)

    @staticmethod
    def _drop_database(admin: Endpoint, name: str, what: str) -> dict[str, Any]:
        proof: dict[str, Any] = {"server": f"{admin.host}:{admin.port}", "database": name}
        try:
            with connect(admin, what=what) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                exists = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0]
            proof["database_exists"] = bool(exists)
        except (BackupkitError, psycopg.Error) as e:
            proof["database_exists"] = None
            proof["error"] = " ".join(str(e).split())
        logger.info("%s: scratch database teardown: %s", what, proof)
        return proof

    def _client_bindir(self, policy, major: int, what: str) -> Path:
        try:
            return find_tool("pg_restore", major, bin_dir=(policy.source.options or {}).get("bin_dir"),
                             allow_newer=True).parent
        except ConfigError as e:
            raise ConfigError(f"{what}: {e}") from None

    # ---- restore target (backupkit restore --to) ---------------------------------------------

    @contextlib.contextmanager
    def restore_target(self, *, policy, dsn: str) -> Iterator[Scratch]:
        """Given the operator's ``--to`` DSN, refuse the source, check the database is reachable
        and yield it as a Scratch of kind "target" (never torn down)."""
        what = f"policy {policy.system}: restore target"
        target = dsn_endpoint(dsn, what=what)
        checked = self._refuse_source(policy, target, what)
        with connect(target, what=what) as conn:
            major, superuser, createrole = conn.execute(
                "SELECT current_setting('server_version_num')::int / 10000, rolsuper, rolcreaterole "
                "FROM pg_roles WHERE rolname = current_user").fetchone()
        bindir = self._client_bindir(policy, major, what)
        workdir = Path(tempfile.mkdtemp(prefix="backupkit-restore-"))
        scratch = Scratch(kind="target", info={"engine": "postgres", "target": target.label, "server_major": major,
                                               "refusal_checks": checked, "owners_kept": bool(superuser)})
        scratch.handle = PgScratch(endpoint=target, bindir=bindir, workdir=workdir,
                                   globals_mode="missing" if (superuser or createrole) else "skip",
                                   keep_owners=bool(superuser), create_database=False, subscriptions=True)
        try:
            yield scratch
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(workdir)

    def is_empty(self, *, scratch: Scratch) -> bool:
        """True when the destination has no tables, views or sequences in user schemas."""
        with self._connect(scratch) as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r','p','v','m','S','f') "
                "AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname !~ '^pg_' "
                "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
                "AND d.objid = c.oid AND d.deptype = 'e')").fetchone()
        return n == 0

    # ---- restore ------------------------------------------------------------------------------

    def restore(self, *, policy, scratch: Scratch, source: RestoreSource) -> None:
        """Given a provisioned scratch and a backup, replay the globals as the scratch kind allows
        and pg_restore the data in parallel; raise JobFailed with pg_restore's stderr on failure."""
        h: PgScratch = scratch.handle
        what = f"policy {policy.system}: restore into {scratch.kind} {h.endpoint.label}"
        names = source.stream_names()
        h.workdir.mkdir(parents=True, exist_ok=True)
        archive = h.workdir / f"{policy.system}-{secrets.token_hex(4)}.pgdump"
        try:
            source.to_file("data", archive)  # pg_restore -j needs to seek
            h.wait_ready()
            with client_env(h.endpoint, h.workdir) as env:
                header = self._archive_header(h, archive, env, what)
                if h.create_database:
                    self._create_database(h, header.get("encoding"), what)
                if "globals" in names and h.globals_mode != "skip":
                    buf = io.BytesIO()
                    source.stream_to("globals", buf)
                    self._apply_globals(h, buf.getvalue().decode("utf-8"), env, what)
                self._pg_restore(policy, h, archive, env, what, replace_existing=scratch.replace_existing)
        finally:
            with contextlib.suppress(FileNotFoundError):
                archive.unlink()

    def _archive_header(self, h: PgScratch, archive: Path, env: dict, what: str) -> dict[str, str]:
        proc = subprocess.run([str(h.bindir / "pg_restore"), "--list", str(archive)], capture_output=True,
                              stdin=subprocess.DEVNULL, env=env, check=False)
        if proc.returncode != 0:
            raise JobFailed(f"{what}: pg_restore cannot read the archive (exit {proc.returncode}): {_tail(proc.stderr)}")
        out = proc.stdout.decode("utf-8", "replace")
        header = {}
        for key, pattern in (("encoding", r"^;\s+Encoding: (\S+)"), ("dumped_from", r"^;\s+Dumped from database version: (.+)$")):
            m = re.search(pattern, out, re.M)
            if m:
                header[key] = m.group(1).strip()
        return header

    @staticmethod
    def _create_database(h: PgScratch, encoding: str | None, what: str) -> None:
        admin = h.endpoint.with_db("postgres")
        with connect(admin, what=what) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (h.endpoint.dbname,)).fetchone():
                return
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(h.endpoint.dbname))
            if encoding:
                stmt = stmt + sql.SQL(" ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C'").format(sql.Literal(encoding))
            conn.execute(stmt)

    def _apply_globals(self, h: PgScratch, text: str, env: dict, what: str) -> None:
        with connect(h.endpoint, what=what) as conn:
            existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        replay, skipped = filter_globals(text, existing)
        proc = subprocess.run(
            [str(h.bindir / "psql"), "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=0", "--dbname",
             h.endpoint.conninfo(), "--file", "-"],
            input=replay.encode("utf-8"), capture_output=True, env=env, check=False)
        fatal, tolerated = psql_errors(proc.stderr.decode("utf-8", "replace"))
        logger.info("%s: globals replayed (%d statements skipped, %d tolerated errors)", what, len(skipped), len(tolerated))
        if fatal or proc.returncode not in (0, 3):
            raise JobFailed(f"{what}: replaying roles failed: {'; '.join(fatal)[:STDERR_TAIL] or _tail(proc.stderr)}")

    def _pg_restore(self, policy, h: PgScratch, archive: Path, env: dict, what: str,
                    replace_existing: bool = False) -> None:
        jobs = int((policy.source.options or {}).get("restore_jobs") or os.cpu_count() or 1)
        argv = [str(h.bindir / "pg_restore"), f"--jobs={jobs}", "--no-tablespaces", "--dbname", h.endpoint.conninfo()]
        if not h.keep_owners:
            argv += ["--no-owner", "--no-privileges"]
        if not h.subscriptions:
            argv += ["--no-subscriptions"]
        if replace_existing:  # restore --force over a non-empty database: drop what the archive recreates
            argv += ["--clean", "--if-exists"]
        argv.append(str(archive))
        t0 = time.monotonic()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              env=env, check=False)
        if proc.returncode != 0:
            raise JobFailed(f"{what}: pg_restore failed (exit {proc.returncode}): {_tail(proc.stderr)}")
        logger.info("%s: pg_restore -j%d finished in %.1fs", what, jobs, time.monotonic() - t0)

    # ---- checks on the restored copy -------------------------------------------------------------

    def _connect(self, scratch: Scratch) -> psycopg.Connection:
        h: PgScratch = scratch.handle
        h.wait_ready()
        return connect(h.endpoint, what=f"{scratch.kind} scratch")

    def integrity_check(self, *, scratch: Scratch) -> list[CheckResult]:
        """Given a restored scratch, run amcheck's bt_index_check on every valid btree index of the
        user schemas; "skipped" (with the reason) when amcheck is not available."""
        with self._connect(scratch) as conn:
            try:
                if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone():
                    return [CheckResult("amcheck", "skipped", "the amcheck extension is not installed on the scratch server")]
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            except psycopg.Error as e:
                return [CheckResult("amcheck", "skipped", f"cannot create extension amcheck: {' '.join(str(e).split())}")]
            indexes = conn.execute(
                "SELECT i.indexrelid::regclass::text, i.indexrelid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' "
                "AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname !~ '^pg_' "
                "ORDER BY 1").fetchall()
            failures = []
            t0 = time.monotonic()
            for name, oid in indexes:
                try:
                    conn.execute("SELECT bt_index_check(%s::oid::regclass)", (oid,))
                except psycopg.Error as e:
                    failures.append(f"{name}: {' '.join(str(e).split())}")
        data = {"indexes": len(indexes), "failed": len(failures), "seconds": round(time.monotonic() - t0, 3)}
        if failures:
            return [CheckResult("amcheck", "failed", "; ".join(failures)[:2000], data=data)]
        return [CheckResult("amcheck", "passed", f"bt_index_check passed on {len(indexes)} btree indexes", data=data)]

    def fingerprints(self, *, scratch: Scratch, mode: str, like: dict | None = None) -> dict[str, dict[str, Any]]:
        """Given a restored scratch, return its fingerprints, computed exactly as at dump time."""
        # The restored copy is quiescent: tables are fingerprinted in parallel, one connection per core.
        return parallel_table_fingerprints(lambda: self._connect(scratch), mode, workers=os.cpu_count() or 1, like=like)

    def query_scalar(self, *, scratch: Scratch, sql: str) -> Any:
        """Given a policy assertion's SQL, run it read-only with the pinned settings and return the
        first column of the first row (None when there is no row). SQL errors raise JobFailed."""
        with self._connect(scratch) as conn:
            conn.execute("BEGIN READ ONLY")
            try:
                cur = conn.execute(sql)
                row = cur.fetchone() if cur.description else None
            except psycopg.Error as e:
                raise JobFailed(f"assertion SQL failed on the scratch copy: {' '.join(str(e).split())}") from None
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
        return row[0] if row else None
