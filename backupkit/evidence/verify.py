"""``backupkit evidence verify``: check a bundle offline, with nothing but the bundle.

Checks, in order: the SHA256SUMS signature against the bundled public key
(and an expected key ID if given), every listed file's hash, that no file is
unlisted, then every record in records.jsonl: its hash, its link to the
previous record and its signature, that bundle.json's seq range, record
count and clock steps describe records.jsonl, and that controls.json cites
only records that are in the bundle. Raises VerificationFailed naming the
first problem. Records written while the clock was stepped back are valid
(order is by seq) and are named in the summary.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from ..artifact import sha256_file
from ..errors import VerificationFailed
from ..keys import key_id, load_public_key, public_raw, verify_signature
from ..ledger import Record, check_chain
from ..manifest import parse_signature
from .export import SUMS, SUMS_SIG, clock_steps


def _check_meta(meta: dict, records: list[Record], what: str) -> None:
    """bundle.json must describe records.jsonl: seq range, count and clock steps (fields a bundle lacks are skipped)."""
    actual = {"records": len(records), "first_seq": records[0].seq if records else None,
              "last_seq": records[-1].seq if records else None, "clock_steps": len(clock_steps(records))}
    for field, value in actual.items():
        if field in meta and meta[field] != value:
            raise VerificationFailed(f"{what}: bundle.json says {field} {meta[field]}, but records.jsonl has {value}")


def _check_dir(d: Path, expected_key_id: str | None) -> str:
    what = f"bundle {d}"
    for name in (SUMS, SUMS_SIG, "signing.pub", "records.jsonl"):
        if not (d / name).is_file():
            raise VerificationFailed(f"{what}: {name} is missing")
    pub = load_public_key((d / "signing.pub").read_bytes(), f"{what}/signing.pub")
    kid = key_id(public_raw(pub))
    if expected_key_id and kid != expected_key_id:
        raise VerificationFailed(f"{what}: signed by key {kid}, expected {expected_key_id}")
    sums = (d / SUMS).read_bytes()
    sig_kid, sig = parse_signature((d / SUMS_SIG).read_text(), what)
    if sig_kid != kid:
        raise VerificationFailed(f"{what}: SHA256SUMS signed by key {sig_kid}, but signing.pub is {kid}")
    verify_signature(pub, sig, sums, f"{what}: SHA256SUMS")
    listed = {}
    for line in sums.decode().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name, digest in listed.items():
        p = d / name
        if not p.is_file():
            raise VerificationFailed(f"{what}: {name} is listed in SHA256SUMS but missing")
        if sha256_file(p)[0] != digest:
            raise VerificationFailed(f"{what}: {name} does not match SHA256SUMS; it was altered")
    for p in d.rglob("*"):
        rel = p.relative_to(d).as_posix()
        if p.is_file() and rel not in listed and rel not in (SUMS, SUMS_SIG):
            raise VerificationFailed(f"{what}: {rel} is not listed in SHA256SUMS; it was added after signing")
    records = []
    for i, line in enumerate((d / "records.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(Record(**json.loads(line)))
        except (ValueError, TypeError):
            raise VerificationFailed(f"{what}: records.jsonl line {i} is not a ledger record") from None
    n = check_chain(records, pub, first_prev=None, what=f"{what}/records.jsonl")
    seqs = {r.seq for r in records}
    if (d / "bundle.json").is_file():
        try:
            meta = json.loads((d / "bundle.json").read_text(encoding="utf-8"))
        except ValueError:
            raise VerificationFailed(f"{what}: bundle.json is not JSON") from None
        _check_meta(meta if isinstance(meta, dict) else {}, records, what)
    if (d / "controls.json").is_file():
        for fw in json.loads((d / "controls.json").read_text(encoding="utf-8")):
            for c in fw.get("controls", []):
                for ev in c["evidence"]:
                    missing = set(ev["records"]) - seqs
                    if missing:
                        raise VerificationFailed(f"{what}: control {c['id']} cites records {sorted(missing)} not in the bundle")
    span = f"seq {records[0].seq}..{records[-1].seq}" if records else "no records"
    steps = [s["seq"] for s in clock_steps(records)]
    note = (f"; {len(steps)} clock step(s) at seq {', '.join(map(str, steps))} (the clock went back; order is by seq)"
            if steps else "")
    return (f"bundle {d}: signature by key {kid} valid, {len(listed)} files intact, "
            f"{n} records ({span}) chained and signed{note}")


def verify_bundle(bundle: Path, *, expected_key_id: str | None = None) -> str:
    """Given a bundle directory or zip, verify it and return a one-line summary."""
    if bundle.is_file() and zipfile.is_zipfile(bundle):
        tmp = Path(tempfile.mkdtemp(prefix="backupkit-verify-"))
        try:
            with zipfile.ZipFile(bundle) as z:
                for n in z.namelist():
                    if n.startswith("/") or ".." in Path(n).parts:
                        raise VerificationFailed(f"bundle {bundle}: unsafe path {n!r} in the zip")
                z.extractall(tmp)
            return _check_dir(tmp, expected_key_id).replace(str(tmp), str(bundle))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not bundle.is_dir():
        raise VerificationFailed(f"bundle {bundle}: not a directory or zip file")
    return _check_dir(bundle, expected_key_id)
