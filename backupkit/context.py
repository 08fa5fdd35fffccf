"""The run context every action receives: config, policies, keys, repository
and ledger, loaded lazily so a command only touches what it needs (a backup
host never needs the age identity)."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from . import __version__
from .config import Config, load_config
from .errors import ConfigError
from .keys import Identity, Recipient, Signer, load_identities, load_recipients, load_signer
from .ledger import Ledger
from .policy import Policy, load_policies
from .repository import Repository


def operator_info() -> dict:
    """Who runs this job and where: recorded in every ledger record that acts."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return {"user": os.environ.get("BACKUPKIT_OPERATOR", user), "account": user, "uid": os.getuid(),
            "host": socket.gethostname()}


@dataclass
class Context:
    config: Config
    tool: str = f"backupkit {__version__}"
    _ledger: Ledger | None = field(default=None, repr=False)

    @classmethod
    def load(cls, config_file: str | os.PathLike | None) -> "Context":
        return cls(load_config(config_file))

    @cached_property
    def policies(self) -> dict[str, Policy]:
        return load_policies(self.config.policies)

    def policy(self, system: str) -> Policy:
        try:
            return self.policies[system]
        except KeyError:
            known = ", ".join(sorted(self.policies)) or "none"
            raise ConfigError(f"no policy for system {system!r} in {self.config.policies} (known: {known})") from None

    def select(self, systems: tuple[str, ...] | list[str], all_: bool = False) -> list[Policy]:
        if all_ or not systems:
            if not self.policies:
                raise ConfigError(f"no policies found in {self.config.policies}; add <system>.yaml files")
            return list(self.policies.values())
        return [self.policy(s) for s in systems]

    @cached_property
    def signer(self) -> Signer:
        return load_signer(self.config.keys.signing_key)

    @cached_property
    def recipients(self) -> list[Recipient]:
        return load_recipients(self.config.keys.recipients)

    @cached_property
    def identities(self) -> list[Identity]:
        return load_identities(self.config.keys.identity)

    @cached_property
    def repository(self) -> Repository:
        return Repository(Path(self.config.repository))

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(Path(self.config.ledger))
        return self._ledger

    @cached_property
    def operator(self) -> dict:
        return operator_info()

    def target(self, name: str):
        from .targets import open_target

        try:
            cfg = self.config.targets[name]
        except KeyError:
            known = ", ".join(sorted(self.config.targets)) or "none"
            raise ConfigError(f"target {name!r} is not defined in {self.config.file} (known: {known})") from None
        return open_target(name, cfg)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
