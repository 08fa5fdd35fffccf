"""prune removes what retention drops, locally and offsite, each planned on its own listing."""

import json
import shutil


def test_prune_local_and_offsite(workspace):
    workspace.edit_policy(lambda p: p.update(retention={"daily": 1, "weekly": 0, "monthly": 0, "yearly": 0}))
    for _ in range(3):
        workspace.ok("backup", "demo-lis")
    ids = [p.name for p in workspace.backups()]
    # all three were taken today: daily=1 keeps only the newest
    r = workspace.ok("prune", "--dry-run")
    assert "would remove 2" in r.out and len(workspace.backups()) == 3
    # the local copy of the newest is lost; offsite retention must not follow the local listing
    shutil.rmtree(workspace.backups()[-1])
    workspace.ok("prune")
    assert [p.name for p in workspace.backups()] == [ids[1]]  # local: newest remaining kept
    offsite = sorted(p.name for p in (workspace.offsite / "demo-lis").iterdir())
    assert offsite == [ids[2]]  # offsite: its own newest kept, not deleted because local lost it
    rows = [json.loads(r[3]) for r in workspace.ledger_rows("prune")]
    assert {r["location"] for r in rows} == {"local", "offsite"}
    assert "0 failed" in workspace.ok("verify", "--target", "offsite").out


def test_prune_offsite_ignores_an_unfinished_newer_copy(workspace):
    workspace.edit_policy(lambda p: p.update(retention={"daily": 1, "weekly": 0, "monthly": 0, "yearly": 0}))
    workspace.ok("backup", "demo-lis")
    (good,) = [p.name for p in workspace.backups()]
    # a newer copy that never finished: its stream arrived, the manifest (uploaded last) did not
    unfinished = workspace.offsite / "demo-lis" / "29991231T000000.000Z-ffffff"
    unfinished.mkdir(parents=True)
    (unfinished / "data.zst.age").write_bytes(b"x" * 100)
    r = workspace.ok("verify", "--target", "offsite")
    assert "0 failed" in r.out and "29991231T000000.000Z-ffffff has files but no manifest" in r.err
    r = workspace.ok("prune")
    assert (workspace.offsite / "demo-lis" / good / "manifest.json").exists()  # the last good copy survives
    # no local backup to resume it from: the unfinished copy's files are removed, and the record says so
    assert not unfinished.exists() and "29991231T000000.000Z-ffffff  files of an unfinished copy" in r.out
    orphans = [json.loads(b).get("orphans_removed") for *_, b in workspace.ledger_rows("prune")]
    assert ["29991231T000000.000Z-ffffff"] in orphans
    assert "0 failed" in workspace.ok("verify", "--target", "offsite").out
