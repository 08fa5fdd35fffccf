"""The organisation's facts the evidence needs and the ledger cannot know.

Read from ``evidence.yaml`` next to the global config (optional; every field
has a default). Field errors are one line naming the file and field (exit 2)::

    unit: 某市第三人民医院             # 单位名称, on every page
    filing_number: "43010099999-20001" # 备案编号
    level: 3                          # 安全保护等级
    timezone: Asia/Shanghai           # display zone (default: the host's)
    approver: 李主任                   # 批准人 printed on the forms (optional)
    systems:
      his:
        name: 医院信息系统              # 定级对象名称
        owner: 张工                     # 负责人
        media: 本地磁盘阵列；异地 SFTP 服务器
        location: 信息中心机房；灾备中心
        realtime_replication: Oracle Data Guard 同步到灾备中心（见《容灾切换记录》）

``realtime_replication`` is a declaration: 8.1.4.9 b (real-time offsite
backup) can be 符合 only with it, and the report says backupkit did not check it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError
from ..policy import describe_validation_error, load_yaml

FILE_NAME = "evidence.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SystemSettings(_Strict):
    name: str = ""
    owner: str = ""
    media: str = ""
    location: str = ""
    realtime_replication: str = ""


class Settings(_Strict):
    unit: str = ""
    filing_number: str = ""
    level: int = Field(3, ge=1, le=5)
    timezone: str | None = None
    approver: str = ""
    systems: dict[str, SystemSettings] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v):
        if v is not None:
            from .i18n import zone

            try:
                zone(v, "timezone")
            except ConfigError:
                raise ValueError(f"{v!r} is not a time zone name; write e.g. Asia/Shanghai") from None
        return v

    def system(self, name: str) -> SystemSettings:
        return self.systems.get(name) or SystemSettings()


def settings_path(config_file: Path | None) -> Path | None:
    return config_file.parent / FILE_NAME if config_file is not None else None


def load_settings(config_file: Path | None) -> Settings:
    path = settings_path(config_file)
    if path is None or not path.exists():
        return Settings()
    data, _ = load_yaml(path)
    if data is None:
        return Settings()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a YAML mapping (see docs/operations.md, 'Evidence for assessors')")
    return from_dict(data, str(path))


def from_dict(data: dict, origin: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(Path(origin), e).replace("docs/policy.md", "docs/operations.md"))
