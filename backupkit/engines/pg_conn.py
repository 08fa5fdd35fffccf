"""How backupkit reaches a PostgreSQL server.

Owns: turning a policy's ``source`` (a URI or key=value DSN plus host/port/user/
database fields and libpq extras in ``options``) or a scratch DSN into libpq
parameters; reading the password from a 0600 file or an environment variable;
connecting with psycopg and the pinned session settings that make row text
forms comparable; handing the password to client programs through a private
PGPASSFILE (never argv); and deciding whether two endpoints are the same
server and database.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .kit import child_env, read_secret
from .postgres_config import PostgresOptions
from ..errors import ConfigError, JobFailed

logger = logging.getLogger(__name__)

# Keys of ``source.options`` that are backupkit's own (typed and checked at load by
# ``postgres_config.PostgresOptions``); every other key is a libpq parameter.
ENGINE_OPTIONS = set(PostgresOptions.model_fields)

# Pinned on both sides (source at dump time, scratch after restore) so that the
# text form of every row, and therefore its fingerprint, is identical.
PINNED_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
    # backupkit's own transactions (txid_current() checks) never wait for a synchronous standby
    "synchronous_commit": "local",
}

DEFAULT_CONNECT_TIMEOUT = "15"


@dataclass(frozen=True)
class Endpoint:
    """One PostgreSQL database to connect to. ``params`` never holds the password."""

    params: dict[str, str]
    password: str | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return self.params.get("host") or os.environ.get("PGHOST") or "/var/run/postgresql"

    @property
    def port(self) -> int:
        return int(self.params.get("port") or os.environ.get("PGPORT") or 5432)

    @property
    def user(self) -> str:
        return self.params.get("user") or os.environ.get("PGUSER") or _os_user()

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or os.environ.get("PGDATABASE") or self.user

    @property
    def label(self) -> str:
        """``host:port database name``, for messages (no secrets)."""
        return f"{self.host}:{self.port} database {self.dbname}"

    def conninfo(self) -> str:
        """A key=value connection string for client programs' ``--dbname`` (no password)."""
        return make_conninfo(**self.params)

    def with_db(self, dbname: str) -> "Endpoint":
        return Endpoint({**self.params, "dbname": dbname}, self.password)


def _os_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def read_password(*, password_file: Path | None, password_env: str | None, what: str) -> str | None:
    """Given a policy's password_file / password_env, return the password or None (libpq's own
    mechanisms, PGPASSFILE or ~/.pgpass, then apply). See kit.read_secret."""
    return read_secret(password_file=password_file, password_env=password_env, what=what)


def parse_dsn(dsn: str | None, what: str) -> dict[str, str]:
    """Given a URI or key=value DSN, return libpq parameters; ConfigError when malformed."""
    if not dsn:
        return {}
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"{what}: the DSN is not a valid PostgreSQL connection string ({_first_line(e)})") from None
    if "password" in params:
        raise ConfigError(f"{what}: the DSN contains a password; move it to password_file (mode 0600)")
    return {k: str(v) for k, v in params.items() if v is not None}


def source_endpoint(policy, *, with_password: bool = True) -> Endpoint:
    """Given a policy, return the source Endpoint: DSN, overridden by host/port/user/database
    fields and completed with libpq extras from ``options``; password read when asked."""
    src = policy.source
    what = f"policy {policy.system}: source"
    params = parse_dsn(src.dsn, what)
    for key, value in (("host", src.host), ("port", src.port), ("user", src.user), ("dbname", src.database)):
        if value is not None:
            params[key] = str(value)
    for key, value in (src.options or {}).items():
        if key not in ENGINE_OPTIONS and value is not None:
            params[key] = str(value)
    if not params:
        raise ConfigError(f"policy {policy.system}: source needs a dsn or host/database fields for engine postgres")
    params.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    params.setdefault("application_name", "backupkit")
    password = None
    if with_password:
        password = read_password(password_file=src.password_file, password_env=src.password_env, what=f"policy {policy.system}: source")
    return Endpoint(params, password)


def dsn_endpoint(dsn: str, *, what: str, password_file: Path | None = None, password_env: str | None = None) -> Endpoint:
    """Given a scratch or restore-target DSN (and optional password source), return its Endpoint."""
    params = parse_dsn(dsn, what)
    params.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    params.setdefault("application_name", "backupkit")
    return Endpoint(params, read_password(password_file=password_file, password_env=password_env, what=what))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def connect_reason(e: BaseException) -> str:
    """Given a libpq connection error, return its cause in one line (libpq never echoes passwords)."""
    line = _first_line(e)
    if "failed: " in line:
        line = line.rsplit("failed: ", 1)[1]
    return " ".join(line.replace("FATAL:", "").split())


def connect(endpoint: Endpoint, *, what: str, autocommit: bool = True, pinned: bool = True) -> psycopg.Connection:
    """Given an Endpoint, return an open connection with the pinned settings applied.

    Failure raises JobFailed "<what>: cannot connect to PostgreSQL at host:port database db: reason".
    """
    kwargs: dict[str, Any] = {"autocommit": autocommit}
    if endpoint.password is not None:
        kwargs["password"] = endpoint.password
    try:
        conn = psycopg.connect(endpoint.conninfo(), **kwargs)
    except psycopg.Error as e:
        raise JobFailed(f"{what}: cannot connect to PostgreSQL at {endpoint.label}: {connect_reason(e)}") from None
    if pinned:
        pin_session(conn)
    return conn


def pin_session(conn: psycopg.Connection) -> None:
    """Apply PINNED_SETTINGS to the session (set_config is session-wide outside a transaction)."""
    for name, value in PINNED_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    if not conn.autocommit:
        conn.commit()


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def client_env(endpoint: Endpoint, workdir: Path) -> Iterator[dict[str, str]]:
    """Given an Endpoint and a private directory, yield the environment for client programs.

    When the endpoint has a password it goes into a temporary PGPASSFILE (mode
    0600 from creation) that is removed on exit; argv never carries it.
    """
    env = child_env()  # never a policy's password_env variable
    if endpoint.password is None:
        yield env
        return
    env.pop("PGPASSWORD", None)  # it would take precedence over our PGPASSFILE
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f".pgpass-{os.getpid()}-{id(endpoint):x}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"*:*:*:*:{_pgpass_escape(endpoint.password)}\n")
        env["PGPASSFILE"] = str(path)
        yield env
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _host_key(host: str) -> frozenset[str]:
    """Given a libpq host, return a comparable identity: a socket path, or the set of its addresses
    (every loopback address counts as the same local host)."""
    if host.startswith("/") or host.startswith("@"):
        return frozenset({"socket:" + os.path.realpath(host) if host.startswith("/") else host})
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return frozenset({"name:" + host.lower()})
    out = set()
    for a in addrs:
        try:
            ip = ipaddress.ip_address(a.split("%")[0])
        except ValueError:
            out.add(a)
            continue
        out.add("loopback" if ip.is_loopback else str(ip))
    return frozenset(out)


def same_database_by_address(a: Endpoint, b: Endpoint) -> bool:
    """True when two endpoints name the same database on the same host and port, judging by
    resolved addresses (a local socket and a loopback address count as the same host)."""
    if a.port != b.port or a.dbname != b.dbname:
        return False
    ka, kb = _host_key(a.host), _host_key(b.host)
    local = lambda k: any(x == "loopback" or x.startswith("socket:") for x in k)  # noqa: E731
    return bool(ka & kb) or (local(ka) and local(kb))


def server_identity(conn: psycopg.Connection) -> tuple[str | None, str]:
    """Given a connection, return (system_identifier or None when not permitted, current_database())."""
    dbname = conn.execute("SELECT current_database()").fetchone()[0]
    try:
        with conn.transaction():
            sysid = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    except psycopg.Error:
        sysid = None
    return sysid, dbname
