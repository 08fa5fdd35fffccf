"""Pure functions of ``mode: rman``: the RMAN command files and SQL*Plus queries backupkit sends, and the
parsing of what comes back (RMAN logs, ``V$`` rows printed by SQL*Plus). No I/O here.

Every name that reaches a command file or a query was validated at policy load (tags, SIDs and paths
match strict patterns, oracle_config.py), and is quoted anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RMAN's error-stack banner (RMAN-00571/00569) frames the real errors; never the one to report.
_BANNER = {"RMAN-00571", "RMAN-00569"}
ERROR_LINE = re.compile(r"^\s*((?:RMAN|ORA)-\d{5}):\s?(.*)$")
PIECE_LINE = re.compile(r"^\s*piece handle=(\S+)\s+tag=(\S+)\s+comment=", re.M)
CONNECTED = re.compile(r"connected to (?:target|auxiliary) database: (\w+) \(DBID=(\d+)", re.M)

SQLPLUS_SETTINGS = ("SET HEADING OFF FEEDBACK OFF PAGESIZE 0 LINESIZE 32767 TRIMSPOOL ON TRIMOUT ON VERIFY OFF "
                    "ECHO OFF TAB OFF\nWHENEVER SQLERROR EXIT FAILURE\n")


def _q(text: str) -> str:
    """An RMAN/SQL single-quoted literal."""
    return "'" + text.replace("'", "''") + "'"


# ---- command files ------------------------------------------------------------------------------------


def backup_commands(tag: str, piece_dir: str | None) -> str:
    """BACKUP DATABASE PLUS ARCHIVELOG with ``tag``, then the control file with the same tag (a DUPLICATE
    from the pieces alone needs a control file that knows the archived logs)."""
    fmt = f" FORMAT {_q(piece_dir + '/%U')}" if piece_dir else ""
    return (f"BACKUP AS COMPRESSED BACKUPSET DATABASE PLUS ARCHIVELOG TAG {_q(tag)}{fmt};\n"
            f"BACKUP CURRENT CONTROLFILE TAG {_q(tag)}{fmt};\n")


def validate_commands(stage_dir: str) -> str:
    """Catalog the pieces uploaded from the artifact, then read every block of the database's backup."""
    return (f"CATALOG START WITH {_q(stage_dir + '/')} NOPROMPT;\n"
            "RESTORE DATABASE VALIDATE CHECK LOGICAL;\n")


def uncatalog_commands(handles: list[str]) -> str:
    return "".join(f"CHANGE BACKUPPIECE {_q(h)} UNCATALOG;\n" for h in handles)


def duplicate_commands(aux: str, scn: int, stage_dir: str) -> str:
    """Backup-based duplication (no target connection) into the auxiliary instance; opens it RESETLOGS."""
    return f"DUPLICATE DATABASE TO {aux} UNTIL SCN {int(scn)} BACKUP LOCATION {_q(stage_dir)} NOFILENAMECHECK;\n"


def drop_commands() -> str:
    """Run with ORACLE_SID set to the auxiliary instance only (checked by the caller)."""
    return ("STARTUP FORCE MOUNT;\n"
            "SQL 'ALTER SYSTEM ENABLE RESTRICTED SESSION';\n"
            "DROP DATABASE NOPROMPT;\n")


# ---- SQL*Plus queries ---------------------------------------------------------------------------------


def _script(*queries: str) -> str:
    return SQLPLUS_SETTINGS + "".join(q.rstrip(";") + ";\n" for q in queries) + "EXIT\n"


DB_QUERY = "SELECT 'DB|' || dbid || '|' || name || '|' || log_mode || '|' || open_mode FROM v$database"
CORRUPTION_QUERY = ("SELECT 'CORRUPT|' || file# || '|' || block# || '|' || blocks || '|' || corruption_type "
                    "FROM v$database_block_corruption ORDER BY file#, block#")
CORRUPTION_COUNT = "SELECT 'CORRUPTIONS|' || COUNT(*) FROM v$database_block_corruption"
_LATEST_SESSION = "(SELECT MAX(session_key) FROM v$backup_piece_details WHERE tag = {tag})"


def backup_queries(tag: str) -> str:
    """The database, the job that wrote ``tag``'s latest pieces, those pieces, and the SCN they recover to."""
    t = _q(tag)
    latest = _LATEST_SESSION.format(tag=t)
    return _script(
        DB_QUERY,
        "SELECT 'VERSION|' || version FROM v$instance",
        "SELECT 'JOB|' || session_key || '|' || status || '|' || input_type || '|' || "
        "TO_CHAR(start_time, 'YYYY-MM-DD\"T\"HH24:MI:SS') || '|' || TO_CHAR(end_time, 'YYYY-MM-DD\"T\"HH24:MI:SS') "
        "|| '|' || ROUND((SYSDATE - end_time) * 86400) "
        f"FROM v$rman_backup_job_details WHERE session_key = {latest}",
        "SELECT 'PIECE|' || handle || '|' || bytes || '|' || backup_type || '|' || set_stamp || '|' || set_count "
        f"FROM v$backup_piece_details WHERE tag = {t} AND status = 'A' AND session_key = {latest} "
        "ORDER BY set_stamp, set_count, piece#",
        "SELECT 'SCN|' || MAX(r.next_change#) FROM v$backup_redolog r WHERE (r.set_stamp, r.set_count) IN "
        f"(SELECT set_stamp, set_count FROM v$backup_piece_details WHERE tag = {t} AND session_key = {latest})",
    )


def catalog_queries(stage_dir: str) -> str:
    """Pieces the control file still lists under backupkit's drill directory (must be none after teardown)."""
    return _script(f"SELECT 'CATALOGED|' || COUNT(*) FROM v$backup_piece WHERE handle LIKE {_q(stage_dir + '/%')} "
                   "AND status <> 'D'")


def corruption_queries() -> str:
    return _script(CORRUPTION_COUNT, CORRUPTION_QUERY)


def instance_queries() -> str:
    return _script("SELECT 'INSTANCE|' || instance_name || '|' || status FROM v$instance", DB_QUERY)


# ---- parsing ------------------------------------------------------------------------------------------


@dataclass
class RmanLog:
    errors: list[tuple[str, str]] = field(default_factory=list)  # (code, text) in order, banner excluded
    pieces: list[tuple[str, str]] = field(default_factory=list)  # (handle, tag) from "piece handle=" lines
    database: tuple[str, int] | None = None  # (name, DBID) from "connected to target database"
    finished: bool = False  # "Recovery Manager complete."


def parse_rman_log(text: str) -> RmanLog:
    log = RmanLog()
    for line in text.splitlines():
        m = ERROR_LINE.match(line)
        if m and m.group(1) not in _BANNER:
            log.errors.append((m.group(1), " ".join(m.group(2).split())))
    log.pieces = PIECE_LINE.findall(text)
    c = CONNECTED.search(text)
    if c:
        log.database = (c.group(1), int(c.group(2)))
    log.finished = "Recovery Manager complete." in text
    return log


def first_error(log: RmanLog) -> str | None:
    """The first error and, when it is an RMAN- wrapper, the first ORA- cause: one line."""
    if not log.errors:
        return None
    code, text = log.errors[0]
    out = f"{code}: {text}"
    if code.startswith("RMAN-"):
        cause = next(((c, t) for c, t in log.errors[1:] if c.startswith("ORA-")), None)
        if cause:
            out += f"; {cause[0]}: {cause[1]}"
    return out[:400]


def parse_rows(text: str) -> dict[str, list[list[str]]]:
    """SQL*Plus output of the queries above: ``PREFIX|a|b`` lines grouped by prefix; ORA- lines under 'ERROR'."""
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if ERROR_LINE.match(line) or line.startswith("SP2-"):
            rows.setdefault("ERROR", []).append([line])
            continue
        if "|" in line:
            head, *rest = line.split("|")
            if re.fullmatch(r"[A-Z]+", head):
                rows.setdefault(head, []).append(rest)
    return rows
