"""``backupkit copy``: put committed backups on their offsite targets.

Given a committed backup and a target name, upload its streams, then the
signature and the manifest (last, so a manifest offsite implies the streams
are there), each verified by hash on the target before it is renamed into
place. Then a ``copy`` ledger record is written, success or failure, and a
snapshot of the ledger itself is copied so the offsite site alone can audit.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from ..artifact import sha256_file
from ..context import Context
from ..errors import BackupkitError, JobFailed
from ..manifest import MANIFEST, SIGNATURE
from ..policy import Policy
from ..repository import BackupRef
from ..targets.base import Blob

logger = logging.getLogger(__name__)

LEDGER_KEY = "_ledger/ledger.db"


def remote_backup_ids(target, system: str) -> list[str]:
    """IDs of the backups of ``system`` that are complete on ``target`` (the manifest is uploaded last)."""
    return sorted({k.split("/")[1] for k in target.list(f"{system}/") if k.endswith("/" + MANIFEST)})


def backup_files(ref: BackupRef, manifest: dict) -> list[tuple[str, Path, str | None]]:
    """(file name, local path, expected sha256 or None) in upload order: streams, signature, manifest."""
    files = [(s["file"], ref.path / s["file"], s["artifact_sha256"]) for s in manifest["streams"]]
    return files + [(SIGNATURE, ref.path / SIGNATURE, None), (MANIFEST, ref.path / MANIFEST, None)]


def copy_backup(ctx: Context, policy: Policy, ref: BackupRef, target_name: str) -> dict:
    """Upload one backup to one target and record the outcome. Raises JobFailed on failure (after recording it)."""
    manifest = json.loads(ref.manifest_path.read_bytes())
    files_done = []
    body = {"backup_id": ref.backup_id, "target": target_name, "files": files_done, "operator": ctx.operator}
    try:
        with ctx.target(target_name) as target:
            body["location"] = target.describe()
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
    with tempfile.TemporaryDirectory(prefix="backupkit-ledger-") as tmp:
        snap = ctx.ledger.snapshot(Path(tmp) / "ledger.db")
        digest, size = sha256_file(snap)
        target.put(LEDGER_KEY, Blob(snap, size, digest))


def copied_ok(ctx: Context, system: str) -> set[tuple[str, str]]:
    """(backup_id, target) pairs with a successful copy record."""
    return {(r.subject, r.body.get("target")) for r in ctx.ledger.records(kind="copy", policy=system)
            if r.body.get("status") == "ok"}


def copy_missing(ctx: Context, policies: list[Policy]) -> tuple[int, list[BackupkitError]]:
    """Copy every local backup that has no successful copy record for one of its policy's targets.

    Returns (number copied, the errors)."""
    done, errors = 0, []
    for policy in policies:
        ok = copied_ok(ctx, policy.system)
        for ref in ctx.repository.backups(policy.system):
            for target in policy.targets:
                if (ref.backup_id, target) in ok:
                    continue
                try:
                    copy_backup(ctx, policy, ref, target)
                    done += 1
                except BackupkitError as e:
                    errors.append(e)
    return done, errors
