"""records: typed views of ledger bodies. Every body a writer produces reads back field for field (same
canonical bytes); the typed questions answer exactly what the old string lookups answered; a body of an
older or newer version, or a malformed one, still reads (never stricter). Pure: no CLI, one real ledger."""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from backupkit.actions.reconcile import backup_record_body
from backupkit.canonical import canonical
from backupkit.ledger import Ledger, Record
from backupkit.records import (KINDS, BackupRecord, Body, Check, CopyRecord, DrillRecord, PruneRecord, Rto, Step,
                               VerifyRecord, VerifyRow, body_of)

GOLDEN = Path(__file__).parent / "golden"
OPERATOR = {"user": "zhang", "account": "backup", "uid": 998, "host": "db1"}

COPY_OK = {"backup_id": "20261101T020000.000Z-aaaaaa", "target": "nas", "operator": OPERATOR,
           "files": [{"file": "data.zst.age", "bytes": 1200, "sha256": "ab" * 32, "verify": "sha256-readback",
                      "bytes_sent": 1200, "resumed_from": None},
                     {"file": "manifest.sig", "bytes": 88, "sha256": "cd" * 32, "verify": "sha256-readback",
                      "bytes_sent": 0, "resumed_from": 88}],
           "location": "sftp://backup@nas/srv/backups", "status": "ok", "verified": True}
COPY_FAILED = {"backup_id": "20261101T020000.000Z-aaaaaa", "target": "nas", "files": [], "operator": OPERATOR,
               "status": "failed", "error": "target nas: connection refused; check the host"}
DRILL = {"drill_id": "D20261101T030000Z-abc123", "system": "his", "engine": "postgres",
         "started": "2026-11-01T03:00:00+00:00", "operator": OPERATOR, "reviewer": "li", "tier": "30m",
         "fingerprint_mode": "full", "corrective_actions": [], "backup_id": "20261101T020000.000Z-aaaaaa",
         "copy": {"location": "target", "target": "nas", "key": "his/x/", "describe": "sftp://nas"},
         "backup": {"started": "2026-11-01T02:00:00+00:00", "consistency": {"kind": "postgres", "lsn": "0/3000060",
                                                                             "time": "2026-11-01T02:00:01+00:00"},
                    "manifest_sha256": "ef" * 32, "policy_sha256": "01" * 32, "server_version": "15.8"},
         "scratch": {"kind": "postgres-cluster", "datadir": "/tmp/x/data", "port": 55432},
         "teardown": {"exists_after_teardown": False, "path": "/tmp/x"},
         "workdir_removed": True,
         "timeline": [{"step": "fetch", "started": "2026-11-01T03:00:00+00:00", "seconds": 0.012, "status": "ok"},
                      {"step": "decrypt_decompress", "seconds": 0.5, "status": "ok", "detail": "inside the restore step"},
                      {"step": "restore", "started": "2026-11-01T03:00:01+00:00", "seconds": 2, "status": "ok"}],
         "checks": [{"name": "table public.patients", "status": "passed", "proves_data": True, "detail": "3 rows"},
                    {"name": "assertion count", "status": "failed", "detail": "0 < 1", "sql": "select 0", "expect": ">= 1"},
                    {"name": "amcheck", "status": "skipped", "proves_data": False, "detail": "not installed"}],
         "rto": {"tier": "30m", "target_seconds": 1800.0, "measured_seconds": 2.5, "met": True},
         "rpo": {"target_seconds": 86400.0, "met": True, "recovery_point": "2026-11-01T02:00:01+00:00",
                 "age_seconds": 3599.0, "judged": True},
         "verdict": "passed", "deviations": [], "failed_step": None, "finished": "2026-11-01T03:00:05+00:00"}
ABANDONED_DRILL = {"drill_id": "D20261101T030000Z-dead00", "system": "his", "verdict": "abandoned", "started": None,
                   "interrupted_process": {"pid": 4242, "process_start": "123", "host": "db1"},
                   "reason": "drill process 4242 died (killed or power loss) and left its work directory",
                   "deviations": ["the drill was killed before it could tear down its scratch and record itself"],
                   "checks": [], "timeline": [], "teardown": {"workdir": "/tmp/x", "workdir_exists": False},
                   "cleaned_by": OPERATOR, "rto": {"measured_seconds": None, "met": None}, "rpo": {"met": None}}
VERIFY = {"where": "local repository /srv/backupkit", "deep": True, "operator": OPERATOR, "status": "failed",
          "results": [{"backup_id": "a", "system": "his", "status": "ok", "detail": "3 tables"},
                      {"backup_id": "b", "system": "his", "status": "missing", "detail": "gone", "fingerprints": 3},
                      {"backup_id": "c", "system": "lis", "status": "ok", "detail": ""}],
          "warnings": ["stray file x"]}
PRUNE_PLANNED = {"location": "local", "phase": "planned", "remove": ["a", "b"], "kept": {"c": ["newest"]},
                 "retention": {"daily": 7, "weekly": 4, "monthly": 12, "yearly": 0}, "operator": OPERATOR}
PRUNE_DONE = {"location": "nas", "phase": "done", "plan_seq": 7, "removed": ["a"], "operator": OPERATOR}
PRUNE_ORPHANS = {"location": "nas", "phase": "done", "removed": [], "orphans_removed": ["z"], "operator": OPERATOR}


def golden_backup_body() -> dict:
    """The backup record body backupkit writes for the committed golden backup (reconcile.backup_record_body)."""
    data = (GOLDEN / "backup" / "manifest.json").read_bytes()
    return backup_record_body(json.loads(data), data, SimpleNamespace(path=Path("/srv/backupkit/his/golden")))


def rec(kind, body, seq=1):
    return Record(seq, "2026-11-01T03:00:00+00:00", kind, "his", "s", body, "", f"h{seq}", "k", "sig")


WRITTEN = [("backup", golden_backup_body()), ("copy", COPY_OK), ("copy", COPY_FAILED), ("drill", DRILL),
           ("drill", ABANDONED_DRILL), ("verify", VERIFY), ("prune", PRUNE_PLANNED), ("prune", PRUNE_DONE),
           ("prune", PRUNE_ORPHANS)]


@pytest.mark.parametrize("kind,body", WRITTEN, ids=[f"{k}-{i}" for i, (k, _) in enumerate(WRITTEN)])
def test_a_written_body_reads_back_to_the_same_canonical_bytes(kind, body):
    typed = body_of(rec(kind, body))
    assert type(typed) is KINDS[kind]
    assert typed.as_dict() == body
    assert canonical(typed.as_dict()) == canonical(body)  # a writer could dump the model: same signed bytes


def test_the_golden_backup_reads_typed():
    b = body_of(rec("backup", golden_backup_body()))
    assert isinstance(b, BackupRecord)
    m = json.loads((GOLDEN / "backup" / "manifest.json").read_text())
    assert b.engine == "sqlite" == m["engine"]
    assert b.manifest_sha256 == hashlib.sha256((GOLDEN / "backup" / "manifest.json").read_bytes()).hexdigest()
    assert [s.artifact_sha256 for s in b.streams] == [s["artifact_sha256"] for s in m["streams"]]
    assert b.recovery_point == (m["consistency"].get("time") or m["started"])
    assert b.tables == len(m["fingerprints"]) > 0
    assert b.copies == [{"location": "local", "path": "/srv/backupkit/his/golden", "verified": True,
                         "method": "written-and-hashed"}]


def test_recovery_point_falls_back_to_the_start():
    assert BackupRecord.model_validate({"started": "s", "consistency": {"kind": "sqlite"}}).recovery_point == "s"
    assert BackupRecord.model_validate({"started": "s", "consistency": {"time": "t"}}).recovery_point == "t"


def test_copy_ok_and_failed():
    ok, failed = CopyRecord.of(rec("copy", COPY_OK)), CopyRecord.of(rec("copy", COPY_FAILED))
    assert ok.ok is True and failed.ok is False
    assert ok.target == failed.target == "nas"
    assert ok.bytes == 1288 and failed.bytes == 0
    assert failed.error.startswith("target nas")
    assert CopyRecord.model_validate({"files": [{"file": "x"}, {"file": "y", "bytes": 5}]}).bytes == 5
    assert CopyRecord.model_validate({}).ok is False  # no status: never an ok copy
    assert CopyRecord.model_validate({"status": "OK"}).ok is False


def test_drill_properties():
    d = body_of(rec("drill", DRILL))
    assert isinstance(d, DrillRecord)
    assert d.passed is True and d.failed is False
    assert d.measured_rto == 2.5 and d.rto.met is True and d.rpo.judged is True
    assert d.checks_passed == 1
    assert [c.passed for c in d.checks] == [True, False, False]
    assert [s.ok for s in d.timeline] == [True, True, True]
    assert d.copy_used.target == "nas" and d.copy_used.location == "target"
    assert d.backup.consistency.lsn == "0/3000060"
    assert d.operator.user == "zhang"
    failed = DrillRecord.model_validate({**DRILL, "verdict": "failed"})
    assert failed.passed is False and failed.failed is True
    for verdict in ("interrupted", "abandoned", None, "PASSED"):
        v = DrillRecord.model_validate({**DRILL, "verdict": verdict})
        assert (v.passed, v.failed) == (False, False), verdict


def test_abandoned_drill_reads():
    d = body_of(rec("drill", ABANDONED_DRILL))
    assert (d.passed, d.failed, d.measured_rto, d.backup_id, d.checks_passed) == (False, False, None, None, 0)
    assert d.model_extra["reason"].startswith("drill process 4242")
    assert d.teardown == {"workdir": "/tmp/x", "workdir_exists": False}


def test_step_and_check_and_row():
    assert Step.model_validate({"status": "ok"}).ok and not Step.model_validate({"status": "failed"}).ok
    assert Check.model_validate({"status": "passed"}).passed and not Check.model_validate({"status": "waived"}).passed
    assert VerifyRow.model_validate({"status": "ok"}).ok and not VerifyRow.model_validate({"status": "corrupt"}).ok


def test_verify_rows_for_a_system():
    v = body_of(rec("verify", VERIFY))
    assert isinstance(v, VerifyRecord)
    assert v.deep is True and v.ok is False
    assert [(r.backup_id, r.ok) for r in v.rows_for("his")] == [("a", True), ("b", False)]
    assert [r.backup_id for r in v.rows_for("lis")] == ["c"]
    assert v.rows_for("ris") == []
    assert v.rows_for("his")[1].as_dict() == VERIFY["results"][1]  # unknown row keys kept
    assert VerifyRecord.model_validate({"status": "ok"}).ok
    assert VerifyRecord.model_validate({}).deep is False  # a shallow verify unless it says deep


def test_prune_phases():
    planned, done = PruneRecord.of(rec("prune", PRUNE_PLANNED)), PruneRecord.of(rec("prune", PRUNE_DONE))
    assert (planned.planned, planned.gone, planned.location) == (True, ["a", "b"], "local")
    assert (done.planned, done.gone, done.location, done.plan_seq) == (False, ["a"], "nas", 7)
    old = PruneRecord.model_validate({"removed": ["x"], "remove": ["y"]})  # before phases: written after deleting
    assert (old.phase, old.planned, old.gone, old.location) == ("done", False, ["x"], "local")
    assert PruneRecord.of(rec("prune", PRUNE_ORPHANS)).orphans_removed == ["z"]


def test_unknown_kinds_and_future_keys_still_load():
    b = body_of(rec("review", {"type": "drill_review", "verdict": "accepted"}))
    assert type(b) is Body and b.model_extra == {"type": "drill_review", "verdict": "accepted"}
    future = {**COPY_OK, "status": "ok", "checksum_algorithm": "blake3", "files": COPY_OK["files"] + ["odd"]}
    c = CopyRecord.model_validate(future)
    assert c.ok and c.model_extra == {"checksum_algorithm": "blake3"} and len(c.files) == 2


def test_models_are_frozen():
    c = CopyRecord.model_validate(COPY_OK)
    with pytest.raises(ValidationError):
        c.status = "failed"
    assert c.ok


@pytest.mark.parametrize("body", [None, [], "ok", 3])
def test_a_body_that_is_no_object_reads_empty(body):
    assert CopyRecord.model_validate(body).ok is False
    d = DrillRecord.model_validate(body)
    assert (d.passed, d.measured_rto, d.checks) == (False, None, [])
    assert PruneRecord.model_validate(body).gone == []


def test_malformed_values_fall_back_field_by_field():
    # strict: nothing is coerced; a wrong value reads as missing, and only that value
    d = DrillRecord.model_validate({**DRILL, "rto": {"measured_seconds": "12", "met": True, "tier": "30m"},
                                    "checks": [{"status": "passed", "proves_data": "yes"}, "junk", 5],
                                    "timeline": "not a list", "copy": "local"})
    assert d.passed is True  # the verdict is still read
    assert d.rto.measured_seconds is None and d.rto.met is True and d.rto.tier == "30m"
    assert d.measured_rto is None
    assert [(c.status, c.proves_data) for c in d.checks] == [("passed", None)]
    assert d.timeline == [] and d.copy_used.location is None
    assert d.backup_id == DRILL["backup_id"]
    assert Rto.model_validate({"measured_seconds": True}).measured_seconds is None  # a bool is no number
    assert Rto.model_validate({"measured_seconds": 3}).measured_seconds == 3
    assert type(Rto.model_validate({"measured_seconds": 3}).measured_seconds) is int  # 3, not 3.0
    assert VerifyRecord.model_validate({"deep": "yes"}).deep is False
    assert CopyRecord.model_validate({"status": 1, "target": "nas"}).target == "nas"
    assert CopyRecord.model_validate({"status": 1, "target": "nas"}).ok is False
    assert CopyRecord.model_validate({"status": "ok", "target": ["nas"]}).ok is True
    p = PruneRecord.model_validate({"phase": "planned", "remove": ["a", 1], "location": 5})
    assert (p.planned, p.gone, p.location) == (True, [], "local")


def test_a_real_ledger_reads_back_typed(tmp_path, signer):
    ledger = Ledger(tmp_path / "ledger.db")
    for kind, body in WRITTEN:
        ledger.append(signer, kind=kind, policy="his", subject="s", body=body)
    read = list(ledger.records(policy="his"))
    assert [r.kind for r in read] == [k for k, _ in WRITTEN]
    typed = [body_of(r) for r in read]
    assert [t.as_dict() for t in typed] == [b for _, b in WRITTEN]
    assert [getattr(t, "ok", None) for t in typed if isinstance(t, CopyRecord)] == [True, False]
    assert [t.passed for t in typed if isinstance(t, DrillRecord)] == [True, False]
    assert [t.planned for t in typed if isinstance(t, PruneRecord)] == [True, False, False]
