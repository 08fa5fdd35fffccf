"""Drill verdicts and status judgements: pure functions, no I/O.

A drill passes only when the restore succeeded, at least one data-proving
check passed, no check failed or was skipped (skipped is unproven), and both
the recovery time and the recovery point met their targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    verification_failed: bool = False  # a fingerprint/hash mismatch: exit 3 rather than 1

    @property
    def label(self) -> str:
        return "passed" if self.passed else "failed"


def drill_verdict(*, restored: bool, checks: list[dict], rto_met: bool | None, rpo_met: bool | None,
                  failed_step: str | None = None, error: str | None = None, verification_error: bool = False) -> Verdict:
    """Given what a drill observed, return its verdict and every reason it did not pass."""
    reasons = []
    if failed_step:
        reasons.append(f"step {failed_step} failed: {error}" if error else f"step {failed_step} failed")
    if not restored and not failed_step:
        reasons.append("the restore did not complete")
    for c in checks:
        if c["status"] == "failed":
            reasons.append(f"check failed: {c['name']}: {c.get('detail', '')}".rstrip(": "))
        elif c["status"] == "skipped":
            reasons.append(f"check skipped (unproven): {c['name']}: {c.get('detail', '')}".rstrip(": "))
    if restored and not any(c["status"] == "passed" and c.get("proves_data") for c in checks):
        reasons.append("no data-proving check passed (fingerprints were not compared)")
    if rto_met is False:
        reasons.append("recovery time exceeded the tier's RTO")
    if rpo_met is False:
        reasons.append("recovery point is older than the RPO")
    if rto_met is None and restored:
        reasons.append("recovery time was not measured")
    verification = verification_error or any(c["status"] == "failed" and c.get("proves_data") for c in checks)
    return Verdict(passed=not reasons, reasons=reasons, verification_failed=verification)


def compare_fingerprints(expected: dict[str, dict], actual: dict[str, dict]) -> list[dict]:
    """One check per table: equal row count and hash, naming the table and both values on mismatch."""
    checks = []
    for table in sorted(set(expected) | set(actual)):
        e, a = expected.get(table), actual.get(table)
        name = f"fingerprint {table}"
        if e is None:
            checks.append({"name": name, "status": "failed", "proves_data": True,
                           "detail": f"table {table} is in the restored copy but not in the backup manifest"})
        elif a is None:
            checks.append({"name": name, "status": "failed", "proves_data": True,
                           "detail": f"table {table} is missing from the restored copy"})
        elif e != a:
            checks.append({"name": name, "status": "failed", "proves_data": True,
                           "detail": f"table {table}: manifest rows={e.get('rows')} hash={e.get('hash')}, "
                                     f"restored rows={a.get('rows')} hash={a.get('hash')}"})
        else:
            detail = f"rows={a['rows']}" + (f" hash={a['hash']}" if a.get("hash") else "")
            checks.append({"name": name, "status": "passed", "proves_data": True, "detail": detail})
    return checks


def age_ok(last: datetime | None, limit: timedelta, now: datetime) -> bool:
    return last is not None and now - last <= limit
