"""``backupkit copy``: put committed backups on their offsite targets.

Given a committed backup and a target name, first check the target's signed
ledger head against the local ledger (a copy never overwrites a longer or
diverging history: anchor.py), and the backup's manifest against its ledger
record (provenance.py). Then upload its streams, then the signature and the
manifest (last, so a manifest offsite implies the streams are there), each
verified by hash on the target before it is renamed into place, then a
snapshot of the ledger and its signed head, so the offsite site alone can
drill and audit. A ``copy`` ledger record is written, success or failure.
Callers hold the system's lock: copy and prune of one system exclude each other.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ..artifact import sha256_file
from ..context import Context
from ..errors import BackupkitError, JobFailed
from ..manifest import MANIFEST, SIGNATURE
from ..policy import Policy
from ..repository import BackupRef
from ..anchor import HEAD_KEY, LEDGER_KEY, check_head, head_line, parse_head
from ..failpoint import failpoint
from ..history import History
from ..ledger import snapshot_head
from ..provenance import ledger_history, load_bound, remote_listing
from ..targets.base import Blob
from .reconcile import reconcile

logger = logging.getLogger(__name__)


def remote_backup_ids(target, system: str) -> list[str]:
    """IDs of the backups of ``system`` that are complete on ``target`` (the manifest is uploaded last)."""
    return remote_listing(target, system)[0]


def check_target_head(ctx: Context, target) -> None:
    """Raise VerificationFailed when the target's signed ledger head is not contained in the local ledger."""
    if target.stat(HEAD_KEY) is None:
        return
    with target.open_read(HEAD_KEY) as f:
        line = f.read(4096)
    head = parse_head(line, ctx.signer.public, f"target {target.name} {HEAD_KEY}")
    check_head(ctx.ledger, head, f"target {target.name}")


def backup_files(ref: BackupRef, manifest: dict) -> list[tuple[str, Path, str | None]]:
    """(file name, local path, expected sha256 or None) in upload order: streams, signature, manifest."""
    files = [(s["file"], ref.path / s["file"], s["artifact_sha256"]) for s in manifest["streams"]]
    return files + [(SIGNATURE, ref.path / SIGNATURE, None), (MANIFEST, ref.path / MANIFEST, None)]


def copy_backup(ctx: Context, policy: Policy, ref: BackupRef, target_name: str, hist: History | None = None) -> dict:
    """Upload one backup to one target and record the outcome. Raises JobFailed on failure (after recording it)."""
    files_done = []
    body = {"backup_id": ref.backup_id, "target": target_name, "files": files_done, "operator": ctx.operator}
    try:
        hist = hist or ledger_history(ctx.ledger, policy.system)
        manifest, _ = load_bound(ref.path, ctx.signer.public, hist, ref.system, ref.backup_id,
                                 f"backup {ref.system}/{ref.backup_id} in {ref.path.parent}")
        with ctx.target(target_name) as target:
            body["location"] = target.describe()
            check_target_head(ctx, target)
            for name, path, expected in backup_files(ref, manifest):
                digest, size = sha256_file(path)
                if expected is not None and digest != expected:
                    raise JobFailed(f"backup {ref.system}/{ref.backup_id}: local {name} no longer matches its manifest;"
                                    " run 'backupkit verify' before copying")
                res = target.put(f"{ref.system}/{ref.backup_id}/{name}", Blob(path, size, digest))
                files_done.append({"file": name, "bytes": res.size, "sha256": res.sha256, "verify": res.verify_method,
                                   "bytes_sent": res.bytes_sent, "resumed_from": res.resumed_from})
            _copy_ledger(ctx, target)
    except BackupkitError as e:
        body.update(status="failed", error=str(e))
        ctx.ledger.append(ctx.signer, kind="copy", policy=policy.system, subject=ref.backup_id, body=body)
        raise
    body["status"] = "ok"
    body["verified"] = True
    ctx.ledger.append(ctx.signer, kind="copy", policy=policy.system, subject=ref.backup_id, body=body)
    logger.info("system %s: backup %s copied to %s", policy.system, ref.backup_id, target_name)
    return body


def _copy_ledger(ctx: Context, target) -> None:
    """Put the ledger snapshot, then its signed head, on the target, never over a longer history."""
    check_target_head(ctx, target)  # again: another host may have copied since we started
    with tempfile.TemporaryDirectory(prefix="backupkit-ledger-") as tmp:
        snap = ctx.ledger.snapshot(Path(tmp) / "ledger.db")
        line = head_line(*snapshot_head(snap), ctx.signer)
        digest, size = sha256_file(snap)
        target.put(LEDGER_KEY, Blob(snap, size, digest))
        failpoint("copy-after-ledger-snapshot")
        head = Path(tmp) / "head"
        head.write_text(line + "\n")
        digest, size = sha256_file(head)
        target.put(HEAD_KEY, Blob(head, size, digest))


def copy_missing(ctx: Context, policies: list[Policy]) -> tuple[int, list[BackupkitError]]:
    """Copy every local backup that has no successful copy record for one of its policy's targets
    (and that retention has not removed there). Returns (number copied, the errors)."""
    done, errors = 0, []
    for policy in policies:
        if not policy.targets:
            continue
        try:
            with ctx.repository.lock(policy.system, ctx.config.lock_timeout):
                hist = reconcile(ctx, policy)
                refs, _ = ctx.repository.scan(policy.system)
                for bid in hist.ordered(refs):
                    for target in policy.targets:
                        if bid in hist.copied.get(target, set()) or bid in hist.removed.get(target, set()):
                            continue
                        try:
                            copy_backup(ctx, policy, refs[bid], target, hist)
                            done += 1
                        except BackupkitError as e:
                            errors.append(e)
        except BackupkitError as e:
            errors.append(e)
    return done, errors
