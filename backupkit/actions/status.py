"""``backupkit status``: is every system backed up, copied offsite and drilled in time?

``assess`` is a pure function from a policy and its ledger records to a status
row; the action only reads the ledger and renders text, JSON or Prometheus.

A backup, copy or drill record dated beyond now + ``CLOCK_SKEW_TOLERANCE`` was
written while the host clock ran ahead: it never counts as fresh, the row is
overdue and ``clock_skew`` is set, naming the record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from ..context import Context
from ..due import CLOCK_SKEW_TOLERANCE, counts_as_regular_drill, in_future
from ..durations import format_duration
from ..history import LOCAL, history
from ..ledger import Record
from ..policy import Policy
from ..records import CopyRecord, DrillRecord
from ..verdict import age_ok


@dataclass
class SystemStatus:
    system: str
    tier: str
    last_backup: str | None = None
    last_backup_age_seconds: float | None = None
    rpo_seconds: float = 0
    backup_ok: bool = False
    last_offsite_copy: str | None = None
    offsite_ok: bool = True
    targets: list[str] = field(default_factory=list)
    last_drill: str | None = None
    last_drill_verdict: str | None = None
    drill_every_seconds: float = 0
    drill_ok: bool = False
    last_rto_seconds: float | None = None
    rto_target_seconds: float = 0
    rto_ok: bool | None = None
    clock_skew: bool = False
    missing_backups: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def integrity_failed(self) -> bool:
        """Backups the ledger committed are gone from the repository (exit 3, not merely overdue)."""
        return bool(self.missing_backups)

    @property
    def overdue(self) -> bool:
        return bool(self.problems)


def _skewed(st: SystemStatus, record: Record | None, now: datetime, what: str, where: str = "") -> bool:
    """True (and a clock-skew problem on ``st``) when ``record`` is dated beyond now + the tolerance."""
    if record is None or not in_future(record.when, now, CLOCK_SKEW_TOLERANCE):
        return False
    st.clock_skew = True
    ahead = format_duration(record.when - now)
    st.problems.append(f"clock skew: {what} {record.subject}{where} is recorded at {record.time}, {ahead} in the "
                       "future; check the host clock (NTP)")
    return True


def assess(policy: Policy, records: list[Record], now: datetime, present: set[str] | None = None) -> SystemStatus:
    """Given a policy, its ledger records (any order), the time now and (when known) the backup IDs
    present in the repository, judge it.

    Freshness comes from the last record by seq; one dated in the future beyond
    the tolerance is a clock-skew problem, never fresh."""
    st = SystemStatus(policy.system, policy.tier_label, rpo_seconds=policy.rpo.total_seconds(),
                      drill_every_seconds=policy.drill.every.total_seconds(),
                      rto_target_seconds=policy.tier.total_seconds(), targets=list(policy.targets))
    backups = sorted((r for r in records if r.kind == "backup"), key=lambda r: r.seq)
    copies = [(r, c) for r in records if r.kind == "copy" for c in [CopyRecord.of(r)] if c.ok]
    drills = sorted(((r, DrillRecord.of(r)) for r in records if r.kind == "drill" and counts_as_regular_drill(r.body)),
                    key=lambda x: x[0].seq)  # a point-in-time drill never stands in for the regular one
    if backups:
        last = backups[-1]
        st.last_backup = last.subject
        st.last_backup_age_seconds = (now - last.when).total_seconds()
    if _skewed(st, backups[-1] if backups else None, now, "backup"):
        st.backup_ok = False
    elif age_ok(backups[-1].when if backups else None, policy.rpo, now):
        st.backup_ok = True
    else:
        st.backup_ok = False
        st.problems.append("no backup yet" if not backups else
                           f"last backup is {format_duration(st.last_backup_age_seconds)} old, RPO {format_duration(policy.rpo)}")
    if not policy.targets:  # the same truth as the evidence: no target is no offsite copy
        st.offsite_ok = False
        st.problems.append("no offsite copy: the policy names no target; add one to 'targets' "
                           "(MLPS 8.1.4.9 b asks for offsite backup)")
    newest_copy_seq = 0
    for target in policy.targets:
        mine = sorted((r for r, c in copies if c.target == target), key=lambda r: r.seq)
        if mine and mine[-1].seq > newest_copy_seq:
            newest_copy_seq, st.last_offsite_copy = mine[-1].seq, mine[-1].subject
        if _skewed(st, mine[-1] if mine else None, now, "copy of", f" to {target}"):
            st.offsite_ok = False
        elif not age_ok(mine[-1].when if mine else None, policy.rpo, now):
            st.offsite_ok = False
            st.problems.append(f"no verified offsite copy on {target} within the RPO")
    if drills:
        last, body = drills[-1]
        st.last_drill = last.subject
        st.last_drill_verdict = body.verdict
        st.last_rto_seconds = body.measured_rto
        if st.last_rto_seconds is not None:
            st.rto_ok = st.last_rto_seconds <= policy.tier.total_seconds()
    passed = [r for r, d in drills if d.passed]
    if _skewed(st, passed[-1] if passed else None, now, "passing drill"):
        st.drill_ok = False
    elif age_ok(passed[-1].when if passed else None, policy.drill.every, now):
        st.drill_ok = True
    else:
        st.drill_ok = False
        st.problems.append("no passing drill yet" if not passed else
                           f"last passing drill is older than drill.every ({format_duration(policy.drill.every)})")
    if drills and drills[-1][1].failed:
        st.problems.append("the last drill failed")
    if st.rto_ok is False:
        st.problems.append("the last drill's recovery time exceeded the tier")
    if present is not None:
        hist = history(records, policy.system)
        st.missing_backups = hist.ordered(hist.expected(LOCAL) - present)
        if st.missing_backups:
            st.problems.append(f"{len(st.missing_backups)} backup(s) the ledger committed are missing from the "
                               f"repository ({', '.join(st.missing_backups)}); run 'backupkit verify'")
    return st


def status(ctx: Context, policies: list[Policy], now: datetime | None = None) -> list[SystemStatus]:
    now = now or datetime.now(timezone.utc)
    return [assess(p, list(ctx.ledger.records(policy=p.system)), now, set(ctx.repository.scan(p.system)[0]))
            for p in policies]


def to_json(rows: list[SystemStatus]) -> list[dict]:
    return [{**asdict(r), "overdue": r.overdue} for r in rows]


def to_prometheus(rows: list[SystemStatus]) -> str:
    """node_exporter textfile format."""
    lines = []

    def metric(name: str, help_: str, values: list[tuple[str, float | None]]):
        lines.append(f"# HELP backupkit_{name} {help_}")
        lines.append(f"# TYPE backupkit_{name} gauge")
        for system, v in values:
            if v is not None:
                lines.append(f'backupkit_{name}{{system="{system}"}} {float(v):g}')

    metric("last_backup_age_seconds", "Age of the newest committed backup.",
           [(r.system, r.last_backup_age_seconds) for r in rows])
    metric("rpo_seconds", "Recovery point objective from the policy.", [(r.system, r.rpo_seconds) for r in rows])
    metric("offsite_ok", "1 when every target holds a verified copy within the RPO.",
           [(r.system, int(r.offsite_ok)) for r in rows])
    metric("drill_ok", "1 when a passing drill is within drill.every.", [(r.system, int(r.drill_ok)) for r in rows])
    metric("last_rto_seconds", "Measured recovery time of the last drill.", [(r.system, r.last_rto_seconds) for r in rows])
    metric("rto_target_seconds", "RTO target from the downtime tier.", [(r.system, r.rto_target_seconds) for r in rows])
    metric("clock_skew", "1 when a backup, copy or drill record is dated beyond now + "
           f"{format_duration(CLOCK_SKEW_TOLERANCE)} (the host clock ran ahead).",
           [(r.system, int(r.clock_skew)) for r in rows])
    metric("overdue", "1 when anything is overdue or failing.", [(r.system, int(r.overdue)) for r in rows])
    metric("missing_backups", "Backups the ledger committed that are missing from the repository.",
           [(r.system, len(r.missing_backups)) for r in rows])
    return "\n".join(lines) + "\n"


def anchors_prometheus(results) -> str:
    """Metrics for the ledger's anchors on targets (actions/anchors.py)."""
    lines = ["# HELP backupkit_ledger_anchor_ok 0 when a target's signed ledger head shows the local ledger was rolled back.",
             "# TYPE backupkit_ledger_anchor_ok gauge"]
    lines += [f'backupkit_ledger_anchor_ok{{target="{a.where.split(" ", 1)[1]}"}} {int(a.status != "rolled-back")}'
              for a in results]
    lines += ["# HELP backupkit_ledger_anchor_reachable 0 when a target's ledger head could not be read.",
              "# TYPE backupkit_ledger_anchor_reachable gauge"]
    lines += [f'backupkit_ledger_anchor_reachable{{target="{a.where.split(" ", 1)[1]}"}} {int(a.status != "unreachable")}'
              for a in results]
    return "\n".join(lines) + "\n"
