"""Finish or roll back what a killed run left, and record what was done.

Every multi-step operation is recoverable by the next run of the same system
(which holds the system's lock, so the killed run is certainly dead):

- **backup**: staging left by a dead run is removed and recorded ``abandoned``;
  a committed directory with no ``backup`` record (killed between the commit
  rename and the ledger append) is recorded with ``recovered`` set when its
  signed manifest belongs there and its streams check, otherwise moved to
  ``.quarantine/`` and recorded ``abandoned``. It is never silently drillable:
  until reconciled, every reader refuses it (no ledger record).
- **prune**: a ``prune`` record with ``phase: planned`` is written before the
  first deletion and one with ``phase: done`` after the last; a planned prune
  with no done record is finished (the remaining deletions made) and its done
  record written with ``resumed: true``. Local deletions rename the backup
  into ``.trash/`` first, so a half-deleted backup never shows in a listing.
"""

from __future__ import annotations

import hashlib
import logging

from ..context import Context
from ..errors import BackupkitError, VerificationFailed
from ..history import LOCAL, History
from ..manifest import MANIFEST, read_manifest_files, verify_manifest_bytes
from ..policy import Policy
from ..provenance import ledger_history
from ..artifact import check_stream_files
from .cleanup import clean

logger = logging.getLogger(__name__)

RECORD_KEEP = ("tool", "system", "title", "engine", "server_version", "policy", "tier", "rto_seconds", "rpo_seconds",
               "consistency", "started", "finished", "run", "operator", "streams", "content_bytes", "artifact_bytes",
               "recipients", "fingerprint_mode", "retention", "signer")


def backup_record_body(manifest: dict, manifest_bytes: bytes, ref) -> dict:
    body = {"manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()}
    body.update({k: manifest.get(k) for k in RECORD_KEEP})
    body["tables"] = len(manifest.get("fingerprints") or {})
    body["copies"] = [{"location": "local", "path": str(ref.path), "verified": True, "method": "written-and-hashed"}]
    return body


def record_abandoned(ctx: Context, policy: Policy) -> int:
    """Remove staging left by dead runs of this system and record each as ``abandoned``. Caller holds the lock."""
    n = 0
    for path, info in ctx.repository.leftover_staging(policy.system):
        ctx.repository.discard(path)
        ctx.ledger.append(ctx.signer, kind="abandoned", policy=policy.system, subject=info.get("backup_id", path.name),
                          body={"reason": "staging left by an interrupted run (killed or crashed)", "staging": str(path),
                                "run": info, "cleaned_by": ctx.operator})
        logger.warning("system %s: removed staging of interrupted backup %s", policy.system, info.get("backup_id"))
        n += 1
    return n


def reconcile_unrecorded(ctx: Context, policy: Policy, hist: History) -> list[str]:
    """Record or quarantine committed directories the ledger does not know. Caller holds the lock.
    Returns one line per directory handled."""
    done = []
    refs, _ = ctx.repository.scan(policy.system)
    for bid, ref in refs.items():
        if bid in hist.committed:
            continue
        where = f"backup {policy.system}/{bid} in {ref.path.parent}"
        try:
            data, sig = read_manifest_files(ref.path, where)
            m = verify_manifest_bytes(data, sig, ctx.signer.public, where)
            if (m.get("system"), m.get("backup_id")) != (policy.system, bid):
                raise VerificationFailed(f"{where}: holds the manifest of {m.get('system')}/{m.get('backup_id')}")
            check_stream_files(ref.path, m["streams"], where)
        except (VerificationFailed, OSError) as e:
            dest = ctx.repository.quarantine(ref)
            ctx.ledger.append(ctx.signer, kind="abandoned", policy=policy.system, subject=bid, body={
                "reason": f"a directory with no ledger record that is not a genuine backup of this system: {e}",
                "moved_to": str(dest), "cleaned_by": ctx.operator})
            line = f"system {policy.system}: {ref.path} had no ledger record and is not a genuine backup; moved to {dest}"
            logger.warning("%s", line)
            done.append(line)
            continue
        body = backup_record_body(m, data, ref)
        body["recovered"] = {"reason": "committed by a run that was killed before it recorded the backup",
                             "recovered_by": ctx.operator}
        rec = ctx.ledger.append(ctx.signer, kind="backup", policy=policy.system, subject=bid, body=body)
        hist.committed[bid] = rec
        line = f"system {policy.system}: recorded backup {bid}, committed by a killed run, as recovered (seq {rec.seq})"
        logger.warning("%s", line)
        done.append(line)
    return done


def delete_local(ctx: Context, system: str, ids: list[str]) -> list[str]:
    refs, _ = ctx.repository.scan(system)
    gone = []
    for bid in ids:
        if bid in refs:
            ctx.repository.remove(refs[bid])
        gone.append(bid)
    return gone


def delete_remote(target, system: str, ids: list[str]) -> list[str]:
    """Delete backups on a target: the manifest first, so a target never shows a backup whose streams are gone."""
    for bid in ids:
        keys = target.list(f"{system}/{bid}/")
        for key in sorted(keys, key=lambda k: not k.endswith("/" + MANIFEST)):
            target.remove(key)
    return list(ids)


def finish_pending(ctx: Context, policy: Policy, hist: History, location: str, target=None) -> list[str]:
    """Complete prunes of ``location`` a killed run planned but never marked done. Caller holds the lock."""
    lines = []
    for plan in [p for p in hist.pending_prunes if p.body.get("location", LOCAL) == location]:
        ids = plan.body.get("remove", [])
        removed = delete_local(ctx, policy.system, ids) if target is None else delete_remote(target, policy.system, ids)
        ctx.ledger.append(ctx.signer, kind="prune", policy=policy.system, subject=location, body={
            "location": location, "phase": "done", "plan_seq": plan.seq, "removed": removed, "resumed": True,
            "operator": ctx.operator})
        hist.pending_prunes.remove(plan)
        line = f"system {policy.system}: finished the prune of {location} planned in seq {plan.seq} ({len(removed)} backup(s))"
        logger.warning("%s", line)
        lines.append(line)
    return lines


def reconcile(ctx: Context, policy: Policy) -> History:
    """Everything a killed run of ``policy``'s system may have left locally. Caller holds the lock.
    Returns the system's up-to-date History."""
    record_abandoned(ctx, policy)
    try:
        clean(ctx, policy.system)  # work directories of killed drills and restores of this system
    except BackupkitError as e:  # a bad work_dir is the drill's problem: it must not stop backups
        logger.warning("system %s: cannot look for leftovers of killed drills: %s", policy.system, e)
    ctx.repository.empty_trash()
    hist = ledger_history(ctx.ledger, policy.system)
    reconcile_unrecorded(ctx, policy, hist)
    try:
        finish_pending(ctx, policy, hist, LOCAL)
    except (BackupkitError, OSError) as e:
        logger.warning("system %s: could not finish an interrupted prune yet: %s", policy.system, e)
    return hist
