"""Per-table fingerprints of a PostgreSQL database, computed in SQL.

A fingerprint is ``{"rows": n, "hash": hex | None}`` per ``schema.table``. The
same function runs on the source (inside the dump's snapshot) and on the
scratch copy after the restore; equal values prove the restore is complete.

``full`` mode hashes every row with two independently seeded 64-bit hashes
and *sums* them as exact numerics. A sum is order independent, yet unlike XOR
it counts duplicate rows: deleting one of two identical rows in a table without
a primary key changes the sum (and the count). The 128-bit result is rendered
as 32 hex digits. Two methods, recorded per table as ``method``:

- ``record`` (PostgreSQL 14+): ``hash_record_extended(t, seed)``, which hashes
  each column with its type's extended hash function, the functions hash
  partitioning relies on and therefore stable across versions. No text
  conversion: 2.2x faster than ``text`` on 3.6 M rows (0.9 s vs 2.0 s).
- ``text``: ``hashtextextended(ROW(t.*)::text, seed)`` over each row's text form,
  with the session settings pinned by pg_conn.PINNED_SETTINGS. Used for tables
  with a column type that has no hash function (json, point, xml...) and on
  servers before 14.

The drill recomputes each table with the method the manifest recorded.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from ..errors import JobFailed

logger = logging.getLogger(__name__)

MODES = ("rows", "full")

# Ordinary tables (and partitions) in user schemas; partitioned parents hold no
# rows of their own, views and foreign tables are not dumped as data, and tables
# that belong to an extension are recreated by CREATE EXTENSION.
TABLES_SQL = """
SELECT n.nspname, c.relname
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r'
   AND c.relpersistence <> 't'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 1, 2
"""

ROWS_SQL = "SELECT count(*) FROM ONLY {table}"

FULL_SQL = """
SELECT count(*),
       coalesce(sum(hashtextextended(r.txt, 0)), 0),
       coalesce(sum(hashtextextended(r.txt, 1)), 0)
  FROM (SELECT ROW(t.*)::text AS txt FROM ONLY {table} AS t) AS r
"""

RECORD_SQL = """
SELECT count(*),
       coalesce(sum(hash_record_extended(t, 0)), 0),
       coalesce(sum(hash_record_extended(t, 1)), 0)
  FROM ONLY {table} AS t
"""
RECORD_MIN_VERSION = 140000


def list_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Given a connection, return (schema, table) of every user table, sorted."""
    return [(s, t) for s, t in conn.execute(TABLES_SQL).fetchall()]


def render_hash(s1: int, s2: int) -> str:
    """Given the two exact sums, return them modulo 2**64 as 32 hex digits."""
    return f"{int(s1) % (1 << 64):016x}{int(s2) % (1 << 64):016x}"


def _record_hash(conn: psycopg.Connection, ident: sql.Composable) -> tuple | None:
    """The record-method sums, or None when a column type has no hash function."""
    in_tx = conn.info.transaction_status == TransactionStatus.INTRANS
    if in_tx:  # an error must not abort the dump's snapshot transaction
        conn.execute("SAVEPOINT bk_fingerprint")
    try:
        row = conn.execute(sql.SQL(RECORD_SQL).format(table=ident)).fetchone()
    except psycopg.errors.UndefinedFunction:  # "could not identify a hash function for type json"
        if in_tx:
            conn.execute("ROLLBACK TO SAVEPOINT bk_fingerprint")
        return None
    if in_tx:
        conn.execute("RELEASE SAVEPOINT bk_fingerprint")
    return row


def table_fingerprint(conn: psycopg.Connection, schema: str, table: str, mode: str,
                      method: str | None = None) -> dict[str, Any]:
    """Given a connection and one table, return {"rows": n, "hash": hex | None} per ``mode``;
    in ``full`` mode also the ``method`` used. ``method`` forces one (as recorded at backup)."""
    ident = sql.Identifier(schema, table)
    if mode == "rows":
        (n,) = conn.execute(sql.SQL(ROWS_SQL).format(table=ident)).fetchone()
        return {"rows": int(n), "hash": None}
    if method in (None, "record"):
        row = _record_hash(conn, ident) if conn.info.server_version >= RECORD_MIN_VERSION else None
        if row is not None:
            return {"rows": int(row[0]), "hash": render_hash(row[1], row[2]), "method": "record"}
        if method == "record":
            raise JobFailed(f"table {schema}.{table} was fingerprinted with hash_record_extended at backup time, "
                            f"which this server (version {conn.info.server_version}) cannot compute; "
                            "drill into PostgreSQL 14 or newer")
    n, s1, s2 = conn.execute(sql.SQL(FULL_SQL).format(table=ident)).fetchone()
    return {"rows": int(n), "hash": render_hash(s1, s2), "method": "text"}


def _method(like: dict | None, key: str) -> str | None:
    return ((like or {}).get(key) or {}).get("method")


def table_fingerprints(conn: psycopg.Connection, mode: str, like: dict | None = None) -> dict[str, dict[str, Any]]:
    """Given a connection (already in the wanted snapshot, settings pinned) and a mode
    ("rows" or "full"), return ``{"schema.table": {"rows": n, "hash": hex | None}}``.
    ``like`` (a manifest's fingerprints) makes each table use the method recorded there."""
    if mode not in MODES:
        raise ValueError(f"fingerprint mode must be one of {MODES}, not {mode!r}")
    out: dict[str, dict[str, Any]] = {}
    for schema, table in list_tables(conn):
        key = f"{schema}.{table}"
        out[key] = table_fingerprint(conn, schema, table, mode, _method(like, key))
    return out


SIZES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
 ORDER BY pg_relation_size(c.oid) DESC, 1, 2
"""


def parallel_table_fingerprints(connect: Callable[[], psycopg.Connection], mode: str, *,
                                workers: int, like: dict | None = None) -> dict[str, dict[str, Any]]:
    """Like table_fingerprints, on a database nobody writes to (a restored scratch copy):
    tables are spread, largest first, over ``workers`` connections opened with ``connect``.
    Only for quiescent databases: the workers do not share a snapshot."""
    if mode not in MODES:
        raise ValueError(f"fingerprint mode must be one of {MODES}, not {mode!r}")
    with connect() as conn:
        tables = list_tables(conn)
        if tables:
            tables = [(s, t) for s, t in conn.execute(
                SIZES_SQL, ([s for s, _ in tables], [t for _, t in tables])).fetchall()]
    pending = queue.SimpleQueue()
    for item in tables:
        pending.put(item)
    out: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with connect() as conn:
                while True:
                    try:
                        schema, table = pending.get_nowait()
                    except queue.Empty:
                        return
                    key = f"{schema}.{table}"
                    out[key] = table_fingerprint(conn, schema, table, mode, _method(like, key))
        except BaseException as e:  # re-raised below in the calling thread
            errors.append(e)

    threads = [threading.Thread(target=work, name=f"pg-fingerprint-{i}") for i in range(max(1, min(workers, len(tables))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return dict(sorted(out.items()))
