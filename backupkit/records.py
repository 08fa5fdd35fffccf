"""Typed views of the ledger record bodies that backupkit reads back.

Writers (actions/backup.py, copy.py, drill.py, verify.py, prune.py, cleanup.py) append plain dicts;
their bytes are signed and must never change. Readers (history, status, evidence, retention) parse a
record with ``body_of`` (or ``CopyRecord.of(record)`` …) and ask typed questions: ``CopyRecord.ok``,
``DrillRecord.passed``, ``VerifyRow.ok``, ``PruneRecord.planned`` instead of comparing strings.

Reading never gets stricter than the dict lookups it replaces, so every ledger ever written still
loads and still verifies:

- models are frozen and keep unknown keys (``extra="allow"``): older and newer bodies load alike;
- every field is optional with the default a missing key always had;
- a value of the wrong type (``strict``: nothing is coerced, ``"false"`` is no bool) is dropped to that
  default, field by field and at the innermost model, instead of failing; list items that are not
  objects are skipped, as the readers always skipped them;
- a body that is not an object reads as an empty body.

So a question asked of a malformed body gets the answer the old ``body.get(...) == "..."`` gave.
"""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Number = Union[int, float]  # strict: an int stays an int (3, not 3.0), a bool is no number

COPY_OK = "ok"
DRILL_PASSED, DRILL_FAILED = "passed", "failed"
VERIFY_OK = "ok"
PRUNE_PLANNED, PRUNE_DONE = "planned", "done"
LOCAL = "local"


class Body(BaseModel):
    """Base of every typed body: frozen, keeps unknown keys, tolerant of malformed values."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)

    @model_validator(mode="wrap")
    @classmethod
    def _tolerant(cls, data: Any, handler):
        if isinstance(data, BaseModel):
            return handler(data)
        if not isinstance(data, dict):
            data = {}
        try:
            return handler(data)
        except ValidationError as e:  # drop what does not fit; the rest of the body still reads
            bad = {err["loc"][0] for err in e.errors() if err["loc"]}
            try:
                return handler({k: v for k, v in data.items() if k not in bad})
            except ValidationError:
                return handler({})

    @classmethod
    def of(cls, record) -> "Body":
        """This model's view of a ledger record's body (whatever the record's kind)."""
        return cls.model_validate(record.body)

    def as_dict(self) -> dict:
        """The body as it was read: the keys it had (unknown ones too), without the defaults."""
        return self.model_dump(exclude_unset=True, by_alias=True)


def _objects(v: Any) -> Any:
    """List items that are not objects are skipped (the readers always did)."""
    return [x for x in v if isinstance(x, (dict, BaseModel))] if isinstance(v, list) else v


class Operator(Body):
    user: str | None = None
    account: str | None = None
    uid: int | None = None
    host: str | None = None


# ---- backup -----------------------------------------------------------------------------------------

class Consistency(Body):
    kind: str | None = None
    time: str | None = None
    lsn: str | None = None


class Stream(Body):
    file: str | None = None
    artifact_sha256: str | None = None
    artifact_bytes: int | None = None


class BackupRecord(Body):
    """``backup``: what reconcile.backup_record_body keeps of the manifest, plus its hash and copies."""

    manifest_sha256: str | None = None
    system: str | None = None
    engine: str | None = None
    server_version: str | None = None
    started: str | None = None
    finished: str | None = None
    consistency: Consistency = Consistency()
    streams: list[Stream] = []
    recipients: list[str] = []
    content_bytes: int | None = None
    artifact_bytes: int | None = None
    fingerprint_mode: str | None = None
    tables: int | None = None
    operator: Operator = Operator()
    copies: list[dict] = []

    _streams = field_validator("streams", "copies", mode="before")(_objects)

    @property
    def recovery_point(self) -> str | None:
        """The consistency time (the instant the backup restores to), else its start."""
        return self.consistency.time or self.started


# ---- copy -------------------------------------------------------------------------------------------

class CopiedFile(Body):
    file: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    verify: str | None = None
    bytes_sent: int | None = None
    resumed_from: int | None = None


class CopyRecord(Body):
    """``copy``: one backup uploaded to one target; written ``ok`` (and verified) or ``failed``."""

    backup_id: str | None = None
    target: str | None = None
    location: str | None = None
    files: list[CopiedFile] = []
    operator: Operator = Operator()
    status: str | None = None
    verified: bool | None = None
    error: str | None = None

    _files = field_validator("files", mode="before")(_objects)

    @property
    def ok(self) -> bool:
        """The copy completed and the target's bytes were verified."""
        return self.status == COPY_OK

    @property
    def bytes(self) -> int:
        return sum(f.bytes or 0 for f in self.files)


# ---- drill ------------------------------------------------------------------------------------------

class DrillCopy(Body):
    location: str | None = None
    target: str | None = None
    path: str | None = None
    key: str | None = None
    describe: str | None = None


class DrillBackup(Body):
    started: str | None = None
    consistency: Consistency = Consistency()
    manifest_sha256: str | None = None
    policy_sha256: str | None = None
    server_version: str | None = None


class Step(Body):
    step: str | None = None
    started: str | None = None
    seconds: Number | None = None
    status: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Check(Body):
    name: str | None = None
    status: str | None = None
    detail: str | None = None
    proves_data: bool | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class Rto(Body):
    tier: str | None = None
    target_seconds: Number | None = None
    measured_seconds: Number | None = None
    met: bool | None = None


class Rpo(Body):
    target_seconds: Number | None = None
    met: bool | None = None
    recovery_point: str | None = None
    age_seconds: Number | None = None
    judged: bool | None = None


class DrillRecord(Body):
    """``drill``: one drill's full record (actions/drill.py), or a killed one's (actions/cleanup.py,
    verdict ``abandoned``)."""

    drill_id: str | None = None
    system: str | None = None
    engine: str | None = None
    started: str | None = None
    finished: str | None = None
    operator: Operator = Operator()
    reviewer: str | None = None
    tier: str | None = None
    fingerprint_mode: str | None = None
    corrective_actions: list = []
    backup_id: str | None = None
    copy_: DrillCopy = Field(DrillCopy(), alias="copy")
    backup: DrillBackup = DrillBackup()
    scratch: dict = {}
    timeline: list[Step] = []
    checks: list[Check] = []
    verdict: str | None = None
    deviations: list = []
    failed_step: str | None = None
    rto: Rto = Rto()
    rpo: Rpo = Rpo()
    teardown: dict = {}
    workdir_removed: bool | None = None

    _lists = field_validator("timeline", "checks", mode="before")(_objects)

    @property
    def copy_used(self) -> DrillCopy:
        """Which copy was drilled (the body's ``copy``; a field cannot be named after BaseModel.copy)."""
        return self.copy_

    @property
    def passed(self) -> bool:
        """The drill restored the backup and every check, the RTO and (when judged) the RPO held."""
        return self.verdict == DRILL_PASSED

    @property
    def failed(self) -> bool:
        """The drill ran to its verdict and failed (not interrupted, not abandoned by a killed run)."""
        return self.verdict == DRILL_FAILED

    @property
    def measured_rto(self) -> Number | None:
        """Seconds from first byte to checked, when the drill got that far."""
        return self.rto.measured_seconds

    @property
    def checks_passed(self) -> int:
        return sum(1 for c in self.checks if c.passed)



# ---- verify -----------------------------------------------------------------------------------------

class VerifyRow(Body):
    backup_id: str | None = None
    system: str | None = None
    status: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == VERIFY_OK


class VerifyRecord(Body):
    """``verify``: one verify run (shallow, or ``deep``: decrypted and fingerprinted) over one place."""

    where: str | None = None
    deep: bool = False
    results: list[VerifyRow] = []
    warnings: list = []
    operator: Operator = Operator()
    status: str | None = None
    error: str | None = None

    _results = field_validator("results", mode="before")(_objects)

    @property
    def ok(self) -> bool:
        return self.status == VERIFY_OK

    def rows_for(self, system: str) -> list[VerifyRow]:
        """The result rows about ``system``."""
        return [r for r in self.results if r.system == system]


# ---- prune ------------------------------------------------------------------------------------------

class PruneRecord(Body):
    """``prune``: a plan (``planned``: what will be removed) and, once done, what was (``done``).
    Records written before phases existed were written after deleting: they read as ``done``."""

    location: str = LOCAL
    phase: str = PRUNE_DONE
    remove: list[str] = []
    removed: list[str] = []
    kept: dict = {}
    plan_seq: int | None = None
    orphans_removed: list[str] = []
    operator: Operator = Operator()

    @property
    def planned(self) -> bool:
        return self.phase == PRUNE_PLANNED

    @property
    def gone(self) -> list[str]:
        """The backup IDs this record takes away from ``location``: planned ones count from the plan."""
        return self.remove if self.planned else self.removed


KINDS: dict[str, type[Body]] = {"backup": BackupRecord, "copy": CopyRecord, "drill": DrillRecord,
                                "verify": VerifyRecord, "prune": PruneRecord}


def body_of(record) -> Body:
    """The typed body of a ledger record (``ledger.Record`` or anything with ``kind`` and ``body``);
    kinds without a model read as a plain ``Body`` that keeps every key."""
    return KINDS.get(record.kind, Body).model_validate(record.body)
