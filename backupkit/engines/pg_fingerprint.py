"""Fingerprints of a PostgreSQL database, computed in SQL (docs/format.md, "Fingerprints").

The same functions run on the source (inside the dump's snapshot) and on the
scratch copy after the restore; equal values prove the restore is complete.

Format 3 (``details.fingerprint_format = 3``, written by this version; format 2
differs only in the full-mode row hash, see below) covers
every relation whose contents a restore must bring back, keyed by quoted
identifiers (``format('%I.%I', schema, name)``, so ``a."b.c"`` and ``"a.b".c``
never share an entry):

- ordinary tables (``FROM ONLY``) and partitioned tables at their root (the
  whole logical table; leaf row counts are recorded under ``info`` and never
  compared, because pg_dump reloads a partitioned table through its root and
  a hash partition may route rows to another leaf);
- materialized views: the populated flag and, when populated, the content the
  restore's ``REFRESH`` must produce (the definition evaluated in the dump's
  snapshot);
- ``sequence <key>``: ``last_value`` and ``is_called`` as pg_dump wrote them;
- ``large objects``: count and, in ``full`` mode, per-object SHA-256 hashes
  summed order-independently;
- ``schema`` and ``database`` (pg_schema.py).

``full`` mode (format 3, ``method: row64``) hashes every row to one 64-bit value
and sums those exactly, modulo 2^64 (order independent, yet duplicate rows
count). Each column is hashed by content: columns whose type's binary hash is
content-exact and OID-free (``BINARY_TYPES``) go into ``hash_record_extended``
as they are; numeric and interval go in as their binary send form
(``numeric_send`` keeps the display scale, ``interval_send`` the units), so
``1.50`` and ``1.5``, ``1 day`` and ``24 hours`` differ; every other column
(float, json/jsonb, enums, reg* types, arrays, citext, text under a
nondeterministic collation...) through its text output. The row's record hash
then seeds ``hashtextextended`` of the text columns (or of ``''``), which
binds the columns of a row together: the record hash alone is a linear
combination of per-column hashes, so its sum over rows could not see values
swapped between rows. The split is recorded per table and the drill recomputes
with the recorded split.

Format 4 adds ``method: dump-text`` for ordinary tables in ``full`` mode: the
SHA-256 of the table's COPY rows exactly as ``pg_dump -Fc -Z0`` wrote them into
the backup, hashed by pg_archive.DataBlocks as the archive streams by (no second
scan of the source); only ``count(*)`` runs here. ``dump_text_ok`` says which
tables qualify; the drill dumps the restored copy again and hashes it the same
way, and ``copy_text_hash`` computes the same value row by row from ``COPY ...
TO STDOUT`` (the definition, and the fallback).

Format 2 entries (``method: columns``: two seeds, numeric and interval by
text, no final hash) are recomputed exactly as written, so manifests written
by the previous version keep verifying.

Format 1 (manifests without ``kind`` in their entries) is recomputed by the
``legacy_*`` functions exactly as it was written: unquoted ``schema.table``
keys, ordinary tables only, ``record`` or ``text`` method per table.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Collection
from typing import Any, Callable

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from ..errors import JobFailed
from .pg_archive import frame_row

logger = logging.getLogger(__name__)

MODES = ("rows", "full")
FORMAT = 4
METHOD = "row64"  # format 3: one 64-bit hash per row (docs/format.md)
DUMP_TEXT_METHOD = "dump-text"  # format 4: SHA-256 of the table's COPY rows as pg_dump wrote them
DUMP_TEXT_PLAN = {"method": DUMP_TEXT_METHOD}
COLUMNS_METHOD = "columns"  # format 2: two seeded 64-bit hashes per row, recomputed for old manifests
KEY_FORMAT = "quoted"  # format('%I.%I', nspname, relname)
LARGE_OBJECTS_KEY = "large objects"

# Session settings of every fingerprint session, on top of pg_conn.PINNED_SETTINGS.
# row_security=off makes a query that RLS would filter fail instead of silently
# counting fewer rows; search_path=pg_catalog makes reg* text output and catalog
# deparsing schema-qualified on both sides.
FINGERPRINT_SETTINGS = {"row_security": "off", "search_path": "pg_catalog"}

# Built-in types (fixed OIDs) whose extended hash function is a function of the
# exact value and nothing else: equal hash <=> equal text output. text-like types
# qualify only under a deterministic collation; bpchar only with a length (always
# padded). Everything else is hashed through its text output.
BINARY_TYPES = {
    16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2", 23: "int4", 25: "text", 26: "oid",
    1042: "bpchar", 1043: "varchar", 1082: "date", 1083: "time", 1114: "timestamp", 1184: "timestamptz",
    2950: "uuid",
}
COLLATABLE = {25, 1042, 1043}
# Types whose binary send form is a function of the exact value and its text form (and nothing
# else): numeric_send writes sign, weight, display scale and base-10000 digits (stored numerics are
# normalized, so equal text <=> equal bytes); interval_send writes microseconds, days and months
# separately. float4/float8 stay on text: float8send would also tell NaN payloads apart, which the
# text form (and so a restore) does not keep.
SEND_TYPES = {1700: "numeric_send", 1186: "interval_send"}
SEND_FUNCTIONS = frozenset(SEND_TYPES.values())
RECORD_MIN_VERSION = 140000

RELATIONS_SQL = """
SELECT c.oid, n.nspname, c.relname, format('%I.%I', n.nspname, c.relname), c.relkind, c.relispopulated
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm', 'S')
   AND NOT c.relispartition
   AND c.relpersistence <> 't'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 4
"""

COLUMNS_SQL = """
SELECT a.attrelid, a.attname, a.atttypid, a.atttypmod,
       coalesce((SELECT co.collisdeterministic FROM pg_collation co WHERE co.oid = a.attcollation), true)
  FROM pg_attribute a
 WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attrelid, a.attnum
"""
COLUMNS_SQL_PRE12 = COLUMNS_SQL.replace("co.collisdeterministic", "true")

DOMAINS_SQL = "SELECT oid, typbasetype FROM pg_type WHERE typtype = 'd'"
TYPES_SQL = "SELECT oid, typtype, typelem, typbasetype FROM pg_type"
INHERITS_SQL = "SELECT inhrelid, inhparent FROM pg_inherits"

# Types whose text output pg_dump does not pin and the dump-text method must not depend on: money
# follows lc_monetary (pg_dump keeps the server's, so a dump is only restorable under it).
DUMP_TEXT_UNSAFE_TYPES = {790: "money", 791: "money[]"}

# The session pg_dump writes COPY data in (pg_dump pins DateStyle, IntervalStyle, extra_float_digits and
# search_path itself; backupkit adds TimeZone and bytea_output through PGOPTIONS, see dump_env), and
# what copy_text_hash reproduces.
DUMP_SESSION = {"DateStyle": "ISO", "IntervalStyle": "postgres", "extra_float_digits": "3", "search_path": "",
                "TimeZone": "UTC", "bytea_output": "hex", "row_security": "off", "synchronize_seqscans": "off"}
DUMP_PGOPTIONS = "-c TimeZone=UTC -c bytea_output=hex"


def dump_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a pg_dump whose COPY text the dump-text method hashes: TimeZone and
    bytea_output pinned (appended to any PGOPTIONS, so they win), and the database's own encoding
    (no PGCLIENTENCODING), as on the other side of the comparison."""
    out = {k: v for k, v in env.items() if k != "PGCLIENTENCODING"}
    out["PGOPTIONS"] = f"{out['PGOPTIONS']} {DUMP_PGOPTIONS}" if out.get("PGOPTIONS") else DUMP_PGOPTIONS
    return out

LEAVES_SQL = """
SELECT format('%%I.%%I', n.nspname, c.relname), n.nspname, c.relname
  FROM pg_partition_tree(%s::oid::regclass) p
  JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE p.isleaf ORDER BY 1
"""

LO_SQL = {
    "rows": "SELECT count(*), NULL, NULL FROM pg_largeobject_metadata",
    "full": """
SELECT count(*),
       coalesce(sum(hashtextextended(l.oid::text || ':' || encode(sha256(lo_get(l.oid)), 'hex'), 0)), 0),
       coalesce(sum(hashtextextended(l.oid::text || ':' || encode(sha256(lo_get(l.oid)), 'hex'), 1)), 0)
  FROM pg_largeobject_metadata l""",
}


def render_hash(s1: int, s2: int | None = None) -> str:
    """Given the exact sum(s), return each modulo 2**64 as 16 hex digits, concatenated
    (format 3 tables: one sum, 16 digits; format 2 and large objects: two sums, 32 digits)."""
    out = f"{int(s1) % (1 << 64):016x}"
    return out if s2 is None else out + f"{int(s2) % (1 << 64):016x}"


def set_fingerprint_session(conn: psycopg.Connection) -> None:
    """Apply FINGERPRINT_SETTINGS for the rest of the session (or the current transaction's
    remainder plus the session, when called outside a transaction block)."""
    for name, value in FINGERPRINT_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


def column_plan(columns: list[tuple[str, int, int, bool]], domains: dict[int, int], *,
                binary_allowed: bool = True, method: str = METHOD) -> dict[str, Any]:
    """Given a relation's columns as (name, type oid, typmod, collation deterministic) in attnum
    order and the domain -> base type map, return the column plan of ``method``:
    {"method", "binary": [...], "send": [[name, send function], ...], "text": [...]} for row64 (format 3),
    {"method", "binary": [...], "text": [...]} for columns (format 2): which columns are hashed by their
    type's binary hash (content-exact, OID-free), which by their binary send form, which by text output."""
    plan: dict[str, Any] = {"method": method, "binary": [], "text": []}
    if method == METHOD:
        plan = {"method": method, "binary": [], "send": [], "text": []}
    for name, typ, typmod, deterministic in columns:
        base, seen = typ, 0
        while base in domains and seen < 32:  # domains over domains
            base, seen = domains[base], seen + 1
        ok = binary_allowed and base in BINARY_TYPES
        if ok and base in COLLATABLE and not deterministic:
            ok = False  # a case-insensitive collation hashes 'A' and 'a' alike
        if ok and base == 1042 and (base != typ or typmod < 0):
            ok = False  # unbounded bpchar ignores trailing blanks when hashing
        if not ok and binary_allowed and method == METHOD and base in SEND_TYPES:
            plan["send"].append([name, SEND_TYPES[base]])
            continue
        plan["binary" if ok else "text"].append(name)
    return plan


def _cols(names: list[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in names)


def row_hash_sql(plan: dict[str, list[str]], seed: int) -> sql.Composable:
    """Format 2 (``method: columns``): the per-row hash with ``seed`` (0 or 1), over the alias ``t``:
    hashtextextended(ROW(text columns)::text, hash_record_extended(ROW(binary columns), seed))."""
    inner: sql.Composable = sql.Literal(seed)
    if plan["binary"]:
        inner = sql.SQL("hash_record_extended(ROW({}), {})").format(_cols(plan["binary"]), sql.Literal(seed))
    if plan["text"] or not plan["binary"]:
        return sql.SQL("hashtextextended(ROW({})::text, {})").format(_cols(plan["text"]), inner)
    return inner


def row64_sql(plan: dict[str, Any]) -> sql.Composable:
    """Format 3 (``method: row64``): the per-row hash over the alias ``t``:
    hashtextextended(ROW(text columns)::text or '',
                     hash_record_extended(ROW(binary columns, send_fn(send columns)), 0) or 0)."""
    send = plan.get("send") or []
    for entry in send:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] in SEND_FUNCTIONS):
            raise JobFailed(f"unknown send column in a fingerprint plan: {entry!r} (known: {sorted(SEND_FUNCTIONS)})")
    items = [sql.SQL("t.{}").format(sql.Identifier(c)) for c in plan["binary"]]
    items += [sql.SQL("{}(t.{})").format(sql.Identifier(fn), sql.Identifier(c)) for c, fn in send]
    inner: sql.Composable = sql.Literal(0)
    if items:
        inner = sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(items))
    text: sql.Composable = sql.Literal("")
    if plan["text"]:
        text = sql.SQL("ROW({})::text").format(_cols(plan["text"]))
    return sql.SQL("hashtextextended({}, {})").format(text, inner)


def content_sql(source: sql.Composable, plan: dict[str, Any], mode: str) -> sql.Composable:
    """SELECT count(*), sum(h0)[, sum(h1)] over ``source`` (a FROM item aliased ``t``): one sum for
    format 3 (row64), two for format 2 (columns)."""
    if mode == "rows":
        return sql.SQL("SELECT count(*), NULL, NULL FROM {}").format(source)
    if plan.get("method") == COLUMNS_METHOD:
        return sql.SQL("SELECT count(*), coalesce(sum({}), 0), coalesce(sum({}), 0) FROM {}").format(
            row_hash_sql(plan, 0), row_hash_sql(plan, 1), source)
    return sql.SQL("SELECT count(*), coalesce(sum({}), 0), NULL FROM {}").format(row64_sql(plan), source)


def _run(conn: psycopg.Connection, query, params=None, *, what: str):
    """Execute one fingerprint query; an RLS or privilege failure becomes a one-line JobFailed."""
    try:
        return conn.execute(query, params).fetchall()
    except psycopg.errors.InsufficientPrivilege as e:
        user = _user(conn)
        msg = " ".join(str(e).split())
        if "row-level security" in msg:
            raise JobFailed(f"{what}: row-level security would hide rows from role {user} ({msg}); fingerprint as a "
                            "superuser or a role with BYPASSRLS (ALTER ROLE ... BYPASSRLS)") from None
        raise JobFailed(f"{what}: role {user} cannot read it ({msg}); grant SELECT on it or use a role that can "
                        "read every table, sequence and large object") from None


def _user(conn: psycopg.Connection) -> str:
    try:
        return conn.execute("SELECT current_user").fetchone()[0]
    except psycopg.Error:
        return "(unknown)"


class Catalog:
    """The relations and column plans of one database, read once per fingerprint run."""

    def __init__(self, conn: psycopg.Connection):
        self.relations = [dict(zip(("oid", "schema", "name", "key", "relkind", "populated"), r))
                          for r in conn.execute(RELATIONS_SQL).fetchall()]
        self.binary_allowed = conn.info.server_version >= RECORD_MIN_VERSION
        oids = [r["oid"] for r in self.relations if r["relkind"] != "S"]
        cols_sql = COLUMNS_SQL if conn.info.server_version >= 120000 else COLUMNS_SQL_PRE12
        self.columns: dict[int, list[tuple]] = {}
        for rel, name, typ, typmod, det in conn.execute(cols_sql, (oids,)).fetchall():
            self.columns.setdefault(rel, []).append((name, typ, typmod, det))
        self.domains = dict(conn.execute(DOMAINS_SQL).fetchall())
        self.types = {oid: (typtype, elem, base) for oid, typtype, elem, base in conn.execute(TYPES_SQL).fetchall()}
        self.inherit = {oid for pair in conn.execute(INHERITS_SQL).fetchall() for oid in pair}

    def plan(self, rel: dict) -> dict[str, Any]:
        return column_plan(self.columns.get(rel["oid"], []), self.domains, binary_allowed=self.binary_allowed)

    def dump_text_ok(self, rel: dict) -> bool:
        """True when the relation's full fingerprint may be the dump-text hash: an ordinary table, neither a
        partition nor in an inheritance tree (its leaves load through the root, or its restored column order
        may differ), whose every column's text output depends only on the pinned dump session."""
        if rel["relkind"] != "r" or rel["oid"] in self.inherit:
            return False
        return all(self._text_safe(typ) for _, typ, _, _ in self.columns.get(rel["oid"], []))

    def _text_safe(self, typ: int, depth: int = 0) -> bool:
        facts = self.types.get(typ)
        if depth > 32 or typ in DUMP_TEXT_UNSAFE_TYPES or facts is None:
            return False
        typtype, elem, base = facts
        if typtype == "d":
            return self._text_safe(base, depth + 1)
        if typtype == "b":  # base types; arrays (and name, point...) through their element type
            return elem == 0 or self._text_safe(elem, depth + 1)
        return typtype == "e"  # enums by label; composite, range and pseudo types are not checked here


def recorded_plan(like: dict | None) -> dict[str, Any] | None:
    """The column plan recorded in a manifest entry (format 2 ``columns`` or format 3 ``row64``),
    or None when the entry records none (rows mode, or no entry)."""
    if like and like.get("method") == DUMP_TEXT_METHOD:
        return dict(DUMP_TEXT_PLAN)
    if not like or "binary" not in like:
        return None
    method = like.get("method") or COLUMNS_METHOD
    if method == COLUMNS_METHOD:
        return {"method": method, "binary": list(like.get("binary") or []), "text": list(like.get("text") or [])}
    if method != METHOD:
        raise JobFailed(f"unknown fingerprint method {method!r} in the manifest (known: {COLUMNS_METHOD}, {METHOD}, "
                        f"{DUMP_TEXT_METHOD})")
    return {"method": method, "binary": list(like.get("binary") or []),
            "send": [list(x) for x in like.get("send") or []], "text": list(like.get("text") or [])}


def _kind(relkind: str) -> str:
    return {"r": "table", "p": "partitioned table", "m": "materialized view", "S": "sequence"}[relkind]


def entry_key(rel: dict) -> str:
    return f"sequence {rel['key']}" if rel["relkind"] == "S" else (
        f"materialized view {rel['key']}" if rel["relkind"] == "m" else rel["key"])


def count_rows(conn: psycopg.Connection, schema: str, table: str, *, what: str) -> int:
    """count(*) of one table, without its children (``conn`` in a fingerprint session)."""
    ((n,),) = _run(conn, sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(schema, table)), what=what)
    return int(n)


def relation_fingerprint(conn: psycopg.Connection, cat: Catalog, rel: dict, mode: str, *, side: str,
                         like: dict | None = None, sequences: dict | None = None,
                         dump_text: bool = False) -> dict[str, Any]:
    """Fingerprint one relation. ``side`` is "source" (in the dump's snapshot: a materialized view
    is fingerprinted as what its definition yields) or "restored"; ``like`` is the manifest entry,
    whose column plan the restored side reuses; ``sequences`` are values read from the archive.
    With ``dump_text`` (source side, full mode), a table that qualifies gets the dump-text plan: its
    row count here and ``hash`` None, for the caller to fill in from the archive."""
    kind = _kind(rel["relkind"])
    ident = sql.Identifier(rel["schema"], rel["name"])
    what = f"{kind} {rel['key']}"
    if kind == "sequence":
        if sequences is not None and rel["key"] in sequences:
            last, called = sequences[rel["key"]]
        else:
            ((last, called),) = _run(conn, sql.SQL("SELECT last_value, is_called FROM {}").format(ident), what=what)
        return {"kind": kind, "last_value": int(last), "is_called": bool(called)}
    plan = recorded_plan(like) or (
        dict(DUMP_TEXT_PLAN) if dump_text and mode == "full" and cat.dump_text_ok(rel) else cat.plan(rel))
    if plan["method"] == DUMP_TEXT_METHOD:
        if mode != "full" or kind != "table":
            raise JobFailed(f"{what}: the manifest records method {DUMP_TEXT_METHOD} for a {kind} in {mode} mode")
        return {"kind": kind, "rows": count_rows(conn, rel["schema"], rel["name"], what=what), "hash": None, **plan}
    if (plan.get("binary") or plan.get("send")) and not cat.binary_allowed:
        raise JobFailed(f"{what} was fingerprinted with hash_record_extended at backup time, which this server "
                        f"(version {conn.info.server_version}) cannot compute; drill into PostgreSQL 14 or newer")
    out: dict[str, Any] = {"kind": kind}
    if kind == "materialized view":
        out["populated"] = bool(rel["populated"])
        if not rel["populated"]:
            out.update(rows=None, hash=None)
            return out
        if side == "source":
            ((definition,),) = _run(conn, "SELECT pg_get_viewdef(%s::oid)", (rel["oid"],), what=what)
            aliases = sql.SQL(", ").join(sql.Identifier(c[0]) for c in cat.columns.get(rel["oid"], []))
            source = sql.SQL("({}) AS t({})").format(sql.SQL(definition.strip().rstrip(";")), aliases)
        else:
            source = sql.SQL("{} AS t").format(ident)
    elif kind == "partitioned table":
        source = sql.SQL("{} AS t").format(ident)
    else:
        source = sql.SQL("ONLY {} AS t").format(ident)
    ((n, s1, s2),) = _run(conn, content_sql(source, plan, mode), what=what)
    out["rows"] = int(n)
    out["hash"] = render_hash(s1, s2) if mode == "full" else None
    if mode == "full":
        out.update(plan)  # method and column lists: the drill recomputes with exactly these
    if kind == "partitioned table":
        leaves = {}
        for key, schema, name in _run(conn, LEAVES_SQL, (rel["oid"],), what=what):
            leaves[key] = count_rows(conn, schema, name, what=f"partition {key}")
        out["info"] = {"leaf_rows": leaves}  # information only: never compared
    return out


def large_objects(conn: psycopg.Connection, mode: str) -> dict[str, Any]:
    ((n, s1, s2),) = _run(conn, LO_SQL[mode], what="large objects")
    return {"kind": "large objects", "count": int(n), "hash": render_hash(s1, s2) if mode == "full" else None}


def fingerprints(conn: psycopg.Connection, mode: str, *, side: str, like: dict | None = None,
                 sequences: dict | None = None, dump_text: bool = False) -> dict[str, dict[str, Any]]:
    """Given a connection (in the wanted snapshot, settings pinned), return every entry except
    ``schema`` and ``database`` (pg_schema.py adds those); ``dump_text`` as in relation_fingerprint."""
    if mode not in MODES:
        raise ValueError(f"fingerprint mode must be one of {MODES}, not {mode!r}")
    set_fingerprint_session(conn)
    cat = Catalog(conn)
    out: dict[str, dict[str, Any]] = {}
    for rel in cat.relations:
        key = entry_key(rel)
        out[key] = relation_fingerprint(conn, cat, rel, mode, side=side, like=(like or {}).get(key),
                                        sequences=sequences, dump_text=dump_text)
    out[LARGE_OBJECTS_KEY] = large_objects(conn, mode)
    return out


def parallel_fingerprints(connect: Callable[[], psycopg.Connection], mode: str, *, workers: int,
                          like: dict | None = None, dump_text: bool = False,
                          skip: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """Like ``fingerprints(side="restored")`` on a database nobody writes to (a restored scratch
    copy): relations are spread, largest first, over ``workers`` connections. The relations whose
    keys are in ``skip`` are left out (the caller fingerprints them otherwise)."""
    if mode not in MODES:
        raise ValueError(f"fingerprint mode must be one of {MODES}, not {mode!r}")
    with connect() as conn:
        set_fingerprint_session(conn)
        cat = Catalog(conn)
        sizes = dict(conn.execute("SELECT c.oid, pg_total_relation_size(c.oid) FROM pg_class c WHERE c.oid = ANY(%s)",
                                  ([r["oid"] for r in cat.relations],)).fetchall())
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for rel in sorted(cat.relations, key=lambda r: -(sizes.get(r["oid"]) or 0)):
        if entry_key(rel) not in skip:
            pending.put(rel)
    pending.put(None)  # the large objects
    out: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with connect() as conn:
                set_fingerprint_session(conn)
                while True:
                    try:
                        rel = pending.get_nowait()
                    except queue.Empty:
                        return
                    if rel is None:
                        out[LARGE_OBJECTS_KEY] = large_objects(conn, mode)
                        continue
                    key = entry_key(rel)
                    out[key] = relation_fingerprint(conn, cat, rel, mode, side="restored", like=(like or {}).get(key),
                                                    dump_text=dump_text)
        except BaseException as e:  # re-raised below in the calling thread
            errors.append(e)

    threads = [threading.Thread(target=work, name=f"pg-fingerprint-{i}")
               for i in range(max(1, min(workers, len(cat.relations) + 1)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return dict(sorted(out.items()))


ROWS_IMPLIED = ("not counted: the same as the backup's, because the dump-text hash is equal and it covers "
                "every row in a chunk of its own (docs/format.md)")


def dump_text_entry(rows: int | None, digest: str | None, *, implied: bool = False) -> dict[str, Any]:
    """A restored table's dump-text entry; with ``implied``, ``rows`` is the backup's count, which an
    equal hash proves (recorded as information, never compared)."""
    out: dict[str, Any] = {"kind": "table", "rows": rows, "hash": digest, **DUMP_TEXT_PLAN}
    if implied:
        out["info"] = {"rows": ROWS_IMPLIED}
    return out


def dump_text_keys(fps: dict[str, dict[str, Any]]) -> list[str]:
    """The entries whose hash is the dump-text hash (to be filled in from an archive)."""
    return sorted(k for k, v in fps.items() if isinstance(v, dict) and v.get("method") == DUMP_TEXT_METHOD)


TABLES_SQL = """
SELECT format('%%I.%%I', n.nspname, c.relname), n.nspname, c.relname, pg_relation_size(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND (%(keys)s::text[] IS NULL OR format('%%I.%%I', n.nspname, c.relname) = ANY(%(keys)s::text[]))
"""


def ordinary_tables(conn: psycopg.Connection, keys: list[str] | None) -> list[tuple[str, str, str, int]]:
    """(key, schema, table, bytes) of the ordinary tables with those quoted keys (None: all of them)."""
    return [(k, s, t, int(size)) for k, s, t, size in conn.execute(TABLES_SQL, {"keys": keys}).fetchall()]


def table_names(conn: psycopg.Connection, keys: list[str] | None) -> dict[str, tuple[str, str]]:
    """{key: (schema, table)} of the ordinary tables with those quoted keys (None: all of them)."""
    return {k: (s, t) for k, s, t, _ in ordinary_tables(conn, keys)}


def copy_text_hash(conn: psycopg.Connection, schema: str, table: str) -> str:
    """The dump-text hash by its definition (docs/format.md): SHA-256 over the rows of ``COPY ONLY
    table TO STDOUT``, in the order the server returns them, each row (with its newline) preceded by a
    zero byte and its length as 4 bytes little-endian, in the dump session's settings and the
    database's encoding. Row by row in Python: the fallback when an archive's framing is not one
    row per chunk, and what tests compare the archive walk with. The settings are transaction-local:
    call it outside a transaction (or they last until the caller's transaction ends)."""
    ident = sql.Identifier(schema, table)
    with conn.transaction():
        for name, value in DUMP_SESSION.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        conn.execute("SELECT set_config('client_encoding', current_setting('server_encoding'), true)")
        h, tail = hashlib.sha256(), b""
        with conn.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(ident)) as copy:
            for data in copy:
                lines = (tail + bytes(data)).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    row = line + b"\n"
                    h.update(frame_row(row))
                    h.update(row)
    if tail:
        raise JobFailed(f"table {schema}.{table}: COPY output did not end with a newline")
    return h.hexdigest()


def is_legacy(like: dict | None) -> bool:
    """True when ``like`` is a format-1 manifest's fingerprints (entries without ``kind``)."""
    return bool(like) and not any(isinstance(v, dict) and "kind" in v for v in like.values())


# ---- format 1 (manifests written before format 2): recomputed exactly as written ------------------

LEGACY_TABLES_SQL = """
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
LEGACY_ROWS_SQL = "SELECT count(*) FROM ONLY {table}"
LEGACY_TEXT_SQL = """
SELECT count(*),
       coalesce(sum(hashtextextended(r.txt, 0)), 0),
       coalesce(sum(hashtextextended(r.txt, 1)), 0)
  FROM (SELECT ROW(t.*)::text AS txt FROM ONLY {table} AS t) AS r
"""
LEGACY_RECORD_SQL = """
SELECT count(*),
       coalesce(sum(hash_record_extended(t, 0)), 0),
       coalesce(sum(hash_record_extended(t, 1)), 0)
  FROM ONLY {table} AS t
"""


def _legacy_record_hash(conn: psycopg.Connection, ident: sql.Composable) -> tuple | None:
    in_tx = conn.info.transaction_status == TransactionStatus.INTRANS
    if in_tx:
        conn.execute("SAVEPOINT bk_fingerprint")
    try:
        row = conn.execute(sql.SQL(LEGACY_RECORD_SQL).format(table=ident)).fetchone()
    except psycopg.errors.UndefinedFunction:
        if in_tx:
            conn.execute("ROLLBACK TO SAVEPOINT bk_fingerprint")
        return None
    if in_tx:
        conn.execute("RELEASE SAVEPOINT bk_fingerprint")
    return row


def legacy_table_fingerprint(conn: psycopg.Connection, schema: str, table: str, mode: str,
                             method: str | None = None) -> dict[str, Any]:
    """Format 1: {"rows": n, "hash": hex | None[, "method": "record"|"text"]} of one table."""
    ident = sql.Identifier(schema, table)
    if mode == "rows":
        (n,) = conn.execute(sql.SQL(LEGACY_ROWS_SQL).format(table=ident)).fetchone()
        return {"rows": int(n), "hash": None}
    if method in (None, "record"):
        row = _legacy_record_hash(conn, ident) if conn.info.server_version >= RECORD_MIN_VERSION else None
        if row is not None:
            return {"rows": int(row[0]), "hash": render_hash(row[1], row[2]), "method": "record"}
        if method == "record":
            raise JobFailed(f"table {schema}.{table} was fingerprinted with hash_record_extended at backup time, "
                            f"which this server (version {conn.info.server_version}) cannot compute; "
                            "drill into PostgreSQL 14 or newer")
    n, s1, s2 = conn.execute(sql.SQL(LEGACY_TEXT_SQL).format(table=ident)).fetchone()
    return {"rows": int(n), "hash": render_hash(s1, s2), "method": "text"}


def legacy_fingerprints(conn: psycopg.Connection, mode: str, like: dict | None = None) -> dict[str, dict[str, Any]]:
    """Format 1 over every table: keys ``schema.table`` unquoted, methods as recorded in ``like``."""
    if mode not in MODES:
        raise ValueError(f"fingerprint mode must be one of {MODES}, not {mode!r}")
    out: dict[str, dict[str, Any]] = {}
    for schema, table in conn.execute(LEGACY_TABLES_SQL).fetchall():
        key = f"{schema}.{table}"
        out[key] = legacy_table_fingerprint(conn, schema, table, mode, ((like or {}).get(key) or {}).get("method"))
    return out
