"""The database host over SSH, for ``mode: rman``: run RMAN and SQL*Plus as the Oracle software owner and
move backup pieces over SFTP.

Owns: connecting with the host key pinned exactly as the SFTP target does (``targets/sftp.py``: the
configured known_hosts only, never auto-add, a changed key refused before anything is sent; public-key
auth with the configured key file only); running one remote command with ORACLE_HOME/ORACLE_SID set
(no password anywhere: RMAN ``target /`` and ``sqlplus / as sysdba`` use OS authentication); a private
per-run directory on the host; reading and writing remote files as streams.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import secrets
import select
import shlex
import stat as stat_mod
import time
from dataclasses import dataclass
from typing import BinaryIO

import paramiko

from ..errors import ConfigError, JobFailed, TransientError
from ..targets.sftp import (
    MAX_PACKET_SIZE,
    WINDOW_SIZE,
    _load_private_key,
    _reason,
    fingerprint,
    hostkey_name,
    load_known_hosts,
    open_transport,
)
from .oracle_config import OracleSsh

logger = logging.getLogger(__name__)


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


class OracleHost:
    """One SSH connection to the database host. Use as a context manager."""

    def __init__(self, cfg: OracleSsh, what: str):
        self.cfg = cfg
        self.what = what
        self.label = f"{cfg.user}@{cfg.host}:{cfg.port}"
        self._t: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ---------------------------------------------------------------------------------

    def connect(self) -> "OracleHost":
        cfg, what = self.cfg, self.what
        pkey = _load_private_key(cfg.key_file, what)
        known = load_known_hosts(cfg.known_hosts, what)
        t = open_transport(cfg, what, known)
        try:
            server_key = t.get_remote_server_key()
            entries = known.lookup(hostkey_name(cfg.host, cfg.port))
            seen = f"{server_key.get_name()} {fingerprint(server_key)}"
            if not entries:
                raise ConfigError(
                    f"{what}: the host key of {cfg.host}:{cfg.port} is not in known_hosts {cfg.known_hosts} (server "
                    f"offered {seen}); check that fingerprint with the host's admin and add it (ssh-keyscan -p "
                    f"{cfg.port} {cfg.host} >> {cfg.known_hosts}); nothing was sent")
            ours = entries.get(server_key.get_name())
            if ours != server_key:
                had = ours or next(iter(entries.values()))
                raise ConfigError(
                    f"{what}: HOST KEY CHANGED for {cfg.host}:{cfg.port}: known_hosts {cfg.known_hosts} has "
                    f"{had.get_name()} {fingerprint(had)} but the server offered {seen}; nothing was sent")
            try:
                remaining = t.auth_publickey(cfg.user, pkey)
            except paramiko.AuthenticationException:
                raise JobFailed(f"{what}: {self.label} refused the key in {cfg.key_file}; put its public key in "
                                f"~{cfg.user}/.ssh/authorized_keys on the database host") from None
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise TransientError(f"{what}: authentication with {self.label} failed ({_reason(e)})") from None
            if remaining:
                raise JobFailed(f"{what}: {self.label} requires more authentication ({', '.join(remaining)}); "
                                "allow publickey alone for this user")
            try:
                sftp = paramiko.SFTPClient.from_transport(t, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise JobFailed(f"{what}: {self.label} did not start the SFTP subsystem ({_reason(e)}); enable "
                                "'Subsystem sftp' in its sshd_config") from None
        except BaseException:
            t.close()
            raise
        sftp.get_channel().settimeout(max(cfg.timeout, 60.0))
        self._t, self._sftp = t, sftp
        return self

    def close(self) -> None:
        for c in (self._sftp, self._t):
            with contextlib.suppress(Exception):
                if c is not None:
                    c.close()
        self._t = self._sftp = None

    def __enter__(self) -> "OracleHost":
        return self.connect() if self._t is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        assert self._sftp is not None, "not connected"
        return self._sftp

    # -- commands -----------------------------------------------------------------------------------

    def oracle_command(self, argv: list[str], *, sid: str | None = None) -> str:
        """The shell command line running ``argv`` from ORACLE_HOME/bin with the Oracle environment set."""
        home = self.cfg.oracle_home
        env = {"ORACLE_HOME": home, "ORACLE_SID": sid or self.cfg.oracle_sid,
               "NLS_DATE_FORMAT": "DD-MON-YYYY HH24:MI:SS", "NLS_LANG": "AMERICAN_AMERICA.AL32UTF8"}
        sets = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        return f"{sets} PATH={shlex.quote(home + '/bin')}:\"$PATH\" " + " ".join(shlex.quote(a) for a in argv)

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None) -> Result:
        """Run ``command`` on the host; its exit status, stdout and stderr (decoded, bounded by the caller)."""
        assert self._t is not None, "not connected"
        try:
            ch = self._t.open_session(timeout=self.cfg.timeout)
            ch.exec_command(command)
            if stdin is not None:
                ch.sendall(stdin)
            ch.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout if timeout else None
            while not ch.exit_status_ready() or ch.recv_ready() or ch.recv_stderr_ready():
                if deadline is not None and time.monotonic() > deadline:
                    ch.close()
                    raise JobFailed(f"{self.what}: a command on {self.label} ran longer than {timeout:.0f}s; "
                                    "it was disconnected (check for a hung rman or sqlplus there)")
                select.select([ch], [], [], 1.0)
                if ch.recv_ready():
                    out += ch.recv(65536)
                if ch.recv_stderr_ready():
                    err += ch.recv_stderr(65536)
            rc = ch.recv_exit_status()
            while ch.recv_stderr_ready():
                err += ch.recv_stderr(65536)
            ch.close()
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise JobFailed(f"{self.what}: running a command on {self.label} failed ({_reason(e)})") from None
        return Result(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    # -- files --------------------------------------------------------------------------------------

    def make_private_dir(self, prefix: str, name: str | None = None) -> str:
        """A fresh 0700 directory ``<prefix>-<name or random hex>`` under ``work_dir`` on the host (an
        existing one is an error: SFTP mkdir never reuses a directory)."""
        path = self.private_dir(prefix, name or secrets.token_hex(6))
        try:
            self.sftp.mkdir(path, 0o700)
            self.sftp.chmod(path, 0o700)
        except OSError as e:
            raise JobFailed(f"{self.what}: cannot create {path} on {self.label} ({e}); check work_dir "
                            f"{self.cfg.work_dir} exists and is writable by {self.cfg.user}") from None
        return path

    def private_dir(self, prefix: str, name: str) -> str:
        return posixpath.join(self.cfg.work_dir, f"{prefix}-{name}")

    def put_text(self, path: str, text: str) -> None:
        with self.sftp.open(path, "wb") as f:
            f.write(text.encode("utf-8"))
        self.sftp.chmod(path, 0o600)

    def read_text(self, path: str, limit: int = 8 << 20) -> str:
        try:
            with self.sftp.open(path, "rb") as f:
                return f.read(limit).decode("utf-8", "replace")
        except OSError:
            return ""

    def open_read(self, path: str) -> BinaryIO:
        try:
            f = self.sftp.open(path, "rb")
        except OSError as e:
            raise JobFailed(f"{self.what}: cannot read {path} on {self.label} ({e})") from None
        f.prefetch()
        return f

    def open_write(self, path: str) -> BinaryIO:
        f = self.sftp.open(path, "wb")
        f.set_pipelined(True)
        return f

    def size(self, path: str) -> int | None:
        try:
            return self.sftp.stat(path).st_size
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return self.size(path) is not None

    def remove_tree(self, path: str) -> None:
        """Remove ``path`` (a directory backupkit created) and everything in it."""
        try:
            entries = self.sftp.listdir_attr(path)
        except OSError:
            return
        for e in entries:
            p = posixpath.join(path, e.filename)
            if stat_mod.S_ISDIR(e.st_mode or 0):
                self.remove_tree(p)
            else:
                with contextlib.suppress(OSError):
                    self.sftp.remove(p)
        with contextlib.suppress(OSError):
            self.sftp.rmdir(path)


class CountingWriter:
    """A remote file opened for writing that counts what went through it (``written``, ``calls``)."""

    def __init__(self, f):
        self.f, self.written, self.calls = f, 0, 0

    def write(self, b) -> int:
        self.f.write(b)
        n = len(b)
        self.written += n
        self.calls += 1
        return n

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


DIRECTORY_PATH_SQL = "SELECT directory_path FROM all_directories WHERE directory_name = :name"


def directory_path(conn, directory: str, what: str) -> str:
    """The OS path of a DIRECTORY object (the account needs READ on it to see it in ALL_DIRECTORIES)."""
    cur = conn.cursor()
    try:
        cur.execute(DIRECTORY_PATH_SQL, {"name": directory})
        row = cur.fetchone()
    finally:
        cur.close()
    if not row or not row[0]:
        raise JobFailed(f"{what}: DIRECTORY {directory} is not visible in ALL_DIRECTORIES; GRANT READ, WRITE ON "
                        f"DIRECTORY {directory} to the account (docs/oracle.md)")
    path = str(row[0]).rstrip("/") or "/"
    if not path.startswith("/"):
        raise JobFailed(f"{what}: DIRECTORY {directory} is {path!r}, not an absolute POSIX path; SFTP transfer "
                        "needs a database host running Linux/Unix (remove the ssh block to transfer through SQL)")
    return path
