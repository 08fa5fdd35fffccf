"""``backupkit verify``: prove stored backups are intact without restoring them.

Without a key: every manifest signature and its binding to its location and
ledger record (provenance.py), and every artifact's size and SHA-256 against
its manifest, locally or on a target (``--target``). Completeness too: every
backup the ledger says should be there (committed or copied, not pruned) must
be, or it is reported ``missing``. With ``--deep``:
also decrypt and decompress each stream and check the content SHA-256 (needs
the age identity). Appends one ``verify`` ledger record per run and raises
VerificationFailed naming the first bad backup when any check failed.
"""

from __future__ import annotations

import io
import logging
import random
from dataclasses import dataclass, field

from ..artifact import read_stream, stream_file_name
from ..context import Context
from ..errors import BackupkitError, VerificationFailed
from ..files import open_regular
from ..history import LOCAL, History
from ..manifest import MANIFEST
from ..policy import Policy
from ..provenance import check_local as provenance_check_local
from ..provenance import history_with_target, ledger_history, load_bound_remote, remote_listing, target_ledger
from ..repository import BackupRef
from .reconcile import reconcile

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
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] != "ok"]


def _sample(items: list, n: int | None) -> list:
    return items if not n or n >= len(items) else [i for i in items if i in set(random.sample(items, n))]


def _row(system: str, backup_id: str, status: str, detail: str, **extra) -> dict:
    return {"backup_id": backup_id, "system": system, "status": status, "detail": detail, **extra}


def check_local(ctx: Context, hist: History, ref: BackupRef, *, deep: bool) -> dict:
    """Verify one local backup; return a result row (status ok|failed, detail)."""
    try:
        m = provenance_check_local(ctx.signer.public, hist, ref)
        if deep:
            what = f"backup {ref.system}/{ref.backup_id}"
            for s in m["streams"]:
                with open_regular(ref.path / s["file"], what) as f:
                    read_stream(f, _Discard(), ctx.identities, s, what=what, recipient_ids=m["recipients"])
        return _row(ref.system, ref.backup_id, "ok",
                    "signature, ledger binding, size and SHA-256" + (" and content SHA-256" if deep else ""))
    except VerificationFailed as e:
        return _row(ref.system, ref.backup_id, "failed", str(e))


def missing_rows(system: str, where: str, missing: set[str], hint: str) -> list[dict]:
    return [_row(system, bid, "missing", f"backup {system}/{bid} is missing {where}: the ledger says it should be "
                 f"there (committed, not pruned); {hint}") for bid in sorted(missing)]


def verify_local(ctx: Context, policies: list[Policy], *, deep: bool = False, sample: int | None = None) -> VerifyReport:
    report = VerifyReport("local")
    for p in policies:
        with ctx.repository.lock(p.system, ctx.config.lock_timeout):
            hist = reconcile(ctx, p)
        refs, warnings = ctx.repository.scan(p.system)
        report.warnings += warnings
        report.results += missing_rows(p.system, f"from {ctx.repository.root}", hist.expected(LOCAL) - set(refs),
                                       "it was deleted outside backupkit: restore it from an offsite copy")
        for bid in _sample(hist.ordered(refs), sample):
            report.results.append(check_local(ctx, hist, refs[bid], deep=deep))
    _record(ctx, report, deep=deep)
    return report


def check_remote(ctx: Context, target, hist: History, system: str, backup_id: str) -> dict:
    what = f"backup {system}/{backup_id} on target {target.name}"
    row = {"backup_id": backup_id, "system": system}
    try:
        base = f"{system}/{backup_id}/"
        if target.stat(base + MANIFEST) is None:
            raise VerificationFailed(f"{what}: missing (no manifest.json); run 'backupkit copy'")
        m, _ = load_bound_remote(target, ctx.signer.public, hist, system, backup_id)
        methods = set()
        for s in m["streams"]:
            name = stream_file_name(s, what)
            size = target.stat(base + name)
            if size is None:
                raise VerificationFailed(f"{what}: {name} is missing")
            if size != s["artifact_bytes"]:
                raise VerificationFailed(f"{what}: {name} is {size} bytes, the manifest says {s['artifact_bytes']}; truncated or corrupt")
            digest, method = target.sha256(base + name)
            methods.add(method)
            if digest != s["artifact_sha256"]:
                raise VerificationFailed(f"{what}: {name} SHA-256 differs from the manifest; the copy is corrupt")
        row.update(status="ok", detail="signature, ledger binding, size and SHA-256", method=sorted(methods))
    except VerificationFailed as e:
        row.update(status="failed", detail=str(e))
    return row


def verify_target(ctx: Context, target_name: str, policies: list[Policy], *, sample: int | None = None) -> VerifyReport:
    report = VerifyReport(target_name)
    with ctx.target(target_name) as target:
        try:
            with target_ledger(target, ctx.signer.public) as snap:
                for p in policies:
                    hist = history_with_target(ledger_history(ctx.ledger, p.system), snap)
                    complete, partial, warnings = remote_listing(target, p.system)
                    report.warnings += warnings + [
                        f"target {target_name}: {p.system}/{bid} has files but no manifest (an unfinished copy); "
                        "'backupkit copy' resumes it, 'backupkit prune' removes it if it is not needed"
                        for bid in partial]
                    report.results += missing_rows(p.system, f"on target {target_name}",
                                                   hist.expected(target_name) - set(complete),
                                                   "run 'backupkit copy' to copy it again")
                    for bid in _sample(hist.ordered(complete), sample):
                        report.results.append(check_remote(ctx, target, hist, p.system, bid))
                    for bid in sorted(set(complete) - set(hist.committed)):
                        report.results.append(_row(p.system, bid, "failed",
                                                   f"backup {p.system}/{bid} on target {target_name}: the ledger has no "
                                                   "backup record of it; it was not put there by backupkit"))
        except BackupkitError as e:  # connection-level trouble: stop, it applies to every backup
            if isinstance(e, VerificationFailed):
                report.results.append(_row("*", "-", "failed", str(e)))
            else:
                _record(ctx, report, deep=False, error=str(e))
                raise
    _record(ctx, report, deep=False)
    return report


def _record(ctx: Context, report: VerifyReport, *, deep: bool, error: str | None = None) -> None:
    systems = sorted({r["system"] for r in report.results}) or ["*"]
    body = {"where": report.where, "deep": deep, "results": report.results, "warnings": report.warnings,
            "operator": ctx.operator,
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
