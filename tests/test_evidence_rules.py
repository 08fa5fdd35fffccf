"""Verdict rules and counted facts: every boundary pinned, table-driven (pure functions, no I/O)."""

from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from backupkit.evidence import rules
from backupkit.evidence.controls import RULES, load_mappings
from backupkit.evidence.facts import due_days, facts, gaps, period_days
from backupkit.evidence.i18n import duration
from backupkit.evidence.rules import CONFORMANT as C, DOCUMENTS as D, NA, NON as N, PARTIAL as P
from backupkit.ledger import Record

CST = ZoneInfo("Asia/Shanghai")
DAY = 86400.0


@pytest.mark.parametrize("n,m,full,partial,want", [
    (30, 30, 100, 90, C), (29, 30, 100, 90, P), (27, 30, 100, 90, P), (26, 30, 100, 90, N),
    (9, 10, 100, 90, P), (8, 10, 100, 90, N), (0, 10, 100, 90, N), (0, 0, 100, 90, NA), (1, 1, 100, 90, C),
    (90, 91, 100, 90, P), (82, 91, 100, 90, P), (81, 91, 100, 90, N),  # 8200 >= 90*91=8190 > 8100
    (19, 20, 95, 90, C), (18, 20, 95, 90, P), (17, 20, 95, 90, N), (5, 5, 100, 100, C), (4, 5, 100, 100, N),
])
def test_ratio_n_of_m(n, m, full, partial, want):
    assert rules.ratio(n, m, full, partial) == want


@pytest.mark.parametrize("gaps_,every,passing,want", [
    ([30 * DAY], 30 * DAY, 1, C), ([30 * DAY + 1], 30 * DAY, 1, P), ([36 * DAY, 2 * DAY], 30 * DAY, 2, P),
    ([], 30 * DAY, 1, C), ([1.0], 30 * DAY, 0, N), ([29 * DAY, 30 * DAY, 0.0], 30 * DAY, 2, C),
])
def test_drill_gaps_against_every(gaps_, every, passing, want):
    assert rules.drill_gaps(gaps_, every, passing) == want


@pytest.mark.parametrize("last,any_,want", [(True, True, C), (False, True, P), (False, False, N), (None, False, N)])
def test_last_drill(last, any_, want):
    assert rules.last_drill(last, any_) == want


@pytest.mark.parametrize("measured,tier,want", [
    ([1800.0], 1800.0, C), ([1800.1], 1800.0, N), ([2400.0, 600.0], 1800.0, P), ([600.0, 2400.0], 1800.0, N),
    ([], 1800.0, N), ([600.0, 1800.0], 1800.0, C),
])
def test_rto_within_tier(measured, tier, want):
    assert rules.rto(measured, tier) == want


@pytest.mark.parametrize("ok,n,want", [(3, 3, C), (2, 3, P), (0, 3, N), (0, 0, N), (4, 3, C)])
def test_all_of(ok, n, want):
    assert rules.all_of(ok, n) == want


@pytest.mark.parametrize("verdicts,want", [
    ([C, C], C), ([C, P], P), ([P, N], N), ([C, D], D), ([D, P], P), ([NA, C], C), ([NA, NA], NA), ([], NA),
    ([N, D, C, NA], N),
])
def test_worst_combines(verdicts, want):
    assert rules.worst(verdicts) == want


def test_declared_failures_stated():
    assert rules.declared("Oracle Data Guard") == C and rules.declared("  ") == P and rules.declared("", N) == N
    assert rules.failures(0) == C and rules.failures(1) == P
    assert rules.stated("磁盘阵列") == C and rules.stated("") == P
    assert rules.percent(999, 1000) == 99 and rules.percent(0, 0) == 0


# ---- facts -------------------------------------------------------------------------------------------------------

def cst(y, mo, d, h=0, mi=0):
    return datetime(y, mo, d, h, mi, tzinfo=CST)


def rec(seq, kind, when, subject="s", policy="his", **body):
    return Record(seq, when.astimezone(timezone.utc).isoformat(), kind, policy, subject, body, "", "", "", "")


def test_period_days_are_local_days_both_ends_included():
    start, end = cst(2026, 1, 1), cst(2026, 2, 1)
    days = period_days(start, end, CST)
    assert days[0] == date(2026, 1, 1) and days[-1] == date(2026, 1, 31) and len(days) == 31
    assert period_days(end, end, CST) == []


def test_a_0200_cst_backup_counts_on_its_local_day_not_the_utc_one():
    start, end = cst(2026, 1, 1), cst(2026, 1, 3)
    r = rec(1, "backup", cst(2026, 1, 2, 2, 0))  # 2026-01-01T18:00Z
    f = facts([r], "his", [], start=start, end=end, as_of=end, tz=CST)
    assert list(f.backup_days) == [date(2026, 1, 2)] and f.missed == [date(2026, 1, 1)]


@pytest.mark.parametrize("as_of,has_backup,want", [
    (cst(2026, 1, 2, 0, 0), False, [date(2026, 1, 1)]),                 # day 1 just ended: due
    (cst(2026, 1, 1, 23, 59), False, []),                              # day 1 still running: not due yet
    (cst(2026, 1, 1, 23, 59), True, [date(2026, 1, 1)]),               # ... unless it already has a backup
])
def test_due_days_boundary(as_of, has_backup, want):
    days = [date(2026, 1, 1)]
    assert due_days(days, set(days) if has_backup else set(), as_of, CST) == want


def test_gaps_include_both_ends():
    s, e = cst(2026, 1, 1), cst(2026, 3, 1)
    g = gaps(s, [cst(2026, 1, 20), cst(2026, 2, 10)], e)
    assert [x[2] / DAY for x in g] == [19, 21, 19]
    assert [x[2] for x in gaps(s, [], s)] == [0.0]


def test_copy_lag_is_first_ok_copy_after_the_backup():
    b = rec(1, "backup", cst(2026, 1, 1, 2), subject="B")
    bad = rec(2, "copy", cst(2026, 1, 1, 2, 5), subject="B", target="nas", status="failed")
    late = rec(3, "copy", cst(2026, 1, 2, 8), subject="B", target="nas", status="ok")
    f = facts([b, bad, late], "his", ["nas", "sftp"], start=cst(2026, 1, 1), end=cst(2026, 1, 3),
              as_of=cst(2026, 1, 3), tz=CST)
    (nas, sftp) = f.copies
    assert (nas.copy_seq, nas.lag) == (3, 30 * 3600) and (sftp.copy_seq, sftp.lag) == (None, None)
    assert [r.seq for r in f.failed_copies] == [2]


POLICY = SimpleNamespace(system="his", targets=["nas"], rpo=timedelta(hours=24), tier=timedelta(minutes=30),
                         drill=SimpleNamespace(every=timedelta(days=30)), engine="sqlite", file=None,
                         backup=SimpleNamespace(at="02:00"),
                         retention=SimpleNamespace(daily=7, weekly=5, monthly=12, yearly=3))
SETTINGS = SimpleNamespace(system=lambda s: SimpleNamespace(realtime_replication="", media=""))


@pytest.mark.parametrize("lag_h,want", [(24, C), (24.01, N), (1, C)])
def test_offsite_lag_threshold_is_the_rpo(lag_h, want):
    b = rec(1, "backup", cst(2026, 1, 1, 2), subject="B")
    c = rec(2, "copy", cst(2026, 1, 1, 2) + timedelta(hours=lag_h), subject="B", target="nas", status="ok")
    f = facts([b, c], "his", ["nas"], start=cst(2026, 1, 1), end=cst(2026, 1, 3), as_of=cst(2026, 1, 3), tz=CST)
    assert RULES["offsite_lag"](f, POLICY, SETTINGS, {"max_lag": "rpo"}).verdict == want


@pytest.mark.parametrize("second_drill_day,want", [(31, C), (32, P)])
def test_drill_age_vs_every_at_the_boundary(second_drill_day, want):
    # passing drills on Jan 1 00:00 and after exactly 30 or 31 days; the period ends 30 days after the last one
    first = cst(2026, 1, 1)
    second = first + timedelta(days=second_drill_day - 1)
    rs = [rec(1, "drill", first, verdict="passed"), rec(2, "drill", second, verdict="passed")]
    end = second + timedelta(days=30)
    f = facts(rs, "his", [], start=first, end=end, as_of=end, tz=CST)
    assert RULES["drill_recency"](f, POLICY, SETTINGS, {}).verdict == want


def test_realtime_offsite_needs_a_declaration():
    f = facts([], "his", ["nas"], start=cst(2026, 1, 1), end=cst(2026, 1, 2), as_of=cst(2026, 1, 2), tz=CST)
    assert RULES["realtime_replication"](f, POLICY, SETTINGS, {}).verdict == P
    declared = SimpleNamespace(system=lambda s: SimpleNamespace(realtime_replication="Data Guard", media=""))
    fd = RULES["realtime_replication"](f, POLICY, declared, {})
    assert fd.verdict == C and "Data Guard" in fd.as_dict()["text"]["zh"]


def test_mappings_name_known_rules_and_mlps_items_use_the_standard_text():
    m = load_mappings()["mlps2-l3"]
    items = {c["id"]: c for c in m["controls"]}
    assert items["8.1.4.9 a"]["text"]["zh"] == "应提供重要数据的本地数据备份与恢复功能；"
    assert items["8.1.4.9 b"]["text"]["zh"].startswith("应提供异地实时备份功能")
    assert items["8.1.4.9 c"]["text"]["zh"] == "应提供重要数据处理系统的热冗余，保证系统的高可用性。"
    assert items["8.1.10.13 b"]["text"]["zh"].startswith("应制定重要事件的应急预案")
    assert [list(r)[0] for r in items["8.1.4.9 c"]["rules"]] == ["not_applicable"]
    assert [list(r)[0] for r in items["8.1.10.11 c"]["rules"]] == ["documents"]


@pytest.mark.parametrize("secs,zh,en", [(1800, "30分钟", "30 min"), (86400, "1天", "1 d"), (24 * 3600 - 1, "23小时59分钟", "23 h 59 min"),
                                        (36 * 86400 + 8 * 3600, "36天8小时", "36 d 8 h"), (2.44, "2.4秒", "2.4 s"),
                                        (0.023, "0.02秒", "0.02 s"), (None, "—", "—")])
def test_durations_in_both_languages(secs, zh, en):
    assert duration(secs, "zh") == zh and duration(secs, "en") == en
