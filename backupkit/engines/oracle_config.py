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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
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


_SID = re.compile(r"^[A-Za-z][A-Za-z0-9_$#]{0,29}$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*|[0-9A-Fa-f:]+)$")
_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,29}$")
_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]*$")


class OracleSsh(_Strict):
    """``source.oracle.ssh``: the database host, reached over SSH as the Oracle software owner (mode rman).

    The host key must already be in ``known_hosts`` (never added automatically); ``key_file`` is an
    unencrypted private key (mode 0600). RMAN and SQL*Plus log in with OS authentication (``/``)."""

    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str = "oracle"
    key_file: Path
    known_hosts: Path
    timeout: float = Field(30.0, gt=0)
    oracle_home: str | None = None  # mode rman: on the database host; rman and sqlplus run from <oracle_home>/bin
    oracle_sid: str | None = None  # mode rman: the source instance (ORACLE_SID) on that host
    work_dir: str = "/tmp"  # on the database host: backupkit creates (and removes) a private directory here

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not _HOST.fullmatch(v):
            raise ValueError(f"{v!r} is not a host name or address")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", v):
            raise ValueError(f"{v!r} is not an OS user name (the Oracle software owner, usually oracle)")
        return v

    @field_validator("key_file", "known_hosts")
    @classmethod
    def _files(cls, v: Path) -> Path:
        return _absolute(v)

    @field_validator("oracle_home", "work_dir")
    @classmethod
    def _remote(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _REMOTE_PATH.fullmatch(v) or "/../" in v + "/":
            raise ValueError(f"{v!r} is not an absolute path on the database host (letters, digits, _ . / + - only)")
        return v.rstrip("/") or "/"

    @field_validator("oracle_sid")
    @classmethod
    def _sid(cls, v: str | None) -> str | None:
        if v is not None and not _SID.fullmatch(v):
            raise ValueError(f"{v!r} is not an ORACLE_SID (a letter, then letters, digits, _ $ #)")
        return v


class OracleRman(_Strict):
    """``source.oracle.rman``: how a physical backup is taken, or which existing RMAN job is adopted."""

    tag: str | None = None  # RMAN tag; backupkit's own runs use <tag>_<yymmddhhmmss> (default tag BK)
    adopt_existing: bool = False  # do not run a backup: pick up the pieces of the DBA's latest job with this tag
    max_age_hours: float = Field(26.0, gt=0)  # an adopted job older than this fails the backup
    format: str | None = None  # directory on the database host for backupkit's pieces (default: the FRA)
    max_job_seconds: int = Field(6 * 3600, ge=60)

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str | None) -> str | None:
        if v is not None and not _TAG.fullmatch(v):
            raise ValueError(f"{v!r} is not an RMAN tag (a letter, then letters, digits and _, at most 30)")
        return v.upper() if v else v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        if v is not None and (not _REMOTE_PATH.fullmatch(v) or "/../" in v + "/"):
            raise ValueError(f"{v!r} is not an absolute directory on the database host")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _adopt(self) -> "OracleRman":
        if self.adopt_existing and not self.tag:
            raise_field("OracleRman", "tag", "adopt_existing needs the tag of the DBA's RMAN job "
                        "(e.g. NIGHTLY); backupkit picks up that job's pieces", None)
        if self.adopt_existing and self.format:
            raise_field("OracleRman", "format", "format is for backups backupkit runs; remove it with "
                        "adopt_existing (the DBA's job decides where its pieces go)", None)
        return self


class OracleSource(OracleClient):
    """``source.oracle``: what a Data Pump backup exports and where the server writes it."""

    mode: Literal["datapump", "rman"] = "datapump"
    schema_name: str = Field(alias="schema")  # the application schema, e.g. HIS
    directory: str = "DATA_PUMP_DIR"  # DIRECTORY object the dump and log are written to
    version: str = "COMPATIBLE"  # Data Pump VERSION: COMPATIBLE, LATEST or a release such as 11.2
    poll_seconds: int = Field(5, ge=1, le=300)  # GET_STATUS timeout per poll
    max_job_seconds: int = Field(6 * 3600, ge=60)  # a Data Pump job running longer is stopped and the backup fails
    export_mb_per_second: float = Field(20.0, gt=0)  # for the UNDO_RETENTION estimate (ORA-01555 risk)
    # mode rman: the database host (RMAN and SQL*Plus run there as oracle); mode datapump: the dump file is
    # read over SFTP from the DIRECTORY's path on that host instead of through BFILENAME chunks
    ssh: OracleSsh | None = None
    rman: OracleRman | None = None  # mode rman: tag, adopt the DBA's job, piece directory

    @model_validator(mode="after")
    def _mode_blocks(self) -> "OracleSource":
        if self.mode == "rman" and self.ssh is None:
            raise_field("OracleSource", "ssh", "mode rman needs source.oracle.ssh (host, key_file, known_hosts, "
                        "oracle_home, oracle_sid): RMAN runs on the database host (docs/oracle.md)", None)
        if self.mode == "rman":
            for f in ("oracle_home", "oracle_sid"):
                if getattr(self.ssh, f) is None:
                    raise_field("OracleSource", f"ssh.{f}", f"mode rman needs ssh.{f}: RMAN runs on the database "
                                "host with that ORACLE_HOME and ORACLE_SID", None)
        if self.mode != "rman" and self.rman is not None:
            raise_field("OracleSource", "rman", "the rman block is used only with mode: rman; remove it", None)
        return self

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

    user: str | None = None  # an account with the grants of docs/oracle.md (creates and drops the scratch user)
    directory: str = "DATA_PUMP_DIR"
    tablespace: str = "USERS"  # every source tablespace is remapped here
    poll_seconds: int = Field(5, ge=1, le=300)
    max_job_seconds: int = Field(6 * 3600, ge=60)

    # mode rman: the ORACLE_SID of an auxiliary instance on the database host (started NOMOUNT by the DBA)
    # that a drill DUPLICATEs the backup into, opens, fingerprints and drops; absent: RESTORE VALIDATE only.
    aux_instance: str | None = None
    # mode rman without aux_instance: the operator accepts RESTORE VALIDATE as the drill. It then passes on
    # RMAN's block checks, with "no copy opened, no data compared" recorded as a waived deviation.
    accept_validate_only: bool = False
    # mode datapump: the scratch database host; the dump is uploaded over SFTP into the DIRECTORY's path
    # instead of UTL_FILE.PUT_RAW chunks
    ssh: OracleSsh | None = None

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        return _identifier(v, "user") if v is not None else None

    @field_validator("aux_instance")
    @classmethod
    def _aux(cls, v: str | None) -> str | None:
        if v is not None and not _SID.fullmatch(v):
            raise ValueError(f"{v!r} is not an ORACLE_SID (a letter, then letters, digits, _ $ #)")
        return v

    @property
    def validate_only(self) -> bool:
        """mode rman without an auxiliary instance: the drill runs RESTORE VALIDATE on the database host only."""
        return self.aux_instance is None and self.user is None

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
    if isinstance(client, OracleSource) and client.mode == "rman" and not dsn and password_file is None \
            and not password_env:
        return  # mode rman without a connect string: no fingerprints, RMAN and sqlplus use OS authentication
    if isinstance(client, OracleScratch):
        if client.validate_only and not dsn:
            return  # mode rman, RESTORE VALIDATE only: no database to connect to
        if client.user is None:
            raise_field(model, "oracle.user", "is required: the drill connects to the scratch database as this "
                        "admin user (to import the dump; in mode rman, to open the auxiliary instance)", None)
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


def validate_scratch(spec, source=None) -> None:
    """Policy-load rule for engine oracle: a database scratch needs its ``oracle`` block (the admin user;
    checked with the endpoint in ``check_endpoint``)."""
    if spec.type == "database" and spec.oracle is None:
        raise ValueError("engine oracle needs drill.scratch.oracle with at least 'user' (see docs/oracle.md)")
    sc, mode = spec.oracle, getattr(getattr(source, "oracle", None), "mode", None)
    if sc is None:
        return
    if sc.accept_validate_only and (mode != "rman" or not sc.validate_only):
        raise_field("DrillSpec", "scratch.oracle.accept_validate_only",
                    "applies only to mode rman without aux_instance (a drill that opens no copy); remove it",
                    True)
    if mode == "rman" and sc.validate_only and not sc.accept_validate_only:
        raise_field("DrillSpec", "scratch.oracle.aux_instance",
                    "is not set, so the drill can only run RESTORE VALIDATE, which opens no copy and compares no "
                    "data; name an auxiliary instance (aux_instance, with dsn and oracle.user), or set "
                    "drill.scratch.oracle.accept_validate_only: true to pass on RMAN's block checks alone "
                    "(recorded as a deviation)", None)
