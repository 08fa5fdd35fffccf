"""``backupkit restore``: an emergency restore into a real destination.

Given a policy, a backup (latest by default, or from a target) and a
destination, check the backup, refuse a non-empty destination unless forced,
restore, compare fingerprints, and append a ``restore`` ledger record.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from ..context import Context
from ..engines import engine_for
from ..errors import ConfigError, VerificationFailed
from ..policy import Policy
from ..verdict import compare_fingerprints
from .lifecycle import (check_artifacts, check_identity, fingerprint_key, pick_backup, remove_workdir,
                        restored_fingerprints, scratch_workdir, timed_source)


def run_restore(ctx: Context, policy: Policy, *, backup_id: str | None, dsn: str | None, from_target: str | None,
                force: bool, replace_source: bool = False) -> dict:
    engine = engine_for(policy)
    wd = scratch_workdir(ctx, kind="restore", system=policy.system, ident=f"restore-{policy.system}")
    work = wd.path
    t0 = time.monotonic()
    try:
        picked = pick_backup(ctx, policy, backup_id, from_target, work)
        what = f"backup {policy.system}/{picked.backup_id}"
        manifest = check_artifacts(ctx, picked, what)
        check_identity(ctx, manifest, what)
        with engine.restore_target(policy=policy, dsn=dsn, replace_source=replace_source) as dest:
            dest.manifest = manifest  # engines apply the recorded database settings and compare them
            if not engine.is_empty(scratch=dest):
                if not (force or replace_source):
                    raise ConfigError(f"destination {dsn} is not empty; pass --force to restore over it")
                dest.replace_existing = True
            source = timed_source(ctx, picked, manifest, what)
            fp_key = fingerprint_key(source, manifest, what)
            engine.restore(policy=policy, scratch=dest, source=source)
            checks = compare_fingerprints(manifest["fingerprints"], restored_fingerprints(engine, dest, manifest, fp_key))
            destination = dest.info
    finally:
        remove_workdir(wd, stop=False)  # a restore starts no scratch server of its own
    bad = [c for c in checks if c["status"] != "passed"]
    body = {"backup_id": picked.backup_id, "copy": picked.copy, "destination": destination, "forced": force,
            "replaced_source": replace_source,
            "seconds": round(time.monotonic() - t0, 3), "checks": checks,
            "fingerprints": "match" if not bad else "MISMATCH", "operator": ctx.operator,
            "finished": datetime.now(timezone.utc).isoformat()}
    rec = ctx.ledger.append(ctx.signer, kind="restore", policy=policy.system, subject=picked.backup_id, body=body)
    where = "the source database (production)" if replace_source else dsn
    if bad:
        raise VerificationFailed(f"restore of {what} into {where}: {bad[0]['detail']}")
    return {**body, "destination": where, "seq": rec.seq}
