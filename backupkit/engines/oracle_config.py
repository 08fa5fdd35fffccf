"""The typed policy fields of the Oracle engine, and connect-descriptor validation.

Owns: ``source.oracle`` and ``drill.scratch.oracle`` (what to export, which
DIRECTORY object, thick or thin mode, TNS and wallet configuration) and the
checks that run when a policy is loaded, so a bad connect string or a missing
tnsnames.ora entry is a one-line ``file: field 'source.dsn': ...`` error instead
of an ORA-12154 at 02:00. Imports nothing from python-oracledb: policies load
on hosts without the ``oracle`` extra.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

# An unquoted Oracle identifier (schema, DIRECTORY object, tablespace, user): stored upper case.
IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_$#]{0,127}$")

# Easy Connect (Plus): [tcp|tcps://][//]host[:port]/service[:server][/instance][?params]
_EZCONNECT = re.compile(
    r"^(?:(?:tcps?)://)?(?://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(?::(?P<port>\d{1,5}))?"
    r"/(?P<service>[A-Za-z0-9][A-Za-z0-9_.$#-]*)(?::(?:dedicated|shared|pooled))?(?:/[A-Za-z0-9_]+)?(?:\?\S*)?$",
    re.I)
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_USER_PASSWORD = re.compile(r"^[^/@()\s]+/[^@\s]*@")


def _identifier(v: str, what: str) -> str:
    if not IDENTIFIER.fullmatch(v or ""):
        raise ValueError(f"{v!r} is not an Oracle {what} name (a letter, then letters, digits, _ $ #; "
                         "quoted mixed-case names are not supported)")
    return v.upper()


def _absolute(v: Path | None) -> Path | None:
    if v is not None and not Path(v).is_absolute():
        raise ValueError(f"{v} is not an absolute path; write the full path")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OracleClient(_Strict):
    """How python-oracledb reaches a database: thin by default, thick when a client library is named."""

    tns_admin: Path | None = None  # directory with tnsnames.ora (and sqlnet.ora for a wallet)
    wallet_location: Path | None = None  # Secure External Password Store wallet: no password anywhere (thick mode)
    client_lib_dir: Path | None = None  # Oracle Client 19c+ libraries: thick mode (required for Oracle 11.2)
    thick: bool = False  # thick mode with the client libraries on the system loader path

    @field_validator("tns_admin", "wallet_location", "client_lib_dir")
    @classmethod
    def _paths(cls, v: Path | None) -> Path | None:
        return _absolute(v)

    @property
    def thick_mode(self) -> bool:
        return self.thick or self.client_lib_dir is not None


class OracleSource(OracleClient):
    """``source.oracle``: what a Data Pump backup exports and where the server writes it."""

    mode: Literal["datapump", "rman"] = "datapump"
    schema_name: str = Field(alias="schema")  # the application schema, e.g. HIS
    directory: str = "DATA_PUMP_DIR"  # DIRECTORY object the dump and log are written to
    version: str = "COMPATIBLE"  # Data Pump VERSION: COMPATIBLE, LATEST or a release such as 11.2
    poll_seconds: int = Field(5, ge=1, le=300)  # GET_STATUS timeout per poll
    max_job_seconds: int = Field(6 * 3600, ge=60)  # a Data Pump job running longer is stopped and the backup fails
    export_mb_per_second: float = Field(20.0, gt=0)  # for the UNDO_RETENTION estimate (ORA-01555 risk)

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, v: str) -> str:
        return _identifier(v, "schema")

    @field_validator("directory")
    @classmethod
    def _directory(cls, v: str) -> str:
        return _identifier(v, "DIRECTORY object")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v.upper() in ("COMPATIBLE", "LATEST") or re.fullmatch(r"\d{1,2}(\.\d{1,2}){1,3}", v):
            return v.upper()
        raise ValueError(f"{v!r} is not a Data Pump VERSION; use COMPATIBLE, LATEST or a release such as 11.2")


class OracleScratch(OracleClient):
    """``drill.scratch.oracle``: the drill database's admin account, DIRECTORY and tablespace."""

    user: str  # an account with the grants of docs/oracle.md (creates and drops the scratch user)
    directory: str = "DATA_PUMP_DIR"
    tablespace: str = "USERS"  # every source tablespace is remapped here
    poll_seconds: int = Field(5, ge=1, le=300)
    max_job_seconds: int = Field(6 * 3600, ge=60)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        return _identifier(v, "user")

    @field_validator("directory")
    @classmethod
    def _directory(cls, v: str) -> str:
        return _identifier(v, "DIRECTORY object")

    @field_validator("tablespace")
    @classmethod
    def _tablespace(cls, v: str) -> str:
        return _identifier(v, "tablespace")


def descriptor_problem(dsn: str | None, client: OracleClient) -> str | None:
    """Given a connect string and its client settings, return what is wrong with it (None when valid).

    Accepted: Easy Connect ``host[:port]/service`` (also ``tcps://``, ``:pooled``, ``?params``), a full
    ``(DESCRIPTION=...)``, or a TNS alias found in ``tns_admin``/tnsnames.ora."""
    if not dsn:
        return "is required for engine oracle: write host:port/service or a TNS alias"
    if _USER_PASSWORD.match(dsn) or re.search(r"password\s*=", dsn, re.I):
        return "contains a user or password; put the user in 'user' and the password in password_file (mode 0600)"
    if dsn.lstrip().startswith("("):
        depth = 0
        for ch in dsn:
            depth += (ch == "(") - (ch == ")")
            if depth < 0:
                break
        if depth != 0 or "DESCRIPTION" not in dsn.upper():
            return f"{dsn!r} is not a valid connect descriptor (unbalanced parentheses or no DESCRIPTION)"
        return None
    if ":" in dsn or "/" in dsn:
        m = _EZCONNECT.fullmatch(dsn)
        if not m:
            return f"{dsn!r} is not an Easy Connect string; write host:port/service, e.g. his-db:1521/HIS"
        if m.group("port") and not 0 < int(m.group("port")) < 65536:
            return f"{dsn!r} has port {m.group('port')}, which is not between 1 and 65535"
        return None
    if not _ALIAS.fullmatch(dsn):
        return f"{dsn!r} is neither host:port/service nor a TNS alias"
    if client.tns_admin is None:
        return (f"{dsn!r} is a TNS alias but oracle.tns_admin is not set; set it to the directory holding "
                "tnsnames.ora, or write host:port/service")
    names = Path(client.tns_admin) / "tnsnames.ora"
    try:
        text = names.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"TNS alias {dsn!r}: cannot read {names} ({e.strerror})"
    if not re.search(rf"^\s*{re.escape(dsn)}(\.[A-Za-z0-9_.-]+)?\s*=", text, re.I | re.M):
        return f"TNS alias {dsn!r} is not defined in {names}"
    return None


def credentials_problem(client: OracleClient, *, password_file, password_env) -> tuple[str, str] | None:
    """(field, message) when the account has no usable credential source, else None."""
    if client.wallet_location is not None:
        if not client.thick_mode:
            return ("oracle.wallet_location", "a Secure External Password Store wallet needs thick mode; "
                    "set oracle.client_lib_dir to an Oracle Client 19c or later")
        if client.tns_admin is None:
            return ("oracle.tns_admin", "a wallet needs tns_admin: the directory whose sqlnet.ora names the wallet")
        return None
    if password_file is None and not password_env:
        return ("password_file", "engine oracle needs password_file (mode 0600) or oracle.wallet_location; "
                "a password is never read from the connect string or the command line")
    return None


def raise_field(model: str, field: str, message: str, value) -> None:
    """Raise a ValidationError located at ``field`` of the enclosing model (so the loader names it)."""
    raise ValidationError.from_exception_data(model, [InitErrorDetails(
        type=PydanticCustomError("value_error", "{m}", {"m": message}), loc=tuple(field.split(".")), input=value)])


def check_endpoint(model: str, *, dsn, client: OracleClient | None, password_file, password_env) -> None:
    """The load-time checks of an Oracle endpoint (source or scratch); no-op without an oracle block."""
    if client is None:
        return
    problem = descriptor_problem(dsn, client)
    if problem:
        raise_field(model, "dsn", problem, dsn)
    cred = credentials_problem(client, password_file=password_file, password_env=password_env)
    if cred:
        raise_field(model, cred[0], cred[1], None)


def validate_source(source) -> None:
    """Policy-load rule for engine oracle (backupkit.engines._CONFIG): the ``oracle`` block is required."""
    if source.oracle is None:
        raise ValueError("engine oracle needs source.oracle with at least 'schema' (see docs/oracle.md)")


def validate_scratch(spec) -> None:
    """Policy-load rule for engine oracle: a database scratch needs its ``oracle`` block (the admin user)."""
    if spec.type == "database" and spec.oracle is None:
        raise ValueError("engine oracle needs drill.scratch.oracle with at least 'user' (see docs/oracle.md)")
