"""Pure decisions of PostgreSQL physical mode on pgBackRest (no I/O, no driver).

- which server settings are missing for WAL archiving through pgBackRest, and the exact
  lines a DBA adds (backupkit never edits a server's configuration);
- WAL segment names: parse, build, enumerate the range a backup needs;
- reading ``pgbackrest info --output=json``: the backup just taken, its chain of prior
  backups (diff/incr reference files of earlier sets), the archive id of its database.
"""

from __future__ import annotations

import re
from typing import Any

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


def settings_problems(settings: dict[str, str], *, stanza: str, config: str | None) -> list[str]:
    """Given the source's ``archive_mode``, ``archive_command`` and ``wal_level``, return the
    postgresql.conf lines that are missing (empty: archiving through pgBackRest is configured)."""
    conf = f" --config={config}" if config else ""
    lines = []
    if settings.get("wal_level") not in ("replica", "logical"):
        lines.append("wal_level = replica")
    if settings.get("archive_mode") not in ("on", "always"):
        lines.append("archive_mode = on")
    cmd = settings.get("archive_command") or ""
    if not ("pgbackrest" in cmd and "archive-push" in cmd and re.search(rf"--stanza[= ]{re.escape(stanza)}(\s|$)", cmd)):
        lines.append(f"archive_command = 'pgbackrest{conf} --stanza={stanza} archive-push %p'")
    return lines


def settings_message(what: str, lines: list[str], current: dict[str, str]) -> str:
    """One line: what is wrong and the exact postgresql.conf lines to add (then restart)."""
    now = ", ".join(f"{k}={current.get(k)!r}" for k in ("wal_level", "archive_mode", "archive_command"))
    return (f"{what}: the server does not archive WAL through pgBackRest (now {now}); a DBA must add to "
            f"postgresql.conf: {' ; '.join(lines)} — then restart PostgreSQL (archive_mode and wal_level need a "
            "restart) and run 'pgbackrest stanza-create'. backupkit never edits a server's configuration")


def segments_per_id(seg_size: int) -> int:
    return 0x100000000 // seg_size


def parse_segment(name: str, seg_size: int) -> tuple[int, int]:
    """``000000010000000A000000FF`` -> (timeline, segment number)."""
    m = SEGMENT_RE.match(name[:24].upper())
    if not m:
        raise ValueError(f"{name!r} is not a WAL segment name")
    tli, hi, lo = (int(g, 16) for g in m.groups())
    if lo >= segments_per_id(seg_size):
        raise ValueError(f"{name!r} is not a WAL segment name for {seg_size}-byte segments")
    return tli, hi * segments_per_id(seg_size) + lo


def segment_name(tli: int, segno: int, seg_size: int) -> str:
    per = segments_per_id(seg_size)
    return f"{tli:08X}{segno // per:08X}{segno % per:08X}"


def lsn_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def segment_of_lsn(tli: int, lsn: str, seg_size: int) -> str:
    """The segment holding the byte just before ``lsn`` (a target at a segment boundary needs the one before)."""
    return segment_name(tli, max(lsn_int(lsn) - 1, 0) // seg_size, seg_size)


def segments_between(first: str, last: str, seg_size: int) -> list[str]:
    """Every segment name from ``first`` to ``last`` inclusive, on ``first``'s timeline."""
    tli, a = parse_segment(first, seg_size)
    tli2, b = parse_segment(last, seg_size)
    if tli2 != tli:
        raise ValueError(f"WAL range {first}..{last} crosses timelines; take a new full backup after a promotion")
    if b < a:
        raise ValueError(f"WAL range {first}..{last} is backwards")
    return [segment_name(tli, n, seg_size) for n in range(a, b + 1)]


def stanza_info(info: list[dict[str, Any]], stanza: str) -> dict[str, Any]:
    """The entry of ``stanza`` in ``pgbackrest info --output=json``."""
    for s in info:
        if s.get("name") == stanza:
            return s
    raise KeyError(stanza)


def backups(stanza: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["label"]: b for b in stanza.get("backup") or []}


def new_backup(before: set[str], stanza: dict[str, Any]) -> dict[str, Any] | None:
    """The backup that appeared since ``before`` (the labels listed before `pgbackrest backup`)."""
    fresh = [b for label, b in backups(stanza).items() if label not in before]
    return max(fresh, key=lambda b: b["label"]) if fresh else None


def chain(stanza: dict[str, Any], label: str) -> list[str]:
    """``label`` and every backup it depends on (``prior``, recursively), oldest (the full) first."""
    sets = backups(stanza)
    out: list[str] = []
    cur: str | None = label
    while cur is not None:
        if cur not in sets:
            raise KeyError(cur)
        out.append(cur)
        cur = sets[cur].get("prior")
    return out[::-1]


def archive_id(stanza: dict[str, Any], backup: dict[str, Any]) -> str:
    """The archive directory id (``15-1``) of the database the backup belongs to."""
    db_id = (backup.get("database") or {}).get("id")
    for a in stanza.get("archive") or []:
        if (a.get("database") or {}).get("id") == db_id:
            return a["id"]
    raise KeyError(f"database id {db_id}")


def backup_facts(backup: dict[str, Any], chain_labels: list[str]) -> dict[str, Any]:
    """What the manifest records about one pgBackRest backup (from its ``info`` entry)."""
    info = backup.get("info") or {}
    repo = info.get("repository") or {}
    return {
        "label": backup["label"], "type": backup.get("type"), "prior": backup.get("prior"),
        "chain": chain_labels,
        "lsn_start": (backup.get("lsn") or {}).get("start"), "lsn_stop": (backup.get("lsn") or {}).get("stop"),
        "wal_start": (backup.get("archive") or {}).get("start"), "wal_stop": (backup.get("archive") or {}).get("stop"),
        "size": info.get("size"), "delta": info.get("delta"),
        "repo_size": repo.get("size"), "repo_delta": repo.get("delta"),
        "timestamp_start": (backup.get("timestamp") or {}).get("start"),
        "timestamp_stop": (backup.get("timestamp") or {}).get("stop"),
        "pgbackrest_version": (backup.get("backrest") or {}).get("version"),
        "error": backup.get("error"),
    }


def expire_plan(present: set[str], needed: set[str], dropped: set[str]) -> list[str]:
    """The pgBackRest sets to expire, newest first (dependents before what they depend on): those that
    pruned backups used, that no kept backup's chain needs, and that the repository still lists."""
    return sorted((dropped - needed) & present, reverse=True)
