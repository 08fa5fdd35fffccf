"""The schema fingerprint and the database's own properties (docs/format.md, "Fingerprints").

``schema``: a canonical, OID-free inventory of the user objects of a database
(schemas, tables and their columns with types, defaults, identity and
collations, partitioning, views and materialized views, sequences, constraints,
indexes, functions, procedures and aggregates, triggers, RLS policies, enum,
domain, composite and range types, extensions and collations) plus, as separate
items, every object's comment, owner and grants. Each item is ``(name,
definition)`` where the name is ``pg_identify_object(...).type || ' ' ||
identity`` prefixed with ``comment``/``owner``/``acl`` for those items; the
manifest stores the first 16 hex digits of SHA-256 of each definition, and the
overall ``hash`` is SHA-256 over ``name || ' ' || itemhash || E'\\n'`` in byte
order of the names. Objects that belong to an extension are left out (the
extension recreates them).

``database``: encoding, locale provider, LC_COLLATE, LC_CTYPE, ICU locale,
``ALTER DATABASE ... SET`` and ``ALTER ROLE ... IN DATABASE ... SET`` settings
and the database comment; recorded at backup, used to create the scratch
database, applied by ``restore --to`` and compared after every restore.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from psycopg import sql

SCHEMA_KEY = "schema"
DATABASE_KEY = "database"

_USER_NS = "{ns} NOT IN ('pg_catalog', 'information_schema') AND {ns} !~ '^pg_(toast|temp_|toast_temp_)'"
_NOT_EXT = ("NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.classid = '{cat}'::regclass "
            "AND dep.objid = {oid} AND dep.deptype = 'e')")


def _ns(alias: str) -> str:
    return _USER_NS.format(ns=f"{alias}.nspname")


def _ne(cat: str, oid: str) -> str:
    return _NOT_EXT.format(cat=cat, oid=oid)


ACL_SQL = ("(SELECT string_agg(format('%s>%s:%s%s', CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END, "
           "pg_get_userbyid(x.grantor), x.privilege_type, CASE WHEN x.is_grantable THEN '*' ELSE '' END), ',' "
           "ORDER BY 1) FROM aclexplode(coalesce(acl, acldefault(acltype::\"char\", owner))) x)")


COLUMNS_DEF = """(SELECT string_agg(concat_ws(' ', quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
           CASE WHEN a.attnotnull THEN 'NOT NULL' END,
           CASE WHEN a.attidentity::text <> '' THEN 'IDENTITY ' || a.attidentity::text END,
           CASE WHEN a.attgenerated::text <> '' THEN 'GENERATED ' || a.attgenerated::text END,
           'DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid),
           CASE WHEN a.attcollation <> t.typcollation THEN 'COLLATE ' || (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END,
           'ACL ' || (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x),
           CASE WHEN a.attstattarget >= 0 THEN 'STATISTICS ' || a.attstattarget::text END,
           CASE WHEN a.attstorage::text <> t.typstorage::text THEN 'STORAGE ' || a.attstorage::text END), ', ' ORDER BY a.attnum)
      FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)"""

# Every row: (catalog, oid, owner oid or NULL, acl text[] or NULL, acldefault type or NULL, definition)
OBJECTS_SQL = f"""
SELECT 'pg_namespace'::regclass, n.oid, n.nspowner, n.nspacl, 'n', ''
  FROM pg_namespace n WHERE {_ns('n')} AND {_ne('pg_namespace', 'n.oid')}
UNION ALL
SELECT 'pg_class'::regclass, c.oid, c.relowner, c.relacl, CASE WHEN c.relkind::text = 'S' THEN 's' ELSE 'r' END,
       concat_ws(' | ', 'kind ' || c.relkind::text, 'persistence ' || c.relpersistence::text, 'columns ' || {COLUMNS_DEF},
                 'rls ' || c.relrowsecurity::text || '/' || c.relforcerowsecurity::text,
                 'replica identity ' || c.relreplident::text,
                 'partition key ' || pg_get_partkeydef(c.oid),
                 'bound ' || pg_get_expr(c.relpartbound, c.oid),
                 'inherits ' || (SELECT string_agg(i.inhparent::regclass::text, ',' ORDER BY i.inhseqno)
                                   FROM pg_inherits i WHERE i.inhrelid = c.oid),
                 'options ' || array_to_string(c.reloptions, ','),
                 'definition ' || CASE WHEN c.relkind::text IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
                 'sequence ' || (SELECT concat_ws(' ', format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                                                  s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
                                   FROM pg_sequence s WHERE s.seqrelid = c.oid),
                 'owned by ' || (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                                   FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                  WHERE c.relkind::text = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind::text IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_ns('n')} AND {_ne('pg_class', 'c.oid')}
UNION ALL
SELECT 'pg_class'::regclass, c.oid, NULL, NULL, NULL, pg_get_indexdef(c.oid) || ' | clustered ' || i.indisclustered::text
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {_ns('n')} AND {_ne('pg_class', 'i.indrelid')}
UNION ALL
SELECT 'pg_constraint'::regclass, co.oid, NULL, NULL, NULL,
       pg_get_constraintdef(co.oid) || ' | validated ' || co.convalidated::text
  FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
 WHERE {_ns('n')} AND {_ne('pg_class', 'co.conrelid')} AND {_ne('pg_type', 'co.contypid')}
UNION ALL
SELECT 'pg_proc'::regclass, p.oid, p.proowner, p.proacl, 'f',
       CASE WHEN p.prokind = 'a' THEN 'aggregate returns ' || pg_get_function_result(p.oid)
            ELSE pg_get_functiondef(p.oid) END
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {_ns('n')} AND {_ne('pg_proc', 'p.oid')}
UNION ALL
SELECT 'pg_trigger'::regclass, tg.oid, NULL, NULL, NULL, pg_get_triggerdef(tg.oid) || ' | enabled ' || tg.tgenabled::text
  FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT tg.tgisinternal AND {_ns('n')} AND {_ne('pg_class', 'c.oid')}
UNION ALL
SELECT 'pg_policy'::regclass, po.oid, NULL, NULL, NULL,
       concat_ws(' | ', po.polcmd::text, CASE WHEN po.polpermissive THEN 'permissive' ELSE 'restrictive' END,
                 (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END, ',' ORDER BY 1)
                    FROM unnest(po.polroles) r),
                 'using ' || pg_get_expr(po.polqual, po.polrelid), 'check ' || pg_get_expr(po.polwithcheck, po.polrelid))
  FROM pg_policy po JOIN pg_class c ON c.oid = po.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {_ns('n')}
UNION ALL
SELECT 'pg_type'::regclass, t.oid, t.typowner, t.typacl, 'T',
       concat_ws(' | ', 'type ' || t.typtype::text,
         CASE t.typtype::text
           WHEN 'e' THEN (SELECT string_agg(quote_literal(e.enumlabel), ',' ORDER BY e.enumsortorder)
                            FROM pg_enum e WHERE e.enumtypid = t.oid)
           WHEN 'd' THEN concat_ws(' ', format_type(t.typbasetype, t.typtypmod),
                                   CASE WHEN t.typnotnull THEN 'NOT NULL' END, 'DEFAULT ' || t.typdefault)
           WHEN 'c' THEN (SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                            ORDER BY a.attnum)
                            FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
           WHEN 'r' THEN (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid)
         END)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE (t.typtype::text IN ('e', 'd', 'r')
        OR (t.typtype::text = 'c' AND (SELECT c.relkind::text FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))
   AND {_ns('n')} AND {_ne('pg_type', 't.oid')}
UNION ALL
SELECT 'pg_extension'::regclass, e.oid, NULL, NULL, NULL,
       e.extversion || ' | schema ' || quote_ident(n.nspname)
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
UNION ALL
SELECT 'pg_collation'::regclass, co.oid, co.collowner, NULL, NULL,
       concat_ws(' | ', co.collprovider::text, co.collisdeterministic::text, co.collcollate, co.collctype)
  FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace
 WHERE {_ns('n')} AND {_ne('pg_collation', 'co.oid')}
"""
# PostgreSQL 15 renamed nothing here, but older servers lack some columns.
_PRE12 = {"co.collisdeterministic::text": "true", "a.attgenerated::text <> ''": "false"}
_PG17_COLLATION = {"co.collcollate, co.collctype": "co.collcollate, co.collctype, co.colllocale"}
_PG15_16_COLLATION = {"co.collcollate, co.collctype": "co.collcollate, co.collctype, co.colliculocale"}

ITEMS_SQL = """
WITH o(classid, objid, owner, acl, acltype, def) AS ({objects}),
named AS (
  SELECT o.*, (SELECT x.type || ' ' || x.identity FROM pg_identify_object(o.classid, o.objid, 0) x) AS name FROM o
)
SELECT name, def FROM named
UNION ALL
SELECT 'owner ' || name, pg_get_userbyid(owner) FROM named WHERE owner IS NOT NULL
UNION ALL
SELECT 'acl ' || name, {acl} FROM named WHERE acltype IS NOT NULL
UNION ALL
SELECT 'comment ' || (SELECT x.type || ' ' || x.identity FROM pg_identify_object(d.classoid, d.objoid, d.objsubid) x),
       d.description
  FROM pg_description d JOIN named ON named.classid = d.classoid AND named.objid = d.objoid
"""


def _objects_sql(version: int) -> str:
    text = OBJECTS_SQL
    if version < 120000:
        for a, b in _PRE12.items():
            text = text.replace(a, b)
    if version >= 170000:
        subst = _PG17_COLLATION
    elif version >= 150000:
        subst = _PG15_16_COLLATION
    else:
        subst = {}
    for a, b in subst.items():
        text = text.replace(a, b)
    return text


def item_hash(definition: str | None) -> str:
    """First 16 hex digits of SHA-256 over the UTF-8 definition (NULL hashes as the empty string)."""
    return hashlib.sha256((definition or "").encode("utf-8")).hexdigest()[:16]


def schema_hash(items: dict[str, str]) -> str:
    """SHA-256 over ``name || ' ' || itemhash || '\\n'`` for every item, names in byte order."""
    h = hashlib.sha256()
    for name in sorted(items, key=lambda n: n.encode("utf-8")):
        h.update(f"{name} {items[name]}\n".encode("utf-8"))
    return h.hexdigest()


def schema_fingerprint(conn: psycopg.Connection) -> dict[str, Any]:
    """Given a connection with pinned settings and search_path=pg_catalog, return the ``schema``
    entry: {"kind": "schema", "objects": n, "hash": hex, "items": {name: itemhash}}."""
    query = ITEMS_SQL.format(objects=_objects_sql(conn.info.server_version), acl=ACL_SQL)
    items: dict[str, str] = {}
    for name, definition in conn.execute(query).fetchall():
        key = name
        i = 2
        while key in items:  # never expected: identities are unique, but never silently merge two objects
            key, i = f"{name} #{i}", i + 1
        items[key] = item_hash(definition)
    items = dict(sorted(items.items(), key=lambda kv: kv[0].encode("utf-8")))
    return {"kind": "schema", "objects": len(items), "hash": schema_hash(items), "items": items}


OWNERSHIP_PREFIXES = ("owner ", "acl ")


# ---- the database's own properties ------------------------------------------------------------------

def database_properties(conn: psycopg.Connection) -> dict[str, Any]:
    """Given a connection, return the ``database`` entry of the current database."""
    v = conn.info.server_version
    provider = "d.datlocprovider" if v >= 150000 else "'c'"
    icu = "d.datlocale" if v >= 170000 else ("d.daticulocale" if v >= 150000 else "NULL")
    enc, provider, collate, ctype, icu_locale, comment = conn.execute(
        f"SELECT pg_encoding_to_char(d.encoding), {provider}::text, d.datcollate, d.datctype, {icu}, "
        "shobj_description(d.oid, 'pg_database') FROM pg_database d WHERE d.datname = current_database()").fetchone()
    settings, role_settings = [], []
    for role, setting in conn.execute(
            "SELECT r.rolname, x FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole, "
            "unnest(s.setconfig) x WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY 1 NULLS FIRST, 2").fetchall():
        (settings if role is None else role_settings).append(setting if role is None else [role, setting])
    return {"kind": "database", "encoding": enc, "locale_provider": {"c": "libc", "i": "icu", "b": "builtin"}.get(provider, provider),
            "collate": collate, "ctype": ctype, "icu_locale": icu_locale, "settings": settings,
            "role_settings": role_settings, "comment": comment}


# GUCs whose values are lists of quoted items (libpq's variable_is_guc_list_quote)
LIST_QUOTE = {"local_preload_libraries", "search_path", "session_preload_libraries", "shared_preload_libraries",
              "temp_tablespaces", "unix_socket_directories"}


def split_guc_list(value: str) -> list[str]:
    """Split a stored list value (``"$user", public``) into its items, unquoting double-quoted ones."""
    items, i, n = [], 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            i += 1
            item = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        item.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                item.append(value[i])
                i += 1
            items.append("".join(item))
            while i < n and value[i] != ",":
                i += 1
        else:
            j = value.find(",", i)
            j = n if j < 0 else j
            items.append(value[i:j].strip())
            i = j
        if i < n and value[i] == ",":
            i += 1
    return items


def setting_clause(setting: str) -> sql.Composable:
    """Given a stored ``name=value`` setting, return ``SET name TO value`` as pg_dump writes it."""
    name, _, value = setting.partition("=")
    if name.lower() in LIST_QUOTE:
        values = sql.SQL(", ").join(sql.Literal(v) for v in split_guc_list(value))
    else:
        values = sql.Literal(value)
    return sql.SQL("SET {} TO {}").format(sql.Identifier(name), values)


def create_database_sql(name: str, props: dict[str, Any], server_version: int) -> sql.Composable:
    """CREATE DATABASE ``name`` from template0 with the recorded encoding and locale."""
    parts = [sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))]
    if props.get("encoding"):
        parts.append(sql.SQL("ENCODING {}").format(sql.Literal(props["encoding"])))
    if props.get("collate"):
        parts.append(sql.SQL("LC_COLLATE {}").format(sql.Literal(props["collate"])))
    if props.get("ctype"):
        parts.append(sql.SQL("LC_CTYPE {}").format(sql.Literal(props["ctype"])))
    provider = props.get("locale_provider") or "libc"
    if server_version >= 150000:
        parts.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(provider)))
        if provider == "icu" and props.get("icu_locale"):
            parts.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(props["icu_locale"])))
        elif provider == "builtin" and props.get("icu_locale"):
            parts.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(props["icu_locale"])))
    return sql.SQL(" ").join(parts)


def properties_statements(dbname: str, props: dict[str, Any], existing_roles: set[str] | None = None
                          ) -> tuple[list[sql.Composable], list[str]]:
    """The statements that give database ``dbname`` the recorded settings and comment, and the
    roles whose ``IN DATABASE`` settings were left out because they do not exist there."""
    db = sql.Identifier(dbname)
    out = [sql.SQL("ALTER DATABASE {} ").format(db) + setting_clause(s) for s in props.get("settings", [])]
    missing: list[str] = []
    for role, setting in props.get("role_settings", []):
        if existing_roles is not None and role not in existing_roles:
            missing.append(role)
            continue
        out.append(sql.SQL("ALTER ROLE {} IN DATABASE {} ").format(sql.Identifier(role), db) + setting_clause(setting))
    if props.get("comment") is not None:
        out.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(props["comment"])))
    return out, sorted(set(missing))
