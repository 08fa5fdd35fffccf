"""MariaDB fingerprints: per table a row count and an order-independent content
hash, plus a ``schema`` inventory and the ``database`` defaults, computed in
SQL so an auditor can recompute them with nothing but the ``mariadb`` client
(docs/format.md, "MariaDB").

Row encoding: each column, in ORDINAL_POSITION order, becomes ``N`` for NULL,
else ``V<length>:<bytes>`` (or ``H<sha256 hex>`` for long types), where the
bytes are the column's *stored* bytes for string and binary types (a GBK
column hashes its GBK bytes) and the server's text form for everything else
(DECIMAL keeps its scale: 1.50 is not 1.5; TIMESTAMP in time_zone '+00:00').
The row hash is SHA2(concatenation, 256); its two 64-bit halves are summed
(exactly, as DECIMAL) over the table, each modulo 2^64, so duplicate rows count
and row order does not matter.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from ..errors import JobFailed
from .mariadb_conn import query

FORMAT = 2  # 2: tables listed by mariadb_dumptext.text_tables hash the dump's text (method dump-text); 1: SQL only
TEXT_METHOD = "dump-text"  # a table whose hash comes from the dump text (mariadb_dumptext)
MOD64 = 1 << 64
MAX_LIMIT = 18446744073709551615  # LIMIT that keeps every row (see table_sql)

BINARY_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
STRING_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "json"}
LONG_TYPES = {"tinyblob", "blob", "mediumblob", "longblob", "tinytext", "text", "mediumtext", "longtext", "json"}
GEOMETRY_TYPES = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
                  "geometrycollection"}

SCHEMA_KEY = "schema"
DATABASE_KEY = "database"


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def table_key(name: str) -> str:
    """Manifest key of a table: its backquoted name (so no table can be called ``schema``)."""
    return quote_ident(name)


FIXED_TEXT_TYPES = {"date", "datetime", "timestamp"}  # text form of one length per column (fixed_lengths)


def fixed_text_length(data_type: str, precision: int | None) -> int | None:
    """Length of the text form ``CAST(c AS CHAR)`` shared by every value of a DATE, DATETIME(p) or
    TIMESTAMP(p) column (``YYYY-MM-DD``, ``YYYY-MM-DD hh:mm:ss`` and ``.`` plus p digits: years have
    four digits, zero dates included); None for other types."""
    dt = data_type.lower()
    if dt == "date":
        return 10
    if dt in ("datetime", "timestamp"):
        p = int(precision or 0)
        return 19 + (p + 1 if p else 0)
    return None


def column_expr(column: str, data_type: str, length: int | None = None) -> str:
    """The SQL expression of one column's part of the row encoding (see the module docstring).

    ``length``: the column's fixed text length (``fixed_text_length``), written as the constant it
    always equals instead of computing ``LENGTH(x)`` (a second text conversion) per row: same bytes."""
    c = "t." + quote_ident(column)
    dt = data_type.lower()
    if dt in BINARY_TYPES:
        x = c
    elif dt in STRING_TYPES:
        x = f"CAST({c} AS BINARY)"
    elif dt == "bit":
        x = f"CAST(CAST({c} + 0 AS CHAR) AS BINARY)"
    elif dt in GEOMETRY_TYPES:
        x = f"CAST(CONCAT(ST_SRID({c}), ':', HEX(ST_AsWKB({c}))) AS BINARY)"
    else:  # integers, DECIMAL, FLOAT, DOUBLE, dates and times, YEAR, INET6, UUID...
        x = f"CAST(CAST({c} AS CHAR) AS BINARY)"
    if dt in LONG_TYPES or dt in GEOMETRY_TYPES:
        part = f"CONCAT('H', SHA2({x}, 256))"
    elif length is not None and dt in FIXED_TEXT_TYPES:
        part = f"CONCAT('V{int(length)}:', {x})"
    else:
        part = f"CONCAT('V', LENGTH({x}), ':', {x})"
    return f"IF({c} IS NULL, 'N', {part})"


def table_sql(table: str, columns: list[tuple[str, str]], mode: str, where: str | None = None,
              materialize: bool = False, lengths: dict[str, int] | None = None) -> str:
    """The fingerprint query of one table (``columns``: (name, DATA_TYPE) in ORDINAL_POSITION order);
    ``where`` restricts it to one primary-key range (the sums of the ranges add up to the table's).

    Same values as the query first published for format 1, computed faster: SUM over BIGINT UNSIGNED
    is exact (a DECIMAL result), so it equals the sum of ``CAST(... AS DECIMAL(20,0))``. With
    ``materialize`` (for a bounded number of rows: a small table or one key range), a ``LIMIT`` that
    drops no row keeps the optimizer from merging the derived table into the outer query, where it
    would compute the row's SHA2 once per use of ``r.h`` (three times); the derived table, 64 ASCII
    bytes a row, then stays an in-memory temporary table."""
    src = quote_ident(table)
    cond = f" WHERE {where}" if where else ""
    if mode != "full":
        return f"SELECT COUNT(*) FROM {src} AS t{cond}"
    lengths = lengths or {}
    row = "CONCAT(" + ", ".join(column_expr(n, dt, lengths.get(n)) for n, dt in columns) + ")"
    hash_expr = f"CONVERT(SHA2({row}, 256) USING ascii)" if materialize else f"SHA2({row}, 256)"
    limit = f" LIMIT {MAX_LIMIT}" if materialize else ""
    return ("SELECT COUNT(*), "
            "COALESCE(SUM(CAST(CONV(SUBSTRING(r.h, 1, 16), 16, 10) AS UNSIGNED)), 0), "
            "COALESCE(SUM(CAST(CONV(SUBSTRING(r.h, 17, 16), 16, 10) AS UNSIGNED)), 0), "
            "COALESCE(SUM(r.h IS NULL), 0) "
            f"FROM (SELECT {hash_expr} AS h FROM {src} AS t{cond}{limit}) AS r")


INTEGER_TYPES = {"tinyint", "smallint", "mediumint", "int", "bigint"}
SPLIT_ROWS = 50_000  # tables with more (estimated) rows are cut into primary-key ranges across the sessions
CHUNK_ROWS = 100_000  # at most about this many rows per key range (its derived table is held in memory)
SESSION_HEAP = 64 << 20  # tmp_table_size/max_heap_table_size of a fingerprint session (room for a range's hashes)


def single_integer_key(conn, database: str, cols: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """table -> its primary key column, for tables whose primary key is one integer column."""
    pk: dict[str, list[str]] = {}
    for t, c in query(conn, "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
                            "WHERE TABLE_SCHEMA = %s AND INDEX_NAME = 'PRIMARY'", (database,)):
        pk.setdefault(t, []).append(c)
    out: dict[str, str] = {}
    for t, cs in pk.items():
        types = dict(cols.get(t, []))
        if len(cs) == 1 and (types.get(cs[0]) or "").lower() in INTEGER_TYPES:
            out[t] = cs[0]
    return out


def key_ranges(conn, table: str, key: str, parts: int) -> list[str]:
    """WHERE conditions cutting ``table`` into ``parts`` disjoint ranges of ``key`` that together hold
    every row (the first and last are open-ended, so rows outside MIN..MAX cannot be missed)."""
    k = "t." + quote_ident(key)
    lo, hi = query(conn, f"SELECT MIN({k}), MAX({k}) FROM {quote_ident(table)} AS t")[0]
    if lo is None or parts < 2 or int(hi) - int(lo) < parts:
        return [""]
    step = (int(hi) - int(lo)) // parts + 1
    cuts = [int(lo) + step * i for i in range(1, parts)]
    conds = [f"{k} < {cuts[0]}"]
    conds += [f"{k} >= {a} AND {k} < {b}" for a, b in zip(cuts, cuts[1:])]
    conds.append(f"{k} >= {cuts[-1]}")
    return conds


def base_tables(conn, database: str) -> list[tuple[str, str | None]]:
    """(name, engine) of every base table of ``database`` (sequences and views excluded), by name."""
    return [(r[0], r[1]) for r in query(
        conn, "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
              "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME", (database,))]


def table_columns(conn, database: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for t, c, dt in query(conn, "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
                                "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION", (database,)):
        out.setdefault(t, []).append((c, dt))
    return out


def fixed_lengths(conn, database: str) -> dict[str, dict[str, int]]:
    """table -> {column: fixed text length} for the DATE, DATETIME and TIMESTAMP columns of ``database``."""
    out: dict[str, dict[str, int]] = {}
    for t, c, dt, p in query(conn, "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, DATETIME_PRECISION "
                                   "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                                   "AND DATA_TYPE IN ('date', 'datetime', 'timestamp')", (database,)):
        n = fixed_text_length(dt, p)
        if n is not None:
            out.setdefault(t, {})[c] = n
    return out


def transactional_engines(conn) -> set[str]:
    """Storage engines whose tables a consistent-snapshot transaction sees as of its snapshot."""
    return {r[0].lower() for r in query(conn, "SELECT ENGINE FROM information_schema.ENGINES WHERE TRANSACTIONS = 'YES'")}


def table_fingerprints(conn, database: str, mode: str, extra: list | None = None,
                       counted: set[str] | frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Per base table of ``database``: ``{kind: table, rows, hash, info: {engine}}`` (hash None in rows mode).

    ``counted``: tables whose content hash is taken from the dump text (mariadb_dumptext); here they
    get only ``COUNT(*)``, ``method: dump-text`` and ``hash: None`` for the caller to fill in.

    ``extra``: more sessions in the very same snapshot as ``conn`` (the caller proves that). Then the
    work is shared: large tables with a one-column integer primary key are cut into key ranges, and the
    pieces run largest first, one per session at a time; the ranges' counts and sums add up exactly to
    the whole table's, so the result does not depend on the number of sessions."""
    conns = [conn, *(extra or [])]
    cols = table_columns(conn, database)
    tables = base_tables(conn, database)
    estimate = {r[0]: int(r[1] or 0) for r in query(
        conn, "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,))}
    keys = single_integer_key(conn, database, cols) if mode == "full" else {}
    lengths = fixed_lengths(conn, database) if mode == "full" else {}
    units: list[tuple[int, str, str]] = []  # (estimated rows, table, where)
    for name, _engine in tables:
        n = estimate.get(name, 0)
        conds = [""]
        if name in keys and name not in counted and (n > CHUNK_ROWS or (len(conns) > 1 and n > SPLIT_ROWS)):
            parts = max(len(conns) if n > SPLIT_ROWS else 1, -(-n // max(CHUNK_ROWS, 1)))
            conds = key_ranges(conn, name, keys[name], parts)
        units += [(n // len(conds), name, w) for w in conds]
    units.sort(key=lambda u: -u[0])
    totals: dict[str, list[int]] = {name: [0, 0, 0, 0] for name, _ in tables}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work(c) -> None:
        while True:
            with lock:
                if not units or failures:
                    return
                _, name, where = units.pop(0)
            try:  # a key range, or a table estimated small, is hashed once per row in a materialized derived table
                small = bool(where) or estimate.get(name, 0) <= CHUNK_ROWS
                how = "rows" if name in counted else mode
                row = query(c, table_sql(name, cols.get(name, []), how, where or None, materialize=small,
                                         lengths=lengths.get(name)))[0]
            except BaseException as e:  # driver errors: name the table
                from .mariadb_conn import error_reason

                with lock:
                    failures.append(JobFailed(f"fingerprinting table {name}: {error_reason(e)}"))
                return
            with lock:
                acc = totals[name]
                for i, v in enumerate(row):
                    acc[i] += int(v or 0)

    if mode == "full":
        for c in conns:
            query(c, f"SET SESSION tmp_table_size = {SESSION_HEAP}, max_heap_table_size = {SESSION_HEAP}")
    threads = [threading.Thread(target=work, args=(c,), name=f"mariadb-fingerprint-{i}", daemon=True)
               for i, c in enumerate(conns[1:], 1)]
    for t in threads:
        t.start()
    work(conn)
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    out: dict[str, dict[str, Any]] = {}
    for name, engine in tables:
        row = totals[name]
        entry: dict[str, Any] = {"kind": "table", "rows": row[0], "hash": None, "info": {"engine": engine}}
        if mode == "full" and name in counted:
            entry["method"] = TEXT_METHOD
        elif mode == "full":
            if row[3]:
                raise JobFailed(f"fingerprinting table {name}: {row[3]} row(s) could not be encoded "
                                "(a row longer than max_allowed_packet?); raise max_allowed_packet on the server")
            entry["hash"] = f"{row[1] % MOD64:016x}{row[2] % MOD64:016x}"
        out[table_key(name)] = entry
    return out


def _strip_db(text: str | None, database: str) -> str | None:
    """Remove ``\\`db\\`.`` qualifiers (views are stored fully qualified; the scratch database has another name)."""
    if text is None:
        return None
    return text.replace(quote_ident(database) + ".", "")


def _h(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def schema_items(conn, database: str) -> dict[str, str]:
    """name -> 16 hex digits of SHA-256 over the canonical JSON of the object's definition fields."""
    db = (database,)
    items: dict[str, Any] = {}
    for r in query(conn, "SELECT TABLE_NAME, TABLE_TYPE, ENGINE, TABLE_COLLATION, TABLE_COMMENT "
                         "FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", db):
        if r[1] == "VIEW":
            continue
        items[f"table {quote_ident(r[0])}"] = {"type": r[1], "engine": r[2], "collation": r[3], "comment": r[4]}
    for r in query(conn, "SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, CHARACTER_SET_NAME, "
                         "COLLATION_NAME, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, GENERATION_EXPRESSION, COLUMN_COMMENT "
                         "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s", db):
        items[f"column {quote_ident(r[0])}.{quote_ident(r[1])}"] = {
            "position": r[2], "type": r[3], "charset": r[4], "collation": r[5], "nullable": r[6],
            "default": r[7], "extra": r[8], "generated": _strip_db(r[9], database), "comment": r[10]}
    indexes: dict[str, dict[str, Any]] = {}
    for r in query(conn, "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME, SUB_PART, "
                         "INDEX_TYPE, COLLATION FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
                         "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX", db):
        key = f"index {quote_ident(r[0])}.{quote_ident(r[1])}"
        ix = indexes.setdefault(key, {"unique": not int(r[2]), "type": r[6], "columns": []})
        ix["columns"].append([r[4], r[5], r[7]])
    items.update(indexes)
    for r in query(conn, "SELECT TABLE_NAME, CONSTRAINT_NAME, CONSTRAINT_TYPE FROM information_schema.TABLE_CONSTRAINTS "
                         "WHERE CONSTRAINT_SCHEMA = %s", db):
        items[f"constraint {quote_ident(r[0])}.{quote_ident(r[1])}"] = {"type": r[2]}
    for r in query(conn, "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                         "WHERE CONSTRAINT_SCHEMA = %s", db):
        key = f"constraint {quote_ident(r[0])}.{quote_ident(r[1])}"
        items[key] = {**items.get(key, {}), "check": _strip_db(r[2], database)}
    for r in query(conn, "SELECT TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME, UPDATE_RULE, DELETE_RULE "
                         "FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s", db):
        key = f"constraint {quote_ident(r[0])}.{quote_ident(r[1])}"
        items[key] = {**items.get(key, {}), "references": r[2], "on_update": r[3], "on_delete": r[4]}
    for r in query(conn, "SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE, ALGORITHM "
                         "FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s", db):
        items[f"view {quote_ident(r[0])}"] = {"definition": _strip_db(r[1], database), "check_option": r[2],
                                              "security": r[3], "algorithm": r[4]}
    for r in query(conn, "SELECT TRIGGER_NAME, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_ORDER, ACTION_TIMING, "
                         "ACTION_STATEMENT, SQL_MODE FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s", db):
        items[f"trigger {quote_ident(r[0])}"] = {"event": r[1], "table": r[2], "order": r[3], "timing": r[4],
                                                 "statement": _strip_db(r[5], database), "sql_mode": r[6]}
    params: dict[tuple[str, str], list] = {}
    for r in query(conn, "SELECT SPECIFIC_NAME, ROUTINE_TYPE, ORDINAL_POSITION, PARAMETER_MODE, PARAMETER_NAME, "
                         "DTD_IDENTIFIER FROM information_schema.PARAMETERS WHERE SPECIFIC_SCHEMA = %s "
                         "ORDER BY SPECIFIC_NAME, ORDINAL_POSITION", db):
        params.setdefault((r[0], r[1]), []).append([r[2], r[3], r[4], r[5]])
    for r in query(conn, "SELECT ROUTINE_NAME, ROUTINE_TYPE, DTD_IDENTIFIER, ROUTINE_DEFINITION, IS_DETERMINISTIC, "
                         "SQL_DATA_ACCESS, SECURITY_TYPE, SQL_MODE, ROUTINE_COMMENT "
                         "FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s", db):
        items[f"{r[1].lower()} {quote_ident(r[0])}"] = {
            "returns": r[2], "body": _strip_db(r[3], database), "deterministic": r[4], "data_access": r[5],
            "security": r[6], "sql_mode": r[7], "comment": r[8], "parameters": params.get((r[0], r[1]), [])}
    for r in query(conn, "SELECT EVENT_NAME, EVENT_DEFINITION, EVENT_TYPE, INTERVAL_VALUE, INTERVAL_FIELD, "
                         "ON_COMPLETION, STATUS, SQL_MODE, EVENT_COMMENT FROM information_schema.EVENTS "
                         "WHERE EVENT_SCHEMA = %s", db):
        items[f"event {quote_ident(r[0])}"] = {
            "definition": _strip_db(r[1], database), "type": r[2], "interval": [r[3], r[4]], "on_completion": r[5],
            "status": r[6], "sql_mode": r[7], "comment": r[8]}
    return {k: _h(v) for k, v in sorted(items.items())}


def schema_fingerprint(conn, database: str) -> dict[str, Any]:
    items = schema_items(conn, database)
    h = hashlib.sha256("".join(f"{k} {v}\n" for k, v in sorted(items.items(), key=lambda kv: kv[0].encode())).encode())
    return {"kind": "schema", "hash": h.hexdigest(), "items": items,
            "info": {"not_hashed": "definers (DEFINER=) and event schedule times, which depend on the restoring account "
                                   "and clock"}}


def database_properties(conn, database: str) -> dict[str, Any]:
    row = query(conn, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                      "WHERE SCHEMA_NAME = %s", (database,))
    if not row:
        raise JobFailed(f"database {database} does not exist")
    return {"kind": "database", "character_set": row[0][0], "collation": row[0][1]}


def all_fingerprints(conn, database: str, mode: str, extra: list | None = None,
                     counted: set[str] | frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Every entry of ``database``: tables, ``schema`` and ``database``; ``conn`` (and every session of
    ``extra``) is inside the snapshot. ``counted``: as for table_fingerprints."""
    out = table_fingerprints(conn, database, mode, extra, counted)
    out[SCHEMA_KEY] = schema_fingerprint(conn, database)
    out[DATABASE_KEY] = database_properties(conn, database)
    return dict(sorted(out.items()))

