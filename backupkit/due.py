"""When is a job due? Pure functions used by the scheduler and ``drill --due``.

Jobs are due-based, not clock-based: a backup whose 02:00 slot passed while the
host was down is due at the next tick, not a day late.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta


def last_slot(at: str, now: datetime) -> datetime:
    """The most recent daily slot ``at`` (HH:MM, in ``now``'s time zone) at or before ``now``."""
    hh, mm = (int(x) for x in at.split(":"))
    slot = datetime.combine(now.date(), time(hh, mm), tzinfo=now.tzinfo)
    return slot if slot <= now else slot - timedelta(days=1)


def backup_due(at: str, last_backup: datetime | None, now: datetime) -> datetime | None:
    """Return the planned slot a backup is due for, or None when the newest backup already covers it."""
    slot = last_slot(at, now)
    if last_backup is None or last_backup < slot:
        return slot
    return None


def drill_due(last_passing: datetime | None, every: timedelta, now: datetime) -> bool:
    return last_passing is None or now - last_passing >= every
