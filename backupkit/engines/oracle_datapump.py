"""Data Pump driven from the client, and server-side files moved without shell access.

Owns: the anonymous PL/SQL blocks that open, start, poll, detach, stop and clean
up ``DBMS_DATAPUMP`` jobs (a stored procedure would need directly granted
privileges and runs into ORA-31631); streaming a file out of a DIRECTORY object
(``BFILENAME`` + chunked ``DBMS_LOB.READ``) and into one (``UTL_FILE.PUT_RAW``
in chunks of at most 32767 bytes); removing those files; reading a job's log
and finding its ORA- errors; and turning Data Pump's failures into messages that
say what to do. The SQL text here is the contract the recording stand-in in
tests/fixtures/oracle_fake.py checks; change it knowingly.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass, field

from ..errors import JobFailed
from .oracle_conn import one_line, ora_codes

logger = logging.getLogger(__name__)

CHUNK = 32767  # largest RAW a PL/SQL variable holds: DBMS_LOB.READ and UTL_FILE.PUT_RAW move at most this per call
LOG_LIMIT = 4 << 20  # a job log is read up to this size
FINAL_STATES = ("COMPLETED", "STOPPED")

_OPEN_JOB = """DECLARE
  h NUMBER;
BEGIN
  h := DBMS_DATAPUMP.OPEN(operation => '{operation}', job_mode => 'SCHEMA', job_name => :job_name{version});
  BEGIN
    DBMS_DATAPUMP.ADD_FILE(handle => h, filename => :dump_file, directory => :directory, filetype => DBMS_DATAPUMP.KU$_FILE_TYPE_DUMP_FILE);
    DBMS_DATAPUMP.ADD_FILE(handle => h, filename => :log_file, directory => :directory, filetype => DBMS_DATAPUMP.KU$_FILE_TYPE_LOG_FILE);
{steps}    DBMS_DATAPUMP.START_JOB(handle => h);
  EXCEPTION WHEN OTHERS THEN
    IF SQLCODE <> DBMS_DATAPUMP.SUCCESS_WITH_INFO_NUM THEN
      BEGIN
        DBMS_DATAPUMP.STOP_JOB(handle => h, immediate => 1, keep_master => 0);
      EXCEPTION WHEN OTHERS THEN NULL;
      END;
      RAISE;
    END IF;
  END;
  :handle := h;
END;"""

EXPORT_STEPS = """    DBMS_DATAPUMP.METADATA_FILTER(handle => h, name => 'SCHEMA_EXPR', value => :schema_expr);
    DBMS_DATAPUMP.SET_PARAMETER(handle => h, name => 'FLASHBACK_SCN', value => :scn);
"""
IMPORT_STEPS = """    DBMS_DATAPUMP.METADATA_FILTER(handle => h, name => 'SCHEMA_EXPR', value => :schema_expr);
    DBMS_DATAPUMP.METADATA_FILTER(handle => h, name => 'EXCLUDE_PATH_EXPR', value => :exclude_expr);
    DBMS_DATAPUMP.METADATA_REMAP(handle => h, name => 'REMAP_SCHEMA', old_value => :source_schema, value => :scratch_schema);
"""
REMAP_TABLESPACE = ("    DBMS_DATAPUMP.METADATA_REMAP(handle => h, name => 'REMAP_TABLESPACE', old_value => :tablespace_{n}, "
                    "value => :scratch_tablespace);\n")

EXPORT_BLOCK = _OPEN_JOB.format(operation="EXPORT", version=", version => :version", steps=EXPORT_STEPS)

# The scratch user is created by backupkit (with quota on the scratch tablespace); the source's user
# definition, its system and role grants and grants to users that only exist in production are not imported.
IMPORT_EXCLUDE = "IN ('USER', 'SYSTEM_GRANT', 'ROLE_GRANT', 'DEFAULT_ROLE', 'TABLESPACE_QUOTA', 'OBJECT_GRANT')"

STATUS_BLOCK = """DECLARE
  js VARCHAR2(30);
  sts ku$_Status;
  le ku$_LogEntry;
  i NUMBER;
  errs VARCHAR2(32767);
  wip VARCHAR2(32767);
BEGIN
  DBMS_DATAPUMP.GET_STATUS(:handle, DBMS_DATAPUMP.KU$_STATUS_JOB_ERROR + DBMS_DATAPUMP.KU$_STATUS_JOB_STATUS + DBMS_DATAPUMP.KU$_STATUS_WIP, :timeout, js, sts);
  :job_state := js;
  IF BITAND(sts.mask, DBMS_DATAPUMP.KU$_STATUS_JOB_STATUS) != 0 THEN
    :percent_done := sts.job_status.percent_done;
    :error_count := sts.job_status.error_count;
  END IF;
  IF BITAND(sts.mask, DBMS_DATAPUMP.KU$_STATUS_JOB_ERROR) != 0 AND sts.error IS NOT NULL THEN
    le := sts.error;
    i := le.FIRST;
    WHILE i IS NOT NULL LOOP
      errs := SUBSTR(errs || le(i).LogText || CHR(10), 1, 32000);
      i := le.NEXT(i);
    END LOOP;
  END IF;
  IF BITAND(sts.mask, DBMS_DATAPUMP.KU$_STATUS_WIP) != 0 AND sts.wip IS NOT NULL THEN
    le := sts.wip;
    i := le.FIRST;
    WHILE i IS NOT NULL LOOP
      wip := SUBSTR(wip || le(i).LogText || CHR(10), 1, 32000);
      i := le.NEXT(i);
    END LOOP;
  END IF;
  :errors := errs;
  :wip := wip;
END;"""

DETACH_BLOCK = "BEGIN DBMS_DATAPUMP.DETACH(handle => :handle); END;"
STOP_BLOCK = "BEGIN DBMS_DATAPUMP.STOP_JOB(handle => :handle, immediate => 1, keep_master => 0); END;"
ATTACH_STOP_BLOCK = """DECLARE
  h NUMBER;
BEGIN
  h := DBMS_DATAPUMP.ATTACH(job_name => :job_name, job_owner => USER);
  DBMS_DATAPUMP.STOP_JOB(handle => h, immediate => 1, keep_master => 0);
END;"""
JOB_STATE_SQL = "SELECT state FROM user_datapump_jobs WHERE job_name = :job_name"
ORPHAN_JOBS_SQL = "SELECT job_name, state FROM user_datapump_jobs WHERE job_name LIKE :prefix ESCAPE '\\' ORDER BY job_name"
MASTER_TABLE_SQL = "SELECT COUNT(*) FROM user_tables WHERE table_name = :job_name"

FILE_LENGTH_BLOCK = """DECLARE
  e BOOLEAN;
  n NUMBER;
  b BINARY_INTEGER;
BEGIN
  UTL_FILE.FGETATTR(location => :directory, filename => :file_name, fexists => e, file_length => n, block_size => b);
  :file_length := CASE WHEN e THEN n ELSE -1 END;
END;"""
READ_CHUNK_BLOCK = """DECLARE
  f BFILE := BFILENAME(:directory, :file_name);
  amt BINARY_INTEGER := :amount;
  buf RAW(32767);
BEGIN
  DBMS_LOB.FILEOPEN(f, DBMS_LOB.FILE_READONLY);
  DBMS_LOB.READ(f, amt, :offset, buf);
  DBMS_LOB.FILECLOSE(f);
  :chunk := buf;
EXCEPTION WHEN OTHERS THEN
  IF DBMS_LOB.FILEISOPEN(f) = 1 THEN
    DBMS_LOB.FILECLOSE(f);
  END IF;
  RAISE;
END;"""
WRITE_CHUNK_BLOCK = """DECLARE
  f UTL_FILE.FILE_TYPE;
BEGIN
  f := UTL_FILE.FOPEN(location => :directory, filename => :file_name, open_mode => :open_mode, max_linesize => 32767);
  UTL_FILE.PUT_RAW(file => f, buffer => :chunk, autoflush => TRUE);
  UTL_FILE.FCLOSE(file => f);
EXCEPTION WHEN OTHERS THEN
  IF UTL_FILE.IS_OPEN(f) THEN
    UTL_FILE.FCLOSE(file => f);
  END IF;
  RAISE;
END;"""
REMOVE_BLOCK = "BEGIN UTL_FILE.FREMOVE(location => :directory, filename => :file_name); END;"

# Messages for Data Pump failures; {ctx} is filled in with the table, SCN or settings concerned.
EXPLAIN = {
    "ORA-01555": ("snapshot too old (ORA-01555): the undo needed to read the data as of SCN {scn} was overwritten "
                  "before the backup finished; raise UNDO_RETENTION (now {undo}s) above the backup's duration, size the "
                  "undo tablespace for it (or ALTER TABLESPACE ... RETENTION GUARANTEE), or back up at a quieter time"),
    "ORA-31631": ("privileges are required (ORA-31631): grant the account DATAPUMP_EXP_FULL_DATABASE (export) or "
                  "DATAPUMP_IMP_FULL_DATABASE (import) directly or through a default role; see docs/oracle.md"),
    "ORA-39002": ("Data Pump rejected the job (ORA-39002 invalid operation); the lines that follow name the cause, "
                  "often the DIRECTORY object: check it exists, its OS path is writable by the oracle user, and "
                  "the account has READ and WRITE on it"),
    "ORA-39070": ("Data Pump cannot open its log file (ORA-39070): check the DIRECTORY object's OS path exists and is "
                  "writable by the oracle OS user, and GRANT READ, WRITE ON DIRECTORY to the account"),
    "ORA-29283": ("invalid file operation on the DIRECTORY's path (ORA-29283): the OS path does not exist or the "
                  "oracle OS user cannot read or write it"),
    "ORA-12899": ("value too large for column (ORA-12899): {charset}"),
    "ORA-01466": ("a table definition changed during the backup (ORA-01466: unable to read data); DDL ran on the "
                  "schema after SCN {scn}; run the backup again"),
    "ORA-39083": "an object failed to be created on import (ORA-39083); the lines that follow name it",
}


def explain(codes: list[str], **ctx) -> str:
    """The first known code's explanation (with ctx filled in), or ''."""
    for c in codes:
        if c in EXPLAIN:
            try:
                return EXPLAIN[c].format_map(_Missing(ctx))
            except (KeyError, ValueError):
                return EXPLAIN[c]
    return ""


class _Missing(dict):
    def __missing__(self, key):
        return "?"


def charset_message(source: str | None, scratch: str | None) -> str:
    """What to do when the backup's character set differs from the scratch database's."""
    msg = f"the backup's database character set is {source} and the scratch database's is {scratch}"
    if source == "ZHS16GBK" and scratch == "AL32UTF8":
        msg += (": a Chinese character takes 2 bytes in ZHS16GBK and 3 in AL32UTF8, so VARCHAR2(n BYTE) columns "
                "overflow on import (ORA-12899) and text fingerprints cannot match")
    return (msg + f"; drill into a scratch database created with CHARACTER SET {source} (a drill proves the "
            "backup restores as taken; converting the character set is a migration: test it with "
            "DMU or csscan separately)")


@dataclass
class JobOutcome:
    state: str
    errors: list[str] = field(default_factory=list)
    wip: list[str] = field(default_factory=list)
    polls: int = 0
    seconds: float = 0.0


class DataPump:
    """Data Pump jobs and DIRECTORY files on one connection (the account that owns the jobs)."""

    def __init__(self, conn, *, directory: str, what: str):
        self.conn = conn
        self.directory = directory
        self.what = what

    def _run(self, sql: str, binds: dict | None = None):
        cur = self.conn.cursor()
        try:
            cur.execute(sql, binds or {})
            return cur
        except BaseException:
            cur.close()
            raise

    # ---- jobs ----------------------------------------------------------------------------------

    def start(self, sql: str, binds: dict, *, job_name: str, ctx: dict) -> int:
        """Run an OPEN ... START_JOB block; return the job handle. JobFailed (job cleaned up) on error."""
        cur = self.conn.cursor()
        try:
            handle = cur.var(int)
            cur.execute(sql, {**binds, "handle": handle})
            return int(handle.getvalue())
        except Exception as e:
            try:
                self.cleanup(job_name)
            except Exception as c:  # the original failure matters more
                logger.warning("%s: cleanup of %s failed: %s", self.what, job_name, one_line(c))
            raise JobFailed(self._failure("could not start Data Pump job " + job_name, [one_line(e)], ctx)) from None
        finally:
            cur.close()

    def wait(self, handle: int, *, job_name: str, poll_seconds: int, max_seconds: int, ctx: dict) -> JobOutcome:
        """Poll GET_STATUS until COMPLETED or STOPPED, collecting every error line, then DETACH.

        A job that stops, disappears (killed) or overruns ``max_seconds`` is stopped, its master table
        dropped, and JobFailed raised with the collected error lines."""
        out = JobOutcome(state="UNDEFINED")
        t0 = time.monotonic()
        try:
            while out.state not in FINAL_STATES:
                if time.monotonic() - t0 > max_seconds:
                    out.errors.append(f"the job ran longer than max_job_seconds ({max_seconds}s) and was stopped")
                    break
                cur = self.conn.cursor()
                try:
                    v = {k: cur.var(t, 32767) if t is str else cur.var(t)
                         for k, t in (("job_state", str), ("percent_done", float), ("error_count", int),
                                      ("errors", str), ("wip", str))}
                    cur.execute(STATUS_BLOCK, {"handle": handle, "timeout": poll_seconds, **v})
                finally:
                    cur.close()
                out.polls += 1
                out.state = v["job_state"].getvalue() or out.state
                out.errors += [ln for ln in (v["errors"].getvalue() or "").splitlines() if ln.strip()]
                out.wip += [ln for ln in (v["wip"].getvalue() or "").splitlines() if ln.strip()]
                logger.debug("%s: job %s %s %s%%", self.what, job_name, out.state, v["percent_done"].getvalue())
        except Exception as e:  # GET_STATUS failed: the job was killed or the session lost
            out.errors.append(one_line(e))
            out.state = "LOST"
        except BaseException:  # SIGINT/SIGTERM: never leave a job running on the server
            try:
                self.stop(handle, job_name)
            except Exception as c:
                logger.warning("%s: could not stop %s: %s", self.what, job_name, one_line(c))
            raise
        out.seconds = time.monotonic() - t0
        if out.state == "COMPLETED" and not any(ORA_LINE.search(ln) for ln in out.errors):
            self._detach(handle)
            return out
        if out.state == "COMPLETED":  # completed with errors (e.g. a table skipped after ORA-01555)
            self._detach(handle)
        else:
            self.stop(handle, job_name)
        raise JobFailed(self._failure(f"Data Pump job {job_name} ended {out.state}", out.errors, ctx))

    def _failure(self, head: str, lines: list[str], ctx: dict) -> str:
        codes = [c for ln in lines for c in ora_codes(Exception(ln))]
        why = explain(codes, **ctx)
        shown = "; ".join(lines[:8]) + (f"; and {len(lines) - 8} more lines" if len(lines) > 8 else "")
        return f"{self.what}: {head}: {why + ' | ' if why else ''}{shown or 'no error lines reported'}"

    def _detach(self, handle: int) -> None:
        try:
            self._run(DETACH_BLOCK, {"handle": handle}).close()
        except Exception as e:
            logger.warning("%s: DETACH failed: %s", self.what, one_line(e))

    def stop(self, handle: int | None, job_name: str) -> None:
        """Stop a job this session is attached to, then make sure it and its master table are gone."""
        if handle is not None:
            try:
                self._run(STOP_BLOCK, {"handle": handle}).close()
            except Exception as e:
                logger.warning("%s: STOP_JOB on %s failed (%s); attaching to stop it", self.what, job_name, one_line(e))
        self.cleanup(job_name)

    def job_state(self, job_name: str) -> str | None:
        cur = self._run(JOB_STATE_SQL, {"job_name": job_name})
        try:
            row = cur.fetchone()
        finally:
            cur.close()
        return row[0] if row else None

    def cleanup(self, job_name: str) -> dict:
        """Stop ``job_name`` if it still exists (ATTACH + STOP_JOB, keep_master 0) and drop a leftover master
        table; return what was found and done. Never raises for a job that is already gone."""
        done: dict = {"job": job_name}
        state = self.job_state(job_name)
        if state is not None:
            done["state_found"] = state
            try:
                self._run(ATTACH_STOP_BLOCK, {"job_name": job_name}).close()
                done["stopped"] = True
            except Exception as e:
                done["stop_error"] = one_line(e)
        cur = self._run(MASTER_TABLE_SQL, {"job_name": job_name})
        try:
            left = cur.fetchone()[0]
        finally:
            cur.close()
        if left:
            # job_name is generated by backupkit (BK..._<hex>): safe to quote into DDL
            self._run(f'DROP TABLE "{job_name}" PURGE').close()
            done["master_table_dropped"] = True
        return done

    def clean_orphans(self, prefix: str) -> list[dict]:
        """Stop every job whose name starts with ``prefix`` (left by a killed run of the same policy; the
        policy lock rules out a live one) and remove its files."""
        cur = self._run(ORPHAN_JOBS_SQL, {"prefix": prefix.replace("_", "\\_") + "%"})
        try:
            names = [r[0] for r in cur.fetchall()]
        finally:
            cur.close()
        out = []
        for name in names:
            logger.warning("%s: stopping Data Pump job %s left by an interrupted run", self.what, name)
            done = self.cleanup(name)
            done["files_removed"] = [f for f in (f"{name}.dmp", f"{name}.log") if self.remove(f)]
            out.append(done)
        return out

    # ---- files in the DIRECTORY -------------------------------------------------------------------

    def file_length(self, file_name: str) -> int:
        """Size in bytes of ``file_name`` in the DIRECTORY, -1 when it does not exist."""
        cur = self.conn.cursor()
        try:
            n = cur.var(int)
            cur.execute(FILE_LENGTH_BLOCK, {"directory": self.directory, "file_name": file_name, "file_length": n})
            return int(n.getvalue())
        finally:
            cur.close()

    def reader(self, file_name: str, length: int) -> io.BufferedReader:
        """A buffered binary stream of the server file, read in CHUNK-sized DBMS_LOB.READ calls."""
        return io.BufferedReader(ServerFileReader(self, file_name, length), buffer_size=CHUNK * 8)

    def read_chunk(self, file_name: str, offset: int, amount: int) -> bytes:
        cur = self.conn.cursor()
        try:
            chunk = cur.var(_raw_type(), CHUNK)
            cur.execute(READ_CHUNK_BLOCK, {"directory": self.directory, "file_name": file_name, "amount": amount,
                                           "offset": offset, "chunk": chunk})
            return bytes(chunk.getvalue() or b"")
        finally:
            cur.close()

    def read_text(self, file_name: str) -> str:
        """A job log, decoded (bounded by LOG_LIMIT); '' when it does not exist."""
        n = self.file_length(file_name)
        if n <= 0:
            return ""
        with self.reader(file_name, min(n, LOG_LIMIT)) as r:
            return r.read().decode("utf-8", "replace")

    def writer(self, file_name: str) -> "ServerFileWriter":
        return ServerFileWriter(self, file_name)

    def remove(self, file_name: str) -> bool:
        """UTL_FILE.FREMOVE; True when a file was removed, False when there was none."""
        try:
            self._run(REMOVE_BLOCK, {"directory": self.directory, "file_name": file_name}).close()
            return True
        except Exception as e:
            if "ORA-29283" in str(e) or "ORA-29280" in str(e):
                return False
            raise


def _raw_type():
    try:
        import oracledb

        return oracledb.DB_TYPE_RAW
    except ImportError:  # pragma: no cover - the engine is unusable without the extra anyway
        return bytes


class ServerFileReader(io.RawIOBase):
    """A DIRECTORY file as a raw stream: each read is one BFILENAME + DBMS_LOB.READ round trip."""

    def __init__(self, dp: DataPump, file_name: str, length: int):
        self.dp, self.file_name, self.length = dp, file_name, length
        self.offset = 1  # DBMS_LOB offsets are 1-based
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        left = self.length - (self.offset - 1)
        if left <= 0:
            return 0
        amount = min(len(b), CHUNK, left)
        data = self.dp.read_chunk(self.file_name, self.offset, amount)
        self.calls += 1
        if not data:
            raise JobFailed(f"{self.dp.what}: {self.file_name} ended at byte {self.offset - 1} of {self.length} "
                            "while it was being read from the server")
        b[:len(data)] = data
        self.offset += len(data)
        return len(data)


class ServerFileWriter(io.RawIOBase):
    """A new DIRECTORY file written with UTL_FILE.PUT_RAW in chunks of at most CHUNK bytes."""

    def __init__(self, dp: DataPump, file_name: str):
        self.dp, self.file_name = dp, file_name
        self.buf = bytearray()
        self.written = 0
        self.calls = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buf += b
        while len(self.buf) >= CHUNK:
            self._put(bytes(self.buf[:CHUNK]))
            del self.buf[:CHUNK]
        return len(b)

    def flush(self) -> None:
        if self.buf and not self.closed:
            self._put(bytes(self.buf))
            self.buf.clear()

    def close(self) -> None:
        if not self.closed:
            self.flush()
            if self.calls == 0:  # an empty stream still makes an (empty) file
                self._put(b"")
        super().close()

    def _put(self, chunk: bytes) -> None:
        mode = "wb" if self.calls == 0 else "ab"
        cur = self.dp.conn.cursor()
        try:
            cur.execute(WRITE_CHUNK_BLOCK, {"directory": self.dp.directory, "file_name": self.file_name,
                                            "open_mode": mode, "chunk": chunk})
        finally:
            cur.close()
        self.calls += 1
        self.written += len(chunk)


ORA_LINE = re.compile(r"\bORA-(\d{5})")
# ORA-39082: created with compilation warnings (the object was invalid in the source too, or is recompiled later).
TOLERATED = {"ORA-39082"}
_EXPORTED = re.compile(r'^\. \. exported "([^"]+)"\."([^"]+)"(?::"[^"]+")*\s+[\d.]+\s+[KMGT]?B\s+(\d+) rows', re.M)


def log_errors(text: str) -> tuple[list[str], list[str]]:
    """(fatal, tolerated) ORA- lines of a Data Pump log."""
    fatal, tolerated = [], []
    for line in text.splitlines():
        m = ORA_LINE.search(line)
        if m:
            (tolerated if f"ORA-{m.group(1)}" in TOLERATED else fatal).append(line.strip())
    return fatal, tolerated


def exported_rows(text: str, schema: str) -> dict[str, int]:
    """Rows per table from an export log's ``. . exported "S"."T"[:"P"] ... N rows`` lines (partitions summed)."""
    rows: dict[str, int] = {}
    for owner, table, n in _EXPORTED.findall(text):
        if owner == schema:
            rows[table] = rows.get(table, 0) + int(n)
    return rows
