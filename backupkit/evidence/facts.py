"""What the period's records say about one system, counted: pure functions, no I/O.

The period is ``[start, end)`` (aware instants; the CLI makes them whole days
in the display zone) and ``as_of`` is when the evidence was taken (the end, or
the export time for a period that is still running). Days are calendar days in
the display zone; a day is due once it has ended by ``as_of`` (or already has a
backup). Order is ledger sequence; times are only read for days and gaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from ..due import counts_as_regular_drill
from ..records import CopyRecord, DrillRecord, VerifyRecord
from .i18n import aware, day_start, local_day


def period_days(start: datetime, end: datetime, tz: tzinfo) -> list[date]:
    """Calendar days (display zone) of ``[start, end)``."""
    if end <= start:
        return []
    first, last = start.astimezone(tz).date(), (end - timedelta(microseconds=1)).astimezone(tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def due_days(days: list[date], with_backup: set[date], as_of: datetime, tz: tzinfo) -> list[date]:
    """Days that should have a backup by ``as_of``: every day that has ended, plus a running day
    that already has one."""
    return [d for d in days if day_start(d + timedelta(days=1), tz) <= as_of or d in with_backup]


def gaps(start: datetime, times: list[datetime], end: datetime) -> list[tuple[datetime, datetime, float]]:
    """The stretches without a passing drill: start → first, between each, last → end (seconds)."""
    points = [start] + sorted(times) + [end]
    return [(a, b, max((b - a).total_seconds(), 0.0)) for a, b in zip(points, points[1:])]


@dataclass
class CopyFact:
    backup_seq: int
    backup_id: str
    target: str
    copy_seq: int | None
    lag: float | None  # seconds from the backup record to its first successful copy record


@dataclass
class Facts:
    system: str
    days: list[date] = field(default_factory=list)
    due: list[date] = field(default_factory=list)
    backup_days: dict[date, list[int]] = field(default_factory=dict)
    backups: list = field(default_factory=list)
    failed_backups: list = field(default_factory=list)
    copies: list[CopyFact] = field(default_factory=list)
    failed_copies: list = field(default_factory=list)
    ok_copies: list = field(default_factory=list)
    drills: list = field(default_factory=list)
    passing: list = field(default_factory=list)
    drill_gaps: list[tuple[datetime, datetime, float]] = field(default_factory=list)
    gap_drill_seqs: list[tuple[int | None, int | None]] = field(default_factory=list)
    measured: list[tuple[int, float]] = field(default_factory=list)  # (drill seq, recovery seconds)
    verify_failures: list[tuple[int, dict]] = field(default_factory=list)  # (verify seq, result row)
    verify_runs: list = field(default_factory=list)
    prunes: list = field(default_factory=list)

    @property
    def missed(self) -> list[date]:
        return [d for d in self.due if d not in self.backup_days]


def facts(records, system: str, targets: list[str], *, start: datetime, end: datetime, as_of: datetime,
          tz: tzinfo) -> Facts:
    """Count one system's records of the period (full records only, seq order)."""
    f = Facts(system)
    f.days = period_days(start, end, tz)
    mine = [r for r in records if r.policy == system]
    f.backups = [r for r in mine if r.kind == "backup"]
    for r in f.backups:
        f.backup_days.setdefault(local_day(r.time, tz), []).append(r.seq)
    f.due = due_days(f.days, set(f.backup_days), as_of, tz)
    f.failed_backups = [r for r in mine if r.kind == "abandoned"]
    copies = [(r, CopyRecord.of(r)) for r in mine if r.kind == "copy"]
    f.ok_copies = [r for r, c in copies if c.ok]
    f.failed_copies = [r for r, c in copies if not c.ok]
    ok_targets = {r.seq: c.target for r, c in copies if c.ok}
    for b in f.backups:
        for t in targets:
            first = next((c for c in f.ok_copies if c.subject == b.subject and ok_targets[c.seq] == t
                          and c.seq > b.seq), None)
            lag = max((aware(first.time) - aware(b.time)).total_seconds(), 0.0) if first is not None else None
            f.copies.append(CopyFact(b.seq, b.subject, t, first.seq if first else None, lag))
    # the controls judge regular drills; a point-in-time drill is listed in the report but never stands in for one
    f.drills = [r for r in mine if r.kind == "drill" and counts_as_regular_drill(r.body)]
    drills = [(r, DrillRecord.of(r)) for r in f.drills]
    f.passing = [r for r, d in drills if d.passed]
    f.drill_gaps = gaps(start, [aware(r.time) for r in f.passing], max(as_of, start))
    seqs = [None] + [r.seq for r in sorted(f.passing, key=lambda r: aware(r.time))] + [None]
    f.gap_drill_seqs = list(zip(seqs, seqs[1:]))
    for r, d in drills:
        if d.measured_rto is not None:
            f.measured.append((r.seq, float(d.measured_rto)))
    for r in records:
        if r.kind != "verify":
            continue
        rows = VerifyRecord.of(r).rows_for(system)
        if rows:
            f.verify_runs.append(r)
        f.verify_failures += [(r.seq, x.as_dict()) for x in rows if not x.ok]
    f.prunes = [r for r in mine if r.kind == "prune"]
    return f
