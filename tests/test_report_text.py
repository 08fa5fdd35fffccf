"""The drill's text output says what the record says: a recovery point not judged is not "MISSED"."""

from __future__ import annotations

from backupkit.report_text import print_drill


def _record(**rpo):
    return {"drill_id": "D1", "system": "his", "backup_id": "B1", "copy": {"location": "local"}, "verdict": "passed",
            "timeline": [{"step": "restore", "seconds": 1.0, "status": "ok"}], "checks": [],
            "rto": {"measured_seconds": 61.0, "tier": "30m", "met": True},
            "rpo": {"target_seconds": 86400, "recovery_point": "2026-11-20T02:00:00+00:00", "age_seconds": 700000.0,
                    **rpo}}


def test_recovery_point_of_a_backup_chosen_by_id_is_not_judged(capsys):
    print_drill(_record(met=None, judged=False))
    out = capsys.readouterr().out
    assert "MISSED" not in out and "not judged: this backup was chosen by ID" in out
    print_drill(_record(met=False, judged=True))
    assert "(MISSED)" in capsys.readouterr().out
    print_drill(_record(met=True, judged=True))
    out = capsys.readouterr().out
    assert "(met)" in out and "RTO 1m1s vs tier 30m (met)" in out
