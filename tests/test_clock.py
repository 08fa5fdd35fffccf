"""Wall-clock steps: order comes from seq, never from the clock.

The CLI-level tests step the clock for real, per process, with libfaketime
(Debian package ``faketime``): a run under ``faketime -f -3d`` writes ledger
records dated three days back, one under ``-f +45d`` records dated in the
future. The unit tests pin the boundaries of the pure functions involved.
"""

import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from backupkit.actions.status import assess, to_json, to_prometheus
from backupkit.context import Context
from backupkit.due import CLOCK_SKEW_TOLERANCE, backup_due, drill_due, in_future, trusted
from backupkit.errors import VerificationFailed
from backupkit.evidence.export import clock_steps, period_segment, write_sums
from backupkit.evidence.verify import _check_meta
from backupkit.ledger import Record
from backupkit.policy import Policy
from backupkit.scheduler import Daemon, drill_is_due

from fixtures.common import Result

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
TOL = timedelta(minutes=5)
SECOND = timedelta(seconds=1)
POLICY = Policy.model_validate({"system": "his", "tier": "30m", "rpo": "24h", "engine": "sqlite",
                                "source": {"path": "/x"}, "targets": ["nas"], "drill": {"every": "30d"}})


# --- helpers -------------------------------------------------------------------------------------------------------

def faked(workspace, spec: str, *args: str, timeout: float = 300) -> Result:
    """Run the CLI in a process whose wall clock is stepped by libfaketime (``spec`` as for ``faketime -f``)."""
    faketime = shutil.which("faketime")
    assert faketime, "faketime is not installed (Debian package faketime; scripts/test.sh installs it)"
    env = workspace.env(FAKETIME_DONT_FAKE_MONOTONIC="1")
    p = subprocess.run([faketime, "-f", spec, sys.executable, "-m", "backupkit.cli", *args], env=env, text=True,
                       capture_output=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def faked_ok(workspace, spec: str, *args: str) -> Result:
    r = faked(workspace, spec, *args)
    assert r.code == 0, r
    return r


def ledger_records(workspace) -> list[dict]:
    return [{"seq": seq, "kind": kind, "subject": subject, "body": json.loads(body)}
            for seq, kind, subject, body in workspace.ledger_rows()]


def rec(seq, kind, when, **body):
    return Record(seq, when.isoformat(), kind, "his", f"s{seq}", body, "", "", "", "")


def resign(workspace, bundle) -> None:
    """Re-sign a bundle's SHA256SUMS with the real key, as an insider with the signing key could."""
    ctx = Context.load(workspace.config)
    try:
        write_sums(bundle, ctx.signer)
    finally:
        ctx.close()


# --- the faketime harness itself -----------------------------------------------------------------------------------

def test_faketime_steps_the_clock_of_the_child_process(workspace):
    code = "import datetime; print(datetime.datetime.now(datetime.timezone.utc).isoformat())"
    p = subprocess.run(["faketime", "-f", "-3d", sys.executable, "-c", code], text=True, capture_output=True,
                       env=workspace.env(FAKETIME_DONT_FAKE_MONOTONIC="1"), check=True)
    behind = datetime.now(timezone.utc) - datetime.fromisoformat(p.stdout.strip())
    assert timedelta(days=3) - timedelta(minutes=1) < behind < timedelta(days=3) + timedelta(minutes=1)


# --- (a) evidence export across a clock step, (c) ledger verify ---------------------------------------------------

def test_evidence_export_keeps_records_written_while_the_clock_was_behind(workspace):
    workspace.ok("backup", "demo-lis")
    before = len(workspace.ledger_rows())
    r = faked_ok(workspace, "-3d", "backup", "demo-lis")
    assert "clock" in r.err  # the ledger logs the step
    workspace.ok("backup", "demo-lis")
    records = ledger_records(workspace)
    stepped = [r for r in records if "clock_step" in r["body"]]
    assert [r["seq"] for r in stepped] == [before + 1]  # only the first record after the step goes back
    step = stepped[0]["body"]["clock_step"]
    assert step["previous_seq"] == before and 3 * 86400 - 120 < step["seconds_back"] < 3 * 86400 + 120

    # The period starts after the stepped records' dates: they lie inside the seq range, so they belong in it.
    today = datetime.now(timezone.utc).date()
    out = workspace.root / "bundle"
    workspace.ok("evidence", "export", "--since", str(today - timedelta(days=1)),
                 "--until", str(today + timedelta(days=2)), "--lang", "en", "--out", str(out))
    r = workspace.run("evidence", "verify", str(out))  # selected by time, the bundle had a gap: "records were deleted"
    assert r.code == 0, r
    assert "chained and signed" in r.out and f"1 clock step(s) at seq {before + 1}" in r.out
    meta = json.loads((out / "bundle.json").read_text())
    lines = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, len(records) + 1))
    assert (meta["first_seq"], meta["last_seq"], meta["records"]) == (1, len(records), len(records))
    assert meta["clock_steps"] == 1
    assert meta["clock_step_records"] == [{"seq": before + 1, "previous_seq": before,
                                           "seconds_back": step["seconds_back"]}]

    # A period that contains both clocks' dates gives the same contiguous segment, zipped as well.
    wide = workspace.root / "wide.zip"
    workspace.ok("evidence", "export", "--since", str(today - timedelta(days=5)),
                 "--until", str(today + timedelta(days=2)), "--out", str(wide))
    assert f"{len(records)} records (seq 1..{len(records)})" in workspace.ok("evidence", "verify", str(wide)).out

    # (c) ledger verify: intact, exit 0, one warning naming the stepped record
    r = workspace.ok("ledger", "verify")
    assert "chain and signatures intact" in r.out
    warnings = [x for x in r.err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: record seq {before + 1}: clock went back 2591")
    assert warnings[0].endswith(f"s (previous seq {before}); order is by seq")


def test_evidence_verify_still_rejects_a_real_deletion(workspace):
    workspace.ok("backup", "demo-lis")
    faked_ok(workspace, "-3d", "backup", "demo-lis")
    workspace.ok("backup", "demo-lis")
    step_seq = next(r["seq"] for r in ledger_records(workspace) if "clock_step" in r["body"])
    today = datetime.now(timezone.utc).date()
    for victim in ("middle", "step"):
        out = workspace.root / f"bundle-{victim}"
        workspace.ok("evidence", "export", "--since", str(today - timedelta(days=1)),
                     "--until", str(today + timedelta(days=2)), "--out", str(out))
        lines = (out / "records.jsonl").read_text().splitlines()
        drop = step_seq if victim == "step" else 2
        (out / "records.jsonl").write_text("".join(x + "\n" for x in lines if json.loads(x)["seq"] != drop))
        resign(workspace, out)  # the signature is valid again: only the chain can tell
        r = workspace.run("evidence", "verify", str(out))
        assert r.code == 3, r
        assert f"record seq {drop} is missing" in r.err and "records were deleted" in r.err


def test_evidence_verify_rejects_a_bundle_json_that_misstates_the_records(workspace):
    workspace.ok("backup", "demo-lis")
    faked_ok(workspace, "-3d", "backup", "demo-lis")
    out = workspace.root / "bundle"
    workspace.ok("evidence", "export", "--out", str(out))
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["clock_steps"] == 1
    meta["clock_steps"] = 0
    meta["clock_step_records"] = []
    (out / "bundle.json").write_text(json.dumps(meta))
    resign(workspace, out)
    r = workspace.run("evidence", "verify", str(out))
    assert r.code == 3 and "bundle.json says clock_steps 0, but records.jsonl has 1" in r.err, r


# --- (b) status and the scheduler with a record from the future ----------------------------------------------------

def test_a_backup_from_the_future_is_clock_skew_not_fresh(workspace):
    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis")
    assert workspace.run("status").code == 0

    faked_ok(workspace, "+45d", "backup", "demo-lis")
    future = workspace.backups()[-1].name
    r = workspace.run("status")
    assert r.code == 4, r
    text = " ".join(r.out.split())  # the table may wrap long lines
    assert f"clock skew: backup {future} is recorded at" in text
    assert "in the future; check the host clock (NTP)" in text
    st = json.loads(workspace.run("status", "--json").out)[0]
    assert st["clock_skew"] is True and st["backup_ok"] is False and st["overdue"] is True
    assert st["last_backup"] == future and st["last_backup_age_seconds"] < 0
    assert any(p.startswith(f"clock skew: copy of {future} to offsite") for p in st["problems"])
    prom = workspace.run("status", "--prometheus").out
    assert 'backupkit_clock_skew{system="demo-lis"} 1' in prom and 'backupkit_overdue{system="demo-lis"} 1' in prom


def test_the_scheduler_is_not_silenced_by_records_from_the_future(workspace):
    # the demo data is dated now: under +45d its "newest encounter within RPO" assertion would fail the drill
    workspace.edit_policy(lambda p: p["drill"].update(assertions=[a for a in p["drill"]["assertions"]
                                                                  if "RPO" not in a["name"]]))
    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis")
    faked_ok(workspace, "+45d", "backup", "demo-lis")
    faked_ok(workspace, "+45d", "drill", "demo-lis")  # passes: it drills the +45d backup, "fresh" under that clock
    drills = [r for r in ledger_records(workspace) if r["kind"] == "drill"]
    assert [d["body"]["verdict"] for d in drills] == ["passed", "passed"]

    ctx = Context.load(workspace.config)
    try:
        policy = ctx.policy("demo-lis")
        now = datetime.now(timezone.utc)
        # tomorrow's slot is covered only by the +45d backup, which proves nothing about tomorrow
        assert Daemon(ctx, drills=False).tick(now + timedelta(days=1)) == ["backup demo-lis"]
        # 31 days on, the real drill is older than drill.every (30d); the +45d one does not count
        assert drill_is_due(ctx, policy, now + timedelta(days=31)) is True
        assert drill_is_due(ctx, policy, now + timedelta(days=29)) is False  # the real drill still counts
    finally:
        ctx.close()
    assert len(workspace.backups()) == 3


# --- pure functions: due.py ----------------------------------------------------------------------------------------

def test_the_tolerance_is_five_minutes():
    assert CLOCK_SKEW_TOLERANCE == timedelta(minutes=5)


@pytest.mark.parametrize("when,future", [
    (NOW, False), (NOW + TOL, False), (NOW + TOL + SECOND, True), (NOW - timedelta(days=30), False),
])
def test_in_future(when, future):
    assert in_future(when, NOW) is future
    assert trusted(when, NOW) == (None if future else when)


def test_in_future_uses_the_given_tolerance():
    assert in_future(NOW + SECOND, NOW, timedelta(0)) is True
    assert in_future(NOW, NOW, timedelta(0)) is False
    assert trusted(NOW + SECOND, NOW, timedelta(0)) is None
    assert trusted(None, NOW) is None


@pytest.mark.parametrize("last,slot", [
    (NOW + TOL, None),  # within the tolerance: covers today's 02:00 slot
    (NOW + TOL + SECOND, datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)),  # ignored: due for today's slot
    (NOW + timedelta(days=30), datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)),
])
def test_backup_due_ignores_a_backup_from_the_future(last, slot):
    assert backup_due("02:00", last, NOW) == slot


def test_backup_due_uses_the_given_tolerance():
    assert backup_due("02:00", NOW + SECOND, NOW, timedelta(0)) == datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
    assert backup_due("02:00", NOW, NOW, timedelta(0)) is None


@pytest.mark.parametrize("last,due", [
    (NOW + TOL, False), (NOW + TOL + SECOND, True), (NOW + timedelta(days=60), True),
    (NOW - timedelta(days=30) + SECOND, False), (NOW - timedelta(days=30), True),
])
def test_drill_due_ignores_a_drill_from_the_future(last, due):
    assert drill_due(last, timedelta(days=30), NOW) is due


def test_drill_due_uses_the_given_tolerance():
    assert drill_due(NOW + SECOND, timedelta(days=30), NOW, timedelta(0)) is True
    assert drill_due(NOW, timedelta(days=30), NOW, timedelta(0)) is False


# --- pure functions: status.assess ---------------------------------------------------------------------------------

def good(**overrides):
    """Records of a system in order, each time overridable: backup, copy, drill."""
    t = {"backup": NOW - timedelta(hours=3), "copy": NOW - timedelta(hours=3), "drill": NOW - timedelta(days=3)}
    t.update(overrides)
    return [rec(1, "backup", t["backup"]), rec(2, "copy", t["copy"], status="ok", target="nas"),
            rec(3, "drill", t["drill"], verdict="passed", rto={"measured_seconds": 60})]


@pytest.mark.parametrize("kind", ["backup", "copy", "drill"])
def test_status_tolerates_a_record_up_to_the_tolerance_ahead(kind):
    st = assess(POLICY, good(**{kind: NOW + TOL}), NOW)
    assert not st.overdue and not st.clock_skew, st.problems


def test_status_backup_one_second_past_the_tolerance_is_clock_skew():
    when = NOW + TOL + SECOND
    st = assess(POLICY, good(backup=when), NOW)
    assert st.clock_skew and not st.backup_ok and st.overdue and st.offsite_ok and st.drill_ok
    assert st.problems == [f"clock skew: backup s1 is recorded at {when.isoformat()}, 5m1s in the future; "
                           "check the host clock (NTP)"]
    assert st.last_backup_age_seconds == -301
    assert to_json([st])[0]["clock_skew"] is True
    assert 'backupkit_clock_skew{system="his"} 1' in to_prometheus([st])


def test_status_copy_past_the_tolerance_is_clock_skew():
    when = NOW + timedelta(days=30)
    st = assess(POLICY, good(copy=when), NOW)
    assert st.clock_skew and not st.offsite_ok and st.backup_ok and st.drill_ok
    assert st.problems == [f"clock skew: copy of s2 to nas is recorded at {when.isoformat()}, 30d in the future; "
                           "check the host clock (NTP)"]


def test_status_drill_past_the_tolerance_is_clock_skew():
    when = NOW + TOL + SECOND
    st = assess(POLICY, good(drill=when), NOW)
    assert st.clock_skew and not st.drill_ok and st.backup_ok and st.offsite_ok
    assert st.problems == [f"clock skew: passing drill s3 is recorded at {when.isoformat()}, 5m1s in the future; "
                           "check the host clock (NTP)"]


def test_status_judges_the_last_record_by_seq_not_by_time():
    # a backup from the future, then (by seq) a good one after the clock was fixed: fine
    recs = [rec(1, "backup", NOW + timedelta(days=30)), *good()[1:], rec(4, "backup", NOW - timedelta(hours=1))]
    st = assess(POLICY, list(reversed(recs)), NOW)
    assert not st.overdue and not st.clock_skew and st.last_backup == "s4", st.problems
    # the other way round: the newest record by seq is the one from the future
    recs = [rec(1, "backup", NOW - timedelta(hours=1)), *good()[1:], rec(4, "backup", NOW + timedelta(days=30))]
    st = assess(POLICY, recs, NOW)
    assert st.clock_skew and st.last_backup == "s4" and not st.backup_ok


def test_status_without_skew_reports_zero():
    st = assess(POLICY, good(), NOW)
    assert not st.clock_skew and 'backupkit_clock_skew{system="his"} 0' in to_prometheus([st])
    st = assess(POLICY, [], NOW)  # nothing at all is not clock skew
    assert not st.clock_skew and "no backup yet" in st.problems


# --- pure functions: the evidence period ---------------------------------------------------------------------------

DAY = timedelta(days=1)
JAN = datetime(2026, 1, 10, tzinfo=timezone.utc)
SINCE, UNTIL = JAN.isoformat(), (JAN + 10 * DAY).isoformat()


def seg(times, since=SINCE, until=UNTIL):
    records = [rec(i, "backup", t) for i, t in enumerate(times, 1)]
    return [r.seq for r in period_segment(records, since, until)]


def test_period_segment_keeps_a_stepped_back_record_between_its_ends():
    # seq 3 was written while the clock was 5 days behind: before `since`, yet inside the seq range
    assert seg([JAN - DAY, JAN + DAY, JAN - 4 * DAY, JAN + 2 * DAY, JAN + 11 * DAY]) == [2, 3, 4]


def test_period_segment_boundaries():
    assert seg([JAN - SECOND, JAN, JAN + 10 * DAY - SECOND, JAN + 10 * DAY]) == [2, 3]
    assert seg([JAN + 10 * DAY, JAN + 11 * DAY]) == []  # nothing at or after since is before until
    assert seg([JAN - 2 * DAY, JAN - DAY]) == []  # nothing at or after since
    assert seg([]) == []
    assert seg([JAN - DAY, JAN + DAY, JAN + 11 * DAY], since=None) == [1, 2]
    assert seg([JAN - DAY, JAN + DAY, JAN + 11 * DAY], until=None) == [2, 3]
    assert seg([JAN - DAY, JAN + 11 * DAY], since=None, until=None) == [1, 2]


def test_period_segment_takes_a_bare_date_as_utc():
    assert seg([JAN - SECOND, JAN, JAN + DAY], since="2026-01-10", until="2026-01-11") == [2]


def test_clock_steps_lists_marked_records():
    step = {"previous_seq": 1, "previous_time": JAN.isoformat(), "seconds_back": 3.5}
    records = [rec(1, "backup", JAN), rec(2, "copy", JAN - SECOND, clock_step=step), rec(3, "copy", JAN)]
    assert clock_steps(records) == [{"seq": 2, "previous_seq": 1, "seconds_back": 3.5}]
    assert clock_steps(records[:1]) == []


def test_check_meta():
    records = [rec(4, "backup", JAN), rec(5, "copy", JAN - SECOND, clock_step={"previous_seq": 4}), rec(6, "copy", JAN)]
    _check_meta({"records": 3, "first_seq": 4, "last_seq": 6, "clock_steps": 1}, records, "b")
    _check_meta({}, records, "b")  # older bundles without the fields
    _check_meta({"records": 0, "first_seq": None, "last_seq": None, "clock_steps": 0}, [], "b")
    for field, wrong in (("records", 2), ("first_seq", 5), ("last_seq", 5), ("clock_steps", 0)):
        with pytest.raises(VerificationFailed, match=f"bundle.json says {field} {wrong}"):
            _check_meta({field: wrong}, records, "b")
