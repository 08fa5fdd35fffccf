"""The typed policy ``source`` of engine mariadb (modes ``dump`` and ``physical``), with its options.
Imports no driver: policies load on hosts without PyMySQL. The connection checks that need the DSN
parsed (a database named, a host or socket) stay in ``mariadb_conn.validate_source``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .source_config import Options, ServerSource, directory_path, raise_field, whole_number

# Options of one mode only (``source.mode``: ``dump``, the default, or ``physical``).
MODE_OPTIONS = {"lock_wait_timeout": "dump", "parallel": "physical", "fingerprint_sessions": "dump"}


class MariadbOptions(Options):
    """``source.options``: backupkit's own keys only (MariaDB has no pass-through options)."""

    bin_dir: Path | None = None  # mariadb-dump, mariadb, mariadb-backup, mbstream (need not exist at load)
    server_bin_dir: Path | None = None  # mariadbd and mariadb-install-db for the ephemeral drill server
    lock_wait_timeout: int | None = None  # mode dump: seconds FLUSH TABLES WITH READ LOCK may wait
    fingerprint_sessions: int | None = None  # mode dump: full fingerprints in this many sessions
    parallel: int | None = None  # mode physical: mariadb-backup --parallel

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise_field("MariadbOptions", str(key), "unknown MariaDB option; use "
                                f"{', '.join(sorted(cls.model_fields))} (docs/mariadb.md)", None)
        return data

    @field_validator("bin_dir", "server_bin_dir", mode="before")
    @classmethod
    def _dirs(cls, v: Any) -> Any:
        return directory_path(v)

    @field_validator("lock_wait_timeout", mode="before")
    @classmethod
    def _lock_wait(cls, v: Any) -> Any:
        return whole_number(v, 1, None, "must be a whole number of seconds >= 1")

    @field_validator("fingerprint_sessions", mode="before")
    @classmethod
    def _sessions(cls, v: Any) -> Any:
        return whole_number(v, 1, 16, "must be a whole number of fingerprint sessions from 1 to 16")

    @field_validator("parallel", mode="before")
    @classmethod
    def _parallel(cls, v: Any) -> Any:
        return whole_number(v, 1, 64, "must be a whole number of mariadb-backup copy threads from 1 to 64")


class MariadbSource(ServerSource):
    """``source`` for ``engine: mariadb``: a ``mariadb://`` DSN and/or host, port, socket, user, database."""

    engine: ClassVar[str] = "mariadb"

    socket: Path | None = None  # the server's Unix socket (instead of host/port)
    mode: Literal["dump", "physical"] | None = None  # None: dump
    options: MariadbOptions = Field(default_factory=MariadbOptions)

    @model_validator(mode="after")
    def _mode_options(self) -> "MariadbSource":
        mode = self.mode or "dump"
        for key, only in MODE_OPTIONS.items():
            if key in self.options and only != mode:
                raise_field("MariadbSource", f"options.{key}", f"is used only with mode: {only}; remove it "
                            f"(this source has mode: {mode})", None)
        return self
