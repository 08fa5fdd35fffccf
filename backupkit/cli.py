"""The command line: one thin function per command; the work is in ``actions/``.

Every BackupkitError becomes ``backupkit: <one line>`` on stderr and its exit
code (docs/exit-codes.md). Tracebacks appear only with ``--verbose``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from . import __version__, log, progress
from .errors import EXIT_FAILED, EXIT_OVERDUE, EXIT_USAGE, BackupkitError, ConfigError, Interrupted, JobFailed, VerificationFailed

pass_ctx = click.make_pass_decorator(dict, ensure=True)


def _fail(message: str, code: int):
    from .redact import redact_text

    click.echo(f"backupkit: {redact_text(message)}", err=True)
    sys.exit(code)


def handles_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BackupkitError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Interrupted as e:
            import signal

            _fail(f"interrupted by {signal.Signals(e.signum).name}; what it had started was torn down and recorded",
                  128 + e.signum)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except PermissionError as e:
            _fail(f"{e.filename or 'a file'}: permission denied ({e.strerror}); run backupkit as the user that owns "
                  "its files, or fix that path's ownership and permissions", EXIT_USAGE)
        except OSError as e:
            _fail(f"{e.filename or 'I/O'}: {e.strerror or e}; check that the path exists, is writable and its disk "
                  "has free space", EXIT_FAILED)
        except Exception as e:
            if click.get_current_context().find_root().params.get("verbose"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (run with --verbose for details and report it)", EXIT_FAILED)

    return wrapper


def _context(obj, readonly: bool = False):
    from .context import Context

    if "ctx" not in obj:
        obj["ctx"] = Context.load(obj.get("config"))
        obj["ctx"].readonly = readonly
        if obj["ctx"].config.log_file:  # the group already set up logging; only the config can add a file
            log.setup(obj.get("verbose", False), obj["ctx"].config.log_file)
    return obj["ctx"]


def _alert(ctx, kind: str, system: str, message: str) -> None:
    """Send a failure/overdue notification when the config has any channel."""
    from .notify import event, send

    if ctx.config.notify.webhooks or ctx.config.notify.email:
        send(ctx.config.notify, event(kind, system, message))


def _backup_id_option(cctx, param, value):
    """Click callback: a backup ID or nothing; anything else (a path, '..') exits 2 before a file is touched."""
    if value is None:
        return None
    from .names import check_backup_id

    try:
        return check_backup_id(value, param.opts[0] if isinstance(param, click.Option) else "BACKUP_ID")
    except BackupkitError as e:
        _fail(str(e), e.exit_code)


def _broken_policies(ctx, systems=()) -> int:
    """When a command covers every system, report each broken policy (one line each) and return 2, else 0.
    A broken policy is excluded; every other system's job still runs."""
    if systems:
        return 0
    for system, p in ctx.disabled_policies.items():
        click.echo(f"backupkit: warning: {p.file}: system {system} is disabled ('enabled: false'), skipped; "
                   "fill in its source and set 'enabled: true'", err=True)
    if not ctx.policy_errors:
        return 0
    for e in ctx.policy_errors.values():
        click.echo(f"backupkit: {e} (this system is skipped; the others run)", err=True)
    return 2


def _parse_day(value: str | None, param: str) -> str | None:
    if value is None:
        return None
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"option {param}: {value!r} is not a date; write YYYY-MM-DD") from None
    return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).isoformat()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backupkit")
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="BACKUPKIT_CONFIG",
              help="Global config file (default: $BACKUPKIT_CONFIG, then /etc/backupkit/backupkit.yaml).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug lines and show tracebacks.")
@click.option("--log-json", type=click.Path(dir_okay=False, path_type=Path), help="Also write JSON log lines to FILE.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing on success (for cron's MAILTO); errors and warnings still go to stderr.")
@click.pass_context
def cli(cctx, config, verbose, log_json, quiet):
    """Nightly database backups, monthly restore drills, signed audit evidence."""
    cctx.obj = {"config": config, "verbose": verbose, "log_json": log_json}
    if quiet:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    os.umask(0o077)  # everything backupkit creates is private unless it says otherwise (docs/security.md)
    log.setup(verbose, log_json)
    progress.enable_if_tty()


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--engine", type=click.Choice(["sqlite", "postgres"]), default=None,
              help="Write a working policy for this engine's source (checked before anything is written).")
@click.option("--source", type=click.Path(dir_okay=False, path_type=Path), help="SQLite: the database file.")
@click.option("--dsn", help="PostgreSQL: the source DSN (no password in it; use source.password_file).")
@click.option("--system", default=None, help="System ID for the policy (default: demo-lis, or the database name).")
@click.option("--offsite", type=click.Path(file_okay=False, path_type=Path), help="Directory for a 'local' offsite target.")
@handles_errors
def init(directory, engine, source, dsn, system, offsite):
    """Create a working configuration, keys and a policy in DIRECTORY."""
    from .actions.init import init_with_policy

    cfg, policy_file, enabled = init_with_policy(directory, engine=engine, source_db=source, dsn=dsn, system=system,
                                        offsite=offsite)
    click.echo(f"created {cfg}\nprivate keys are in {cfg.parent / 'keys'} (mode 0600); "
               "move identity.txt to the drill host and into escrow")
    if enabled:
        click.echo(f"policy {policy_file} is ready\nnext: export BACKUPKIT_CONFIG={cfg}; backupkit backup --all")
    else:
        click.echo(f"policy {policy_file} is an example and disabled: set its source (or run init with --engine and "
                   "--source/--dsn), then 'enabled: true'\n"
                   f"next: export BACKUPKIT_CONFIG={cfg}; edit {policy_file}; backupkit backup --all")


@cli.group()
def keys():
    """Show key IDs and the age recipient."""


@keys.command("show")
@pass_ctx
@handles_errors
def keys_show(obj):
    """Print key IDs and recipients; never the identity."""
    from .keys import fingerprint, fingerprint_groups, load_identities

    ctx = _context(obj)
    click.echo(f"signing key   {ctx.config.keys.signing_key}  id {ctx.signer.id}")
    click.echo(f"fingerprint   SHA-256 {fingerprint_groups(fingerprint(ctx.signer.public))}")
    for r in ctx.recipients:
        click.echo(f"recipient     {r.text}  id {r.id}")
    if ctx.config.keys.identity is not None and Path(ctx.config.keys.identity).exists():
        for i in load_identities(ctx.config.keys.identity):
            click.echo(f"identity      {ctx.config.keys.identity}  id {i.id} (secret not shown)")
    else:
        click.echo("identity      not on this host (only drill/restore hosts need it)")


@keys.command("register")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the form as a printable A4 HTML page.")
@click.option("--pub", "pub_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the public key (PEM) to hand over with the form.")
@pass_ctx
@handles_errors
def keys_register(obj, lang, html_out, pub_out):
    """Print the one-page key registration form (公钥登记表) to hand to the assessor once."""
    from .evidence.registration import registration_html, registration_text
    from .keys import public_pem

    ctx = _context(obj)
    click.echo(registration_text(ctx, lang))
    if html_out is not None:
        html_out.write_text(registration_html(ctx, lang), encoding="utf-8")
        html_out.chmod(0o644)
        click.echo(f"written {html_out}", err=True)
    if pub_out is not None:
        pub_out.write_bytes(public_pem(ctx.signer.public))
        pub_out.chmod(0o644)
        click.echo(f"written {pub_out}", err=True)


@cli.command()
@click.argument("systems", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Back up every policy.")
@click.option("--trigger", type=click.Choice(["manual", "cron", "daemon"]), default="manual", show_default=True)
@click.option("--no-copy", is_flag=True, help="Do not copy to offsite targets now ('backupkit copy' later).")
@pass_ctx
@handles_errors
def backup(obj, systems, all_, trigger, no_copy):
    """Back up SYSTEMS (or --all), then copy each backup offsite."""
    from .actions.backup import backup_one
    from .durations import format_duration
    from .report_text import human_bytes

    ctx = _context(obj)
    if not systems and not all_:
        raise ConfigError("name one or more systems, or pass --all")
    worst = _broken_policies(ctx, () if all_ else systems)
    for policy in ctx.select(systems, all_):
        out = backup_one(ctx, policy, trigger=trigger, copy=not no_copy)
        if out.error is not None:
            click.echo(f"backupkit: {out.error}", err=True)
            _alert(ctx, "backup failed", policy.system, str(out.error))
            worst = max(worst, out.error.exit_code)
            continue
        click.echo(f"{policy.system}: backup {out.backup_id} ok, {human_bytes(out.artifact_bytes)} encrypted, "
                   f"{format_duration(out.seconds)}")
        for e in out.copy_errors:
            click.echo(f"backupkit: {e}", err=True)
        if not out.copies_ok:
            _alert(ctx, "offsite copy failed", policy.system, "; ".join(map(str, out.copy_errors)))
            click.echo(f"{policy.system}: backup kept locally; offsite copy failed (recorded), run 'backupkit copy' "
                       "when the target is back", err=True)
            worst = max([worst, EXIT_FAILED] + [e.exit_code for e in out.copy_errors])
    sys.exit(worst)


@cli.command()
@click.argument("systems", nargs=-1)
@pass_ctx
@handles_errors
def copy(obj, systems):
    """Copy backups that are missing on their targets or whose copy failed."""
    from .actions.copy import copy_missing

    ctx = _context(obj)
    broken = _broken_policies(ctx, systems)
    n, errors = copy_missing(ctx, ctx.select(systems))
    for e in errors:
        click.echo(f"backupkit: {e}", err=True)
        _alert(ctx, "offsite copy failed", "*", str(e))
    click.echo(f"copied {n} backup(s)" + (f", {len(errors)} failed" if errors else ""))
    sys.exit(max([broken] + [e.exit_code for e in errors]))


@cli.command()
@click.option("--system", "systems", multiple=True, help="Only this system (repeatable).")
@click.option("--deep", is_flag=True, help="Also decrypt and check content hashes (needs the identity).")
@click.option("--sample", type=click.IntRange(min=1), help="Check N random backups per system.")
@click.option("--target", help="Verify the copies on this offsite target instead of the local repository.")
@pass_ctx
@handles_errors
def verify(obj, systems, deep, sample, target):
    """Check signatures, sizes and hashes of stored backups (exit 3 on any mismatch)."""
    from .actions.verify import raise_if_failed, verify_local, verify_target

    ctx = _context(obj)
    broken = _broken_policies(ctx, systems)
    policies = ctx.select(systems)
    if target:
        report = verify_target(ctx, target, policies, sample=sample)
    else:
        report = verify_local(ctx, policies, deep=deep, sample=sample)
    for r in report.results:
        click.echo(f"{r['status']:7} {r['system']}/{r['backup_id']}  {r['detail']}")
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"{len(report.results)} backup(s) checked on {report.where}, {len(report.failed)} failed")
    for r in report.failed:
        _alert(ctx, "verification failed", r["system"], r["detail"])
    raise_if_failed(report)
    named_without = [p.system for p in policies if systems and not any(r["system"] == p.system for r in report.results)]
    if named_without:
        raise ConfigError(f"no backup of {', '.join(named_without)} {'on ' + target if target else 'yet'}; "
                          f"run 'backupkit backup {named_without[0]}'" + (" and 'backupkit copy'" if target else ""))
    sys.exit(broken)


@cli.command()
@click.argument("system", required=False)
@click.option("--backup", "backup_id", callback=_backup_id_option, help="Drill this backup ID instead of the latest.")
@click.option("--from", "from_target", help="Restore from this offsite target's copy (as in a real disaster).")
@click.option("--reviewer", help="Who reviews this drill (recorded).")
@click.option("--corrective-action", "actions", multiple=True, help="Corrective action to record (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the drill record as JSON.")
@click.option("--due", is_flag=True, help="Only drill systems whose drill.every says a drill is due.")
@click.option("--sample", type=click.IntRange(min=1), help="Also drill N randomly chosen older backups of SYSTEM.")
@click.option("--to-time", "to_time", metavar="TIME",
              help="Point-in-time drill: recover to TIME (ISO 8601 with offset, e.g. 2026-11-28T06:10:00+08:00) "
                   "from the newest backup before it plus archived WAL (pgBackRest mode only).")
@pass_ctx
@handles_errors
def drill(obj, system, backup_id, from_target, reviewer, actions, as_json, due, sample, to_time):
    """Restore a backup into a scratch instance, prove it, tear it down, record it."""
    import random

    from .actions.drill import parse_to_time, run_drill
    from .actions.lifecycle import candidate_backups
    from .report_text import print_drill
    from .scheduler import drill_is_due

    point = None
    if to_time is not None:
        point = parse_to_time(to_time)
        if not system or due or sample:
            raise ConfigError("--to-time drills one SYSTEM to one point in time; name the system and leave out "
                              "--due and --sample")
    ctx = _context(obj)
    broken = 0 if system else _broken_policies(ctx)
    policies = [ctx.policy(system)] if system else ctx.select([], True)
    if due:
        policies = [p for p in policies if drill_is_due(ctx, p)]
        if not policies:
            click.echo("no drill is due")
    if (backup_id or sample) and not system:
        raise ConfigError("--backup and --sample need a SYSTEM")
    runs = [(p, backup_id) for p in policies]
    if sample:
        older = candidate_backups(ctx, policies[0], from_target)[:-1]  # the latest is drilled anyway
        runs += [(policies[0], b) for b in sorted(random.sample(older, min(sample, len(older))))]
    worst = broken
    for policy, bid in runs:
        try:
            out = run_drill(ctx, policy, backup_id=bid, from_target=from_target, reviewer=reviewer,
                            corrective_actions=list(actions), to_time=point)
        except BackupkitError as e:
            if len(runs) == 1:
                raise
            click.echo(f"backupkit: {e}", err=True)  # one system's problem never stops the others' drills
            worst = max(worst, e.exit_code)
            continue
        if as_json:
            click.echo(json.dumps(out.record, ensure_ascii=False, indent=2))
        else:
            print_drill(out.record)
            _print_pitr(out.record)
        if not out.verdict.passed:
            click.echo(f"backupkit: drill of {policy.system} failed: {'; '.join(out.verdict.reasons)}", err=True)
            _alert(ctx, "drill failed", policy.system, "; ".join(out.verdict.reasons))
        worst = max(worst, out.exit_code)
    sys.exit(worst)


def _print_pitr(rec: dict) -> None:
    """What a point-in-time drill adds to the drill's text output (the record's ``pitr``)."""
    p = rec.get("pitr")
    if not p:
        return
    click.echo(f"point-in-time drill to {p['target_time']} from backup {p['base_backup']}")
    wal = p.get("wal_replayed")
    if wal:
        click.echo(f"  WAL replayed {wal['first']}..{wal['last']} ({wal['count']} segments); recovery stopped: "
                   f"{p.get('recovery_stopped') or 'unknown'}; last replayed transaction "
                   f"{p.get('last_replayed_transaction') or 'none'}; recovery {p.get('recovery_seconds')}s")
    click.echo(f"  {p['fingerprints']}")
    click.echo(f"  RPO {(rec.get('rpo') or {}).get('not_applicable') or 'not judged'}")


@cli.command()
@click.argument("system")
@click.argument("backup_id", required=False, callback=_backup_id_option)
@click.option("--to", "dsn", help="Destination: a DSN, or a file path for SQLite (never the source).")
@click.option("--from", "from_target", help="Restore from this offsite target's copy.")
@click.option("--force", is_flag=True, help="Restore even though the destination is not empty.")
@click.option("--replace-source", is_flag=True,
              help="Emergency: restore into the policy's own source (production) database, replacing it.")
@click.option("--yes", is_flag=True, help="With --replace-source: do not ask (needed without a terminal).")
@pass_ctx
@handles_errors
def restore(obj, system, backup_id, dsn, from_target, force, replace_source, yes):
    """Emergency restore of SYSTEM's backup into a real destination (refuses non-empty without --force)."""
    from .actions.restore import run_restore

    ctx = _context(obj)
    policy = ctx.policy(system)
    if replace_source:
        if dsn:
            raise ConfigError("--replace-source restores into the policy's own source; do not also pass --to")
        where = get_source_label(policy)
        if not yes:
            if not sys.stdin.isatty():
                raise ConfigError(f"--replace-source would replace the production database {where} of {system}; "
                                  "without a terminal to confirm on, pass --yes as well")
            click.echo(f"This REPLACES the production database {where} of system {system} with backup "
                       f"{backup_id or '(the newest)'}. Everything written since that backup is lost.", err=True)
            typed = click.prompt(f"Type the system name ({system}) to confirm", default="", show_default=False,
                                 err=True)
            if typed.strip() != system:
                raise ConfigError("not confirmed; nothing was changed")
    elif not dsn:
        raise ConfigError("name the destination with --to DSN (or, in an emergency, --replace-source)")
    rec = run_restore(ctx, policy, backup_id=backup_id, dsn=dsn, from_target=from_target, force=force,
                      replace_source=replace_source)
    click.echo(f"restored {system}/{rec['backup_id']} into {rec['destination']} in {rec['seconds']:.1f}s; "
               f"fingerprints {rec['fingerprints']}; recorded as ledger record {rec['seq']}")


def get_source_label(policy) -> str:
    """How a confirmation names the production database (the engine's own description, without secrets)."""
    from .engines import engine_for

    return engine_for(policy).describe_source(policy)


@cli.command()
@click.argument("system", required=False)
@pass_ctx
@handles_errors
def cleanup(obj, system):
    """Destroy work directories and scratch servers left by killed drills and restores, and record each."""
    from .actions.cleanup import clean

    ctx = _context(obj)
    if system:
        ctx.policy(system)
    done = clean(ctx, system)
    for body in done:
        t = body["teardown"]
        click.echo(f"removed {t['workdir']} left by killed {body['system']} drill {body['drill_id'] or '?'}; "
                   f"stopped {sum(1 for s in t['servers'] if s['was_ours'])} scratch server(s); recorded as abandoned")
    click.echo(f"{len(done)} leftover(s) cleaned" if done else "nothing to clean up")


@cli.command()
@click.argument("systems", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@pass_ctx
@handles_errors
def prune(obj, systems, dry_run):
    """Delete backups that retention no longer keeps, locally and on each target."""
    from .actions.prune import prune as do_prune

    ctx = _context(obj)
    broken = _broken_policies(ctx, systems)
    summaries, errors = do_prune(ctx, ctx.select(systems), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for s in summaries:
        click.echo(f"{s['system']} on {s['location']}: {verb} {len(s['removed'])}, kept {len(s['kept'])}")
        for bid in sorted(set(s["kept"]) | set(s["removed"])):
            if bid in s["kept"]:
                click.echo(f"  keep    {bid}  {'; '.join(s['kept'][bid])}")
            else:
                click.echo(f"  {'remove' if dry_run else 'removed'}  {bid}  no retention rule keeps it")
        for bid in s.get("orphans", []):
            click.echo(f"  {'remove' if dry_run else 'removed'}  {bid}  files of an unfinished copy that is not needed")
        for w in s.get("warnings", []):
            click.echo(f"warning: {w}", err=True)
    for e in errors:
        click.echo(f"backupkit: {e}", err=True)
    sys.exit(max([broken] + [e.exit_code for e in errors]))


@cli.command("list")
@click.argument("systems", nargs=-1)
@pass_ctx
@handles_errors
def list_(obj, systems):
    """List committed backups with their size and offsite copies."""
    from .report_text import print_backups

    ctx = _context(obj, readonly=True)
    broken = _broken_policies(ctx, systems)
    print_backups(ctx, ctx.select(systems))
    sys.exit(broken)


@cli.command()
@click.option("--json", "fmt", flag_value="json", help="Print JSON.")
@click.option("--prometheus", "fmt", flag_value="prometheus", help="Print node_exporter textfile metrics.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the output to FILE atomically (mode 0644), whatever the exit status: for the textfile collector.")
@pass_ctx
@handles_errors
def status(obj, fmt, out):
    """Backup age vs RPO, offsite copies, drill age and RTO per system (exit 4 if overdue, 3 if backups
    are missing or the ledger was rolled back, 2 if a policy is broken)."""
    import time as _time

    from .actions.anchors import anchor_targets, check_target
    from .actions.status import anchors_prometheus, to_json, to_prometheus
    from .actions.status import status as do_status
    from .errors import EXIT_USAGE, EXIT_VERIFY
    from .report_text import print_status

    ctx = _context(obj, readonly=True)
    rows = do_status(ctx, ctx.select([], True))
    anchors = [check_target(ctx, t) for t in anchor_targets(ctx)]
    broken = {system: str(e) for system, e in ctx.policy_errors.items()}
    if fmt == "json":
        text = json.dumps(to_json(rows) + [{"system": system, "policy_error": msg, "overdue": True}
                                           for system, msg in broken.items()], ensure_ascii=False, indent=2) + "\n"
    elif fmt == "prometheus":
        lines = ["# HELP backupkit_policy_error 1 for each policy file that does not load (its system is not backed up).",
                 "# TYPE backupkit_policy_error gauge"]
        lines += [f'backupkit_policy_error{{system="{system}"}} 1' for system in broken]
        lines += ["# HELP backupkit_status_generated_timestamp_seconds When this status was computed: alert when stale.",
                  "# TYPE backupkit_status_generated_timestamp_seconds gauge",
                  f"backupkit_status_generated_timestamp_seconds {_time.time():.0f}"]
        text = to_prometheus(rows) + anchors_prometheus(anchors) + "\n".join(lines) + "\n"
    else:
        text = None
        print_status(rows)
        for a in anchors:
            click.echo(f"ledger vs {a.where}: {a.status}: {a.detail}")
    if text is not None:
        if out:
            write_atomic(out, text)
        else:
            click.echo(text, nl=False)
    for system, msg in broken.items():
        click.echo(f"backupkit: {msg} (system {system} is not backed up until this is fixed)", err=True)
    for r in rows:
        if r.overdue:
            _alert(ctx, "overdue", r.system, "; ".join(r.problems))
    rolled = [a for a in anchors if a.status == "rolled-back"]
    for a in rolled:
        click.echo(f"backupkit: ledger rolled back: {a.detail}", err=True)
        _alert(ctx, "ledger rolled back", "*", a.detail)
    # the most serious first: proof broken (3), then a system not protected at all (2), then overdue (4)
    if rolled or any(r.integrity_failed for r in rows):
        sys.exit(EXIT_VERIFY)
    sys.exit(EXIT_USAGE if broken else EXIT_OVERDUE if any(r.overdue for r in rows) else 0)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and one rename."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the textfile collector runs as another user
        os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot write it ({e.strerror}); check the directory exists and is writable") from None


@cli.group()
def ledger():
    """The evidence ledger."""


@ledger.command("verify")
@click.option("--against", "against", multiple=True,
              help="Also check the signed ledger head and snapshot on this target (repeatable; 'all' for every target).")
@click.option("--checkpoint", "checkpoints", multiple=True,
              help="Also check that the ledger still contains this 'backupkit ledger head' line (repeatable).")
@pass_ctx
@handles_errors
def ledger_verify(obj, against, checkpoints):
    """Walk the whole hash chain and every signature (exit 3 at the first broken link), and check the
    ledger against anchors kept outside it (exit 3 when it was rolled back)."""
    from .actions.anchors import anchor_targets, check_checkpoint, check_target

    ctx = _context(obj)
    n = ctx.ledger.verify(ctx.signer.public)
    click.echo(f"ledger {ctx.config.ledger}: {n} records, chain and signatures intact")
    names = anchor_targets(ctx) if "all" in against else list(against)
    results = [check_target(ctx, t) for t in names] + [check_checkpoint(ctx, c) for c in checkpoints]
    for a in results:
        click.echo(f"{a.status:11} {a.where}: {a.detail}")
    bad = [a for a in results if a.status in ("rolled-back", "unreachable")]
    for r in ctx.ledger.records():  # valid records, but an auditor should know the clock stepped back
        step = r.body.get("clock_step")
        if isinstance(step, dict):
            back = f"{float(step.get('seconds_back', 0)):.3f}".rstrip("0").rstrip(".")
            click.echo(f"warning: record seq {r.seq}: clock went back {back}s (previous seq {step.get('previous_seq')}); "
                       "order is by seq", err=True)
    if any(a.status == "rolled-back" for a in bad):
        raise VerificationFailed(next(a.detail for a in bad if a.status == "rolled-back"))
    if bad:
        raise JobFailed(bad[0].detail)


@ledger.command("head")
@pass_ctx
@handles_errors
def ledger_head(obj):
    """Print the ledger's signed head: one line for the paper log book or the assessor."""
    from .anchor import make_head

    ctx = _context(obj)
    ctx.ledger.verify(ctx.signer.public)
    click.echo(make_head(ctx.ledger, ctx.signer))


@ledger.command("annotate")
@click.argument("system")
@click.argument("text")
@click.option("--kind", type=click.Choice(["annotation", "review"]), default="annotation", show_default=True)
@click.option("--subject", default="", help="The record or backup this note is about (e.g. a drill ID).")
@pass_ctx
@handles_errors
def ledger_annotate(obj, system, text, kind, subject):
    """Append a signed note: a review of a drill, a corrective action, a staff handover."""
    ctx = _context(obj)
    if system != "*":
        ctx.policy(system)  # an unknown system is exit 2, never a note about nothing
    if subject and not any(r.subject == subject for r in ctx.ledger.records(policy=None if system == "*" else system)):
        raise ConfigError(f"--subject {subject!r}: no ledger record of {system} has that subject (a drill ID, backup ID "
                          "or target); see 'backupkit list' or the drill output")
    if kind == "review" and not subject:
        raise ConfigError("--kind review needs --subject DRILL_ID: the drill being reviewed")
    rec = ctx.ledger.append(ctx.signer, kind=kind, policy=system, subject=subject or system,
                            body={"text": text, "operator": ctx.operator})
    click.echo(f"recorded {kind} as ledger record {rec.seq}")


@cli.group()
def review():
    """Reviews of drills and corrective actions, recorded after the fact."""


@review.command("drill")
@click.argument("drill_id")
@click.option("--reviewer", required=True, help="Who reviewed the drill's record.")
@click.option("--verdict", type=click.Choice(["accepted", "rejected"]), required=True)
@click.option("--note", default="", help="The reviewer's conclusion.")
@pass_ctx
@handles_errors
def review_drill(obj, drill_id, reviewer, verdict, note):
    """Record the review of drill DRILL_ID (after it ran): accepted or rejected, with a note."""
    from .evidence import policystore
    from .reviews import record_review

    ctx = _context(obj)
    rec = record_review(ctx, drill_id, reviewer=reviewer, verdict=verdict, note=note)
    policystore.remember(ctx.config.ledger, list(ctx.policies.values()))
    click.echo(f"drill {drill_id} {verdict} by {reviewer} (ledger record {rec.seq})")


@review.group("action")
def review_action():
    """Corrective actions: opened with an owner and a due date, closed with a record."""


@review_action.command("add")
@click.argument("system")
@click.option("--drill", "drill_id", help="The drill that found the problem.")
@click.option("--owner", required=True, help="Who is responsible.")
@click.option("--due", required=True, help="Due date (YYYY-MM-DD); an open action past it is an exception.")
@click.option("--text", required=True, help="What will be done.")
@pass_ctx
@handles_errors
def review_action_add(obj, system, drill_id, owner, due, text):
    """Open a corrective action for SYSTEM."""
    from .reviews import open_action

    rec = open_action(_context(obj), system, drill_id=drill_id, owner=owner, due=due, text=text)
    click.echo(f"corrective action {rec.subject} opened, due {rec.body['due']} (ledger record {rec.seq})")


@review_action.command("close")
@click.argument("action_id")
@click.option("--by", "by", required=True, help="Who confirms it is done.")
@click.option("--note", default="", help="What was done (e.g. the drill that proves it).")
@pass_ctx
@handles_errors
def review_action_close(obj, action_id, by, note):
    """Close corrective action ACTION_ID."""
    from .reviews import close_action

    rec = close_action(_context(obj), action_id, by=by, note=note)
    click.echo(f"corrective action {action_id} closed (ledger record {rec.seq})")


@cli.group()
def hold():
    """Legal or audit holds: a backup on hold is never pruned."""


@hold.command("add")
@click.argument("system")
@click.argument("backup_id", callback=_backup_id_option)
@click.option("--reason", required=True, help="Why it is held (an audit, an incident, a court order).")
@pass_ctx
@handles_errors
def hold_add(obj, system, backup_id, reason):
    """Keep SYSTEM's backup BACKUP_ID whatever retention says, until released."""
    from .actions.holds import set_hold

    rec = set_hold(_context(obj), system, backup_id, reason=reason, release=False)
    click.echo(f"{system}/{backup_id} is on hold (ledger record {rec.seq})")


@hold.command("release")
@click.argument("system")
@click.argument("backup_id", callback=_backup_id_option)
@click.option("--reason", required=True, help="Why the hold ends.")
@pass_ctx
@handles_errors
def hold_release(obj, system, backup_id, reason):
    """End the hold on SYSTEM's backup BACKUP_ID; retention applies again."""
    from .actions.holds import set_hold

    rec = set_hold(_context(obj), system, backup_id, reason=reason, release=True)
    click.echo(f"{system}/{backup_id} is no longer on hold (ledger record {rec.seq})")


@cli.group()
def evidence():
    """Signed evidence bundles for assessors."""


@evidence.command("export")
@click.option("--since", help="First day (YYYY-MM-DD, display zone), included.")
@click.option("--until", help="Last day (YYYY-MM-DD, display zone), included.")
@click.option("--system", "systems", multiple=True, help="Only this system (repeatable); other systems' records "
              "are kept as hashes only.")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@click.option("--tz", "tz_name", help="Display time zone (default: evidence.yaml 'timezone', else the host's).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory (or .zip file).")
@pass_ctx
@handles_errors
def evidence_export(obj, since, until, systems, lang, tz_name, out):
    """Write a signed evidence bundle for a period (exit 3 if a target's signed head shows the
    ledger was rolled back)."""
    from .evidence.export import export

    ctx = _context(obj)
    path = export(ctx, since=since, until=until, systems=list(systems), lang=lang, out=out, tz_name=tz_name,
                  warn=lambda line: click.echo(line, err=True))
    click.echo(f"evidence bundle written to {path}")


@evidence.command("verify")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--fingerprint", "fp", help="The registered SHA-256 fingerprint of the signing key (64 hex).")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The registered public key (PEM), e.g. from 'backupkit keys register --pub'.")
@click.option("--trust-bundle-key", is_flag=True, help="Trust the key inside the bundle (proves nothing against "
              "forgery; prints a warning).")
@click.option("--previous", type=click.Path(exists=True, path_type=Path),
              help="The previous period's bundle: prove the two are contiguous.")
@click.option("--key-id", help="Also require this signing key ID (from 'backupkit keys show').")
@pass_ctx
def evidence_verify(obj, bundle, fp, key_file, trust_bundle_key, previous, key_id):
    """Check a bundle offline against a pinned key: signature, every file, every record, the verdicts
    (exit 3 on tampering, or when no key is pinned)."""
    from .evidence.verify import verify_bundle

    try:
        pin = _evidence_pin(obj, fp, key_file, trust_bundle_key)
        summary = verify_bundle(bundle, pin=pin, expected_key_id=key_id, previous=previous)
    except BackupkitError as e:
        _fail(str(e), e.exit_code)
    click.echo(summary)


def _evidence_pin(obj, fp, key_file, trust_bundle_key):
    """The key a bundle must be signed with: --key, --fingerprint, else this host's configured signing key;
    None (refused) unless --trust-bundle-key."""
    from .evidence.verify import Pin
    from .keys import fingerprint, load_public_key, parse_fingerprint

    if key_file is not None:
        try:
            data = key_file.read_bytes()
        except OSError as e:
            raise ConfigError(f"option --key: cannot read {key_file} ({e.strerror})") from None
        pub = load_public_key(data, f"option --key {key_file}")
        pin = Pin(f"--key {key_file}", fingerprint(pub), pub)
        if fp and parse_fingerprint(fp) != pin.fingerprint:
            raise ConfigError(f"option --fingerprint does not match the key in {key_file}")
        return pin
    if fp:
        return Pin("--fingerprint", parse_fingerprint(fp))
    if trust_bundle_key:
        click.echo("WARNING: --trust-bundle-key: the bundle is checked against the key it carries itself. A forger "
                   "who re-signs a bundle with a key of their own passes this check. Compare the fingerprint "
                   "printed below with the registered one (公钥登记表), or verify with --fingerprint.", err=True)
        return Pin("the key inside the bundle (UNPINNED)", "", trust_bundle=True)
    try:
        from .config import config_path

        if config_path(obj.get("config")).exists():
            ctx = _context(obj)
            return Pin(f"the signing key of config {ctx.config.file}", fingerprint(ctx.signer.public),
                       ctx.signer.public)
    except BackupkitError:
        pass
    return None


@cli.group()
def targets():
    """Offsite targets."""


@targets.command("trust")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Record the host key without asking.")
@pass_ctx
@handles_errors
def targets_trust(obj, name, yes):
    """Show an SFTP target's host key fingerprint and record it in known_hosts."""
    from .actions.targets import trust

    ctx = _context(obj)
    if name not in ctx.config.targets:
        raise ConfigError(f"target {name!r} is not defined in {ctx.config.file}")
    confirm = (lambda text: True) if yes else (lambda text: click.confirm(text, default=False))
    click.echo(trust(name, ctx.config.targets[name], confirm=confirm))


@cli.group()
def schedule():
    """Nightly scheduling: cron lines, or a due-based daemon for hosts without cron."""


@schedule.command("crontab")
@pass_ctx
@handles_errors
def schedule_crontab(obj):
    """Print crontab lines for every policy."""
    from .scheduler import crontab_lines

    click.echo("\n".join(crontab_lines(_context(obj))))


@schedule.command("run")
@click.option("--interval", type=click.IntRange(min=1), default=60, show_default=True, help="Seconds between ticks.")
@click.option("--once", is_flag=True, help="Run what is due now and exit.")
@pass_ctx
@handles_errors
def schedule_run(obj, interval, once):
    """Run backups, copies and drills as they fall due (catches up after downtime)."""
    from .scheduler import Daemon

    d = Daemon(_context(obj))
    if once:
        ran = d.tick()
        click.echo("\n".join(ran) if ran else "nothing due")
    else:
        d.run(interval)


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
              show_default=True, help="Where to put the demo database, config, repository and report.")
@click.option("--rows", type=click.IntRange(min=1000), default=120_000, show_default=True)
@handles_errors
def demo(directory, rows):
    """Generate a hospital SQLite database and run backup, copy, verify, drill and evidence export on it."""
    from .actions.demo import run_demo

    sys.exit(run_demo(directory, rows=rows))


def main() -> None:
    cli(prog_name="backupkit")


if __name__ == "__main__":
    main()
