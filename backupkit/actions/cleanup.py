"""``backupkit cleanup``: destroy what killed drills and restores left behind, and record it.

After a SIGKILL or a power loss, a drill leaves decrypted patient data in its
work directory and, for PostgreSQL, maybe a scratch server still running on a
restored data directory. The next drill or backup of that system, and this
command for every system, find such directories (their owner's flock is free:
workdir.py), stop the scratch servers whose command line names a data
directory inside them, delete the directory, and append an ``abandoned``
drill record with the teardown proof.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path

from ..context import Context
from ..engines import engine_for
from ..engines.kit import process_cmdline, process_running, stop_process
from ..workdir import PREFIX, base_dir, try_claim

logger = logging.getLogger(__name__)

GRACE_SECONDS = 60  # a directory without a marker may be a run that is just starting


def _cmdline(pid: int) -> str:
    return " ".join(process_cmdline(pid))


def stop_servers(directory: Path) -> list[dict]:
    """Stop every PostgreSQL postmaster whose data directory is inside ``directory``; return what happened."""
    out = []
    for pidfile in directory.rglob("postmaster.pid"):
        datadir = pidfile.parent
        try:
            pid = abs(int(pidfile.read_text().splitlines()[0]))  # negative: a standalone backend (initdb)
        except (OSError, ValueError, IndexError):
            continue
        owned = process_running(pid) and str(datadir) in _cmdline(pid)
        if owned:  # the server named this very data directory on its command line: ours, kill it
            stop_process(pid, ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)))
        out.append({"datadir": str(datadir), "postmaster_pid": pid, "was_ours": owned,
                    "postmaster_running": process_running(pid) and str(datadir) in _cmdline(pid)})
    return out


def stop_helpers(directory: Path) -> list[dict]:
    """Stop every process whose command line names a path inside ``directory`` (an initdb or pg_ctl a killed
    drill started, still writing there). Only a process that names this private directory is touched."""
    out = []
    prefix = str(directory).rstrip("/") + "/"
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid == os.getpid():
            continue
        argv = process_cmdline(pid)
        if not any(a == str(directory) or a.startswith(prefix) or f"={prefix}" in a for a in argv):
            continue
        stop_process(pid, ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)))
        out.append({"pid": pid, "command": " ".join(argv)[:200], "running": process_running(pid)})
    return out


def leftovers(ctx: Context, system: str | None = None) -> list[tuple[Path, int, dict]]:
    """Work directories of dead runs (of ``system``, or all), each claimed: (path, lock fd, marker info)."""
    found = []
    base = base_dir(ctx.config.work_dir)
    for d in sorted(base.glob(PREFIX + "*")):
        if not d.is_dir() or d.is_symlink():
            continue
        fd, info = try_claim(d)
        if fd is None:
            continue  # its owner is alive
        if fd == -1 and time.time() - d.stat().st_mtime < GRACE_SECONDS:
            continue
        if system is not None and info.get("system") not in (system, None):
            if fd >= 0:
                os.close(fd)
            continue
        found.append((d, fd, info))
    return found


def drop_server_scratch(ctx: Context, directory: Path, info: dict) -> dict:
    """What a killed drill created on a scratch *server* (a database, an Oracle user), dropped through its
    engine: the teardown facts to merge into the abandoned record ({} when there is nothing to drop)."""
    system = info.get("system")
    if info.get("kind", "drill") != "drill" or not system:
        return {}
    try:
        policy = ctx.policy(system)
        proof = engine_for(policy).drop_leftover_scratch(policy=policy, workdir=directory / "scratch")
    except Exception as e:  # noqa: BLE001 - unreachable scratch server, policy gone: say so, keep cleaning
        logger.error("cleanup of %s: could not drop what its drill created on the scratch server: %s", directory, e)
        return {"scratch_error": " ".join(str(e).split()), "scratch_dropped_exists": None}
    return dict(proof or {})


def clean(ctx: Context, system: str | None = None) -> list[dict]:
    """Destroy every leftover work directory (of ``system``, or all) and record each; return the records' bodies."""
    done = []
    for d, fd, info in leftovers(ctx, system):
        try:
            scratch = drop_server_scratch(ctx, d, info)
            servers = stop_servers(d)
            helpers = stop_helpers(d)
            for extra in info.get("scratch_roots", []):  # cluster roots outside the work directory
                p = Path(extra)
                if p.is_dir() and not p.is_symlink():
                    servers += stop_servers(p)
                    helpers += stop_helpers(p)
                    shutil.rmtree(p, ignore_errors=True)
            shutil.rmtree(d, ignore_errors=True)
        finally:
            if fd >= 0:
                os.close(fd)
        proof = {"workdir": str(d), "workdir_exists": d.exists(), "servers": servers, "helpers_stopped": helpers,
                 "postmaster_running": any(s["postmaster_running"] for s in servers), **scratch}
        sys_ = info.get("system") or "*"
        body = {"drill_id": info.get("id"), "system": sys_, "verdict": "abandoned", "started": info.get("started"),
                "interrupted_process": {k: info.get(k) for k in ("pid", "process_start", "host")},
                "reason": f"{info.get('kind', 'drill')} process {info.get('pid', '?')} died (killed or power loss) "
                          "and left its work directory",
                "deviations": ["the drill was killed before it could tear down its scratch and record itself"],
                "checks": [], "timeline": [], "teardown": proof, "cleaned_by": ctx.operator,
                "rto": {"measured_seconds": None, "met": None}, "rpo": {"met": None}}
        kind = "drill" if info.get("kind", "drill") == "drill" else "abandoned"
        ctx.ledger.append(ctx.signer, kind=kind, policy=sys_, subject=info.get("id") or d.name, body=body)
        logger.warning("removed %s left by a killed %s of %s%s", d, info.get("kind", "run"), sys_,
                       f"; stopped {len(servers)} scratch server(s)" if servers else "")
        done.append(body)
    return done
