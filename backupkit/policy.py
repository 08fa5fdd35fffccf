"""The policy model: one YAML file per protected system, the machine-readable
《数据备份恢复方案》. Field names are a contract (docs/policy.md).

Loading errors become one-line ConfigErrors naming the file and the field.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from .durations import format_duration, parse_duration
from .errors import ConfigError
from .engines.mariadb_config import MariadbSource
from .engines.oracle_config import OracleScratch, check_endpoint, raise_field
from .engines.oracle_source_config import OracleEngineSource
from .engines.postgres_config import PostgresSource
from .engines.sqlite_config import SqliteSource

TIERS = {"30m": timedelta(minutes=30), "6h": timedelta(hours=6), "24h": timedelta(hours=24)}


def _to_td(v: Any) -> timedelta:
    if isinstance(v, timedelta):
        return v
    return parse_duration(v)


Duration = Annotated[timedelta, BeforeValidator(_to_td), PlainSerializer(format_duration, return_type=str)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Where the production data lives (never a password): one typed model per engine, each in its engine's
# driver-free ``engines/<engine>_config.py`` with only the fields that engine reads; the policy's
# ``engine`` picks it (``Policy._engine_source``), so errors are located at ``source.<field>``.
Source = SqliteSource | PostgresSource | MariadbSource | OracleEngineSource
EngineName = Literal["sqlite", "postgres", "mariadb", "oracle"]
ENGINES: tuple[str, ...] = get_args(EngineName)


class BackupSpec(_Strict):
    at: str = "02:00"
    compression_level: int = Field(3, ge=1, le=19)
    threads: int | None = Field(None, ge=0)  # zstd worker threads; default = CPU count
    # zstd long-distance matching (16 MiB window); None: the engine's default (Engine.long_distance)
    long_distance: bool | None = None

    @field_validator("at")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f"{v!r} is not a time of day; write HH:MM, e.g. 02:00")
        return v


class Retention(_Strict):
    daily: int = Field(7, ge=0)
    weekly: int = Field(5, ge=0)
    monthly: int = Field(12, ge=0)
    yearly: int = Field(3, ge=0)
    retention_class: str = Field("standard", alias="class")


class ScratchSpec(_Strict):
    type: Literal["ephemeral", "database"] = "ephemeral"
    dsn: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    oracle: OracleScratch | None = None  # engine oracle: admin user, DIRECTORY, tablespace (docs/oracle.md)

    @model_validator(mode="after")
    def _oracle_endpoint(self) -> "ScratchSpec":
        check_endpoint("ScratchSpec", dsn=self.dsn, client=self.oracle, password_file=self.password_file,
                       password_env=self.password_env)
        return self


class Assertion(_Strict):
    name: str
    sql: str
    expect: str

    @field_validator("expect")
    @classmethod
    def _parses(cls, v: str) -> str:
        from .expect import parse_expect

        parse_expect(v)  # raises ValueError with a precise message
        return v


class DrillSpec(_Strict):
    every: Duration = timedelta(days=30)
    scratch: ScratchSpec = ScratchSpec()
    fingerprint: Literal["rows", "full"] = "full"
    amcheck: bool = True  # false: drill without index checks (PostgreSQL), recorded as a deviation
    assertions: list[Assertion] = Field(default_factory=list)


class Policy(_Strict):
    system: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)
    title: str = ""
    tier: Duration
    rpo: Duration = timedelta(hours=24)
    engine: EngineName
    source: Source  # the model of ``engine`` (engines.source_model)
    backup: BackupSpec = BackupSpec()
    retention: Retention = Retention()
    targets: list[str] = Field(default_factory=list)
    drill: DrillSpec = DrillSpec()
    controls: list[str] = Field(default_factory=list)
    enabled: bool = True  # false: an example or a system being set up; every command skips it with a warning

    # Set by the loader, not by the YAML.
    file: Path | None = Field(None, exclude=True)
    content_sha256: str = Field("", exclude=True)

    @field_validator("engine", mode="before")
    @classmethod
    def _known_engine(cls, v: Any) -> Any:
        if v not in ENGINES:
            raise ValueError(f"unknown engine {v!r}; use one of {', '.join(ENGINES)}")
        return v

    @field_validator("source", mode="wrap")
    @classmethod
    def _engine_source(cls, v: Any, handler, info: ValidationInfo) -> Source:
        """The policy's engine discriminates: ``source`` is validated by that engine's model alone, so an
        error is ``source.<field>`` (a tagged union would put the tag in the location: source.postgres.x).
        A wrap validator that never calls ``handler``: the union's own validation is replaced, its serializer kept."""
        from .engines import source_model, validate_source

        engine = info.data.get("engine")
        if engine is None:  # the engine's own error (missing, unknown) is reported first
            raise ValueError("cannot be checked without a valid 'engine'")
        model = source_model(engine)
        source = v if isinstance(v, model) else model.model_validate(v)
        validate_source(engine, source)  # an engine's further rules (engines._CONFIG)
        return source

    @field_validator("drill")
    @classmethod
    def _engine_scratch(cls, v: DrillSpec, info: ValidationInfo) -> DrillSpec:
        from .engines import validate_scratch

        validate_scratch(info.data.get("engine"), v.scratch, info.data.get("source"))
        return v

    @model_validator(mode="after")
    def _engine_capabilities(self) -> "Policy":
        from .engines import check_capabilities

        problem = check_capabilities(self.engine, self.source, self.drill)
        if problem:
            raise_field("Policy", problem[0], problem[1], None)
        return self

    @field_validator("controls")
    @classmethod
    def _known_controls(cls, v: list[str]) -> list[str]:
        from .evidence.controls import load_mappings

        known = load_mappings()
        unknown = [c for c in v if c not in known]
        if unknown:
            raise ValueError(f"unknown control mapping {unknown[0]!r}; use {', '.join(sorted(known))}")
        return v

    @property
    def tier_label(self) -> str:
        for label, td in TIERS.items():
            if td == self.tier:
                return label
        return format_duration(self.tier)


def describe_validation_error(file: Path, err: ValidationError) -> str:
    """One line naming the file and the first bad field, with what to do."""
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "(top level)"
    if e["type"] == "extra_forbidden":
        return f"{file}: unknown field {where!r}; remove it or fix its spelling (see docs/policy.md)"
    if e["type"] == "missing":
        return f"{file}: required field {where!r} is missing (see docs/policy.md)"
    msg = e["msg"].removeprefix("Value error, ")
    return f"{file}: field {where!r}: {msg}"


def load_yaml(file: Path) -> tuple[Any, bytes]:
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{file}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{file}: cannot read ({e.strerror})") from None
    try:
        return yaml.safe_load(raw), raw
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None


def load_policy(file: Path) -> Policy:
    """Given a policy YAML file, return the validated Policy or raise ConfigError."""
    data, raw = load_yaml(file)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a policy must be a YAML mapping with at least system, tier, engine, source")
    if "source" in data and isinstance(data["source"], dict):
        # Relative paths in a policy are relative to the policy file.
        for k in ("path", "password_file"):
            if k in data["source"] and data["source"][k] and not Path(str(data["source"][k])).is_absolute():
                data["source"][k] = str((file.parent / str(data["source"][k])).resolve())
    for internal in ("file", "content_sha256"):  # set by the loader, never by the YAML
        if internal in data:
            raise ConfigError(f"{file}: unknown field {internal!r}; remove it (see docs/policy.md)")
    try:
        p = Policy.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(file, e)) from None
    return p.model_copy(update={"file": file, "content_sha256": hashlib.sha256(raw).hexdigest()})


def load_policies(directory: Path) -> dict[str, Policy]:
    """Load every ``*.yaml`` in ``directory``; raise the first policy's error."""
    policies, broken = load_policies_isolated(directory)
    if broken:
        raise next(iter(broken.values()))
    return policies


def _claimed_system(file: Path) -> str:
    """The system a (possibly broken) policy file is about: its ``system`` field if readable, else the file stem."""
    try:
        data = yaml.safe_load(file.read_bytes())
    except (OSError, yaml.YAMLError):
        data = None
    system = data.get("system") if isinstance(data, dict) else None
    return system if isinstance(system, str) and system else file.stem


def load_policies_isolated(directory: Path) -> tuple[dict[str, Policy], dict[str, ConfigError]]:
    """Load every ``*.yaml`` in ``directory``: (the valid policies by system, each broken one's error by the
    system it claims). One broken policy never stops the others; system ids must be unique."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: policies directory not found; set 'policies:' in the config")
    out: dict[str, Policy] = {}
    broken: dict[str, ConfigError] = {}
    for f in sorted(directory.glob("*.y*ml")):
        try:
            p = load_policy(f)
        except ConfigError as e:
            broken[_claimed_system(f)] = e
            continue
        if p.system in out:
            broken[p.system] = ConfigError(f"{f}: system {p.system!r} is already defined in {out[p.system].file}")
            continue
        out[p.system] = p
    return out, broken
