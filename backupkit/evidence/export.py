"""``backupkit evidence export``: one signed bundle covering a period.

Given a period (whole days in the display zone, both ends included) and
optionally systems: verify the ledger and check it against the signed heads on
the targets (a rolled-back ledger exits 3; an unreachable target is a warning),
then write, into a private temporary directory that is renamed into place only
when complete (nothing half-written is ever left at ``--out``):

- records.jsonl: the contiguous chain segment of the period; with ``--system``,
  records of other systems are kept as ``{seq, omitted, prev_hash, hash, key_id,
  signature}`` so the chain still verifies without disclosing them;
- controls.json, exceptions.json: verdicts and exceptions (recomputed by verify);
- report.html and paperwork.html (A4 forms), backups.csv, drills.csv,
  exceptions.csv (zh or en headers, UTF-8 with BOM);
- policies/: the policy files in force and, under policies/versions/, every
  version a record of the period cites (from the policy store);
- HEAD: the signed ledger head at the bundle's last record; bundle.json holds
  it and the head just before the first record (where the previous export ended);
- signing.pub, SIZES (bytes per file), SHA256SUMS (over every file, SIZES included), SHA256SUMS.sig.

The period selects by ``time`` only at its two ends: the bundle holds every
seq from the first record dated at or after the start to the last record dated
before the end, whatever the time of the records between them. Order comes
from seq, never from the wall clock, so a record written while the clock was
stepped back stays in the chain (and is listed in bundle.json ``clock_steps``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from ..anchor import head_line
from ..artifact import sha256_file
from ..canonical import canonical
from ..context import Context
from ..errors import ConfigError, VerificationFailed
from ..keys import fingerprint, public_pem
from ..ledger import GENESIS
from ..manifest import signature_line
from . import i18n, policystore
from .model import (BACKUP_HEADERS, DRILL_HEADERS, EXCEPTION_HEADERS, backup_rows, derive, drill_rows,
                    exception_rows, to_csv)
from .settings import load_settings

SUMS = "SHA256SUMS"
SUMS_SIG = "SHA256SUMS.sig"
SIZES = "SIZES"
HEAD = "HEAD"
FORMAT = 2


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
            for r in records if isinstance(r.body, dict) and isinstance(r.body.get("clock_step"), dict)]


def write_sums(directory: Path, signer) -> None:
    """SIZES (``<bytes>  <name>`` per file, so ``evidence verify`` checks zip members before extracting
    them), then SHA256SUMS over every file including SIZES (``sha256sum -c`` format) and its signature."""
    files = [p for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in (SUMS, SUMS_SIG, SIZES)]
    rels = [p.relative_to(directory).as_posix() for p in files]
    (directory / SIZES).write_text("".join(f"{p.stat().st_size}  {rel}\n" for p, rel in zip(files, rels)))
    os.chmod(directory / SIZES, 0o644)
    files = [p for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in (SUMS, SUMS_SIG)]
    data = "".join(f"{sha256_file(p)[0]}  {p.relative_to(directory).as_posix()}\n" for p in files).encode()
    (directory / SUMS).write_bytes(data)
    (directory / SUMS_SIG).write_text(signature_line(signer, data))


def stub(r) -> dict:
    """A record of another system, reduced to what proves it exists in the chain."""
    return {"seq": r.seq, "omitted": True, "prev_hash": r.prev_hash, "hash": r.hash, "key_id": r.key_id,
            "signature": r.signature}


def parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise ConfigError(f"option {option}: {value!r} is not a date; write YYYY-MM-DD") from None


def policy_versions(records, policies, ledger_path: Path) -> tuple[list[dict], list[dict], dict[str, bytes]]:
    """Every policy version the records cite, plus the ones in force: (found, missing, {sha: bytes})."""
    cited: dict[tuple[str, str], list[int]] = {}
    for r in records:
        b = r.body if isinstance(r.body, dict) else {}
        sha = None
        if r.kind == "backup" and isinstance(b.get("policy"), dict):
            sha = b["policy"].get("sha256")
        elif r.kind == "drill" and isinstance(b.get("backup"), dict):
            sha = b["backup"].get("policy_sha256")
        if isinstance(sha, str) and sha:
            cited.setdefault((r.policy, sha), []).append(r.seq)
    current = {(p.system, p.content_sha256) for p in policies if p.content_sha256}
    for key in current:
        cited.setdefault(key, [])
    found, missing, blobs = [], [], {}
    for (system, sha), seqs in sorted(cited.items()):
        data = policystore.lookup(ledger_path, sha)
        entry = {"system": system, "sha256": sha, "records": sorted(seqs), "current": (system, sha) in current}
        if data is None:
            missing.append(entry)
        else:
            blobs[sha] = data
            found.append({**entry, "file": f"policies/versions/{sha}.yaml"})
    return found, missing, blobs


def export(ctx: Context, *, since: str | None, until: str | None, systems: list[str], lang: str, out: Path,
           tz_name: str | None = None, warn=lambda line: None) -> Path:
    """Write the bundle to ``out`` (a new directory, or a .zip file) and return its path.

    ``since`` and ``until`` are days (YYYY-MM-DD) in the display zone, both included."""
    from ..actions.anchors import anchor_targets, check_target
    from .paperwork import render_paperwork
    from .report import render_report

    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty; choose a new --out")
    first_day, last_day = parse_day(since, "--since"), parse_day(until, "--until")
    if first_day and last_day and last_day < first_day:
        raise ConfigError(f"option --until: {last_day} is before --since {first_day}")
    settings = load_settings(ctx.config.file)
    tz = i18n.zone(tz_name or settings.timezone, "--tz" if tz_name else "evidence.yaml timezone")
    policies = [ctx.policy(s) for s in systems] if systems else list(ctx.policies.values())
    n_total = ctx.ledger.verify(ctx.signer.public)  # never export evidence from a broken chain
    anchors = []
    for t in anchor_targets(ctx):
        a = check_target(ctx, t)
        anchors.append({"target": t, "status": a.status})
        if a.status == "rolled-back":
            raise VerificationFailed(f"evidence export refused: {a.detail}")
        if a.status == "unreachable":
            warn(f"warning: ledger head on {a.where} could not be checked: {a.detail}")
    policystore.remember(ctx.config.ledger, list(ctx.policies.values()))

    now = datetime.now(timezone.utc)
    start = i18n.day_start(first_day, tz) if first_day else None
    end = i18n.day_start(last_day + timedelta(days=1), tz) if last_day else None
    everything = list(ctx.ledger.records())
    records = period_segment(everything, start.isoformat() if start else None, end.isoformat() if end else None)
    if not records and (first_day or last_day):
        raise ConfigError(f"no ledger record falls between {first_day or 'the start'} and {last_day or 'today'} "
                          f"(days in {tz}); check --since and --until")
    today = now.astimezone(tz).date()
    if start is None:
        start = i18n.day_start(min(i18n.local_day(records[0].time, tz), today) if records else today, tz)
    if end is None:
        last_seen = i18n.local_day(records[-1].time, tz) if records else today
        end = i18n.day_start(max(last_seen, today) + timedelta(days=1), tz)
    as_of = min(end, now)
    scope = {p.system for p in policies}
    filtered = bool(systems)
    full = [r for r in records if not filtered or r.policy in scope or r.policy == "*"]
    steps = clock_steps(records)
    versions, missing, blobs = policy_versions(full, policies, ctx.config.ledger)
    derived = derive(full, policies, settings, start=start, end=end, as_of=as_of, tz=tz, missing_policies=missing)

    if records:
        prev_time = next((r.time for r in everything if r.seq == records[0].seq - 1), None)
        head = head_line(records[-1].seq, records[-1].hash, records[-1].time, ctx.signer)
        previous = head_line(records[0].seq - 1, records[0].prev_hash if records[0].seq > 1 else GENESIS, prev_time,
                             ctx.signer)
    else:
        seq, h, t = ctx.ledger.head()
        head = previous = head_line(seq, h, t, ctx.signer)
    meta = {
        "format": FORMAT, "tool": ctx.tool, "generated": now.astimezone(tz).isoformat(timespec="seconds"),
        "since": start.isoformat(), "until": end.isoformat(),
        "period": {"first_day": (first_day or start.astimezone(tz).date()).isoformat(),
                   "last_day": (last_day or (end - timedelta(days=1)).astimezone(tz).date()).isoformat(),
                   "zone": getattr(tz, "key", str(tz)), "utc_offset": i18n.offset_label(tz, start),
                   "start": start.isoformat(), "end_exclusive": end.isoformat(), "as_of": as_of.isoformat()},
        "systems": [p.system for p in policies], "filtered": filtered, "lang": lang,
        "key_id": ctx.signer.id, "key_fingerprint": fingerprint(ctx.signer.public),
        "records": len(records), "omitted_records": len(records) - len(full), "ledger_records_total": n_total,
        "first_seq": records[0].seq if records else None, "last_seq": records[-1].seq if records else None,
        "head": head, "previous_head": previous,
        "clock_steps": len(steps), "clock_step_records": steps,
        "policy_versions": versions, "policy_versions_missing": missing,
        "settings": settings.model_dump(), "anchors": anchors, "operator": ctx.operator,
    }
    zip_out = out.suffix.lower() == ".zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write_bundle(work, meta=meta, records=records, full=full, policies=policies, derived=derived, blobs=blobs,
                     lang=lang, tz=tz, settings=settings, ctx=ctx, render_report=render_report,
                     render_paperwork=render_paperwork)
        if zip_out:
            tmp_zip = work.with_suffix(".zip")
            with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
                for p in sorted(work.rglob("*")):
                    if p.is_file():
                        z.write(p, p.relative_to(work).as_posix())
            os.replace(tmp_zip, out)
        else:
            if out.exists():
                out.rmdir()  # empty (checked above)
            os.replace(work, out)
            os.chmod(out, 0o755)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if zip_out:
            work.with_suffix(".zip").unlink(missing_ok=True)
    return out


def write_bundle(work: Path, *, meta, records, full, policies, derived, blobs, lang, tz, settings, ctx,
                 render_report, render_paperwork) -> None:
    scope_seqs = {r.seq for r in full}
    with open(work / "records.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(canonical(r.as_dict() if r.seq in scope_seqs else stub(r)).decode() + "\n")
    (work / "controls.json").write_text(json.dumps(derived.controls, ensure_ascii=False, indent=2), encoding="utf-8")
    (work / "exceptions.json").write_text(json.dumps(derived.exceptions, ensure_ascii=False, indent=2),
                                          encoding="utf-8")
    (work / "bundle.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    (work / HEAD).write_text(meta["head"] + "\n", encoding="ascii")

    def vword(v):
        return i18n.label(lang, {"passed": "passed", "failed": "failed", "accepted": "review_accepted",
                                 "rejected": "review_rejected"}[v]) if v in ("passed", "failed", "accepted",
                                                                             "rejected") else (v or "")

    (work / "backups.csv").write_bytes(to_csv(BACKUP_HEADERS[lang], backup_rows(full, tz)))
    (work / "drills.csv").write_bytes(to_csv(DRILL_HEADERS[lang], drill_rows(full, derived.reviews, tz, vword)))
    (work / "exceptions.csv").write_bytes(to_csv(
        EXCEPTION_HEADERS[lang], exception_rows(derived.exceptions, lang,
                                                lambda t: i18n.term("exception_types", t, lang))))
    (work / "policies" / "versions").mkdir(parents=True)
    for p in policies:
        if p.file is not None:
            shutil.copyfile(p.file, work / "policies" / p.file.name)
    for sha, data in blobs.items():
        (work / "policies" / "versions" / f"{sha}.yaml").write_bytes(data)
    (work / "signing.pub").write_bytes(public_pem(ctx.signer.public))
    (work / "report.html").write_text(render_report(meta, full, policies, derived, lang, tz, settings),
                                      encoding="utf-8")
    (work / "paperwork.html").write_text(render_paperwork(meta, full, policies, derived, lang, tz, settings, blobs),
                                         encoding="utf-8")
    for p in work.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    write_sums(work, ctx.signer)
    for name in (SUMS, SUMS_SIG):
        os.chmod(work / name, 0o644)
