"""``backupkit drill``: the monthly proof that a backup really restores.

Given a policy, pick a backup (latest, ``--backup ID``) and a copy of it (the
local repository or ``--from TARGET``), fetch it, check its signature and
hashes, restore it into a scratch instance that is never production, compare
every table's fingerprint with the manifest, run the policy's assertions,
measure recovery time against the tier and recovery point against the RPO,
tear the scratch down and append a complete ``drill`` ledger record, also
when a step failed. Returns the outcome; the CLI maps it to an exit code.

A point-in-time drill (``to_time``, engines whose capabilities say ``pitr``) recovers the newest
backup consistent at or before that time (or ``--backup ID``) plus archived WAL to exactly that
time. Its copy is not the backup's point, so fingerprints are not compared: integrity checks and
the policy's assertions (which then prove the data) decide; the record has ``mode: pitr`` and a
``pitr`` object, and it never stands in for the regular drill (``due.counts_as_regular_drill``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..artifact import sha256_file
from ..context import Context
from ..engines import engine_for, pitr_refusal
from ..errors import (EXIT_FAILED, EXIT_OK, EXIT_VERIFY, BackupkitError, ConfigError, Interrupted,
                      VerificationFailed)
from ..expect import judge
from ..manifest import MANIFEST
from ..policy import Policy
from ..verdict import Verdict, compare_fingerprints, drill_verdict
from ..failpoint import failpoint
from ..workdir import WorkDir
from .cleanup import clean
# picking, proving and reading a backup, and the scratch lifecycle, are shared with restore (lifecycle.py);
from .lifecycle import (ScratchLifecycle, Timeline, candidate_backups, check_artifacts, check_identity, fingerprint_key,
                        interruptible, pick_backup, remove_workdir, restored_checks, scratch_workdir, shielded,
                        timed_source)

logger = logging.getLogger(__name__)


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


def run_assertions(engine, scratch, policy: Policy, backup_time: datetime, proves_data: bool = False) -> list[dict]:
    """The policy's drill.assertions on the restored copy (``proves_data`` on each in a point-in-time drill,
    where they are the only check of the data)."""
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
    if proves_data:
        for c in out:
            c["proves_data"] = True
    return out


# ---- point-in-time drills ----------------------------------------------------------------------------

PITR_NO_FINGERPRINTS = ("fingerprints not compared: this is a point-in-time drill; the copy was recovered to "
                        "--to-time, not to the backup's consistency point its fingerprints describe (the "
                        "integrity checks and the policy's drill.assertions prove it)")
PITR_RPO = "not applicable: a point-in-time drill proves recovery to a chosen time, not that the backups are recent"


def parse_to_time(text: str) -> datetime:
    """``--to-time``: an ISO 8601 time with a UTC offset (ConfigError naming the option otherwise)."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--to-time {text!r} is not an ISO 8601 time; write it like 2026-11-28T06:10:00+08:00") from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise ConfigError(f"--to-time {text!r} has no UTC offset, so it names no single instant; add one, "
                          f"e.g. {t.isoformat()}+08:00 or {t.isoformat()}Z")
    return t


def _consistency_time(body: dict) -> datetime | None:
    t = (body.get("consistency") or {}).get("time") or body.get("started")
    try:
        d = datetime.fromisoformat(t)
    except (TypeError, ValueError):
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def pitr_base(candidates: list[tuple[str, dict]], to_time: datetime, backup_id: str | None, system: str) -> str:
    """The backup a point-in-time drill starts from: of ``candidates`` ((id, manifest or ledger backup body),
    oldest first), the newest physical one (consistency kind ``postgres-physical``) consistent at or before
    ``to_time``, or ``backup_id``, which must be such a backup. ConfigError naming the option otherwise."""
    times = {bid: (_consistency_time(b), (b.get("consistency") or {}).get("kind")) for bid, b in candidates}
    if backup_id is not None:
        t, kind = times.get(backup_id, (None, None))
        if kind is not None and kind != "postgres-physical":
            raise ConfigError(f"--backup {backup_id}: is not a physical (pgBackRest) backup of {system}; a "
                              "point-in-time drill starts from one")
        if t is not None and t > to_time:
            raise ConfigError(f"--backup {backup_id}: its consistency time {t.isoformat()} is after --to-time "
                              f"{to_time.isoformat()}; pick a backup taken before that time, or omit --backup")
        return backup_id
    usable = [(t, bid) for bid, (t, kind) in times.items() if kind == "postgres-physical" and t is not None]
    before = [bid for t, bid in usable if t <= to_time]
    if before:
        return before[-1]
    first = f"; the oldest is {min(usable)[1]} at {min(usable)[0].isoformat()}" if usable else ""
    raise ConfigError(f"--to-time {to_time.isoformat()}: no physical backup of {system} is consistent at or before "
                      f"that time{first}; choose a later --to-time")


def _pitr_refusals(ctx: Context, policy: Policy, to_time: datetime, backup_id: str | None,
                   from_target: str | None) -> str:
    """Every reason a point-in-time drill cannot start (ConfigError, before anything is created); the base backup ID."""
    why = pitr_refusal(policy.engine, policy.source)
    if why:
        raise ConfigError(f"--to-time: policy {policy.system}: {why}")
    if to_time.tzinfo is None or to_time.utcoffset() is None:
        raise ConfigError(f"--to-time {to_time.isoformat()}: has no UTC offset; add one, e.g. +08:00")
    if not policy.drill.assertions:
        raise ConfigError(f"--to-time: policy {policy.system} has no drill.assertions; a point-in-time copy has no "
                          "fingerprints to compare, so add drill.assertions that prove the data at that time "
                          "(docs/pgbackrest.md)")
    bodies = {r.subject: r.body for r in ctx.ledger.records(kind="backup", policy=policy.system)}
    ids = candidate_backups(ctx, policy, from_target)
    if backup_id is not None and backup_id not in ids:
        return backup_id  # not there: picking it fails as for any drill
    return pitr_base([(b, bodies.get(b) or {}) for b in ids], to_time, backup_id, policy.system)


def _backup_time(manifest: dict) -> datetime:
    """The verified manifest's consistency point (``_consistency_time``; a manifest has one)."""
    t = _consistency_time(manifest)
    if t is None:
        raise VerificationFailed("the manifest has neither a consistency time nor a start time")
    return t


def run_drill(ctx: Context, policy: Policy, *, backup_id: str | None = None, from_target: str | None = None,
              reviewer: str | None = None, corrective_actions: list[str] | None = None,
              after_restore: Callable | None = None, to_time: datetime | None = None) -> DrillOutcome:
    """Given a policy, run one drill and record it. ``after_restore(engine, scratch)`` is a test hook.

    The recovery point is judged against the RPO only when drilling the latest backup: a backup
    chosen by ID (or by ``--sample``) proves that it restores, not that it is recent. ``to_time``
    makes it a point-in-time drill (module docstring); its RPO is not judged either."""
    pitr = None
    if to_time is not None:
        backup_id = _pitr_refusals(ctx, policy, to_time, backup_id, from_target)
        pitr = {"target_time": to_time.isoformat(), "base_backup": backup_id, "fingerprints": PITR_NO_FINGERPRINTS}
    engine = engine_for(policy)
    drill_id = datetime.now(timezone.utc).strftime("D%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
    started = datetime.now(timezone.utc)
    tl = Timeline()
    record: dict = {"drill_id": drill_id, "system": policy.system, "engine": policy.engine, "started": started.isoformat(),
                    "operator": ctx.operator, "reviewer": reviewer, "tier": policy.tier_label,
                    "fingerprint_mode": policy.drill.fingerprint, "corrective_actions": corrective_actions or []}
    if pitr is not None:  # visible as such; never stands in for the regular drill (due.counts_as_regular_drill)
        record.update(mode="pitr", pitr=pitr)
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
            _drill_steps(ctx, policy, engine, tl, record, state, wd, backup_id, from_target, after_restore, to_time)
    except ConfigError:
        raise
    except BackupkitError as e:
        failed_step = tl.failed_step() or "drill"
        error = str(e)
        verification_error = isinstance(e, VerificationFailed)
    except (Interrupted, KeyboardInterrupt) as e:
        interrupted = e
        failed_step = tl.failed_step() or "drill"
        error = f"interrupted by {'SIGINT' if isinstance(e, KeyboardInterrupt) else signal.Signals(e.signum).name}"
    finally:
        with shielded():  # whatever happened: no scratch server outlives the drill, no plaintext stays
            leftover = remove_workdir(wd)
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
    pitr = record.get("pitr")
    if pitr is not None:
        record["rpo"].update(recovery_point=pitr["target_time"], judged=False, not_applicable=PITR_RPO)
    elif manifest is not None:
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
                 after_restore, to_time: datetime | None = None) -> None:
    """The drill's phases in order; fills ``record`` and ``state`` as it goes so a failure leaves a full record."""
    work = wd.path
    picked = tl.run("fetch", pick_backup, ctx, policy, backup_id, from_target, work)
    record["backup_id"], record["copy"] = picked.backup_id, picked.copy
    what = f"backup {policy.system}/{picked.backup_id}"
    manifest = state["manifest"] = tl.run("verify_hash", check_artifacts, ctx, picked, what)
    record["backup"] = {"started": manifest["started"], "consistency": manifest["consistency"],
                        "manifest_sha256": sha256_file(picked.directory / MANIFEST)[0],
                        "policy_sha256": manifest["policy"]["sha256"], "server_version": manifest["server_version"]}
    tl.run("check_identity", check_identity, ctx, manifest, what)
    if to_time is not None:  # the verified manifest, not the ledger's copy, decides
        pitr_base([(picked.backup_id, manifest)], to_time, picked.backup_id, policy.system)
    failpoint("drill-after-verify")
    source = timed_source(ctx, picked, manifest, what)
    fp_key = fingerprint_key(source, manifest, what)
    life = ScratchLifecycle(engine.scratch(policy=policy, workdir=work / "scratch"), tl)
    try:
        with life as scratch:  # provision and teardown are timed steps; teardown also on an error or a signal
            scratch.manifest = manifest  # engines recreate the database as recorded (encoding, locale, settings)
            record["scratch"] = {"kind": scratch.kind, **scratch.info}
            datadir = scratch.info.get("datadir")
            if datadir and work not in Path(datadir).parents:  # a cluster outside the work dir: let cleanup find it too
                wd.note(scratch_roots=[str(Path(datadir).parent)])
            failpoint("drill-after-provision")
            if to_time is None:
                tl.run("restore", engine.restore, policy=policy, scratch=scratch, source=source)
            else:
                try:
                    tl.run("restore", engine.restore, policy=policy, scratch=scratch, source=source,
                           target_time=to_time.isoformat())
                finally:  # what the engine learnt (WAL available, where replay stopped), also when recovery failed
                    record["pitr"].update(scratch.info.pop("pitr", None) or {})  # once, not also under scratch
            tl.steps.insert(len(tl.steps) - 1, {"step": "decrypt_decompress", "seconds": round(source.decrypt_seconds, 3),
                                                "status": "ok", "detail": "inside the restore step; overlaps it when streamed"})
            state["restored"] = True
            record["scratch"] = {"kind": scratch.kind, **scratch.info}  # engines complete it once the scratch is up
            failpoint("drill-after-restore")
            if after_restore is not None:
                after_restore(engine, scratch)
            if to_time is not None:
                rec = scratch.info.get("recovery") or {}
                record["pitr"].update(restore_seconds=rec.get("restore_seconds"),
                                      recovery_seconds=rec.get("replay_seconds"))
                tl.run("checks", _pitr_checks, engine, scratch, policy, to_time, state["checks"])
                state["rto_end"] = time.monotonic()
                return
            tl.run("checks", _checks, engine, scratch, policy, manifest, state["checks"], fp_key)
            state["rto_end"] = time.monotonic()
            if hasattr(engine, "fingerprints_at"):  # pgBackRest: proof against a logical backup (docs/pgbackrest.md)
                from .cross_proof import run_cross_proof
                tl.run("cross_proof", run_cross_proof, ctx, policy, engine, scratch, manifest, state["checks"])
    finally:
        if life.torn_down:
            record["teardown"] = life.proof


def _checks(engine, scratch, policy: Policy, manifest: dict, checks: list[dict], fp_key: bytes | None = None) -> None:
    # The engine runs its integrity check and the fingerprints, overlapped where it can prove that neither
    # sees what the other creates (PostgreSQL: the schema inventory before amcheck's extension exists).
    integrity, actual = restored_checks(engine, scratch, manifest, fp_key)
    checks += [c.__dict__ for c in integrity]
    checks += note_approximate(compare_fingerprints(manifest["fingerprints"], actual), manifest.get("consistency"))
    checks += run_assertions(engine, scratch, policy, _backup_time(manifest))


def note_approximate(checks: list[dict], consistency) -> list[dict]:
    """Failed fingerprint checks of a backup whose consistency is ``approximate`` say so, with the backup's
    reasons: writes during the dump can explain the difference. They stay failed (nothing proves the copy
    right); the operator learns the fix is a backup that can be proven exact, not a restore problem."""
    if not isinstance(consistency, dict) or consistency.get("exactness") != "approximate":
        return checks
    why = "; ".join(str(w) for w in consistency.get("approximate_because") or []) or "no reason recorded"
    for c in checks:
        if c["name"].startswith("fingerprint ") and c["status"] == "failed":
            c["detail"] += (f" (the backup recorded its fingerprints as approximate: {why}; writes during the dump can "
                            "explain a difference, so fix what made it approximate and drill a new backup)")
            c["approximate"] = True
    return checks


_STOP_RE = re.compile(r"recovery stopping before (commit|abort) of transaction (\d+), time (.+?)\s*$")


def pitr_reached(stopped: str | None, to_time: datetime) -> dict:
    """The check that replay went as far as ``to_time`` and no further: the server's own line says it
    stopped before the first commit (or abort) whose time is at or after ``to_time`` (exclusive target)."""
    name = "recovery to --to-time"
    m = _STOP_RE.search(stopped or "")
    when = None
    if m:
        with contextlib.suppress(ValueError):
            # PostgreSQL prints "2026-11-28 06:10:00.123456+08" (the offset's minutes only when not zero)
            when = datetime.fromisoformat(re.sub(r"([+-]\d\d)$", r"\1:00", m.group(3).replace(" ", "T", 1)))
    if when is None or when.tzinfo is None:
        return {"name": name, "status": "failed", "proves_data": False,
                "detail": f"the restored server did not say where recovery stopped before a transaction at or after "
                          f"{to_time.isoformat()} (its line: {stopped or 'none'})"}
    ok = when >= to_time
    return {"name": name, "status": "passed" if ok else "failed", "proves_data": False,
            "detail": (f"replay stopped before the {m.group(1)} of transaction {m.group(2)} at {when.isoformat()}, "
                       f"the first at or after {to_time.isoformat()}" if ok else
                       f"replay stopped before the {m.group(1)} of transaction {m.group(2)} at {when.isoformat()}, "
                       f"which is before {to_time.isoformat()}: the copy is not at --to-time")}


def _pitr_checks(engine, scratch, policy: Policy, to_time: datetime, checks: list[dict]) -> None:
    # no fingerprints (PITR_NO_FINGERPRINTS): where replay stopped, integrity, then the assertions, which prove the data
    checks.append(pitr_reached((scratch.info.get("recovery") or {}).get("stopped"), to_time))
    checks += [c.__dict__ for c in engine.integrity_check(scratch=scratch)]
    checks += run_assertions(engine, scratch, policy, to_time, proves_data=True)
