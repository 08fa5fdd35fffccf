"""``backupkit backup``: dump, compress, encrypt, hash, commit, record, copy offsite.

Given policies, run each one's backup under its lock, commit it atomically
into the repository, append a ``backup`` ledger record, then copy it to the
policy's targets (``copy`` records). Returns one outcome per system.
"""

from __future__ import annotations

import io
import logging
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .. import FORMAT_VERSION, progress
from ..artifact import DirectorySink
from ..context import Context
from ..engines import engine_for
from ..errors import BackupkitError, JobFailed
from ..manifest import write_manifest
from ..policy import Policy
from ..repository import new_backup_id
from ..evidence import policystore
from ..failpoint import failpoint
from ..keyed import KEY_STREAM, encode_key, keyed, manifest_note, new_key
from .copy import copy_backup
from .reconcile import backup_record_body, reconcile

logger = logging.getLogger(__name__)


@dataclass
class BackupOutcome:
    system: str
    backup_id: str | None = None
    ok: bool = False
    error: BackupkitError | None = None
    copies_ok: bool = True
    copy_errors: list[BackupkitError] = field(default_factory=list)
    artifact_bytes: int = 0
    seconds: float = 0.0


class _Terminated(BaseException):
    """Raised from SIGTERM/SIGHUP so a stopped run cleans its staging like an error would."""


_received: list[int] = []  # signals received during the current backup (pyrage may wrap the exception)


def _raise_terminated(signum, frame):
    _received.append(signum)
    raise _Terminated(f"received signal {signum}")


def build_manifest(ctx: Context, policy: Policy, *, backup_id: str, result, streams, started: datetime,
                   finished: datetime, trigger: str, planned: str | None, fp_key: bytes) -> dict:
    return {
        "format": FORMAT_VERSION,
        "tool": ctx.tool,
        "backup_id": backup_id,
        "system": policy.system,
        "title": policy.title,
        "engine": policy.engine,
        "server_version": result.server_version,
        "policy": {"id": policy.system, "sha256": policy.content_sha256,
                   "file": policy.file.name if policy.file else None},
        "tier": policy.tier_label,
        "rto_seconds": policy.tier.total_seconds(),
        "rpo_seconds": policy.rpo.total_seconds(),
        "consistency": result.consistency,
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "run": {"trigger": trigger, "planned": planned},
        "operator": ctx.operator,
        "streams": [s.__dict__ for s in streams],
        "content_bytes": sum(s.content_bytes for s in streams),
        "artifact_bytes": sum(s.artifact_bytes for s in streams),
        "recipients": [r.id for r in ctx.recipients],
        "fingerprint_mode": policy.drill.fingerprint,
        "fingerprints": keyed(result.fingerprints, fp_key),
        "fingerprint_key": manifest_note(),
        "details": result.details,
        "retention": {"class": policy.retention.retention_class},
        "signer": ctx.signer.id,
    }


def backup_one(ctx: Context, policy: Policy, *, trigger: str = "manual", planned: str | None = None,
               copy: bool = True) -> BackupOutcome:
    """Given one policy, back it up and copy it offsite; never raises for job failures."""
    out = BackupOutcome(policy.system)
    t0 = time.monotonic()
    try:
        ref, manifest = _backup_committed(ctx, policy, trigger=trigger, planned=planned)
        out.backup_id, out.ok, out.artifact_bytes = ref.backup_id, True, manifest["artifact_bytes"]
    except BackupkitError as e:
        out.error = e
        out.seconds = time.monotonic() - t0
        return out
    if copy and policy.targets:
        try:
            with ctx.repository.lock(policy.system, ctx.config.lock_timeout):  # prune and copy exclude each other
                for target in policy.targets:
                    try:
                        copy_backup(ctx, policy, ref, target)
                    except BackupkitError as e:
                        out.copies_ok = False
                        out.copy_errors.append(e)
        except BackupkitError as e:
            out.copies_ok = False
            out.copy_errors.append(e)
    out.seconds = time.monotonic() - t0
    return out


def _backup_committed(ctx: Context, policy: Policy, *, trigger: str, planned: str | None):
    engine = engine_for(policy)
    recipients, signer = ctx.recipients, ctx.signer  # fail on key problems before touching anything
    repo = ctx.repository
    _received.clear()
    previous = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with repo.lock(policy.system, ctx.config.lock_timeout):
            reconcile(ctx, policy)
            started = datetime.now(timezone.utc)
            backup_id = new_backup_id(started)
            staging = repo.new_staging(policy.system, backup_id, operator=ctx.operator["user"])
            try:
                sink = DirectorySink(staging, recipients, level=policy.backup.compression_level,
                                     threads=policy.backup.threads,
                                     long_distance=engine.long_distance if policy.backup.long_distance is None
                                     else policy.backup.long_distance)
                logger.info("system %s: dumping %s", policy.system, engine.describe_source(policy))
                with progress.task(f"{policy.system} backup") as advance:
                    sink.on_bytes = advance
                    result = engine.dump(policy=policy, sink=sink)
                finished = datetime.now(timezone.utc)
                fp_key = new_key()  # keyed fingerprints: the key travels only inside the encrypted artifact
                sink.write_stream(KEY_STREAM, io.BytesIO(encode_key(fp_key)))
                manifest = build_manifest(ctx, policy, backup_id=backup_id, result=result, streams=sink.streams,
                                          started=started, finished=finished, trigger=trigger, planned=planned,
                                          fp_key=fp_key)
                manifest_bytes = write_manifest(staging, manifest, signer)
                failpoint("backup-before-commit")
                ref = repo.commit(staging, policy.system, backup_id)
                failpoint("backup-after-commit")
            except OSError as e:
                repo.discard(staging)
                _record_failure(ctx, policy, backup_id, f"I/O error: {e.strerror or e} ({e.filename or ''})")
                raise JobFailed(
                    f"system {policy.system}: backup failed writing to {repo.root}: {e.strerror or e}; "
                    "check free space and permissions, nothing was recorded as good"
                ) from None
            except (BackupkitError, _Terminated, KeyboardInterrupt) as e:
                repo.discard(staging)
                _record_failure(ctx, policy, backup_id, str(e))
                if isinstance(e, BackupkitError) and not _received:
                    raise
                why = f"signal {_received[0]}" if _received else type(e).__name__
                raise JobFailed(f"system {policy.system}: backup interrupted ({why}); nothing was recorded") from None
            ctx.ledger.append(signer, kind="backup", policy=policy.system, subject=backup_id,
                              body=backup_record_body(manifest, manifest_bytes, ref))
            try:  # the policy version this backup cites, for the evidence bundle (evidence/policystore.py)
                policystore.remember(ctx.config.ledger, [policy])
            except OSError as e:
                logger.warning("system %s: could not keep a copy of policy version %s: %s", policy.system,
                               policy.content_sha256[:12], e)
            logger.info("system %s: backup %s committed (%d bytes)", policy.system, backup_id, manifest["artifact_bytes"])
            return ref, manifest
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _record_failure(ctx: Context, policy: Policy, backup_id: str, reason: str) -> None:
    try:
        ctx.ledger.append(ctx.signer, kind="abandoned", policy=policy.system, subject=backup_id,
                          body={"reason": reason, "operator": ctx.operator})
    except Exception:  # the original failure matters more than recording it
        logger.exception("could not record the failed backup of %s", policy.system)
