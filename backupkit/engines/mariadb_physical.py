"""MariaDB physical mode (``engine: mariadb``, ``source.mode: physical``): hot
``mariadb-backup`` copies of the whole server instance, streamed as xbstream,
drilled by extracting, preparing and starting a private ``mariadbd`` on the copy.

Backup. ``mariadb-backup --backup --stream=xbstream`` runs on the database host
(it reads the server's data directory; checked through the server's pid file
and ``/proc/<pid>/cwd``); the password reaches it through a 0600 option file
(``--defaults-extra-file``), never argv or its environment. Its stdout goes
through ``kit.Child``/``kit.stream_child`` into ``sink.write_stream("data")``.

Fingerprints of the backup's own point in time. mariadb-backup's copy ends at
the redo LSN it reads while holding ``BACKUP STAGE BLOCK_COMMIT`` (no
transaction can commit), so the backup holds exactly the transactions committed
before that lock. A second connection starts ``START TRANSACTION WITH
CONSISTENT SNAPSHOT`` *inside* that lock:

1. the stderr watcher sees ``Acquired locks for BACKUP STAGE BLOCK_COMMIT``
   (printed after the statement returned) and sends mariadb-backup SIGSTOP;
2. we prove the lock is still held: every thread of the process is stopped,
   its stderr pipe is empty and our reader is blocked reading it, and no
   ``Executing BACKUP STAGE END`` line (printed *before* that statement is
   sent, extra/mariabackup/backup_mysql.cc ``unlock_all``) was seen;
3. the fingerprint transaction starts its snapshot and reads the binlog/GTID
   position; then SIGCONT. The pause lasts milliseconds.

Both states contain the same committed transactions: exact for transactional
tables. Recorded ``exactness: approximate`` with the reason when the pause could
not be proven, when mariadb-backup's binlog/GTID position differs from the
snapshot's, or for tables of non-transactional engines (copied before
BLOCK_COMMIT while writes to them were still possible).

Drill. Only an ephemeral scratch: ``mbstream -x`` into a private data
directory, ``mariadb-backup --prepare`` (both as the ``mysql`` OS user when we
are root), the prepared LSN compared with the manifest's, then
``mariadb_server.EphemeralServer`` on it (``--skip-networking``, private socket,
``--skip-grant-tables`` since the copy's accounts are production's, events
off); checks and fingerprints are the logical mode's (inherited).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, JobFailed, VerificationFailed
from . import kit
from .base import DumpResult, RestoreSource, Scratch
from .mariadb import MariadbEngine, MariaScratch, _options
from .mariadb_conn import connect, option_file, query, scalar, source_endpoint
from .mariadb_fingerprint import FORMAT as FINGERPRINT_FORMAT, all_fingerprints, base_tables, transactional_engines
from .mariadb_server import new_server

logger = logging.getLogger(__name__)

PACKAGE = "mariadb-backup"
ACQUIRED = "Acquired locks for BACKUP STAGE BLOCK_COMMIT"
RELEASING = "Executing BACKUP STAGE END"
LSN_LINE = re.compile(r"InnoDB LSN: (\d+)")
READ_SYSCALL = {"x86_64": 0, "aarch64": 63, "riscv64": 63}  # read(2), for /proc/self/task/<tid>/syscall
# backup-my.cnf settings the scratch server must share with the source to open the copy
SERVER_CNF_KEYS = ("innodb_page_size", "innodb_data_file_path", "innodb_undo_tablespaces",
                   "innodb_checksum_algorithm")
SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # mariadbd and mariadb-backup live in sbin on Debian


def backup_tool(bin_dir: str | None = None) -> kit.Tool:
    return kit.find_tool(["mariadb-backup", "mariabackup"], package=PACKAGE, bin_dir=bin_dir,
                         version_pattern=r"server (\d+)\.(\d+)\.(\d+)", min_version=(10, 4))


def stream_tool(bin_dir: str | None = None) -> kit.Tool:
    return kit.find_tool(["mbstream"], package=PACKAGE, bin_dir=bin_dir, versioned=False)


def read_kv(path: Path) -> dict[str, str]:
    """``key = value`` lines (xtrabackup_checkpoints, xtrabackup_info); {} when the file is missing."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if "=" in line and not line.lstrip().startswith(("#", "[")):
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out


def server_options(backup_cnf: Path) -> list[str]:
    """The mariadbd options the prepared copy needs from its backup-my.cnf (page size, system tablespace)."""
    cnf = read_kv(backup_cnf)
    return [f"--{k.replace('_', '-')}={cnf[k]}" for k in SERVER_CNF_KEYS if cnf.get(k)]


def gtid_of(binlog_pos: str | None) -> str | None:
    """The GTID in xtrabackup_info's ``binlog_pos`` ("filename 'x', position 'y', GTID of the last change 'z'")."""
    m = re.search(r"GTID of the last change '([^']*)'", binlog_pos or "")
    return m.group(1) if m else None


# ---- pausing mariadb-backup inside BACKUP STAGE BLOCK_COMMIT ---------------------------------------


class CommitPause:
    """Stderr watcher that SIGSTOPs mariadb-backup as soon as it reports holding BLOCK_COMMIT."""

    def __init__(self) -> None:
        self.child: kit.Child | None = None
        self.acquired = threading.Event()  # set once the pause was attempted (or the backup ended without it)
        self.released = False  # "Executing BACKUP STAGE END" was seen
        self.stopped_at: float | None = None
        self.paused_seconds = 0.0
        self.lsn_under_lock: int | None = None
        self.t_acquired: float | None = None  # when the BLOCK_COMMIT / BACKUP STAGE END lines arrived
        self.t_released: float | None = None
        self._mutex = threading.Lock()

    def watch(self, line: str) -> None:
        if RELEASING in line:
            self.released = True
            self.t_released = time.monotonic()
        m = LSN_LINE.search(line)
        if m and self.acquired.is_set() and self.lsn_under_lock is None:
            self.lsn_under_lock = int(m.group(1))
        if ACQUIRED in line and not self.acquired.is_set():
            self.t_acquired = time.monotonic()
            with self._mutex:
                child = self.child
                if child is not None and child.running():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGSTOP)
                        self.stopped_at = time.monotonic()
            self.acquired.set()

    def resume(self) -> None:
        with self._mutex:
            if self.stopped_at is not None and self.child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.child.pid, signal.SIGCONT)
                self.paused_seconds = round(time.monotonic() - self.stopped_at, 3)
                self.stopped_at = None


def _all_threads_stopped(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = [Path(f"/proc/{pid}/task/{t}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
                      for t in os.listdir(f"/proc/{pid}/task")]
        except (OSError, IndexError):
            return False
        if states and all(s in (b"T", b"t") for s in states):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def _stderr_drained(child: kit.Child, timeout: float = 5.0) -> str | None:
    """None once every byte the (stopped) child wrote to stderr reached the watcher, else why unproven."""
    machine = os.uname().machine
    nr = READ_SYSCALL.get(machine)
    reader = getattr(child, "_reader", None)
    if nr is None or reader is None or reader.native_id is None:
        return f"cannot observe the stderr reader on this platform ({machine})"
    fd = child.proc.stderr.fileno()
    deadline = time.monotonic() + timeout
    while True:
        try:
            sc = Path(f"/proc/self/task/{reader.native_id}/syscall").read_text().split()
            pending = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError as e:
            return f"cannot observe the stderr reader ({e.strerror})"
        # blocked in read(fd) with nothing left in the pipe: every complete line was handed to the watcher
        if pending == 0 and len(sc) >= 2 and sc[0] == str(nr) and int(sc[1], 16) == fd:
            return None
        if time.monotonic() > deadline:
            return "mariadb-backup's stderr could not be drained while it was paused"
        time.sleep(0.001)


def prove_held(pause: CommitPause) -> str | None:
    """None when mariadb-backup is provably stopped while holding BACKUP STAGE BLOCK_COMMIT, else why not."""
    child = pause.child
    if pause.stopped_at is None or child is None:
        return "mariadb-backup could not be paused inside BACKUP STAGE BLOCK_COMMIT (it had exited)"
    if not _all_threads_stopped(child.pid):
        return "mariadb-backup did not stop within 5s of SIGSTOP"
    why = _stderr_drained(child)
    if why:
        return why
    if pause.released:
        return "mariadb-backup had already released BACKUP STAGE BLOCK_COMMIT when it was paused"
    return None


# ---- the engine -----------------------------------------------------------------------------------


class MariadbPhysicalEngine(MariadbEngine):
    """MariaDB physical backups with mariadb-backup; drills into a private mariadbd on the prepared copy."""

    name = "mariadb"
    scratch_kinds = ("ephemeral",)
    restore_to = False

    def describe_source(self, policy) -> str:
        return f"MariaDB at {source_endpoint(policy, with_password=False).label} (physical, mariadb-backup)"

    # ---- backup ----------------------------------------------------------------------------------

    def dump(self, *, policy, sink) -> DumpResult:
        """Given a policy, stream mariadb-backup's xbstream of the whole instance into ``sink`` and return
        its LSN/binlog position and the fingerprints of the database taken inside its BLOCK_COMMIT lock."""
        what = f"policy {policy.system}"
        mode = policy.drill.fingerprint
        opts = _options(policy)
        src = source_endpoint(policy)
        try:
            tool = backup_tool(opts.get("bin_dir"))
        except ConfigError as e:
            raise ConfigError(f"{what}: {e}") from None
        fp = connect(src, what=what)
        try:
            facts = self._server_facts(fp, src.database)
            self._check_version(tool, facts, what)
            facts["source_datadir"] = self._check_local(fp, what)
            work = Path(tempfile.mkdtemp(prefix="mariadb-backup-", dir=Path(sink.workdir)))
            lsndir, target = work / "lsn", work / "target"
            lsndir.mkdir(mode=0o700)
            target.mkdir(mode=0o700)
            with option_file(src, Path(sink.workdir), what) as cnf:
                argv = [str(tool.path), f"--defaults-extra-file={cnf}", "--backup", "--stream=xbstream",
                        f"--target-dir={target}", f"--extra-lsndir={lsndir}", *src.client_args()]
                if opts.get("parallel"):
                    argv.append(f"--parallel={int(opts['parallel'])}")
                consistency, fingerprints, stream = self._backup_in_lock(src, fp, argv, tool, sink, mode, what)
            checkpoints, info = read_kv(lsndir / "xtrabackup_checkpoints"), read_kv(lsndir / "xtrabackup_info")
        finally:
            with contextlib.suppress(Exception):
                fp.close()
        self._settle(consistency, checkpoints, info, stream.pop("lsn_under_lock"), what)
        details = {**facts, "dump_tool": f"{tool.path} ({tool.version_text})", "dump_format": "xbstream",
                   "scope": "the whole server instance (every database); fingerprints cover database "
                            f"{src.database}",
                   "checkpoints": checkpoints,
                   "backup_info": {k: info[k] for k in ("tool_version", "server_version", "start_time", "end_time",
                                                        "binlog_pos", "partial", "format") if k in info},
                   "fingerprint_mode": mode, "fingerprint_format": FINGERPRINT_FORMAT, **stream}
        return DumpResult(server_version=facts["server_version"], consistency=consistency,
                          fingerprints=fingerprints, details=details)

    @staticmethod
    def _check_version(tool: kit.Tool, facts: dict, what: str) -> None:
        m = re.search(r"(\d+)\.(\d+)", facts["server_version"])
        server = (int(m.group(1)), int(m.group(2))) if m else None
        if server is None or "mariadb" not in facts["server_version"].lower():
            raise ConfigError(f"{what}: mode physical needs a MariaDB server (found {facts['server_version']}); "
                              "use mode dump")
        if tuple(tool.version[:2]) != server:
            raise ConfigError(f"{what}: {tool.path} is {'.'.join(map(str, tool.version))} but the server is "
                              f"{facts['server_version']}; install the mariadb-backup of the server's version "
                              "(major.minor must match)")

    @staticmethod
    def _check_local(conn, what: str) -> str:
        """The server's data directory, after proving this host runs that server (pid file, /proc/PID/cwd)."""
        datadir, pid_file = query(conn, "SELECT @@datadir, @@pid_file")[0]
        pid_path = Path(pid_file) if os.path.isabs(pid_file) else Path(datadir) / pid_file
        hint = "mariadb-backup reads the data directory, so run backupkit on the database host as root or mysql"
        try:
            pid = int(pid_path.read_text().split()[0])
            cwd = os.path.realpath(f"/proc/{pid}/cwd")
        except (OSError, ValueError, IndexError) as e:
            raise ConfigError(f"{what}: the source server's pid file {pid_path} cannot be read here "
                              f"({getattr(e, 'strerror', None) or e}); {hint}") from None
        if not kit.process_running(pid) or cwd != os.path.realpath(datadir):
            raise ConfigError(f"{what}: the source server (data directory {datadir}) does not run on this host "
                              f"(pid {pid} from {pid_path} works in {cwd}); {hint}")
        return str(datadir)

    def _backup_in_lock(self, src, fp, argv, tool: kit.Tool, sink, mode: str, what: str):
        database = src.database
        pause = CommitPause()
        child = kit.Child(argv, what=what, tool=tool.path.name, env=kit.minimal_env(SBIN_PATH), watch=pause.watch)
        pause.child = child
        snap: dict[str, Any] = {}
        done = threading.Event()

        def in_lock() -> None:
            pause.acquired.wait()
            if done.is_set() and pause.stopped_at is None:
                return
            try:
                why = prove_held(pause)
                with fp.cursor() as cur:
                    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                snap["time"] = scalar(fp, "SELECT UTC_TIMESTAMP(6)")
                snap["position"] = self._position(fp)
            except BaseException as e:
                snap["error"] = e
                return
            finally:
                pause.resume()
            snap["why"] = why
            t0 = time.monotonic()
            try:
                snap["engines"] = transactional_engines(fp)
                snap["tables"] = base_tables(fp, database)
                snap["value"] = all_fingerprints(fp, database, mode)
            except BaseException as e:
                snap["error"] = e
            snap["seconds"] = round(time.monotonic() - t0, 3)

        def cancel() -> None:  # the sink or mariadb-backup failed: stop fingerprinting on the source
            pause.resume()
            fp_id = snap.get("conn_id")
            if fp_id:
                with contextlib.suppress(Exception), contextlib.closing(connect(src, what=what, pinned=False)) as c:
                    with c.cursor() as cur:
                        cur.execute(f"KILL QUERY {int(fp_id)}")

        snap["conn_id"] = scalar(fp, "SELECT CONNECTION_ID()")
        worker = threading.Thread(target=in_lock, name="mariadb-physical-fingerprint", daemon=True)
        worker.start()
        t0 = time.monotonic()
        child.start()
        try:
            info = kit.stream_child(child, sink, "data", on_error=cancel)
        except BaseException:
            done.set()
            pause.acquired.set()
            pause.resume()
            worker.join(timeout=60)
            raise
        finally:
            pause.resume()
        stream_seconds = time.monotonic() - t0
        done.set()
        pause.acquired.set()
        worker.join()
        if "error" in snap:
            raise JobFailed(f"{what}: fingerprinting inside mariadb-backup's BLOCK_COMMIT lock failed: "
                            f"{snap['error']}") from None
        why: list[str] = []
        if "value" not in snap:  # mariadb-backup never reported the lock: fingerprint now, and say so
            why.append("mariadb-backup never reported holding BACKUP STAGE BLOCK_COMMIT, so the fingerprints were "
                       "taken after the backup ended")
            with fp.cursor() as cur:
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            snap.update(time=scalar(fp, "SELECT UTC_TIMESTAMP(6)"), position=self._position(fp),
                        engines=transactional_engines(fp), tables=base_tables(fp, database))
            t1 = time.monotonic()
            snap["value"] = all_fingerprints(fp, database, mode)
            snap["seconds"] = round(time.monotonic() - t1, 3)
        elif snap.get("why"):
            why.append(f"{snap['why']}, so the fingerprint snapshot may hold other transactions than the backup")
        with contextlib.suppress(Exception), fp.cursor() as cur:
            cur.execute("COMMIT")
        non_tx = sorted(f"{t} ({e})" for t, e in snap["tables"] if (e or "").lower() not in snap["engines"])
        if non_tx:
            why.append("tables of non-transactional engines are copied before BACKUP STAGE BLOCK_COMMIT, while "
                       "writes to them are still possible: " + ", ".join(non_tx))
        at = snap["time"]
        consistency = {"kind": "mariadb", "time": at.replace(tzinfo=timezone.utc).isoformat() if at else
                       datetime.now(timezone.utc).isoformat(), **snap["position"],
                       "method": "fingerprint snapshot started while mariadb-backup was paused (SIGSTOP) holding "
                                 "BACKUP STAGE BLOCK_COMMIT",
                       "lock_seconds": round(pause.t_released - pause.t_acquired, 3)
                       if pause.t_released and pause.t_acquired else None,
                       "pause_seconds": pause.paused_seconds, "exactness": "approximate" if why else "exact"}
        if why:
            consistency["approximate_because"] = why
        else:
            consistency["proof"] = (f"mariadb-backup printed '{ACQUIRED}' and was stopped; every thread was stopped, "
                                    "its stderr was drained and it had not printed "
                                    f"'{RELEASING}' (printed before that statement is sent), so the lock was held "
                                    "while START TRANSACTION WITH CONSISTENT SNAPSHOT ran; no commit can happen "
                                    "under it and the backup ends at the LSN read under it, so both hold the same "
                                    "transactions")
        stream = {"stream_seconds": round(stream_seconds, 3), "fingerprint_seconds": snap["seconds"],
                  "tables": len(snap["tables"]), "content_bytes": info.content_bytes,
                  "lsn_under_lock": pause.lsn_under_lock}
        logger.info("%s: %s streamed %d bytes in %.1fs (paused %.3fs); %d tables fingerprinted (%s) in %.1fs; %s",
                    what, tool.path.name, info.content_bytes, stream_seconds, pause.paused_seconds,
                    len(snap["tables"]), mode, snap["seconds"], consistency["exactness"])
        return consistency, snap["value"], stream

    @staticmethod
    def _settle(consistency: dict, checkpoints: dict, info: dict, lsn_under_lock: int | None, what: str) -> None:
        """Add the backup's LSN and binlog position to ``consistency``; downgrade to approximate on a mismatch."""
        why = consistency.setdefault("approximate_because", [])
        if checkpoints.get("last_lsn"):
            consistency["lsn"] = int(checkpoints["last_lsn"])
            consistency["checkpoint_lsn"] = int(checkpoints.get("to_lsn") or 0)
        else:
            why.append("mariadb-backup wrote no xtrabackup_checkpoints (--extra-lsndir), so its LSN is unknown")
        if lsn_under_lock is not None and consistency.get("lsn") not in (None, lsn_under_lock):
            why.append(f"the LSN mariadb-backup read under BLOCK_COMMIT ({lsn_under_lock}) is not the copy's end "
                       f"LSN ({consistency.get('lsn')})")
        if info.get("binlog_pos"):
            consistency["backup_binlog_pos"] = info["binlog_pos"]
            backup_gtid, ours = gtid_of(info["binlog_pos"]), consistency.get("gtid_binlog_pos")
            if backup_gtid is not None and (ours or "") != backup_gtid:
                why.append(f"mariadb-backup's GTID position ({backup_gtid}) differs from the fingerprint snapshot's "
                           f"({ours or 'none'})")
        if why:
            consistency["exactness"] = "approximate"
            consistency.pop("proof", None)
            logger.warning("%s: fingerprints are approximate: %s", what, "; ".join(why))
        else:
            del consistency["approximate_because"]

    # ---- scratch and restore -------------------------------------------------------------------------

    @contextlib.contextmanager
    def scratch(self, *, policy, workdir: Path) -> Iterator[Scratch]:
        """An ephemeral mariadbd for the prepared copy (started by ``restore``); removed with proof on exit."""
        spec = policy.drill.scratch
        if spec.type != "ephemeral":
            raise ConfigError(f"policy {policy.system}: source.mode physical drills only into drill.scratch.type "
                              f"ephemeral (a private mariadbd on the prepared copy), not {spec.type!r}; "
                              "set drill.scratch.type: ephemeral")
        opts = _options(policy)
        database = source_endpoint(policy, with_password=False).database
        server = new_server(Path(workdir), server_bin_dir=opts.get("server_bin_dir"), initialize=False)
        scratch = Scratch(kind="ephemeral")
        scratch.handle = MariaScratch(endpoint=server.endpoint(database), workdir=Path(workdir),
                                      create_database=False, server=server)
        scratch.info = {"engine": "mariadb", "mode": "physical", "datadir": str(server.datadir),
                        "networking": "off (--skip-networking)", "grants": "off (--skip-grant-tables; private socket)",
                        "os_user": server.run_as or os.environ.get("USER", str(os.getuid())), "database": database,
                        "event_scheduler": "OFF",
                        "not_production": "private data directory extracted from the backup and prepared for this "
                                          "drill, served only on a private Unix socket"}
        try:
            yield scratch
        finally:
            scratch.teardown_proof = server.stop()

    def restore(self, *, policy, scratch: Scratch, source: RestoreSource) -> None:
        """Extract the xbstream into the scratch data directory, prepare it, check its LSN against the manifest
        and start the private mariadbd on it."""
        h: MariaScratch = scratch.handle
        server = h.server
        opts = _options(policy)
        what = f"policy {policy.system}: physical restore into ephemeral scratch"
        manifest = scratch.manifest or {}
        details = manifest.get("details") or {}
        if details.get("dump_format", "xbstream") != "xbstream":
            raise ConfigError(f"{what}: this backup is a {details['dump_format']} dump (taken in mode dump), not a "
                              "mariadb-backup stream; drill it with the policy's source.mode as it was at backup time")
        xb, mb = stream_tool(opts.get("bin_dir")), backup_tool(opts.get("bin_dir"))
        datadir = server.datadir
        datadir.mkdir(mode=0o700)
        if server.run_as:
            import pwd

            pw = pwd.getpwnam(server.run_as)
            os.chown(datadir, pw.pw_uid, pw.pw_gid)
        t0 = time.monotonic()
        self._extract(kit.run_as_argv(server.run_as, [xb.path, "-x", "-C", datadir]), source, what)
        t1 = time.monotonic()
        proc = subprocess.run(kit.run_as_argv(server.run_as, [mb.path, f"--defaults-file={datadir / 'backup-my.cnf'}",
                                                              "--prepare", f"--target-dir={datadir}"]),
                              capture_output=True, text=True, env=kit.minimal_env(SBIN_PATH), cwd="/",
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise JobFailed(f"{what}: {mb.path.name} --prepare failed (exit {proc.returncode}): "
                            f"{kit.tail_text(proc.stderr or proc.stdout)}")
        t2 = time.monotonic()
        checkpoints = read_kv(datadir / "xtrabackup_checkpoints")
        recorded = (manifest.get("consistency") or {}).get("lsn")
        if recorded is not None and checkpoints.get("last_lsn") != str(recorded):
            raise VerificationFailed(f"{what}: the prepared copy ends at LSN {checkpoints.get('last_lsn')} but the "
                                     f"manifest records LSN {recorded}; the stream is not the recorded backup")
        server.extra = [*server_options(datadir / "backup-my.cnf"), "--skip-grant-tables", "--skip-slave-start"]
        server.lower_case_table_names = details.get("lower_case_table_names") or None
        server.start()
        h.endpoint = server.endpoint(h.endpoint.database)
        scratch.info.update(socket=str(server.socket), server_pid=server.pid, server_version=server.version,
                            prepared_lsn=checkpoints.get("last_lsn"), prepare_tool=mb.version_text,
                            extract_seconds=round(t1 - t0, 3), prepare_seconds=round(t2 - t1, 3),
                            start_seconds=round(time.monotonic() - t2, 3))
        logger.info("%s: extracted in %.1fs, prepared in %.1fs, server up (LSN %s)", what, t1 - t0, t2 - t1,
                    checkpoints.get("last_lsn"))

    @staticmethod
    def _extract(argv: list[str], source: RestoreSource, what: str) -> None:
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, cwd="/",
                                    env=kit.minimal_env(SBIN_PATH))
            kit.set_pipe_size(proc.stdin)
            try:
                source.stream_to("data", proc.stdin)
                proc.stdin.close()
            except BrokenPipeError:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
                rc = proc.wait()
                err.seek(0)
                raise JobFailed(f"{what}: mbstream failed (exit {rc}): {kit.tail_text(err.read())}") from None
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            rc = proc.wait()
            err.seek(0)
            if rc != 0:
                raise JobFailed(f"{what}: mbstream failed (exit {rc}): {kit.tail_text(err.read())}")

    # ---- restore --to ----------------------------------------------------------------------------------

    def restore_target(self, *, policy, dsn: str | None, replace_source: bool = False):
        raise ConfigError(f"policy {policy.system}: a physical (mariadb-backup) backup cannot be restored with "
                          "'backupkit restore --to'; drill it, or extract and prepare it by hand (docs/mariadb.md)")

    def is_empty(self, *, scratch: Scratch) -> bool:
        raise NotImplementedError
