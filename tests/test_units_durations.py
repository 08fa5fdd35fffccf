"""durations: exact values at every boundary of parse_duration and format_duration."""

from datetime import timedelta

import pytest

from backupkit.durations import format_duration, parse_duration


@pytest.mark.parametrize("text,seconds", [
    ("1s", 1), ("45s", 45), ("1m", 60), ("1h", 3600), ("1d", 86400), ("1w", 604800), ("2w", 1209600),
    ("1h30m", 5400), ("1d 1h 1m 1s", 90061), ("  6H ", 21600), ("1 second", 1), ("3 minutes", 180), ("5 mins", 300),
    ("2 hours", 7200), ("7 days", 604800), ("1 week", 604800), (0, 0), (2.5, 2.5),
])
def test_parse_duration_exact(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", [True, False, "1y", "1 fortnight", "-5m", "5", "m", "1.5h"])
def test_parse_duration_rejects_exact_message(text):
    with pytest.raises(ValueError) as e:
        parse_duration(text)
    assert str(e.value) == f"{text!r} is not a duration; write e.g. 30m, 6h, 24h, 30d or 1w"


@pytest.mark.parametrize("value,text", [
    (0, "0.0s"), (0.0, "0.0s"), (0.5, "0.5s"), (0.96, "1.0s"), (2.44, "2.4s"), (59.9, "59.9s"),
    (59.94, "59.9s"), (59.95, "1m"), (59.96, "1m"),  # what rounds to 60.0 is shown as a minute
    (60, "1m"), (60.4, "1m"), (61, "1m1s"), (119, "1m59s"), (120, "2m"), (3599, "59m59s"),
    (3600, "1h"), (3601, "1h1s"), (3660, "1h1m"), (3723, "1h2m"), (86399, "23h59m"), (86400, "1d"),
    (86401, "1d1s"), (90000, "1d1h"), (90060, "1d1h"), (2592000, "30d"),
    (-0.5, "-0.5s"), (-1, "-1.0s"), (-60, "-1m"), (-90, "-1m30s"), (-301, "-5m1s"), (-86400, "-1d"),
])
def test_format_duration_exact(value, text):
    assert format_duration(value) == text
    assert format_duration(timedelta(seconds=value)) == text
