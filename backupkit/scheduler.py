"""``backupkit schedule run``: a small daemon for hosts without cron, built on
the ``schedule`` library. Every tick it asks the ledger what is due (``due.py``)
and runs it: so a slot missed while the host was down runs at the next tick.
Failed jobs are retried after ``retry_after``, not every tick.
Records dated beyond now + ``CLOCK_SKEW_TOLERANCE`` (written while the clock
ran ahead) are ignored when deciding what is due.
"""

from __future__ import annotations

import logging
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import schedule

from .context import Context
from .due import CLOCK_SKEW_TOLERANCE, backup_due, counts_as_regular_drill, drill_due, in_future
from .errors import BackupkitError
from .policy import Policy
from .records import DrillRecord

logger = logging.getLogger(__name__)


def _last(ctx: Context, policy: Policy, kind: str, now: datetime, ok=lambda r: True) -> datetime | None:
    """The time of the last (by seq) record that passes ``ok`` and is not dated beyond now + tolerance."""
    last = None
    for r in ctx.ledger.records(kind=kind, policy=policy.system):
        if ok(r) and not in_future(r.when, now, CLOCK_SKEW_TOLERANCE):
            last = r.when
    return last


def _covered_until(ctx: Context, policy: Policy, now: datetime) -> datetime | None:
    """The latest slot the committed backups cover: a late run for a slot still covers that slot.

    A backup dated beyond now + tolerance covers nothing: the clock that wrote it ran ahead."""
    last = None
    for r in ctx.ledger.records(kind="backup", policy=policy.system):
        planned = (r.body.get("run") or {}).get("planned")
        t = max(r.when, datetime.fromisoformat(planned)) if planned else r.when
        if in_future(t, now, CLOCK_SKEW_TOLERANCE):
            continue
        last = t if last is None or t > last else last
    return last


def drill_is_due(ctx: Context, policy: Policy, now: datetime | None = None) -> bool:
    now = now or datetime.now(timezone.utc)
    last = _last(ctx, policy, "drill", now,
                 lambda r: counts_as_regular_drill(r.body) and DrillRecord.of(r).passed)
    return drill_due(last, policy.drill.every, now, CLOCK_SKEW_TOLERANCE)


class Daemon:
    def __init__(self, ctx: Context, *, retry_after: timedelta = timedelta(hours=1), drills: bool | None = None):
        self.ctx = ctx
        self.retry_after = retry_after
        self.not_before: dict[tuple[str, str], datetime] = {}
        identity = ctx.config.keys.identity
        self.drills = drills if drills is not None else bool(identity and Path(identity).exists())
        self.stopping = False

    def _may_try(self, job: tuple[str, str], now: datetime) -> bool:
        return now >= self.not_before.get(job, now)

    def _failed(self, job: tuple[str, str], now: datetime, error: BackupkitError) -> None:
        self.not_before[job] = now + self.retry_after
        logger.error("%s %s failed: %s (next try after %s)", job[0], job[1], error,
                     self.not_before[job].isoformat(timespec="minutes"))

    def tick(self, now: datetime | None = None) -> list[str]:
        """Run every job that is due now; return what ran."""
        from .actions.backup import backup_one
        from .actions.copy import copy_missing
        from .actions.drill import run_drill

        now = now or datetime.now(timezone.utc).astimezone()
        ran = []
        for policy in self.ctx.policies.values():
            if self.stopping:
                break
            job = ("backup", policy.system)
            slot = backup_due(policy.backup.at, _covered_until(self.ctx, policy, now), now, CLOCK_SKEW_TOLERANCE)
            if slot is not None and self._may_try(job, now):
                out = backup_one(self.ctx, policy, trigger="daemon", planned=slot.isoformat())
                ran.append(f"backup {policy.system}")
                if out.error is not None:
                    self._failed(job, now, out.error)
                elif not out.copies_ok:
                    for e in out.copy_errors:
                        logger.error("%s", e)
                    self.not_before[("copy", "*")] = now + self.retry_after
            job = ("drill", policy.system)
            if self.drills and self._may_try(job, now) and drill_is_due(self.ctx, policy, now):
                ran.append(f"drill {policy.system}")
                try:
                    outcome = run_drill(self.ctx, policy)
                    if not outcome.verdict.passed:
                        self._failed(job, now, BackupkitError("; ".join(outcome.verdict.reasons)))
                except BackupkitError as e:
                    self._failed(job, now, e)
        if self._may_try(("copy", "*"), now) and not self.stopping:
            n, errors = copy_missing(self.ctx, list(self.ctx.policies.values()))
            if n or errors:
                ran.append(f"copy {n} ok, {len(errors)} failed")
            for e in errors:
                logger.error("%s", e)
            if errors:
                self.not_before[("copy", "*")] = now + self.retry_after
        return ran

    def run(self, interval: int = 60) -> None:
        def stop(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        schedule.every(interval).seconds.do(self.tick)
        logger.warning("backupkit scheduler started: %d policies, tick every %ds, drills %s",
                       len(self.ctx.policies), interval, "on" if self.drills else "off (no identity on this host)")
        self.tick()
        while not self.stopping:
            schedule.run_pending()
            time.sleep(1)
        schedule.clear()


def crontab_lines(ctx: Context, executable: str = "backupkit") -> list[str]:
    """Cron lines equivalent to the daemon: one backup line per policy at its ``backup.at``."""
    cfg = (f"--config {ctx.config.file} " if ctx.config.file else "") + "--quiet"  # a mail only when something fails
    lines = ["# backupkit: generated by 'backupkit schedule crontab'; install with 'crontab -e' as the backupkit user",
             "MAILTO=root"]
    for p in ctx.policies.values():
        hh, mm = p.backup.at.split(":")
        lines.append(f"{int(mm)} {int(hh)} * * *  {executable} {cfg} backup {p.system} --trigger cron")
    lines.append(f"30 * * * *  {executable} {cfg} copy")
    lines.append(f"0 9 * * *  {executable} {cfg} drill --due   # only on the drill host; drills what drill.every says is due")
    lines.append(f"*/15 * * * *  {executable} {cfg} status --prometheus --out /var/lib/node_exporter/textfile/backupkit.prom")
    return lines
