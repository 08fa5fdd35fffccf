"""What the ledger says about one system's backups: pure functions over records.

Every decision about which backups *should* exist, which is newest, which may
be pruned and which one a reader must compare its manifest with comes from
here, and from nothing a repository writer can change: not directory names,
not file times, not the wall clock. Order is ledger sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from .due import counts_as_regular_drill
from .ledger import Record
from .records import CopyRecord, DrillRecord, PruneRecord, VerifyRecord

LOCAL = "local"


@dataclass
class History:
    system: str
    committed: dict[str, Record] = field(default_factory=dict)  # backup_id -> its backup record, in seq order
    copied: dict[str, set[str]] = field(default_factory=dict)  # target -> backup IDs with a successful copy
    removed: dict[str, set[str]] = field(default_factory=dict)  # location -> IDs a prune planned or did remove
    pending_prunes: list[Record] = field(default_factory=list)  # planned, never marked done
    last_drill: dict[str, Record] = field(default_factory=dict)  # backup_id -> its latest regular drill record
    last_deep_verify: dict[str, str] = field(default_factory=dict)  # backup_id -> status of its latest deep verify
    holds: dict[str, str] = field(default_factory=dict)  # backup_id -> reason

    def record_of(self, backup_id: str) -> Record | None:
        return self.committed.get(backup_id)

    def seq_of(self, backup_id: str) -> int | None:
        r = self.committed.get(backup_id)
        return r.seq if r is not None else None

    def ordered(self, ids: Iterable[str]) -> list[str]:
        """``ids`` that the ledger committed, oldest first by ledger sequence (never by name or clock)."""
        return sorted((i for i in set(ids) if i in self.committed), key=lambda i: self.committed[i].seq)

    def expected(self, location: str) -> set[str]:
        """Backup IDs that must exist at ``location`` ("local" or a target name)."""
        have = set(self.committed) if location == LOCAL else set(self.copied.get(location, set()))
        return have - self.removed.get(location, set())


def prune_phase(r: Record) -> str:
    """``planned`` or ``done``; records written before phases existed were written after deleting."""
    return PruneRecord.of(r).phase


def history(records: Iterable[Record], system: str) -> History:
    """Fold a system's ledger records (any kinds, seq order) into its History."""
    h = History(system)
    planned: dict[int, Record] = {}
    for r in sorted((r for r in records if r.policy in (system, "*")), key=lambda r: r.seq):
        if r.kind == "backup" and r.policy == system:
            h.committed.setdefault(r.subject, r)
        elif r.kind == "copy" and r.policy == system:
            c = CopyRecord.of(r)
            if c.ok:
                h.copied.setdefault(c.target or "", set()).add(r.subject)
        elif r.kind == "prune" and r.policy == system:
            p = PruneRecord.of(r)
            h.removed.setdefault(p.location, set()).update(p.gone)
            if p.planned:
                planned[r.seq] = r
            else:
                planned.pop(p.plan_seq, None)
        elif r.kind == "drill" and r.policy == system and counts_as_regular_drill(r.body):
            d = DrillRecord.of(r)
            if d.backup_id:
                h.last_drill[d.backup_id] = r
        elif r.kind == "verify":
            v = VerifyRecord.of(r)
            if v.deep:
                for row in v.rows_for(system):
                    if row.backup_id:
                        h.last_deep_verify[row.backup_id] = row.status or ""
        elif r.kind == "hold" and r.policy == system:
            b = r.body
            if b.get("action") == "release":
                h.holds.pop(r.subject, None)
            else:
                h.holds[r.subject] = b.get("reason", "")
    h.pending_prunes = [planned[s] for s in sorted(planned)]
    return h


def protected(h: History, present: Iterable[str]) -> dict[str, list[str]]:
    """Backups at one location that retention must keep whatever its counts say, with the reasons:
    the newest whose latest drill passed, the newest whose latest deep verify passed, and every hold."""
    order = h.ordered(present)
    out: dict[str, list[str]] = {}
    for bid in reversed(order):
        d = h.last_drill.get(bid)
        if d is not None and DrillRecord.of(d).passed:
            out.setdefault(bid, []).append(f"newest backup whose latest drill passed ({d.subject})")
            break
    for bid in reversed(order):
        if h.last_deep_verify.get(bid) == "ok":
            out.setdefault(bid, []).append("newest backup whose latest deep verify passed")
            break
    for bid in order:
        if bid in h.holds:
            out.setdefault(bid, []).append(f"on hold: {h.holds[bid]}" if h.holds[bid] else "on hold")
    return out
