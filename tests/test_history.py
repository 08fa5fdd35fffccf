"""The pure decisions behind binding, completeness, retention and anchors: table-driven, boundaries pinned."""

from datetime import datetime, timedelta, timezone

import pytest

from backupkit.anchor import compare, head_line, parse_head
from backupkit.errors import VerificationFailed
from backupkit.history import LOCAL, history, prune_phase, protected
from backupkit.keys import generate_signing_key, load_signer
from backupkit.ledger import GENESIS, Record
from backupkit.provenance import check_binding
from backupkit.retention import plan_prune

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)


def rec(seq, kind, subject, body=None, policy="his"):
    return Record(seq, (T0 + timedelta(hours=seq)).isoformat(), kind, policy, subject, body or {}, "", f"h{seq}", "k", "s")


def bid(n):
    return f"202611{n:02d}T020000.000Z-{n:06x}"


def test_committed_is_first_backup_record_per_id_and_only_this_system():
    h = history([rec(1, "backup", bid(1), {"manifest_sha256": "a"}), rec(2, "backup", bid(1), {"manifest_sha256": "b"}),
                 rec(3, "backup", bid(2), policy="other")], "his")
    assert list(h.committed) == [bid(1)] and h.committed[bid(1)].body["manifest_sha256"] == "a"
    assert h.seq_of(bid(1)) == 1 and h.seq_of(bid(2)) is None and h.record_of(bid(2)) is None


def test_ordered_follows_seq_not_name_and_drops_unrecorded():
    h = history([rec(5, "backup", bid(1)), rec(6, "backup", bid(3)), rec(7, "backup", bid(2))], "his")
    assert h.ordered([bid(2), bid(1), bid(3), bid(9)]) == [bid(1), bid(3), bid(2)]


def test_expected_local_and_target():
    records = [rec(1, "backup", bid(1)), rec(2, "backup", bid(2)), rec(3, "backup", bid(3)),
               rec(4, "copy", bid(1), {"target": "nas", "status": "ok"}),
               rec(5, "copy", bid(2), {"target": "nas", "status": "failed"}),
               rec(6, "copy", bid(3), {"target": "nas", "status": "ok"}),
               rec(7, "prune", LOCAL, {"location": LOCAL, "removed": [bid(1)]}),
               rec(8, "prune", "nas", {"location": "nas", "phase": "planned", "remove": [bid(3)]})]
    h = history(records, "his")
    assert h.expected(LOCAL) == {bid(2), bid(3)}
    assert h.expected("nas") == {bid(1)}
    assert h.expected("other") == set()
    assert [p.seq for p in h.pending_prunes] == [8]


def test_done_prune_closes_its_plan_only():
    records = [rec(1, "prune", LOCAL, {"location": LOCAL, "phase": "planned", "remove": ["a"]}),
               rec(2, "prune", LOCAL, {"location": LOCAL, "phase": "planned", "remove": ["b"]}),
               rec(3, "prune", LOCAL, {"location": LOCAL, "phase": "done", "plan_seq": 1, "removed": ["a"]})]
    h = history(records, "his")
    assert [p.seq for p in h.pending_prunes] == [2]
    assert h.removed[LOCAL] == {"a", "b"}


def test_prune_phase_defaults_to_done():
    assert prune_phase(rec(1, "prune", LOCAL, {"removed": []})) == "done"
    assert prune_phase(rec(1, "prune", LOCAL, {"phase": "planned"})) == "planned"


def test_latest_drill_and_deep_verify_and_holds():
    records = [rec(1, "backup", bid(1)), rec(2, "backup", bid(2)), rec(3, "backup", bid(3)),
               rec(4, "drill", "D1", {"backup_id": bid(1), "verdict": "passed"}),
               rec(5, "drill", "D2", {"backup_id": bid(2), "verdict": "passed"}),
               rec(6, "drill", "D3", {"backup_id": bid(2), "verdict": "failed"}),
               rec(7, "verify", LOCAL, {"deep": True, "results": [{"system": "his", "backup_id": bid(3), "status": "ok"},
                                                                  {"system": "x", "backup_id": bid(1), "status": "ok"}]},
                   policy="*"),
               rec(8, "verify", LOCAL, {"deep": False, "results": [{"system": "his", "backup_id": bid(2), "status": "ok"}]}),
               rec(9, "hold", bid(1), {"action": "hold", "reason": "audit"}),
               rec(10, "hold", bid(2), {"action": "hold", "reason": ""}),
               rec(11, "hold", bid(2), {"action": "release"})]
    h = history(records, "his")
    assert h.last_drill[bid(2)].subject == "D3"
    assert h.last_deep_verify == {bid(3): "ok"}
    assert h.holds == {bid(1): "audit"}
    keep = protected(h, [bid(1), bid(2), bid(3)])
    assert keep == {bid(1): ["newest backup whose latest drill passed (D1)", "on hold: audit"],
                    bid(3): ["newest backup whose latest deep verify passed"]}
    # only what is present at the location counts
    assert protected(h, [bid(2), bid(3)]) == {bid(3): ["newest backup whose latest deep verify passed"]}


def test_protected_prefers_the_newest_passing_and_holds_without_reason():
    records = [rec(1, "backup", bid(1)), rec(2, "backup", bid(2)),
               rec(3, "drill", "D1", {"backup_id": bid(1), "verdict": "passed"}),
               rec(4, "drill", "D2", {"backup_id": bid(2), "verdict": "passed"}),
               rec(5, "verify", LOCAL, {"deep": True, "results": [{"system": "his", "backup_id": bid(1), "status": "ok"},
                                                                  {"system": "his", "backup_id": bid(2), "status": "failed"}]}),
               rec(6, "hold", bid(1), {})]
    h = history(records, "his")
    keep = protected(h, [bid(1), bid(2)])
    assert keep[bid(2)] == ["newest backup whose latest drill passed (D2)"]
    assert keep[bid(1)] == ["newest backup whose latest deep verify passed", "on hold"]


def test_plan_prune_keeps_protected_and_orders_by_input():
    ids = [(bid(n), T0 + timedelta(days=n)) for n in (1, 2, 3)]
    stepped = [ids[0], ids[2], ids[1]]  # the last by sequence carries an earlier time
    plan = plan_prune(stepped, daily=1, weekly=0, monthly=0, yearly=0)
    assert plan.keep == {bid(2): ["newest", "daily 2026-11-03"]} and plan.remove == [bid(1), bid(3)]
    plan = plan_prune(stepped, daily=1, weekly=0, monthly=0, yearly=0, protect={bid(1): ["held"], "gone": ["x"]})
    assert plan.keep[bid(1)] == ["held"] and "gone" not in plan.keep and plan.remove == [bid(3)]


def test_plan_prune_empty():
    plan = plan_prune([], daily=1, weekly=1, monthly=1, yearly=1, protect={"a": ["x"]})
    assert plan.keep == {} and plan.remove == []


# --- binding ------------------------------------------------------------------------------------------------------

def _record_with(sha):
    return rec(1, "backup", bid(1), {"manifest_sha256": sha})


def test_binding_accepts_the_committed_manifest():
    import hashlib

    data = b'{"system":"his"}'
    check_binding({"system": "his", "backup_id": bid(1)}, data, system="his", backup_id=bid(1), where="w",
                  record=_record_with(hashlib.sha256(data).hexdigest()))


@pytest.mark.parametrize("manifest,record,message", [
    ({"system": "lis", "backup_id": bid(1)}, _record_with("x"), "holds the manifest of backup lis/"),
    ({"system": "his", "backup_id": bid(2)}, _record_with("x"), f"not of his/{bid(1)}"),
    ({"system": "his", "backup_id": bid(1)}, None, "no backup record"),
    ({"system": "his", "backup_id": bid(1)}, _record_with("0" * 64), "is not the 0000000000000000… that ledger record seq 1"),
])
def test_binding_refuses(manifest, record, message):
    with pytest.raises(VerificationFailed) as e:
        check_binding(manifest, b"{}", system="his", backup_id=bid(1), where="w", record=record)
    assert message in str(e.value) and str(e.value).startswith("w: ")


# --- anchors ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("head_seq,head_hash,local_seq,local_hash,verdict", [
    (5, "h", 5, "h", None),
    (5, "h", 9, "h", None),
    (5, "h", 4, None, "ahead"),
    (5, "h", 5, "other", "diverged"),
    (5, "h", 9, None, "diverged"),
    (0, GENESIS, 0, None, None),
    (0, GENESIS, 3, "x", None),
    (0, "f" * 64, 3, "x", "diverged"),
    (1, "h", 0, None, "ahead"),
])
def test_compare_heads(head_seq, head_hash, local_seq, local_hash, verdict):
    assert compare(head_seq, head_hash, local_seq, local_hash) == verdict


def test_head_line_round_trip_and_forgery(tmp_path):
    key = tmp_path / "signing.pem"
    fd = __import__("os").open(key, __import__("os").O_WRONLY | __import__("os").O_CREAT, 0o600)
    __import__("os").write(fd, generate_signing_key())
    __import__("os").close(fd)
    signer = load_signer(key)
    line = head_line(7, "a" * 64, "2026-11-27T00:00:00+00:00", signer)
    head = parse_head(line + "\n", signer.public, "x")
    assert (head.seq, head.hash, head.key_id) == (7, "a" * 64, signer.id)
    flipped = line[:-1] + ("1" if line[-1] == "0" else "0")
    for forged in (line.replace("seq=7", "seq=8"), line.replace("a" * 64, "b" * 64), flipped,
                   line.replace("backupkit-ledger-head 1", "backupkit-ledger-head 2"), "", "junk"):
        with pytest.raises(VerificationFailed):
            parse_head(forged, signer.public, "x")


@pytest.mark.parametrize("kind,period,label", [
    ("daily", (2026, 11, 3), "2026-11-03"), ("weekly", (2026, 5), "2026-W05"), ("monthly", (2026, 1), "2026-01"),
    ("yearly", (2026,), "2026"), ("daily", (2026, 12, 31), "2026-12-31"),
])
def test_period_label(kind, period, label):
    from backupkit.retention import period_label

    assert period_label(kind, period) == label
