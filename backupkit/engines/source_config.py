"""The base of every engine's typed ``source`` model, and of typed ``source.options``.

Each engine owns one model (``<engine>_config.py``, no driver imports) holding only the fields it
reads; ``engines.source_model(engine)`` names it and the policy's ``engine`` picks it at load. This
module holds what they share: the endpoint fields (``dsn``, ``user``, ``host``/``port``/``database``,
``password_file``/``password_env``) written once, the check that names a field of another engine as
such (``field 'source.socket': is not used by engine postgres ...``), the ``mode`` check against the
engine registry, and ``Options``: typed options that still read like the mapping the engines use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .oracle_config import raise_field  # a ValidationError located at a field: the loader names it


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _accepted_keys(model: type[BaseModel]) -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        keys.add(info.alias or name)
    return keys


class SourceModel(_Strict):
    """``source`` of one engine. Subclasses set ``engine`` and declare only the fields that engine reads."""

    engine: ClassVar[str]
    # field -> what to write instead, for a field of another engine a user may reasonably try here
    foreign_hints: ClassVar[dict[str, str]] = {}
    # required field -> the message when it is missing (instead of pydantic's generic one)
    required_hints: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _own_fields_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        from . import source_fields_by_engine

        own = _accepted_keys(cls)
        for key in data:
            if key in own:
                continue
            owners = [e for e, fields in source_fields_by_engine().items() if key in fields and e != cls.engine]
            if owners:  # a field of another engine: say so (a misspelling stays "unknown field", from extra=forbid)
                hint = cls.foreign_hints.get(key, "remove it")
                whose = f"engine {owners[0]}" if len(owners) == 1 else f"engines {', '.join(owners)}"
                raise_field(cls.__name__, str(key), f"is not used by engine {cls.engine} (it is a field of {whose}); "
                            f"{hint} (engine {cls.engine} reads "
                            f"{', '.join(sorted(own))})", data[key])
        for key, message in cls.required_hints.items():
            if data.get(key) is None:
                raise_field(cls.__name__, key, message, None)
        return data

    if not TYPE_CHECKING:
        def __getattr__(self, item: str) -> Any:
            """A field of another engine reads as None (never set here), as it did when one model held every
            engine's fields: code that describes any source (evidence paperwork: database, path, host) keeps
            working. Any other missing name is still an AttributeError."""
            try:
                return super().__getattr__(item)
            except AttributeError:
                from . import all_source_fields

                if not item.startswith("_") and item in all_source_fields():
                    return None
                raise


class EndpointSource(SourceModel):
    """A database reached over a connection: the connect string, the account and its password source."""

    dsn: str | None = None  # connect string, without a password
    user: str | None = None
    password_file: Path | None = None  # mode 0600, first line (relative: to the policy file)
    password_env: str | None = None  # name of an environment variable holding the password

    @field_validator("dsn")
    @classmethod
    def _no_password_in_dsn(cls, v: str | None) -> str | None:
        if v and re.search(r"(://[^/@:]+:[^/@]+@)|(\bpassword\s*=)", v, re.I):
            raise ValueError("the DSN contains a password; move it to password_file (mode 0600)")
        return v


class ServerSource(EndpointSource):
    """A server reached by host and port (PostgreSQL, MariaDB): fields that complete or override the DSN,
    and the engine's ``mode`` (declared by the subclass as a Literal of its modes)."""

    host: str | None = None
    port: int | None = None
    database: str | None = None

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        return whole_number(v, 1, 65535, "must be a port number from 1 to 65535")

    @field_validator("mode", mode="before", check_fields=False)
    @classmethod
    def _known_mode(cls, v: Any) -> Any:
        from . import modes

        if v is not None and v not in modes(cls.engine):
            raise ValueError(f"{v!r} is not a mode of engine {cls.engine}; use one of {', '.join(modes(cls.engine))}")
        return v


# ---- options -----------------------------------------------------------------------------------------


def whole_number(v: Any, lo: int, hi: int | None, message: str) -> int | None:
    """``v`` when it is an int (not a bool) within [lo, hi], else ValueError(message, with the value)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise ValueError(f"{message}, not {v!r}")
    return v


def directory_path(v: Any) -> Any:
    """A program directory: a path string (not required to exist at load); empty means unset, as before."""
    if v is None or v == "":
        return None
    if isinstance(v, Path):
        return v
    if not isinstance(v, str):
        raise ValueError(f"must be a directory path, e.g. /usr/lib/postgresql/16/bin, not {v!r}")
    return v


class Options(BaseModel):
    """Typed ``source.options``. The engines read it as a mapping of the keys the policy set
    (``options.get("bin_dir")``, ``dict(options)``, ``options or {}``) or by attribute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def _as_set(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}
        out.update(self.__pydantic_extra__ or {})
        return out

    def get(self, key: str, default: Any = None) -> Any:
        return self._as_set().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._as_set()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._as_set()

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # a mapping's keys, not (name, value) pairs
        return iter(self._as_set())

    def __len__(self) -> int:
        return len(self._as_set())

    def keys(self):
        return self._as_set().keys()

    def values(self):
        return self._as_set().values()

    def items(self):
        return self._as_set().items()
