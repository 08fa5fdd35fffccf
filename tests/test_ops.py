"""Operations a tired on-call engineer can trust (issue 11): each observed case, with its exit code and message."""

import json


def test_status_without_a_target_is_no_offsite_copy(workspace):
    workspace.edit_policy(lambda p: p.update(targets=[]))
    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis")
    r = workspace.run("status", "--json")
    assert r.code == 4, r
    (row,) = json.loads(r.out)
    assert row["offsite_ok"] is False and any("no offsite copy" in p for p in row["problems"])


def test_drill_before_any_backup_records_nothing_and_exits_2(workspace):
    r = workspace.run("drill", "demo-lis")
    assert r.code == 2 and "no backup of demo-lis yet" in r.err and "backupkit backup demo-lis" in r.err, r
    assert workspace.ledger_rows("drill") == []
