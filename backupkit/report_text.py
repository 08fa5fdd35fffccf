"""Terminal rendering of drills, backup lists and status with rich tables."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from .durations import format_duration


def _console() -> Console:
    import sys

    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_drill(rec: dict) -> None:
    c = _console()
    colour = "green" if rec["verdict"] == "passed" else "red"
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
        c.print(f"recovery point {rpo['recovery_point']} is {format_duration(rpo['age_seconds'])} old vs RPO "
                f"{format_duration(rpo['target_seconds'])} ({'met' if rpo['met'] else 'MISSED'})")
    if rec.get("teardown"):
        c.print(f"teardown: {json.dumps(rec['teardown'], ensure_ascii=False)}")


def print_backups(ctx, policies) -> None:
    c = _console()
    t = Table("system", "backup", "artifact bytes", "tables", "offsite copies")
    for p in policies:
        copies: dict[str, list[str]] = {}
        for r in ctx.ledger.records(kind="copy", policy=p.system):
            if r.body.get("status") == "ok":
                copies.setdefault(r.subject, []).append(r.body["target"])
        for ref in ctx.repository.backups(p.system):
            m = json.loads(ref.manifest_path.read_bytes())
            t.add_row(p.system, ref.backup_id, f"{m['artifact_bytes']:,}", str(len(m["fingerprints"])),
                      ", ".join(sorted(set(copies.get(ref.backup_id, [])))) or "-")
    c.print(t)


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
