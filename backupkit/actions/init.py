"""``backupkit init DIR``: a working configuration with fresh keys and an example policy."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..keys import generate_identity, generate_signing_key, write_private

CONFIG_NAME = "backupkit.yaml"


def example_policy(db_path: Path, targets: list[str]) -> dict:
    return {
        "system": "demo-lis",
        "title": "检验信息系统 LIS (demo)",
        "tier": "30m",
        "rpo": "24h",
        "engine": "sqlite",
        "source": {"path": str(db_path)},
        "backup": {"at": "02:00", "compression_level": 3},
        "retention": {"daily": 7, "weekly": 5, "monthly": 12, "yearly": 3},
        "targets": targets,
        "drill": {
            "every": "30d",
            "scratch": {"type": "ephemeral"},
            "fingerprint": "full",
            "assertions": [
                {"name": "patients present", "sql": "SELECT count(*) FROM patients", "expect": "> 0"},
                {"name": "newest encounter within RPO", "sql": "SELECT max(admitted) FROM encounters",
                 "expect": ">= backup_time - 1 day"},
            ],
        },
        "controls": ["mlps2-l3", "hipaa", "iso27001", "nist-cp", "cis-v8"],
    }


def init(directory: Path, *, source_db: Path | None = None, offsite: Path | None = None) -> Path:
    """Create DIR/{backupkit.yaml, keys/, policies/, repo/} and return the config path.

    Refuses to overwrite an existing configuration.
    """
    directory = directory.absolute()
    cfg = directory / CONFIG_NAME
    if cfg.exists():
        raise ConfigError(f"{cfg} already exists; choose an empty directory")
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    ident, recipient = generate_identity()
    write_private(keys / "identity.txt", ident.encode())
    (keys / "recipient.txt").write_text(recipient + "\n")
    write_private(keys / "signing.pem", generate_signing_key())
    (directory / "policies").mkdir(exist_ok=True)
    targets = {}
    if offsite is not None:
        offsite.mkdir(parents=True, exist_ok=True)
        targets["offsite"] = {"type": "local", "path": str(offsite)}
    config = {
        "repository": "repo",
        "ledger": "ledger.db",
        "policies": "policies",
        "keys": {"recipients": ["keys/recipient.txt"], "identity": "keys/identity.txt",
                 "signing_key": "keys/signing.pem"},
        "targets": targets,
    }
    cfg.write_text("# backupkit global configuration (docs/operations.md)\n"
                   + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    policy = example_policy(source_db or directory / "lis.sqlite", list(targets))
    (directory / "policies" / f"{policy['system']}.yaml").write_text(
        "# One protected system: docs/policy.md explains every field.\n"
        + yaml.safe_dump(policy, sort_keys=False, allow_unicode=True))
    return cfg
