"""Cross-proof of a physical (pgBackRest) drill against a logical backup (docs/pgbackrest.md).

When the policy asks for it (``source.pgbackrest.cross_proof``), and the system (or
``cross_proof_system``) has a logical backup of the same database taken after the drilled physical
backup ended, a second copy of the physical backup is recovered to exactly the LSN of that logical
backup's snapshot and its fingerprints are compared with the logical manifest's. Recorded as one
check, ``cross-proof logical <system>/<id>``; any failure to run it is that check failing.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from ..artifact import DirectorySource
from ..errors import BackupkitError
from ..keyed import keyed
from ..verdict import compare_fingerprints

logger = logging.getLogger(__name__)


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def candidate(ctx, system: str, physical: dict) -> str | None:
    """The logical backup of the same database whose snapshot LSN is the first at or after the physical
    backup's end (read unverified to choose; the chosen one is verified before use)."""
    stop = (physical.get("details") or {}).get("pgbackrest", {}).get("lsn_stop")
    db = (physical.get("details") or {}).get("database")
    best = None
    for bid, ref in ctx.repository.scan(system)[0].items():
        try:
            m = json.loads((ref.path / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        c = m.get("consistency") or {}
        if m.get("engine") != "postgres" or c.get("kind") != "postgres" or not c.get("lsn") or not stop:
            continue
        if (m.get("details") or {}).get("database") != db or _lsn(c["lsn"]) < _lsn(stop):
            continue
        if best is None or _lsn(c["lsn"]) < best[0]:
            best = (_lsn(c["lsn"]), bid)
    return best[1] if best else None


def run_cross_proof(ctx, policy, engine, scratch, manifest: dict, checks: list[dict]) -> None:
    """Append the cross-proof check to ``checks`` (nothing when the policy does not ask for it)."""
    from .lifecycle import check_artifacts, fingerprint_key, pick_local

    cfg = getattr(policy.source, "pgbackrest", None)
    if cfg is None or not cfg.cross_proof or not hasattr(engine, "fingerprints_at"):
        return
    system = cfg.cross_proof_system or policy.system
    bid = candidate(ctx, system, manifest)
    if bid is None:
        checks.append({"name": "cross-proof logical", "status": "waived", "proves_data": False,
                       "detail": f"no logical backup of database {manifest.get('details', {}).get('database')} in "
                                 f"system {system} was taken after this physical backup ended; run a logical "
                                 "backup, or drill an older physical backup"})
        return
    name = f"cross-proof logical {system}/{bid}"
    try:
        picked = pick_local(ctx, SimpleNamespace(system=system), bid)
        what = f"backup {system}/{bid}"
        logical = check_artifacts(ctx, picked, what)
        source = DirectorySource(picked.directory, logical["streams"], ctx.identities, what=what,
                                 recipient_ids=logical["recipients"])
        key = fingerprint_key(source, logical, what)
        lsn = logical["consistency"]["lsn"]
        actual, facts = engine.fingerprints_at(policy=policy, scratch=scratch, lsn=lsn, mode=logical["fingerprint_mode"],
                                               like=logical["fingerprints"], logical_manifest=logical)
        results = compare_fingerprints(logical["fingerprints"], keyed(actual, key) if key is not None else actual)
    except BackupkitError as e:
        checks.append({"name": name, "status": "failed", "proves_data": True, "detail": str(e)})
        return
    failed = [r for r in results if r["status"] != "passed"]
    target = facts.get("target_lsn") or lsn
    where = (f"LSN {lsn} (the logical backup's snapshot)" if target == lsn else
             f"LSN {target}, before the logical snapshot's LSN {lsn} ({facts.get('recovery_target')})")
    detail = (f"physical backup recovered to {where}: "
              + (f"{len(results)} entries equal to the logical manifest" if not failed else
                 "; ".join(r["detail"] for r in failed)[:2000]))
    if facts.get("wal_from_live_repository"):
        a, b = facts["wal_from_live_repository"]
        detail += f"; WAL {a}..{b} read from the live pgBackRest repository (beyond the artifact's range)"
    checks.append({"name": name, "status": "failed" if failed else "passed", "proves_data": True, "detail": detail,
                   "data": {"logical_backup": bid, "lsn": lsn, "entries": len(results),
                            "failed": [r["name"] for r in failed], **facts}})
