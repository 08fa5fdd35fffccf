"""Offsite targets by type: one module per destination, all behind ``base.Target``.

``open_target`` builds the target a config entry names and wraps it with the
retries and bandwidth limit that entry asks for.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Blob, PutResult, Target
from .wrappers import RateLimitTarget, RetryTarget, parse_rate, unwrap, wrap

__all__ = ["Blob", "PutResult", "Target", "RateLimitTarget", "RetryTarget", "open_target", "parse_rate", "unwrap", "wrap"]


def open_target(name: str, cfg) -> Target:
    """Given a target's name and config entry, return the (wrapped) Target. Connects lazily."""
    kind = getattr(cfg, "type", None)
    if kind == "local":
        from .local import LocalTarget  # imported lazily: each type pulls in only its own dependencies

        target: Target = LocalTarget(name, cfg)
    elif kind == "sftp":
        from .sftp import SftpTarget

        target = SftpTarget(name, cfg)
    else:
        raise ConfigError(f"target {name}: unknown type {kind!r}; use 'local' or 'sftp'")
    return wrap(target, cfg)
