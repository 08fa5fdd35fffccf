"""The evidence report's reading of a drill's teardown proof, for every engine's proof shape."""

from __future__ import annotations

import pytest

from backupkit.evidence.report import teardown_summary

PG = {"datadir": "/var/tmp/bk/pg-scratch-1/data", "datadir_exists": False, "port": 5433, "port_open": False,
      "postmaster_pid": 42, "postmaster_running": False}


@pytest.mark.parametrize("proof, ok, shown", [
    (PG, True, "/var/tmp/bk/pg-scratch-1/data"),
    ({**PG, "postmaster_running": True}, False, "postmaster_running"),
    ({**PG, "datadir_exists": True, "port_open": True}, False, "datadir_exists, port_open"),
    ({"database": "bk_drill_1", "database_exists": False}, True, "bk_drill_1"),
    ({"path": "/tmp/x/scratch.sqlite", "exists_after_teardown": False}, True, "/tmp/x/scratch.sqlite"),  # older SQLite
    ({"path": "/tmp/x/scratch.sqlite", "exists_after_teardown": True}, False, "/tmp/x/scratch.sqlite"),
    ({"path": "/tmp/x/s.sqlite", "exists_after_teardown": False, "path_exists": False, "wal_exists": True}, False,
     "wal_exists"),
    ({**PG, "port_open": None}, False, "port_open=unknown"),  # not checked is not gone
    ({"database": "bk_drill_1", "database_exists": False, "errors": ["DROP failed"]}, False, "bk_drill_1"),
    ({"stage_dir": "/u01/bk/backupkit-drill-1", "aux_instance": "AUX1", "stage_exists": False, "aux_open": False,
      "pieces_cataloged_exists": False}, True, "/u01/bk/backupkit-drill-1"),  # Oracle mode rman
    ({"user": "BKD_1A2B", "user_exists": False, "job_exists": False, "file_exists": False}, True, "BKD_1A2B"),
])
def test_every_recorded_fact_must_be_false(proof, ok, shown):
    for lang in ("zh", "en"):
        text, passed = teardown_summary(proof, lang)
        assert passed is ok and shown in str(text)


def test_no_proof_is_not_shown_as_torn_down():
    assert teardown_summary({}, "en") == (None, None)
    assert teardown_summary({"note": "nothing"}, "zh") == (None, None)
