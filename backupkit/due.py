"""When is a job due? Pure functions used by the scheduler and ``drill --due``.

Jobs are due-based, not clock-based: a backup whose 02:00 slot passed while the
host was down is due at the next tick, not a day late.

A record dated more than ``CLOCK_SKEW_TOLERANCE`` after now was written while
the host clock ran ahead: it proves nothing about the present, so it is
ignored (a backup taken while the clock read +30 days must not make nothing
due for a month).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

CLOCK_SKEW_TOLERANCE = timedelta(minutes=5)


def counts_as_regular_drill(body) -> bool:
    """Whether a ``drill`` record's body can stand for the system's regular drill (``status``, ``drill --due``,
    the scheduler, and which backup's latest drill passed). A point-in-time drill (``mode: pitr``, ``drill
    --to-time``) cannot: it recovered its backup to another point and compared no fingerprints with it. It
    stays in the ledger and the evidence as what it was."""
    return not (isinstance(body, dict) and body.get("mode") == "pitr")


def in_future(when: datetime, now: datetime, tolerance: timedelta = CLOCK_SKEW_TOLERANCE) -> bool:
    """True when ``when`` is later than ``now`` by more than ``tolerance``: the clock that wrote it ran ahead."""
    return when > now + tolerance


def trusted(when: datetime | None, now: datetime, tolerance: timedelta = CLOCK_SKEW_TOLERANCE) -> datetime | None:
    """``when``, or None when it lies beyond ``now + tolerance`` and so cannot be trusted."""
    return None if when is not None and in_future(when, now, tolerance) else when


def last_slot(at: str, now: datetime) -> datetime:
    """The most recent daily slot ``at`` (HH:MM, in ``now``'s time zone) at or before ``now``."""
    hh, mm = (int(x) for x in at.split(":"))
    slot = datetime.combine(now.date(), time(hh, mm), tzinfo=now.tzinfo)
    return slot if slot <= now else slot - timedelta(days=1)


def backup_due(at: str, last_backup: datetime | None, now: datetime,
               tolerance: timedelta = CLOCK_SKEW_TOLERANCE) -> datetime | None:
    """Return the planned slot a backup is due for, or None when the newest backup already covers it.

    A ``last_backup`` beyond ``now + tolerance`` is ignored."""
    slot = last_slot(at, now)
    last_backup = trusted(last_backup, now, tolerance)
    if last_backup is None or last_backup < slot:
        return slot
    return None


def drill_due(last_passing: datetime | None, every: timedelta, now: datetime,
              tolerance: timedelta = CLOCK_SKEW_TOLERANCE) -> bool:
    """True when no passing drill lies within ``every`` before now; one beyond ``now + tolerance`` is ignored."""
    last_passing = trusted(last_passing, now, tolerance)
    return last_passing is None or now - last_passing >= every
