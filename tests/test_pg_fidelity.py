"""PostgreSQL drills prove everything a restore must bring back (issue 8), against the real server
and real scratch instances: a hospital-shaped schema with every feature a vendor ships (enums,
regclass, hash partitions on an enum, large objects, sequences, materialized views, triggers,
functions, views, RLS, comments, grants, citext, case-insensitive and zh collations, numeric,
interval, float, jsonb, colliding qualified names, database settings), created in a zh_CN.UTF-8
database. A correct restore passes in both fingerprint modes and both scratch types; a change of
each feature in the scratch makes the drill exit 3 naming the object."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from backupkit.actions.drill import run_drill
from backupkit.artifact import DirectorySink
from backupkit.context import Context
from backupkit.engines.pg_fingerprint import (
    Catalog,
    column_plan,
    copy_text_hash,
    dump_text_keys,
    entry_key,
    fingerprints as relation_fingerprints,
    legacy_fingerprints,
    set_fingerprint_session,
)
from backupkit.engines.pg_conn import connect, Endpoint
from backupkit.engines.postgres import PostgresEngine
from backupkit.errors import JobFailed
from backupkit.verdict import compare_fingerprints
from fixtures.postgres import make_policy, open_source

pytestmark = pytest.mark.postgres

ZH_LOCALE = "zh_CN.UTF-8"
SRC: dict = {}  # the source cluster's socket directory and port (module fixture below)


@pytest.fixture(scope="module", autouse=True)
def source_cluster(tmp_path_factory):
    """A private PostgreSQL cluster for the sources of this module. It is started after scripts/test.sh
    generated the zh_CN.UTF-8 locale, so it can create databases with it (a server started before the
    locale existed cannot: glibc maps the locale archive once per postmaster)."""
    from backupkit.engines.pg_cluster import EphemeralCluster, newest_server_bindir, private_root, server_os_user

    major, bindir = newest_server_bindir()
    run_as = server_os_user()
    cluster = EphemeralCluster(bindir=bindir, major=major, root=private_root(tmp_path_factory.mktemp("zhsrc"), run_as),
                               run_as=run_as)
    cluster.start()
    SRC.update(host=str(cluster.sockdir), port=cluster.port)
    try:
        yield cluster
    finally:
        cluster.stop()


def pg_dsn(db: str, user: str = "postgres") -> str:
    return f"host={SRC['host']} port={SRC['port']} user={user} dbname={db}"


def admin_dsn(user: str = "postgres") -> str:
    return pg_dsn("postgres", user)


def pg_exec(db: str, *statements: str) -> None:
    with psycopg.connect(pg_dsn(db), autocommit=True) as conn:
        for st in statements:
            conn.execute(st)


def pg_scalar(db: str, query: str):
    with psycopg.connect(pg_dsn(db), autocommit=True) as conn:
        return conn.execute(query).fetchone()[0]

HOSPITAL_SQL = [
    "CREATE EXTENSION citext",
    "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    "CREATE COLLATION zh (provider = icu, locale = 'zh')",
    "CREATE TYPE visit_kind AS ENUM ('outpatient', 'inpatient', 'emergency', 'icu')",
    """CREATE TABLE patients (id bigint PRIMARY KEY, name text NOT NULL, name_zh text COLLATE zh, email citext,
        code text COLLATE ci, kind visit_kind, born date)""",
    """INSERT INTO patients VALUES
        (1, 'Wang', '王芳', 'Wang@Example.org', 'ABC', 'inpatient', '1980-01-02'),
        (2, 'Li', '李娜', 'li@example.org', 'abd', 'outpatient', '1990-03-04'),
        (3, 'Zhang', '张伟', 'ZHANG@example.org', 'x1', 'icu', '2010-05-06'),
        (4, 'Chen', '陈静', NULL, NULL, NULL, NULL)""",
    """CREATE TABLE lab_results (id bigserial PRIMARY KEY, patient_id bigint REFERENCES patients(id), value numeric,
        ratio float8, stay interval, extra jsonb, source regclass)""",
    """INSERT INTO lab_results (patient_id, value, ratio, stay, extra, source) VALUES
        (1, 1.50, 0.0, '1 day', '{"a": 1}', 'patients'), (2, 7.25, 1.5, '2 hours', '[1, 2]', 'lab_results'),
        (3, 100, -2.5, '1 mon', NULL, NULL)""",
    "CREATE TABLE visits (id int NOT NULL, kind visit_kind NOT NULL, at timestamptz) PARTITION BY HASH (kind)",
    *[f"CREATE TABLE visits_{i} PARTITION OF visits FOR VALUES WITH (MODULUS 4, REMAINDER {i})" for i in range(4)],
    "INSERT INTO visits SELECT g, (enum_range(NULL::visit_kind))[1 + g % 4], '2026-01-01'::timestamptz + g * interval '1 hour' "
    "FROM generate_series(1, 400) g",
    "CREATE SCHEMA a", 'CREATE SCHEMA "a.b"',
    'CREATE TABLE a."b.c" (v int)', 'CREATE TABLE "a.b".c (v int)',
    'INSERT INTO a."b.c" SELECT generate_series(1, 5)', 'INSERT INTO "a.b".c SELECT generate_series(1, 5)',
    "CREATE SEQUENCE mrn_seq", "SELECT setval('mrn_seq', 1000)",
    "CREATE MATERIALIZED VIEW visit_stats AS SELECT kind, count(*) AS n FROM visits GROUP BY kind",
    "CREATE VIEW adults AS SELECT id, name FROM patients WHERE born < '2006-01-01'",
    "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.at := coalesce(NEW.at, now()); RETURN NEW; END$$",
    "CREATE TABLE audit (id int, at timestamptz)",
    "CREATE TRIGGER audit_touch BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION touch()",
    "CREATE TABLE notes (id int PRIMARY KEY, body text)",
    "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 100) g",
    "ALTER TABLE notes ENABLE ROW LEVEL SECURITY", "ALTER TABLE notes FORCE ROW LEVEL SECURITY",
    "CREATE POLICY notes_mine ON notes USING (id < 0)",
    "COMMENT ON TABLE patients IS '患者主索引'",
    "GRANT SELECT ON patients TO PUBLIC",
    "SELECT lo_from_bytea(0, convert_to('scan ' || g, 'UTF8')) FROM generate_series(1, 3) g",
]


def db_settings_sql(db: str) -> list[str]:
    d = sql.Identifier(db).as_string(None)
    return [f"ALTER DATABASE {d} SET TimeZone = 'Asia/Shanghai'", f"ALTER DATABASE {d} SET DateStyle = 'SQL, DMY'",
            f"ALTER DATABASE {d} SET search_path = \"$user\", public, a",
            f"ALTER ROLE postgres IN DATABASE {d} SET work_mem = '8MB'", f"COMMENT ON DATABASE {d} IS 'HIS 生产库'"]


ZH_ORDER_SQL = "SELECT string_agg(name_zh, ',' ORDER BY name_zh COLLATE \"default\") FROM patients"


def create_db(prefix: str, locale_sql: str) -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' ").format(sql.Identifier(name))
                         + sql.SQL(locale_sql))
        except psycopg.Error as e:
            pytest.fail(f"cannot create a test database with {locale_sql}: {e}; scripts/test.sh generates the "
                        f"{ZH_LOCALE} locale (localedef -i zh_CN -f UTF-8 {ZH_LOCALE})")
    return name


@pytest.fixture
def databases():
    made: list[str] = []
    yield made
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def hospital_db(databases, locale_sql: str = f"LC_COLLATE '{ZH_LOCALE}' LC_CTYPE '{ZH_LOCALE}'") -> str:
    db = create_db("bk_fid", locale_sql)
    databases.append(db)
    pg_exec(db, *HOSPITAL_SQL, *db_settings_sql(db))
    return db


def setup_policy(ws, db: str, *, mode: str = "full", scratch: dict | None = None, assertions: list | None = None,
                 **drill) -> None:
    policy = {"system": "his", "title": "HIS", "tier": "30m", "rpo": "24h", "engine": "postgres",
              "source": {"dsn": pg_dsn(db)},
              "drill": {"fingerprint": mode, "scratch": scratch or {"type": "ephemeral"},
                        "assertions": assertions or [], **drill}}
    for f in ws.policies.glob("*.yaml"):
        f.unlink()
    ws.policy_file("his").write_text(yaml.safe_dump(policy, allow_unicode=True))


def zh_libc_order(db: str) -> str:
    return pg_scalar(db, "SELECT string_agg(name_zh, ',' ORDER BY name_zh COLLATE \"default\") FROM patients")


@pytest.mark.parametrize("mode", ["full", "rows"])
@pytest.mark.parametrize("scratch", ["ephemeral", "database"])
def test_correct_restore_passes_every_feature(workspace, databases, mode, scratch):
    ws = workspace
    db = hospital_db(databases)
    order = zh_libc_order(db)
    assert order != "李娜,王芳,张伟,陈静"  # zh_CN.UTF-8 sorts by pinyin, not by code point
    setup_policy(ws, db, mode=mode, scratch={"type": "database", "dsn": admin_dsn()} if scratch == "database" else None,
                 assertions=[{"name": "zh order", "sql": ZH_ORDER_SQL, "expect": f"= '{order}'"}])
    ws.ok("backup", "his", "--no-copy")
    (bdir,) = ws.backups("his")
    manifest = json.loads((bdir / "manifest.json").read_text())
    fp = manifest["fingerprints"]
    assert manifest["details"]["fingerprint_format"] == 4 and manifest["details"]["fingerprint_keys"] == "quoted"
    assert fp['a."b.c"']["rows"] == 5 and fp['"a.b".c']["rows"] == 5  # quoted keys never collide
    assert fp["public.visits"]["kind"] == "partitioned table" and fp["public.visits"]["rows"] == 400
    assert sum(fp["public.visits"]["info"]["leaf_rows"].values()) == 400
    assert "public.visits_0" not in fp
    assert fp["public.notes"]["rows"] == 100  # FORCE RLS: row_security=off, all rows
    assert fp["sequence public.mrn_seq"] == {"kind": "sequence", "last_value": 1000, "is_called": True}
    assert fp["large objects"]["count"] == 3
    assert fp["materialized view public.visit_stats"]["populated"] is True
    assert fp["database"]["collate"] == ZH_LOCALE and fp["database"]["comment"] == "HIS 生产库"
    assert "TimeZone=Asia/Shanghai" in fp["database"]["settings"]
    assert ["postgres", "work_mem=8MB"] in fp["database"]["role_settings"]
    if mode == "full":
        # ordinary tables: the hash of the COPY rows pg_dump wrote into the backup (format 4, dump-text; the
        # engine-level test below compares it with the definition); a partitioned table stays on row64 at its root
        assert manifest["details"]["dump_text"] == {"tables": len(dump_text_keys(fp)), "sql_instead": {}}
        assert {"public.patients", 'a."b.c"', "public.lab_results", "public.notes"} <= set(dump_text_keys(fp))
        assert fp["public.visits"]["method"] == "row64"
        with psycopg.connect(pg_dsn(db), autocommit=True) as conn:
            # the SQL method (partitioned tables, inheritance, money; physical mode) classifies by content
            sql_fp = relation_fingerprints(conn, "full", side="source")
        assert set(sql_fp["public.patients"]["text"]) == {"email", "code", "kind"}  # citext, ci collation, enum
        assert set(sql_fp["public.lab_results"]["text"]) == {"ratio", "extra", "source"}  # float, jsonb, regclass
        assert sql_fp["public.lab_results"]["send"] == [["value", "numeric_send"], ["stay", "interval_send"]]
    r = ws.run("drill", "his", "--json")
    rec = json.loads(r.out)
    assert r.code == 0 and rec["verdict"] == "passed", rec["deviations"]
    passed = {c["name"] for c in rec["checks"] if c["status"] == "passed"}
    assert {"fingerprint schema", "fingerprint database", "fingerprint large objects", "fingerprint public.visits",
            "fingerprint sequence public.mrn_seq", "fingerprint materialized view public.visit_stats",
            "assertion zh order", "amcheck", 'fingerprint a."b.c"', 'fingerprint "a.b".c'} <= passed
    assert "LC_COLLATE 'zh_CN.UTF-8'" in rec["scratch"]["database_created"]


# (what is changed in the scratch, statements, the check that must fail, text its detail must contain, scratch)
CHANGES = [
    ("enum value", ["UPDATE patients SET kind = 'outpatient' WHERE id = 1"], "fingerprint public.patients", "public.patients", "database"),
    ("numeric scale 1.50 -> 1.5", ["UPDATE lab_results SET value = 1.5 WHERE id = 1"], "fingerprint public.lab_results", "public.lab_results", "database"),
    ("interval 1 day -> 24 hours", ["UPDATE lab_results SET stay = '24 hours' WHERE id = 1"], "fingerprint public.lab_results", "public.lab_results", "database"),
    ("float 0.0 -> -0.0", ["UPDATE lab_results SET ratio = '-0.0' WHERE id = 1"], "fingerprint public.lab_results", "public.lab_results", "database"),
    ("jsonb 1 -> 1.0", ["UPDATE lab_results SET extra = '{\"a\": 1.0}' WHERE id = 1"], "fingerprint public.lab_results", "public.lab_results", "database"),
    ("citext case", ["UPDATE patients SET email = 'wang@example.org' WHERE id = 1"], "fingerprint public.patients", "public.patients", "database"),
    ("case-insensitive collation", ["UPDATE patients SET code = 'abc' WHERE id = 1"], "fingerprint public.patients", "public.patients", "database"),
    ("regclass", ["UPDATE lab_results SET source = 'visits' WHERE id = 1"], "fingerprint public.lab_results", "public.lab_results", "database"),
    ("numeric NaN", ["UPDATE lab_results SET value = 'NaN' WHERE id = 3"], "fingerprint public.lab_results", "public.lab_results", "ephemeral"),
    # every column binary: the row hash must bind a row's columns (a linear record hash sum would not see this)
    ("values swapped between rows", ["UPDATE notes SET body = CASE id WHEN 1 THEN 'note 2' ELSE 'note 1' END WHERE id IN (1, 2)"],
     "fingerprint public.notes", "public.notes", "ephemeral"),
    ("partition rows", ["DELETE FROM visits WHERE id = 7"], "fingerprint public.visits", "partitioned table public.visits", "database"),
    ("colliding key", ['DELETE FROM "a.b".c'], 'fingerprint "a.b".c', '"a.b".c', "database"),
    ("large object unlinked", ["SELECT lo_unlink(min(oid)) FROM pg_largeobject_metadata"], "fingerprint large objects", "count", "database"),
    ("large object overwritten", ["SELECT lo_put(min(oid), 0, '\\x58'::bytea) FROM pg_largeobject_metadata"], "fingerprint large objects", "hash", "database"),
    ("sequence reset", ["SELECT setval('mrn_seq', 1)"], "fingerprint sequence public.mrn_seq", "last_value", "database"),
    ("matview other rows", ["DROP MATERIALIZED VIEW visit_stats",
                            "CREATE MATERIALIZED VIEW visit_stats AS SELECT kind, count(*) + 1 AS n FROM visits GROUP BY kind"],
     "fingerprint materialized view public.visit_stats", "materialized view public.visit_stats", "database"),
    ("matview unpopulated", ["REFRESH MATERIALIZED VIEW visit_stats WITH NO DATA"],
     "fingerprint materialized view public.visit_stats", "populated", "database"),
    ("trigger dropped", ["DROP TRIGGER audit_touch ON audit"], "fingerprint schema", "trigger audit_touch on public.audit", "database"),
    ("function changed", ["CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$"],
     "fingerprint schema", "function public.touch()", "database"),
    ("view dropped", ["DROP VIEW adults"], "fingerprint schema", "view public.adults", "database"),
    ("policy dropped", ["DROP POLICY notes_mine ON notes"], "fingerprint schema", "policy notes_mine on public.notes", "database"),
    ("comment removed", ["COMMENT ON TABLE patients IS NULL"], "fingerprint schema", "comment table public.patients", "database"),
    ("grant revoked", ["REVOKE SELECT ON patients FROM PUBLIC"], "fingerprint schema", "acl table public.patients", "ephemeral"),
    ("database setting", ["ALTER DATABASE {db} RESET TimeZone"], "fingerprint database", "settings", "database"),
    ("database comment", ["COMMENT ON DATABASE {db} IS 'other'"], "fingerprint database", "comment", "ephemeral"),
]


@pytest.mark.parametrize("scratch", ["database", "ephemeral"])
def test_every_change_in_the_scratch_is_caught_naming_the_object(workspace, databases, scratch):
    ws = workspace
    db = hospital_db(databases)
    setup_policy(ws, db, scratch={"type": "database", "dsn": admin_dsn()} if scratch == "database" else None)
    ws.ok("backup", "his", "--no-copy")
    ctx = Context.load(ws.config)
    missed = []
    try:
        for what, statements, check, needle, kind in CHANGES:
            if kind != scratch:
                continue

            def change(engine, s, statements=statements):
                with engine._connect(s) as conn:
                    for stmt in statements:
                        conn.execute(stmt.replace("{db}", sql.Identifier(s.handle.endpoint.dbname).as_string(conn)))

            out = run_drill(ctx, ctx.policy("his"), after_restore=change)
            bad = {c["name"]: c["detail"] for c in out.record["checks"] if c["status"] == "failed"}
            if out.exit_code != 3 or check not in bad or needle not in bad[check]:
                missed.append(f"{what}: exit {out.exit_code}, failed checks {bad}")
    finally:
        ctx.close()
    assert missed == []


def test_restore_to_reproduces_database_settings_and_checks_them(workspace, databases):
    ws = workspace
    db = hospital_db(databases)
    setup_policy(ws, db)
    ws.ok("backup", "his", "--no-copy")
    target = create_db("bk_fid_target", f"LC_COLLATE '{ZH_LOCALE}' LC_CTYPE '{ZH_LOCALE}'")
    databases.append(target)
    r = ws.ok("restore", "his", "--to", pg_dsn(target))
    assert "fingerprints match" in r.out
    with psycopg.connect(pg_dsn(target), autocommit=True) as conn:
        assert conn.execute("SHOW TimeZone").fetchone()[0] == "Asia/Shanghai"  # a new session sees the settings
        assert conn.execute("SHOW DateStyle").fetchone()[0] == "SQL, DMY"
        assert conn.execute("SHOW search_path").fetchone()[0] == '"$user", public, a'
        assert conn.execute("SHOW work_mem").fetchone()[0] == "8MB"
        assert conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                            "WHERE datname = current_database()").fetchone()[0] == "HIS 生产库"
    body = json.loads(ws.ledger_rows("restore")[-1][3])
    assert "applied 3 database setting(s), 1 role setting(s), the comment" in body["destination"]["database_properties"]
    assert {c["name"] for c in body["checks"]} >= {"fingerprint database", "fingerprint schema"}

    # a destination created with another collation is restored, but the restore says the database differs
    other = create_db("bk_fid_other", "LC_COLLATE 'C' LC_CTYPE 'C'")
    databases.append(other)
    r = ws.run("restore", "his", "--to", pg_dsn(other))
    assert r.code == 3, r
    assert "database" in r.err and "collate" in r.err and ZH_LOCALE in r.err and len(r.err.strip().splitlines()) == 1


def test_icu_zh_database_is_reproduced(workspace, databases):
    ws = workspace
    db = create_db("bk_fid_icu", "LOCALE_PROVIDER icu ICU_LOCALE 'zh' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
    databases.append(db)
    pg_exec(db, "CREATE TABLE staff (name text)",
            "INSERT INTO staff VALUES ('赵六'), ('张三'), ('李四'), ('王五'), ('Ann'), ('bob')")
    order = pg_scalar(db, "SELECT string_agg(name, ',' ORDER BY name) FROM staff")
    assert order != pg_scalar(db, "SELECT string_agg(name, ',' ORDER BY name COLLATE \"C\") FROM staff")
    setup_policy(ws, db, assertions=[{"name": "zh icu order", "sql": "SELECT string_agg(name, ',' ORDER BY name) FROM staff",
                                      "expect": f"= '{order}'"}])
    ws.ok("backup", "his", "--no-copy")
    manifest = json.loads((ws.backups("his")[0] / "manifest.json").read_text())
    assert manifest["fingerprints"]["database"]["locale_provider"] == "icu"
    assert manifest["fingerprints"]["database"]["icu_locale"] == "zh"
    rec = json.loads(ws.run("drill", "his", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]
    assert "ICU_LOCALE 'zh'" in rec["scratch"]["database_created"]


def test_empty_database_passes_on_the_schema_fingerprint(workspace, databases):
    ws = workspace
    db = create_db("bk_fid_empty", "")
    databases.append(db)
    setup_policy(ws, db)
    ws.ok("backup", "his", "--no-copy")
    rec = json.loads(ws.run("drill", "his", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]
    assert [c["name"] for c in rec["checks"] if c.get("proves_data")] == [
        "fingerprint database", "fingerprint large objects", "fingerprint schema"]


def test_role_that_rls_would_filter_fails_the_backup_loudly(databases, age_keys, dump_dir):
    db = create_db("bk_fid_rls", "")
    databases.append(db)
    role = f"bk_rls_{secrets.token_hex(3)}"
    pg_exec(db, f"CREATE ROLE {role} LOGIN", f"GRANT ALL ON SCHEMA public TO {role}", f"SET ROLE {role}",
            "CREATE TABLE charts (id int)", "INSERT INTO charts SELECT generate_series(1, 100)",
            "ALTER TABLE charts ENABLE ROW LEVEL SECURITY", "ALTER TABLE charts FORCE ROW LEVEL SECURITY",
            "CREATE POLICY none ON charts USING (false)")
    try:
        policy = make_policy(source={"dsn": pg_dsn(db, role)})
        with pytest.raises(JobFailed) as e:
            PostgresEngine().dump(policy=policy, sink=DirectorySink(dump_dir(), age_keys.recipients))
        msg = str(e.value)
        assert "charts" in msg and ("row-level security" in msg or "row security" in msg) and "BYPASSRLS" in msg
        assert len(msg.splitlines()) == 1
    finally:
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        databases.remove(db)


def test_non_superuser_database_scratch_names_amcheck_grants_or_waives_by_policy(workspace, databases):
    ws = workspace
    db = create_db("bk_fid_nosu", "")
    databases.append(db)
    pg_exec(db, "CREATE TABLE patients (id int PRIMARY KEY, name text)", "INSERT INTO patients VALUES (1, 'a'), (2, 'b')")
    role = f"bk_scratch_{secrets.token_hex(3)}"
    pg_exec("postgres", f"CREATE ROLE {role} LOGIN CREATEDB")
    dsn = admin_dsn(role)
    try:
        setup_policy(ws, db, scratch={"type": "database", "dsn": dsn})
        ws.ok("backup", "his", "--no-copy")
        r = ws.run("drill", "his", "--json")
        rec = json.loads(r.out)
        assert r.code == 1 and rec["verdict"] == "failed"
        (am,) = [c for c in rec["checks"] if c["name"] == "amcheck"]
        assert am["status"] == "skipped"
        assert f"GRANT EXECUTE ON FUNCTION bt_index_check(regclass), bt_index_check(regclass, boolean) TO {role}" in am["detail"]
        assert "drill.amcheck: false" in am["detail"]
        # explicitly waived by the policy: the drill passes, and says what it did not do
        setup_policy(ws, db, scratch={"type": "database", "dsn": dsn}, amcheck=False)
        rec = json.loads(ws.run("drill", "his", "--json").out)
        assert rec["verdict"] == "passed", rec["deviations"]
        assert any(d.startswith("deviation (waived by policy): amcheck") for d in rec["deviations"])
    finally:
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            for (name,) in conn.execute("SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                                        "WHERE r.rolname = %s", (role,)).fetchall():
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_format_1_manifests_keep_verifying(databases, age_keys, dump_dir, tmp_path):
    """A manifest written before fingerprint format 2 (unquoted keys, record/text methods, no
    fingerprint_format in details) is recomputed with the old method and still matches."""
    db = create_db("bk_fid_v1", "")
    databases.append(db)
    pg_exec(db, "CREATE TABLE patients (id int PRIMARY KEY, name text, w numeric)", "CREATE TABLE dev (id int, c json)",
            "INSERT INTO patients VALUES (1, 'a', 1.5), (2, 'b', NULL)", "INSERT INTO dev VALUES (1, '{}')")
    engine = PostgresEngine()
    policy = make_policy(source={"dsn": pg_dsn(db)})
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    result = engine.dump(policy=policy, sink=sink)
    with connect(Endpoint({"host": SRC["host"], "port": str(SRC["port"]), "user": "postgres", "dbname": db}),
                 what="test") as conn:
        old = legacy_fingerprints(conn, "full")
    assert old["public.patients"]["method"] == "record" and old["public.dev"]["method"] == "text"
    details = {k: v for k, v in result.details.items() if k not in ("fingerprint_format", "fingerprint_keys")}
    with engine.scratch(policy=policy, workdir=tmp_path / "w") as scratch:
        scratch.manifest = {"fingerprints": old, "details": details}
        engine.restore(policy=policy, scratch=scratch, source=open_source(sink, age_keys))
        actual = engine.fingerprints(scratch=scratch, mode="full", like=old)
        assert actual == old
        assert all(c["status"] == "passed" for c in compare_fingerprints(old, actual))
        with psycopg.connect(scratch.handle.endpoint.conninfo(), autocommit=True) as conn:
            conn.execute("UPDATE patients SET name = 'x' WHERE id = 1")
        bad = [c for c in compare_fingerprints(old, engine.fingerprints(scratch=scratch, mode="full", like=old))
               if c["status"] == "failed"]
        assert [c["name"] for c in bad] == ["fingerprint public.patients"] and "rows=2" in bad[0]["detail"]


FORMAT_3_LAB_SQL = """SELECT count(*), coalesce(sum(hashtextextended(ROW(t.r)::text,
    hash_record_extended(ROW(t.id, t.note, numeric_send(t.v), interval_send(t.stay)), 0))), 0) FROM ONLY public.lab AS t"""
FORMAT_2_LAB_SQL = """SELECT count(*),
    coalesce(sum(hashtextextended(ROW(t.v, t.stay, t.r)::text, hash_record_extended(ROW(t.id, t.note), 0))), 0),
    coalesce(sum(hashtextextended(ROW(t.v, t.stay, t.r)::text, hash_record_extended(ROW(t.id, t.note), 1))), 0)
    FROM ONLY public.lab AS t"""


def test_format_3_is_plain_sql_and_format_2_manifests_keep_verifying(databases, age_keys, dump_dir, tmp_path):
    """Format 3 hashes are what docs/format.md's SQL gives; a manifest written in format 2 (method
    "columns", two seeds, numeric and interval by text) is recomputed with its own method and matches;
    both catch a numeric scale change, and format 3 also sees values swapped between rows."""
    db = create_db("bk_fid_v2", "")
    databases.append(db)
    pg_exec(db, "CREATE TABLE lab (id int PRIMARY KEY, v numeric, stay interval, note text, r float8)",
            "INSERT INTO lab VALUES (1, 1.50, '1 day', 'a', '-0'), (2, NULL, NULL, NULL, NULL), "
            "(3, 'NaN', '24 hours', 'b', 'NaN'), (4, '-Infinity', '-1 mon 2 days', '', 'Infinity')",
            "CREATE TABLE pairs (id int, name text)", "INSERT INTO pairs VALUES (1, 'a'), (2, 'b')")
    engine = PostgresEngine()
    policy = make_policy(source={"dsn": pg_dsn(db)}, drill={"fingerprint": "full"})
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    result = engine.dump(policy=policy, sink=sink)
    new = result.fingerprints  # format 4: both tables dump-text
    assert result.details["fingerprint_format"] == 4
    assert new["public.lab"]["method"] == new["public.pairs"]["method"] == "dump-text"
    with connect(Endpoint({"host": SRC["host"], "port": str(SRC["port"]), "user": "postgres", "dbname": db}),
                 what="test") as conn:
        assert new["public.lab"]["hash"] == copy_text_hash(conn, "public", "lab")
        set_fingerprint_session(conn)
        f3 = relation_fingerprints(conn, "full", side="source")  # what format 3 wrote: row64
        assert f3["public.lab"]["send"] == [["v", "numeric_send"], ["stay", "interval_send"]]
        n, s = conn.execute(FORMAT_3_LAB_SQL).fetchone()
        assert f3["public.lab"]["rows"] == n == 4 and f3["public.lab"]["hash"] == f"{int(s) % (1 << 64):016x}"
        # what the previous version wrote: format 2 entries (method "columns")
        cat = Catalog(conn)
        plans = {entry_key(r): column_plan(cat.columns[r["oid"]], cat.domains, method="columns")
                 for r in cat.relations if r["relkind"] == "r"}
        old_tables = relation_fingerprints(conn, "full", side="source", like=plans)
        n, s0, s1 = conn.execute(FORMAT_2_LAB_SQL).fetchone()
    assert old_tables["public.lab"]["method"] == "columns" and old_tables["public.lab"]["text"] == ["v", "stay", "r"]
    assert old_tables["public.lab"]["hash"] == f"{int(s0) % (1 << 64):016x}{int(s1) % (1 << 64):016x}"
    old = {**new, **{k: v for k, v in old_tables.items() if k in plans}}
    f3 = {**new, **{k: v for k, v in f3.items() if k in plans}}
    old_details = {**result.details, "fingerprint_format": 2}
    with engine.scratch(policy=policy, workdir=tmp_path / "w") as scratch:
        scratch.manifest = {"fingerprints": old, "details": old_details}
        engine.restore(policy=policy, scratch=scratch, source=open_source(sink, age_keys))
        assert engine.fingerprints(scratch=scratch, mode="full", like=old) == old
        assert engine.fingerprints(scratch=scratch, mode="full", like=f3) == f3
        assert engine.fingerprints(scratch=scratch, mode="full", like=new) == new
        with psycopg.connect(scratch.handle.endpoint.conninfo(), autocommit=True) as conn:
            conn.execute("UPDATE pairs SET name = CASE id WHEN 1 THEN 'b' ELSE 'a' END")
        bad = [c["name"] for c in compare_fingerprints(new, engine.fingerprints(scratch=scratch, mode="full", like=new))
               if c["status"] == "failed"]
        assert bad == ["fingerprint public.pairs"]
        with psycopg.connect(scratch.handle.endpoint.conninfo(), autocommit=True) as conn:
            conn.execute("UPDATE lab SET v = 1.5 WHERE id = 1")
        for like in (old, f3, new):
            bad = [c["name"] for c in compare_fingerprints(like, engine.fingerprints(scratch=scratch, mode="full", like=like))
                   if c["status"] == "failed"]
            assert "fingerprint public.lab" in bad


def test_the_ephemeral_cluster_is_a_throwaway_restore_target():
    # What makes a drill's restore fast is configuration: a cluster started without it would restore
    # correctly and slowly, so only this test notices. pg_restore runs one job per core, so workers
    # inside a statement would only contend with it.
    from backupkit.engines.pg_cluster import EPHEMERAL_SETTINGS

    want = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off", "wal_level": "minimal",
            "autovacuum": "off", "listen_addresses": "", "max_parallel_maintenance_workers": "0",
            "max_parallel_workers_per_gather": "0"}
    assert {k: EPHEMERAL_SETTINGS[k].strip("'") for k in want} == want
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        have = {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in want}
    assert have == want


def readme_postgres_recipe() -> list[str]:
    """The README's "Restoring without backupkit" shell lines for PostgreSQL, as written there."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("## Restoring without backupkit", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_postgres_recipe_restores_the_database_with_its_settings(workspace, databases):
    # Item 9: the recipe works literally. Only the two placeholders change: the backup directory of the
    # `cd` line and the identity file's path. The source database is dropped first, since -C creates it.
    ws = workspace
    db = hospital_db(databases)
    setup_policy(ws, db)
    ws.ok("backup", "his", "--no-copy")
    (bdir,) = ws.backups("his")
    lines = readme_postgres_recipe()
    assert "pg_restore -C -j 4 -d postgres \"$d/his.dump\"" in lines
    script = []
    for line in lines:
        if line.startswith("cd "):
            line = f"cd {shlex.quote(str(bdir))}"
        elif "his.sqlite" in line or line.startswith("sha256sum"):
            continue  # the SQLite line, and a comparison for the reader's eyes
        script.append(line.replace("-i identity.txt", f"-i {shlex.quote(str(ws.keys / 'identity.txt'))}"))
    pg_exec("postgres", f'DROP DATABASE "{db}" WITH (FORCE)')
    env = {**os.environ, "PGHOST": SRC["host"], "PGPORT": str(SRC["port"]), "PGUSER": "postgres"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(script)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert pg_scalar(db, "SELECT count(*) FROM patients") == 4
    assert pg_scalar(db, "SHOW TimeZone") == "Asia/Shanghai"  # ALTER DATABASE ... SET came back with -C
    assert pg_scalar(db, "SELECT datcollate FROM pg_database WHERE datname = current_database()") == ZH_LOCALE
    assert pg_scalar(db, "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                         "WHERE datname = current_database()") == "HIS 生产库"
    assert pg_scalar(db, "SELECT count(*) FROM pg_largeobject_metadata") == 3
