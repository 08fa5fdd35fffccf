"""Proof that cannot be fooled (issue 7): an attacker who can write the repository or the
offsite directory, but holds no key, and a machine killed at the worst moment.

Every scenario is reproduced with real files and real processes: directories
are swapped with shutil, ledger rows are deleted with the sqlite3 CLI, and
runs are SIGKILLed at named points (``BACKUPKIT_FAILPOINT``, backupkit/failpoint.py).
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

SYS = "demo-lis"


def _ids(ws, system=SYS):
    return [p.name for p in ws.backups(system)]


def _add_system(ws, system="demo-emr"):
    data = yaml.safe_load(ws.policy_file().read_text())
    data["system"] = system
    (ws.policies / f"{system}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def _replace_dir(src, dst):
    shutil.rmtree(dst)
    shutil.copytree(src, dst)


def _killed_at(ws, point, *args):
    p = subprocess.run([sys.executable, "-m", "backupkit.cli", *args], env=ws.env(BACKUPKIT_FAILPOINT=point),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, (p.returncode, p.stderr)


def _rollback_ledger(ws, keep_through: int):
    """What an attacker with write access does: drop the triggers, cut the newest records, recreate the triggers."""
    schema = subprocess.run(["sqlite3", str(ws.ledger), ".schema records"], capture_output=True, text=True,
                            check=True).stdout
    triggers = schema[schema.index("CREATE TRIGGER"):]
    subprocess.run(["sqlite3", str(ws.ledger),
                    "DROP TRIGGER records_no_update; DROP TRIGGER records_no_delete; "
                    f"DELETE FROM records WHERE seq > {keep_through}; " + triggers], check=True)


# --- 1. binding ---------------------------------------------------------------------------------------------------

def test_another_systems_backup_swapped_into_the_newest_directory_fails(workspace):
    _add_system(workspace)
    workspace.ok("backup", SYS, "--no-copy")
    workspace.ok("backup", "demo-emr", "--no-copy")
    (mine,) = workspace.backups(SYS)
    (other,) = workspace.backups("demo-emr")
    _replace_dir(other, mine)
    r = workspace.run("verify", "--system", SYS)
    assert r.code == 3, r
    assert f"holds the manifest of backup demo-emr/{other.name}, not of {SYS}/{mine.name}" in r.out
    drills_before = len(workspace.ledger_rows("drill"))
    r = workspace.run("drill", SYS)
    assert r.code == 3, r
    rows = workspace.ledger_rows("drill")
    assert len(rows) == drills_before + 1 and json.loads(rows[-1][3])["verdict"] == "failed"


def test_an_old_backup_replayed_under_a_new_id_fails(workspace):
    workspace.ok("backup", SYS, "--no-copy")
    workspace.ok("backup", SYS, "--no-copy")
    old, new = workspace.backups()
    _replace_dir(old, new)
    r = workspace.run("verify")
    assert r.code == 3 and f"holds the manifest of backup {SYS}/{old.name}, not of {SYS}/{new.name}" in r.out, r
    r = workspace.run("drill", SYS, "--backup", new.name)
    assert r.code == 3 and "swapped or replayed" in r.out + r.err, r


def test_a_directory_renamed_and_resigned_manifest_cannot_be_forged_without_the_key(workspace):
    """Even with manifest.json edited to claim the new ID, the signature no longer matches."""
    workspace.ok("backup", SYS, "--no-copy")
    workspace.ok("backup", SYS, "--no-copy")
    old, new = workspace.backups()
    _replace_dir(old, new)
    m = (new / "manifest.json").read_text().replace(old.name, new.name)
    (new / "manifest.json").write_text(m)
    r = workspace.run("verify")
    assert r.code == 3 and "signature" in r.out, r


def test_offsite_newest_replaced_by_an_older_copy_fails_verify_and_restore(workspace, tmp_path):
    workspace.ok("backup", SYS)
    workspace.ok("backup", SYS)
    old, new = _ids(workspace)
    site = workspace.offsite / SYS
    _replace_dir(site / old, site / new)
    r = workspace.run("verify", "--target", "offsite")
    assert r.code == 3 and f"{SYS}/{new} on target offsite: holds the manifest of backup {SYS}/{old}" in r.out, r
    dest = tmp_path / "restored.sqlite"
    r = workspace.run("restore", SYS, new, "--from", "offsite", "--to", str(dest))
    assert r.code == 3 and "swapped or replayed" in r.err, r
    assert not dest.exists()
    r = workspace.run("restore", SYS, "--from", "offsite", "--to", str(dest))  # the newest, by ledger sequence
    assert r.code == 3, r


def test_a_backup_planted_on_the_target_without_a_ledger_record_fails(workspace):
    workspace.ok("backup", SYS)
    (bid,) = _ids(workspace)
    planted = "20300101T000000.000Z-abcdef"
    shutil.copytree(workspace.offsite / SYS / bid, workspace.offsite / SYS / planted)
    r = workspace.run("verify", "--target", "offsite")
    assert r.code == 3 and f"{SYS}/{planted} on target offsite: the ledger has no backup record" in r.out, r
    r = workspace.run("drill", SYS, "--from", "offsite")  # the newest *recorded* copy is drilled, not the planted one
    assert r.code == 0, r
    assert json.loads(workspace.ledger_rows("drill")[-1][3])["backup_id"] == bid


def test_dr_site_with_only_the_target_uses_its_ledger_snapshot(workspace):
    workspace.ok("backup", SYS)
    workspace.ok("backup", SYS)
    old, new = _ids(workspace)
    # the DR site: the same keys, an empty ledger of its own, no local repository
    shutil.move(workspace.ledger, workspace.root / "primary-ledger.db")
    shutil.rmtree(workspace.repo)
    r = workspace.run("drill", SYS, "--from", "offsite")
    assert r.code == 0, r
    assert json.loads(workspace.ledger_rows("drill")[-1][3])["backup_id"] == new
    _replace_dir(workspace.offsite / SYS / old, workspace.offsite / SYS / new)
    r = workspace.run("drill", SYS, "--from", "offsite")
    assert r.code == 3 and "swapped or replayed" in r.out + r.err, r


# --- 2. completeness ------------------------------------------------------------------------------------------------

def test_deleted_backups_are_missing_for_verify_and_status(workspace):
    workspace.ok("backup", SYS, "--no-copy")
    workspace.ok("backup", SYS, "--no-copy")
    first, second = workspace.backups()
    shutil.rmtree(first)
    for args in (("verify",), ("verify", "--deep")):
        r = workspace.run(*args)
        assert r.code == 3 and f"missing   {SYS}/{first.name}" in r.out.replace("missing ", "missing   ", 1), r
    r = workspace.run("status")
    assert r.code == 3 and first.name in r.out, r
    shutil.rmtree(workspace.repo / SYS)
    r = workspace.run("verify")
    assert r.code == 3 and "2 failed" in r.out and second.name in r.out, r


def test_deleted_offsite_copy_is_missing_for_verify_target(workspace):
    workspace.ok("backup", SYS)
    (bid,) = _ids(workspace)
    shutil.rmtree(workspace.offsite / SYS / bid)
    r = workspace.run("verify", "--target", "offsite")
    assert r.code == 3 and f"{SYS}/{bid} is missing on target offsite" in r.out, r


def test_killed_between_commit_and_record_is_never_silently_drillable(workspace):
    workspace.ok("backup", SYS, "--no-copy")
    _killed_at(workspace, "backup-after-commit", "backup", SYS, "--no-copy")
    first, orphan = _ids(workspace)
    assert [r[2] for r in workspace.ledger_rows("backup")] == [first]
    r = workspace.run("drill", SYS, "--backup", orphan)
    assert r.code == 3 and "the ledger has no backup record" in r.out + r.err, r
    r = workspace.run("drill", SYS)  # the latest *recorded* backup
    assert r.code == 0 and json.loads(workspace.ledger_rows("drill")[-1][3])["backup_id"] == first, r
    workspace.ok("backup", SYS, "--no-copy")  # the next run of the system reconciles it
    recs = {row[2]: json.loads(row[3]) for row in workspace.ledger_rows("backup")}
    assert "recovered" in recs[orphan] and "recovered" not in recs[first]
    workspace.ok("drill", SYS, "--backup", orphan)
    assert "0 failed" in workspace.ok("verify").out


def test_an_unrecorded_directory_that_is_not_genuine_is_quarantined(workspace):
    workspace.ok("backup", SYS, "--no-copy")
    (bid,) = _ids(workspace)
    fake = workspace.repo / SYS / "20300101T000000.000Z-abcdef"
    shutil.copytree(workspace.repo / SYS / bid, fake)
    workspace.ok("backup", SYS, "--no-copy")
    assert not fake.exists()
    assert list((workspace.repo / ".quarantine").glob(f"{SYS}.20300101T000000.000Z-abcdef.*"))
    abandoned = [json.loads(r[3]) for r in workspace.ledger_rows("abandoned") if r[2] == fake.name]
    assert abandoned and "not a genuine backup" in abandoned[0]["reason"]


# --- 3. anti-rollback ---------------------------------------------------------------------------------------------

def test_ledger_rollback_is_caught_by_the_target_anchor(workspace):
    workspace.ok("backup", SYS)
    keep = workspace.ledger_rows()[-1][0]
    workspace.ok("drill", SYS)
    r = workspace.run("drill", SYS, "--backup", "20300101T000000.000Z-abcdef")  # a failed attempt is recorded too
    workspace.ok("backup", SYS)  # copies the ledger snapshot and its head
    target_ledger = workspace.offsite / "_ledger" / "ledger.db"
    before = target_ledger.read_bytes()
    assert "0 failed" in workspace.ok("verify", "--target", "offsite").out
    workspace.ok("ledger", "verify", "--against", "offsite")

    _rollback_ledger(workspace, keep)  # the drill and everything after it disappear
    assert workspace.run("ledger", "verify").code == 0  # the chain alone cannot see it
    r = workspace.run("ledger", "verify", "--against", "offsite")
    assert r.code == 3 and "is ahead of the local ledger" in r.err and "rolled back" in r.err, r
    r = workspace.run("status")
    assert r.code == 3 and "ledger rolled back" in r.err, r
    r = workspace.run("backup", SYS)  # the backup is kept locally, but the copy refuses to overwrite the longer history
    # the run reconciled the backups whose records were cut (as "recovered"), so the histories now diverge
    assert r.code == 3 and "target offsite and the local ledger" in r.err and "diverge at seq" in r.err, r
    assert target_ledger.read_bytes() == before


def test_an_older_ledger_file_put_back_is_caught(workspace):
    workspace.ok("backup", SYS)
    old = workspace.root / "old-ledger.db"
    subprocess.run(["sqlite3", str(workspace.ledger), f".backup {old}"], check=True)
    workspace.ok("drill", SYS)
    workspace.ok("backup", SYS)
    os.replace(old, workspace.ledger)
    for suffix in ("-wal", "-shm"):
        (workspace.ledger.parent / (workspace.ledger.name + suffix)).unlink(missing_ok=True)
    r = workspace.run("ledger", "verify", "--against", "all")
    assert r.code == 3 and "target offsite is ahead" in r.err, r


def test_checkpoint_line_from_the_paper_log_book(workspace):
    workspace.ok("backup", SYS, "--no-copy")
    workspace.ok("drill", SYS)
    line = workspace.ok("ledger", "head").out.strip()
    assert line.startswith("backupkit-ledger-head 1 seq=") and len(line.splitlines()) == 1
    workspace.ok("backup", SYS, "--no-copy")
    assert "ok" in workspace.ok("ledger", "verify", "--checkpoint", line).out
    forged = line.replace("seq=", "seq=1", 1)
    r = workspace.run("ledger", "verify", "--checkpoint", forged)
    assert r.code == 3 and "signature" in r.err, r
    seq = int(line.split("seq=")[1].split()[0])
    _rollback_ledger(workspace, seq - 2)
    r = workspace.run("ledger", "verify", "--checkpoint", line)
    assert r.code == 3 and f"signed head is seq {seq}" in r.err, r


# --- 4. names -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../demo-emr/20261126T020000.000Z-abcdef", "/tmp", "latest", "..", ""])
def test_backup_option_takes_only_a_backup_id(workspace, bad):
    workspace.ok("backup", SYS, "--no-copy")
    n = len(workspace.ledger_rows())
    r = workspace.run("drill", SYS, "--backup", bad)
    assert r.code == 2 and "is not a backup ID" in r.err and len(r.err.strip().splitlines()) == 1, r
    r = workspace.run("restore", SYS, bad, "--to", str(workspace.root / "x.sqlite"))
    assert r.code == 2 and "is not a backup ID" in r.err, r
    assert len(workspace.ledger_rows()) == n


# --- 5. time --------------------------------------------------------------------------------------------------------

def test_prune_after_a_clock_step_back_keeps_the_newest_by_sequence(workspace):
    faketime = shutil.which("faketime")
    assert faketime, "faketime is missing: scripts/test.sh installs it"
    workspace.edit_policy(lambda p: p.update(retention={"daily": 1, "weekly": 0, "monthly": 0, "yearly": 0}))
    workspace.ok("backup", SYS, "--no-copy")
    p = subprocess.run([faketime, "-f", "-3d", sys.executable, "-m", "backupkit.cli", "backup", SYS, "--no-copy"],
                       env=workspace.env(FAKETIME_DONT_FAKE_MONOTONIC="1"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    newest = workspace.ledger_rows("backup")[-1][2]
    assert newest == min(_ids(workspace))  # its ID says three days ago
    workspace.ok("prune")
    assert _ids(workspace) == [newest]


# --- 6. crash-safe multi-step operations ------------------------------------------------------------------------------

@pytest.mark.parametrize("point", ["prune-after-plan", "prune-mid-delete"])
def test_prune_killed_leaves_no_permanent_alarm_and_is_finished_next_time(workspace, point):
    workspace.edit_policy(lambda p: p.update(retention={"daily": 1, "weekly": 0, "monthly": 0, "yearly": 0}))
    for _ in range(3):
        workspace.ok("backup", SYS)
    ids = _ids(workspace)
    _killed_at(workspace, point, "prune")  # killed during the local prune
    left = _ids(workspace)
    # planned but nothing deleted yet, or one backup gone as a whole (never a half-deleted directory)
    assert left == (ids if point == "prune-after-plan" else ids[1:])
    assert all((workspace.repo / SYS / i / "manifest.json").exists() for i in left)
    assert "0 failed" in workspace.ok("verify").out
    workspace.ok("prune")
    assert _ids(workspace) == [ids[-1]]
    done = [json.loads(r[3]) for r in workspace.ledger_rows("prune") if json.loads(r[3]).get("phase") == "done"]
    assert any(d.get("resumed") for d in done)
    assert not (workspace.repo / ".trash").exists() or not any((workspace.repo / ".trash").iterdir())
    assert sorted(p.name for p in (workspace.offsite / SYS).iterdir()) == [ids[-1]]
    assert "0 failed" in workspace.ok("verify", "--target", "offsite").out


def test_prune_killed_on_the_target_side_finishes_and_verify_target_stays_green(workspace):
    workspace.edit_policy(lambda p: p.update(retention={"daily": 1, "weekly": 0, "monthly": 0, "yearly": 0}))
    for _ in range(3):
        workspace.ok("backup", SYS)
    ids = _ids(workspace)
    workspace.ok("prune", SYS)  # local is done; now make the next removal die on the target
    workspace.ok("backup", SYS)
    ids = _ids(workspace)
    env = workspace.env(BACKUPKIT_FAILPOINT="prune-mid-delete")
    p = subprocess.run([sys.executable, "-m", "backupkit.cli", "prune"], env=env, capture_output=True, text=True)
    assert p.returncode == -9
    # the local side was pruned and recorded, the target side was planned and is half done
    assert "0 failed" in workspace.ok("verify", "--target", "offsite").out
    assert "copied 0" in workspace.ok("copy").out  # copy does not re-upload what retention removed
    workspace.ok("prune")
    assert sorted(p.name for p in (workspace.offsite / SYS).iterdir()) == [ids[-1]]


def test_copy_and_prune_of_one_system_take_the_same_lock(workspace):
    workspace.ok("backup", SYS, "--no-copy")
    workspace.edit_config(lambda c: c.update(lock_timeout=1))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(workspace.repo / '.locks' / (SYS + '.lock'))!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(30)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (("copy",), ("prune",)):
            r = workspace.run(*args)
            assert r.code == 1 and "holds" in r.err, (args, r)
        assert not (workspace.offsite / SYS).exists()
    finally:
        holder.kill()
        holder.wait()
    assert "copied 1" in workspace.ok("copy").out


def test_stray_entries_are_warnings_never_crashes(workspace):
    workspace.ok("backup", SYS)
    stray = workspace.repo / SYS / "keep-before-upgrade"
    stray.mkdir()
    (stray / "notes.txt").write_text("x")
    (workspace.offsite / SYS / "README").write_text("do not delete")
    for args in (("verify",), ("prune",), ("prune", "--dry-run"), ("list",), ("status",), ("verify", "--target", "offsite")):
        r = workspace.run(*args)
        assert r.code in (0, 4) and "internal error" not in r.err, (args, r)
    assert "keep-before-upgrade: not a backup ID" in workspace.run("verify").err
    assert stray.exists() and (workspace.offsite / SYS / "README").exists()


# --- malformed directories ------------------------------------------------------------------------------------------

def test_junk_signature_and_a_directory_for_a_stream_fail_one_backup_not_the_run(workspace):
    for _ in range(3):
        workspace.ok("backup", SYS, "--no-copy")
    a, b, c = workspace.backups()
    (a / "manifest.sig").write_bytes(os.urandom(200))
    (b / "data.zst.age").unlink()
    (b / "data.zst.age").mkdir()
    r = workspace.run("verify")
    assert r.code == 3 and "internal error" not in r.err, r
    assert "manifest.sig is malformed" in r.out and "data.zst.age is not a regular file" in r.out
    assert f"ok      {SYS}/{c.name}" in r.out and "2 failed" in r.out


def test_a_stream_symlinked_to_dev_zero_fails_fast(workspace, tmp_path):
    workspace.ok("backup", SYS)
    (bid,) = _ids(workspace)
    for base in (workspace.repo / SYS / bid, workspace.offsite / SYS / bid):
        (base / "data.zst.age").unlink()
        os.symlink("/dev/zero", base / "data.zst.age")
    t0 = time.monotonic()
    r = workspace.run("verify", timeout=60)
    assert r.code == 3 and "not a regular file" in r.out, r
    r = workspace.run("verify", "--target", "offsite", timeout=60)
    assert r.code == 3, r
    r = workspace.run("drill", SYS, timeout=60)
    assert r.code == 3, r
    r = workspace.run("drill", SYS, "--from", "offsite", timeout=60)
    assert r.code == 3, r
    assert time.monotonic() - t0 < 60


def test_an_oversized_manifest_is_refused_without_reading_it(workspace):
    workspace.ok("backup", SYS, "--no-copy")
    (d,) = workspace.backups()
    with open(d / "manifest.json", "r+b") as f:
        f.truncate(65 << 20)  # sparse: 65 MiB
    r = workspace.run("verify")
    assert r.code == 3 and "larger than" in r.out, r


# --- 7. retention keeps proof -----------------------------------------------------------------------------------------

def test_prune_keeps_the_newest_backup_whose_drill_passed(workspace):
    workspace.edit_policy(lambda p: p.update(retention={"daily": 1, "weekly": 0, "monthly": 0, "yearly": 0}))
    workspace.ok("backup", SYS)
    (good,) = _ids(workspace)
    workspace.ok("drill", SYS)
    db = sqlite3.connect(workspace.db)  # the database is wiped; tonight's backup is of nothing
    db.execute("DELETE FROM patients")
    db.commit()
    db.close()
    workspace.ok("backup", SYS)
    bad = _ids(workspace)[-1]
    assert workspace.run("drill", SYS).code != 0
    r = workspace.ok("prune", "--dry-run")
    assert f"keep    {good}  newest backup whose latest drill passed" in r.out, r
    workspace.ok("prune")
    assert _ids(workspace) == [good, bad]
    assert sorted(p.name for p in (workspace.offsite / SYS).iterdir()) == [good, bad]


def test_a_held_backup_is_never_pruned_until_released(workspace):
    workspace.edit_policy(lambda p: p.update(retention={"daily": 1, "weekly": 0, "monthly": 0, "yearly": 0}))
    for _ in range(3):
        workspace.ok("backup", SYS, "--no-copy")
    a, b, c = _ids(workspace)
    workspace.ok("hold", "add", SYS, a, "--reason", "卫健委 audit 2026-12")
    assert "on hold: 卫健委 audit 2026-12" in workspace.ok("prune", "--dry-run").out
    workspace.ok("prune")
    assert _ids(workspace) == [a, c]
    assert workspace.run("hold", "add", SYS, "20300101T000000.000Z-abcdef", "--reason", "x").code == 2
    workspace.ok("hold", "release", SYS, a, "--reason", "audit closed")
    workspace.ok("prune")
    assert _ids(workspace) == [c]
