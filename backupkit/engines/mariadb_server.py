"""The ephemeral MariaDB scratch server: ``mariadb-install-db`` into a private
data directory, ``mariadbd`` on a private Unix socket with networking off
(unless a test asks for a loopback TCP port), durability and the event
scheduler off, as the ``mysql`` OS user when we are root; then killed,
removed, and proven gone.

The server writes its pid to ``<datadir>/postmaster.pid`` and names the data
directory on its command line, so ``backupkit cleanup`` (actions/cleanup.py)
stops it after a killed drill exactly like a PostgreSQL scratch cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import JobFailed
from . import kit
from .mariadb_conn import Endpoint, connect

logger = logging.getLogger(__name__)

SERVER_USER = "mysql"
PACKAGE = "mariadb-server"

# A thrown-away server: no binary log, no doublewrite, lazy log flush, events never fire.
EPHEMERAL_OPTIONS = [
    "--skip-log-bin",
    "--event-scheduler=OFF",  # events exist but never fire (DISABLED would hide them)
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--innodb-buffer-pool-size=256M",
    "--innodb-log-file-size=256M",
    "--skip-name-resolve",
    "--max-allowed-packet=1G",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--skip-performance-schema",
    "--max-connections=30",
]


# What mariadb-install-db feeds ``mariadbd --bootstrap``, minus the help tables (2.4 MB of INSERTs) and
# the sys schema (views over performance_schema, which is off): a throw-away server needs neither, and
# leaving them out roughly halves the bootstrap. Same order and same header as the script.
BOOTSTRAP_FILES = ("mysql_system_tables.sql", "mysql_performance_tables.sql", "mysql_system_tables_data.sql",
                   "maria_add_gis_sp_bootstrap.sql")
BOOTSTRAP_HEADER = "create database if not exists mysql;\nuse mysql;\nSET @auth_root_socket=NULL;\n"


def bootstrap_sql(install: Path) -> bytes | None:
    """The system-table SQL next to ``install`` (mariadb-install-db), or None when a file is missing."""
    for share in (install.resolve().parent.parent / "share" / "mysql", install.resolve().parent.parent / "share" / "mariadb"):
        files = [share / f for f in BOOTSTRAP_FILES]
        if all(f.is_file() for f in files):
            return BOOTSTRAP_HEADER.encode() + b"".join(f.read_bytes() + b"\n" for f in files)
    return None


def server_tools(server_bin_dir: str | None = None) -> tuple[kit.Tool, kit.Tool]:
    """(mariadbd, mariadb-install-db) of this host; ConfigError naming the package when missing."""
    dirs = [Path("/usr/sbin"), Path("/usr/bin")]
    daemon = kit.find_tool(["mariadbd", "mysqld"], package=PACKAGE, bin_dir=server_bin_dir, dirs=dirs,
                           min_version=(10, 4))
    install = kit.find_tool(["mariadb-install-db", "mysql_install_db"], package=PACKAGE, bin_dir=server_bin_dir,
                            dirs=dirs, versioned=False)
    return daemon, install


@dataclass
class EphemeralServer:
    """A throw-away mariadbd under ``root``: start(), then stop() (which returns the teardown proof)."""

    root: Path
    run_as: str | None = None
    server_bin_dir: str | None = None
    tcp: bool = False  # tests: also listen on 127.0.0.1:<port>
    lower_case_table_names: int | None = None
    port: int = 0
    socket: Path | None = None
    pid: int | None = None
    proc: subprocess.Popen | None = None
    version: str = ""
    extra: list[str] = field(default_factory=list)
    initialize: bool = True  # False: the data directory already exists (a prepared physical backup)
    bootstrapped: str = ""  # how the data directory was created

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def tmpdir(self) -> Path:
        """The server's own temporary directory (sort files, temporary tables: patient data), private and
        removed with the rest, never the shared /tmp."""
        return self.root / "tmp"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    @property
    def pidfile(self) -> Path:
        return self.datadir / "postmaster.pid"

    def endpoint(self, database: str | None = None) -> Endpoint:
        """The root account over the private socket (or TCP when started with ``tcp``)."""
        if self.tcp:
            return Endpoint(host="127.0.0.1", port=self.port, user="root", database=database)
        return Endpoint(socket=str(self.socket), user="root", database=database)

    def _ids(self) -> dict:
        if not self.run_as:
            return {}
        pw = pwd.getpwnam(self.run_as)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return kit.tail_text(self.logfile.read_text(errors="replace"))
        return ""

    def start(self, timeout: float = 120) -> None:
        """Install a fresh data directory, start mariadbd and return once it accepts connections."""
        daemon, install = server_tools(self.server_bin_dir)
        self.version = daemon.version_text
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.socket is None:
            self.socket = self.root / "mysqld.sock"
            if len(str(self.socket)) > 100:  # sun_path is 108 bytes
                d = Path(tempfile.mkdtemp(prefix="bk-mdbsock-"))
                self.socket = d / "mysqld.sock"
        self.tmpdir.mkdir(mode=0o700, exist_ok=True)
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            for p in {self.root, self.socket.parent, self.tmpdir}:
                os.chown(p, pw.pw_uid, pw.pw_gid)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C", "LANG": "C"}
        lctn = [f"--lower-case-table-names={self.lower_case_table_names}"] if self.lower_case_table_names else []
        if self.initialize and self._bootstrap(daemon, install, env, lctn):
            pass
        elif self.initialize:
            proc = subprocess.run([str(install.path), "--no-defaults", f"--datadir={self.datadir}",
                                   "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve",
                                   *lctn], capture_output=True, text=True, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                  timeout=300, check=False, **self._ids())
            if proc.returncode != 0:
                raise JobFailed(f"ephemeral MariaDB scratch: {install.path.name} failed (exit {proc.returncode}): "
                                f"{kit.tail_text(proc.stderr or proc.stdout)}")
        elif not self.datadir.is_dir():
            raise JobFailed(f"ephemeral MariaDB scratch: data directory {self.datadir} does not exist")
        net = ["--skip-networking"] if not self.tcp else ["--bind-address=127.0.0.1", f"--port={self.port or 0}"]
        if self.tcp and not self.port:
            self.port = kit.free_port()
            net = ["--bind-address=127.0.0.1", f"--port={self.port}"]
        argv = [str(daemon.path), "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
                f"--pid-file={self.pidfile}", f"--log-error={self.logfile}", f"--tmpdir={self.tmpdir}", *net,
                *EPHEMERAL_OPTIONS, *lctn,
                *self.extra]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env, cwd="/", start_new_session=True, **self._ids())
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self.proc.poll() is not None:
                raise JobFailed(f"ephemeral MariaDB scratch: mariadbd exited (code {self.proc.returncode}) during "
                                f"startup: {self._log_tail()}")
            try:
                conn = connect(Endpoint(socket=str(self.socket), user="root"), what="ephemeral MariaDB scratch",
                               pinned=False)
                try:
                    if self.tcp:  # the install made root@localhost only; --skip-name-resolve sees 127.0.0.1
                        with conn.cursor() as cur:
                            cur.execute("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'")
                            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
                finally:
                    conn.close()
                break
            except JobFailed as e:
                last = str(e)
            if time.monotonic() > deadline:
                self.stop()
                raise JobFailed(f"ephemeral MariaDB scratch did not accept connections within {timeout:.0f}s: "
                                f"{last}; {self._log_tail()}")
            time.sleep(0.02)
        logger.info("ephemeral MariaDB started (pid %s, socket %s%s)", self.pid, self.socket,
                    f", port {self.port}" if self.tcp else "")

    def _bootstrap(self, daemon: kit.Tool, install: kit.Tool, env: dict, lctn: list[str]) -> bool:
        """Create the system tables with ``mariadbd --bootstrap`` as mariadb-install-db would, without
        help tables and sys schema; False (nothing done) when the SQL files are not where expected."""
        sql = bootstrap_sql(install.path)
        if sql is None:
            return False
        self.datadir.mkdir(mode=0o700)
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
        proc = subprocess.run([str(daemon.path), "--no-defaults", "--bootstrap", f"--datadir={self.datadir}",
                               f"--tmpdir={self.tmpdir}", "--log-warnings=0", "--enforce-storage-engine=",
                               "--max-allowed-packet=8M",
                               "--net-buffer-length=16K", "--skip-name-resolve", *EPHEMERAL_OPTIONS, *lctn],
                              input=sql, capture_output=True, env=env, cwd="/", timeout=300, check=False, **self._ids())
        if proc.returncode != 0:
            raise JobFailed(f"ephemeral MariaDB scratch: {daemon.path.name} --bootstrap failed (exit {proc.returncode}): "
                            f"{kit.tail_text((proc.stderr or proc.stdout).decode(errors='replace'))}")
        self.bootstrapped = "mariadbd --bootstrap (system tables; no help tables, no sys schema)"
        return True

    def stop(self) -> dict:
        """Kill the server (its data is thrown away), remove every file, return the verified proof."""
        pid = self.pid
        if pid is None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(self.pidfile.read_text().split()[0])
        if self.proc is not None and self.proc.poll() is None:  # our child: reap it at once, no polling
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        kit.stop_process(pid, steps=((signal.SIGKILL, 10.0),), proc=self.proc)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.socket is not None and self.root not in self.socket.parents:
            shutil.rmtree(self.socket.parent, ignore_errors=True)
        proof = kit.teardown_proof(paths={"datadir": self.datadir}, pids={"server_pid": pid},
                                   sockets={"socket": self.socket},
                                   tcp_ports={"port": self.port} if self.tcp else {})
        proof["root_exists"] = self.root.exists()
        logger.info("ephemeral MariaDB torn down: %s", proof)
        return proof


def new_server(workdir: Path, *, server_bin_dir: str | None = None, tcp: bool = False,
               lower_case_table_names: int | None = None, initialize: bool = True) -> EphemeralServer:
    """An EphemeralServer (not started) in a new private directory under ``workdir``; with
    ``initialize=False`` the caller fills ``datadir`` (a prepared physical backup) before start()."""
    run_as = kit.server_os_user(SERVER_USER, PACKAGE)
    root = kit.private_root(Path(workdir), run_as, prefix="mariadb-scratch-")
    return EphemeralServer(root=root, run_as=run_as, server_bin_dir=server_bin_dir, tcp=tcp,
                           lower_case_table_names=lower_case_table_names, initialize=initialize)

