"""The typed policy fields of PostgreSQL physical mode on pgBackRest (``source.pgbackrest``).

Imports no driver: policies load on hosts without psycopg or pgBackRest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PgBackrestSource(_Strict):
    """``source.pgbackrest``: which stanza backupkit drives, and how (docs/pgbackrest.md)."""

    stanza: str
    config: Path | None = None  # pgbackrest.conf (default: pgBackRest's own search)
    type: Literal["full", "diff", "incr"] = "full"  # what `pgbackrest backup --type` each backupkit backup takes
    # The repository directory (repo1-path) whose files backupkit packs into its artifact; default: read
    # from `config` ([global] repo1-path), else pgBackRest's default /var/lib/pgbackrest.
    repo_path: Path | None = None
    repo: int = Field(default=1, ge=1, le=256)  # which pgBackRest repository (repoN) holds the stanza
    # pgBackRest's repository cipher pass (repo encrypted with aes-256-cbc): a 0600 file, first line.
    # Needed by the drill to read the packed repository; never put on argv or in the environment.
    cipher_pass_file: Path | None = None
    bin: Path | None = None  # the pgbackrest program (default: found on PATH)
    os_user: str | None = None  # OS user pgBackRest runs as when backupkit runs as root (default: the repo's owner)
    start_fast: bool = True  # --start-fast: an immediate checkpoint starts the backup
    expire: bool = False  # after each backup, run `pgbackrest expire` (pgBackRest's own retention settings)
    recovery_timeout: int = Field(default=3600, ge=10)  # drill: seconds to wait for replay and promotion
    # drill: also recover to the LSN of a logical backup (of this system, or of ``cross_proof_system``) taken
    # after this physical one, and compare with that logical manifest's fingerprints (docs/pgbackrest.md)
    cross_proof: bool = False
    cross_proof_system: str | None = None

    @field_validator("stanza")
    @classmethod
    def _stanza(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v):
            raise ValueError(f"{v!r} is not a pgBackRest stanza name (letters, digits, _ . -)")
        return v

    @field_validator("os_user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
            raise ValueError(f"{v!r} is not an OS user name")
        return v
