"""``backupkit verify``: prove stored backups are intact without restoring them.

Without a key: every manifest signature, and every artifact's size and SHA-256
against its manifest, locally or on a target (``--target``). With ``--deep``:
also decrypt and decompress each stream and check the content SHA-256 (needs
the age identity). Appends one ``verify`` ledger record per run and raises
VerificationFailed naming the first bad backup when any check failed.
"""

from __future__ import annotations

import io
import logging
import random
from dataclasses import dataclass, field

from ..artifact import check_stream_files, read_stream
from ..context import Context
from ..errors import BackupkitError, VerificationFailed
from ..manifest import MANIFEST, SIGNATURE, load_manifest, verify_manifest_bytes
from ..policy import Policy
from ..repository import BackupRef

logger = logging.getLogger(__name__)


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return len(b)


@dataclass
class VerifyReport:
    where: str
    results: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] != "ok"]


def _sample(items: list, n: int | None) -> list:
    return items if not n or n >= len(items) else sorted(random.sample(items, n), key=lambda r: r.backup_id)


def check_local(ctx: Context, ref: BackupRef, *, deep: bool) -> dict:
    """Verify one local backup; return a result row (status ok|failed, detail)."""
    what = f"backup {ref.system}/{ref.backup_id}"
    try:
        m = load_manifest(ref.path, ctx.signer.public, what)
        check_stream_files(ref.path, m["streams"], what)
        if deep:
            for s in m["streams"]:
                with open(ref.path / s["file"], "rb") as f:
                    read_stream(f, _Discard(), ctx.identities, s, what=what, recipient_ids=m["recipients"])
        return {"backup_id": ref.backup_id, "system": ref.system, "status": "ok",
                "detail": "signature, size and SHA-256" + (" and content SHA-256" if deep else "")}
    except VerificationFailed as e:
        return {"backup_id": ref.backup_id, "system": ref.system, "status": "failed", "detail": str(e)}


def verify_local(ctx: Context, policies: list[Policy], *, deep: bool = False, sample: int | None = None) -> VerifyReport:
    report = VerifyReport("local")
    for p in policies:
        for ref in _sample(ctx.repository.backups(p.system), sample):
            report.results.append(check_local(ctx, ref, deep=deep))
    _record(ctx, report, deep=deep)
    return report


def expected_on_target(ctx: Context, policy: Policy, target: str) -> list[str]:
    """Backup IDs that should be on ``target``: every successful copy record, plus local backups of
    policies using it, less what prune removed there."""
    ids = {r.subject for r in ctx.ledger.records(kind="copy", policy=policy.system)
           if r.body.get("target") == target and r.body.get("status") == "ok"}
    if target in policy.targets:
        ids |= {ref.backup_id for ref in ctx.repository.backups(policy.system)}
    pruned = {bid for r in ctx.ledger.records(kind="prune", policy=policy.system)
              if r.body.get("location") == target for bid in r.body.get("removed", [])}
    return sorted(ids - pruned)


def check_remote(ctx: Context, target, system: str, backup_id: str) -> dict:
    what = f"backup {system}/{backup_id} on target {target.name}"
    row = {"backup_id": backup_id, "system": system}
    try:
        base = f"{system}/{backup_id}/"
        if target.stat(base + MANIFEST) is None:
            raise VerificationFailed(f"{what}: missing (no manifest.json); run 'backupkit copy'")
        with target.open_read(base + MANIFEST) as f:
            data = f.read()
        with target.open_read(base + SIGNATURE) as f:
            sig = f.read().decode("ascii", "replace")
        m = verify_manifest_bytes(data, sig, ctx.signer.public, what)
        methods = set()
        for s in m["streams"]:
            size = target.stat(base + s["file"])
            if size is None:
                raise VerificationFailed(f"{what}: {s['file']} is missing")
            if size != s["artifact_bytes"]:
                raise VerificationFailed(f"{what}: {s['file']} is {size} bytes, the manifest says {s['artifact_bytes']}; truncated or corrupt")
            digest, method = target.sha256(base + s["file"])
            methods.add(method)
            if digest != s["artifact_sha256"]:
                raise VerificationFailed(f"{what}: {s['file']} SHA-256 differs from the manifest; the copy is corrupt")
        row.update(status="ok", detail="signature, size and SHA-256", method=sorted(methods))
    except VerificationFailed as e:
        row.update(status="failed", detail=str(e))
    return row


def verify_target(ctx: Context, target_name: str, policies: list[Policy], *, sample: int | None = None) -> VerifyReport:
    report = VerifyReport(target_name)
    with ctx.target(target_name) as target:
        for p in policies:
            ids = expected_on_target(ctx, p, target_name)
            if sample and sample < len(ids):
                ids = sorted(random.sample(ids, sample))
            for bid in ids:
                try:
                    report.results.append(check_remote(ctx, target, p.system, bid))
                except BackupkitError as e:  # connection-level trouble: stop, it applies to every backup
                    _record(ctx, report, deep=False, error=str(e))
                    raise
    _record(ctx, report, deep=False)
    return report


def _record(ctx: Context, report: VerifyReport, *, deep: bool, error: str | None = None) -> None:
    systems = sorted({r["system"] for r in report.results}) or ["*"]
    body = {"where": report.where, "deep": deep, "results": report.results, "operator": ctx.operator,
            "status": "failed" if report.failed or error else "ok"}
    if error:
        body["error"] = error
    ctx.ledger.append(ctx.signer, kind="verify", policy=systems[0] if len(systems) == 1 else "*",
                      subject=report.where, body=body)


def raise_if_failed(report: VerifyReport) -> None:
    if report.failed:
        first = report.failed[0]["detail"]
        more = f" (and {len(report.failed) - 1} more)" if len(report.failed) > 1 else ""
        raise VerificationFailed(first + more)
