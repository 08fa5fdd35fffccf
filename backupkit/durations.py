"""Durations as operators write them in policies: ``30m``, ``6h``, ``24h``, ``30d``, ``1w``, ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^\s*(\d+\s*[smhdw]\s*)+$")
_WORDS = {
    "second": "s", "seconds": "s", "minute": "m", "minutes": "m", "min": "m", "mins": "m",
    "hour": "h", "hours": "h", "day": "d", "days": "d", "week": "w", "weeks": "w",
}


def parse_duration(text: str | int | float) -> timedelta:
    """Given ``"6h"``, ``"1 day"``, ``"1d12h"`` or a number of seconds, return a timedelta.

    Raises ValueError with a message suitable for a policy-field error.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return timedelta(seconds=text)
    s = str(text).strip().lower()
    m = re.fullmatch(r"(\d+)\s*([a-z]+)", s)
    if m and m.group(2) in _WORDS:
        s = m.group(1) + _WORDS[m.group(2)]
    if not _WHOLE.match(s):
        raise ValueError(f"{text!r} is not a duration; write e.g. 30m, 6h, 24h, 30d or 1w")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(s)))


def format_duration(td: timedelta | float) -> str:
    """Render seconds or a timedelta compactly: ``2.4s``, ``3m12s``, ``6h``, ``30d``."""
    secs = td.total_seconds() if isinstance(td, timedelta) else float(td)
    neg = secs < 0
    secs = abs(secs)
    if round(secs, 1) < 60:  # 59.96 rounds to 60.0: shown as 1m, never as "60.0s"
        out = f"{secs:.1f}s"
    else:
        secs = int(round(secs))
        parts = []
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if secs >= size:
                parts.append(f"{secs // size}{unit}")
                secs %= size
        out = "".join(parts[:2])
    return "-" + out if neg else out
