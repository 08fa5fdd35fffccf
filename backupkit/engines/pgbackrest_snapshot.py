"""Source-side fingerprints of a physical backup, tied to one WAL position.

A physical backup restores to any WAL position after its end. backupkit picks one: it opens a
REPEATABLE READ snapshot S and, in the same statement (after S was taken), reads the WAL insert
position L. The drill recovers the backup with ``recovery_target_lsn = L`` and
``recovery_target_inclusive = off``: every WAL record that starts before L is replayed.

Exactness: every transaction visible in S wrote its commit record before S, hence before L. The
reverse (a transaction whose commit record lies before L but which S does not see) is ruled out
by a second session after L: it assigns a fresh transaction id N, then checks that every id in
[xmin(S), N) is either aborted or committed *and* visible in S. An id still in progress, or
committed but invisible to S, could have its commit record before L: the snapshot is retried
(up to ``ATTEMPTS``), then recorded as ``exactness: approximate`` naming the transactions.

Sequences are not transactional and a crash-recovered copy shows the WAL-logged position
(``last_value + log_cnt * increment``, pre-logged up to 32 values ahead): both sides record that
position. Unlogged tables are empty after any physical restore: not compared (``not_compared``).
"""

from __future__ import annotations

import logging
import time
from datetime import timezone
from typing import Any, Callable

import psycopg
from psycopg import sql

from ..errors import JobFailed
from .pg_fingerprint import fingerprints as relation_fingerprints
from .pg_schema import DATABASE_KEY, SCHEMA_KEY, database_properties, schema_fingerprint

logger = logging.getLogger(__name__)

ATTEMPTS = 8
RESOLVE_ATTEMPTS = 4  # attempts that read the WAL to settle in-flight transactions
MAX_XID_SPAN = 2_000_000  # ids between the snapshot's xmin and now checked one by one
SEQUENCE_NOTE = "last_value + log_cnt * increment_by: the WAL-logged position a physical copy shows"
UNLOGGED_WHY = "unlogged relation: not WAL-logged, so empty after any physical restore"

UNSETTLED_SQL = """
SELECT x FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS x
WHERE coalesce(txid_status(x), 'aborted') <> 'aborted'
  AND NOT (txid_status(x) = 'committed' AND txid_visible_in_snapshot(x, %(snap)s::txid_snapshot))
LIMIT %(limit)s
"""
UNSETTLED_LIMIT = 1000  # more ids around the snapshot than this: retried, never resolved one by one


def unsettled(check: psycopg.Connection, snap: str) -> tuple[list[int], str | None]:
    """Transactions that could have a commit record before L but are not visible in ``snap``
    (checked from a second autocommit session, after L was read). Returns (ids, reason if unchecked)."""
    (n,) = check.execute("SELECT txid_current()").fetchone()
    lo = int(snap.split(":")[0])
    if n - lo > MAX_XID_SPAN:
        return [], f"{n - lo} transaction ids between the snapshot's xmin and now (more than {MAX_XID_SPAN} to check)"
    rows = check.execute(UNSETTLED_SQL, {"lo": lo, "hi": n, "snap": snap, "limit": UNSETTLED_LIMIT}).fetchall()
    return [int(r[0]) for r in rows], None


def read_positions(conn: psycopg.Connection) -> dict[str, tuple[int, bool]]:
    """Every sequence's WAL-logged position and is_called, by entry key (``sequence schema.name``)."""
    rows = conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname, s.seqincrement "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid "
        "WHERE c.relkind = 'S'").fetchall()
    out = {}
    for key, schema, name, inc in rows:
        last, log_cnt, called = conn.execute(
            sql.SQL("SELECT last_value, log_cnt, is_called FROM {}").format(sql.Identifier(schema, name))).fetchone()
        out[f"sequence {key}"] = (int(last) + int(log_cnt) * int(inc), bool(called))
    return out


def apply_positions(fps: dict[str, dict[str, Any]], positions: dict[str, tuple[int, bool]],
                    before: dict[str, tuple[int, bool]] | None = None) -> None:
    """Set each sequence entry's ``last_value``/``is_called`` to its WAL-logged position (in place). With
    ``before`` (read just before the snapshot; ``positions`` just after the LSN), a sequence that moved in
    between records the range it moved through in ``info.position_range``."""
    for key, (pos, called) in positions.items():
        entry = fps.get(key)
        if entry is None:
            continue
        entry["last_value"], entry["is_called"] = pos, called
        info = {**(entry.get("info") or {}), "position": SEQUENCE_NOTE}
        if before is not None and key in before and before[key][0] != pos:
            info["position_range"] = sorted([before[key][0], pos])
        entry["info"] = info


def sequence_positions(conn: psycopg.Connection, fps: dict[str, dict[str, Any]], like: dict | None = None) -> None:
    """The restored side: WAL-logged positions; a position inside the range the source recorded for a
    sequence that moved while the snapshot was taken is not compared (it cannot be pinned to the LSN)."""
    apply_positions(fps, read_positions(conn))
    for key, entry in fps.items():
        rng = (((like or {}).get(key) or {}).get("info") or {}).get("position_range")
        if entry.get("kind") == "sequence" and rng and rng[0] <= entry["last_value"] <= rng[1]:
            entry["not_compared"] = {
                "last_value": f"the sequence advanced from {rng[0]} to {rng[1]} while the backup's snapshot was "
                              f"taken (sequences are not transactional); the restored {entry['last_value']} is "
                              "within that range",
                "is_called": "as last_value"}


def unlogged_keys(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT c.relkind, format('%I.%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relpersistence = 'u' AND c.relkind IN ('r','p','m')"
    ).fetchall()
    return [f"materialized view {k}" if kind == "m" else k for kind, k in rows]


def mark_unlogged(conn: psycopg.Connection, fps: dict[str, dict[str, Any]]) -> None:
    for key in unlogged_keys(conn):
        if key in fps:
            fps[key]["not_compared"] = {"rows": UNLOGGED_WHY, "hash": UNLOGGED_WHY}


def physical_fingerprints(conn: psycopg.Connection, mode: str) -> dict[str, dict[str, Any]]:
    """Every entry, as stored (materialized views by their stored rows, like the physical copy)."""
    out = relation_fingerprints(conn, mode, side="restored")
    out[SCHEMA_KEY] = schema_fingerprint(conn)
    out[DATABASE_KEY] = database_properties(conn)
    return dict(sorted(out.items()))


Resolver = Callable[[str, str, list[int]], tuple[str | None, str]]


def _open_snapshot(conn: psycopg.Connection) -> tuple[str, str, Any, str]:
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    return conn.execute(
        "SELECT pg_current_wal_insert_lsn()::text, txid_current_snapshot()::text, now(), "
        "pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()


def snapshot_fingerprints(conn: psycopg.Connection, check: psycopg.Connection, mode: str,
                          what: str, resolve: Resolver | None = None,
                          floor: dict[str, tuple[int, bool]] | None = None
                          ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Given an autocommit source connection and a second one, return (consistency, fingerprints)
    where the fingerprints are those of the source at WAL position ``consistency.lsn``.

    When transactions are unsettled around the snapshot, ``resolve(snapshot, L, ids)`` (reading the
    WAL; pg_walcut.py) may name an earlier recovery target C holding exactly the snapshot; the
    sequences' lower bound is then ``floor`` (positions read before the WAL that C lies in)."""
    reasons: list[str] = []
    cut: str | None = None
    unresolved = ""
    for attempt in range(1, ATTEMPTS + 1):
        before = read_positions(check)
        lsn, snap, at, walfile = _open_snapshot(conn)
        try:
            ids, unchecked = unsettled(check, snap)
            after = read_positions(check)
        except psycopg.Error as e:
            conn.execute("ROLLBACK")
            raise JobFailed(f"{what}: cannot check the snapshot against the WAL position "
                            f"({' '.join(str(e).split())}); the backup role needs txid_current() and txid_status()") from None
        if unchecked:
            reasons = [unchecked]
            break
        if not ids:
            reasons = []
            break
        reasons = [f"transactions {', '.join(map(str, ids[:10]))}{' ...' if len(ids) > 10 else ''} were in progress "
                   f"or committed around the snapshot ({attempt} attempts)"]
        if resolve is not None and len(ids) < UNSETTLED_LIMIT and attempt <= RESOLVE_ATTEMPTS:
            cut, why = resolve(snap, lsn, ids)
            if cut is not None:
                reasons = []
                break
            unresolved = f"the WAL read did not settle them: {why}"
            logger.info("%s: %s", what, unresolved)
        if unresolved:
            reasons.append(unresolved)
        conn.execute("ROLLBACK")
        time.sleep(0.05 * attempt)
    else:
        before = read_positions(check)
        lsn, snap, at, walfile = _open_snapshot(conn)
        after = read_positions(check)
    t0 = time.monotonic()
    try:
        fps = physical_fingerprints(conn, mode)
    finally:
        conn.execute("ROLLBACK")
    moved = cut is not None and cut != lsn
    apply_positions(fps, after, floor if moved and floor is not None else before)
    consistency: dict[str, Any] = {
        "kind": "postgres-physical", "lsn": cut or lsn, "snapshot": snap,
        "time": at.astimezone(timezone.utc).isoformat(), "recovery_target_lsn": cut or lsn,
        "recovery_target_inclusive": False, "wal_file": walfile,
        "exactness": "approximate" if reasons else "exact",
    }
    if reasons:
        consistency["approximate_because"] = reasons
        logger.warning("%s: fingerprints are approximate: %s", what, "; ".join(reasons))
    else:
        consistency["proof"] = ("snapshot taken before the WAL insert position was read; every transaction id "
                                "from the snapshot's xmin to a fresh id assigned after that read is aborted or "
                                "committed and visible in the snapshot, so recovery to this position "
                                "(exclusive) holds exactly the snapshot's transactions")
        if cut is not None:
            consistency["snapshot_lsn"] = lsn
            consistency["proof"] = ("snapshot taken before the WAL insert position L was read; transactions around "
                                    "it settled, then the WAL from before L to past their commits was read "
                                    "(pg_waldump): every commit record before this position is visible in the "
                                    "snapshot and none after it up to L is, so recovery to this position "
                                    "(exclusive) holds exactly the snapshot's transactions")
    consistency["fingerprint_seconds"] = round(time.monotonic() - t0, 3)
    return consistency, fps
