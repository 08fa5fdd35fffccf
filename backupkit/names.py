"""The grammar of the names backupkit puts on disk and accepts on the command line.

A backup ID is ``YYYYMMDDTHHMMSS.mmmZ-xxxxxx`` (UTC start time, milliseconds,
six hex digits); 0.1.0 pre-releases wrote it without the milliseconds. A drill
ID is ``DYYYYMMDDTHHMMSSZ-xxxxxx``. Anything else is refused before a file is
touched, so ``--backup ../other/ID`` or an absolute path can never select a
directory outside the system's own.
"""

from __future__ import annotations

import re

from .errors import ConfigError

BACKUP_ID = re.compile(r"\A[0-9]{8}T[0-9]{6}(?:\.[0-9]{3})?Z-[0-9a-f]{6}\Z")
DRILL_ID = re.compile(r"\AD[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}\Z")
SYSTEM = re.compile(r"\A[a-z0-9][a-z0-9-]{0,63}\Z")


def is_backup_id(name: str) -> bool:
    return bool(BACKUP_ID.match(name))


def check_backup_id(value: str, option: str = "--backup") -> str:
    """Return ``value`` when it is a backup ID; otherwise raise ConfigError (exit 2)."""
    if not is_backup_id(value):
        raise ConfigError(
            f"option {option}: {value!r} is not a backup ID (expected e.g. 20261126T020000.123Z-1a2b3c); "
            "see 'backupkit list'"
        )
    return value


def check_drill_id(value: str, option: str = "DRILL_ID") -> str:
    if not DRILL_ID.match(value):
        raise ConfigError(f"{option}: {value!r} is not a drill ID (expected e.g. D20261126T020000Z-1a2b3c)")
    return value
