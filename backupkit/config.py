"""The global configuration: repository, ledger, policies directory, keys and
named offsite targets. Read from ``--config FILE``, else ``$BACKUPKIT_CONFIG``,
else ``/etc/backupkit/backupkit.yaml``. Relative paths are relative to the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .policy import describe_validation_error, load_yaml

DEFAULT_CONFIG = Path("/etc/backupkit/backupkit.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeysConfig(_Strict):
    recipients: list[str] = Field(default_factory=list)  # files or age1... literals
    identity: Path | None = None  # only on hosts that drill or restore
    signing_key: Path


class RetryConfig(_Strict):
    attempts: int = Field(5, ge=1)
    max_time: float = Field(600.0, gt=0)  # seconds, total, across attempts
    initial_delay: float = Field(1.0, ge=0)


class LocalTargetConfig(_Strict):
    type: Literal["local"]
    path: Path
    max_rate: str | None = None  # e.g. "20MB/s"
    retry: RetryConfig = RetryConfig(attempts=1)


class SftpTargetConfig(_Strict):
    type: Literal["sftp"]
    host: str
    port: int = 22
    user: str
    path: str
    key_file: Path
    known_hosts: Path
    verify: Literal["auto", "remote-sha256sum", "read-back"] = "auto"
    max_rate: str | None = None
    retry: RetryConfig = RetryConfig()
    timeout: float = Field(30.0, gt=0)


TargetConfig = Annotated[Union[LocalTargetConfig, SftpTargetConfig], Field(discriminator="type")]


class WebhookConfig(_Strict):
    url: str
    format: Literal["generic", "wecom", "dingtalk", "slack"] = "generic"
    timeout: float = Field(10.0, gt=0)


class EmailConfig(_Strict):
    host: str
    port: int = 25
    starttls: bool = False
    user: str | None = None
    password_file: Path | None = None  # mode 0600
    sender: str = Field(alias="from")
    to: list[str]
    timeout: float = Field(15.0, gt=0)


class NotifyConfig(_Strict):
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    email: EmailConfig | None = None
    on: list[Literal["failure", "overdue", "success"]] = Field(default_factory=lambda: ["failure", "overdue"])


class Config(_Strict):
    repository: Path
    ledger: Path
    policies: Path
    keys: KeysConfig
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    log_file: Path | None = None
    # where plaintext work lives: drill and restore scratch, decrypted archives, downloads (default: system temp dir);
    # ``scratch_dir`` is the name before 0.2 and means the same
    work_dir: Path | None = None
    scratch_dir: Path | None = None
    lock_timeout: float = Field(60.0, ge=0)
    notify: NotifyConfig = NotifyConfig()

    file: Path | None = Field(None, exclude=True)


def _absolutize(data: dict, base: Path) -> dict:
    def fix(v):
        if v is None:
            return v
        p = Path(str(v))
        return str(p if p.is_absolute() else (base / p))

    for k in ("repository", "ledger", "policies", "log_file", "scratch_dir", "work_dir"):
        if k in data:
            data[k] = fix(data[k])
    keys = data.get("keys")
    if isinstance(keys, dict):
        for k in ("identity", "signing_key"):
            if k in keys:
                keys[k] = fix(keys[k])
        if isinstance(keys.get("recipients"), list):
            keys["recipients"] = [r if str(r).startswith("age1") else fix(r) for r in keys["recipients"]]
    email = (data.get("notify") or {}).get("email")
    if isinstance(email, dict) and email.get("password_file"):
        email["password_file"] = fix(email["password_file"])
    for t in (data.get("targets") or {}).values():
        if isinstance(t, dict):
            for k in ("key_file", "known_hosts"):
                if k in t:
                    t[k] = fix(t[k])
            if t.get("type") == "local" and "path" in t:
                t["path"] = fix(t["path"])
    return data


def config_path(explicit: str | os.PathLike | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("BACKUPKIT_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def load_config(explicit: str | os.PathLike | None = None) -> Config:
    """Given ``--config`` (or None), find and validate the global config, or raise ConfigError."""
    file = config_path(explicit)
    if not file.exists():
        raise ConfigError(
            f"{file}: config file not found; pass --config, set BACKUPKIT_CONFIG, or create one with 'backupkit init DIR'"
        )
    data, _ = load_yaml(file)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the config must be a YAML mapping (see docs/operations.md)")
    data = _absolutize(data, file.parent.resolve())
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(file, e).replace("docs/policy.md", "docs/operations.md")) from None
    if cfg.work_dir is not None and cfg.scratch_dir is not None:
        raise ConfigError(f"{file}: set 'work_dir' only ('scratch_dir' is its old name)")
    return cfg.model_copy(update={"file": file.resolve(), "work_dir": cfg.work_dir or cfg.scratch_dir})
