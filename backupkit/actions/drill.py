"""``backupkit drill``: the monthly proof that a backup really restores.

Given a policy, pick a backup (latest, ``--backup ID``) and a copy of it (the
local repository or ``--from TARGET``), fetch it, check its signature and
hashes, restore it into a scratch instance that is never production, compare
every table's fingerprint with the manifest, run the policy's assertions,
measure recovery time against the tier and recovery point against the RPO,
tear the scratch down and append a complete ``drill`` ledger record, also
when a step failed. Returns the outcome; the CLI maps it to an exit code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..artifact import DirectorySource, check_stream_files, no_identity_message, sha256_file, stream_file_name
from .. import progress
from ..context import Context
from ..engines import engine_for
from ..errors import (EXIT_FAILED, EXIT_OK, EXIT_VERIFY, BackupkitError, ConfigError, Interrupted, JobFailed,
                      VerificationFailed)
from ..expect import judge
from ..manifest import MANIFEST, SIGNATURE
from ..policy import Policy
from ..verdict import Verdict, compare_fingerprints, drill_verdict
from ..failpoint import failpoint
from ..files import create_private
from ..history import History
from ..keyed import KEY_STREAM, decode_key, keyed
from ..workdir import WorkDir
from .cleanup import clean, stop_servers
from ..names import check_backup_id
from ..provenance import history_with_target, ledger_history, load_bound, load_bound_remote, remote_listing, target_ledger

logger = logging.getLogger(__name__)


@dataclass
class Timeline:
    """Wall time of each drill phase, as recorded in the drill record."""

    steps: list[dict] = field(default_factory=list)

    def run(self, step: str, fn: Callable, *args, **kwargs):
        t0 = time.monotonic()
        started = datetime.now(timezone.utc).isoformat()
        try:
            with progress.task(f"drill: {step}"):
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


@dataclass
class DrillOutcome:
    record: dict
    verdict: Verdict
    seq: int | None = None

    @property
    def exit_code(self) -> int:
        if self.verdict.passed:
            return EXIT_OK
        return EXIT_VERIFY if self.verdict.verification_failed else EXIT_FAILED


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


def run_assertions(engine, scratch, policy: Policy, backup_time: datetime) -> list[dict]:
    out = []
    for a in policy.drill.assertions:
        try:
            value = engine.query_scalar(scratch=scratch, sql=a.sql)
            ok, detail = judge(a.expect, value, backup_time=backup_time)
            out.append({"name": f"assertion {a.name}", "status": "passed" if ok else "failed", "detail": detail,
                        "sql": a.sql, "expect": a.expect})
        except BackupkitError as e:
            out.append({"name": f"assertion {a.name}", "status": "failed", "detail": str(e), "sql": a.sql})
        except Exception as e:  # SQL errors from the driver: the assertion failed, the drill goes on
            out.append({"name": f"assertion {a.name}", "status": "failed",
                        "detail": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                        "sql": a.sql})
    return out


def _backup_time(manifest: dict) -> datetime:
    t = manifest.get("consistency", {}).get("time") or manifest["started"]
    d = datetime.fromisoformat(t)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def scratch_workdir(ctx: Context, *, kind: str = "drill", system: str = "*", ident: str = "") -> WorkDir:
    """A private work directory (workdir.py) whose owner marker lets 'cleanup' find it if this run is killed."""
    return WorkDir(ctx.config.work_dir, kind=kind, system=system, ident=ident)


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


def run_drill(ctx: Context, policy: Policy, *, backup_id: str | None = None, from_target: str | None = None,
              reviewer: str | None = None, corrective_actions: list[str] | None = None,
              after_restore: Callable | None = None) -> DrillOutcome:
    """Given a policy, run one drill and record it. ``after_restore(engine, scratch)`` is a test hook.

    The recovery point is judged against the RPO only when drilling the latest backup: a backup
    chosen by ID (or by ``--sample``) proves that it restores, not that it is recent."""
    engine = engine_for(policy)
    drill_id = datetime.now(timezone.utc).strftime("D%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
    started = datetime.now(timezone.utc)
    tl = Timeline()
    record: dict = {"drill_id": drill_id, "system": policy.system, "engine": policy.engine, "started": started.isoformat(),
                    "operator": ctx.operator, "reviewer": reviewer, "tier": policy.tier_label,
                    "fingerprint_mode": policy.drill.fingerprint, "corrective_actions": corrective_actions or []}
    state = {"checks": [], "restored": False, "manifest": None, "rto_end": None}
    failed_step = error = None
    verification_error = False
    interrupted: BaseException | None = None
    clean(ctx, policy.system)  # what a killed drill of this system left behind
    wd = scratch_workdir(ctx, kind="drill", system=policy.system, ident=drill_id)
    work = wd.path
    t_first_byte = time.monotonic()
    try:
        with interruptible():
            _drill_steps(ctx, policy, engine, tl, record, state, wd, backup_id, from_target, after_restore)
    except ConfigError:
        raise
    except BackupkitError as e:
        failed = [s["step"] for s in tl.steps if s["status"] == "failed"]
        failed_step = failed[0] if failed else "drill"
        error = str(e)
        verification_error = isinstance(e, VerificationFailed)
    except (Interrupted, KeyboardInterrupt) as e:
        interrupted = e
        failed = [s["step"] for s in tl.steps if s["status"] == "failed"]
        failed_step = failed[0] if failed else "drill"
        error = f"interrupted by {'SIGINT' if isinstance(e, KeyboardInterrupt) else signal.Signals(e.signum).name}"
    finally:
        with shielded():  # whatever happened: no scratch server outlives the drill, no plaintext stays
            leftover = stop_servers(work) + [s for r in wd.info.get("scratch_roots", []) for s in stop_servers(Path(r))]
            shutil.rmtree(work, ignore_errors=True)
            for r in wd.info.get("scratch_roots", []):
                shutil.rmtree(r, ignore_errors=True)
            wd.close()
    record["workdir_removed"] = not work.exists()
    if leftover:
        record["servers_stopped_after_teardown"] = leftover
    if interrupted is not None:
        with shielded():
            _finish(ctx, policy, record, state, tl, started, t_first_byte, backup_id, failed_step, error, False,
                    interrupted=True)
        raise interrupted
    return _finish(ctx, policy, record, state, tl, started, t_first_byte, backup_id, failed_step, error,
                   verification_error)


def _finish(ctx, policy, record, state, tl, started, t_first_byte, backup_id, failed_step, error, verification_error,
            interrupted: bool = False) -> DrillOutcome:
    """Judge and record a drill (also an interrupted one)."""
    drill_id = record["drill_id"]
    manifest, checks = state["manifest"], state["checks"]
    rto_seconds = (state["rto_end"] - t_first_byte) if state["rto_end"] is not None else None
    rto_target = policy.tier.total_seconds()
    record["rto"] = {"tier": policy.tier_label, "target_seconds": rto_target,
                     "measured_seconds": round(rto_seconds, 3) if rto_seconds is not None else None,
                     "met": (rto_seconds <= rto_target) if rto_seconds is not None else None}
    record["rpo"] = {"target_seconds": policy.rpo.total_seconds(), "met": None}
    if manifest is not None:
        point = _backup_time(manifest)
        age = (started - point).total_seconds()
        record["rpo"].update(recovery_point=point.isoformat(), age_seconds=round(age, 3),
                             met=age <= policy.rpo.total_seconds() if backup_id is None else None,
                             judged=backup_id is None)
    verdict = drill_verdict(restored=state["restored"], checks=checks, rto_met=record["rto"]["met"],
                            rpo_met=record["rpo"]["met"], failed_step=failed_step, error=error,
                            verification_error=verification_error)
    if interrupted:
        verdict = Verdict(False, [f"the drill was {error} during step {failed_step}; the scratch was torn down"]
                          + [r for r in verdict.reasons if not r.startswith("step ")])
    record.update(timeline=tl.steps, checks=checks, verdict="interrupted" if interrupted else verdict.label,
                  deviations=verdict.reasons,
                  failed_step=failed_step, finished=datetime.now(timezone.utc).isoformat())
    rec = ctx.ledger.append(ctx.signer, kind="drill", policy=policy.system, subject=drill_id, body=record)
    return DrillOutcome(record, verdict, rec.seq)


def _drill_steps(ctx, policy, engine, tl: Timeline, record: dict, state: dict, wd: WorkDir, backup_id, from_target,
                 after_restore) -> None:
    """The drill's phases in order; fills ``record`` and ``state`` as it goes so a failure leaves a full record."""
    work = wd.path
    if from_target:
        picked = tl.run("fetch", fetch_from_target, ctx, policy, from_target, backup_id, work / "fetched")
    else:
        picked = tl.run("fetch", pick_local, ctx, policy, backup_id)
    record["backup_id"], record["copy"] = picked.backup_id, picked.copy
    what = f"backup {policy.system}/{picked.backup_id}"
    manifest = state["manifest"] = tl.run("verify_hash", check_artifacts, ctx, picked, what)
    record["backup"] = {"started": manifest["started"], "consistency": manifest["consistency"],
                        "manifest_sha256": sha256_file(picked.directory / MANIFEST)[0],
                        "policy_sha256": manifest["policy"]["sha256"], "server_version": manifest["server_version"]}
    tl.run("check_identity", check_identity, ctx, manifest, what)
    failpoint("drill-after-verify")
    source = TimedSource(picked.directory, manifest["streams"], ctx.identities, what=what,
                         recipient_ids=manifest["recipients"])
    fp_key = fingerprint_key(source, manifest, what)
    cm = engine.scratch(policy=policy, workdir=work / "scratch")
    scratch = tl.run("provision", cm.__enter__)
    scratch.manifest = manifest  # engines recreate the database as recorded (encoding, locale, settings)
    record["scratch"] = {"kind": scratch.kind, **scratch.info}
    datadir = scratch.info.get("datadir")
    if datadir and work not in Path(datadir).parents:  # a cluster outside the work dir: let cleanup find it too
        wd.note(scratch_roots=[str(Path(datadir).parent)])
    try:
        failpoint("drill-after-provision")
        tl.run("restore", engine.restore, policy=policy, scratch=scratch, source=source)
        tl.steps.insert(len(tl.steps) - 1, {"step": "decrypt_decompress", "seconds": round(source.decrypt_seconds, 3),
                                            "status": "ok", "detail": "inside the restore step; overlaps it when streamed"})
        state["restored"] = True
        record["scratch"] = {"kind": scratch.kind, **scratch.info}  # engines complete it once the scratch is up
        failpoint("drill-after-restore")
        if after_restore is not None:
            after_restore(engine, scratch)
        tl.run("checks", _checks, engine, scratch, policy, manifest, state["checks"], fp_key)
        state["rto_end"] = time.monotonic()
    except BaseException as e:
        t0 = time.monotonic()
        cm.__exit__(type(e), e, e.__traceback__)
        tl.add("teardown", time.monotonic() - t0)
        record["teardown"] = scratch.teardown_proof
        raise
    tl.run("teardown", cm.__exit__, None, None, None)
    record["teardown"] = scratch.teardown_proof


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


def _checks(engine, scratch, policy: Policy, manifest: dict, checks: list[dict], fp_key: bytes | None = None) -> None:
    # Sequential on purpose: an integrity check may create what it needs (PostgreSQL's amcheck extension)
    # and remove it again; run beside the fingerprints, the schema inventory would see it (found by the bench).
    checks += [c.__dict__ for c in engine.integrity_check(scratch=scratch)]
    checks += compare_fingerprints(manifest["fingerprints"], restored_fingerprints(engine, scratch, manifest, fp_key))
    checks += run_assertions(engine, scratch, policy, _backup_time(manifest))
