"""evidence.rules: every control verdict rule at its boundaries, table-driven (pure functions, no I/O)."""

import pytest

from backupkit.evidence import rules
from backupkit.evidence.rules import CONFORMANT as C, DOCUMENTS as D, NA, NON as N, PARTIAL as P

DAY = 86400.0


def test_verdict_names():
    assert rules.VERDICTS == ("conformant", "partial", "non_conformant", "not_applicable", "documents")


@pytest.mark.parametrize("verdicts,want", [
    ([], NA), ([NA], NA), ([NA, NA], NA), ([C], C), ([P], P), ([N], N), ([D], D),
    # every adjacent pair of ranks, in both orders (a tie would keep the first)
    ([N, P], N), ([P, N], N), ([P, D], P), ([D, P], P), ([D, C], D), ([C, D], D),
    ([C, N], N), ([NA, C], C), ([C, NA], C), ([NA, D, NA], D), ([C, C, P, C], P), ([N, D, C, NA], N),
    (iter([C, P]), P),
])
def test_worst(verdicts, want):
    assert rules.worst(verdicts) == want


@pytest.mark.parametrize("n,m,full,partial,want", [
    (0, 0, 100, 90, NA), (5, 0, 100, 90, NA), (0, -1, 100, 90, NA),
    (1, 1, 100, 90, C), (0, 1, 100, 90, N), (2, 1, 100, 90, C),
    (10, 10, 100, 90, C), (9, 10, 100, 90, P), (8, 10, 100, 90, N),
    (99, 100, 100, 90, P), (90, 100, 100, 90, P), (89, 100, 100, 90, N),
    (95, 100, 95, 90, C), (94, 100, 95, 90, P), (90, 100, 95, 90, P), (89, 100, 95, 90, N),
    (3, 4, 75, 50, C), (2, 4, 75, 50, P), (1, 4, 75, 50, N),
    (1, 3, 34, 33, P), (1, 3, 34, 34, N), (1, 3, 33, 0, C), (0, 3, 33, 0, P),
    (82, 91, 100, 90, P), (81, 91, 100, 90, N), (100, 101, 100, 90, P), (100, 101, 100, 100, N),
])
def test_ratio(n, m, full, partial, want):
    assert rules.ratio(n, m, full, partial) == want


@pytest.mark.parametrize("n,m,want", [
    (0, 0, 0), (5, 0, 0), (0, 10, 0), (1, 3, 33), (2, 3, 66), (999, 1000, 99), (1000, 1000, 100), (3, 2, 150),
    (1, 100, 1), (7, 7, 100),
])
def test_percent(n, m, want):
    assert rules.percent(n, m) == want


@pytest.mark.parametrize("gaps,every,passing,want", [
    ([], 30 * DAY, 1, C), ([], 30 * DAY, 0, N), ([1.0], 30 * DAY, -1, N),
    ([30 * DAY], 30 * DAY, 1, C), ([30 * DAY + 1], 30 * DAY, 1, P), ([30 * DAY - 1], 30 * DAY, 1, C),
    ([1.0, 30 * DAY + 0.5], 30 * DAY, 2, P), ([30 * DAY + 0.5, 1.0], 30 * DAY, 2, P), ([0.0, 30 * DAY], 30 * DAY, 5, C),
])
def test_drill_gaps(gaps, every, passing, want):
    assert rules.drill_gaps(gaps, every, passing) == want


@pytest.mark.parametrize("last,any_,want", [
    (True, True, C), (True, False, C), (False, True, P), (False, False, N), (None, False, N), (None, True, N),
    (1, True, N), (0, True, N),
])
def test_last_drill(last, any_, want):
    assert rules.last_drill(last, any_) == want


@pytest.mark.parametrize("measured,tier,want", [
    ([], 1800.0, N), ([1800.0], 1800.0, C), ([1799.9], 1800.0, C), ([1800.1], 1800.0, N),
    ([1800.1, 1800.0], 1800.0, P), ([1800.0, 1800.0], 1800.0, C), ([1800.0, 1800.1], 1800.0, N),
    ([600.0, 2400.0, 600.0], 1800.0, P), ([600.0, 900.0, 1200.0], 1800.0, C),
])
def test_rto(measured, tier, want):
    assert rules.rto(measured, tier) == want


@pytest.mark.parametrize("ok,n,want", [
    (0, 0, N), (1, 0, N), (0, 1, N), (-1, 3, N), (1, 1, C), (2, 3, P), (1, 3, P), (3, 3, C), (4, 3, C), (1, 2, P),
])
def test_all_of(ok, n, want):
    assert rules.all_of(ok, n) == want


@pytest.mark.parametrize("text,otherwise,want", [
    ("Data Guard", P, C), ("", P, P), ("  \n", P, P), ("", N, N), ("x", N, C),
])
def test_declared(text, otherwise, want):
    assert rules.declared(text, otherwise) == want


def test_declared_default_is_partial():
    assert rules.declared("") == P and rules.declared("a") == C


@pytest.mark.parametrize("n,want", [(0, C), (-1, C), (1, P), (5, P)])
def test_failures(n, want):
    assert rules.failures(n) == want


@pytest.mark.parametrize("text,want", [("磁盘阵列", C), ("", P), (" \t", P)])
def test_stated(text, want):
    assert rules.stated(text) == want
