"""Drill verdicts and status judgements: pure functions, no I/O.

A drill passes only when the restore succeeded, at least one data-proving
check passed, no check failed or was skipped (skipped is unproven), and both
the recovery time and the recovery point met their targets. A check the policy
explicitly waived (status "waived") does not fail the drill but is recorded as
a deviation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

# When no data-proving check ran at all (evidence/report.py translates this exact sentence).
NOT_COMPARED = "no data-proving check passed (fingerprints were not compared)"
# Entry fields that are information only and never compared.
INFO_FIELDS = ("info", "not_compared")
# Schema items that describe ownership and privileges (not comparable after --no-owner --no-privileges).
OWNERSHIP_PREFIXES = ("owner ", "acl ")


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
    """Given what a drill observed, return its verdict, every reason it did not pass, and the
    deviations the policy waived (listed in ``reasons`` without failing the drill)."""
    reasons: list[str] = []
    waived: list[str] = []
    if failed_step:
        reasons.append(f"step {failed_step} failed: {error}" if error else f"step {failed_step} failed")
    if not restored and not failed_step:
        reasons.append("the restore did not complete")
    for c in checks:
        if c["status"] == "failed":
            reasons.append(f"check failed: {c['name']}: {c.get('detail', '')}".rstrip(": "))
        elif c["status"] == "skipped":
            reasons.append(f"check skipped (unproven): {c['name']}: {c.get('detail', '')}".rstrip(": "))
        elif c["status"] == "waived":
            waived.append(f"deviation (waived by policy): {c['name']}: {c.get('detail', '')}".rstrip(": "))
        elif c["status"] != "passed":
            reasons.append(f"check {c['name']} has unknown status {c['status']!r}")
    proving = [c for c in checks if c.get("proves_data")]
    if restored:
        if not proving:
            reasons.append(NOT_COMPARED)
        elif not any(c["status"] == "passed" for c in proving) and not any(c["status"] == "failed" for c in proving):
            reasons.append(f"no data-proving check passed ({len(proving)} compared, none proven)")
    if rto_met is False:
        reasons.append("recovery time exceeded the tier's RTO")
    if rpo_met is False:
        reasons.append("recovery point is older than the RPO")
    if rto_met is None and restored:
        reasons.append("recovery time was not measured")
    verification = verification_error or any(c["status"] == "failed" and c.get("proves_data") for c in checks)
    return Verdict(passed=not reasons, reasons=reasons + waived, verification_failed=verification)


def _comparable(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in INFO_FIELDS}


def _label(key: str, kind: str) -> str:
    """How a message names an entry: tables by key, other kinds by their (kind-prefixed) key."""
    if kind in ("table", "partitioned table"):
        return f"{kind} {key}"
    return key


def compare_schema(e: dict, a: dict) -> tuple[bool, str]:
    """Compare two ``schema`` entries item by item; returns (equal, detail naming the objects)."""
    skipped = dict(a.get("not_compared") or {})
    skip_owners = "owners and grants" in skipped
    keep = (lambda n: not n.startswith(OWNERSHIP_PREFIXES)) if skip_owners else (lambda n: True)  # noqa: E731
    ei = {k: v for k, v in (e.get("items") or {}).items() if keep(k)}
    ai = {k: v for k, v in (a.get("items") or {}).items() if keep(k)}
    note = "".join(f"; not compared: {what} ({why})" for what, why in sorted(skipped.items()))
    if ei == ai:
        if not skip_owners and e.get("hash") != a.get("hash"):
            return False, f"schema hash manifest={e.get('hash')} restored={a.get('hash')} (items equal)"
        return True, f"{len(ai)} schema objects equal{note}"
    missing = sorted(set(ei) - set(ai))
    extra = sorted(set(ai) - set(ei))
    changed = sorted(k for k in set(ei) & set(ai) if ei[k] != ai[k])
    parts = []
    for label, names in (("missing from the restored copy", missing), ("not in the backup", extra),
                         ("different", changed)):
        if names:
            shown = "; ".join(names[:10]) + (f"; and {len(names) - 10} more" if len(names) > 10 else "")
            parts.append(f"{label}: {shown}")
    return False, "schema objects differ: " + " | ".join(parts) + note


def compare_entry(key: str, e: dict, a: dict) -> tuple[bool, str]:
    """Compare one manifest entry with the restored one; returns (equal, detail)."""
    kind = e.get("kind") or a.get("kind") or "table"
    if kind == "schema":
        return compare_schema(e, a)
    skipped = dict(a.get("not_compared") or {})
    ec = {k: v for k, v in _comparable(e).items() if k not in skipped}
    ac = {k: v for k, v in _comparable(a).items() if k not in skipped}
    note = "".join(f"; not compared: {what} ({why})" for what, why in sorted(skipped.items()))
    label = _label(key, kind)
    if "kind" not in e and "kind" not in a:  # format 1 entries (tables): the historical message
        if e == a:
            return True, f"rows={a['rows']}" + (f" hash={a['hash']}" if a.get("hash") else "")
        return False, (f"table {key}: manifest rows={e.get('rows')} hash={e.get('hash')}, "
                       f"restored rows={a.get('rows')} hash={a.get('hash')}")
    if ec == ac:
        shown = {k: v for k, v in ac.items() if k in ("rows", "hash", "count", "last_value", "is_called", "populated")}
        return True, " ".join(f"{k}={v}" for k, v in shown.items()) + note if shown else f"{label} equal{note}"
    differing = [f for f in sorted(set(ec) | set(ac)) if ec.get(f) != ac.get(f)]
    if "rows" in ec or "rows" in ac:  # tables and materialized views: always show both counts and hashes
        head = (f"{label}: manifest rows={ec.get('rows')} hash={ec.get('hash')}, "
                f"restored rows={ac.get('rows')} hash={ac.get('hash')}")
        rest = [f for f in differing if f not in ("rows", "hash")]
        return False, head + "".join(f"; {f}: manifest={ec.get(f)!r} restored={ac.get(f)!r}" for f in rest) + note
    diffs = [f"{f}: manifest={ec.get(f)!r} restored={ac.get(f)!r}" for f in differing]
    return False, f"{label}: " + "; ".join(diffs) + note


def compare_fingerprints(expected: dict[str, dict], actual: dict[str, dict]) -> list[dict]:
    """One check per entry (table, sequence, materialized view, large objects, schema, database):
    equal content, naming the object and both values on mismatch."""
    checks = []
    for key in sorted(set(expected) | set(actual)):
        e, a = expected.get(key), actual.get(key)
        kind = (e or a or {}).get("kind", "table")
        label = _label(key, kind)
        name = f"fingerprint {key}"
        if e is None:
            checks.append({"name": name, "status": "failed", "proves_data": True,
                           "detail": f"{label} is in the restored copy but not in the backup manifest"})
        elif a is None:
            checks.append({"name": name, "status": "failed", "proves_data": True,
                           "detail": f"{label} is missing from the restored copy"})
        else:
            ok, detail = compare_entry(key, e, a)
            checks.append({"name": name, "status": "passed" if ok else "failed", "proves_data": True, "detail": detail})
    return checks


def age_ok(last: datetime | None, limit: timedelta, now: datetime) -> bool:
    return last is not None and now - last <= limit
