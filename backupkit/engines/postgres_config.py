"""The typed policy ``source`` of engine postgres (modes ``logical`` and ``pgbackrest``). Imports no
driver: policies load on hosts without psycopg."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .pgbackrest_config import PgBackrestSource
from .source_config import Options, ServerSource, directory_path, raise_field, whole_number

_LIBPQ_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")


class PostgresOptions(Options):
    """``source.options``: backupkit's own keys, typed; every other key is a libpq connection parameter
    (``sslmode``, ``sslrootcert``, ``connect_timeout``, ``application_name``...), passed through."""

    model_config = ConfigDict(extra="allow", frozen=True)

    bin_dir: Path | None = None  # where pg_dump, pg_restore, initdb... of the server's major live (need not exist at load)
    restore_jobs: int | None = Field(None, ge=1)  # pg_restore -j in drills and restores (default: CPU count)

    @field_validator("bin_dir", mode="before")
    @classmethod
    def _bin_dir(cls, v: Any) -> Any:
        return directory_path(v)

    @field_validator("restore_jobs", mode="before")
    @classmethod
    def _jobs(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)  # accepted before (pg_restore -j took int(value)); same meaning
        return whole_number(v, 1, None, "must be a whole number of pg_restore jobs >= 1")

    @model_validator(mode="after")
    def _libpq(self) -> "PostgresOptions":
        for key, value in (self.__pydantic_extra__ or {}).items():
            if key.lower() in ("password", "passfile"):
                raise_field("PostgresOptions", key, "a password is never in options; move it to password_file "
                            "(mode 0600) or password_env", None)
            if not _LIBPQ_KEY.fullmatch(key):
                raise_field("PostgresOptions", key, "is not a libpq parameter name (lower case letters, digits, _)",
                            None)
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise_field("PostgresOptions", key, "a libpq parameter must be a single value (text or number), "
                            f"not {type(value).__name__}", None)
        return self


class PostgresSource(ServerSource):
    """``source`` for ``engine: postgres``: a URI or key=value DSN, completed or overridden by host, port,
    user and database; libpq extras and backupkit's own keys in ``options``; physical mode's block."""

    engine: ClassVar[str] = "postgres"

    mode: Literal["logical", "pgbackrest"] | None = None  # None: logical
    options: PostgresOptions = Field(default_factory=PostgresOptions)
    pgbackrest: PgBackrestSource | None = None  # mode pgbackrest (docs/pgbackrest.md)

    @model_validator(mode="after")
    def _pgbackrest_block(self) -> "PostgresSource":
        if self.pgbackrest is not None and self.mode != "pgbackrest":
            raise_field("PostgresSource", "pgbackrest", "the 'pgbackrest' block is used only with engine postgres "
                        "and mode: pgbackrest; set mode: pgbackrest or remove the block", None)
        if self.mode == "pgbackrest" and self.pgbackrest is None:
            raise_field("PostgresSource", "pgbackrest", "mode pgbackrest needs a 'pgbackrest' block with at least "
                        "'stanza' (docs/pgbackrest.md)", None)
        return self
