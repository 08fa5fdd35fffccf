"""status: the pure assessment, row by row, field by field; the exact Prometheus text."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from backupkit.actions.status import SystemStatus, anchors_prometheus, assess, status, to_json, to_prometheus
from backupkit.ledger import Record
from backupkit.policy import Policy

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
S = timedelta(seconds=1)
H = timedelta(hours=1)
D = timedelta(days=1)
RPO, EVERY, TIER = 24 * H, 30 * D, 1800


def policy(targets=("nas",)):
    return Policy.model_validate({"system": "his", "tier": "30m", "rpo": "24h", "engine": "sqlite",
                                  "source": {"path": "/x"}, "targets": list(targets), "drill": {"every": "30d"}})


def rec(seq, kind, age, subject=None, policy="his", **body):
    return Record(seq, (NOW - age).isoformat(), kind, policy, subject or f"s{seq}", body, "", "", "", "")


def backup(seq, age, subject=None):
    return rec(seq, "backup", age, subject)


def copy(seq, age, target="nas", status="ok", subject=None):
    return rec(seq, "copy", age, subject, status=status, target=target)


def drill(seq, age, verdict="passed", rto=60, subject=None):
    return rec(seq, "drill", age, subject, verdict=verdict, rto=None if rto is None else {"measured_seconds": rto})


def row(**changes):
    base = {"system": "his", "tier": "30m", "last_backup": None, "last_backup_age_seconds": None,
            "rpo_seconds": 86400.0, "backup_ok": False, "last_offsite_copy": None, "offsite_ok": True,
            "targets": ["nas"], "last_drill": None, "last_drill_verdict": None, "drill_every_seconds": 2592000.0,
            "drill_ok": False, "last_rto_seconds": None, "rto_target_seconds": 1800.0, "rto_ok": None,
            "clock_skew": False, "missing_backups": [], "problems": [], "overdue": False}
    base.update(changes)
    base["overdue"] = bool(base["problems"])
    return base


def good(backup_age=H, copy_age=H, drill_age=D):
    return [backup(1, backup_age), copy(2, copy_age), drill(3, drill_age)]


GOOD = row(last_backup="s1", last_backup_age_seconds=3600.0, backup_ok=True, last_offsite_copy="s2",
           last_drill="s3", last_drill_verdict="passed", drill_ok=True, last_rto_seconds=60, rto_ok=True)


def test_default_row():
    st = SystemStatus("x", "6h")
    assert to_json([st]) == [row(system="x", tier="6h", rpo_seconds=0, drill_every_seconds=0, rto_target_seconds=0,
                                 targets=[])]
    assert not st.integrity_failed and not st.overdue


def test_nothing_at_all():
    assert to_json([assess(policy(), [], NOW)]) == [row(
        offsite_ok=False, problems=["no backup yet", "no verified offsite copy on nas within the RPO",
                                    "no passing drill yet"])]


def test_no_targets_is_no_offsite_copy():
    st = assess(policy(()), [backup(1, H), copy(2, H), drill(3, D)], NOW)
    assert to_json([st]) == [row(**{**GOOD, "targets": [], "last_offsite_copy": None, "offsite_ok": False,
                                    "problems": ["no offsite copy: the policy names no target; add one to 'targets' "
                                                 "(MLPS 8.1.4.9 b asks for offsite backup)"]})]


def test_all_good():
    assert to_json([assess(policy(), good(), NOW)]) == [GOOD]


@pytest.mark.parametrize("age,ok", [(RPO - S, True), (RPO, True), (RPO + S, False)])
def test_backup_rpo_boundary(age, ok):
    st = assess(policy(), good(backup_age=age), NOW)
    assert st.backup_ok is ok and st.last_backup_age_seconds == age.total_seconds()
    assert st.problems == ([] if ok else ["last backup is 1d1s old, RPO 1d"])


@pytest.mark.parametrize("age,ok", [(RPO, True), (RPO + S, False)])
def test_copy_rpo_boundary(age, ok):
    st = assess(policy(), good(copy_age=age), NOW)
    assert st.offsite_ok is ok
    assert st.problems == ([] if ok else ["no verified offsite copy on nas within the RPO"])


@pytest.mark.parametrize("age,ok", [(EVERY, True), (EVERY + S, False)])
def test_drill_every_boundary(age, ok):
    st = assess(policy(), good(drill_age=age), NOW)
    assert st.drill_ok is ok
    assert st.problems == ([] if ok else ["last passing drill is older than drill.every (30d)"])


@pytest.mark.parametrize("rto,ok", [(TIER - 1, True), (TIER, True), (TIER + 1, False), (None, None)])
def test_rto_boundary(rto, ok):
    st = assess(policy(), [*good()[:2], drill(3, D, rto=rto)], NOW)
    assert st.last_rto_seconds == rto and st.rto_ok is ok
    assert st.problems == (["the last drill's recovery time exceeded the tier"] if ok is False else [])


def test_drill_without_rto_block():
    records = [*good()[:2], rec(3, "drill", D, verdict="passed")]
    st = assess(policy(), records, NOW)
    assert st.last_rto_seconds is None and st.rto_ok is None and st.drill_ok and not st.problems


def test_last_drill_failed_but_an_older_one_passed():
    records = [*good(), drill(4, H, verdict="failed", rto=10)]
    st = assess(policy(), records, NOW)
    assert (st.last_drill, st.last_drill_verdict, st.drill_ok, st.rto_ok) == ("s4", "failed", True, True)
    assert st.problems == ["the last drill failed"]


def test_only_a_failed_drill():
    st = assess(policy(), [*good()[:2], drill(3, H, verdict="failed", rto=None)], NOW)
    assert st.problems == ["no passing drill yet", "the last drill failed"]
    assert (st.drill_ok, st.rto_ok, st.last_drill_verdict) == (False, None, "failed")


def test_an_aborted_drill_is_not_failed():
    st = assess(policy(), [*good(), drill(4, H, verdict="aborted", rto=None)], NOW)
    assert st.problems == [] and st.last_drill_verdict == "aborted" and st.rto_ok is None


def test_latest_records_by_seq_and_per_target():
    records = [backup(2, 2 * H, "b2"), backup(1, 30 * H, "b1"),
               copy(3, 30 * H, "nas", subject="c-old"), copy(5, 2 * H, "nas", subject="c-new"),
               copy(4, H, "usb", subject="b-usb"), copy(6, H, "usb", status="failed", subject="z-failed"),
               copy(7, H, "other", subject="zz-other"),
               drill(9, 2 * D, subject="d2"), drill(8, 40 * D, subject="d1")]
    st = assess(policy(("nas", "usb")), list(reversed(records)), NOW)
    assert (st.last_backup, st.last_backup_age_seconds, st.backup_ok) == ("b2", 7200.0, True)
    assert (st.last_offsite_copy, st.offsite_ok) == ("c-new", True)  # the newest by seq among the targets' copies
    assert (st.last_drill, st.drill_ok, st.problems) == ("d2", True, [])
    st = assess(policy(("usb", "nas")), records, NOW)
    assert st.last_offsite_copy == "c-new"
    records.append(copy(10, H, "usb", subject="a-usb"))  # newest by seq, though not by name
    assert assess(policy(("nas", "usb")), records, NOW).last_offsite_copy == "a-usb"
    assert assess(policy(("usb", "nas")), records, NOW).last_offsite_copy == "a-usb"


def test_a_copy_at_seq_1_is_the_last_offsite_copy():
    st = assess(policy(), [copy(1, H), backup(2, H), drill(3, D)], NOW)
    assert (st.last_offsite_copy, st.offsite_ok, st.problems) == ("s1", True, [])


def test_one_target_stale_names_only_it():
    records = [*good(), copy(4, 30 * H, "usb")]
    st = assess(policy(("nas", "usb")), records, NOW)
    assert st.offsite_ok is False and st.problems == ["no verified offsite copy on usb within the RPO"]
    assert st.last_offsite_copy == "s4"


def test_a_failed_copy_is_no_copy():
    st = assess(policy(), [backup(1, H), copy(2, H, status="failed"), drill(3, D)], NOW)
    assert (st.offsite_ok, st.last_offsite_copy) == (False, None)


TOL = timedelta(minutes=5)


@pytest.mark.parametrize("kind,ahead,skew", [("backup", TOL, False), ("backup", TOL + S, True),
                                             ("copy", TOL, False), ("copy", TOL + S, True),
                                             ("drill", TOL, False), ("drill", TOL + S, True)])
def test_skew_boundary_per_kind(kind, ahead, skew):
    st = assess(policy(), good(**{f"{kind}_age": -ahead}), NOW)
    assert st.clock_skew is skew
    oks = {"backup": st.backup_ok, "copy": st.offsite_ok, "drill": st.drill_ok}
    assert oks == {"backup": True, "copy": True, "drill": True, kind: not skew}
    assert len(st.problems) == (1 if skew else 0)


def test_skew_of_each_kind_is_named_once():
    when = NOW + 2 * D
    records = [backup(1, -2 * D), copy(2, -2 * D), drill(3, -2 * D)]
    st = assess(policy(), records, NOW)
    assert (st.clock_skew, st.backup_ok, st.offsite_ok, st.drill_ok) == (True, False, False, False)
    assert st.problems == [
        f"clock skew: backup s1 is recorded at {when.isoformat()}, 2d in the future; check the host clock (NTP)",
        f"clock skew: copy of s2 to nas is recorded at {when.isoformat()}, 2d in the future; check the host clock (NTP)",
        f"clock skew: passing drill s3 is recorded at {when.isoformat()}, 2d in the future; check the host clock (NTP)",
    ]


def test_missing_backups_in_seq_order():
    records = [*good(), backup(4, H, "b4"), backup(5, H, "b5"),
               rec(6, "prune", H, "local", removed=["s1"])]
    st = assess(policy(), records, NOW, present={"b4", "extra"})
    assert st.missing_backups == ["b5"] and st.integrity_failed
    assert st.problems == ["1 backup(s) the ledger committed are missing from the repository (b5); run 'backupkit verify'"]
    st = assess(policy(), records, NOW, present={"b4", "b5"})
    assert st.missing_backups == [] and not st.integrity_failed and not st.problems
    st = assess(policy(), [*records, backup(7, H, "b7")], NOW, present=set())
    assert st.missing_backups == ["b4", "b5", "b7"]
    assert st.problems[0].startswith("3 backup(s) the ledger committed are missing from the repository (b4, b5, b7)")
    assert assess(policy(), records, NOW).missing_backups == []


def test_status_reads_the_ledger_and_the_repository():
    records = [*good(), backup(4, H, "b4")]
    seen = {}

    def records_of(policy):
        seen["policy"] = policy
        return iter(records)

    ctx = SimpleNamespace(ledger=SimpleNamespace(records=records_of),
                          repository=SimpleNamespace(scan=lambda system: ({"s1": None}, ["warning"])))
    [st] = status(ctx, [policy()], NOW)
    assert seen == {"policy": "his"} and st.missing_backups == ["b4"] and st.last_backup_age_seconds == 3600.0
    before = datetime.now(timezone.utc)
    [st] = status(ctx, [policy()])  # now defaults to the real clock
    after = datetime.now(timezone.utc)
    last = NOW - H
    assert (before - last).total_seconds() <= st.last_backup_age_seconds <= (after - last).total_seconds()


def test_prometheus_exact():
    st = assess(policy(), good(), NOW)
    bad = assess(policy(), [backup(1, -D)], NOW, present=set())
    bad.system = "lis"
    assert to_prometheus([st, bad]) == "\n".join([
        "# HELP backupkit_last_backup_age_seconds Age of the newest committed backup.",
        "# TYPE backupkit_last_backup_age_seconds gauge",
        'backupkit_last_backup_age_seconds{system="his"} 3600',
        'backupkit_last_backup_age_seconds{system="lis"} -86400',
        "# HELP backupkit_rpo_seconds Recovery point objective from the policy.",
        "# TYPE backupkit_rpo_seconds gauge",
        'backupkit_rpo_seconds{system="his"} 86400',
        'backupkit_rpo_seconds{system="lis"} 86400',
        "# HELP backupkit_offsite_ok 1 when every target holds a verified copy within the RPO.",
        "# TYPE backupkit_offsite_ok gauge",
        'backupkit_offsite_ok{system="his"} 1',
        'backupkit_offsite_ok{system="lis"} 0',
        "# HELP backupkit_drill_ok 1 when a passing drill is within drill.every.",
        "# TYPE backupkit_drill_ok gauge",
        'backupkit_drill_ok{system="his"} 1',
        'backupkit_drill_ok{system="lis"} 0',
        "# HELP backupkit_last_rto_seconds Measured recovery time of the last drill.",
        "# TYPE backupkit_last_rto_seconds gauge",
        'backupkit_last_rto_seconds{system="his"} 60',
        "# HELP backupkit_rto_target_seconds RTO target from the downtime tier.",
        "# TYPE backupkit_rto_target_seconds gauge",
        'backupkit_rto_target_seconds{system="his"} 1800',
        'backupkit_rto_target_seconds{system="lis"} 1800',
        "# HELP backupkit_clock_skew 1 when a backup, copy or drill record is dated beyond now + 5m "
        "(the host clock ran ahead).",
        "# TYPE backupkit_clock_skew gauge",
        'backupkit_clock_skew{system="his"} 0',
        'backupkit_clock_skew{system="lis"} 1',
        "# HELP backupkit_overdue 1 when anything is overdue or failing.",
        "# TYPE backupkit_overdue gauge",
        'backupkit_overdue{system="his"} 0',
        'backupkit_overdue{system="lis"} 1',
        "# HELP backupkit_missing_backups Backups the ledger committed that are missing from the repository.",
        "# TYPE backupkit_missing_backups gauge",
        'backupkit_missing_backups{system="his"} 0',
        'backupkit_missing_backups{system="lis"} 1',
    ]) + "\n"


def test_anchors_prometheus_exact():
    results = [SimpleNamespace(where="target nas", status="ok"), SimpleNamespace(where="target usb", status="rolled-back"),
               SimpleNamespace(where="target far away", status="unreachable")]
    assert anchors_prometheus(results) == "\n".join([
        "# HELP backupkit_ledger_anchor_ok 0 when a target's signed ledger head shows the local ledger was rolled back.",
        "# TYPE backupkit_ledger_anchor_ok gauge",
        'backupkit_ledger_anchor_ok{target="nas"} 1',
        'backupkit_ledger_anchor_ok{target="usb"} 0',
        'backupkit_ledger_anchor_ok{target="far away"} 1',
        "# HELP backupkit_ledger_anchor_reachable 0 when a target's ledger head could not be read.",
        "# TYPE backupkit_ledger_anchor_reachable gauge",
        'backupkit_ledger_anchor_reachable{target="nas"} 1',
        'backupkit_ledger_anchor_reachable{target="usb"} 1',
        'backupkit_ledger_anchor_reachable{target="far away"} 0',
    ]) + "\n"
