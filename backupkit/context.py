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
from .policy import Policy, load_policies_isolated
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
    readonly: bool = False  # a read-only command: open the ledger without write access
    _ledger: Ledger | None = field(default=None, repr=False)

    @classmethod
    def load(cls, config_file: str | os.PathLike | None) -> "Context":
        return cls(load_config(config_file))

    @cached_property
    def _loaded(self) -> tuple[dict[str, Policy], dict[str, ConfigError]]:
        policies, broken = load_policies_isolated(self.config.policies)
        self.disabled = {s: p for s, p in policies.items() if not p.enabled}
        policies = {s: p for s, p in policies.items() if p.enabled}
        for system, p in list(policies.items()):  # found at load time, not after tonight's dump
            unknown = [t for t in p.targets if t not in self.config.targets]
            if unknown:
                known = ", ".join(sorted(self.config.targets)) or "none"
                broken[system] = ConfigError(f"{p.file}: field 'targets': target {unknown[0]!r} is not defined in "
                                             f"{self.config.file} (defined: {known}); define it there or fix the name")
                del policies[system]
        return policies, broken

    @property
    def policies(self) -> dict[str, Policy]:
        """The valid policies; a broken one is in ``policy_errors`` and never stops the others."""
        return self._loaded[0]

    @property
    def policy_errors(self) -> dict[str, ConfigError]:
        return self._loaded[1]

    @property
    def disabled_policies(self) -> dict[str, Policy]:
        self._loaded
        return self.disabled

    def policy(self, system: str) -> Policy:
        if system in self.policy_errors:
            raise self.policy_errors[system]
        if system in self.disabled_policies:
            raise ConfigError(f"{self.disabled_policies[system].file}: system {system} is disabled ('enabled: false'); "
                              "fill in its source and set 'enabled: true'")
        try:
            return self.policies[system]
        except KeyError:
            known = ", ".join(sorted(self.policies)) or "none"
            raise ConfigError(f"no policy for system {system!r} in {self.config.policies} (known: {known})") from None

    def select(self, systems: tuple[str, ...] | list[str], all_: bool = False) -> list[Policy]:
        """The named policies, or every valid one (broken ones are reported by the caller: policy_errors)."""
        if all_ or not systems:
            if not self.policies and not self.policy_errors and not self.disabled_policies:
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
            self._ledger = Ledger(Path(self.config.ledger), readonly=self.readonly)
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
