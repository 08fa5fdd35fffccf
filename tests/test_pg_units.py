"""Pure decisions behind PostgreSQL fingerprints and verdicts (issue 8), table-driven, no server:
which columns hash by binary value, how settings and CREATE DATABASE are rendered, how entries
are compared, and every boundary of the drill verdict."""

from __future__ import annotations

import pytest

from backupkit.engines.pg_archive import _NeedMore, parse_toc
from backupkit.engines.pg_fingerprint import column_plan, content_sql, is_legacy, recorded_plan, row64_sql, row_hash_sql
from backupkit.errors import JobFailed
from backupkit.engines.pg_schema import (
    create_database_sql,
    properties_statements,
    schema_hash,
    setting_clause,
    split_guc_list,
)
from backupkit.verdict import NOT_COMPARED, compare_entry, compare_fingerprints, compare_schema, drill_verdict

INT4, INT8, TEXT, NUMERIC, FLOAT8, INTERVAL, JSONB, BPCHAR, VARCHAR, TSTZ, BYTEA = 23, 20, 25, 1700, 701, 1186, 3802, 1042, 1043, 1184, 17
ENUM, CITEXT, INT4_ARRAY, REGCLASS = 90001, 90002, 1007, 2205


@pytest.mark.parametrize("col, domains, allowed, where", [
    (("a", INT4, -1, True), {}, True, "binary"),
    (("a", INT8, -1, True), {}, True, "binary"),
    (("a", TSTZ, -1, True), {}, True, "binary"),
    (("a", BYTEA, -1, True), {}, True, "binary"),
    (("a", TEXT, -1, True), {}, True, "binary"),
    (("a", TEXT, -1, False), {}, True, "text"),  # nondeterministic (case-insensitive) collation
    (("a", VARCHAR, 14, False), {}, True, "text"),
    (("a", BPCHAR, 5, True), {}, True, "binary"),  # char(4): always padded
    (("a", BPCHAR, -1, True), {}, True, "text"),  # unbounded bpchar hashes without trailing blanks
    (("a", NUMERIC, -1, True), {}, True, "send"),  # numeric_send keeps the display scale: 1.50 and 1.5 differ
    (("a", FLOAT8, -1, True), {}, True, "text"),  # 0.0 and -0.0 hash alike; float8send tells NaN payloads apart
    (("a", INTERVAL, -1, True), {}, True, "send"),  # interval_send keeps units: 1 day and 24 hours differ
    (("a", JSONB, -1, True), {}, True, "text"),
    (("a", ENUM, -1, True), {}, True, "text"),  # hashes the label's OID
    (("a", REGCLASS, -1, True), {}, True, "text"),  # an OID
    (("a", CITEXT, -1, True), {}, True, "text"),
    (("a", INT4_ARRAY, -1, True), {}, True, "text"),  # array hashes ignore dimensions
    (("a", 90010, -1, True), {90010: INT4}, True, "binary"),  # domain over int4
    (("a", 90011, -1, True), {90011: 90010, 90010: INT8}, True, "binary"),  # domain over a domain
    (("a", 90012, -1, True), {90012: BPCHAR}, True, "text"),  # domain over bpchar: typmod unknown
    (("a", 90013, -1, True), {90013: NUMERIC}, True, "send"),  # numeric_send(domain value) works
    (("a", INT4, -1, True), {}, False, "text"),  # servers before 14: no hash_record_extended
    (("a", NUMERIC, -1, True), {}, False, "text"),
])
def test_column_plan(col, domains, allowed, where):
    plan = column_plan([col], domains, binary_allowed=allowed)
    assert plan["method"] == "row64"
    for group in ("binary", "send", "text"):
        names = [c[0] if group == "send" else c for c in plan[group]]
        assert names == (["a"] if group == where else [])


def test_column_plan_keeps_attnum_order_within_each_group():
    cols = [("c", NUMERIC, -1, True), ("a", INT4, -1, True), ("b", TEXT, -1, False), ("d", TEXT, -1, True),
            ("e", INTERVAL, -1, True), ("f", FLOAT8, -1, True)]
    assert column_plan(cols, {}) == {"method": "row64", "binary": ["a", "d"],
                                     "send": [["c", "numeric_send"], ["e", "interval_send"]], "text": ["b", "f"]}
    # format 2 (recomputed for old manifests): numeric and interval by text, no send group
    assert column_plan(cols, {}, method="columns") == {"method": "columns", "binary": ["a", "d"],
                                                       "text": ["c", "b", "e", "f"]}


@pytest.mark.parametrize("plan, seed, expected", [
    ({"binary": ["a", "b"], "text": []}, 0, 'hash_record_extended(ROW(t."a", t."b"), 0)'),
    ({"binary": [], "text": ["x"]}, 1, 'hashtextextended(ROW(t."x")::text, 1)'),
    ({"binary": ["a"], "text": ["x", "y"]}, 1,
     'hashtextextended(ROW(t."x", t."y")::text, hash_record_extended(ROW(t."a"), 1))'),
    ({"binary": [], "text": []}, 0, "hashtextextended(ROW()::text, 0)"),  # a table without columns
])
def test_row_hash_sql(plan, seed, expected):
    assert row_hash_sql(plan, seed).as_string(None) == expected


@pytest.mark.parametrize("plan, expected", [
    ({"binary": ["a", "b"], "send": [], "text": []}, """hashtextextended('', hash_record_extended(ROW(t."a", t."b"), 0))"""),
    ({"binary": ["a"], "send": [["n", "numeric_send"], ["i", "interval_send"]], "text": ["x", "y"]},
     'hashtextextended(ROW(t."x", t."y")::text, '
     'hash_record_extended(ROW(t."a", "numeric_send"(t."n"), "interval_send"(t."i")), 0))'),
    ({"binary": [], "send": [], "text": ["x"]}, 'hashtextextended(ROW(t."x")::text, 0)'),
    ({"binary": [], "send": [], "text": []}, "hashtextextended('', 0)"),  # a table without columns
])
def test_row64_sql(plan, expected):
    assert row64_sql({"method": "row64", **plan}).as_string(None) == expected


def test_row64_sql_refuses_a_send_function_not_in_the_list():
    with pytest.raises(JobFailed, match="unknown send column"):
        row64_sql({"method": "row64", "binary": [], "send": [["a", "pg_sleep"]], "text": []})


def test_content_sql_one_sum_for_row64_two_for_columns():
    from psycopg import sql
    src = sql.SQL("ONLY {} AS t").format(sql.Identifier("s", "t"))
    new = content_sql(src, {"method": "row64", "binary": ["a"], "send": [], "text": []}, "full").as_string(None)
    assert new.count("sum(") == 1 and new.endswith('NULL FROM ONLY "s"."t" AS t')
    old = content_sql(src, {"method": "columns", "binary": ["a"], "text": []}, "full").as_string(None)
    assert old.count("sum(") == 2 and ", 1)" in old


@pytest.mark.parametrize("like, plan", [
    (None, None),
    ({"kind": "table", "rows": 1, "hash": None}, None),  # rows mode
    ({"kind": "table", "rows": 1, "hash": "h", "method": "columns", "binary": ["a"], "text": ["n"]},
     {"method": "columns", "binary": ["a"], "text": ["n"]}),  # format 2
    ({"kind": "table", "rows": 1, "hash": "h", "method": "row64", "binary": ["a"], "send": [["n", "numeric_send"]],
      "text": []}, {"method": "row64", "binary": ["a"], "send": [["n", "numeric_send"]], "text": []}),
])
def test_recorded_plan(like, plan):
    assert recorded_plan(like) == plan


def test_recorded_plan_refuses_an_unknown_method():
    with pytest.raises(JobFailed, match="unknown fingerprint method"):
        recorded_plan({"kind": "table", "rows": 1, "hash": "h", "method": "md5", "binary": [], "text": []})


@pytest.mark.parametrize("like, legacy", [
    (None, False), ({}, False),
    ({"public.t": {"rows": 1, "hash": None}}, True),
    ({"public.t": {"rows": 1, "hash": "aa", "method": "record"}}, True),
    ({"public.t": {"kind": "table", "rows": 1, "hash": None}}, False),
    ({"schema": {"kind": "schema", "items": {}}}, False),
])
def test_is_legacy(like, legacy):
    assert is_legacy(like) is legacy


@pytest.mark.parametrize("value, items", [
    ('"$user", public', ["$user", "public"]),
    ("public", ["public"]),
    ('"a,b", c', ["a,b", "c"]),
    ('"say ""hi""", x', ['say "hi"', "x"]),
    ("", []),
    (" a ,  b ", ["a", "b"]),
])
def test_split_guc_list(value, items):
    assert split_guc_list(value) == items


@pytest.mark.parametrize("setting, rendered", [
    ("TimeZone=Asia/Shanghai", "SET \"TimeZone\" TO 'Asia/Shanghai'"),
    ("DateStyle=SQL, DMY", "SET \"DateStyle\" TO 'SQL, DMY'"),
    ('search_path="$user", public, a', "SET \"search_path\" TO '$user', 'public', 'a'"),
    ("work_mem=8MB", "SET \"work_mem\" TO '8MB'"),
    ("application_name=it's", "SET \"application_name\" TO 'it''s'"),
    ("x.y=a=b", "SET \"x.y\" TO 'a=b'"),  # only the first '=' separates name and value
])
def test_setting_clause(setting, rendered):
    assert setting_clause(setting).as_string(None) == rendered


@pytest.mark.parametrize("props, version, expected", [
    ({"encoding": "UTF8", "collate": "zh_CN.UTF-8", "ctype": "zh_CN.UTF-8", "locale_provider": "libc"}, 150000,
     "CREATE DATABASE \"d\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'zh_CN.UTF-8' LC_CTYPE 'zh_CN.UTF-8' LOCALE_PROVIDER libc"),
    ({"encoding": "UTF8", "collate": "C", "ctype": "C", "locale_provider": "icu", "icu_locale": "zh"}, 150000,
     "CREATE DATABASE \"d\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'zh'"),
    ({"encoding": "LATIN1", "collate": "C", "ctype": "C", "locale_provider": "libc"}, 140000,
     "CREATE DATABASE \"d\" TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"),
    ({"encoding": "UTF8"}, 150000, "CREATE DATABASE \"d\" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER libc"),
])
def test_create_database_sql(props, version, expected):
    assert create_database_sql("d", props, version).as_string(None) == expected


def test_properties_statements_skip_roles_the_destination_lacks():
    props = {"settings": ["TimeZone=UTC"], "role_settings": [["app", "work_mem=8MB"], ["gone", "work_mem=1MB"]],
             "comment": "HIS"}
    stmts, missing = properties_statements("his", props, {"app", "postgres"})
    assert [s.as_string(None) for s in stmts] == [
        "ALTER DATABASE \"his\" SET \"TimeZone\" TO 'UTC'",
        "ALTER ROLE \"app\" IN DATABASE \"his\" SET \"work_mem\" TO '8MB'",
        "COMMENT ON DATABASE \"his\" IS 'HIS'"]
    assert missing == ["gone"]
    stmts, missing = properties_statements("his", {"settings": [], "role_settings": [], "comment": None})
    assert stmts == [] and missing == []


def test_schema_hash_is_order_independent_and_content_sensitive():
    a = {"table public.t": "01", "index public.i": "02"}
    assert schema_hash(a) == schema_hash(dict(reversed(list(a.items()))))
    assert schema_hash(a) != schema_hash({**a, "index public.i": "03"})


def _schema(items):
    return {"kind": "schema", "objects": len(items), "hash": schema_hash(items), "items": items}


@pytest.mark.parametrize("expected, actual, equal, needles", [
    (_schema({"table public.t": "1"}), _schema({"table public.t": "1"}), True, ["1 schema objects equal"]),
    (_schema({"table public.t": "1", "trigger x on public.t": "2"}), _schema({"table public.t": "1"}), False,
     ["missing from the restored copy: trigger x on public.t"]),
    (_schema({"table public.t": "1"}), _schema({"table public.t": "1", "view public.v": "3"}), False,
     ["not in the backup: view public.v"]),
    (_schema({"function public.f()": "1"}), _schema({"function public.f()": "2"}), False, ["different: function public.f()"]),
    (_schema({"table public.t": "1", "acl table public.t": "a"}), _schema({"table public.t": "1", "acl table public.t": "b"}),
     False, ["different: acl table public.t"]),
    (_schema({"table public.t": "1", "acl table public.t": "a", "owner table public.t": "o"}),
     {**_schema({"table public.t": "1", "acl table public.t": "b"}), "not_compared": {"owners and grants": "no-owner"}},
     True, ["not compared: owners and grants (no-owner)"]),
])
def test_compare_schema(expected, actual, equal, needles):
    ok, detail = compare_schema(expected, actual)
    assert ok is equal
    for n in needles:
        assert n in detail


@pytest.mark.parametrize("key, e, a, equal, needles", [
    ("public.t", {"kind": "table", "rows": 2, "hash": "a"}, {"kind": "table", "rows": 2, "hash": "a"}, True, ["rows=2"]),
    ("public.t", {"kind": "table", "rows": 2, "hash": "a"}, {"kind": "table", "rows": 2, "hash": "b"}, False,
     ["table public.t: manifest rows=2 hash=a, restored rows=2 hash=b"]),
    ("public.p", {"kind": "partitioned table", "rows": 400, "hash": None, "info": {"leaf_rows": {"p0": 300}}},
     {"kind": "partitioned table", "rows": 400, "hash": None, "info": {"leaf_rows": {"p0": 100}}}, True, ["rows=400"]),
    ("sequence public.s", {"kind": "sequence", "last_value": 1000, "is_called": True},
     {"kind": "sequence", "last_value": 1, "is_called": True}, False, ["sequence public.s: last_value: manifest=1000 restored=1"]),
    ("materialized view public.m", {"kind": "materialized view", "populated": True, "rows": 4, "hash": "x"},
     {"kind": "materialized view", "populated": False, "rows": None, "hash": None}, False, ["populated: manifest=True restored=False"]),
    ("database", {"kind": "database", "collate": "zh_CN.UTF-8", "role_settings": [["a", "x=1"]]},
     {"kind": "database", "collate": "C", "role_settings": []}, False, ["collate: manifest='zh_CN.UTF-8' restored='C'", "role_settings"]),
    ("database", {"kind": "database", "collate": "C", "role_settings": [["a", "x=1"]]},
     {"kind": "database", "collate": "C", "role_settings": [], "not_compared": {"role_settings": "role a missing"}}, True,
     ["not compared: role_settings (role a missing)"]),
    ("public.t", {"rows": 3, "hash": "a", "method": "record"}, {"rows": 3, "hash": "b", "method": "record"}, False,
     ["table public.t: manifest rows=3 hash=a, restored rows=3 hash=b"]),  # format 1 message unchanged
])
def test_compare_entry(key, e, a, equal, needles):
    ok, detail = compare_entry(key, e, a)
    assert ok is equal
    for n in needles:
        assert n in detail


def test_compare_fingerprints_names_missing_and_extra_objects_by_kind():
    checks = compare_fingerprints({"sequence public.s": {"kind": "sequence", "last_value": 1, "is_called": False}},
                                  {"materialized view public.m": {"kind": "materialized view", "populated": False}})
    assert [(c["name"], c["status"]) for c in checks] == [("fingerprint materialized view public.m", "failed"),
                                                          ("fingerprint sequence public.s", "failed")]
    assert checks[0]["detail"] == "materialized view public.m is in the restored copy but not in the backup manifest"
    assert checks[1]["detail"] == "sequence public.s is missing from the restored copy"


PASS = {"name": "fingerprint schema", "status": "passed", "proves_data": True}
FAIL = {"name": "fingerprint public.t", "status": "failed", "proves_data": True, "detail": "differs"}
SKIPPED_PROOF = {"name": "fingerprint x", "status": "skipped", "proves_data": True}
AMCHECK_OK = {"name": "amcheck", "status": "passed"}
AMCHECK_SKIPPED = {"name": "amcheck", "status": "skipped", "detail": "role r is not a superuser"}
AMCHECK_WAIVED = {"name": "amcheck", "status": "waived", "detail": "drill.amcheck: false"}


@pytest.mark.parametrize("checks, passed, verification, has, lacks", [
    ([PASS, AMCHECK_OK], True, False, [], [NOT_COMPARED]),
    ([], False, False, [NOT_COMPARED], []),  # nothing compared
    ([AMCHECK_OK], False, False, [NOT_COMPARED], []),  # amcheck does not prove the data
    ([FAIL], False, True, ["check failed: fingerprint public.t: differs"], [NOT_COMPARED]),  # compared and differ
    ([FAIL, PASS], False, True, ["check failed: fingerprint public.t: differs"], [NOT_COMPARED]),
    ([SKIPPED_PROOF], False, False, ["no data-proving check passed (1 compared, none proven)"], [NOT_COMPARED]),
    ([PASS, AMCHECK_SKIPPED], False, False, ["check skipped (unproven): amcheck: role r is not a superuser"], []),
    ([PASS, AMCHECK_WAIVED], True, False, ["deviation (waived by policy): amcheck: drill.amcheck: false"], []),
    ([PASS, {"name": "odd", "status": "bogus"}], False, False, ["check odd has unknown status 'bogus'"], []),
])
def test_drill_verdict_boundaries(checks, passed, verification, has, lacks):
    v = drill_verdict(restored=True, checks=checks, rto_met=True, rpo_met=True)
    assert v.passed is passed and v.verification_failed is verification
    for h in has:
        assert h in v.reasons
    for r in lacks:
        assert r not in v.reasons


def test_waived_check_still_fails_with_other_problems():
    v = drill_verdict(restored=True, checks=[PASS, AMCHECK_WAIVED], rto_met=False, rpo_met=True)
    assert not v.passed and v.reasons[-1].startswith("deviation (waived by policy)")


def test_not_restored_never_claims_fingerprints():
    v = drill_verdict(restored=False, checks=[], rto_met=None, rpo_met=None, failed_step="restore", error="x")
    assert v.reasons == ["step restore failed: x"]


@pytest.mark.parametrize("data, error", [
    (b"NOTPG", ValueError),
    (b"PGDMP\x01\x0e\x00\x04\x08\x02", ValueError),  # directory/tar format, not custom
    (b"PGDMP\x01\x09\x00\x04\x08\x01", ValueError),  # archive version 1.9
    (b"PGDMP\x01\x0e\x00\x04\x08\x01\x00", _NeedMore),  # truncated: wait for more bytes
])
def test_parse_toc_refuses_or_waits(data, error):
    with pytest.raises(error):
        parse_toc(data)
