"""Database engines, looked up by the policy's ``engine`` name (one module each).

An engine may also declare, in a light module that imports no driver, how its
part of a policy is validated at load time (``_CONFIG``): ``validate_source(source)``
and ``validate_scratch(scratch_spec)`` raise ValueError naming the field, which
the policy loader reports as ``<file>: field 'source': ...`` (exit 2).
"""

from __future__ import annotations

import importlib

from .. import __version__
from ..errors import ConfigError
from .base import Engine

_MODULES = {
    "sqlite": ("sqlite", "SqliteEngine"),
    "postgres": ("postgres", "PostgresEngine"),
    "mariadb": ("mariadb", "MariadbEngine"),
    "oracle": ("oracle", "OracleEngine"),
}

# engine name -> module holding validate_source / validate_scratch (no driver imports)
_CONFIG = {
    "mariadb": "mariadb_conn",
    "oracle": "oracle_config",  # its validate_source/validate_scratch (written by the Oracle engine's author)
}


def get_engine(name: str) -> Engine:
    """Given an engine name from a policy, return an instance of its engine."""
    try:
        module, cls = _MODULES[name]
    except KeyError:
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
    """Policy-load check of ``source`` by the engine that owns it (no-op for engines without rules)."""
    mod = _config_module(engine)
    if mod is not None:
        mod.validate_source(source)


def validate_scratch(engine: str | None, spec) -> None:
    """Policy-load check of ``drill.scratch`` by the engine that owns it (no-op for engines without rules)."""
    mod = _config_module(engine)
    if mod is not None:
        mod.validate_scratch(spec)
