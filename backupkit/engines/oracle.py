"""The Oracle engine, ``mode: datapump``: a schema exported by DBMS_DATAPUMP at a fixed SCN, fingerprinted
with flashback queries at that SCN, and drilled by importing it into a scratch user of a scratch database.

Backup: read the SCN; OPEN('EXPORT','SCHEMA') with FLASHBACK_SCN and VERSION; poll GET_STATUS; fingerprint
every table ``AS OF SCN``; cross-check the export log's row counts with the fingerprints; stream the dump
file out with BFILENAME + DBMS_LOB.READ into the artifact pipeline; remove the server files. Drill: refuse a
scratch whose DBID is the source's; create user BKD_<hex>; upload the dump with UTL_FILE.PUT_RAW;
OPEN('IMPORT') with REMAP_SCHEMA and REMAP_TABLESPACE; scan the log; fingerprint; drop the user and files.

``mode: rman`` (a physical backup by RMAN over SSH) lives in oracle_rman.py; the verbs below hand over to
it when ``source.oracle.mode`` is rman. Everything that talks to the server goes through
``self.connect`` (``oracle_conn.open_connection``): the one seam the recording stand-in replaces.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import posixpath
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import BackupkitError, ConfigError, JobFailed
from ..failpoint import failpoint
from . import kit
from .base import CheckResult, DumpResult, DumpSink, Engine, RestoreSource, Scratch
from .oracle_conn import (
    ConnectSpec,
    ServerIdentity,
    connect,
    one_line,
    open_connection,
    ora_codes,
    scratch_spec,
    server_identity,
    source_spec,
)
from .oracle_datapump import (
    EXPORT_BLOCK,
    IMPORT_EXCLUDE,
    IMPORT_STEPS,
    REMAP_TABLESPACE,
    _OPEN_JOB,
    DataPump,
    charset_message,
    explain,
    exported_rows,
    log_errors,
)
from .oracle_fingerprint import METHOD_SHA256, SCHEMA_KEY, fingerprints, method_for
from .oracle_rman import Rman, RmanScratch
from .oracle_ssh import CountingWriter, OracleHost, directory_path

logger = logging.getLogger(__name__)

SCN_SQL = "SELECT current_scn, TO_CHAR(SYS_EXTRACT_UTC(SYSTIMESTAMP), 'YYYY-MM-DD\"T\"HH24:MI:SS.FF6') FROM v$database"
SCN_FALLBACK_BLOCK = "BEGIN :scn := DBMS_FLASHBACK.GET_SYSTEM_CHANGE_NUMBER; END;"
TIME_SQL = "SELECT TO_CHAR(SYS_EXTRACT_UTC(SYSTIMESTAMP), 'YYYY-MM-DD\"T\"HH24:MI:SS.FF6') FROM dual"
UNDO_SQL = "SELECT value FROM v$parameter WHERE name = 'undo_retention'"
SCHEMA_EXISTS_SQL = "SELECT COUNT(*) FROM all_users WHERE username = :schema"
SEGMENTS_SQL = ("SELECT tablespace_name, SUM(bytes) FROM dba_segments WHERE owner = :owner "
                "GROUP BY tablespace_name ORDER BY tablespace_name")
INVALID_SQL = "SELECT object_type, object_name FROM all_objects WHERE owner = :owner AND status = 'INVALID' ORDER BY 1, 2"
USER_EXISTS_SQL = "SELECT COUNT(*) FROM all_users WHERE username = :username"
CREATE_USER = ('CREATE USER "{user}" IDENTIFIED BY "{password}" DEFAULT TABLESPACE "{ts}" QUOTA UNLIMITED ON "{ts}" '
               "ACCOUNT LOCK")
DROP_USER = 'DROP USER "{user}" CASCADE'
CURRENT_SCHEMA = 'ALTER SESSION SET CURRENT_SCHEMA = "{user}"'
RESET_SCHEMA_BLOCK = ("BEGIN EXECUTE IMMEDIATE 'ALTER SESSION SET CURRENT_SCHEMA = ' || "
                      "DBMS_ASSERT.ENQUOTE_NAME(SYS_CONTEXT('USERENV', 'SESSION_USER'), FALSE); END;")


def _is_rman(policy) -> bool:
    return policy.source.oracle is not None and policy.source.oracle.mode == "rman"


def scratch_user(workdir: Path) -> str:
    """The drill's scratch user, ``BKD_<12 hex>`` from its work directory (kit.scratch_tag); its import job
    and files are ``BKI_<same hex>``: what ``drop_leftover_scratch`` drops after a killed drill."""
    return "BKD_" + kit.scratch_tag(workdir, 12).upper()


def export_files(system: str) -> tuple[str, str]:
    """The export's dump and log file in the source's DIRECTORY: one name per policy (``BK<hash>_EXPORT``),
    so the next backup removes what a run killed after its export finished left there (the policy lock
    rules out a live run using them)."""
    return f"{job_prefix(system)}EXPORT.dmp", f"{job_prefix(system)}EXPORT.log"


def import_job(user: str) -> str:
    """The drill's Data Pump import job (and its ``.dmp``/``.log`` files): ``BKI_`` and the user's hex."""
    return "BKI_" + user[4:]


def job_prefix(system: str) -> str:
    """Data Pump job names of one policy: ``BK<6 hex of the system>_`` (30 characters at most with the suffix)."""
    return "BK" + hashlib.sha256(system.encode()).hexdigest()[:6].upper() + "_"


def _scalar(conn, sql: str, binds: dict | None = None):
    cur = conn.cursor()
    try:
        cur.execute(sql, binds or {})
        row = cur.fetchone()
        return row[0] if row else None
    finally:
        cur.close()


def _rows(conn, sql: str, binds: dict | None = None) -> list[tuple]:
    cur = conn.cursor()
    try:
        cur.execute(sql, binds or {})
        return cur.fetchall()
    finally:
        cur.close()


def _ddl(conn, sql: str) -> None:
    cur = conn.cursor()
    try:
        cur.execute(sql)
    finally:
        cur.close()


@dataclass
class OracleScratchHandle:
    """Engine-private part of a Scratch: the admin connection and what the drill created."""

    conn: Any
    spec: ConnectSpec
    identity: ServerIdentity
    user: str  # BKD_<hex>: created by restore(), dropped at teardown
    directory: str
    tablespace: str
    poll_seconds: int
    max_job_seconds: int
    source_identity: ServerIdentity | None = None
    created: bool = False
    jobs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    log_warnings: list[str] = field(default_factory=list)


class OracleEngine(Engine):
    name = "oracle"
    connect = staticmethod(open_connection)  # the seam: tests put a recording stand-in here

    def describe_source(self, policy) -> str:
        o = policy.source.oracle
        if o is not None and o.mode == "rman" and o.ssh is not None:
            return f"oracle rman {o.ssh.user}@{o.ssh.host} sid {o.ssh.oracle_sid}"
        return f"oracle {policy.source.dsn} schema {o.schema_name if o else '?'}"

    def _open(self, spec: ConnectSpec):
        return connect(spec, self.connect)

    # ---- backup ----------------------------------------------------------------------------------

    def dump(self, *, policy, sink: DumpSink) -> DumpResult:
        """Given a policy, export its schema at one SCN into ``sink`` and fingerprint that SCN."""
        if _is_rman(policy):
            return Rman(self).dump(policy, sink)
        spec = source_spec(policy)
        opt = policy.source.oracle
        what = f"policy {policy.system}: Oracle {spec.label} schema {opt.schema_name}"
        host = OracleHost(opt.ssh, what).connect() if opt.ssh is not None else None  # host key checked first
        try:
            conn = self._open(spec)
        except BaseException:
            if host is not None:
                host.close()
            raise
        dp = DataPump(conn, directory=opt.directory, what=what)
        job = job_prefix(policy.system) + secrets.token_hex(4).upper()
        dump_file, log_file = export_files(policy.system)
        details: dict[str, Any] = {"schema": opt.schema_name, "directory": opt.directory, "warnings": []}
        started_job = False
        try:
            ident = server_identity(conn, what)
            orphans = dp.clean_orphans(job_prefix(policy.system))
            left = [f for f in (dump_file, log_file) if dp.remove(f)]  # a killed run's finished export
            if left:
                logger.warning("%s: removed %s left in %s by an interrupted run", what, " and ".join(left),
                               opt.directory)
                orphans.append({"files_removed": left})
            if orphans:
                details["orphans_cleaned"] = orphans
            if not _scalar(conn, SCHEMA_EXISTS_SQL, {"schema": opt.schema_name}):
                raise JobFailed(f"{what}: schema {opt.schema_name} does not exist or is not visible to "
                                f"{spec.user}; check source.oracle.schema and the grants in docs/oracle.md")
            segments = _rows(conn, SEGMENTS_SQL, {"owner": opt.schema_name})
            total = sum(int(b or 0) for _, b in segments)
            undo = int(_scalar(conn, UNDO_SQL) or 0)
            expected = total / (opt.export_mb_per_second * 1e6)
            details.update(dbid=ident.dbid, db_name=ident.name, charset=ident.charset, ncharset=ident.ncharset,
                           tablespaces=[t for t, _ in segments if t], segment_bytes=total,
                           undo_retention_seconds=undo)
            if undo and expected > undo:
                details["warnings"].append(
                    f"UNDO_RETENTION is {undo}s but exporting {total} bytes at {opt.export_mb_per_second} MB/s takes "
                    f"about {expected:.0f}s: the export and the AS OF SCN fingerprints risk ORA-01555; raise it")
            details["invalid_objects"] = [f"{t} {n}" for t, n in _rows(conn, INVALID_SQL, {"owner": opt.schema_name})]
            scn, at = self._scn(conn, what)
            t0 = time.monotonic()
            ctx = {"scn": scn, "undo": undo}
            binds = {"job_name": job, "version": opt.version, "dump_file": dump_file, "log_file": log_file,
                     "directory": opt.directory, "schema_expr": f"IN ('{opt.schema_name}')", "scn": scn}
            handle = dp.start(EXPORT_BLOCK, binds, job_name=job, ctx=ctx)
            started_job = True
            failpoint("oracle-export-running")  # tests: backupkit dies while the export runs server-side
            outcome = dp.wait(handle, job_name=job, poll_seconds=opt.poll_seconds, max_seconds=opt.max_job_seconds,
                              ctx=ctx)
            method = method_for(ident.major)
            fps = fingerprints(conn, opt.schema_name, mode=policy.drill.fingerprint, method=method, scn=scn,
                               what=what, undo_retention=undo)
            log_text = dp.read_text(log_file)
            details["datapump"] = self._check_export_log(log_text, opt.schema_name, fps, what)
            details["datapump"].update(job=job, version=opt.version, seconds=round(outcome.seconds, 3),
                                       polls=outcome.polls)
            length = dp.file_length(dump_file)
            if length < 0:
                raise JobFailed(f"{what}: Data Pump reported COMPLETED but {dump_file} is not in DIRECTORY "
                                f"{opt.directory}")
            if host is not None:
                self._read_over_sftp(conn, host, opt.directory, dump_file, length, sink, what)
                details["datapump"]["transfer"] = f"sftp {host.label}"
            else:
                with dp.reader(dump_file, length) as r:
                    sink.write_stream("data", r)
            details["datapump"]["dump_bytes"] = length
            window = time.monotonic() - t0
            details["flashback_window_seconds"] = round(window, 3)
            if undo and window > undo:
                details["warnings"].append(f"the backup read AS OF SCN {scn} for {window:.0f}s, longer than "
                                           f"UNDO_RETENTION ({undo}s): the next one risks ORA-01555; raise it")
            details["fingerprint_method"] = method if policy.drill.fingerprint == "full" else None
        finally:
            try:
                if started_job and dp.job_state(job) is not None:
                    dp.cleanup(job)
                details["server_files_removed"] = [f for f in (dump_file, log_file) if dp.remove(f)]
            except Exception as e:
                logger.warning("%s: could not remove %s/%s from DIRECTORY %s: %s", what, dump_file, log_file,
                               opt.directory, one_line(e))
            with contextlib.suppress(Exception):
                conn.close()
            if host is not None:
                host.close()
        for w in details["warnings"]:
            logger.warning("%s: %s", what, w)
        return DumpResult(
            server_version=f"Oracle {ident.version}",
            consistency={"kind": "oracle", "scn": scn, "time": at, "dbid": ident.dbid, "schema": opt.schema_name},
            fingerprints=fps, details=details)

    @staticmethod
    def _read_over_sftp(conn, host: OracleHost, directory: str, dump_file: str, length: int, sink, what: str) -> None:
        """Stream the dump file from the DIRECTORY's path on the database host (SFTP) into the sink."""
        remote = posixpath.join(directory_path(conn, directory, what), dump_file)
        size = host.size(remote)
        if size != length:
            raise JobFailed(f"{what}: {remote} on {host.label} has {size} bytes but UTL_FILE.FGETATTR says {length}; "
                            f"is ssh.host the database host of DIRECTORY {directory}?")
        with contextlib.closing(host.open_read(remote)) as r:
            info = sink.write_stream("data", r)
        if info.content_bytes != length:
            raise JobFailed(f"{what}: read {info.content_bytes} bytes of {remote} over SFTP, expected {length}")

    @staticmethod
    def _scn(conn, what: str) -> tuple[int, str]:
        """The SCN (v$database.current_scn, else DBMS_FLASHBACK) and the UTC time it was read."""
        cur = conn.cursor()
        try:
            try:
                scn, at = cur.execute(SCN_SQL).fetchone()
            except Exception as e:
                if "ORA-00942" not in ora_codes(e):
                    raise JobFailed(f"{what}: cannot read the SCN: {one_line(e)}") from None
                v = cur.var(int)
                cur.execute(SCN_FALLBACK_BLOCK, {"scn": v})
                scn = v.getvalue()
                at = cur.execute(TIME_SQL).fetchone()[0]
        finally:
            cur.close()
        return int(scn), f"{at}+00:00"

    @staticmethod
    def _check_export_log(text: str, schema: str, fps: dict, what: str) -> dict[str, Any]:
        """Compare the export log's per-table rows with the fingerprints (the same SCN must give the same)."""
        fatal, tolerated = log_errors(text)
        if fatal:
            raise JobFailed(f"{what}: the export log has errors: {'; '.join(fatal[:8])}")
        rows = exported_rows(text, schema)
        out: dict[str, Any] = {"log_errors_tolerated": tolerated}
        if not rows:
            out["log_rows"] = "not parsed (no '. . exported' lines; a localized log?)"
            return out
        tables = {k: v["rows"] for k, v in fps.items() if v.get("kind") == "table"}
        differ = [f"{t}: log {rows.get(t)} fingerprint {n}" for t, n in tables.items() if rows.get(t) != n]
        if differ:
            raise JobFailed(f"{what}: the dump and the AS OF SCN fingerprints disagree ({'; '.join(differ[:10])}); "
                            "the export did not run at the recorded SCN")
        out["log_rows"] = "equal to the fingerprints"
        return out

    # ---- drill -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def scratch(self, *, policy, workdir: Path) -> Iterator[Scratch]:
        """Connect to the scratch database; refuse it (before creating anything) when its DBID is the source's.
        The scratch user is created by restore() and dropped here on exit, with its files and jobs."""
        if _is_rman(policy):
            with Rman(self).scratch(policy, workdir) as s:
                yield s
            return
        spec = scratch_spec(policy)
        opt = policy.drill.scratch.oracle
        conn = self._open(spec)
        try:
            ident = server_identity(conn, spec.what)
            src_ident = self._source_identity(policy)
            if src_ident is not None and src_ident.dbid == ident.dbid:
                raise ConfigError(self._refusal(policy, spec, ident))
            user = scratch_user(workdir)
            if (policy.source.oracle and user == policy.source.oracle.schema_name) or _scalar(
                    conn, USER_EXISTS_SQL, {"username": user}):
                raise JobFailed(f"{spec.what}: user {user} already exists on the scratch database; refusing to touch it")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        h = self._scratch_handle(conn, spec, ident, user, opt, source_identity=src_ident)
        info = {"dsn": spec.dsn, "account": spec.user, "dbid": ident.dbid, "db_name": ident.name,
                "server_version": f"Oracle {ident.version}", "charset": ident.charset, "user": user,
                "directory": opt.directory, "tablespace": opt.tablespace, "is_source": False,
                "source_dbid": src_ident.dbid if src_ident else None,
                "source_checked": "live" if src_ident else "manifest (source unreachable)"}
        s = Scratch(kind="database", info=info, handle=h)
        try:
            yield s
        finally:
            s.teardown_proof = self._teardown(h)

    @staticmethod
    def _refusal(policy, spec: ConnectSpec, ident: ServerIdentity) -> str:
        return (f"policy {policy.system}: the scratch {spec.dsn} is the source database (DBID {ident.dbid}, "
                f"{ident.name}); a drill never imports into production: point drill.scratch.dsn at a separate "
                "scratch database")

    def _source_identity(self, policy) -> ServerIdentity | None:
        try:
            conn = self._open(source_spec(policy))
        except BackupkitError as e:  # unreachable, or no source credentials on this drill host
            logger.warning("policy %s: source not reachable for the scratch identity check (%s); the backup's "
                           "recorded DBID is checked instead", policy.system, e)
            return None
        try:
            return server_identity(conn, f"policy {policy.system}: source")
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def drop_leftover_scratch(self, *, policy, workdir: Path) -> dict[str, Any] | None:
        """The scratch user (and its import job and files) a killed Data Pump drill left on the scratch
        database; in mode rman, its stage directory, catalog entries and duplicated copy on the database host."""
        if _is_rman(policy):
            return Rman(self).drop_leftover(policy, workdir)
        spec = scratch_spec(policy)
        opt = policy.drill.scratch.oracle
        conn = self._open(spec)
        user = scratch_user(workdir)
        job = import_job(user)
        try:
            ident = server_identity(conn, spec.what)
            exists = bool(_scalar(conn, USER_EXISTS_SQL, {"username": user}))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        return self._teardown(self._scratch_handle(conn, spec, ident, user, opt, created=exists, jobs=[job],
                                                   files=[f"{job}.dmp", f"{job}.log"]))

    @staticmethod
    def _scratch_handle(conn, spec: ConnectSpec, ident: ServerIdentity, user: str, opt, **state) -> OracleScratchHandle:
        """The handle of a Data Pump scratch (``opt``: drill.scratch.oracle); ``state``: what exists already."""
        return OracleScratchHandle(conn=conn, spec=spec, identity=ident, user=user, directory=opt.directory,
                                   tablespace=opt.tablespace, poll_seconds=opt.poll_seconds,
                                   max_job_seconds=opt.max_job_seconds, **state)

    def _teardown(self, h: OracleScratchHandle) -> dict[str, Any]:
        dp = DataPump(h.conn, directory=h.directory, what=h.spec.what)
        errors = []
        for job in h.jobs:
            try:
                dp.cleanup(job)
            except Exception as e:
                errors.append(f"job {job}: {one_line(e)}")
        if h.created:
            try:
                _ddl(h.conn, DROP_USER.format(user=h.user))
            except Exception as e:
                errors.append(f"DROP USER {h.user}: {one_line(e)}")
        for f in h.files:
            try:
                dp.remove(f)
            except Exception as e:
                errors.append(f"remove {f}: {one_line(e)}")
        proof: dict[str, Any] = {"user": h.user, "user_created": h.created, "dbid": h.identity.dbid}
        try:
            proof["user_exists_after_teardown"] = bool(_scalar(h.conn, USER_EXISTS_SQL, {"username": h.user}))
            proof["jobs_after_teardown"] = [j for j in h.jobs if dp.job_state(j) is not None]
            proof["files_after_teardown"] = [f for f in h.files if dp.file_length(f) >= 0]
            # the same facts in kit's form (``*_exists``), so kit.proof_clean and the evidence report judge them
            proof.update(user_exists=proof["user_exists_after_teardown"],
                         job_exists=bool(proof["jobs_after_teardown"]), file_exists=bool(proof["files_after_teardown"]))
        except Exception as e:
            errors.append(f"teardown proof: {one_line(e)}")
            proof["user_exists_after_teardown"] = None
            proof.update(user_exists=None, job_exists=None, file_exists=None)  # unknown, never "gone"
        if errors:
            proof["errors"] = errors
            logger.error("%s: teardown incomplete: %s", h.spec.what, "; ".join(errors))
        with contextlib.suppress(Exception):
            h.conn.close()
        return proof

    def restore(self, *, policy, scratch: Scratch, source: RestoreSource) -> None:
        """Create the scratch user, upload the dump, import it with REMAP_SCHEMA/REMAP_TABLESPACE and scan the log."""
        if isinstance(scratch.handle, RmanScratch):
            return Rman(self).restore(policy, scratch, source)
        h: OracleScratchHandle = scratch.handle
        manifest = scratch.manifest or {}
        cons, details = manifest.get("consistency") or {}, manifest.get("details") or {}
        what = f"{h.spec.what} {h.spec.dsn}"
        if cons.get("dbid") is not None and int(cons["dbid"]) == h.identity.dbid:
            raise ConfigError(self._refusal(policy, h.spec, h.identity))
        if details.get("charset") and details["charset"] != h.identity.charset:
            raise JobFailed(f"{what}: {charset_message(details['charset'], h.identity.charset)}")
        source_schema = details.get("schema") or cons.get("schema")
        if not source_schema:
            raise JobFailed(f"{what}: the manifest records no source schema; it is not an Oracle Data Pump backup")
        password = secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")  # never used: ACCOUNT LOCK
        _ddl(h.conn, CREATE_USER.format(user=h.user, password=password, ts=h.tablespace))
        h.created = True
        dp = DataPump(h.conn, directory=h.directory, what=what)
        job = import_job(h.user)
        dump_file, log_file = f"{job}.dmp", f"{job}.log"
        h.files += [dump_file, log_file]
        host = None
        if opt_ssh := policy.drill.scratch.oracle.ssh:
            host = OracleHost(opt_ssh, what).connect()
            remote = posixpath.join(directory_path(h.conn, h.directory, what), dump_file)
            writer = CountingWriter(host.open_write(remote))
        else:
            writer = dp.writer(dump_file)
        try:
            source.stream_to("data", writer)
        finally:
            writer.close()
            if host is not None:
                host.close()
        length = dp.file_length(dump_file)
        if length != writer.written:
            raise JobFailed(f"{what}: uploaded {writer.written} bytes into {dump_file} but the server file has {length}")
        scratch.info["upload"] = {"bytes": writer.written, "chunks": writer.calls,
                                  "transfer": f"sftp {host.label}" if host is not None else "UTL_FILE.PUT_RAW"}
        tablespaces = list(details.get("tablespaces") or [])
        steps = IMPORT_STEPS + "".join(REMAP_TABLESPACE.format(n=i + 1) for i in range(len(tablespaces)))
        sql = _OPEN_JOB.format(operation="IMPORT", version="", steps=steps)
        binds = {"job_name": job, "dump_file": dump_file, "log_file": log_file, "directory": h.directory,
                 "schema_expr": f"IN ('{source_schema}')", "exclude_expr": IMPORT_EXCLUDE,
                 "source_schema": source_schema, "scratch_schema": h.user, "scratch_tablespace": h.tablespace,
                 **{f"tablespace_{i + 1}": t for i, t in enumerate(tablespaces)}}
        ctx = {"charset": charset_message(details.get("charset"), h.identity.charset)}
        h.jobs.append(job)
        try:
            handle = dp.start(sql, binds, job_name=job, ctx=ctx)
            outcome = dp.wait(handle, job_name=job, poll_seconds=h.poll_seconds, max_seconds=h.max_job_seconds, ctx=ctx)
        except JobFailed as e:
            raise JobFailed(self._with_log(dp, log_file, str(e), ctx)) from None
        text = dp.read_text(log_file)
        fatal, tolerated = log_errors(text)
        h.log_warnings = tolerated
        scratch.info["import"] = {"job": job, "seconds": round(outcome.seconds, 3), "log_errors": len(fatal),
                                  "log_warnings": tolerated[:20]}
        if fatal:
            why = explain([c for ln in fatal for c in ora_codes(Exception(ln))], **ctx)
            raise JobFailed(f"{what}: the import log has {len(fatal)} ORA- error(s): "
                            f"{why + ' | ' if why else ''}{'; '.join(fatal[:8])}")
        for f in (dump_file, log_file):  # free the space now; teardown checks again
            dp.remove(f)

    @staticmethod
    def _with_log(dp: DataPump, log_file: str, message: str, ctx: dict) -> str:
        try:
            fatal, _ = log_errors(dp.read_text(log_file))
        except Exception:
            return message
        if fatal and "ORA-12899" in " ".join(fatal) and "ORA-12899" not in message:
            message += f" | {explain(['ORA-12899'], **ctx)}"
        return message + (f" | log: {'; '.join(fatal[:5])}" if fatal else "")

    def integrity_check(self, *, scratch: Scratch) -> list[CheckResult]:
        """Objects invalid on the restored copy that were valid in the source fail the check."""
        if isinstance(scratch.handle, RmanScratch):
            return Rman(self).integrity_check(scratch)
        h: OracleScratchHandle = scratch.handle
        recorded = set(((scratch.manifest or {}).get("details") or {}).get("invalid_objects") or [])
        now = {f"{t} {n}" for t, n in _rows(h.conn, INVALID_SQL, {"owner": h.user})}
        new = sorted(now - recorded)
        data = {"invalid": len(now), "invalid_in_source": len(recorded)}
        if new:
            return [CheckResult("oracle invalid objects", "failed",
                                f"invalid after import but valid in the source: {'; '.join(new[:20])}", data=data)]
        return [CheckResult("oracle invalid objects", "passed",
                            f"{len(now)} invalid objects, all invalid in the source too" if now else
                            "no invalid objects", data=data)]

    def fingerprints(self, *, scratch: Scratch, mode: str, like: dict | None = None) -> dict[str, dict[str, Any]]:
        """The restored schema's fingerprints, with the method the manifest recorded."""
        if isinstance(scratch.handle, RmanScratch):
            return Rman(self).fingerprints(scratch, mode, like)
        h: OracleScratchHandle = scratch.handle
        methods = {v.get("method") for v in (like or {}).values() if v.get("kind") == "table" and v.get("method")}
        method = methods.pop() if len(methods) == 1 else method_for(h.identity.major)
        if method == METHOD_SHA256 and h.identity.major < 12:
            raise JobFailed(f"{h.spec.what}: the backup's fingerprints use STANDARD_HASH (SHA-256, Oracle 12c and "
                            f"later) but the scratch runs Oracle {h.identity.version}; drill into 12c or later")
        return fingerprints(h.conn, h.user, mode=mode, method=method, scn=None, what=h.spec.what)

    def query_scalar(self, *, scratch: Scratch, sql: str) -> Any:
        """Run an assertion read-only with the scratch user as the current schema (write unqualified names)."""
        if isinstance(scratch.handle, RmanScratch):
            return Rman(self).query_scalar(scratch, sql)
        h: OracleScratchHandle = scratch.handle
        cur = h.conn.cursor()
        try:
            cur.execute(CURRENT_SCHEMA.format(user=h.user))
            cur.execute("SET TRANSACTION READ ONLY")
            try:
                cur.execute(sql)
                row = cur.fetchone() if cur.description else None
            except Exception as e:
                raise JobFailed(f"assertion SQL failed on the scratch copy: {one_line(e)}") from None
            finally:
                with contextlib.suppress(Exception):
                    h.conn.rollback()
                cur.execute(RESET_SCHEMA_BLOCK)  # the admin session goes back to its own schema
        finally:
            cur.close()
        return row[0] if row else None


__all__ = ["OracleEngine", "SCHEMA_KEY"]
