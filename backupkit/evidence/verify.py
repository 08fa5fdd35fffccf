"""``backupkit evidence verify``: check a bundle offline, against a key pinned outside it.

Trust comes from outside the bundle: the assessor pins the signing key with
``--key FILE`` or ``--fingerprint HEX`` (from the 公钥登记表 handed over once),
or, on the hospital's own host, the configured signing key. Without a pin the
bundle is refused (exit 3) unless ``--trust-bundle-key`` is given, which warns
that a forger's bundle with its own key would pass too.

Checks, in order: zip members against the sizes SHA256SUMS declares, before
anything is extracted (and extraction stops at the declared size); the
SHA256SUMS signature by the pinned key; every listed file's size and hash; no
unlisted file; every record of records.jsonl (hash, link, signature; records
of other systems as hash-only stubs whose links and signatures still verify);
that bundle.json describes the records (count, seq range, omitted count, clock
steps, key, signed chain heads at both ends, systems, policy versions); that
controls.json and exceptions.json follow from the records and the bundled
policies (recomputed when the bundle was made by this backupkit version); and,
with ``--previous``, that the older bundle ends exactly where this one begins.
Raises VerificationFailed (exit 3) naming the first problem.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..anchor import parse_head
from ..errors import ConfigError, VerificationFailed
from ..keys import fingerprint, key_id, load_public_key, public_raw, verify_signature
from ..ledger import GENESIS, Record, record_hash
from ..manifest import parse_signature
from .export import HEAD, SIZES, SUMS, SUMS_SIG, clock_steps

MAX_SUMS = 4 << 20
MAX_SIG = 4096
MAX_TOTAL = 4 << 30  # no genuine bundle is larger; refuse before extracting


@dataclass
class Pin:
    """The key the bundle must be signed with, and where the verifier got it."""

    source: str  # "--key FILE", "--fingerprint", "config FILE", "bundle (UNPINNED)"
    fingerprint: str
    public: object | None = None  # Ed25519PublicKey when known
    trust_bundle: bool = False  # --trust-bundle-key: accept the bundle's own key (the CLI warned)


@dataclass
class Stub:
    seq: int
    prev_hash: str
    hash: str
    key_id: str
    signature: str
    kind: str = "omitted"
    policy: str = ""
    time: str = ""
    subject: str = ""
    body: dict = field(default_factory=dict)


@dataclass
class Checked:
    directory: Path
    meta: dict
    entries: list
    summary: str
    notes: list[str] = field(default_factory=list)


def _check_meta(meta: dict, records: list, what: str) -> None:
    """bundle.json must describe records.jsonl: seq range, count and clock steps (fields a bundle lacks are skipped)."""
    actual = {"records": len(records), "first_seq": records[0].seq if records else None,
              "last_seq": records[-1].seq if records else None, "clock_steps": len(clock_steps(records)),
              "clock_step_records": clock_steps(records),
              "omitted_records": sum(1 for r in records if isinstance(r, Stub))}
    for fld, value in actual.items():
        if fld in meta and meta[fld] != value:
            shown = meta[fld] if not isinstance(meta[fld], list) else json.dumps(meta[fld])
            raise VerificationFailed(f"{what}: bundle.json says {fld} {shown}, but records.jsonl has "
                                     f"{value if not isinstance(value, list) else json.dumps(value)}")


def check_entries(entries: list, pub, what: str) -> int:
    """The chain over full records and hash-only stubs: seq continuity, links, hashes, signatures."""
    kid = key_id(public_raw(pub))
    prev = expected = None
    for r in entries:
        where = f"{what}: record seq {r.seq}" + ("" if isinstance(r, Stub) else f" ({r.kind} {r.subject})")
        if expected is not None and r.seq != expected:
            raise VerificationFailed(f"{what}: record seq {expected} is missing (next is {r.seq}); records were deleted")
        if prev is not None and r.prev_hash != prev:
            raise VerificationFailed(f"{where}: prev_hash does not match the previous record; the chain was altered")
        if not isinstance(r, Stub) and record_hash(r.prev_hash, r.content()) != r.hash:
            raise VerificationFailed(f"{where}: content does not match its hash; the record was edited")
        if r.key_id != kid:
            raise VerificationFailed(f"{where}: signed by key {r.key_id}, expected {kid}")
        verify_signature(pub, r.signature, r.hash.encode("ascii"), where)
        prev, expected = r.hash, r.seq + 1
    return len(entries)


def parse_sums(data: bytes, what: str) -> dict[str, str]:
    digests = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationFailed(f"{what}: SHA256SUMS is not UTF-8 text") from None
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise VerificationFailed(f"{what}: SHA256SUMS has a malformed line {line[:60]!r}")
        digests[name] = digest
    return digests


def parse_sizes(data: bytes, what: str) -> dict[str, int]:
    sizes = {}
    for line in data.decode("utf-8", "replace").splitlines():
        n, sep, name = line.partition("  ")
        if not sep or not n.isdigit():
            raise VerificationFailed(f"{what}: SIZES has a malformed line {line[:60]!r}")
        sizes[name] = int(n)
    return sizes


def _read_member(z: zipfile.ZipFile, name: str, limit: int, what: str) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise VerificationFailed(f"{what}: {name} is missing") from None
    if info.file_size > limit:
        raise VerificationFailed(f"{what}: {name} is {info.file_size} bytes, more than the {limit} allowed")
    with z.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise VerificationFailed(f"{what}: {name} expands beyond its declared size")
    return data


def _pinned_key(pin: Pin | None, bundle_pem: bytes, what: str):
    pub = load_public_key(bundle_pem, f"{what}/signing.pub")
    fp = fingerprint(pub)
    if pin is None:
        raise VerificationFailed(
            f"{what}: no pinned key: pass --fingerprint (from the key registration form, 'backupkit keys register') "
            "or --key FILE; --trust-bundle-key trusts the key inside the bundle, which a forger controls")
    if pin.trust_bundle:
        return pub
    if pin.fingerprint != fp:
        raise VerificationFailed(f"{what}: signed by key with fingerprint {fp}, but the pinned key ({pin.source}) is "
                                 f"{pin.fingerprint}; the bundle was not signed by the registered key")
    return pin.public or pub


def safe_extract(bundle: Path, dest: Path, pin: Pin | None) -> None:
    """Check every zip member against SHA256SUMS's declared sizes (signature first), then extract
    at most the declared bytes of each."""
    what = f"bundle {bundle}"
    with zipfile.ZipFile(bundle) as z:
        infos = z.infolist()
        for i in infos:
            n = i.filename
            if n.startswith("/") or ".." in Path(n).parts or "\\" in n:
                raise VerificationFailed(f"{what}: unsafe path {n!r} in the zip")
        sums = _read_member(z, SUMS, MAX_SUMS, what)
        sig = _read_member(z, SUMS_SIG, MAX_SIG, what).decode("ascii", "replace")
        pub = _pinned_key(pin, _read_member(z, "signing.pub", MAX_SIG, what), what)
        sig_kid, sig_hex = parse_signature(sig, what)
        verify_signature(pub, sig_hex, sums, f"{what}: SHA256SUMS")
        digests = parse_sums(sums, what)
        if SIZES not in digests:
            raise VerificationFailed(f"{what}: SHA256SUMS does not list SIZES; sizes cannot be checked before extracting")
        size_data = _read_member(z, SIZES, MAX_SUMS, what)
        if hashlib.sha256(size_data).hexdigest() != digests[SIZES]:
            raise VerificationFailed(f"{what}: SIZES does not match SHA256SUMS; it was altered")
        sizes = parse_sizes(size_data, what)
        sizes[SIZES] = len(size_data)
        total = 0
        for i in infos:
            if i.is_dir() or i.filename in (SUMS, SUMS_SIG):
                continue
            if i.filename not in digests:
                raise VerificationFailed(f"{what}: {i.filename} is not listed in SHA256SUMS; it was added after signing")
            declared = sizes.get(i.filename)
            if declared is None:
                raise VerificationFailed(f"{what}: SHA256SUMS declares no size for {i.filename}")
            if i.file_size != declared:
                raise VerificationFailed(f"{what}: {i.filename} is {i.file_size} bytes in the zip, SIZES (signed through SHA256SUMS) declares "
                                         f"{declared}; refused before extracting")
            total += declared
        if total > MAX_TOTAL:
            raise VerificationFailed(f"{what}: the files total {total} bytes, more than a bundle can be")
        for i in infos:
            if i.is_dir():
                continue
            limit = sizes.get(i.filename, MAX_SUMS if i.filename == SUMS else MAX_SIG)
            out = dest / i.filename
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(i) as src, open(out, "wb") as dst:
                left = limit
                while True:
                    chunk = src.read(min(1 << 20, left + 1))
                    if not chunk:
                        break
                    if len(chunk) > left:
                        raise VerificationFailed(f"{what}: {i.filename} expands beyond its declared {limit} bytes")
                    dst.write(chunk)
                    left -= len(chunk)


def _load_entries(d: Path, what: str) -> list:
    entries = []
    for i, line in enumerate((d / "records.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        try:
            obj = json.loads(line)
            if obj.get("omitted") is True:
                entries.append(Stub(obj["seq"], obj["prev_hash"], obj["hash"], obj["key_id"], obj["signature"]))
            else:
                entries.append(Record(**obj))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise VerificationFailed(f"{what}: records.jsonl line {i} is not a ledger record") from None
    return entries


def _check_heads(meta: dict, entries: list, pub, what: str, d: Path) -> None:
    if "head" not in meta:
        return
    head = parse_head(meta["head"], pub, f"{what}: bundle.json head")
    prev = parse_head(meta["previous_head"], pub, f"{what}: bundle.json previous_head")
    if entries:
        last, first = entries[-1], entries[0]
        if (head.seq, head.hash) != (last.seq, last.hash):
            raise VerificationFailed(f"{what}: bundle.json head is seq {head.seq} hash {head.hash[:16]}…, but "
                                     f"records.jsonl ends at seq {last.seq} hash {last.hash[:16]}…; records were cut")
        want = GENESIS if first.seq == 1 else first.prev_hash
        if (prev.seq, prev.hash) != (first.seq - 1, want):
            raise VerificationFailed(f"{what}: bundle.json previous_head (seq {prev.seq}) does not link to the first "
                                     f"record (seq {first.seq})")
    if (d / HEAD).is_file() and (d / HEAD).read_text(encoding="ascii", errors="replace").strip() != meta["head"]:
        raise VerificationFailed(f"{what}: HEAD differs from bundle.json head")


def _recompute(d: Path, meta: dict, entries: list, what: str) -> str | None:
    """Recompute controls.json and exceptions.json; None when done, else why it was skipped."""
    from ..policy import load_policy
    from . import i18n
    from .model import derive
    from .settings import from_dict

    if meta.get("tool") != f"backupkit {__version__}":
        return f"verdicts not recomputed: made by {meta.get('tool')}, this is backupkit {__version__}"
    if "period" not in meta or "settings" not in meta:
        return "verdicts not recomputed: bundle.json has no period or settings"
    try:
        policies = [load_policy(p) for p in sorted((d / "policies").glob("*.y*ml"))]
    except ConfigError as e:
        raise VerificationFailed(f"{what}: a bundled policy does not load: {e}") from None
    by_system = {p.system: p for p in policies}
    missing = [s for s in meta.get("systems", []) if s not in by_system]
    if missing:
        raise VerificationFailed(f"{what}: bundle.json lists systems {missing} with no policy file under policies/")
    policies = [by_system[s] for s in meta["systems"]]
    per = meta["period"]
    tz = i18n.zone(per["zone"], f"{what}: bundle.json period.zone")
    full = [r for r in entries if not isinstance(r, Stub)]
    scope = set(meta["systems"])
    stray = [r.seq for r in full if r.policy not in scope and r.policy != "*"]
    if meta.get("filtered") and stray:
        raise VerificationFailed(f"{what}: records {stray[:5]} belong to systems outside the bundle's systems")
    derived = derive(full, policies, from_dict(meta["settings"], f"{what}/bundle.json settings"),
                     start=i18n.aware(per["start"]), end=i18n.aware(per["end_exclusive"]),
                     as_of=i18n.aware(per["as_of"]), tz=tz, missing_policies=meta.get("policy_versions_missing", []))
    for name, want in (("controls.json", derived.controls), ("exceptions.json", derived.exceptions)):
        if not (d / name).is_file():
            raise VerificationFailed(f"{what}: {name} is missing")
        have = json.loads((d / name).read_text(encoding="utf-8"))
        want = json.loads(json.dumps(want, ensure_ascii=False))
        if have != want:
            raise VerificationFailed(f"{what}: {name} does not follow from records.jsonl and the bundled policies "
                                     f"({_first_difference(have, want)}); it was edited")
    return None


def _first_difference(have, want, path="") -> str:
    if isinstance(have, dict) and isinstance(want, dict):
        for k in sorted(set(have) | set(want), key=str):
            if have.get(k) != want.get(k):
                return _first_difference(have.get(k), want.get(k), f"{path}.{k}" if path else str(k))
    if isinstance(have, list) and isinstance(want, list):
        if len(have) != len(want):
            return f"{path or 'top level'}: {len(have)} entries, recomputed {len(want)}"
        for i, (a, b) in enumerate(zip(have, want)):
            if a != b:
                label = a.get("id") or a.get("system") or a.get("type") if isinstance(a, dict) else None
                return _first_difference(a, b, f"{path}[{label or i}]")
    return f"{path}: says {json.dumps(have, ensure_ascii=False)[:80]}, recomputed {json.dumps(want, ensure_ascii=False)[:80]}"


def _check_dir(d: Path, pin: Pin | None, expected_key_id: str | None = None) -> Checked:
    what = f"bundle {d}"
    for name in (SUMS, SUMS_SIG, "signing.pub", "records.jsonl"):
        if not (d / name).is_file():
            raise VerificationFailed(f"{what}: {name} is missing")
    pub = _pinned_key(pin, (d / "signing.pub").read_bytes()[:MAX_SIG], what)
    kid = key_id(public_raw(pub))
    if expected_key_id and kid != expected_key_id:
        raise VerificationFailed(f"{what}: signed by key {kid}, expected {expected_key_id}")
    sums = (d / SUMS).read_bytes()
    sig_kid, sig = parse_signature((d / SUMS_SIG).read_text(), what)
    if sig_kid != kid:
        raise VerificationFailed(f"{what}: SHA256SUMS signed by key {sig_kid}, but signing.pub is {kid}")
    verify_signature(pub, sig, sums, f"{what}: SHA256SUMS")
    listed = parse_sums(sums, what)
    sizes = parse_sizes((d / SIZES).read_bytes(), what) if SIZES in listed and (d / SIZES).is_file() else {}
    for name, digest in listed.items():
        p = d / name
        if not p.is_file():
            raise VerificationFailed(f"{what}: {name} is listed in SHA256SUMS but missing")
        if name in sizes and p.stat().st_size != sizes[name]:
            raise VerificationFailed(f"{what}: {name} is {p.stat().st_size} bytes, SHA256SUMS declares {sizes[name]}")
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != digest:
            raise VerificationFailed(f"{what}: {name} does not match SHA256SUMS; it was altered")
    for p in d.rglob("*"):
        rel = p.relative_to(d).as_posix()
        if p.is_file() and rel not in listed and rel not in (SUMS, SUMS_SIG):
            raise VerificationFailed(f"{what}: {rel} is not listed in SHA256SUMS; it was added after signing")
    entries = _load_entries(d, what)
    n = check_entries(entries, pub, f"{what}/records.jsonl")
    meta: dict = {}
    if (d / "bundle.json").is_file():
        try:
            meta = json.loads((d / "bundle.json").read_text(encoding="utf-8"))
        except ValueError:
            raise VerificationFailed(f"{what}: bundle.json is not JSON") from None
        meta = meta if isinstance(meta, dict) else {}
        _check_meta(meta, entries, what)
        for fld, value in (("key_id", kid), ("key_fingerprint", fingerprint(pub))):
            if fld in meta and meta[fld] != value:
                raise VerificationFailed(f"{what}: bundle.json says {fld} {meta[fld]}, but the bundle is signed by {value}")
        _check_heads(meta, entries, pub, what, d)
        for v in meta.get("policy_versions", []):
            f = d / v.get("file", "")
            if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != v.get("sha256"):
                raise VerificationFailed(f"{what}: bundle.json lists policy version {str(v.get('sha256'))[:16]} at "
                                         f"{v.get('file')}, which is missing or has another hash")
    notes = []
    seqs = {r.seq for r in entries if not isinstance(r, Stub)}
    if (d / "controls.json").is_file():
        for fw in json.loads((d / "controls.json").read_text(encoding="utf-8")):
            for c in fw.get("controls", []):
                for ev in c.get("evidence", []):
                    missing = set(ev["records"]) - seqs
                    if missing:
                        raise VerificationFailed(f"{what}: control {c['id']} cites records {sorted(missing)} not in the bundle")
    if meta:
        skipped = _recompute(d, meta, entries, what)
        if skipped:
            notes.append(skipped)
    span = f"seq {entries[0].seq}..{entries[-1].seq}" if entries else "no records"
    steps = [s["seq"] for s in clock_steps(entries)]
    note = (f"; {len(steps)} clock step(s) at seq {', '.join(map(str, steps))} (the clock went back; order is by seq)"
            if steps else "")
    omitted = sum(1 for r in entries if isinstance(r, Stub))
    om = f" ({omitted} of other systems as hashes only)" if omitted else ""
    summary = (f"bundle {d}: signature by key {kid} valid, {len(listed)} files intact, "
               f"{n} records ({span}) chained and signed{om}{note}")
    return Checked(d, meta, entries, summary, notes)


def check_previous(cur: Checked, prev: Checked, what: str) -> str:
    """The older bundle must end exactly where this one begins (or overlap it identically)."""
    if not cur.entries or not prev.entries:
        raise VerificationFailed(f"{what}: one of the bundles has no records; continuity cannot be shown")
    a0, a1 = prev.entries[0].seq, prev.entries[-1].seq
    b0 = cur.entries[0].seq
    if a0 > b0:
        raise VerificationFailed(f"{what}: the previous bundle starts at seq {a0}, after this one (seq {b0}); "
                                 "pass the older bundle as --previous")
    if a1 + 1 < b0:
        raise VerificationFailed(f"{what}: records seq {a1 + 1}..{b0 - 1} are in neither bundle: the previous bundle "
                                 f"ends at seq {a1}, this one starts at seq {b0}; the bundles are not contiguous")
    by_seq = {r.seq: r.hash for r in prev.entries}
    for r in cur.entries:
        if r.seq in by_seq and by_seq[r.seq] != r.hash:
            raise VerificationFailed(f"{what}: the two bundles differ at seq {r.seq}; one of them was rewritten")
    if a1 + 1 == b0 and cur.entries[0].prev_hash != prev.entries[-1].hash:
        raise VerificationFailed(f"{what}: seq {b0} does not link to the previous bundle's last record seq {a1}")
    if "previous_head" in cur.meta and "head" in prev.meta and a1 + 1 == b0:
        if cur.meta["previous_head"].split(" sig=")[0] != prev.meta["head"].split(" sig=")[0]:
            raise VerificationFailed(f"{what}: this bundle's previous_head is not the previous bundle's head")
    return f"contiguous with previous bundle {prev.directory} (seq {a0}..{a1} then {b0}..{cur.entries[-1].seq})"


def _open(bundle: Path, pin: Pin | None, expected_key_id: str | None, tmps: list[Path]) -> Checked:
    if bundle.is_file() and zipfile.is_zipfile(bundle):
        tmp = Path(tempfile.mkdtemp(prefix="backupkit-verify-"))
        tmps.append(tmp)
        safe_extract(bundle, tmp, pin)
        try:
            c = _check_dir(tmp, pin, expected_key_id)
        except VerificationFailed as e:
            raise VerificationFailed(str(e).replace(str(tmp), str(bundle))) from None
        c.summary = c.summary.replace(str(tmp), str(bundle))
        c.directory = bundle
        return c
    if not bundle.is_dir():
        raise VerificationFailed(f"bundle {bundle}: not a directory or zip file")
    return _check_dir(bundle, pin, expected_key_id)


def verify_bundle(bundle: Path, *, pin: Pin | None = None, expected_key_id: str | None = None,
                  previous: Path | None = None) -> str:
    """Given a bundle directory or zip and the pinned key, verify it and return a summary (one line,
    plus notes)."""
    tmps: list[Path] = []
    try:
        cur = _open(bundle, pin, expected_key_id, tmps)
        if pin is not None and pin.trust_bundle:
            lines = [cur.summary + f"; UNPINNED: trusted the key inside the bundle, fingerprint "
                     f"{cur.meta.get('key_fingerprint', '?')}; compare it with the registered one"]
        else:
            lines = [cur.summary + f"; key pinned by {pin.source}" if pin else cur.summary]
        if previous is not None:
            prev = _open(previous, pin, expected_key_id, tmps)
            lines.append(check_previous(cur, prev, f"bundle {bundle}"))
        lines += [f"note: {n}" for n in cur.notes]
        return "\n".join(lines)
    finally:
        for t in tmps:
            shutil.rmtree(t, ignore_errors=True)
