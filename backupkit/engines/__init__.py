"""Database engines, looked up by the policy's ``engine`` name (one module each)."""

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
                              "use sqlite or postgres") from None
        raise ConfigError(
            f"engine {name} is not available ({e.name} is not installed); install backupkit[{name}]"
        ) from None
    return getattr(mod, cls)()
