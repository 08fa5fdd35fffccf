"""The drill's restored cluster: a pgBackRest restore into a private data directory, recovered to
a target LSN on a private Unix socket (no TCP), promoted, checked, stopped and removed.

Everything lives under one private root: the unpacked repository (``repo/``), a private
``pgbackrest.conf`` (0600, the OS user's; it may hold the repository cipher pass), the data
directory, pgBackRest's log/lock/spool directories, and our own ``pg_hba.conf`` (local trust).
The restored server never archives (``--archive-mode=off`` and ``archive_mode=off``), never
listens on TCP, and its ``restore_command`` reads only the private repository.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ..errors import JobFailed, VerificationFailed
from .kit import process_running, run_as_argv, stop_process, tail_text, teardown_proof
from .pgbackrest_repo import child_env

logger = logging.getLogger(__name__)

ENDED_BEFORE_TARGET = "recovery ended before configured recovery target was reached"  # PostgreSQL's FATAL line
MISSING_WAL_RE = re.compile(r"unable to find ([0-9A-F]{24})")


def chown_tree(root: Path, user: str | None) -> None:
    if not user:
        return
    pw = pwd.getpwnam(user)
    os.chown(root, pw.pw_uid, pw.pw_gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(dirpath, n), pw.pw_uid, pw.pw_gid)


def private_write(path: Path, text: str, user: str | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


@dataclass
class RestoredCluster:
    root: Path  # private, owned by run_as
    sockdir: Path  # short private path for the Unix socket
    port: int
    bindir: Path  # pg_ctl, postgres, pg_checksums of the backup's major version
    run_as: str | None
    pgbackrest: Path
    stanza: str
    what: str
    pid: int | None = None
    repo_dir: Path | None = None  # another cluster's unpacked repository (cross-proof), instead of our own
    superuser: str = "postgres"  # the source's bootstrap superuser (the copy keeps the source's roles)
    manifest_details: dict | None = None  # details.pgbackrest of the backup being restored


    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def repo(self) -> Path:
        return self.repo_dir or self.root / "unpacked" / "repo"

    @property
    def conf(self) -> Path:
        return self.root / "pgbackrest.conf"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    @property
    def hba(self) -> Path:
        return self.root / "pg_hba.conf"

    def _run(self, argv: list[str], what: str, timeout: float = 600) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(run_as_argv(self.run_as, argv), capture_output=True, stdin=subprocess.DEVNULL,
                                  env=child_env(), cwd="/", timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise JobFailed(f"{self.what}: {what} did not finish within {timeout}s") from None
        return proc

    def configure(self, cipher_pass: str | None) -> None:
        """Write the private pgbackrest.conf and pg_hba.conf (the caller has unpacked the repository)."""
        for d in ("log", "lock", "spool", "tblspc"):
            (self.root / d).mkdir(mode=0o700, exist_ok=True)
        lines = ["[global]", f"repo1-path={self.repo}", f"log-path={self.root / 'log'}",
                 f"lock-path={self.root / 'lock'}", f"spool-path={self.root / 'spool'}",
                 "log-level-console=warn", "log-level-stderr=off", "log-level-file=off", "archive-async=n"]
        if cipher_pass is not None:
            kind = (self.manifest_details or {}).get("repo_cipher") or "aes-256-cbc"
            lines += [f"repo1-cipher-type={kind}", f"repo1-cipher-pass={cipher_pass}"]
        lines += ["", f"[{self.stanza}]", f"pg1-path={self.datadir}", f"pg1-socket-path={self.sockdir}",
                  f"pg1-port={self.port}", ""]
        private_write(self.conf, "\n".join(lines), self.run_as)
        private_write(self.hba, "local all all trust\n", self.run_as)
        chown_tree(self.root, self.run_as)

    def restore(self, label: str, target_lsn: str | None, target_time: str | None = None) -> str:
        """``pgbackrest restore`` of set ``label`` into the private data directory; returns its output tail."""
        argv = [str(self.pgbackrest), f"--config={self.conf}", f"--stanza={self.stanza}", f"--set={label}",
                "--archive-mode=off", f"--tablespace-map-all={self.root / 'tblspc'}", "--target-action=promote"]
        if target_time is not None:
            argv += ["--type=time", f"--target={target_time}", "--target-exclusive"]
        elif target_lsn is not None:
            argv += ["--type=lsn", f"--target={target_lsn}", "--target-exclusive"]
        else:
            argv += ["--type=immediate"]
        argv.append("restore")
        proc = self._run(argv, "pgbackrest restore", timeout=24 * 3600)
        if proc.returncode != 0:
            raise VerificationFailed(f"{self.what}: pgbackrest restore of set {label} failed (exit {proc.returncode}): "
                                     f"{tail_text(proc.stderr or proc.stdout) or 'no message'}")
        return tail_text(proc.stdout + proc.stderr, 300)

    def restore_command(self) -> str | None:
        """The restore_command pgBackRest wrote into the restored data directory (evidence: private repository)."""
        with contextlib.suppress(OSError):
            for line in (self.datadir / "postgresql.auto.conf").read_text(errors="replace").splitlines():
                if line.strip().startswith("restore_command"):
                    return line.split("=", 1)[1].strip()
        return None

    def options(self) -> str:
        """postgres -c overrides for the drill copy (pg_ctl -o)."""
        opts = {"port": str(self.port), "listen_addresses": "", "unix_socket_directories": str(self.sockdir),
                "hba_file": str(self.hba), "archive_mode": "off", "logging_collector": "off", "ssl": "off",
                "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "hot_standby": "on",
                "cluster_name": "backupkit-drill",
                "wal_level": "replica", "autovacuum": "off"}
        return " ".join(f"-c {k}={v}" for k, v in opts.items())

    def _ensure_conf_files(self) -> None:
        # Debian keeps postgresql.conf in /etc: a restored data directory may have none
        conf = self.datadir / "postgresql.conf"
        if not conf.exists():
            private_write(conf, "# backupkit drill: the source kept its configuration outside the data directory\n",
                          self.run_as)

    def start(self, timeout: float) -> None:
        self._ensure_conf_files()
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t",
                str(int(timeout)), "-o", self.options(), "start"]
        proc = self._run(argv, "pg_ctl start", timeout=timeout + 60)
        self.pid = self.postmaster_pid()
        if proc.returncode != 0:
            raise self.failure(f"pg_ctl start failed (exit {proc.returncode})")

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def log_tail(self, limit: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return tail_text(self.logfile.read_text(errors="replace"), limit)
        return ""

    def ended_before_target(self) -> bool:
        """The server's log says recovery ran out of WAL before its target (PostgreSQL then refuses to start)."""
        with contextlib.suppress(OSError):
            return ENDED_BEFORE_TARGET in self.logfile.read_text(errors="replace")
        return False

    def failure(self, head: str) -> Exception:
        """The error for a recovery that did not complete: a missing WAL segment named when the log shows it."""
        log = ""
        with contextlib.suppress(OSError):
            log = self.logfile.read_text(errors="replace")
        missing = MISSING_WAL_RE.findall(log)
        if ENDED_BEFORE_TARGET in log or missing:
            seg = f"WAL segment {missing[-1]} is missing from the backup's archive; " if missing else ""
            return VerificationFailed(f"{self.what}: recovery did not reach its target: {seg}{head}: "
                                      f"{tail_text(log, 800)}")
        return JobFailed(f"{self.what}: {head}: {tail_text(log, 1500)}")

    def params(self, user: str, dbname: str) -> dict[str, str]:
        return {"host": str(self.sockdir), "port": str(self.port), "user": user, "dbname": dbname,
                "application_name": "backupkit"}

    def wait_promoted(self, user: str, timeout: float) -> float:
        """Poll until recovery ended and the copy was promoted; raise naming what went wrong."""
        t0 = time.monotonic()
        conninfo = " ".join(f"{k}={v}" for k, v in self.params(user, "postgres").items())
        while True:
            if not process_running(self.pid):
                raise self.failure("the restored server stopped during recovery")
            with contextlib.suppress(psycopg.OperationalError):
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as c:
                    (rec,) = c.execute("SELECT pg_is_in_recovery()").fetchone()
                    if not rec:
                        return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise self.failure(f"recovery did not finish within {int(timeout)}s "
                                   "(source.pgbackrest.recovery_timeout)")
            time.sleep(0.05)

    def recovery_stop(self) -> str | None:
        """The server's own line saying where recovery stopped."""
        with contextlib.suppress(OSError):
            for line in self.logfile.read_text(errors="replace").splitlines():
                if "recovery stopping" in line or "recovery stopped" in line:
                    return line.split("LOG:", 1)[-1].strip()
        return None

    def stop(self, mode: str = "fast") -> None:
        if self.pid and process_running(self.pid):
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"],
                      "pg_ctl stop", timeout=120)
        if self.pid and process_running(self.pid):
            stop_process(self.pid)

    def checksums(self) -> tuple[bool, str]:
        """``pg_checksums --check`` on the stopped copy: (ok, output tail)."""
        proc = self._run([str(self.bindir / "pg_checksums"), "--check", "-D", str(self.datadir)], "pg_checksums",
                         timeout=24 * 3600)
        return proc.returncode == 0, tail_text(proc.stdout + proc.stderr, 600)

    def destroy(self) -> dict:
        """Stop (immediate), remove every file, and return the verified teardown proof."""
        pid = self.pid or self.postmaster_pid()
        with contextlib.suppress(Exception):
            if pid and process_running(pid):
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "-t", "30",
                           "stop"], "pg_ctl stop", timeout=60)
        if pid and process_running(pid):
            stop_process(pid, ((15, 5.0), (9, 5.0)))
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.sockdir, ignore_errors=True)
        return teardown_proof(paths={"datadir": self.datadir, "root": self.root, "socket_dir": self.sockdir},
                              pids={"postmaster_pid": pid},
                              sockets={"socket": self.sockdir / f".s.PGSQL.{self.port}"})
