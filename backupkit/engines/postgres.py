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
import io
import logging
import os
import re
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any, Iterator

import psycopg
from psycopg import sql

from ..errors import BackupkitError, ConfigError, JobFailed
from ..keyed import mac
from .base import CheckResult, DatabaseScratchMixin, DumpResult, DumpSink, Engine, RestoreSource, Scratch, run_beside
from .kit import Child, drain_child, stream_child
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
from .pg_archive import TableData, TocTap, sequence_values, set_data_offsets
from .pg_fingerprint import (
    FORMAT as FINGERPRINT_FORMAT,
    KEY_FORMAT,
    Catalog,
    copy_text_hash,
    count_rows,
    dump_env,
    dump_text_entry,
    dump_text_keys,
    ordinary_tables,
    relation_fingerprint,
    table_names,
    fingerprints as relation_fingerprints,
    is_legacy,
    legacy_fingerprints,
    parallel_fingerprints,
    set_fingerprint_session,
)
from .pg_globals import filter_globals, psql_errors
from .pg_schema import (
    DATABASE_KEY,
    SCHEMA_KEY,
    create_database_sql,
    database_properties,
    properties_statements,
    schema_fingerprint,
)

logger = logging.getLogger(__name__)

STDERR_TAIL = 1500


@dataclass
class PgScratch:
    """Engine-private part of a Scratch: where and how to restore."""

    endpoint: Endpoint  # the database restored into
    bindir: Path  # pg_restore and psql live here
    workdir: Path  # private space for the seekable archive and PGPASSFILE
    globals_mode: str  # "missing": create roles the destination lacks; "skip"
    keep_owners: bool
    create_database: bool  # ephemeral and database scratch: create it with the recorded encoding and locale
    subscriptions: bool = False  # never restore subscriptions into a scratch
    admin: Endpoint | None = None  # where CREATE DATABASE runs (None: the endpoint's server, database postgres)
    amcheck: bool = True  # policy drill.amcheck; false waives the index check (recorded as a deviation)
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


def source_fingerprints(conn: psycopg.Connection, mode: str) -> dict[str, dict[str, Any]]:
    """Every entry of the source, in the dump's snapshot (``conn`` is inside it); the hashes of
    dump-text tables are left None, for ``fill_dump_text`` to take from the archive."""
    out = relation_fingerprints(conn, mode, side="source", dump_text=True)
    out[SCHEMA_KEY] = schema_fingerprint(conn)
    out[DATABASE_KEY] = database_properties(conn)
    return dict(sorted(out.items()))


def fill_dump_text(fps: dict[str, dict[str, Any]], tables: dict[tuple[str, str], TableData],
                   names: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Given fingerprints with dump-text entries, the table hashes of an archive and {key: (schema,
    table)}, set each entry's hash; return {key: why not} for the entries left without one."""
    missing = {}
    for key in dump_text_keys(fps):
        data = tables.get(names.get(key, ("", "")))
        if data is None:
            missing[key] = "no data block in the archive"
        elif not data.one_row_chunks:
            missing[key] = "pg_dump did not write one row per chunk"
        else:
            fps[key]["hash"] = data.sha256
    return missing


def pg_dump_pattern(schema: str, table: str) -> str:
    """A pg_dump --table pattern that matches exactly this table: both names double-quoted (inside
    quotes pattern characters are literal; a double quote is doubled)."""
    return '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'


def split_tables(sizes: list[tuple[tuple[str, str], int]]) -> list[tuple[str, str]]:
    """Given ((schema, table), bytes) pairs, return the tables the first of two pg_dump processes takes
    (largest first, each to the lighter process); the second takes every other table. Empty when one
    table holds the lot (a second process would have nothing to do)."""
    loads, first = [0, 0], []
    for table, size in sorted(sizes, key=lambda x: (-x[1], x[0])):
        i = 0 if loads[0] < loads[1] else 1
        loads[i] += size
        if i == 0:
            first.append(table)
    return first if loads[1] > 0 else []


def expected_database(scratch: Scratch) -> dict[str, Any] | None:
    """The ``database`` entry of the manifest being restored, when the caller passed the manifest."""
    return (((scratch.manifest or {}).get("fingerprints") or {}).get(DATABASE_KEY)) or None



class PostgresEngine(DatabaseScratchMixin, Engine):
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
            "fingerprint_format": FINGERPRINT_FORMAT,
            "fingerprint_keys": KEY_FORMAT,
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
        return stream_child(Child(argv, what=what, tool="pg_dumpall --globals-only", env=env).start(), sink, "globals")

    def _dump_data(self, conn, pg_dump: Path, src: Endpoint, env: dict, sink: DumpSink, mode: str, what: str,
                   in_recovery: bool):
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # read after the snapshot: the insert position is past every commit record the snapshot sees
        lsn_fn = "pg_last_wal_replay_lsn()" if in_recovery else "pg_current_wal_insert_lsn()"
        snapshot, lsn, xmin, at, txid_snapshot = conn.execute(
            f"SELECT pg_export_snapshot(), {lsn_fn}::text, txid_snapshot_xmin(txid_current_snapshot()), now(), "
            "txid_current_snapshot()::text").fetchone()
        consistency = {"kind": "postgres", "lsn": lsn, "snapshot": snapshot, "xmin": int(xmin),
                       "txid_snapshot": txid_snapshot,  # xmin:xmax:running, to place it in WAL (pg_walcut.py)
                       "time": at.astimezone(timezone.utc).isoformat(), "standby": bool(in_recovery),
                       "exactness": "exact"}  # pg_dump --snapshot: the fingerprints read the same exported snapshot

        argv = [str(pg_dump), "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--dbname", src.conninfo()]
        fp_result: dict[str, Any] = {}

        def fingerprint() -> None:
            t0 = time.monotonic()
            try:
                fp_result["value"] = source_fingerprints(conn, mode)
            except BaseException as e:  # reported by the main thread
                fp_result["error"] = e
            fp_result["seconds"] = round(time.monotonic() - t0, 3)

        child = Child(argv, what=what, tool="pg_dump", env=dump_env(env)).start()
        worker = threading.Thread(target=fingerprint, name="pg-fingerprint", daemon=True)
        worker.start()
        t0 = time.monotonic()
        tap = TocTap(child.stdout, hash_data=mode == "full", find_blocks=True)

        def stop_fingerprinting() -> None:  # pg_dump or the sink failed: end the snapshot's session
            with contextlib.suppress(Exception):
                conn.cancel()
            worker.join(timeout=30)

        try:
            info = stream_child(child, sink, "data", reader=tap, on_error=stop_fingerprinting)
        except JobFailed:
            fp_error = fp_result.get("error")
            if isinstance(fp_error, JobFailed):  # the root cause: it ended the snapshot pg_dump needed
                raise JobFailed(f"{what}: {fp_error}") from None
            raise
        stream_seconds = time.monotonic() - t0
        worker.join()
        if "error" in fp_result:
            e = fp_result["error"]
            if isinstance(e, JobFailed):
                raise JobFailed(f"{what}: {e}") from None
            raise JobFailed(f"{what}: fingerprinting in the dump's snapshot failed: {' '.join(str(e).split())}") from None
        sequences_from = self._sequences_from_archive(conn, tap, fp_result["value"])
        dump_text = self._dump_text_from_archive(conn, tap, fp_result["value"], mode) if mode == "full" else None
        conn.execute("COMMIT")
        data_info = {"stream_seconds": round(stream_seconds, 3), "fingerprint_seconds": fp_result["seconds"],
                     "tables": len(fp_result["value"]), "content_bytes": info.content_bytes,
                     "sequences_from": sequences_from, "archive_version": (tap.header or {}).get("version"),
                     "pg_dump_version": (tap.header or {}).get("pg_dump")}
        if dump_text is not None:
            data_info["dump_text"] = dump_text
        offsets, why = tap.block_offsets()
        if why is None:
            data_info["data_offsets"] = sorted([dump_id, at] for dump_id, at in offsets.items())
        else:
            logger.info("%s: data block offsets not recorded (%s); a restore reads the archive in order", what, why)
        logger.info("%s: pg_dump streamed %d bytes in %.1fs; %d tables fingerprinted (%s) in %.1fs", what,
                    info.content_bytes, stream_seconds, len(fp_result["value"]), mode, fp_result["seconds"])
        return consistency, fp_result["value"], data_info

    @staticmethod
    def _dump_text_from_archive(conn, tap: TocTap, fps: dict, mode: str) -> dict[str, Any]:
        """Set the hash of every dump-text entry from the archive's data blocks; an entry the archive
        cannot give (no block, another framing, a walk error) is fingerprinted in SQL instead, still in
        the dump's snapshot (``conn`` is inside it). Returns what happened, for the manifest."""
        keys = dump_text_keys(fps)
        tables, error = tap.table_hashes()
        if error:
            missing = {k: error for k in keys}
        else:
            missing = fill_dump_text(fps, tables, table_names(conn, keys) if keys else {})
        if missing:
            logger.warning("dump-text hashes not taken from the archive, fingerprinted in SQL instead: %s",
                           "; ".join(f"{k}: {why}" for k, why in sorted(missing.items())))
            cat = Catalog(conn)
            for rel in cat.relations:
                if rel["key"] in missing:
                    fps[rel["key"]] = relation_fingerprint(conn, cat, rel, mode, side="source")
        return {"tables": len(keys) - len(missing), "sql_instead": dict(sorted(missing.items()))}

    @staticmethod
    def _sequences_from_archive(conn, tap: TocTap, fps: dict) -> str:
        """Replace the sequence values read in our session by those pg_dump wrote into the archive's
        TOC (sequences are not MVCC: under concurrent nextval() the two reads differ). Returns where
        the recorded values come from."""
        if tap.error or tap.header is None:
            reason = tap.error or "the table of contents was not complete"
            logger.warning("sequence values read in the fingerprint session, not from the archive: %s", reason)
            return f"session ({reason})"
        values = sequence_values(tap.entries)
        names = conn.execute("SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname) FROM pg_class c "
                             "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S'").fetchall()
        for schema, name, key in names:
            entry = fps.get(f"sequence {key}")
            if entry is not None and (schema, name) in values:
                entry["last_value"], entry["is_called"] = values[(schema, name)][0], values[(schema, name)][1]
        return "archive"

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
                           keep_owners=True, create_database=True, cluster=cluster, amcheck=policy.drill.amcheck)
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
        admin = self._scratch_admin(spec, what)
        checked = self._refuse_source(policy, admin, what)
        name = self._scratch_database_name(policy, workdir)
        with connect(admin, what=what) as conn:
            major, superuser = conn.execute("SELECT current_setting('server_version_num')::int / 10000, rolsuper "
                                            "FROM pg_roles WHERE rolname = current_user").fetchone()
            bindir = self._client_bindir(policy, major, what)
        scratch = Scratch(kind="database")
        try:
            # created by restore(), with the encoding, locale and settings the backup recorded
            scratch.handle = PgScratch(endpoint=admin.with_db(name), bindir=bindir, workdir=workdir,
                                       globals_mode="skip", keep_owners=False, create_database=True, admin=admin,
                                       amcheck=policy.drill.amcheck)
            scratch.info = {"engine": "postgres", "server": f"{admin.host}:{admin.port}", "server_major": major,
                            "database": name, "refusal_checks": checked, "superuser": bool(superuser),
                            "not_production": "uniquely named database created for this drill on the scratch server"}
            yield scratch
        finally:
            scratch.teardown_proof = self._drop_database(admin, name, what)

    @staticmethod
    def _scratch_admin(spec, what: str) -> Endpoint:
        return dsn_endpoint(spec.dsn, what=what, password_file=spec.password_file, password_env=spec.password_env)

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
    def restore_target(self, *, policy, dsn: str | None, replace_source: bool = False) -> Iterator[Scratch]:
        """Given the operator's ``--to`` DSN, refuse the source, check the database is reachable
        and yield it as a Scratch of kind "target" (never torn down). With ``replace_source`` the
        destination is the policy's own source database (an emergency restore into production)."""
        what = f"policy {policy.system}: restore target"
        if replace_source:
            target = source_endpoint(policy, with_password=True)
            checked = {"replace_source": "the operator chose to replace the source database"}
        else:
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
        what = f"policy {policy.system}: restore into {scratch.kind}"  # the endpoint once the scratch is up
        names = source.stream_names()
        h.workdir.mkdir(parents=True, exist_ok=True)
        archive = h.workdir / f"{policy.system}-{secrets.token_hex(4)}.pgdump"
        props = expected_database(scratch)
        early = h.create_database and props is not None

        def prepare() -> None:  # beside the decryption: the scratch comes up and its database is created
            h.wait_ready()  # an ephemeral cluster's socket and port are known from here on
            if early:
                scratch.info["database_created"] = self._create_database(h, props, f"{what} {h.endpoint.label}")

        try:
            run_beside(prepare, lambda: source.to_file("data", archive), name="pg-scratch-prepare")  # -j seeks
            scratch.info["archive_offsets"] = self._set_offsets(scratch, archive, what)
            what = f"{what} {h.endpoint.label}"
            with client_env(h.endpoint, h.workdir) as env:
                header = self._archive_header(h, archive, env, what)
                if h.create_database and not early:  # a manifest without database properties: from the archive
                    scratch.info["database_created"] = self._create_database(
                        h, {"encoding": header.get("encoding"), "collate": "C", "ctype": "C"}, what)
                if "globals" in names and h.globals_mode != "skip":
                    buf = io.BytesIO()
                    source.stream_to("globals", buf)
                    self._apply_globals(h, buf.getvalue().decode("utf-8"), env, what)
                self._pg_restore(policy, h, archive, env, what, replace_existing=scratch.replace_existing)
                if props is not None:
                    scratch.info["database_properties"] = self._apply_properties(h, props, what)
        finally:
            with contextlib.suppress(FileNotFoundError):
                archive.unlink()

    @staticmethod
    def _set_offsets(scratch: Scratch, archive: Path, what: str) -> str:
        """Write the data block offsets recorded at backup into the restore's copy of the archive, so that
        pg_restore seeks to each table's data and, in parallel, starts with the largest tables (a dump
        streamed through a pipe has none). Returns what was done, for the drill or restore record."""
        recorded = ((scratch.manifest or {}).get("details") or {}).get("data_offsets")
        if not recorded:
            return "none recorded at backup: pg_restore reads the archive in order"
        try:
            n = set_data_offsets(archive, {int(dump_id): int(at) for dump_id, at in recorded})
        except (ValueError, TypeError, OSError) as e:
            logger.warning("%s: the archive is restored without data offsets: %s", what, e)
            return f"not set ({e}): pg_restore reads the archive in order"
        return f"set for {n} data blocks from the manifest: pg_restore restores the largest tables first"

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
    def _create_database(h: PgScratch, props: dict[str, Any], what: str) -> str:
        """CREATE DATABASE with the recorded encoding, locale provider, collation, ctype and ICU locale."""
        admin = h.admin or h.endpoint.with_db("postgres")
        name = h.endpoint.dbname
        with connect(admin, what=what) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return "existed"
            stmt = create_database_sql(name, props, conn.info.server_version)
            text = stmt.as_string(conn)
            try:
                conn.execute(stmt)
            except psycopg.Error as e:
                msg = " ".join(str(e).split())
                hint = ""
                if "locale" in msg.lower() or "collat" in msg.lower():
                    loc = props.get("collate") or ""
                    hint = (f"; generate the locale on the scratch host (e.g. localedef -i {loc.split('.')[0]} "
                            f"-f UTF-8 {loc}, or add it to /etc/locale.gen and run locale-gen), then restart the "
                            "scratch server: a running server does not see locales generated after it started "
                            "(an ephemeral scratch is started fresh for each drill)")
                raise JobFailed(f"{what}: cannot create database {name} with the backup's encoding and locale "
                                f"(encoding {props.get('encoding')}, provider {props.get('locale_provider') or 'libc'}, "
                                f"collate {props.get('collate')}, ctype {props.get('ctype')}, "
                                f"ICU locale {props.get('icu_locale')}): {msg}{hint}") from None
        logger.info("%s: %s", what, text)
        return text

    @staticmethod
    def _apply_properties(h: PgScratch, props: dict[str, Any], what: str) -> str:
        """ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET and COMMENT ON DATABASE as
        recorded at backup; returns what was done, for the drill or restore record."""
        with connect(h.endpoint, what=what) as conn:
            roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
            statements, missing = properties_statements(h.endpoint.dbname, props, roles)
            for stmt in statements:
                try:
                    conn.execute(stmt)
                except psycopg.Error as e:
                    raise JobFailed(f"{what}: cannot apply the database property '{stmt.as_string(conn)}' "
                                    f"({' '.join(str(e).split())}); restore as the database owner or a superuser") from None
        done = (f"applied {len(props.get('settings', []))} database setting(s), "
                f"{len(props.get('role_settings', [])) - sum(1 for r, _ in props.get('role_settings', []) if r in missing)} "
                f"role setting(s)" + (", the comment" if props.get("comment") is not None else ""))
        if missing:
            done += f"; not applied: settings of roles {', '.join(missing)}, which do not exist here"
        logger.info("%s: %s", what, done)
        return done

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
        user schemas. Not runnable: "skipped" naming what is missing (a skipped check fails the
        drill), or "waived" when the policy says drill.amcheck: false."""
        h: PgScratch = scratch.handle
        if not h.amcheck:
            return [CheckResult("amcheck", "waived", "index checks not run: the policy sets drill.amcheck: false")]
        with self._connect(scratch) as conn:
            user, superuser = conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            created = False
            try:
                if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone():
                    return [CheckResult("amcheck", "skipped", "the amcheck extension is not installed on the scratch server; "
                                        "install the postgresql-contrib package of the scratch server's version "
                                        "(or set drill.amcheck: false in the policy)")]
                if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone():
                    if not superuser:
                        return [CheckResult("amcheck", "skipped", amcheck_grants_message(user, scratch.info.get("database")))]
                    conn.execute("CREATE EXTENSION amcheck")
                    created = True
            except psycopg.Error as e:
                return [CheckResult("amcheck", "skipped", f"cannot create extension amcheck: {' '.join(str(e).split())}")]
            try:
                indexes = conn.execute(
                    "SELECT i.indexrelid::regclass::text, i.indexrelid FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' "
                    "AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname !~ '^pg_' "
                    "ORDER BY 1").fetchall()
                failures = []
                t0 = time.monotonic()
                fn = conn.execute("SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n "
                                  "ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'").fetchone()[0]
                for name, oid in indexes:
                    try:
                        conn.execute(f"SELECT {fn}.bt_index_check(%s::oid::regclass)", (oid,))
                    except psycopg.errors.InsufficientPrivilege as e:
                        return [CheckResult("amcheck", "skipped", amcheck_grants_message(user, scratch.info.get("database"))
                                            + f" ({' '.join(str(e).split())})")]
                    except psycopg.Error as e:
                        failures.append(f"{name}: {' '.join(str(e).split())}")
            finally:
                if created:  # leave the restored copy exactly as restored: the schema fingerprint follows
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("DROP EXTENSION amcheck")
        data = {"indexes": len(indexes), "failed": len(failures), "seconds": round(time.monotonic() - t0, 3)}
        if failures:
            return [CheckResult("amcheck", "failed", "; ".join(failures)[:2000], data=data)]
        return [CheckResult("amcheck", "passed", f"bt_index_check passed on {len(indexes)} btree indexes", data=data)]

    def fingerprints(self, *, scratch: Scratch, mode: str, like: dict | None = None) -> dict[str, dict[str, Any]]:
        """Given a restored scratch, return its fingerprints, computed exactly as at dump time: in the
        format the manifest was written in (format 1 for manifests without ``kind`` entries)."""
        if self._legacy(scratch, like):
            with self._connect(scratch) as conn:
                return legacy_fingerprints(conn, mode, like)
        catalog = self._catalog_entries(scratch, like)
        return dict(sorted({**self._relation_fingerprints(scratch, mode, like), **catalog}.items()))

    def check_restored(self, *, scratch: Scratch, mode: str, like: dict | None = None, key: bytes | None = None
                       ) -> tuple[list[CheckResult], dict[str, dict[str, Any]]]:
        """amcheck and the fingerprints of a restored scratch, overlapped: the catalog inventory
        (schema, database) is taken first, because the index check may create the amcheck extension
        for its duration; then amcheck runs on its own connection beside the relation fingerprints."""
        if self._legacy(scratch, like):
            return super().check_restored(scratch=scratch, mode=mode, like=like)
        catalog = self._catalog_entries(scratch, like)
        checks, relations = self.integrity_beside(
            scratch, lambda: self._relation_fingerprints(scratch, mode, like, imply_rows=True, key=key),
            name="pg-amcheck")
        return checks, dict(sorted({**relations, **catalog}.items()))

    @staticmethod
    def _legacy(scratch: Scratch, like: dict | None) -> bool:
        details = (scratch.manifest or {}).get("details") or {}
        return (details.get("fingerprint_format") is None) if scratch.manifest is not None else is_legacy(like)

    def _relation_fingerprints(self, scratch: Scratch, mode: str, like: dict | None, *, imply_rows: bool = False,
                               key: bytes | None = None) -> dict[str, dict[str, Any]]:
        # The restored copy is quiescent: relations are fingerprinted in parallel, one connection per core;
        # dump-text tables are dumped again beside them and hashed as at backup time. Without a manifest
        # (``like`` None) the tables a backup would hash from its archive are hashed that way here too.
        # With ``imply_rows`` (the drill), a dump-text table whose hash equals the manifest's is not
        # counted: the hash covers each row in a chunk of its own, so equal hashes mean equal counts.
        # Any other is counted with count(*).
        keys = None if like is None else dump_text_keys(like)

        def counts(skip: Collection[str] = ()) -> dict[str, dict[str, Any]]:
            return parallel_fingerprints(lambda: self._connect(scratch), mode, workers=os.cpu_count() or 1,
                                         like=like, dump_text=like is None, skip=skip)
        if mode != "full" or keys == []:
            return counts()
        with self._connect(scratch) as conn:
            found = ordinary_tables(conn, keys)
        names = {k: (schema, name) for k, schema, name, _ in found}
        sizes = [((schema, name), size) for _, schema, name, size in found]
        imply_rows = imply_rows and like is not None
        skip = set(names) if imply_rows else ()  # counted below, and only where the hashes differ
        tables, out = run_beside(lambda: self._redump(scratch, sizes), lambda: counts(skip), name="pg-redump")
        if not imply_rows:  # every table was counted, and the dump-text ones await their hash
            self._fill_hashes(scratch, out, tables, names)
            return out
        mine = {k: dump_text_entry(None, None) for k in names}  # a table missing here has no entry
        self._fill_hashes(scratch, mine, tables, names)
        to_count = []
        for k, entry in mine.items():
            recorded, digest = like.get(k) or {}, entry["hash"]
            seen = digest if key is None or digest is None else mac(key, k, "hash", digest)
            if digest is not None and seen == recorded.get("hash") and isinstance(recorded.get("rows"), int):
                out[k] = dump_text_entry(recorded["rows"], digest, implied=True)
            else:
                to_count.append(k)
        if to_count:
            with self._connect(scratch) as conn:
                set_fingerprint_session(conn)
                for k in to_count:
                    out[k] = dump_text_entry(count_rows(conn, *names[k], what=f"table {k}"), mine[k]["hash"])
        return dict(sorted(out.items()))

    def _fill_hashes(self, scratch: Scratch, entries: dict[str, dict[str, Any]], tables: dict,
                     names: dict[str, tuple[str, str]]) -> None:
        """Set the hash of the dump-text entries from the second dump's table hashes, or row by row
        from COPY where its archive could not give one (``fill_dump_text``)."""
        for k, why in fill_dump_text(entries, tables, names).items():
            if k not in names:
                continue  # the table is missing: its entry says so (hash None)
            logger.warning("%s: dump-text hash computed row by row from COPY (%s)", k, why)
            with self._connect(scratch) as conn:
                entries[k]["hash"] = copy_text_hash(conn, *names[k])

    def _redump(self, scratch: Scratch, sizes: list[tuple[tuple[str, str], int]]) -> dict[tuple[str, str], TableData]:
        """Dump the restored copy's table data again (pg_dump -Fc -Z0 --data-only, output discarded) and
        return the table hashes of its data blocks, as the backup took them from its own archive. Two
        pg_dump processes share the work (the tables of ``sizes``, ((schema, table), bytes), split by
        size), so the restored copy is read on both cores."""
        h: PgScratch = scratch.handle
        first = split_tables(sizes)
        base = [str(h.bindir / "pg_dump"), "--format=custom", "--compress=0", "--data-only", "--no-blobs"]
        parts = [[*base, *(f"--table={pg_dump_pattern(*t)}" for t in first)],
                 [*base, *(f"--exclude-table={pg_dump_pattern(*t)}" for t in first)]] if first else [base]
        with client_env(h.endpoint, h.workdir) as env:
            runs = [lambda argv=argv: self._redump_part(scratch, argv, dump_env(env)) for argv in parts]
            if len(runs) == 1:
                return runs[0]()
            a, b = run_beside(runs[0], runs[1], name="pg-redump-2")
        return {**b, **a}

    @staticmethod
    def _redump_part(scratch: Scratch, argv: list[str], env: dict) -> dict[tuple[str, str], TableData]:
        h: PgScratch = scratch.handle
        what = f"{scratch.kind} scratch {h.endpoint.label}"
        child = Child([*argv, "--dbname", h.endpoint.conninfo()], what=what, tool="pg_dump (restored copy)",
                      env=env).start()
        tap = TocTap(child.stdout, hash_data=True)
        drain_child(child, pump=tap.drain)
        tables, error = tap.table_hashes()
        if error:
            raise JobFailed(f"{what}: reading pg_dump's archive of the restored copy: {error}")
        return tables

    def _catalog_entries(self, scratch: Scratch, like: dict | None) -> dict[str, dict[str, Any]]:
        """The ``schema`` and ``database`` entries of a restored scratch, with what is not comparable there."""
        h: PgScratch = scratch.handle
        with self._connect(scratch) as conn:
            set_fingerprint_session(conn)
            out = {SCHEMA_KEY: schema_fingerprint(conn), DATABASE_KEY: database_properties(conn)}
            roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        if not h.keep_owners:
            out[SCHEMA_KEY]["not_compared"] = {
                "owners and grants": f"the {scratch.kind} was restored with --no-owner --no-privileges "
                                     "(not a superuser destination, or a database scratch on a shared server)"}
        expected_db = (like or {}).get(DATABASE_KEY) or {}
        missing = sorted({r for r, _ in expected_db.get("role_settings", []) if r not in roles})
        if missing:
            out[DATABASE_KEY]["not_compared"] = {
                "role_settings": f"roles {', '.join(missing)} do not exist on this server (roles are not replayed "
                                 f"into a {scratch.kind})"}
        return out

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


def amcheck_grants_message(user: str, database: str | None) -> str:
    """What a non-superuser scratch role needs for amcheck, in one line."""
    db = database or "the scratch database"
    return (f"amcheck not run: role {user} is not a superuser, and amcheck is not a trusted extension, so only a "
            f"superuser can run CREATE EXTENSION amcheck in {db} and GRANT EXECUTE ON FUNCTION "
            f"bt_index_check(regclass), bt_index_check(regclass, boolean) TO {user}; because every drill creates a "
            f"fresh database, make the scratch role a superuser (ALTER ROLE {user} SUPERUSER) or set drill.amcheck: "
            "false in the policy to drill without index checks (recorded as a deviation)")
