"""Database engines, looked up by the policy's ``engine`` name (one module each).

Each engine owns a typed ``source`` model in a light module that imports no driver
(``_SOURCES``: ``<engine>_config.py``); the policy's ``engine`` picks it at load, so
a field of another engine or a bad option is ``<file>: field 'source.<field>': ...``
(exit 2). An engine may also declare further load-time rules in such a module
(``_CONFIG``): ``validate_source(source)`` and ``validate_scratch(scratch_spec, source)``
raise ValueError, which the loader reports as ``<file>: field 'source': ...``.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from .. import __version__
from ..errors import ConfigError
from .base import Engine

_MODULES = {
    "sqlite": ("sqlite", "SqliteEngine"),
    "postgres": ("postgres", "PostgresEngine"),
    "mariadb": ("mariadb", "MariadbEngine"),
    "oracle": ("oracle", "OracleEngine"),
}

# (engine, source.mode) -> (module, class) for engines with more than one way to back up; the first
# mode listed per engine is its default (``source.mode`` absent).
_MODES = {
    ("postgres", "logical"): ("postgres", "PostgresEngine"),
    ("postgres", "pgbackrest"): ("pgbackrest", "PgBackrestEngine"),
    ("mariadb", "dump"): ("mariadb", "MariadbEngine"),
    ("mariadb", "physical"): ("mariadb_physical", "MariadbPhysicalEngine"),
}



@dataclass(frozen=True)
class Capabilities:
    """What an engine in one mode can do, declared here (no driver import) and checked at policy load."""

    scratch: tuple[str, ...]  # drill.scratch.type values it can drill into
    fingerprint: tuple[str, ...] = ("rows", "full")  # drill.fingerprint values
    restore_to: bool = False  # ``backupkit restore --to`` (an emergency restore into a named destination)
    pitr: bool = False  # ``backupkit drill --to-time`` (recover to a point in time from archived WAL)


# (engine, mode) -> capabilities; mode None is the engine's only (or default) mode.
_CAPABILITIES = {
    ("sqlite", None): Capabilities(scratch=("ephemeral",), restore_to=True),
    ("postgres", "logical"): Capabilities(scratch=("ephemeral", "database"), restore_to=True),
    ("postgres", "pgbackrest"): Capabilities(scratch=("ephemeral",), pitr=True),
    ("mariadb", "dump"): Capabilities(scratch=("ephemeral", "database"), restore_to=True),
    ("mariadb", "physical"): Capabilities(scratch=("ephemeral",)),
    ("oracle", "datapump"): Capabilities(scratch=("database",)),
    ("oracle", "rman"): Capabilities(scratch=("database",)),
}


def mode_of(engine: str | None, source) -> str | None:
    """The mode a policy's source runs in: ``source.mode``, Oracle's ``source.oracle.mode``, or the default."""
    mode = getattr(source, "mode", None)
    if mode is None and engine == "oracle" and getattr(source, "oracle", None) is not None:
        mode = source.oracle.mode
    if mode is None:
        mode = next((m for (e, m) in _CAPABILITIES if e == engine), None)
    return mode


def capabilities(engine: str | None, source) -> Capabilities | None:
    """The declared capabilities of the engine and mode a policy uses (None for an unknown engine)."""
    return _CAPABILITIES.get((engine, mode_of(engine, source)))


def check_capabilities(engine: str | None, source, drill) -> tuple[str, str] | None:
    """(field, message) when the policy's drill asks for what its engine and mode cannot do, else None."""
    caps = capabilities(engine, source)
    if caps is None:
        return None
    mode = mode_of(engine, source)
    label = f"engine {engine}" + (f" in mode {mode}" if sum(1 for (e, _) in _CAPABILITIES if e == engine) > 1 else "")
    if drill.scratch.type not in caps.scratch:
        return ("drill.scratch.type", f"{label} drills into a scratch of type {' or '.join(caps.scratch)}, "
                                      f"not {drill.scratch.type!r}; set drill.scratch.type (see docs/policy.md)")
    if drill.fingerprint not in caps.fingerprint:
        return ("drill.fingerprint", f"{label} supports fingerprint {' or '.join(caps.fingerprint)}, not {drill.fingerprint!r}")
    return None


def pitr_refusal(engine: str | None, source) -> str | None:
    """Why a policy's engine and mode cannot drill to a point in time (``drill --to-time``), or None when it can."""
    caps = capabilities(engine, source)
    if caps is not None and caps.pitr:
        return None
    able = ", ".join(f"engine: {e} + source.mode: {m}" for (e, m), c in _CAPABILITIES.items() if c.pitr)
    return (f"engine {engine} in mode {mode_of(engine, source)} cannot recover to a point in time; only {able} "
            "(archived WAL) can; drill without --to-time")


# engine name -> (module, class) of its typed ``source`` model (no driver imports); the policy's engine picks it
_SOURCES = {
    "sqlite": ("sqlite_config", "SqliteSource"),
    "postgres": ("postgres_config", "PostgresSource"),
    "mariadb": ("mariadb_config", "MariadbSource"),
    "oracle": ("oracle_source_config", "OracleEngineSource"),
}


def source_model(engine: str):
    """The pydantic model of ``source`` for an engine (KeyError for an engine without one)."""
    module, cls = _SOURCES[engine]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


@functools.cache
def source_fields_by_engine() -> dict[str, frozenset[str]]:
    """engine -> the ``source`` fields its model accepts (as written in YAML)."""
    return {e: frozenset(info.alias or name for name, info in source_model(e).model_fields.items()) for e in _SOURCES}


@functools.cache
def all_source_fields() -> frozenset[str]:
    """Every engine's ``source`` attribute names (those of another engine read as None on a source)."""
    return frozenset(name for e in _SOURCES for name in source_model(e).model_fields)


# engine name -> module holding further validate_source / validate_scratch rules (no driver imports)
_CONFIG = {
    "mariadb": "mariadb_conn",
    "oracle": "oracle_config",  # its validate_source/validate_scratch (written by the Oracle engine's author)
}


def modes(engine: str) -> list[str]:
    """The ``source.mode`` values an engine accepts (empty: the engine has one mode and no mode field)."""
    return [m for (e, m) in _MODES if e == engine]


def engine_for(policy) -> Engine:
    """Given a policy, return the engine that backs it up (its ``engine`` and ``source.mode``)."""
    mode = getattr(policy.source, "mode", None)
    if mode is None:
        return get_engine(policy.engine)
    return get_engine(policy.engine, mode)


def get_engine(name: str, mode: str | None = None) -> Engine:
    """Given an engine name (and optionally a ``source.mode``) from a policy, return an instance of its engine."""
    try:
        module, cls = _MODES[(name, mode)] if mode is not None else _MODULES[name]
    except KeyError:
        if mode is not None and name in _MODULES:
            raise ConfigError(f"engine {name} has no mode {mode!r}; use one of {', '.join(modes(name)) or 'none'}") from None
        raise ConfigError(f"unknown engine {name!r}; use one of {', '.join(_MODULES)}") from None
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{module}":
            raise ConfigError(f"engine {name} is not implemented in backupkit {__version__} yet; "
                              "use sqlite, postgres or mariadb") from None
        raise ConfigError(
            f"engine {name} is not available ({e.name} is not installed); install backupkit[{name}]"
        ) from None
    return getattr(mod, cls)()


def _config_module(engine: str | None):
    module = _CONFIG.get(engine or "")
    return importlib.import_module(f"{__name__}.{module}") if module else None


def validate_source(engine: str | None, source) -> None:
    """Policy-load rules of ``source`` beyond its typed model (fields, types, options, mode and the
    pgbackrest block are the model's), by the engine's ``_CONFIG`` module (no-op for engines without any)."""
    mod = _config_module(engine)
    if mod is not None and hasattr(mod, "validate_source"):
        mod.validate_source(source)


def validate_scratch(engine: str | None, spec, source=None) -> None:
    """Policy-load check of ``drill.scratch`` by the engine that owns it, knowing the policy's ``source``
    (its mode) when it loaded (no-op for engines without rules)."""
    mod = _config_module(engine)
    if mod is not None:
        mod.validate_scratch(spec, source)
