"""expect: the parsed form of every grammar and exact verdicts at each boundary."""

import dataclasses
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from backupkit.expect import Expect, judge, parse_expect

BT = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text,op,kind,low,high,offset", [
    ("> 5", ">", "number", Decimal(5), None, timedelta(0)),
    (">=5", ">=", "number", Decimal(5), None, timedelta(0)),
    ("== 1.5", "==", "number", Decimal("1.5"), None, timedelta(0)),
    ("!= -2", "!=", "number", Decimal(-2), None, timedelta(0)),
    ("between 5 and 5", "between", "number", Decimal(5), Decimal(5), timedelta(0)),
    ("BETWEEN 1 and 10", "between", "number", Decimal(1), Decimal(10), timedelta(0)),
    ("= 'ok'", "=", "string", "ok", None, timedelta(0)),
    ('= "ok"', "=", "string", "ok", None, timedelta(0)),
    ("= ''", "=", "string", "", None, timedelta(0)),
    ("= 'x'", "=", "string", "x", None, timedelta(0)),
    (">= backup_time", ">=", "backup_time", None, None, timedelta(0)),
    (">= backup_time - 1 day", ">=", "backup_time", None, None, -timedelta(days=1)),
    ("<= backup_time + 6h", "<=", "backup_time", None, None, timedelta(hours=6)),
])
def test_parse_expect_exact(text, op, kind, low, high, offset):
    e = parse_expect(text)
    assert (e.op, e.kind, e.low, e.high, e.offset) == (op, kind, low, high, offset)


def test_defaults_and_frozen():
    e = Expect("=", "number")
    assert e.low is None and e.high is None and e.offset == timedelta(0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.op = ">"  # type: ignore[misc]
    assert hash(parse_expect("> 5")) == hash(parse_expect("> 5"))


@pytest.mark.parametrize("text,message", [
    ("between 6 and 5", "in 'between 6 and 5' the lower bound is above the upper bound"),
    ("= '", "\"'\" is not a number"),
    ("= x", "'x' is not a number"),
    ("about 5", "expect 'about 5' is not understood; write '> N', '>= N', '= N', 'between A and B' or "
                "'>= backup_time - 1 day'"),
])
def test_parse_expect_rejects_exact(text, message):
    with pytest.raises(ValueError) as e:
        parse_expect(text)
    assert str(e.value) == message


@pytest.mark.parametrize("expect,value,ok,why", [
    ("between 1 and 10", 1, True, "1 between 1 and 10"),
    ("between 1 and 10", 0, False, "0 between 1 and 10"),
    ("between 1 and 10", 10, True, "10 between 1 and 10"),
    ("between 1 and 10", 11, False, "11 between 1 and 10"),
    ("> 0", 1, True, "1 > 0"),
    ("> 0", 0, False, "0 > 0"),
    (">= 0", 0, True, "0 >= 0"),
    (">= 0", -1, False, "-1 >= 0"),
    ("< 5", 5, False, "5 < 5"),
    ("<= 5", 5, True, "5 <= 5"),
    ("= 5", "5.0", True, "5.0 = 5"),
    ("!= 5", 5, False, "5 != 5"),
    ("!= 5", 6, True, "6 != 5"),
    ("= ''", "", True, "'' = ''"),
    ("!= 'ok'", "ok", False, "'ok' != 'ok'"),
    ("> 0", None, False, "query returned NULL, expected > 0"),
    ("> 0", "n/a", False, "value 'n/a' cannot be compared with '> 0': 'n/a' is not a number"),
])
def test_judge_exact(expect, value, ok, why):
    assert judge(expect, value, backup_time=BT) == (ok, why)


class _YearOnly:
    """Has a ``year`` but is no date: judged by its ISO text."""
    year = 1999

    def __str__(self):
        return "2026-11-26T02:00:00Z"


@pytest.mark.parametrize("expect,value,ok,why", [
    (">= backup_time", BT, True, "2026-11-26T02:00:00+00:00 >= 2026-11-26T02:00:00+00:00"),
    ("> backup_time", BT, False, "2026-11-26T02:00:00+00:00 > 2026-11-26T02:00:00+00:00"),
    (">= backup_time - 1 day", date(2026, 11, 25), False, "2026-11-25T00:00:00+00:00 >= 2026-11-25T02:00:00+00:00"),
    (">= backup_time - 2 days", date(2026, 11, 25), True, "2026-11-25T00:00:00+00:00 >= 2026-11-24T02:00:00+00:00"),
    ("<= backup_time + 1h", "2026-11-26 03:00:00", True, "2026-11-26T03:00:00+00:00 <= 2026-11-26T03:00:00+00:00"),
    ("<= backup_time + 1h", "2026-11-26T03:00:00+01:00", True,
     "2026-11-26T03:00:00+01:00 <= 2026-11-26T03:00:00+00:00"),
    ("= backup_time", _YearOnly(), True, "2026-11-26T02:00:00+00:00 = 2026-11-26T02:00:00+00:00"),
    (">= backup_time", "yesterday", False,
     "value 'yesterday' cannot be compared with '>= backup_time': Invalid isoformat string: 'yesterday'"),
])
def test_judge_backup_time_exact(expect, value, ok, why):
    assert judge(expect, value, backup_time=BT) == (ok, why)
