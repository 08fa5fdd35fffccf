"""``backupkit prune``: delete backups retention no longer keeps, locally and on targets.

Each location is planned on its own listing, ordered by ledger sequence: a
backup is deleted offsite only when retention says so for the offsite copies,
never because the local copy is gone. Whatever the counts say, a location
keeps its newest backup, its newest backup whose latest drill passed, its
newest backup whose latest deep verify passed, and every backup on hold.

Crash-safe (reconcile.py): a ``prune`` record with ``phase: planned`` lists
what will go before the first deletion, one with ``phase: done`` follows the
last, and the next run finishes a plan a killed run left. The system's lock
is held throughout, so prune and copy of one system never interleave.
"""

from __future__ import annotations

import logging

from ..context import Context
from ..engines import engine_for
from ..engines.base import keeps_native
from ..errors import BackupkitError
from ..failpoint import failpoint
from ..history import LOCAL, History, protected
from ..policy import Policy
from ..provenance import ledger_history, load_bound, remote_listing
from ..retention import PrunePlan, backup_time, plan_prune
from .reconcile import delete_local, delete_remote, finish_pending, reconcile

logger = logging.getLogger(__name__)


def _plan(policy: Policy, hist: History, present) -> PrunePlan:
    r = policy.retention
    ids = hist.ordered(present)
    return plan_prune([(i, backup_time(i)) for i in ids], daily=r.daily, weekly=r.weekly, monthly=r.monthly,
                      yearly=r.yearly, protect=protected(hist, ids))


def _execute(ctx: Context, policy: Policy, where: str, plan: PrunePlan, delete) -> None:
    planned = ctx.ledger.append(ctx.signer, kind="prune", policy=policy.system, subject=where, body={
        "location": where, "phase": "planned", "remove": plan.remove, "kept": plan.keep,
        "retention": policy.retention.model_dump(by_alias=True), "operator": ctx.operator})
    failpoint("prune-after-plan")
    removed = []
    for bid in plan.remove:
        removed += delete([bid])
        failpoint("prune-mid-delete")
    ctx.ledger.append(ctx.signer, kind="prune", policy=policy.system, subject=where, body={
        "location": where, "phase": "done", "plan_seq": planned.seq, "removed": removed, "operator": ctx.operator})
    logger.info("system %s: pruned %d backup(s) on %s", policy.system, len(removed), where)


def prune(ctx: Context, policies: list[Policy], *, dry_run: bool = False) -> tuple[list[dict], list[BackupkitError]]:
    """Return (one summary per system and location, errors)."""
    summaries, errors = [], []
    for policy in policies:
        try:
            with ctx.repository.lock(policy.system, ctx.config.lock_timeout):
                summaries += _prune_system(ctx, policy, dry_run, errors)
        except BackupkitError as e:
            errors.append(e)
    return summaries, errors


def _prune_system(ctx: Context, policy: Policy, dry_run: bool, errors: list) -> list[dict]:
    out = []
    hist = ledger_history(ctx.ledger, policy.system) if dry_run else reconcile(ctx, policy)
    refs, warnings = ctx.repository.scan(policy.system)
    plan = _plan(policy, hist, refs)
    engine = engine_for(policy)
    native = _native_manifests(ctx, hist, plan, refs, errors) if keeps_native(engine) else None
    if not dry_run and plan.remove:
        _execute(ctx, policy, LOCAL, plan, lambda ids: delete_local(ctx, policy.system, ids))
    out.append(_summary(policy, LOCAL, plan, dry_run, warnings))
    if native is not None:
        out += _prune_native(ctx, policy, engine, native, dry_run, errors)
    for target_name in policy.targets:
        try:
            with ctx.target(target_name) as target:
                if not dry_run:
                    finish_pending(ctx, policy, hist, target_name, target)
                complete, partial, warnings = remote_listing(target, policy.system)
                # only complete copies count: an unfinished newer copy must not push out the last good one
                plan = _plan(policy, hist, complete)
                # files of a copy that was cut off, for a backup no longer here to resume from, or already pruned
                orphans = [b for b in partial if b not in refs or b in hist.removed.get(target_name, set())]
                if not dry_run:
                    if plan.remove:
                        _execute(ctx, policy, target_name, plan, lambda ids: delete_remote(target, policy.system, ids))
                    if orphans:
                        delete_remote(target, policy.system, orphans)
                        ctx.ledger.append(ctx.signer, kind="prune", policy=policy.system, subject=target_name, body={
                            "location": target_name, "phase": "done", "removed": [], "orphans_removed": orphans,
                            "operator": ctx.operator})
                summary = _summary(policy, target_name, plan, dry_run, warnings)
                summary["orphans"] = orphans
                out.append(summary)
        except BackupkitError as e:
            errors.append(e)
    return out


def _native_manifests(ctx: Context, hist: History, plan: PrunePlan, refs, errors: list) -> tuple[list, list] | None:
    """The manifests (signature and ledger binding checked) of the local backups kept and removed (None if
    one does not check: then nothing of the engine's own is removed this run)."""
    out: tuple[list, list] = ([], [])
    for ids, into in ((plan.keep, out[0]), (plan.remove, out[1])):
        for bid in ids:
            if bid not in refs:
                continue
            try:
                ref = refs[bid]
                into.append(load_bound(ref.path, ctx.signer.public, hist, ref.system, bid,
                                       f"backup {ref.system}/{bid} (pgBackRest retention)")[0])
            except BackupkitError as e:
                errors.append(e)
                return None
    return out


def _prune_native(ctx: Context, policy: Policy, engine, manifests: tuple[list, list], dry_run: bool,
                  errors: list) -> list[dict]:
    """What the engine's own tool keeps for backups retention removed (pgBackRest sets), never what a kept
    backup needs; one ledger record per run that removed something."""
    try:
        res = engine.prune_native(policy=policy, keep=manifests[0], drop=manifests[1], dry_run=dry_run)
    except BackupkitError as e:
        errors.append(e)
        return []
    if res is None:
        return []
    if res["removed"] and not dry_run:
        ctx.ledger.append(ctx.signer, kind="prune", policy=policy.system, subject=res["location"], body={
            "location": res["location"], "phase": "done", "removed": res["removed"], "kept": sorted(res["kept"]),
            "warnings": res["warnings"], "operator": ctx.operator})
    for w in res["warnings"]:
        logger.warning("system %s: %s", policy.system, w)
    return [{"system": policy.system, "location": res["location"], "removed": res["removed"], "kept": res["kept"],
             "dry_run": dry_run, "warnings": res["warnings"]}]


def _summary(policy: Policy, where: str, plan: PrunePlan, dry_run: bool, warnings: list[str]) -> dict:
    return {"system": policy.system, "location": where, "removed": plan.remove, "kept": plan.keep,
            "dry_run": dry_run, "warnings": warnings}
