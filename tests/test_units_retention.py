"""retention: periods, labels, counts and backup-ID times, each pinned to exact values."""

from datetime import datetime, timedelta, timezone

import pytest

from backupkit.retention import backup_time, period_label, plan_prune

UTC = timezone.utc


def at(y, m, d, h=2):
    return datetime(y, m, d, h, tzinfo=UTC)


@pytest.mark.parametrize("kind,when,label", [
    ("daily", at(2026, 1, 5), "2026-01-05"),
    ("weekly", at(2026, 1, 1), "2026-W01"),
    ("weekly", at(2027, 1, 1), "2026-W53"),  # ISO year, not calendar year
    ("monthly", at(2026, 2, 9), "2026-02"),
    ("yearly", at(2026, 12, 31), "2026"),
])
def test_each_rule_names_its_period(kind, when, label):
    counts = dict(daily=0, weekly=0, monthly=0, yearly=0)
    counts[kind] = 1
    plan = plan_prune([("old", when - timedelta(days=3000)), ("b", when)], **counts)
    assert plan.keep == {"b": ["newest", f"{kind} {label}"]}
    assert plan.remove == ["old"]


@pytest.mark.parametrize("count,kept", [(0, ["d4"]), (1, ["d4"]), (2, ["d4", "d3"]), (3, ["d4", "d3", "d2"]),
                                        (9, ["d4", "d3", "d2", "d1"])])
def test_daily_count_is_exact(count, kept):
    backups = [(f"d{n}", at(2026, 3, n)) for n in (1, 2, 3, 4)]
    plan = plan_prune(backups, daily=count, weekly=0, monthly=0, yearly=0)
    assert sorted(plan.keep, reverse=True) == kept
    assert plan.remove == [b for b, _ in backups if b not in kept]


def test_one_period_keeps_only_its_newest_backup():
    backups = [("a", at(2026, 3, 1, 1)), ("b", at(2026, 3, 1, 5)), ("c", at(2026, 3, 2, 1)), ("d", at(2026, 3, 2, 9))]
    plan = plan_prune(backups, daily=2, weekly=1, monthly=1, yearly=1)
    assert plan.keep == {"d": ["newest", "daily 2026-03-02", "weekly 2026-W10", "monthly 2026-03", "yearly 2026"],
                         "b": ["daily 2026-03-01"]}
    assert plan.remove == ["a", "c"]


def test_protected_reasons_come_after_newest_and_before_rules():
    backups = [("a", at(2026, 3, 1)), ("b", at(2026, 3, 2))]
    plan = plan_prune(backups, daily=2, weekly=0, monthly=0, yearly=0, protect={"b": ["held"], "a": ["drill"]})
    assert plan.keep == {"b": ["newest", "held", "daily 2026-03-02"], "a": ["drill", "daily 2026-03-01"]}
    assert plan.remove == []
    assert plan_prune(backups, daily=0, weekly=0, monthly=0, yearly=0, protect=None).remove == ["a"]


@pytest.mark.parametrize("kind,period,label", [
    ("daily", (2026, 1, 2), "2026-01-02"), ("weekly", (2026, 12), "2026-W12"), ("monthly", (2026, 10), "2026-10"),
    ("yearly", (987,), "987"),
])
def test_period_label_exact(kind, period, label):
    assert period_label(kind, period) == label


@pytest.mark.parametrize("bid,when", [
    ("20261126T020000.123Z-1a2b3c", datetime(2026, 11, 26, 2, 0, 0, 123000, tzinfo=UTC)),
    ("20261126T020000Z-1a2b3c", datetime(2026, 11, 26, 2, 0, 0, tzinfo=UTC)),
    ("20261126T020000Z", datetime(2026, 11, 26, 2, 0, 0, tzinfo=UTC)),
])
def test_backup_time_exact(bid, when):
    assert backup_time(bid) == when


@pytest.mark.parametrize("bid", ["20261126-1a2b3c", "x-1", "20261126T020000.123-1"])
def test_backup_time_rejects(bid):
    with pytest.raises(ValueError):
        backup_time(bid)
