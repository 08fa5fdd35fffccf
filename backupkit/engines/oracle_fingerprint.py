"""Oracle fingerprints: row counts and order-independent content hashes per table, computed in SQL.

Owns the SQL an auditor can rerun (docs/format.md, "Oracle"): the canonical text
of each column by type, the per-row digest (``STANDARD_HASH`` SHA-256 on 12c and
later, two seeded ``ORA_HASH`` values on 11g), and the sums modulo 2^64 that make
the hash independent of row order. At backup every query reads ``AS OF SCN :scn``,
the SCN the Data Pump export used; on the restored copy it reads the table as is.
Keys are table names without the schema (the drill remaps the schema).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import JobFailed
from .oracle_conn import one_line, ora_codes
from .oracle_datapump import explain

METHOD_SHA256 = "sha256"  # STANDARD_HASH(x, 'SHA256'), LOBs with DBMS_CRYPTO.HASH typ 4 (SHA-256): 12c and later
METHOD_ORA_HASH = "ora_hash"  # ORA_HASH seeds 0 and 1, LOBs with DBMS_CRYPTO.HASH typ 3 (SHA-1): 11g
GROUP = {METHOD_SHA256: 48, METHOD_ORA_HASH: 200}  # column digests per group: the concatenation stays < 4000 bytes
SCHEMA_KEY = "schema"

TABLES_SQL = ("SELECT t.table_name FROM all_tables t WHERE t.owner = :owner AND t.temporary = 'N' AND t.nested = 'NO' "
              "AND t.secondary = 'N' AND t.dropped = 'NO' AND (t.iot_type IS NULL OR t.iot_type = 'IOT') "
              "AND NOT EXISTS (SELECT 1 FROM all_external_tables e WHERE e.owner = t.owner AND e.table_name = t.table_name) "
              "ORDER BY t.table_name")
COLUMNS_SQL = ("SELECT table_name, column_name, data_type, data_type_owner, data_length, data_precision, data_scale, "
               "nullable FROM all_tab_cols WHERE owner = :owner AND hidden_column = 'NO' AND virtual_column = 'NO' "
               "ORDER BY table_name, column_id")
OBJECTS_SQL = ("SELECT object_type, object_name FROM all_objects WHERE owner = :owner AND generated = 'N' "
               "AND object_name NOT LIKE 'BIN$%' AND object_type NOT IN ('LOB', 'LOB PARTITION', 'TABLE PARTITION', "
               "'TABLE SUBPARTITION', 'INDEX PARTITION', 'INDEX SUBPARTITION') ORDER BY object_type, object_name")

NUMBER_TEXT = "TO_CHAR({c}, 'TM9', 'NLS_NUMERIC_CHARACTERS=''.,''')"
_TEXT_TYPES = ("CHAR", "VARCHAR2", "NCHAR", "NVARCHAR2", "RAW")
_NUMBER_TYPES = ("NUMBER", "FLOAT", "BINARY_FLOAT", "BINARY_DOUBLE")
_LOB_TYPES = ("CLOB", "NCLOB", "BLOB")


def method_for(major: int) -> str:
    return METHOD_SHA256 if major >= 12 else METHOD_ORA_HASH


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def digest(x: str, method: str) -> str:
    """SQL for the hex digest of expression ``x``: 64 hex digits (sha256) or 16 (ora_hash)."""
    if method == METHOD_SHA256:
        return f"RAWTOHEX(STANDARD_HASH({x}, 'SHA256'))"
    return (f"LPAD(TO_CHAR(ORA_HASH({x}, 4294967295, 0), 'FMXXXXXXXX'), 8, '0') || "
            f"LPAD(TO_CHAR(ORA_HASH({x}, 4294967295, 1), 'FMXXXXXXXX'), 8, '0')")


def canonical(col: str, data_type: str, type_owner: str | None, method: str) -> tuple[str | None, str]:
    """(SQL for the canonical value of column ``col`` of alias t, or None when it cannot be hashed; why)."""
    c = f"t.{quote(col)}"
    base = data_type.split("(")[0]
    if type_owner:
        return None, f"{data_type} is an object type"
    if base in _TEXT_TYPES:
        return c, "stored bytes"
    if base in _NUMBER_TYPES:
        return NUMBER_TEXT.format(c=c), "TM9 text"
    if data_type == "DATE":
        return f"TO_CHAR({c}, 'SYYYY-MM-DD HH24:MI:SS')", "date text"
    if base == "TIMESTAMP":
        tz = " TZR" if data_type.endswith("WITH TIME ZONE") and "LOCAL" not in data_type else ""
        return f"TO_CHAR({c}, 'SYYYY-MM-DD HH24:MI:SS.FF9{tz}')", "timestamp text"
    if base.startswith("INTERVAL"):
        return f"TO_CHAR({c})", "interval text"
    if base in _LOB_TYPES:
        typ = 4 if method == METHOD_SHA256 else 3
        return (f"CASE WHEN DBMS_LOB.GETLENGTH({c}) = 0 THEN '0:' ELSE DBMS_LOB.GETLENGTH({c}) || ':' || "
                f"RAWTOHEX(DBMS_CRYPTO.HASH({c}, {typ})) END"), "length and hash"
    reasons = {"LONG": "LONG cannot be used in SQL expressions", "LONG RAW": "LONG RAW cannot be used in SQL expressions",
               "BFILE": "a BFILE points outside the database", "ROWID": "row addresses change on import",
               "UROWID": "row addresses change on import"}
    return None, reasons.get(data_type, f"type {data_type} is not hashed")


def row_digest(columns: list[tuple[str, str]], method: str) -> str:
    """SQL for the row digest R from [(column, canonical SQL)] (docs/format.md)."""
    terms = [f"CASE WHEN t.{quote(col)} IS NULL THEN 'N' ELSE {digest(expr, method)} END" for col, expr in columns]
    if not terms:
        terms = ["'-'"]
    size = GROUP[method]
    groups = [digest(" || ".join(terms[i:i + size]), method) for i in range(0, len(terms), size)]
    return digest(" || ".join(groups), method)


def table_sql(schema: str, table: str, columns: list[tuple[str, str]], *, mode: str, method: str,
              as_of_scn: bool) -> str:
    """The fingerprint query of one table: COUNT(*) and, in full mode, the hash halves as hex."""
    src = f"{quote(schema)}.{quote(table)}" + (" AS OF SCN :scn" if as_of_scn else "")
    if mode != "full":
        return f"SELECT COUNT(*) FROM {src} t"
    halves = [1, 17] if method == METHOD_SHA256 else [1]
    sums = ", ".join(
        f"LPAD(TO_CHAR(MOD(NVL(SUM(TO_NUMBER(SUBSTR(d, {i}, 16), 'XXXXXXXXXXXXXXXX')), 0), 18446744073709551616), "
        f"'FMXXXXXXXXXXXXXXXX'), 16, '0')" for i in halves)
    return f"SELECT COUNT(*), {sums} FROM (SELECT {row_digest(columns, method)} AS d FROM {src} t)"


def _fetchall(conn, sql: str, binds: dict) -> list[tuple]:
    cur = conn.cursor()
    try:
        cur.arraysize = 1000
        cur.execute(sql, binds)
        return cur.fetchall()
    finally:
        cur.close()


def table_columns(conn, schema: str) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for row in _fetchall(conn, COLUMNS_SQL, {"owner": schema}):
        out.setdefault(row[0], []).append(row[1:])
    return out


def fingerprints(conn, schema: str, *, mode: str, method: str, scn: int | None, what: str,
                 undo_retention: int | None = None) -> dict[str, dict[str, Any]]:
    """Every table of ``schema``: rows, and in full mode hash, method, hashed columns; plus ``schema``.

    With ``scn`` every query reads AS OF SCN (the export's); ORA-01555 becomes a JobFailed that says
    which table and what to change."""
    tables = [r[0] for r in _fetchall(conn, TABLES_SQL, {"owner": schema})]
    cols = table_columns(conn, schema)
    out: dict[str, dict[str, Any]] = {}
    for table in tables:
        hashed, skipped = [], {}
        for name, data_type, type_owner, *_ in cols.get(table, []):
            expr, why = canonical(name, data_type, type_owner, method)
            if expr is None:
                skipped[name] = why
            else:
                hashed.append((name, expr))
        sql = table_sql(schema, table, hashed, mode=mode, method=method, as_of_scn=scn is not None)
        cur = conn.cursor()
        try:
            cur.execute(sql, {"scn": scn} if scn is not None else {})
            row = cur.fetchone()
        except Exception as e:
            codes = ora_codes(e)
            hint = explain(codes, scn=scn, undo=undo_retention)
            if "ORA-00904" in codes and "STANDARD_HASH" in str(e).upper():
                hint = "STANDARD_HASH needs Oracle 12c or later: this copy cannot be fingerprinted with the backup's method"
            elif "DBMS_CRYPTO" in str(e).upper():
                hint = "LOB columns are hashed with DBMS_CRYPTO: GRANT EXECUTE ON SYS.DBMS_CRYPTO to the account"
            raise JobFailed(f"{what}: fingerprint of {schema}.{table}"
                            + (f" at SCN {scn}" if scn is not None else "")
                            + f" failed: {hint + ' | ' if hint else ''}{one_line(e)}") from None
        finally:
            cur.close()
        entry: dict[str, Any] = {"kind": "table", "rows": int(row[0])}
        if mode == "full":
            entry.update(hash="".join(row[1:]).lower(), method=method, columns=[n for n, _ in hashed])
            if skipped:
                entry["info"] = {"not_hashed": skipped}
        else:
            entry["hash"] = None
        out[table] = entry
    out[SCHEMA_KEY] = schema_fingerprint(conn, schema, cols)
    return dict(sorted(out.items()))


def schema_fingerprint(conn, schema: str, cols: dict[str, list[tuple]]) -> dict[str, Any]:
    """Objects by type and name (system-generated names excluded: import renames them); a table's value
    is the first 16 hex digits of SHA-256 over its column definitions."""
    items: dict[str, str] = {}
    for object_type, name in _fetchall(conn, OBJECTS_SQL, {"owner": schema}):
        value = "present"
        if object_type == "TABLE":
            text = "\n".join(f"{c[0]} {c[1]} {c[3]} {c[4]} {c[5]} {c[6]}" for c in cols.get(name, []))
            value = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        items[f"{object_type} {name}"] = value
    body = "".join(f"{k} {v}\n" for k, v in sorted(items.items()))
    return {"kind": "schema", "items": items, "hash": hashlib.sha256(body.encode("utf-8")).hexdigest()}
