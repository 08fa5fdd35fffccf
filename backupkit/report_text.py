"""Terminal rendering of drills, backup lists and status with rich tables."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from .durations import format_duration
from .records import DrillRecord


def _console() -> Console:
    import sys

    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_drill(rec: dict) -> None:
    c = _console()
    colour = "green" if DrillRecord.model_validate(rec).passed else "red"
    c.print(f"drill {rec['drill_id']} of {rec['system']} backup {rec.get('backup_id', '?')} "
            f"({(rec.get('copy') or {}).get('location', '?')}): [{colour}]{rec['verdict'].upper()}[/{colour}]")
    t = Table("step", "seconds", "status", box=None, pad_edge=False)
    for s in rec["timeline"]:
        t.add_row(s["step"], f"{s['seconds']:.2f}", s["status"])
    c.print(t)
    failed = [ch for ch in rec["checks"] if ch["status"] != "passed"]
    passed = len(rec["checks"]) - len(failed)
    c.print(f"checks: {passed} passed, {len(failed)} not passed")
    for ch in failed:
        c.print(f"  [red]{ch['status']}[/red] {ch['name']}: {ch.get('detail', '')}", markup=True)
    rto = rec["rto"]
    if rto.get("measured_seconds") is not None:
        c.print(f"RTO {format_duration(rto['measured_seconds'])} vs tier {rto['tier']} "
                f"({'met' if rto['met'] else 'MISSED'})")
    rpo = rec["rpo"]
    if rpo.get("age_seconds") is not None:
        judged = ("not judged: this backup was chosen by ID, so it proves that it restores, not that it is recent"
                  if rpo.get("judged") is False else "met" if rpo["met"] else "MISSED")
        c.print(f"recovery point {rpo['recovery_point']} is {format_duration(rpo['age_seconds'])} old vs RPO "
                f"{format_duration(rpo['target_seconds'])} ({judged})")
    if rec.get("teardown"):
        c.print(f"teardown: {json.dumps(rec['teardown'], ensure_ascii=False)}")


def human_bytes(n: int | float | None) -> str:
    """1.2 GB, 640.0 MB, 93.9 kB, 512 B (decimal units, as disks are sold)."""
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def print_backups(ctx, policies) -> None:
    """Backups in ledger order with their encrypted size and copies; IDs are never cut (they are copied into
    commands), so this is one plain line per backup, never a table that truncates."""
    from .provenance import ledger_history

    for p in policies:
        hist = ledger_history(ctx.ledger, p.system)
        refs, warnings = ctx.repository.scan(p.system)
        for bid in hist.ordered(refs):
            b = hist.committed[bid].body
            copies = sorted(t for t, ids in hist.copied.items() if bid in ids and bid not in hist.removed.get(t, set()))
            flags = [f"held: {hist.holds[bid]}"] if bid in hist.holds else []
            flags += ["recovered after a crash"] if b.get("recovered") else []
            drill = hist.last_drill.get(bid)
            click_line = (f"{p.system}  {bid}  {human_bytes(b.get('artifact_bytes'))} encrypted  "
                          f"{b.get('tables', '?')} tables  offsite: {', '.join(copies) or 'none'}  "
                          f"drill: {drill.body.get('verdict') if drill else 'never'}"
                          + (f"  ({'; '.join(flags)})" if flags else ""))
            print(click_line)
        for bid in sorted(set(refs) - set(hist.committed)):
            print(f"{p.system}  {bid}  NOT RECORDED in the ledger: no reader accepts it; "
                  f"'backupkit backup {p.system}' reconciles it")
        for w in warnings:
            print(f"warning: {w}")


def print_status(rows) -> None:
    c = _console()
    t = Table("system", "tier", "last backup", "age / RPO", "offsite", "last drill", "RTO / tier", "state")
    for r in rows:
        age = (f"{format_duration(r.last_backup_age_seconds)} / {format_duration(r.rpo_seconds)}"
               if r.last_backup_age_seconds is not None else "-")
        rto = (f"{format_duration(r.last_rto_seconds)} / {r.tier}" if r.last_rto_seconds is not None else "-")
        state = "[red]OVERDUE[/red]" if r.overdue else "[green]ok[/green]"
        t.add_row(r.system, r.tier, r.last_backup or "-", age, "ok" if r.offsite_ok else "MISSING",
                  f"{r.last_drill or '-'} {r.last_drill_verdict or ''}".strip(), rto, state)
    c.print(t)
    for r in rows:
        for p in r.problems:
            c.print(f"{r.system}: {p}")
