"""How backupkit reaches an Oracle database with python-oracledb.

Owns: turning a policy's source or scratch into a ``ConnectSpec`` (connect
string, user, where the password comes from, thin or thick mode); opening the
connection (``open_connection``, the one function tests replace with a
recording stand-in); the session settings fingerprints rely on; reading a
server's identity (DBID, name, release, character sets); and turning ORA-
errors into one-line messages that say what to do.

The password comes from a 0600 file or an environment variable, or is not
needed at all with a Secure External Password Store wallet. It is handed to
python-oracledb as a keyword argument: never argv, a log line or a record.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, JobFailed, TransientError
from .kit import read_secret
from .oracle_config import OracleClient

logger = logging.getLogger(__name__)

ORA_CODE = re.compile(r"\b(ORA|DPY|TNS)-(\d{5})")

# Pinned on both sides so that the canonical text of a row (docs/format.md, Oracle) does not depend on
# the client's NLS environment. Dates and numbers are formatted with explicit masks anyway.
SESSION_SETUP = (
    "ALTER SESSION SET TIME_ZONE = '+00:00'",
    "ALTER SESSION SET NLS_NUMERIC_CHARACTERS = '.,'",
)


@dataclass(frozen=True)
class ConnectSpec:
    """One Oracle account to connect as. ``password`` is never printed (repr=False)."""

    dsn: str
    user: str | None
    client: OracleClient
    password: str | None = field(default=None, repr=False)
    what: str = "oracle"  # "policy his: source" etc., for messages

    @property
    def external_auth(self) -> bool:
        return self.client.wallet_location is not None

    @property
    def label(self) -> str:
        return f"{self.user or '(wallet)'}@{self.dsn}"


def source_spec(policy) -> ConnectSpec:
    """The ConnectSpec of a policy's source (ConfigError naming the field when incomplete)."""
    src = policy.source
    if src.oracle is None:
        raise ConfigError(f"policy {policy.system}: field 'source.oracle' is required for engine oracle "
                          "(at least schema; see docs/oracle.md)")
    what = f"policy {policy.system}: source"
    password = None if src.oracle.wallet_location else read_secret(
        password_file=src.password_file, password_env=src.password_env, what=what)
    return ConnectSpec(dsn=src.dsn or "", user=src.user, client=src.oracle, password=password, what=what)


def scratch_spec(policy) -> ConnectSpec:
    """The ConnectSpec of a policy's drill scratch database."""
    sc = policy.drill.scratch
    if sc.type != "database" or sc.oracle is None or not sc.dsn or not sc.oracle.user:
        raise ConfigError(f"policy {policy.system}: engine oracle drills into an existing scratch database: set "
                          "drill.scratch.type: database, drill.scratch.dsn and drill.scratch.oracle.user "
                          "(see docs/oracle.md)")
    what = f"policy {policy.system}: scratch"
    password = None if sc.oracle.wallet_location else read_secret(
        password_file=sc.password_file, password_env=sc.password_env, what=what)
    return ConnectSpec(dsn=sc.dsn, user=sc.oracle.user, client=sc.oracle, password=password, what=what)


_thick: dict[str, Any] = {}


def init_thick(client: OracleClient) -> None:
    """Enable thick mode once per process (python-oracledb cannot switch back); ConfigError on a mismatch."""
    import oracledb

    wanted = {"lib_dir": str(client.client_lib_dir) if client.client_lib_dir else None,
              "config_dir": str(client.tns_admin) if client.tns_admin else None}
    if _thick:
        if _thick != wanted:
            raise ConfigError(f"thick mode was already enabled with {_thick}; one process can load one Oracle "
                              "Client: give every Oracle policy the same client_lib_dir and tns_admin")
        return
    try:
        oracledb.init_oracle_client(**wanted)
    except oracledb.Error as e:
        raise ConfigError(f"cannot load the Oracle Client libraries from {wanted['lib_dir'] or 'the loader path'} "
                          f"({one_line(e)}); install Oracle Instant Client 19c or later there "
                          "(docs/oracle.md, thick mode)") from None
    _thick.update(wanted)


def open_connection(spec: ConnectSpec):
    """Given a ConnectSpec, return an open python-oracledb connection (the seam tests replace)."""
    import oracledb

    kwargs: dict[str, Any] = {"dsn": spec.dsn}
    if spec.client.thick_mode:
        init_thick(spec.client)
    elif spec.client.tns_admin:
        kwargs["config_dir"] = str(spec.client.tns_admin)
    if spec.external_auth:
        kwargs["externalauth"] = True
    else:
        kwargs.update(user=spec.user, password=spec.password)
    return oracledb.connect(**kwargs)


def ora_codes(err: BaseException) -> list[str]:
    """The ``ORA-nnnnn`` codes in an error's text, first one first."""
    return [f"{a}-{n}" for a, n in ORA_CODE.findall(str(err))]


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


_CONNECT_HINTS = {
    "ORA-01017": "wrong user or password: check the password file (the password is never printed)",
    "ORA-28000": "the account is locked: ALTER USER ... ACCOUNT UNLOCK",
    "ORA-12541": "no listener at that host and port: check the port and that the listener runs (lsnrctl status)",
    "ORA-12514": "the listener does not know that service: check the service name (lsnrctl services)",
    "ORA-12154": "the TNS alias could not be resolved: check tns_admin/tnsnames.ora",
    "ORA-12170": "connect timeout: check the host name and firewalls",
    "DPY-3010": "this database release needs thick mode: set oracle.client_lib_dir to an Oracle Client 19c or later",
    "DPY-4011": "the database or network closed the connection",
}


def connect(spec: ConnectSpec, connector) -> Any:
    """Connect with ``connector`` (OracleEngine.connect), pin the session; JobFailed without secrets."""
    try:
        conn = connector(spec)
    except ConfigError:
        raise
    except Exception as e:  # python-oracledb raises DatabaseError/InterfaceError; stand-ins raise the same
        codes = ora_codes(e)
        hint = next((_CONNECT_HINTS[c] for c in codes if c in _CONNECT_HINTS), "")
        cls = TransientError if any(c in ("ORA-12541", "ORA-12170", "DPY-4011") for c in codes) else JobFailed
        raise cls(f"{spec.what}: cannot connect to Oracle {spec.label}: {one_line(e)}" + (f"; {hint}" if hint else "")) from None
    cur = conn.cursor()
    try:
        for stmt in SESSION_SETUP:
            cur.execute(stmt)
    finally:
        cur.close()
    return conn


@dataclass(frozen=True)
class ServerIdentity:
    dbid: int
    name: str
    version: str  # e.g. 19.3.0.0.0
    charset: str
    ncharset: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


IDENTITY_SQL = ("SELECT d.dbid, d.name, (SELECT value FROM nls_database_parameters WHERE parameter = 'NLS_CHARACTERSET'), "
                "(SELECT value FROM nls_database_parameters WHERE parameter = 'NLS_NCHAR_CHARACTERSET') FROM v$database d")
# In a pluggable database v$database.dbid is the container's: the PDB's own DBID identifies the data.
CON_DBID_SQL = "SELECT SYS_CONTEXT('USERENV', 'CON_DBID') FROM dual"


def server_identity(conn, what: str) -> ServerIdentity:
    """DBID (the PDB's on 12c+), name, release and character sets of the connected database."""
    cur = conn.cursor()
    try:
        try:
            dbid, name, cs, ncs = cur.execute(IDENTITY_SQL).fetchone()
        except Exception as e:
            raise JobFailed(f"{what}: cannot read v$database ({one_line(e)}); GRANT SELECT ON v_$database and "
                            "nls_database_parameters to the backup account (docs/oracle.md)") from None
        version = conn.version
        if int(version.split(".")[0]) >= 12:
            con = cur.execute(CON_DBID_SQL).fetchone()[0]
            if con:
                dbid = int(con)
    finally:
        cur.close()
    return ServerIdentity(int(dbid), name, version, cs, ncs)
