"""Which backups retention keeps: a pure grandfather-father-son plan.

For each rule (daily, weekly, monthly, yearly) walk the backups newest first
and keep the newest backup of each distinct period until the rule's count is
reached. The newest backup is always kept, and so is every backup the caller
protects (proof and holds, see history.protected). Everything kept says why.

"Newest" is the caller's order (ledger sequence), never the clock: a backup
taken while the clock was stepped back is still the newest one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone


def _period(kind: str, t: datetime) -> tuple:
    if kind == "daily":
        return (t.year, t.month, t.day)
    if kind == "weekly":
        iso = t.isocalendar()
        return (iso[0], iso[1])
    if kind == "monthly":
        return (t.year, t.month)
    return (t.year,)


def period_label(kind: str, p: tuple) -> str:
    """2026-11-03 (daily), 2026-W45 (weekly, ISO), 2026-11 (monthly), 2026 (yearly)."""
    if kind == "weekly":
        return f"{p[0]}-W{p[1]:02d}"
    return "-".join(f"{x:02d}" if i else str(x) for i, x in enumerate(p))


@dataclass
class PrunePlan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # backup id -> reasons
    remove: list[str] = field(default_factory=list)


def plan_prune(backups: list[tuple[str, datetime]], *, daily: int, weekly: int, monthly: int, yearly: int,
               protect: dict[str, list[str]] | None = None) -> PrunePlan:
    """Given (backup id, time) pairs oldest first, return what to keep (with reasons) and what to remove."""
    plan = PrunePlan()
    ordered = list(reversed(backups))
    if not ordered:
        return plan
    plan.keep[ordered[0][0]] = ["newest"]
    present = {bid for bid, _ in backups}
    for bid, reasons in (protect or {}).items():
        if bid in present:
            plan.keep.setdefault(bid, []).extend(reasons)
    for kind, count in (("daily", daily), ("weekly", weekly), ("monthly", monthly), ("yearly", yearly)):
        seen: set[tuple] = set()
        for bid, t in ordered:
            if len(seen) >= count:
                break
            p = _period(kind, t)
            if p in seen:
                continue
            seen.add(p)
            plan.keep.setdefault(bid, []).append(f"{kind} {period_label(kind, p)}")
    plan.remove = [bid for bid, _ in backups if bid not in plan.keep]
    return plan


def backup_time(backup_id: str) -> datetime:
    """Backup IDs start with their UTC start time: 20261126T020000.123Z-1a2b3c (or, before 0.1.0 final,
    without the milliseconds)."""
    stamp = backup_id.split("-")[0]
    fmt = "%Y%m%dT%H%M%S.%fZ" if "." in stamp else "%Y%m%dT%H%M%SZ"
    return datetime.strptime(stamp, fmt).replace(tzinfo=timezone.utc)
