"""How backupkit reaches a MariaDB (or MySQL) server.

Owns: the engine's typed policy config (``source``: a ``mariadb://`` DSN and/or
host/port/socket/user/database fields, password from password_file or
password_env; ``drill.scratch``: ``ephemeral`` or ``database`` with a scratch
server DSN), validated at policy load; turning it into an Endpoint; the private
option file that hands the password to mariadb-dump and mariadb
(``--defaults-extra-file``, never argv); connecting with PyMySQL and the pinned
session settings; and deciding whether two endpoints are the same server.

This module imports PyMySQL lazily, so policy validation works without it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError, JobFailed
from .kit import read_secret, secret_file
from .mariadb_config import MODE_OPTIONS, MariadbOptions  # noqa: F401  (MODE_OPTIONS: re-exported)

SCHEMES = ("mariadb", "mysql")
DEFAULT_PORT = 3306
CONNECT_TIMEOUT = 15
# Keys of ``source.options`` (every one is backupkit's own), typed and checked at load by
# ``mariadb_config.MariadbOptions``; MODE_OPTIONS: the options of one mode only.
ENGINE_OPTIONS = set(MariadbOptions.model_fields)
# Query parameters a DSN may carry.
DSN_PARAMS = {"socket", "connect_timeout"}

# Pinned on both sides (source at dump time, scratch after restore) so that row text forms are
# identical: no sql_mode (PAD_CHAR_TO_FULL_LENGTH would change CHAR values), UTC for TIMESTAMP,
# utf8mb4 results (values are hashed as the column's own bytes; see mariadb_fingerprint.py).
PINNED_SQL = (
    "SET SESSION sql_mode = '', time_zone = '+00:00', NAMES utf8mb4 COLLATE utf8mb4_bin, "
    "character_set_results = utf8mb4, group_concat_max_len = 1073741824, max_statement_time = 0"
)


@dataclass(frozen=True)
class Endpoint:
    """One MariaDB server (and database) to connect to. ``password`` is never printed."""

    host: str | None = None
    port: int | None = None
    socket: str | None = None
    user: str | None = None
    database: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: int = CONNECT_TIMEOUT

    @property
    def via_socket(self) -> bool:
        return bool(self.socket) and (not self.host or self.host == "localhost")

    @property
    def server_label(self) -> str:
        if self.via_socket:
            return f"socket {self.socket}"
        return f"{self.host or 'localhost'}:{self.port or DEFAULT_PORT}"

    @property
    def label(self) -> str:
        """``host:port database name`` (or ``socket PATH database name``), for messages (no secrets)."""
        return f"{self.server_label}" + (f" database {self.database}" if self.database else "")

    def with_db(self, database: str | None) -> "Endpoint":
        return replace(self, database=database)

    def client_args(self) -> list[str]:
        """Connection arguments for mariadb-dump / mariadb (no password: that is in the option file)."""
        args = []
        if self.via_socket:
            args += ["--protocol=socket", f"--socket={self.socket}"]
        else:
            args += ["--protocol=tcp", f"--host={self.host or '127.0.0.1'}", f"--port={self.port or DEFAULT_PORT}"]
        if self.user:
            args.append(f"--user={self.user}")
        return args


def _option_value(value: str, what: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError(f"{what}: the password contains a line break or NUL byte, which an option file cannot carry")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def option_file_text(endpoint: Endpoint, what: str = "MariaDB") -> str:
    """The ``[client]`` option-file text carrying the endpoint's password (empty group without one)."""
    lines = ["[client]"]
    if endpoint.password is not None:
        lines.append(f"password={_option_value(endpoint.password, what)}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def option_file(endpoint: Endpoint, workdir: Path, what: str = "MariaDB") -> Iterator[Path]:
    """A private (0600, in a 0700 directory) option file for ``--defaults-extra-file``, removed on exit."""
    with secret_file(Path(workdir), option_file_text(endpoint, what), prefix="my-cnf") as path:
        yield path


# ---- parsing and validation (policy load) ------------------------------------------------------


def parse_dsn(dsn: str | None, what: str) -> dict[str, Any]:
    """Given ``mariadb://user@host:port/database?socket=/path`` (or ``mysql://``), return its parts.
    Raises ConfigError (or ValueError at policy load) naming what is wrong."""
    if not dsn:
        return {}
    try:
        u = urlsplit(dsn)
        port = u.port
    except ValueError as e:
        raise ConfigError(f"{what}: {dsn!r} is not a valid MariaDB DSN ({e}); write mariadb://user@host:3306/database") from None
    if u.scheme not in SCHEMES:
        raise ConfigError(f"{what}: {dsn!r} is not a MariaDB DSN; write mariadb://user@host:3306/database "
                          "(or mariadb://user@localhost/database?socket=/run/mysqld/mysqld.sock)")
    if u.password is not None:
        raise ConfigError(f"{what}: the DSN contains a password; move it to password_file (mode 0600)")
    out: dict[str, Any] = {}
    if u.hostname:
        out["host"] = u.hostname
    if port:
        out["port"] = port
    if u.username:
        out["user"] = unquote(u.username)
    db = unquote(u.path.lstrip("/")) if u.path else ""
    if "/" in db:
        raise ConfigError(f"{what}: {dsn!r}: the path must be one database name")
    if db:
        out["database"] = db
    for key, values in parse_qs(u.query, keep_blank_values=True).items():
        if key not in DSN_PARAMS:
            raise ConfigError(f"{what}: DSN parameter {key!r} is not supported; use {', '.join(sorted(DSN_PARAMS))}")
        if key == "password":
            raise ConfigError(f"{what}: the DSN contains a password; move it to password_file (mode 0600)")
        out[key] = values[-1]
    if "connect_timeout" in out:
        try:
            out["connect_timeout"] = int(out["connect_timeout"])
        except ValueError:
            raise ConfigError(f"{what}: connect_timeout must be a number of seconds") from None
    return out


def validate_source(source) -> None:
    """Policy-load check of a MariaDB ``source`` (raises ValueError naming the field). Fields, their types and
    ``options`` are checked before, by its typed model (``mariadb_config.MariadbSource``)."""
    try:
        parts = parse_dsn(source.dsn, "dsn")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    database = source.database or parts.get("database")
    if not database:
        raise ValueError("a MariaDB source needs the database to back up: set 'database' or put it in the dsn "
                         "(mariadb://user@host:3306/his)")
    if not (source.dsn or source.host or source.socket):
        raise ValueError("a MariaDB source needs 'dsn', 'host' or 'socket'")
    if source.port is not None and not (0 < source.port < 65536):
        raise ValueError("field 'port' must be between 1 and 65535")


def validate_scratch(spec, source=None) -> None:
    """Policy-load check of a MariaDB ``drill.scratch`` (raises ValueError naming the field).

    It does not see ``source.mode``: that mode physical drills only into ``ephemeral`` is declared in
    ``engines._CAPABILITIES`` (checked at load) and enforced again when the drill starts."""
    if spec.type == "database":
        if not spec.dsn:
            raise ValueError("scratch.dsn is required for scratch type 'database' (mariadb://user@scratch-host:3306/)")
        try:
            parse_dsn(spec.dsn, "scratch.dsn")
        except ConfigError as e:
            raise ValueError(str(e)) from None
    elif spec.dsn:
        raise ValueError("scratch.dsn is only used with scratch type 'database'; an ephemeral scratch is a private server")


def source_endpoint(policy, *, with_password: bool = True) -> Endpoint:
    """Given a policy, return the source Endpoint (DSN overridden by the host/port/socket/user/database fields)."""
    src = policy.source
    what = f"policy {policy.system}: source"
    parts = parse_dsn(src.dsn, what)
    for key, value in (("host", src.host), ("port", src.port), ("user", src.user), ("database", src.database),
                       ("socket", str(src.socket) if src.socket else None)):
        if value is not None:
            parts[key] = value
    if not parts.get("database"):
        raise ConfigError(f"policy {policy.system}: source needs a database for engine mariadb")
    password = read_secret(password_file=src.password_file, password_env=src.password_env, what=what) if with_password else None
    return Endpoint(password=password, **parts)


def dsn_endpoint(dsn: str, *, what: str, password_file: Path | None = None, password_env: str | None = None) -> Endpoint:
    """Given a scratch or restore-target DSN (and optional password source), return its Endpoint."""
    parts = parse_dsn(dsn, what)
    if not parts.get("host") and not parts.get("socket"):
        raise ConfigError(f"{what}: the DSN {dsn!r} names no host or socket")
    return Endpoint(password=read_secret(password_file=password_file, password_env=password_env, what=what), **parts)


# ---- connecting ------------------------------------------------------------------------------------


def _pymysql():
    try:
        import pymysql
    except ModuleNotFoundError:
        raise ConfigError("engine mariadb is not available (PyMySQL is not installed); install backupkit[mariadb]") from None
    return pymysql


_CONNECTION_CLASS: list = []  # built once: PyMySQL is imported lazily


class _SharedTlsContext:
    """Stands in for the TLS context of PyMySQL's default "preferred" mode (TLS when the server offers
    it). PyMySQL builds that context for every connection, loading the system CA store (about 20 ms),
    though it only uses it (``wrap_socket``) when the server offers TLS. This builds it on first use,
    once per process, with PyMySQL's own code and settings, and shares it (SSLContext objects may be
    shared). A server without TLS (the ephemeral scratch) never costs it."""

    def __init__(self, build):
        self._build = build
        self._ctx = None
        self._lock = threading.Lock()

    def _context(self):
        with self._lock:
            if self._ctx is None:
                self._ctx = self._build()
            return self._ctx

    def __getattr__(self, name: str):
        return getattr(self._context(), name)


def _connection_class():
    """PyMySQL's Connection with the shared "preferred"-mode TLS context (``_SharedTlsContext``)."""
    if not _CONNECTION_CLASS:
        base = _pymysql().connections.Connection
        shared: list = []

        class Connection(base):
            def _create_ssl_ctx(self, sslp):
                if sslp != {}:  # explicit TLS settings: built as PyMySQL always does
                    return super()._create_ssl_ctx(sslp)
                if not shared:
                    shared.append(_SharedTlsContext(lambda: base._create_ssl_ctx(self, {})))
                return shared[0]

        _CONNECTION_CLASS.append(Connection)
    return _CONNECTION_CLASS[0]


def error_reason(e: BaseException) -> str:
    """One line from a PyMySQL error (the server never echoes passwords)."""
    args = getattr(e, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return f"{' '.join(str(args[1]).split())} (error {args[0]})"
    return " ".join(str(e).split()) or type(e).__name__


def connect(endpoint: Endpoint, *, what: str, database: bool = True, pinned: bool = True):
    """Given an Endpoint, return an autocommit PyMySQL connection with the pinned session settings.

    Failure raises JobFailed "<what>: cannot connect to MariaDB at host:port database db: reason"."""
    pymysql = _pymysql()
    kwargs: dict[str, Any] = {"user": endpoint.user or _os_user(), "charset": "utf8mb4", "autocommit": True,
                              "connect_timeout": endpoint.connect_timeout, "binary_prefix": True}
    if endpoint.password is not None:
        kwargs["password"] = endpoint.password
    if endpoint.via_socket:
        kwargs["unix_socket"] = endpoint.socket
    else:
        kwargs["host"] = endpoint.host or "127.0.0.1"
        kwargs["port"] = int(endpoint.port or DEFAULT_PORT)
    if database and endpoint.database:
        kwargs["database"] = endpoint.database
    try:
        conn = _connection_class()(**kwargs)
    except pymysql.err.MySQLError as e:
        where = endpoint.label if database else endpoint.server_label
        raise JobFailed(f"{what}: cannot connect to MariaDB at {where}: {error_reason(e)}") from None
    if pinned:
        with conn.cursor() as cur:
            cur.execute(PINNED_SQL)
    return conn


def _os_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def query(conn, sql: str, args: Any = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


def scalar(conn, sql: str, args: Any = None) -> Any:
    rows = query(conn, sql, args)
    return rows[0][0] if rows else None


def server_identity(conn) -> dict[str, Any]:
    """What identifies a server: ``@@server_uuid`` where it exists (MySQL), else hostname, port and datadir."""
    row = query(conn, "SELECT @@hostname, @@port, @@datadir, @@server_id, @@version")[0]
    ident: dict[str, Any] = {"hostname": row[0], "port": int(row[1]), "datadir": row[2], "server_id": int(row[3]),
                             "version": row[4]}
    with contextlib.suppress(Exception):
        ident["server_uuid"] = scalar(conn, "SELECT @@server_uuid")
    ident["key"] = ident.get("server_uuid") or f"{ident['hostname']}:{ident['port']}:{ident['datadir']}"
    return ident


def _host_key(host: str | None) -> frozenset[str]:
    host = host or "localhost"
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


def same_server_by_address(a: Endpoint, b: Endpoint) -> bool | None:
    """True/False when the addresses decide it (same socket file; same host address and port),
    None when they cannot (one socket, one TCP address)."""
    if a.via_socket and b.via_socket:
        return os.path.realpath(a.socket) == os.path.realpath(b.socket)
    if a.via_socket or b.via_socket:
        return None
    if (a.port or DEFAULT_PORT) != (b.port or DEFAULT_PORT):
        return False
    return bool(_host_key(a.host) & _host_key(b.host))
