"""``backupkit prune``: delete backups retention no longer keeps, locally and on targets.

Each location is planned on its own listing: a backup is deleted offsite only
when retention says so for the offsite copies, never because the local copy is
gone. One ``prune`` ledger record per system and location lists what was
removed and why the rest was kept.
"""

from __future__ import annotations

import logging
import shutil

from ..context import Context
from ..errors import BackupkitError
from ..policy import Policy
from ..retention import backup_time, plan_prune
from .copy import remote_backup_ids

logger = logging.getLogger(__name__)


def _plan(policy: Policy, ids: list[str]):
    r = policy.retention
    return plan_prune([(i, backup_time(i)) for i in ids], daily=r.daily, weekly=r.weekly, monthly=r.monthly,
                      yearly=r.yearly)


def prune(ctx: Context, policies: list[Policy], *, dry_run: bool = False) -> tuple[list[dict], list[BackupkitError]]:
    """Return (one summary per system and location, errors)."""
    summaries, errors = [], []
    for policy in policies:
        with ctx.repository.lock(policy.system, ctx.config.lock_timeout):
            refs = {r.backup_id: r for r in ctx.repository.backups(policy.system)}
            plan = _plan(policy, list(refs))
            if not dry_run:
                for bid in plan.remove:
                    shutil.rmtree(refs[bid].path)
            summaries.append(_record(ctx, policy, "local", plan, dry_run))
        for target_name in policy.targets:
            try:
                with ctx.target(target_name) as target:
                    # only complete copies count: an unfinished newer copy must not push out the last good one
                    plan = _plan(policy, remote_backup_ids(target, policy.system))
                    if not dry_run:
                        for bid in plan.remove:
                            # manifest first: a target never shows a manifest whose streams are gone
                            for key in sorted(target.list(f"{policy.system}/{bid}/"), key=lambda k: not k.endswith("manifest.json")):
                                target.remove(key)
                    summaries.append(_record(ctx, policy, target_name, plan, dry_run))
            except BackupkitError as e:
                errors.append(e)
    return summaries, errors


def _record(ctx: Context, policy: Policy, where: str, plan, dry_run: bool) -> dict:
    body = {"location": where, "removed": plan.remove, "kept": plan.keep, "dry_run": dry_run,
            "retention": policy.retention.model_dump(by_alias=True), "operator": ctx.operator}
    if not dry_run and plan.remove:
        ctx.ledger.append(ctx.signer, kind="prune", policy=policy.system, subject=where, body=body)
        logger.info("system %s: pruned %d backup(s) on %s", policy.system, len(plan.remove), where)
    return {"system": policy.system, **body}
