"""PostgreSQL programs on this host and the ephemeral scratch cluster.

Owns: finding client and server binaries of a given major version (Debian's
``/usr/lib/postgresql/<N>/bin``, ``pg_config --bindir``, PATH), and the life of
an ephemeral cluster: initdb into a private directory, start it on a private
Unix socket with durability switched off (it is thrown away), stop it, remove
it, and prove that it is gone. As root the server runs as the ``postgres`` OS
user, because initdb and postgres refuse to run as root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import kit
from .kit import free_port, process_running, process_uid, tcp_open  # noqa: F401  (re-exported for callers)
from ..errors import ConfigError, JobFailed

logger = logging.getLogger(__name__)

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"  # OS user that runs the ephemeral server when we are root
SUPERUSER = "postgres"  # bootstrap superuser of the ephemeral cluster

# Thrown-away cluster: durability off, big maintenance memory and WAL for a fast restore.
EPHEMERAL_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",  # lets pg_restore's COPY into a just-created table skip WAL
    "max_wal_senders": "0",
    "archive_mode": "off",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'1h'",
    "maintenance_work_mem": "'256MB'",
    # pg_restore runs one job per core and the drill's checks one connection per core: workers inside a
    # statement (parallel CREATE INDEX, parallel scans) only contend with them (pg_restore -j2 on the
    # bench data: 5.7-5.9 s without, 6.1-6.4 s with)
    "max_parallel_maintenance_workers": "0",
    "max_parallel_workers_per_gather": "0",
    "shared_buffers": "'256MB'",
    "autovacuum": "off",
    "jit": "off",
    "max_connections": "30",
    "logging_collector": "off",
}


def _major_of(version_text: str) -> int | None:
    """Given "pg_dump (PostgreSQL) 15.20 (Debian ...)", return 15 (9.6 gives 96)."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", version_text) or re.search(r"(\d+)(?:\.(\d+))?", version_text)
    if not m:
        return None
    major = int(m.group(1))
    return major if major >= 10 else int(f"{major}{m.group(2) or 0}")  # 9.6 -> 96


def tool_major(path: Path) -> int | None:
    """Given a program like pg_dump, return the major version it reports, or None."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return None
    return _major_of(out) if out else None


def candidate_bindirs(bin_dir: str | None = None) -> list[Path]:
    """Directories that may hold PostgreSQL programs, most specific first."""
    dirs: list[Path] = []
    if bin_dir:
        dirs.append(Path(bin_dir))
    if DEBIAN_ROOT.is_dir():
        majors = sorted((p for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name))
        dirs.extend(p / "bin" for p in majors)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30).stdout.strip()
            if out:
                dirs.append(Path(out))
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d:
            dirs.append(Path(d))
    seen, unique = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            unique.append(d)
    return unique


def find_tool(tool: str, major: int, *, bin_dir: str | None = None, allow_newer: bool = False) -> Path:
    """Given a program name and the server's major version, return the path of that program
    with the same major (or, with ``allow_newer``, the newest one at least that major).

    Raises ConfigError naming the Debian package to install.
    """
    found: list[tuple[int, Path]] = []
    for d in candidate_bindirs(bin_dir):
        p = d / tool
        if p.is_file() and os.access(p, os.X_OK):
            m = tool_major(p)
            if m == major:
                return p
            if m is not None and allow_newer and m > major:
                found.append((m, p))
    if found:
        return max(found)[1]
    pkg = "postgresql" if tool in ("initdb", "postgres", "pg_ctl") else "postgresql-client"
    raise ConfigError(
        f"{tool} for PostgreSQL {major} not found (the server is version {major} and {tool} must match it); "
        f"install {pkg}-{major} or set source.options.bin_dir"
    )


def newest_server_bindir(bin_dir: str | None = None) -> tuple[int, Path]:
    """Return (major, bindir) of the newest installed PostgreSQL *server* (initdb, pg_ctl, postgres)."""
    best: tuple[int, Path] | None = None
    for d in candidate_bindirs(bin_dir):
        if all((d / t).is_file() for t in ("initdb", "pg_ctl", "postgres")):
            m = tool_major(d / "postgres")
            if m is not None and (best is None or m > best[0]):
                best = (m, d)
    if best is None:
        raise ConfigError("no PostgreSQL server binaries (initdb, pg_ctl, postgres) found for the ephemeral drill scratch; "
                          "install the postgresql package or use drill.scratch.type: database")
    return best


@dataclass
class EphemeralCluster:
    """A throw-away PostgreSQL cluster under ``root``; start() then stop()."""

    bindir: Path
    major: int
    root: Path
    port: int = field(default_factory=free_port)
    sockdir: Path | None = None
    pid: int | None = None
    run_as: str | None = None  # OS user the server runs as (None: the current user)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def params(self, dbname: str = "postgres") -> dict[str, str]:
        """libpq parameters for a superuser connection over the private socket."""
        return {"host": str(self.sockdir), "port": str(self.port), "user": SUPERUSER, "dbname": dbname,
                "application_name": "backupkit"}

    def _argv(self, *args: str | os.PathLike) -> list[str]:
        cmd = [str(a) for a in args]
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd

    def _run(self, *args: str | os.PathLike, what: str, timeout: float = 300) -> None:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        proc = subprocess.run(self._argv(*args), capture_output=True, text=True, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False, cwd="/")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
            log_tail = ""
            with contextlib.suppress(OSError):
                log_tail = self.logfile.read_text(errors="replace").strip()[-1500:]
            raise JobFailed(f"ephemeral PostgreSQL cluster: {what} failed (exit {proc.returncode}): {tail} {log_tail}".strip())

    def start(self) -> None:
        """initdb, configure and start the cluster; return when it accepts connections."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.sockdir is None:
            self.sockdir = self.root / "sock"
            if len(str(self.sockdir)) > 80:  # sun_path is 108 bytes including ".s.PGSQL.<port>"
                self.sockdir = Path(tempfile.mkdtemp(prefix="bk-pgsock-"))
        self.sockdir.mkdir(mode=0o700, exist_ok=True)
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            for p in (self.root, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._run(self.bindir / "initdb", "-D", self.datadir, "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync", what="initdb")
        settings = {**EPHEMERAL_SETTINGS, "port": str(self.port), "unix_socket_directories": f"'{self.sockdir}'"}
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write("\n# backupkit ephemeral drill scratch\n")
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self._run(self.bindir / "pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", "120", "start",
                  what="pg_ctl start")
        self.pid = self.postmaster_pid()
        logger.info("ephemeral PostgreSQL %s started (pid %s, socket %s, port %d)", self.major, self.pid, self.sockdir, self.port)

    def postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid, or None when the file is absent."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def stop(self) -> dict:
        """Stop the server (immediate), remove every file, and return the verified teardown proof."""
        pid = self.pid or self.postmaster_pid()
        # SIGQUIT is what pg_ctl stop -m immediate sends; waiting here, not in pg_ctl (which polls every
        # 100 ms), ends the drill sooner. The postmaster exits after its children; then SIGKILL if it must.
        kit.stop_process(pid, steps=((signal.SIGQUIT, 30.0), (signal.SIGKILL, 5.0)))
        shutil.rmtree(self.root, ignore_errors=True)
        if self.sockdir is not None and not str(self.sockdir).startswith(str(self.root)):
            shutil.rmtree(self.sockdir, ignore_errors=True)
        socket_file = self.sockdir / f".s.PGSQL.{self.port}" if self.sockdir else None
        proof = {
            "datadir": str(self.datadir),
            "datadir_exists": self.datadir.exists() or self.root.exists(),
            "port": self.port,
            "port_open": tcp_open(self.port) or bool(socket_file and socket_file.exists()),
            "postmaster_pid": pid,
            "postmaster_running": process_running(pid),
        }
        logger.info("ephemeral PostgreSQL torn down: %s", proof)
        return proof


def server_os_user() -> str | None:
    """The OS user the ephemeral server must run as: ``postgres`` when we are root, else None (ourselves)."""
    return kit.server_os_user(SERVER_USER, "postgresql")


def private_root(workdir: Path, run_as: str | None) -> Path:
    """Given the caller's workdir, return a new private directory for a cluster (kit.private_root)."""
    return kit.private_root(Path(workdir), run_as, prefix="pg-scratch-")
