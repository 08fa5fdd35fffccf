"""verdict: drill verdicts and fingerprint comparison, table-driven with exact messages (pure, no I/O)."""

from datetime import datetime, timedelta, timezone

import pytest

from backupkit.verdict import (NOT_COMPARED, Verdict, age_ok, compare_entry, compare_fingerprints, compare_schema,
                               drill_verdict)

T = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
OK = {"name": "fingerprint t", "status": "passed", "proves_data": True}


def test_verdict_defaults_and_label():
    v = Verdict(True)
    assert (v.passed, v.reasons, v.verification_failed, v.label) == (True, [], False, "passed")
    assert Verdict(False).label == "failed"


@pytest.mark.parametrize("kw,passed,reasons,verification", [
    (dict(restored=True, checks=[OK], rto_met=True, rpo_met=True), True, [], False),
    (dict(restored=True, checks=[OK], rto_met=True, rpo_met=None), True, [], False),
    (dict(restored=False, checks=[], rto_met=None, rpo_met=None), False, ["the restore did not complete"], False),
    (dict(restored=False, checks=[], rto_met=None, rpo_met=None, failed_step="restore", error="boom"), False,
     ["step restore failed: boom"], False),
    (dict(restored=False, checks=[], rto_met=None, rpo_met=None, failed_step="restore"), False,
     ["step restore failed"], False),
    (dict(restored=True, checks=[], rto_met=True, rpo_met=True), False, [NOT_COMPARED], False),
    (dict(restored=True, checks=[{"name": "amcheck", "status": "passed"}], rto_met=True, rpo_met=True), False,
     [NOT_COMPARED], False),
    (dict(restored=True, checks=[OK, {"name": "amcheck", "status": "failed", "detail": "bad index"}], rto_met=True,
          rpo_met=True), False, ["check failed: amcheck: bad index"], False),
    (dict(restored=True, checks=[OK, {"name": "amcheck", "status": "failed"}], rto_met=True, rpo_met=True), False,
     ["check failed: amcheck"], False),
    (dict(restored=True, checks=[OK, {"name": "amcheck", "status": "skipped", "detail": "off"}], rto_met=True,
          rpo_met=True), False, ["check skipped (unproven): amcheck: off"], False),
    (dict(restored=True, checks=[OK, {"name": "amcheck", "status": "waived", "detail": "policy"}], rto_met=True,
          rpo_met=True), True, ["deviation (waived by policy): amcheck: policy"], False),
    (dict(restored=True, checks=[OK, {"name": "x", "status": "odd"}], rto_met=True, rpo_met=True), False,
     ["check x has unknown status 'odd'"], False),
    (dict(restored=True, checks=[{**OK, "status": "skipped"}], rto_met=True, rpo_met=True), False,
     ["check skipped (unproven): fingerprint t", "no data-proving check passed (1 compared, none proven)"], False),
    (dict(restored=True, checks=[{**OK, "status": "failed", "detail": "d"}], rto_met=True, rpo_met=True), False,
     ["check failed: fingerprint t: d"], True),
    (dict(restored=True, checks=[{**OK, "status": "failed"}, {**OK, "status": "skipped"}], rto_met=True,
          rpo_met=True), False, ["check failed: fingerprint t", "check skipped (unproven): fingerprint t"], True),
    (dict(restored=True, checks=[{**OK, "status": "skipped"}, OK], rto_met=True, rpo_met=True), False,
     ["check skipped (unproven): fingerprint t"], False),
    (dict(restored=True, checks=[OK], rto_met=False, rpo_met=True), False, ["recovery time exceeded the tier's RTO"],
     False),
    (dict(restored=True, checks=[OK], rto_met=True, rpo_met=False), False, ["recovery point is older than the RPO"],
     False),
    (dict(restored=True, checks=[OK], rto_met=None, rpo_met=True), False, ["recovery time was not measured"], False),
    (dict(restored=False, checks=[OK], rto_met=None, rpo_met=None, failed_step="verify"), False,
     ["step verify failed"], False),
    (dict(restored=True, checks=[OK], rto_met=True, rpo_met=True, verification_error=True), True, [], True),
    (dict(restored=True, checks=[{"name": "n", "status": "failed"}, OK], rto_met=True, rpo_met=True), False,
     ["check failed: n"], False),
])
def test_drill_verdict_exact(kw, passed, reasons, verification):
    v = drill_verdict(**kw)
    assert (v.passed, v.reasons, v.verification_failed) == (passed, reasons, verification)


@pytest.mark.parametrize("e,a,want", [
    # format 1 (no kind on either side): the historical messages, whole entries compared
    ({"rows": 3, "hash": "a"}, {"rows": 3, "hash": "a"}, (True, "rows=3 hash=a")),
    ({"rows": 3, "hash": None}, {"rows": 3, "hash": None}, (True, "rows=3")),
    ({"rows": 3, "hash": "a"}, {"rows": 4, "hash": "b"},
     (False, "table t: manifest rows=3 hash=a, restored rows=4 hash=b")),
    ({"rows": 3, "hash": "a", "info": "x"}, {"rows": 3, "hash": "a"},
     (False, "table t: manifest rows=3 hash=a, restored rows=3 hash=a")),
    # kind on one side only: format 2 comparison
    ({"kind": "table", "rows": 3, "hash": None}, {"rows": 3, "hash": None},
     (False, "table t: manifest rows=3 hash=None, restored rows=3 hash=None; kind: manifest='table' restored=None")),
    ({"rows": 3, "hash": None}, {"kind": "table", "rows": 3, "hash": None},
     (False, "table t: manifest rows=3 hash=None, restored rows=3 hash=None; kind: manifest=None restored='table'")),
    ({"kind": "table", "rows": 3, "hash": "a"}, {"kind": "table", "hash": "a"},
     (False, "table t: manifest rows=3 hash=a, restored rows=None hash=a")),
    ({"kind": "table", "hash": "a"}, {"kind": "table", "rows": 3, "hash": "a"},
     (False, "table t: manifest rows=None hash=a, restored rows=3 hash=a")),
    ({"kind": "table", "rows": 3, "hash": None, "info": "x"}, {"kind": "table", "rows": 3, "hash": None},
     (True, "rows=3 hash=None")),
    ({"kind": "sequence", "last_value": 5, "is_called": True}, {"kind": "sequence", "last_value": 5, "is_called": True},
     (True, "last_value=5 is_called=True")),
    ({"kind": "sequence", "last_value": 5}, {"kind": "sequence", "last_value": 6},
     (False, "t: last_value: manifest=5 restored=6")),
    ({"kind": "sequence", "last_value": 5}, {"last_value": 6},
     (False, "t: kind: manifest='sequence' restored=None; last_value: manifest=5 restored=6")),
    ({"last_value": 5}, {"kind": "sequence", "last_value": 6},
     (False, "t: kind: manifest=None restored='sequence'; last_value: manifest=5 restored=6")),
    ({"kind": "view", "definition": "d"}, {"kind": "view", "definition": "d"}, (True, "t equal")),
    ({"kind": "partitioned table", "count": 2, "rows": 1}, {"kind": "partitioned table", "count": 3, "rows": 1},
     (False, "partitioned table t: manifest rows=1 hash=None, restored rows=1 hash=None; count: manifest=2 restored=3")),
    ({"kind": "table", "rows": 3, "hash": "a"},
     {"kind": "table", "rows": 3, "hash": "b", "not_compared": {"hash": "unlogged"}},
     (True, "rows=3; not compared: hash (unlogged)")),
    ({"kind": "view", "definition": "a"}, {"kind": "view", "definition": "b", "not_compared": {"definition": "why"}},
     (True, "t equal; not compared: definition (why)")),
    ({"kind": "matview", "rows": 1, "hash": "a", "populated": True},
     {"kind": "matview", "rows": 1, "hash": "a", "populated": False, "not_compared": {"x": "y"}},
     (False, "t: manifest rows=1 hash=a, restored rows=1 hash=a; populated: manifest=True restored=False; "
             "not compared: x (y)")),
])
def test_compare_entry(e, a, want):
    assert compare_entry("t", e, a) == want


@pytest.mark.parametrize("e,a,want", [
    ({"items": {"x": 1}, "hash": "h"}, {"kind": "schema", "items": {"x": 1}, "hash": "h"}, (True, "1 schema objects equal")),
    ({"kind": "schema", "items": {"x": 1}, "hash": "h"}, {"items": {"x": 1}, "hash": "h"}, (True, "1 schema objects equal")),
    ({"kind": "schema", "items": {"x": 1}, "hash": "h"}, {"kind": "schema", "items": {"x": 1}, "hash": "g"},
     (False, "schema hash manifest=h restored=g (items equal)")),
])
def test_compare_entry_dispatches_schema(e, a, want):
    assert compare_entry("public", e, a) == want


def _names(n, prefix="t"):
    return {f"{prefix}{i:02d}": "x" for i in range(n)}


@pytest.mark.parametrize("e,a,want", [
    ({"items": {}, "hash": "h"}, {"items": {}, "hash": "h"}, (True, "0 schema objects equal")),
    ({"items": {"a": 1, "b": 2}, "hash": "h"}, {"items": {"a": 1, "b": 2}, "hash": "g"},
     (False, "schema hash manifest=h restored=g (items equal)")),
    ({"items": {"a": 1, "owner a": "x"}, "hash": "h"},
     {"items": {"a": 1, "owner a": "y", "acl a": "z"}, "hash": "g", "not_compared": {"owners and grants": "no-owner"}},
     (True, "1 schema objects equal; not compared: owners and grants (no-owner)")),
    ({"items": {"a": 1, "owner a": "x"}, "hash": "h"}, {"items": {"a": 1, "owner a": "y"}, "hash": "h"},
     (False, "schema objects differ: different: owner a")),
    ({"items": {"a": 1, "b": 2, "c": 3}}, {"items": {"b": 9, "c": 3, "d": 4}, "not_compared": {"z": "w", "y": "v"}},
     (False, "schema objects differ: missing from the restored copy: a | not in the backup: d | different: b"
             "; not compared: y (v); not compared: z (w)")),
    ({"items": None}, {"items": {"a": 1}}, (False, "schema objects differ: not in the backup: a")),
    ({"items": _names(10)}, {"items": {}},
     (False, "schema objects differ: missing from the restored copy: " + "; ".join(f"t{i:02d}" for i in range(10)))),
    ({"items": _names(11)}, {"items": {}},
     (False, "schema objects differ: missing from the restored copy: " + "; ".join(f"t{i:02d}" for i in range(10))
      + "; and 1 more")),
    ({"items": _names(13)}, {"items": {}},
     (False, "schema objects differ: missing from the restored copy: " + "; ".join(f"t{i:02d}" for i in range(10))
      + "; and 3 more")),
])
def test_compare_schema(e, a, want):
    assert compare_schema(e, a) == want


def test_compare_fingerprints_every_key_sorted_with_full_checks():
    expected = {"b": {"rows": 1, "hash": "x"}, "s": {"kind": "sequence", "last_value": 1},
                "m": {"kind": "table", "rows": 2, "hash": None}}
    actual = {"b": {"rows": 1, "hash": "x"}, "a": {"kind": "partitioned table", "rows": 0, "hash": None},
              "s": {"kind": "sequence", "last_value": 2}}
    assert compare_fingerprints(expected, actual) == [
        {"name": "fingerprint a", "status": "failed", "proves_data": True,
         "detail": "partitioned table a is in the restored copy but not in the backup manifest"},
        {"name": "fingerprint b", "status": "passed", "proves_data": True, "detail": "rows=1 hash=x"},
        {"name": "fingerprint m", "status": "failed", "proves_data": True,
         "detail": "table m is missing from the restored copy"},
        {"name": "fingerprint s", "status": "failed", "proves_data": True,
         "detail": "s: last_value: manifest=1 restored=2"},
    ]
    assert compare_fingerprints({}, {}) == []
    assert compare_fingerprints({"v": {"kind": "view"}}, {}) == [
        {"name": "fingerprint v", "status": "failed", "proves_data": True, "detail": "v is missing from the restored copy"}]
    assert compare_fingerprints({}, {"q": {}}) == [
        {"name": "fingerprint q", "status": "failed", "proves_data": True,
         "detail": "table q is in the restored copy but not in the backup manifest"}]


@pytest.mark.parametrize("last,limit,want", [
    (None, timedelta(hours=24), False),
    (T - timedelta(hours=24), timedelta(hours=24), True),
    (T - timedelta(hours=24, microseconds=1), timedelta(hours=24), False),
    (T - timedelta(hours=1), timedelta(hours=24), True),
    (T, timedelta(0), True),
    (T + timedelta(hours=30), timedelta(hours=24), True),
    (T - timedelta(seconds=1), timedelta(0), False),
])
def test_age_ok(last, limit, want):
    assert age_ok(last, limit, T) is want


def test_failed_fingerprints_of_an_approximate_backup_say_why_and_stay_failed():
    from backupkit.actions.drill import note_approximate

    def checks():
        return [{"name": "fingerprint `legacy`", "status": "failed", "detail": "table `legacy`: rows 2 != 1"},
                {"name": "fingerprint `orders`", "status": "passed", "detail": "equal"},
                {"name": "amcheck", "status": "failed", "detail": "index broken"}]

    approx = {"exactness": "approximate", "approximate_because": ["table legacy (MyISAM) is not transactional"]}
    out = note_approximate(checks(), approx)
    assert out[0]["status"] == "failed" and out[0]["approximate"] is True
    assert out[0]["detail"].startswith("table `legacy`: rows 2 != 1 (the backup recorded its fingerprints as "
                                       "approximate: table legacy (MyISAM) is not transactional;")
    assert out[1] == checks()[1] and out[2] == checks()[2]  # passed fingerprints and other checks untouched
    for exact in ({"exactness": "exact"}, {}, None, "approximate"):
        assert note_approximate(checks(), exact) == checks()
    assert "approximate: no reason recorded;" in note_approximate(checks(), {"exactness": "approximate"})[0]["detail"]
