"""due: slots, backup and drill due-ness and clock-skew trust, pinned to the second."""

from datetime import datetime, timedelta, timezone

import pytest

from backupkit.due import CLOCK_SKEW_TOLERANCE, backup_due, drill_due, in_future, last_slot, trusted

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
TOL = timedelta(minutes=5)


def test_tolerance_is_exactly_300_seconds():
    assert CLOCK_SKEW_TOLERANCE.total_seconds() == 300


@pytest.mark.parametrize("when,tol,future", [
    (NOW + TOL, TOL, False), (NOW + TOL + S, TOL, True), (NOW + TOL - S, TOL, False),
    (NOW, timedelta(0), False), (NOW + S, timedelta(0), True), (NOW - S, timedelta(0), False),
    (NOW + timedelta(minutes=6), None, True), (NOW + timedelta(minutes=5), None, False),
    (NOW - timedelta(minutes=6), None, False),
])
def test_in_future_and_trusted(when, tol, future):
    args = (when, NOW) if tol is None else (when, NOW, tol)
    assert in_future(*args) is future
    assert trusted(*args) == (None if future else when)


def test_trusted_passes_none_through():
    assert trusted(None, NOW) is None
    assert trusted(None, NOW, timedelta(0)) is None


@pytest.mark.parametrize("at,now,slot", [
    ("02:00", datetime(2026, 11, 26, 2, 0, tzinfo=UTC), datetime(2026, 11, 26, 2, 0, tzinfo=UTC)),
    ("02:00", datetime(2026, 11, 26, 1, 59, tzinfo=UTC), datetime(2026, 11, 25, 2, 0, tzinfo=UTC)),
    ("02:00", datetime(2026, 11, 26, 2, 1, tzinfo=UTC), datetime(2026, 11, 26, 2, 0, tzinfo=UTC)),
    ("00:00", datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
    ("23:59", datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 2, 28, 23, 59, tzinfo=UTC)),
    ("7:05", datetime(2026, 11, 26, 12, 0), datetime(2026, 11, 26, 7, 5)),
])
def test_last_slot_exact(at, now, slot):
    assert last_slot(at, now) == slot
    assert last_slot(at, now).tzinfo == now.tzinfo


TODAY = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize("last,tol,due", [
    (None, TOL, TODAY),
    (TODAY - S, TOL, TODAY),
    (TODAY, TOL, None),
    (TODAY + S, TOL, None),
    (NOW + TOL, TOL, None),
    (NOW + TOL + S, TOL, TODAY),
    (NOW, timedelta(0), None),
    (NOW + S, timedelta(0), TODAY),
])
def test_backup_due_exact(last, tol, due):
    assert backup_due("02:00", last, NOW, tol) == due


EVERY = timedelta(days=30)


@pytest.mark.parametrize("last,tol,due", [
    (None, TOL, True),
    (NOW - EVERY, TOL, True),
    (NOW - EVERY + S, TOL, False),
    (NOW - EVERY - S, TOL, True),
    (NOW, TOL, False),
    (NOW + TOL, TOL, False),
    (NOW + TOL + S, TOL, True),
    (NOW + S, timedelta(0), True),
    (NOW, timedelta(0), False),
])
def test_drill_due_exact(last, tol, due):
    assert drill_due(last, EVERY, NOW, tol) is due


def test_drill_due_every_zero_is_always_due():
    assert drill_due(NOW, timedelta(0), NOW) is True
    assert drill_due(NOW - S, timedelta(seconds=2), NOW) is False


def test_only_a_regular_drill_counts_as_the_regular_drill():
    from backupkit.due import counts_as_regular_drill
    assert counts_as_regular_drill({"verdict": "passed"}) and counts_as_regular_drill({})
    assert counts_as_regular_drill({"mode": "regular"}) and counts_as_regular_drill(None)
    assert not counts_as_regular_drill({"mode": "pitr", "verdict": "passed"})
    assert not counts_as_regular_drill({"mode": "pitr"})
