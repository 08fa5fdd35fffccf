"""Pure decision functions, table-driven, no servers."""

from datetime import datetime, timedelta, timezone

import pytest

from backupkit.durations import format_duration, parse_duration
from backupkit.expect import judge, parse_expect
from backupkit.due import backup_due, drill_due, last_slot
from backupkit.verdict import compare_fingerprints, drill_verdict

BT = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("6h", 21600), ("24h", 86400), ("30d", 2592000),
                                          ("1w", 604800), ("1d12h", 129600), ("1 day", 86400), (90, 90)])
def test_parse_duration(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["soon", "6 parsecs", "", "h6"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration():
    assert format_duration(2.44) == "2.4s"
    assert format_duration(timedelta(hours=6)) == "6h"
    assert format_duration(3723) == "1h2m"


@pytest.mark.parametrize("expect,value,ok", [
    ("> 0", 5, True), ("> 0", 0, False), (">= 10", 10, True), ("= 3", "3", True), ("!= 3", 3, False),
    ("< 1.5", 1.2, True), ("<= 2", 3, False), ("between 1 and 10", 10, True), ("between 1 and 10", 11, False),
    ("= 'ok'", "ok", True), ("= 'ok'", "bad", False),
    (">= backup_time - 1 day", "2026-11-25 03:00:00", True), (">= backup_time - 1 day", "2026-11-24 23:00:00", False),
    (">= backup_time - 6h", datetime(2026, 11, 25, 21, 0, tzinfo=timezone.utc), True),
    ("<= backup_time + 1h", "2026-11-26T02:30:00Z", True), ("<= backup_time", "2026-11-26T02:30:00Z", False),
    ("> 0", None, False), ("> 0", "not a number", False),
])
def test_judge(expect, value, ok):
    assert judge(expect, value, backup_time=BT)[0] is ok


@pytest.mark.parametrize("text", ["roughly 5", "> ", "between 5 and 1", ">= backup_time - 1 fortnight"])
def test_parse_expect_rejects(text):
    with pytest.raises(ValueError):
        parse_expect(text)


def _fp(rows=1, h="aa"):
    return {"t": {"rows": rows, "hash": h}}


@pytest.mark.parametrize("kw,passed", [
    (dict(restored=True, checks=compare_fingerprints(_fp(), _fp()), rto_met=True, rpo_met=True), True),
    (dict(restored=True, checks=[], rto_met=True, rpo_met=True), False),  # nothing proved the data
    (dict(restored=True, checks=compare_fingerprints(_fp(), _fp(2)), rto_met=True, rpo_met=True), False),
    (dict(restored=True, checks=compare_fingerprints(_fp(), _fp()) + [{"name": "amcheck", "status": "skipped"}],
          rto_met=True, rpo_met=True), False),  # skipped is unproven
    (dict(restored=True, checks=compare_fingerprints(_fp(), _fp()), rto_met=False, rpo_met=True), False),
    (dict(restored=True, checks=compare_fingerprints(_fp(), _fp()), rto_met=True, rpo_met=False), False),
    (dict(restored=False, checks=[], rto_met=None, rpo_met=None, failed_step="restore", error="x"), False),
])
def test_drill_verdict(kw, passed):
    assert drill_verdict(**kw).passed is passed


def test_fingerprint_mismatch_is_verification_failure_naming_table():
    checks = compare_fingerprints({"patients": {"rows": 3, "hash": "a"}}, {"patients": {"rows": 3, "hash": "b"}})
    v = drill_verdict(restored=True, checks=checks, rto_met=True, rpo_met=True)
    assert not v.passed and v.verification_failed
    assert "patients" in checks[0]["detail"] and "hash=a" in checks[0]["detail"] and "hash=b" in checks[0]["detail"]


def test_missing_table_detected():
    checks = compare_fingerprints({"a": {"rows": 1, "hash": None}, "b": {"rows": 1, "hash": None}},
                                  {"a": {"rows": 1, "hash": None}})
    assert [c["status"] for c in checks] == ["passed", "failed"] and "missing" in checks[1]["detail"]


@pytest.mark.parametrize("last,every,now,due", [
    (None, timedelta(days=30), BT, True),
    (BT - timedelta(days=29), timedelta(days=30), BT, False),
    (BT - timedelta(days=30), timedelta(days=30), BT, True),
])
def test_drill_due(last, every, now, due):
    assert drill_due(last, every, now) is due


@pytest.mark.parametrize("at,last,now,slot", [
    ("02:00", None, datetime(2026, 11, 26, 1, 0), datetime(2026, 11, 25, 2, 0)),
    ("02:00", datetime(2026, 11, 25, 2, 1), datetime(2026, 11, 26, 1, 59), None),  # yesterday's slot is covered
    ("02:00", datetime(2026, 11, 25, 2, 1), datetime(2026, 11, 26, 2, 0), datetime(2026, 11, 26, 2, 0)),
    # the host was down over the 02:00 slot: due at the next tick, for the missed slot
    ("02:00", datetime(2026, 11, 24, 2, 1), datetime(2026, 11, 26, 9, 30), datetime(2026, 11, 26, 2, 0)),
    ("23:30", datetime(2026, 11, 25, 23, 31), datetime(2026, 11, 26, 0, 10), None),
])
def test_backup_due(at, last, now, slot):
    assert backup_due(at, last, now) == slot


def test_last_slot_is_not_in_the_future():
    now = datetime(2026, 11, 26, 1, 0)
    assert last_slot("02:00", now) == datetime(2026, 11, 25, 2, 0)


def _ids(days_ago: list[int]):
    base = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
    return [((base - timedelta(days=d)).strftime("%Y%m%dT%H%M%SZ") + f"-{d:06x}", base - timedelta(days=d))
            for d in days_ago]


def test_plan_prune_gfs():
    from backupkit.retention import plan_prune

    backups = _ids(list(range(0, 400)))
    plan = plan_prune(backups[::-1], daily=7, weekly=4, monthly=6, yearly=2)  # oldest first
    kept = sorted(plan.keep, reverse=True)
    assert len(plan.keep) + len(plan.remove) == 400
    assert all(bid in plan.keep for bid, _ in backups[:7])  # the last 7 days
    assert backups[0][0] in plan.keep and "newest" in plan.keep[backups[0][0]]
    assert 7 <= len(kept) <= 7 + 4 + 6 + 2
    newest_2025 = next(b for b, _ in backups if b.startswith("2025"))
    assert newest_2025.startswith("20251231") and any("yearly" in r for r in plan.keep[newest_2025])
    assert backups[-1][0] in plan.remove  # the oldest is covered by no rule


def test_plan_prune_never_removes_the_only_backup():
    from backupkit.retention import plan_prune

    plan = plan_prune(_ids([100]), daily=0, weekly=0, monthly=0, yearly=0)
    assert plan.remove == [] and len(plan.keep) == 1
