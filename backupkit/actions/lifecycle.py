"""What a drill and a restore share: pick a backup, prove it, read it, and live with a scratch.

- picking: the newest (or a named) backup from the local repository (``pick_local``) or downloaded
  from a target (``fetch_from_target``); ``pick_backup`` chooses between them;
- proving: signature, ledger binding and stream hashes (``check_artifacts``), and that this host holds
  one of the recipient identities (``check_identity``);
- reading: ``TimedSource`` (accounts decryption time), ``fingerprint_key`` and ``restored_fingerprints``;
- living with a scratch: a private work directory (``scratch_workdir``, ``remove_workdir``), signals
  turned into ``Interrupted`` (``interruptible``) or ignored while tearing down (``shielded``), and
  ``ScratchLifecycle``: ``with`` it around an engine's scratch to time provision and teardown on a
  ``Timeline`` and always tear down, also on an exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import progress
from ..artifact import DirectorySource, check_stream_files, no_identity_message, stream_file_name
from ..context import Context
from ..errors import ConfigError, Interrupted, JobFailed, VerificationFailed
from ..files import create_private
from ..history import History
from ..keyed import KEY_STREAM, decode_key, keyed
from ..manifest import MANIFEST, SIGNATURE
from ..names import check_backup_id
from ..policy import Policy
from ..provenance import history_with_target, ledger_history, load_bound, load_bound_remote, remote_listing, target_ledger
from ..workdir import WorkDir
from .cleanup import stop_servers


# ---- picking a backup -------------------------------------------------------------------------------

@dataclass
class Picked:
    system: str
    backup_id: str
    directory: Path  # where manifest and streams are (local repo or fetched copy)
    copy: dict
    where: str  # the location, for messages: "backup his/ID in /repo/his" or "... on target offsite"
    history: History  # the ledger knowledge the manifest is checked against


def fetch_from_target(ctx: Context, policy: Policy, target_name: str, backup_id: str | None, dest: Path) -> Picked:
    """Download one backup's manifest, signature and streams from a target into ``dest``.

    The newest backup is the newest by ledger sequence among the complete copies on the target; at a DR
    site whose own ledger lacks the backup records, the target's ledger snapshot supplies them."""
    with ctx.target(target_name) as target:
        ids, _, _ = remote_listing(target, policy.system)
        if not ids:
            raise JobFailed(f"target {target_name}: holds no backup of system {policy.system}; run 'backupkit copy'")
        hist = ledger_history(ctx.ledger, policy.system)
        if backup_id not in hist.committed or (backup_id is None and not hist.ordered(ids)):
            with target_ledger(target, ctx.signer.public) as snap:
                hist = history_with_target(hist, snap)
        known = hist.ordered(ids)
        if backup_id is None:
            if not known:
                raise VerificationFailed(f"target {target_name}: none of the {len(ids)} backup(s) of {policy.system} there "
                                         "has a ledger record (locally or in the target's ledger snapshot)")
            bid = known[-1]
        elif backup_id in ids:
            bid = backup_id
        else:
            latest = f" (latest is {known[-1]})" if known else ""
            raise ConfigError(f"target {target_name}: backup {policy.system}/{backup_id} not found there{latest}")
        where = f"backup {policy.system}/{bid} on target {target_name}"
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, 0o700)
        base = f"{policy.system}/{bid}/"
        manifest, data = load_bound_remote(target, ctx.signer.public, hist, policy.system, bid)
        (dest / MANIFEST).write_bytes(data)
        with target.open_read(base + SIGNATURE) as src:
            (dest / SIGNATURE).write_bytes(src.read(4096))
        for s in manifest["streams"]:
            name = stream_file_name(s, where)
            if target.stat(base + name) is None:
                raise VerificationFailed(f"{where}: {name} is missing")
            with target.open_read(base + name) as src, create_private(dest / name) as out:
                shutil.copyfileobj(src, out, 1 << 20)
        return Picked(policy.system, bid, dest, {"location": "target", "target": target_name, "key": base,
                                  "describe": target.describe()}, where, hist)


def candidate_backups(ctx: Context, policy: Policy, from_target: str | None) -> list[str]:
    """Backup IDs a drill could use, oldest first by ledger sequence: the local repository's, or those
    complete on ``from_target``."""
    hist = ledger_history(ctx.ledger, policy.system)
    if from_target:
        with ctx.target(from_target) as target:
            ids = remote_listing(target, policy.system)[0]
            if not set(ids) <= set(hist.committed):
                with target_ledger(target, ctx.signer.public) as snap:
                    hist = history_with_target(hist, snap)
            return hist.ordered(ids)
    return hist.ordered(ctx.repository.scan(policy.system)[0])


def pick_local(ctx: Context, policy: Policy, backup_id: str | None) -> Picked:
    hist = ledger_history(ctx.ledger, policy.system)
    if backup_id:
        ref = ctx.repository.get(policy.system, check_backup_id(backup_id))
    else:
        refs, _ = ctx.repository.scan(policy.system)
        ordered = hist.ordered(refs)
        if not ordered:
            raise ConfigError(f"no backup of {policy.system} yet in {ctx.repository.root}; run 'backupkit backup {policy.system}'")
        ref = refs[ordered[-1]]
    return Picked(policy.system, ref.backup_id, ref.path, {"location": "local", "path": str(ref.path)},
                  f"backup {policy.system}/{ref.backup_id} in {ref.path.parent}", hist)


def pick_backup(ctx: Context, policy: Policy, backup_id: str | None, from_target: str | None, work: Path) -> Picked:
    """The backup to restore: downloaded from ``from_target`` into ``work/fetched``, or the local repository's."""
    if from_target:
        return fetch_from_target(ctx, policy, from_target, backup_id, work / "fetched")
    return pick_local(ctx, policy, backup_id)


# ---- proving and reading it -------------------------------------------------------------------------

def check_artifacts(ctx: Context, picked: Picked, what: str) -> dict:
    """Signature and ledger binding of the manifest, then size and SHA-256 of every stream. Returns the manifest."""
    manifest, _ = load_bound(picked.directory, ctx.signer.public, picked.history, picked.system, picked.backup_id,
                             picked.where)
    check_stream_files(picked.directory, manifest["streams"], picked.where)
    return manifest


def check_identity(ctx: Context, manifest: dict, what: str) -> None:
    have = {i.id for i in ctx.identities}
    if not have & set(manifest.get("recipients", [])):
        raise JobFailed(no_identity_message(what, manifest.get("recipients", []), ctx.identities))


class TimedSource(DirectorySource):
    """Restore source that accounts the time spent decrypting and decompressing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.decrypt_seconds = 0.0

    def stream_to(self, name, writer):
        t0 = time.monotonic()
        try:
            super().stream_to(name, writer)
        finally:
            self.decrypt_seconds += time.monotonic() - t0


def timed_source(ctx: Context, picked: Picked, manifest: dict, what: str) -> TimedSource:
    return TimedSource(picked.directory, manifest["streams"], ctx.identities, what=what,
                       recipient_ids=manifest["recipients"])


def fingerprint_key(source, manifest: dict, what: str) -> bytes | None:
    """The backup's fingerprint key, decrypted from its own stream (keyed.py); None for older manifests."""
    note = manifest.get("fingerprint_key")
    if not note:
        return None
    try:
        return decode_key(source.read_small(note.get("stream", KEY_STREAM)))
    except (KeyError, ValueError) as e:
        raise VerificationFailed(f"{what}: its fingerprint key stream is missing or malformed ({e}); "
                                 "the backup cannot be proven") from None


def restored_fingerprints(engine, scratch, manifest: dict, fp_key: bytes | None) -> dict:
    """The restored copy's fingerprints, computed as the manifest's were and keyed the same way."""
    actual = engine.fingerprints(scratch=scratch, mode=manifest["fingerprint_mode"], like=manifest["fingerprints"])
    return keyed(actual, fp_key) if fp_key is not None else actual


def restored_checks(engine, scratch, manifest: dict, fp_key: bytes | None) -> tuple[list, dict]:
    """The engine's integrity checks and the restored copy's (keyed) fingerprints, which the engine may
    overlap where neither can see what the other creates (``Engine.check_restored``)."""
    integrity, actual = engine.check_restored(scratch=scratch, mode=manifest["fingerprint_mode"],
                                              like=manifest["fingerprints"], key=fp_key)
    return integrity, (keyed(actual, fp_key) if fp_key is not None else actual)


# ---- living with a scratch --------------------------------------------------------------------------

def scratch_workdir(ctx: Context, *, kind: str = "drill", system: str = "*", ident: str = "") -> WorkDir:
    """A private work directory (workdir.py) whose owner marker lets 'cleanup' find it if this run is killed."""
    return WorkDir(ctx.config.work_dir, kind=kind, system=system, ident=ident)


def remove_workdir(wd: WorkDir, *, stop: bool = True) -> list[dict]:
    """Delete a work directory and the scratch roots noted in its marker, then release the marker.
    With ``stop``, first stop every scratch server still running on a data directory in them; returns those."""
    roots = wd.info.get("scratch_roots", [])
    leftover = (stop_servers(wd.path) + [s for r in roots for s in stop_servers(Path(r))]) if stop else []
    shutil.rmtree(wd.path, ignore_errors=True)
    for r in roots:
        shutil.rmtree(r, ignore_errors=True)
    wd.close()
    return leftover


@contextlib.contextmanager
def interruptible():
    """Turn SIGTERM and SIGHUP into Interrupted (SIGINT is KeyboardInterrupt already) for the block;
    once one arrived, further signals are ignored so teardown and the record are never cut short."""
    received: list[int] = []

    def handler(signum, frame):
        if received:
            return
        received.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def shielded():
    """Ignore SIGTERM, SIGHUP and SIGINT for the block (teardown and recording after an interruption)."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class Timeline:
    """Wall time of each phase, as recorded in the drill record."""

    steps: list[dict] = field(default_factory=list)
    label: str = "drill"  # shown on the progress display: "drill: restore"

    def run(self, step: str, fn: Callable, *args, **kwargs):
        t0 = time.monotonic()
        started = datetime.now(timezone.utc).isoformat()
        try:
            with progress.task(f"{self.label}: {step}"):
                result = fn(*args, **kwargs)
        except BaseException as e:
            self.steps.append({"step": step, "started": started, "seconds": round(time.monotonic() - t0, 3),
                               "status": "failed", "detail": str(e)})
            raise
        self.steps.append({"step": step, "started": started, "seconds": round(time.monotonic() - t0, 3),
                           "status": "ok"})
        return result

    def add(self, step: str, seconds: float, detail: str = "") -> None:
        self.steps.append({"step": step, "seconds": round(seconds, 3), "status": "ok", "detail": detail})

    def failed_step(self) -> str | None:
        """The first step that failed, or None."""
        return next((s["step"] for s in self.steps if s["status"] == "failed"), None)


class ScratchLifecycle:
    """``with ScratchLifecycle(engine.scratch(...), timeline) as scratch:`` — provision the engine's scratch
    as the timed step ``provision`` and tear it down on leaving the block, whatever ends it (an error,
    Ctrl-C, or SIGTERM turned into Interrupted by ``interruptible``); the exception then goes on.

    A normal exit is the timed step ``teardown`` (a failing teardown is recorded failed and raised);
    after an exception the scratch is torn down first and the time is added as ``teardown``.
    ``torn_down`` is True once the engine's teardown returned; ``proof`` is then the scratch's
    ``teardown_proof``. A provision that fails never entered, so there is nothing to tear down
    (the engine cleans up what it half made)."""

    def __init__(self, cm, timeline: Timeline):
        self._cm = cm
        self.timeline = timeline
        self.scratch = None
        self.torn_down = False

    @property
    def proof(self):
        return getattr(self.scratch, "teardown_proof", None)

    def __enter__(self):
        self.scratch = self.timeline.run("provision", self._cm.__enter__)
        return self.scratch

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            self.timeline.run("teardown", self._cm.__exit__, None, None, None)
        else:
            t0 = time.monotonic()
            self._cm.__exit__(exc_type, exc, tb)
            self.timeline.add("teardown", time.monotonic() - t0)
        self.torn_down = True
        return False  # never swallow what ended the block
