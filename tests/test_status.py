"""status: the pure assessment of a system from its ledger records."""

from datetime import datetime, timedelta, timezone

from backupkit.actions.status import assess, to_prometheus
from backupkit.ledger import Record
from backupkit.policy import Policy

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
POLICY = Policy.model_validate({"system": "his", "tier": "30m", "rpo": "24h", "engine": "sqlite",
                                "source": {"path": "/x"}, "targets": ["nas"], "drill": {"every": "30d"}})


def rec(seq, kind, age, **body):
    return Record(seq, (NOW - age).isoformat(), kind, "his", f"s{seq}", body, "", "", "", "")


def test_all_good():
    st = assess(POLICY, [rec(1, "backup", timedelta(hours=3)),
                         rec(2, "copy", timedelta(hours=3), status="ok", target="nas"),
                         rec(3, "drill", timedelta(days=3), verdict="passed",
                             rto={"measured_seconds": 60, "met": True})], NOW)
    assert not st.overdue, st.problems


def test_each_problem_is_named():
    st = assess(POLICY, [rec(1, "backup", timedelta(hours=30)),
                         rec(2, "copy", timedelta(hours=30), status="failed", target="nas"),
                         rec(3, "drill", timedelta(days=40), verdict="passed", rto={"measured_seconds": 60}),
                         rec(4, "drill", timedelta(days=1), verdict="failed", rto={"measured_seconds": 4000})], NOW)
    text = " | ".join(st.problems)
    assert "last backup is 1d6h old" in text
    assert "no verified offsite copy on nas" in text
    assert "older than drill.every" in text and "last drill failed" in text and "exceeded the tier" in text
    assert 'backupkit_overdue{system="his"} 1' in to_prometheus([st])
