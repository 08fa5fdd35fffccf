"""Engine-neutral helpers every database engine needs (docs/engines.md).

Nothing here knows a database. It owns the pieces that used to be written out
once per engine and must behave the same everywhere:

- ``read_secret``: a password from a 0600 file or an environment variable;
- ``secret_file``: a private file (0600 from the first byte, in a private
  directory) for a client program's credentials, removed on exit;
- ``Child`` and ``stream_child``: run a dump program, stream its stdout into
  the artifact sink, kill it when the sink fails, keep the tail of its stderr
  (optionally watching each stderr line as it arrives) and fail with that tail;
  ``drain_child``: the same for a second dump whose output is only hashed;
- ``find_tool``: locate a program and check the version it reports;
- ``free_port``, ``tcp_open``, ``process_running``, ``process_uid``,
  ``stop_process``: ports and processes;
- ``server_os_user``, ``private_root``: private scratch directories reachable
  by the OS user a scratch server runs as;
- ``teardown_proof``: the verified facts recorded after a scratch is destroyed.

PostgreSQL (``pg_conn.py``, ``pg_cluster.py``, ``postgres.py``) still has its own
copies of several of these; they are meant to move here (docs/engines.md).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import ConfigError, JobFailed
from ..keys import check_private_mode

logger = logging.getLogger(__name__)

PIPE_SIZE = 1 << 20  # 1 MiB pipe buffer between the dump program and the sink
DRAIN_BATCH, DRAIN_PAUSE = 256 << 10, 0.002  # drain_child: after a read shorter than this, wait this long
STDERR_TAIL = 1500  # characters of a child's stderr kept for the error message


# ---- secrets -------------------------------------------------------------------------------


# Environment variables never handed to a child program: those a policy's password was read from
# (``password_env``, added by read_secret) and those client libraries would read as a password.
_SECRET_ENV: set[str] = {"PGPASSWORD", "MYSQL_PWD", "PGBACKREST_REPO1_CIPHER_PASS"}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child program: ours, without any variable that holds a password."""
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV and not k.endswith("_CIPHER_PASS")}
    env.update(extra or {})
    return env


def scratch_tag(workdir: Path, length: int = 8) -> str:
    """The name part of what a drill creates on a scratch *server* (a database, an Oracle user): derived from
    the drill's private work directory (random, unique), so that ``backupkit cleanup`` and the next drill can
    find and drop what a killed drill left there from the work directory it left behind (lower-case hex)."""
    return hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:length]


def minimal_env(path: str | None = None) -> dict[str, str]:
    """The environment of a child that needs nothing of ours: PATH (``path``, or ours) and the C locale,
    so its messages parse the same everywhere and no variable of ours (a cipher pass) travels with it."""
    return {"PATH": path or os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}


def read_secret(*, password_file: Path | None, password_env: str | None, what: str) -> str | None:
    """Given a policy's password_file / password_env, return the password, or None when neither is set.

    A password file readable by group or others is refused (ConfigError "chmod 600"); the
    password is its first line. An unset environment variable is a ConfigError naming it."""
    if password_file is not None:
        path = Path(password_file)
        check_private_mode(path, f"{what} password file")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{what} password file {path} cannot be read ({e.strerror})") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise ConfigError(f"{what} password file {path} is empty; put the password on its first line")
        return lines[0]
    if password_env:
        _SECRET_ENV.add(password_env)  # from now on no child inherits it
        value = os.environ.get(password_env)
        if value is None:
            raise ConfigError(f"{what} password environment variable {password_env} is not set")
        return value
    return None


def create_private_file(path: Path, data: bytes | str) -> Path:
    """Create ``path`` (which must not exist) with mode 0600 from the first byte and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


@contextlib.contextmanager
def secret_file(directory: Path, data: bytes | str, *, prefix: str = "secret") -> Iterator[Path]:
    """Yield a new 0600 file holding ``data`` inside a new 0700 directory under ``directory``;
    both are removed on exit, also when the body raised. The path is unpredictable."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=directory))  # 0700
    path = private / f"{prefix}-{secrets.token_hex(6)}"
    try:
        create_private_file(path, data)
        yield path
    finally:
        shutil.rmtree(private, ignore_errors=True)


# ---- child processes -------------------------------------------------------------------------


def tail_text(text: str | bytes, limit: int = STDERR_TAIL) -> str:
    """The last ``limit`` characters of a program's output, on one line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(text.strip()[-limit:].split())


def set_pipe_size(fileobj, size: int = PIPE_SIZE) -> None:
    """Enlarge a pipe's kernel buffer (fewer context switches); ignored where unsupported."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(fileobj.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)


@dataclass
class Child:
    """A program whose stdout is a dump stream. ``start()``, then read ``stdout``; ``finish()``.

    stderr is read by a thread: every line goes to ``watch`` (if given) as it arrives and the
    last lines are kept for the error message. argv must never hold a secret (use
    ``secret_file`` and the program's option-file mechanism)."""

    argv: Sequence[str]
    what: str  # "policy his", for messages
    tool: str  # "mariadb-dump", for messages
    env: dict[str, str] | None = None
    watch: Callable[[str], None] | None = None
    cwd: str | None = "/"
    proc: subprocess.Popen | None = None
    _lines: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    _reader: threading.Thread | None = None

    def start(self) -> "Child":
        self.proc = subprocess.Popen(list(self.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env if self.env is not None else child_env(),
                                     cwd=self.cwd, bufsize=0)
        set_pipe_size(self.proc.stdout)
        self._reader = threading.Thread(target=self._read_stderr, name=f"{self.tool}-stderr", daemon=True)
        self._reader.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def stdout(self):
        assert self.proc is not None
        return self.proc.stdout

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._lines.append(line)
            if self.watch is not None:
                try:
                    self.watch(line)
                except Exception:  # a watcher must never stop the stderr drain
                    logger.exception("%s: stderr watcher failed", self.tool)

    def stderr_tail(self) -> str:
        return tail_text("\n".join(self._lines))

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the program and reap it (idempotent)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.proc.wait()
        self._join()

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=10)

    def wait(self) -> int:
        assert self.proc is not None
        rc = self.proc.wait()
        self._join()
        return rc

    def failure(self, rc: int) -> JobFailed:
        reason = self.stderr_tail() or (f"killed by signal {-rc}" if rc < 0 else "no message")
        if rc < 0 and "signal" not in reason:
            reason = f"killed by signal {-rc}; {reason}"
        return JobFailed(f"{self.what}: {self.tool} failed (exit {rc}): {reason}")

    def close(self) -> None:
        if self.proc is not None:
            for f in (self.proc.stdout, self.proc.stderr):
                with contextlib.suppress(Exception):
                    f.close()


def stream_child(child: Child, sink, name: str, *, on_error: Callable[[], None] | None = None, reader=None):
    """Stream a started child's stdout (or ``reader``, a tap reading it) into ``sink`` as stream
    ``name`` and return the StreamInfo.

    If the sink raises (disk full, interrupted), the child is killed and reaped, ``on_error`` runs,
    and the sink's error propagates. A child that exits non-zero (or is killed) raises JobFailed
    with the tail of its stderr, even when the sink had read everything."""
    try:
        info = sink.write_stream(name, child.stdout if reader is None else reader)
    except BaseException:
        child.kill()
        if on_error is not None:
            with contextlib.suppress(Exception):
                on_error()
        child.close()
        raise
    rc = child.wait()
    child.close()
    if rc != 0:
        if on_error is not None:
            with contextlib.suppress(Exception):
                on_error()
        raise child.failure(rc)
    return info


def drain_child(child: Child, feed: Callable[[bytes], None] | None = None, *,
                pump: Callable[[], None] | None = None) -> None:
    """Read a started child's stdout to the end, handing each chunk to ``feed``, or let ``pump`` read
    it all (a reader of its own over ``child.stdout``); the output goes nowhere else. If reading,
    ``feed`` or ``pump`` fails, the child is killed and reaped and the error propagates; a child that
    exits non-zero raises JobFailed with the tail of its stderr."""
    try:
        if pump is not None:
            pump()
        else:
            while chunk := child.stdout.read(1 << 20):
                feed(chunk)
                if len(chunk) < DRAIN_BATCH:
                    time.sleep(DRAIN_PAUSE)  # let the pipe fill: fewer, larger reads (the output goes nowhere)
    except BaseException:
        child.kill()
        child.close()
        raise
    rc = child.wait()
    child.close()
    if rc != 0:
        raise child.failure(rc)


# ---- tools -----------------------------------------------------------------------------------


def tool_version(path: Path, pattern: str = r"(\d+)\.(\d+)(?:\.(\d+))?") -> tuple[tuple[int, ...], str] | None:
    """Run ``path --version``; return (version tuple, first output line), or None when it cannot run."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=False,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr or "").strip()
    m = re.search(pattern, text)
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None), text.splitlines()[0] if text else ""


@dataclass(frozen=True)
class Tool:
    path: Path
    version: tuple[int, ...]
    version_text: str


def find_tool(names: Sequence[str], *, package: str, bin_dir: str | None = None, dirs: Sequence[Path] = (),
              version_pattern: str = r"(\d+)\.(\d+)(?:\.(\d+))?", min_version: tuple[int, ...] = (),
              accept: Callable[[tuple[int, ...]], bool] | None = None, versioned: bool = True) -> Tool:
    """Given candidate program names (preferred first), return the first that runs and whose
    reported version is at least ``min_version`` (and satisfies ``accept``); with ``versioned=False``
    any executable will do (programs without ``--version``). Searched: ``bin_dir``,
    ``dirs``, then PATH. Raises ConfigError naming the Debian ``package`` to install."""
    search: list[Path] = []
    if bin_dir:
        search.append(Path(bin_dir))
    search.extend(Path(d) for d in dirs)
    search.extend(Path(d) for d in os.environ.get("PATH", "").split(os.pathsep) if d)
    search.extend(Path(d) for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"))
    rejected = []
    for name in names:
        seen = set()
        for d in search:
            p = d / name
            if p in seen or not (p.is_file() and os.access(p, os.X_OK)):
                continue
            seen.add(p)
            if not versioned:
                return Tool(p, (), "")
            v = tool_version(p, version_pattern)
            if v is None:
                rejected.append(f"{p} (does not report a version)")
                continue
            if v[0] < tuple(min_version) or (accept is not None and not accept(v[0])):
                rejected.append(f"{p} (version {'.'.join(map(str, v[0]))})")
                continue
            return Tool(p, v[0], v[1])
    need = f" {'.'.join(map(str, min_version))} or newer" if min_version else ""
    found = f"; found only {', '.join(rejected)}" if rejected else ""
    raise ConfigError(f"{' or '.join(names)}{need} not found{found}; install the Debian package {package} "
                      "or set source.options.bin_dir")


# ---- ports and processes ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def unix_socket_open(path: Path | str | None) -> bool:
    """True when something accepts connections on the Unix socket ``path``."""
    if not path or not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            return s.connect_ex(str(path)) == 0
        except OSError:
            return False


def process_running(pid: int | None) -> bool:
    """True when ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def process_uid(pid: int) -> int | None:
    """The real uid of a live process, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_cmdline(pid: int) -> list[str]:
    """The argv of a live process (empty when unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def stop_process(pid: int | None, steps: Sequence[tuple[int, float]] = ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)),
                 proc: subprocess.Popen | None = None) -> bool:
    """Send each signal in turn until ``pid`` is gone, waiting up to the given seconds after each.
    Reaps ``proc`` when it is our child. Returns True when the process is gone."""
    if not pid:
        return True
    for sig, wait in steps:
        if not process_running(pid):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline, pause = time.monotonic() + wait, 0.002
        while time.monotonic() < deadline:
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.poll()
            if not process_running(pid):
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.05)  # most processes are gone within milliseconds
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    return not process_running(pid)


# ---- private scratch directories -------------------------------------------------------------


def server_os_user(name: str, package: str) -> str | None:
    """The OS user a scratch server must run as: ``name`` when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"running as root, but there is no '{name}' OS user to run the ephemeral scratch server as; "
                          f"install the {package} package or run backupkit as an unprivileged user") from None
    return name


def run_as_argv(run_as: str | None, argv: Sequence[str | os.PathLike]) -> list[str]:
    """``argv`` run as OS user ``run_as`` (through runuser) when given."""
    cmd = [str(a) for a in argv]
    return ["runuser", "-u", run_as, "--", *cmd] if run_as else cmd


def private_root(workdir: Path, run_as: str | None, prefix: str = "scratch-") -> Path:
    """A new private (0700) directory for a scratch server, owned by ``run_as`` when given.

    It lives under ``workdir`` unless that OS user cannot reach it (a 0700 parent owned by
    root), in which case it falls back to the system temp directory. ``workdir`` itself, when it is
    ours, is made traversable (0711: the server can pass through it, never list it), so that the
    scratch stays on the work volume."""
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    if run_as:
        st = workdir.stat()
        if created:
            os.chmod(workdir, 0o711)
        elif st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o011 != 0o011:
            os.chmod(workdir, stat.S_IMODE(st.st_mode) | 0o011)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    if not run_as:
        return root
    pw = pwd.getpwnam(run_as)
    os.chown(root, pw.pw_uid, pw.pw_gid)
    probe = subprocess.run(["runuser", "-u", run_as, "--", "test", "-w", str(root), "-a", "-x", str(root)],
                           capture_output=True, check=False)
    if probe.returncode == 0:
        return root
    os.rmdir(root)
    root = Path(tempfile.mkdtemp(prefix=f"bk-{prefix}"))
    os.chown(root, pw.pw_uid, pw.pw_gid)
    logger.info("workdir %s is not reachable by OS user %s; the scratch server lives in %s (to keep it on the work "
                "volume, let %s traverse work_dir and its parents: chmod o+x, or 0711)", workdir, run_as, root, run_as)
    return root


def teardown_proof(*, paths: dict[str, Path | None] = {}, pids: dict[str, int | None] = {},  # noqa: B006
                   tcp_ports: dict[str, int | None] = {}, sockets: dict[str, Path | None] = {}) -> dict:  # noqa: B006
    """Verified facts after a scratch was destroyed: for each named path ``<name>`` and
    ``<name>_exists``; for each pid ``<name>`` and ``<name>_running``; for each port or socket
    ``<name>`` and ``<name>_open``. Every ``*_exists``/``*_running``/``*_open`` must be False."""
    proof: dict = {}
    for k, p in paths.items():
        proof[k] = str(p) if p is not None else None
        proof[f"{k}_exists"] = bool(p is not None and os.path.lexists(p))
    for k, pid in pids.items():
        proof[k] = pid
        proof[f"{k}_running"] = process_running(pid)
    for k, port in tcp_ports.items():
        proof[k] = port
        proof[f"{k}_open"] = bool(port and tcp_open(port))
    for k, s in sockets.items():
        proof[k] = str(s) if s is not None else None
        proof[f"{k}_open"] = bool(s is not None and (os.path.lexists(s) or unix_socket_open(s)))
    return proof


def proof_clean(proof: dict) -> bool:
    """True when a teardown proof shows nothing left (no path exists, no process runs, nothing listens).
    A fact that could not be checked (None) is not proof of absence, as in the evidence report."""
    return not any(v or v is None for k, v in proof.items() if k.endswith(("_exists", "_running", "_open")))
