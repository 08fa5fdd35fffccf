"""kit.proof_clean (what the engine contract asserts) and the evidence report's teardown line judge a
teardown proof alike: only facts that were checked and found false are proof that nothing is left."""

from __future__ import annotations

import pytest

from backupkit.engines import kit
from backupkit.evidence.report import teardown_summary


@pytest.mark.parametrize("proof,clean", [
    ({"datadir_exists": False, "server_pid_running": False, "socket_exists": False}, True),
    ({"database_exists": False, "server": "127.0.0.1:3307"}, True),
    ({"datadir_exists": True, "server_pid_running": False}, False),
    ({"datadir_exists": False, "server_pid_running": True}, False),
    ({"database_exists": None, "error": "connection refused"}, False),  # not checked: not proof of absence
    ({"aux_open": None, "stage_exists": False}, False),
    ({"port_open": False, "pieces_cataloged_exists": False}, True),
])
def test_proof_clean_and_the_report_agree(proof, clean):
    assert kit.proof_clean(proof) is clean
    _text, ok = teardown_summary(proof, "en")
    assert ok is clean
