"""history: which records count for a system, folded exactly; protected reasons, exactly."""

from datetime import datetime, timedelta, timezone

import pytest

from backupkit.history import LOCAL, History, history, protected
from backupkit.ledger import Record

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)


def rec(seq, kind, subject, body=None, policy="his"):
    return Record(seq, (T0 + timedelta(hours=seq)).isoformat(), kind, policy, subject, body or {}, "", f"h{seq}", "k", "s")


def fold(*records):
    h = history(list(records), "his")
    return {"committed": {b: r.seq for b, r in h.committed.items()},
            "copied": h.copied, "removed": h.removed, "pending": [r.seq for r in h.pending_prunes],
            "drill": {b: r.seq for b, r in h.last_drill.items()}, "deep": h.last_deep_verify, "holds": h.holds}


EMPTY = {"committed": {}, "copied": {}, "removed": {}, "pending": [], "drill": {}, "deep": {}, "holds": {}}


def expect(**changes):
    return {**EMPTY, **changes}


@pytest.mark.parametrize("records,folded", [
    # only this system's backups are committed; "*" is for verify records only
    ([rec(1, "backup", "a"), rec(2, "backup", "b", policy="*"), rec(3, "backup", "c", policy="lis")],
     expect(committed={"a": 1})),
    # the first record of an ID wins, by seq, whatever the input order
    ([rec(4, "backup", "a"), rec(2, "backup", "a")], expect(committed={"a": 2})),
    # copies: ok, this system, named target
    ([rec(1, "copy", "a", {"status": "ok", "target": "nas"}), rec(2, "copy", "b", {"status": "failed", "target": "nas"}),
      rec(3, "copy", "c", {"status": "ok", "target": "nas"}, policy="*"),
      rec(4, "copy", "d", {"status": "ok", "target": "nas"}, policy="lis"),
      rec(5, "backup", "e", {"status": "ok", "target": "nas"}),
      rec(6, "copy", "f", {"status": "ok"})],
     expect(committed={"e": 5}, copied={"nas": {"a"}, "": {"f"}})),
    # prunes: planned lists "remove", done lists "removed"; only this system's
    ([rec(1, "prune", LOCAL, {"phase": "planned", "remove": ["a"], "removed": ["x"]}),
      rec(2, "prune", "nas", {"location": "nas", "removed": ["b"], "remove": ["y"]}),
      rec(3, "prune", LOCAL, {"removed": ["c"]}, policy="*"),
      rec(4, "prune", LOCAL, {"removed": ["d"]}, policy="lis")],
     expect(removed={LOCAL: {"a"}, "nas": {"b"}}, pending=[1])),
    # a done prune closes exactly its plan, whatever order the records come in
    ([rec(3, "prune", LOCAL, {"phase": "done", "plan_seq": 2, "removed": []}),
      rec(2, "prune", LOCAL, {"phase": "planned", "remove": []}),
      rec(1, "prune", LOCAL, {"phase": "planned", "remove": []}),
      rec(5, "prune", LOCAL, {"phase": "planned", "remove": []})],
     expect(removed={LOCAL: set()}, pending=[1, 5])),
    # drills: this system's, with a backup_id; the latest by seq
    ([rec(2, "drill", "D2", {"backup_id": "a"}), rec(1, "drill", "D1", {"backup_id": "a"}),
      rec(3, "drill", "D3", {"backup_id": "b"}, policy="*"), rec(4, "drill", "D4", {"backup_id": "c"}, policy="lis"),
      rec(5, "drill", "D5", {}), rec(6, "restore", "R", {"backup_id": "d"})],
     expect(drill={"a": 2})),
    # deep verifies: any policy, rows of this system with a backup_id; the latest wins
    ([rec(1, "verify", LOCAL, {"deep": True, "results": [{"system": "his", "backup_id": "a", "status": "ok"},
                                                          {"system": "his", "backup_id": "", "status": "ok"},
                                                          {"system": "his", "status": "ok"},
                                                          {"system": "lis", "backup_id": "b", "status": "ok"},
                                                          {"backup_id": "c", "status": "ok"}]}, policy="*"),
      rec(2, "verify", LOCAL, {"deep": True, "results": [{"system": "his", "backup_id": "a", "status": "failed"},
                                                          {"system": "his", "backup_id": "d"}]}),
      rec(3, "verify", LOCAL, {"deep": False, "results": [{"system": "his", "backup_id": "e", "status": "ok"}]}),
      rec(4, "restore", LOCAL, {"deep": True, "results": [{"system": "his", "backup_id": "f", "status": "ok"}]})],
     expect(deep={"a": "failed", "d": ""})),
    # holds: this system's; release drops; reason may be missing
    ([rec(1, "hold", "a", {"action": "hold", "reason": "audit"}), rec(2, "hold", "b", {}),
      rec(3, "hold", "c", {"reason": "x"}, policy="*"), rec(4, "hold", "d", {"reason": "x"}, policy="lis"),
      rec(5, "hold", "a", {"action": "release"}), rec(6, "hold", "e", {"action": "release"}),
      rec(7, "hold", "f", {"action": "hold", "reason": "court"}), rec(8, "annotation", "g", {"reason": "x"})],
     expect(holds={"b": "", "f": "court"})),
])
def test_history_folds_exactly(records, folded):
    assert fold(*records) == folded


def test_history_accessors():
    h = history([rec(3, "backup", "a"), rec(1, "backup", "b"), rec(2, "backup", "c"),
                 rec(4, "copy", "a", {"status": "ok", "target": "nas"}), rec(5, "copy", "b", {"status": "ok", "target": "nas"}),
                 rec(6, "prune", "nas", {"location": "nas", "removed": ["b"]}),
                 rec(7, "prune", LOCAL, {"removed": ["c", "zz"]})], "his")
    assert h.system == "his"
    assert h.ordered(["a", "b", "c", "a", "zz"]) == ["b", "c", "a"]
    assert h.ordered([]) == []
    assert h.expected(LOCAL) == {"a", "b"}
    assert h.expected("nas") == {"a"}
    assert h.expected("usb") == set()
    assert h.seq_of("a") == 3 and h.seq_of("zz") is None
    assert h.record_of("c").seq == 2 and h.record_of("zz") is None


def test_history_defaults_are_empty_and_unshared():
    a, b = History("x"), History("y")
    a.holds["k"] = "r"
    assert b.holds == {} and b.committed == {} and b.pending_prunes == [] and b.expected(LOCAL) == set()


def _h(*records):
    return history([rec(1, "backup", "a"), rec(2, "backup", "b"), rec(3, "backup", "c"), *records], "his")


@pytest.mark.parametrize("extra,present,keep", [
    ([], ["a", "b", "c"], {}),
    # the newest by seq with a passing latest drill; a newer failed drill disqualifies a backup
    ([rec(10, "drill", "D1", {"backup_id": "a", "verdict": "passed"}),
      rec(11, "drill", "D2", {"backup_id": "b", "verdict": "passed"}),
      rec(12, "drill", "D3", {"backup_id": "b", "verdict": "failed"})],
     ["a", "b", "c"], {"a": ["newest backup whose latest drill passed (D1)"]}),
    ([rec(10, "drill", "D1", {"backup_id": "a", "verdict": "passed"}),
      rec(11, "drill", "D2", {"backup_id": "c", "verdict": "passed"})],
     ["a", "b", "c"], {"c": ["newest backup whose latest drill passed (D2)"]}),
    # a passing drill of a backup not present at this location does not count, and no older one stands in
    ([rec(10, "drill", "D1", {"backup_id": "c", "verdict": "passed"})], ["a", "b"], {}),
    # deep verify: latest status "ok" only
    ([rec(10, "verify", LOCAL, {"deep": True, "results": [{"system": "his", "backup_id": "a", "status": "ok"},
                                                           {"system": "his", "backup_id": "b", "status": "ok"},
                                                           {"system": "his", "backup_id": "c", "status": "failed"}]})],
     ["a", "b", "c"], {"b": ["newest backup whose latest deep verify passed"]}),
    # holds, oldest first, with and without a reason
    ([rec(10, "hold", "c", {"reason": "audit"}), rec(11, "hold", "a", {})],
     ["a", "b", "c"], {"a": ["on hold"], "c": ["on hold: audit"]}),
    ([rec(10, "hold", "c", {"reason": "audit"})], ["a", "b"], {}),
    # one backup can carry every reason, in order: drill, deep verify, hold
    ([rec(10, "hold", "b", {"reason": "r"}), rec(11, "drill", "D", {"backup_id": "b", "verdict": "passed"}),
      rec(12, "verify", LOCAL, {"deep": True, "results": [{"system": "his", "backup_id": "b", "status": "ok"}]})],
     ["a", "b"], {"b": ["newest backup whose latest drill passed (D)", "newest backup whose latest deep verify passed",
                        "on hold: r"]}),
])
def test_protected_exact(extra, present, keep):
    assert protected(_h(*extra), present) == keep
