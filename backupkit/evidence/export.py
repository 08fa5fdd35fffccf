"""``backupkit evidence export``: one signed bundle covering a period.

Given a period (and optionally systems), verify the ledger, then write
report.html, records.jsonl (the contiguous chain segment with hashes and
signatures), controls.json, backups.csv, drills.csv, the policies in force,
the public signing key, bundle.json, SHA256SUMS and SHA256SUMS.sig.
A ``.zip`` output path gets the same files zipped.

The period selects by ``time`` only at its two ends: the bundle holds every
seq from the first record dated at or after ``since`` to the last record dated
before ``until``, whatever the time of the records between them. Order comes
from seq, never from the wall clock, so a record written while the clock was
stepped back stays in the chain (and is listed in bundle.json ``clock_steps``)
instead of leaving a gap that would read as a deletion.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from ..artifact import sha256_file
from ..canonical import canonical
from ..context import Context
from ..errors import ConfigError
from ..keys import public_pem
from ..manifest import signature_line
from .controls import evaluate
from .report import render_report

SUMS = "SHA256SUMS"
SUMS_SIG = "SHA256SUMS.sig"


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def backup_rows(records) -> list[list]:
    copies: dict[str, list[str]] = {}
    for r in records:
        if r.kind == "copy" and r.body.get("status") == "ok":
            copies.setdefault(r.subject, []).append(r.body.get("target", ""))
    return [[r.seq, r.policy, r.subject, r.body.get("engine"), r.body.get("started"), r.body.get("finished"),
             (r.body.get("consistency") or {}).get("time"), r.body.get("content_bytes"), r.body.get("artifact_bytes"),
             ";".join(s["artifact_sha256"] for s in r.body.get("streams", [])), ";".join(r.body.get("recipients", [])),
             ";".join(sorted(set(copies.get(r.subject, [])))), (r.body.get("operator") or {}).get("user"),
             (r.body.get("run") or {}).get("trigger"), r.hash]
            for r in records if r.kind == "backup"]


def drill_rows(records) -> list[list]:
    return [[r.seq, r.policy, r.subject, r.body.get("backup_id"), (r.body.get("copy") or {}).get("location"),
             r.body.get("verdict"), (r.body.get("rto") or {}).get("measured_seconds"),
             (r.body.get("rto") or {}).get("target_seconds"), (r.body.get("rpo") or {}).get("age_seconds"),
             (r.body.get("rpo") or {}).get("target_seconds"),
             sum(1 for c in r.body.get("checks", []) if c["status"] == "passed"), len(r.body.get("checks", [])),
             "; ".join(r.body.get("deviations", [])), (r.body.get("operator") or {}).get("user"),
             r.body.get("reviewer") or "", r.hash]
            for r in records if r.kind == "drill"]


def _bound(value: str | None) -> datetime | None:
    """A period bound as an aware datetime; a bare date or naive time is UTC."""
    if value is None:
        return None
    d = datetime.fromisoformat(value)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def period_segment(records: list, since: str | None, until: str | None) -> list:
    """Given records in seq order, the contiguous run from the first one dated at or after ``since``
    to the last one dated before ``until`` (every seq in between, whatever its time)."""
    start, end = _bound(since), _bound(until)
    first = next((i for i, r in enumerate(records) if start is None or r.when >= start), len(records))
    last = next((i for i in range(len(records) - 1, -1, -1) if end is None or records[i].when < end), -1)
    return records[first:last + 1]


def clock_steps(records) -> list[dict]:
    """The records written while the clock was behind their predecessor's (the ledger marks them)."""
    return [{"seq": r.seq, "previous_seq": r.body["clock_step"].get("previous_seq"),
             "seconds_back": r.body["clock_step"].get("seconds_back")}
            for r in records if isinstance(r.body.get("clock_step"), dict)]


def write_sums(directory: Path, signer) -> None:
    lines = []
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name not in (SUMS, SUMS_SIG):
            lines.append(f"{sha256_file(p)[0]}  {p.relative_to(directory).as_posix()}\n")
    data = "".join(lines).encode()
    (directory / SUMS).write_bytes(data)
    (directory / SUMS_SIG).write_text(signature_line(signer, data))


def export(ctx: Context, *, since: str | None, until: str | None, systems: list[str], lang: str, out: Path) -> Path:
    """Write the bundle to ``out`` (a new directory, or a .zip file) and return its path."""
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty; choose a new --out")
    n = ctx.ledger.verify(ctx.signer.public)  # never export evidence from a broken chain
    policies = [ctx.policy(s) for s in systems] if systems else list(ctx.policies.values())
    records = period_segment(list(ctx.ledger.records()), since, until)
    steps = clock_steps(records)
    scoped = [r for r in records if not systems or r.policy in systems or r.policy == "*"]
    controls = evaluate(scoped, policies)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {"tool": ctx.tool, "generated": generated, "since": since, "until": until,
            "systems": [p.system for p in policies], "lang": lang, "key_id": ctx.signer.id,
            "records": len(records), "ledger_records_total": n,
            "first_seq": records[0].seq if records else None, "last_seq": records[-1].seq if records else None,
            "clock_steps": len(steps), "clock_step_records": steps, "operator": ctx.operator}
    zip_out = out.suffix.lower() == ".zip"
    work = Path(tempfile.mkdtemp(prefix="backupkit-bundle-")) if zip_out else out
    try:
        work.mkdir(parents=True, exist_ok=True)
        with open(work / "records.jsonl", "w", encoding="utf-8") as f:
            for r in records:
                f.write(canonical(r.as_dict()).decode() + "\n")
        (work / "controls.json").write_text(json.dumps(controls, ensure_ascii=False, indent=2), encoding="utf-8")
        (work / "bundle.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        _csv(work / "backups.csv", ["seq", "system", "backup_id", "engine", "started", "finished", "consistency_time",
                                    "content_bytes", "artifact_bytes", "artifact_sha256", "recipient_key_ids",
                                    "offsite_copies", "operator", "trigger", "record_hash"], backup_rows(scoped))
        _csv(work / "drills.csv", ["seq", "system", "drill_id", "backup_id", "copy", "verdict", "rto_seconds",
                                   "rto_target_seconds", "rpo_age_seconds", "rpo_target_seconds", "checks_passed",
                                   "checks_total", "deviations", "operator", "reviewer", "record_hash"],
             drill_rows(scoped))
        (work / "policies").mkdir(exist_ok=True)
        for p in policies:
            if p.file is not None:
                shutil.copyfile(p.file, work / "policies" / p.file.name)
        (work / "signing.pub").write_bytes(public_pem(ctx.signer.public))
        (work / "report.html").write_text(render_report(meta, scoped, policies, controls, lang), encoding="utf-8")
        write_sums(work, ctx.signer)
        if zip_out:
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
                for p in sorted(work.rglob("*")):
                    if p.is_file():
                        z.write(p, p.relative_to(work).as_posix())
    finally:
        if zip_out:
            shutil.rmtree(work, ignore_errors=True)
    return out
