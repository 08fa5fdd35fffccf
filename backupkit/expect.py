"""Policy assertion expectations: parse ``expect`` strings and judge a value.

Grammar (docs/policy.md):
  ``> N`` ``>= N`` ``< N`` ``<= N`` ``= N`` ``!= N``   N a number or a quoted string
  ``between A and B``                                   inclusive, numbers
  ``OP backup_time [± DURATION]``                       e.g. ``>= backup_time - 1 day``
Pure functions: no I/O.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from .durations import parse_duration

_OPS = {">=": operator.ge, "<=": operator.le, "!=": operator.ne, ">": operator.gt, "<": operator.lt, "=": operator.eq,
        "==": operator.eq}
_CMP = re.compile(r"^\s*(>=|<=|!=|==|>|<|=)\s*(.+?)\s*$")
_BETWEEN = re.compile(r"^\s*between\s+(\S+)\s+and\s+(\S+)\s*$", re.I)
_BT = re.compile(r"^backup_time\s*(?:([+-])\s*(.+))?$", re.I)


@dataclass(frozen=True)
class Expect:
    op: str  # one of _OPS keys, or "between"
    kind: str  # "number" | "string" | "backup_time"
    low: Any = None
    high: Any = None
    offset: timedelta = timedelta(0)


def _number(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None


def parse_expect(text: str) -> Expect:
    """Given an expect string, return its parsed form or raise ValueError saying what is accepted."""
    m = _BETWEEN.match(text)
    if m:
        lo, hi = _number(m.group(1)), _number(m.group(2))
        if lo > hi:
            raise ValueError(f"in {text!r} the lower bound is above the upper bound")
        return Expect("between", "number", lo, hi)
    m = _CMP.match(text)
    if not m:
        raise ValueError(
            f"expect {text!r} is not understood; write '> N', '>= N', '= N', 'between A and B' or '>= backup_time - 1 day'"
        )
    op, rhs = m.group(1), m.group(2)
    bt = _BT.match(rhs)
    if bt:
        off = parse_duration(bt.group(2)) if bt.group(2) else timedelta(0)
        return Expect(op, "backup_time", offset=-off if bt.group(1) == "-" else off)
    if len(rhs) >= 2 and rhs[0] == rhs[-1] and rhs[0] in "'\"":
        return Expect(op, "string", rhs[1:-1])
    return Expect(op, "number", _number(rhs))


def _as_datetime(v: Any) -> datetime:
    if isinstance(v, datetime):
        d = v
    elif hasattr(v, "year") and hasattr(v, "month"):  # a date
        d = datetime(v.year, v.month, v.day)
    else:
        d = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def judge(text: str, value: Any, *, backup_time: datetime) -> tuple[bool, str]:
    """Given an expect string, the query's value and the backup's consistency time,
    return (passed, one-line explanation)."""
    e = parse_expect(text)
    if value is None:
        return False, f"query returned NULL, expected {text}"
    try:
        if e.kind == "backup_time":
            got = _as_datetime(value)
            ref = backup_time + e.offset
            ok = _OPS[e.op](got, ref)
            return ok, f"{got.isoformat()} {e.op} {ref.isoformat()}"
        if e.kind == "string":
            ok = _OPS[e.op](str(value), e.low)
            return ok, f"{value!r} {e.op} {e.low!r}"
        got = _number(str(value))
        if e.op == "between":
            ok = e.low <= got <= e.high
            return ok, f"{got} between {e.low} and {e.high}"
        return _OPS[e.op](got, e.low), f"{got} {e.op} {e.low}"
    except ValueError as err:
        return False, f"value {value!r} cannot be compared with {text!r}: {err}"
