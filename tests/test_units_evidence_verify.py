"""evidence.verify: small signed bundles built in tmp_path with the project's own functions (real Ed25519 keys),
and the pure checks called directly; exact messages, every refusal named. No CLI, no ledger database."""

import hashlib
import json
import os
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backupkit import __version__
from backupkit.anchor import head_line
from backupkit.canonical import canonical
from backupkit.errors import VerificationFailed
from backupkit.evidence import verify as V
from backupkit.evidence.export import stub, write_sums
from backupkit.evidence.model import derive
from backupkit.evidence.settings import from_dict
from backupkit.evidence.verify import (Checked, Pin, Stub, _check_meta, _first_difference, _read_member, check_entries,
                                       check_previous, parse_sizes, parse_sums, safe_extract, verify_bundle)
from backupkit.keys import fingerprint, generate_signing_key, load_signer, public_pem
from backupkit.ledger import GENESIS, Record, record_hash
from backupkit.manifest import signature_line
from backupkit.policy import load_policy

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
POLICY = b"system: his\ntier: 30m\nengine: sqlite\nsource: {path: /x}\n"
OTHER_POLICY = b"system: lis\ntier: 30m\nengine: sqlite\nsource: {path: /y}\n"
TOOL = f"backupkit {__version__}"


def chain(signer, n, *, start=1, prev=None, policies=None, bodies=None, minutes=None):
    """``n`` genuine records from seq ``start``; ``policies``/``bodies``/``minutes`` by seq override the defaults."""
    out = []
    prev = prev or (GENESIS if start == 1 else hashlib.sha256(b"before").hexdigest())
    for seq in range(start, start + n):
        when = T0 + timedelta(minutes=(minutes or {}).get(seq, seq))
        content = {"seq": seq, "time": when.isoformat(timespec="microseconds"), "kind": "annotation",
                   "policy": (policies or {}).get(seq, "his"), "subject": f"s{seq}", "body": (bodies or {}).get(seq, {})}
        h = record_hash(prev, content)
        out.append(Record(**content, prev_hash=prev, hash=h, key_id=signer.id, signature=signer.sign(h.encode("ascii"))))
        prev = h
    return out


def meta_for(signer, records, omit=(), **extra):
    """bundle.json as export writes it, for ``records`` (seqs in ``omit`` kept as hash-only stubs)."""
    first, last = records[0], records[-1]
    previous = head_line(first.seq - 1, first.prev_hash if first.seq > 1 else GENESIS, None, signer)
    meta = {"records": len(records), "first_seq": first.seq, "last_seq": last.seq, "clock_steps": 0,
            "clock_step_records": [], "omitted_records": len(omit), "key_id": signer.id,
            "key_fingerprint": fingerprint(signer.public), "head": head_line(last.seq, last.hash, None, signer),
            "previous_head": previous}
    meta.update(extra)
    return meta


def recompute_meta(signer, records, omit=(), systems=("his",), filtered=False, **extra):
    return meta_for(signer, records, omit, tool=TOOL, systems=list(systems), filtered=filtered, settings={},
                    period={"zone": "UTC", "start": T0.isoformat(), "end_exclusive": (T0 + timedelta(days=1)).isoformat(),
                            "as_of": (T0 + timedelta(days=1)).isoformat()}, **extra)


def derived_files(records, omit, meta, policy_files):
    pols = [load_policy(p) for p in policy_files]
    by = {p.system: p for p in pols}
    full = [r for r in records if r.seq not in omit]
    per = meta["period"]
    d = derive(full, [by[s] for s in meta["systems"]], from_dict({}, "x"), start=datetime.fromisoformat(per["start"]),
               end=datetime.fromisoformat(per["end_exclusive"]), as_of=datetime.fromisoformat(per["as_of"]),
               tz=timezone.utc, missing_policies=[])
    return {"controls.json": json.dumps(d.controls, ensure_ascii=False, indent=2).encode(),
            "exceptions.json": json.dumps(d.exceptions, ensure_ascii=False, indent=2).encode()}


def build(d: Path, signer, records, *, omit=(), meta=None, files=None, head=True, pub_signer=None,
          policies=None, derived=False) -> Path:
    """Write a bundle directory the way export does (records.jsonl, bundle.json, HEAD, signing.pub, SIZES,
    SHA256SUMS, SHA256SUMS.sig). ``policies``: {file name: bytes} under policies/; ``derived``: write
    controls.json and exceptions.json recomputed from the records."""
    d.mkdir(parents=True)
    with open(d / "records.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(canonical(stub(r) if r.seq in omit else r.as_dict()).decode() + "\n")
    if meta is not None:
        (d / "bundle.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        if head and "head" in meta:
            (d / "HEAD").write_text(meta["head"] + "\n", encoding="ascii")
    for name, data in (policies or {}).items():
        (d / "policies").mkdir(exist_ok=True)
        (d / "policies" / name).write_bytes(data)
    if derived:
        for name, data in derived_files(records, omit, meta, sorted((d / "policies").glob("*.yaml"))).items():
            (d / name).write_bytes(data)
    for name, data in (files or {}).items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    (d / "signing.pub").write_bytes(public_pem((pub_signer or signer).public))
    write_sums(d, signer)
    return d


def pin(signer, **kw):
    return Pin("--key k.pub", fingerprint(signer.public), signer.public, **kw)


def zip_dir(d: Path, out: Path, *, extra=None) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(d).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return out


def refused(fn, *args, **kw) -> str:
    with pytest.raises(VerificationFailed) as e:
        fn(*args, **kw)
    return str(e.value)


def resign_sums(d: Path, signer, sizes_text: str):
    """Replace SIZES with ``sizes_text`` and re-sign SHA256SUMS over every file (SIZES included)."""
    (d / "SIZES").write_text(sizes_text)
    files = [p for p in sorted(d.rglob("*")) if p.is_file() and p.name not in ("SHA256SUMS", "SHA256SUMS.sig")]
    data = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(d).as_posix()}\n"
                   for p in files).encode()
    (d / "SHA256SUMS").write_bytes(data)
    (d / "SHA256SUMS.sig").write_text(signature_line(signer, data))


# ---- constants and the pin -----------------------------------------------------------------------------------------

def test_limits():
    assert (V.MAX_SUMS, V.MAX_SIG, V.MAX_TOTAL) == (4194304, 4096, 4294967296)


def test_pin_defaults():
    p = Pin("--fingerprint", "ab")
    assert (p.public, p.trust_bundle) == (None, False)
    s = Stub(1, "p", "h", "k", "s")
    assert (s.kind, s.policy, s.time, s.subject, s.body) == ("omitted", "", "", "", {})


def test_pinned_key(signer, other):
    pem = public_pem(signer.public)
    fp = fingerprint(signer.public)
    assert "no pinned key" in refused(V._pinned_key, None, pem, "b")
    assert refused(V._pinned_key, Pin("--fingerprint", fingerprint(other.public)), pem, "b") == (
        f"b: signed by key with fingerprint {fp}, but the pinned key (--fingerprint) is {fingerprint(other.public)}; "
        "the bundle was not signed by the registered key")
    assert fingerprint(V._pinned_key(Pin("--fingerprint", fp), pem, "b")) == fp  # no public given: the bundle's key
    pub = signer.public
    assert V._pinned_key(Pin("--key", fp, pub), pem, "b") is pub
    assert fingerprint(V._pinned_key(Pin("bundle", "", trust_bundle=True), pem, "b")) == fp
    assert refused(V._pinned_key, Pin("bundle", "", trust_bundle=True), b"junk", "b") == "b/signing.pub: not a PEM public key"


# ---- parse_sums, parse_sizes, _read_member --------------------------------------------------------------------------

H = "a" * 64


@pytest.mark.parametrize("data,want", [
    (b"", {}),
    (f"{H}  x.txt\n{'b' * 64}  dir/y\n".encode(), {"x.txt": H, "dir/y": "b" * 64}),
    (f"# comment\n\n   \n{H}  x\n".encode(), {"x": H}),
    (f"{H}  two  spaces\n".encode(), {"two  spaces": H}),
])
def test_parse_sums(data, want):
    assert parse_sums(data, "b") == want


@pytest.mark.parametrize("data,msg", [
    (f"{H} x\n".encode(), f"b: SHA256SUMS has a malformed line {(H + ' x')[:60]!r}"),
    (f"{H[:63]}  x\n".encode(), f"b: SHA256SUMS has a malformed line {H[:60]!r}"),
    (f"{H}a  x\n".encode(), f"b: SHA256SUMS has a malformed line {H[:60]!r}"),
    (b"x" * 70 + b"\n", f"b: SHA256SUMS has a malformed line {'x' * 60!r}"),
    (b"abc  x\n", "b: SHA256SUMS has a malformed line 'abc  x'"),
    (b"\xff\xfe", "b: SHA256SUMS is not UTF-8 text"),
])
def test_parse_sums_refuses(data, msg):
    assert refused(parse_sums, data, "b") == msg


@pytest.mark.parametrize("data,want", [
    (b"", {}), (b"12  a\n0  b/c\n", {"a": 12, "b/c": 0}), (b"7  x  y", {"x  y": 7}),
])
def test_parse_sizes(data, want):
    assert parse_sizes(data, "b") == want


@pytest.mark.parametrize("data,msg", [
    (b"12 a\n", "b: SIZES has a malformed line '12 a'"),
    (b"1x  a\n", "b: SIZES has a malformed line '1x  a'"),
    (b"-1  a\n", "b: SIZES has a malformed line '-1  a'"),
    (b"\n", "b: SIZES has a malformed line ''"),
])
def test_parse_sizes_refuses(data, msg):
    assert refused(parse_sizes, data, "b") == msg


def test_read_member(tmp_path):
    z = tmp_path / "z.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as w:
        w.writestr("five", b"12345")
        w.writestr("empty", b"")
    with zipfile.ZipFile(z) as r:
        assert _read_member(r, "five", 5, "b") == b"12345"
        assert _read_member(r, "five", 6, "b") == b"12345"
        assert _read_member(r, "empty", 0, "b") == b""
        assert refused(_read_member, r, "five", 4, "b") == "b: five is 5 bytes, more than the 4 allowed"
        assert refused(_read_member, r, "nope", 4, "b") == "b: nope is missing"


# ---- check_entries and _check_meta ----------------------------------------------------------------------------------

def as_stub(r):
    return Stub(r.seq, r.prev_hash, r.hash, r.key_id, r.signature)


def test_check_entries_accepts_a_genuine_segment_with_stubs(signer):
    rs = chain(signer, 4, start=5)
    assert check_entries(rs, signer.public, "w") == 4
    assert check_entries([rs[0], as_stub(rs[1]), as_stub(rs[2]), rs[3]], signer.public, "w") == 4
    assert check_entries([], signer.public, "w") == 0


def test_check_entries_refuses(signer, other):
    rs = chain(signer, 3)
    edited = Record(**{**rs[1].as_dict(), "subject": "changed"})
    assert refused(check_entries, [rs[0], edited, rs[2]], signer.public, "w") == (
        "w: record seq 2 (annotation changed): content does not match its hash; the record was edited")
    assert refused(check_entries, [rs[0], rs[2]], signer.public, "w") == (
        "w: record seq 2 is missing (next is 3); records were deleted")
    assert refused(check_entries, [rs[1], rs[0]], signer.public, "w") == (
        "w: record seq 3 is missing (next is 1); records were deleted")
    relinked = chain(signer, 1, start=2, prev=hashlib.sha256(b"elsewhere").hexdigest())[0]
    assert refused(check_entries, [rs[0], relinked], signer.public, "w") == (
        "w: record seq 2 (annotation s2): prev_hash does not match the previous record; the chain was altered")
    stub2 = Stub(2, hashlib.sha256(b"elsewhere").hexdigest(), rs[1].hash, rs[1].key_id, rs[1].signature)
    assert refused(check_entries, [rs[0], stub2], signer.public, "w") == (
        "w: record seq 2: prev_hash does not match the previous record; the chain was altered")
    assert refused(check_entries, rs, other.public, "w") == (
        f"w: record seq 1 (annotation s1): signed by key {signer.id}, expected {other.id}")
    forged = Record(**{**rs[0].as_dict(), "signature": rs[1].signature})
    assert refused(check_entries, [forged], signer.public, "w") == (
        "w: record seq 1 (annotation s1): signature does not verify; it was altered or signed by another key")
    bad_stub = Stub(1, GENESIS, rs[0].hash, rs[0].key_id, rs[1].signature)
    assert refused(check_entries, [bad_stub], signer.public, "w") == (
        "w: record seq 1: signature does not verify; it was altered or signed by another key")


def test_check_meta_exact(signer):
    rs = chain(signer, 3, start=4, bodies={5: {"clock_step": {"previous_seq": 4, "seconds_back": 60.0}}})
    entries = [rs[0], as_stub(rs[1]), rs[2]]
    ok = {"records": 3, "first_seq": 4, "last_seq": 6, "clock_steps": 0, "clock_step_records": [], "omitted_records": 1}
    _check_meta(ok, entries, "b")
    _check_meta({}, entries, "b")
    _check_meta({"records": 0, "first_seq": None, "last_seq": None, "omitted_records": 0}, [], "b")
    full = [rs[0], rs[1], rs[2]]
    _check_meta({"clock_steps": 1, "clock_step_records": [{"seq": 5, "previous_seq": 4, "seconds_back": 60.0}],
                 "omitted_records": 0}, full, "b")
    assert refused(_check_meta, {**ok, "omitted_records": 2}, entries, "b") == (
        "b: bundle.json says omitted_records 2, but records.jsonl has 1")
    assert refused(_check_meta, {"last_seq": 7}, entries, "b") == "b: bundle.json says last_seq 7, but records.jsonl has 6"
    assert refused(_check_meta, {"first_seq": 5}, entries, "b") == "b: bundle.json says first_seq 5, but records.jsonl has 4"
    assert refused(_check_meta, {"records": 2}, entries, "b") == "b: bundle.json says records 2, but records.jsonl has 3"
    assert refused(_check_meta, {"clock_step_records": [{"seq": 9}]}, entries, "b") == (
        'b: bundle.json says clock_step_records [{"seq": 9}], but records.jsonl has []')
    assert refused(_check_meta, {"clock_step_records": []}, full, "b") == (
        'b: bundle.json says clock_step_records [], but records.jsonl has '
        '[{"seq": 5, "previous_seq": 4, "seconds_back": 60.0}]')


# ---- _first_difference ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("have,want,msg", [
    ({"a": 1, "b": 2}, {"a": 1, "b": 3}, "b: says 2, recomputed 3"),
    ({"a": {"x": [1]}}, {"a": {"x": [2]}}, "a.x[0]: says 1, recomputed 2"),
    ({"a": [1, 2]}, {"a": [1]}, "a: 2 entries, recomputed 1"),
    ([1], [1, 2], "top level: 1 entries, recomputed 2"),
    ([{"id": "C1", "v": 1}], [{"id": "C1", "v": 2}], "[C1].v: says 1, recomputed 2"),
    ([{"system": "his", "v": 1}], [{"system": "his", "v": 2}], "[his].v: says 1, recomputed 2"),
    ([{"type": "gap", "v": 1}], [{"type": "gap", "v": 2}], "[gap].v: says 1, recomputed 2"),
    ([{"id": "C1", "system": "his", "type": "t", "v": 1}], [{"id": "C1", "system": "his", "type": "t", "v": 2}],
     "[C1].v: says 1, recomputed 2"),
    ([{"v": 1}], [{"v": 2}], "[0].v: says 1, recomputed 2"),
    ([7, 8], [7, 9], "[1]: says 8, recomputed 9"),
    ({"a": 1}, [1], ": says {\"a\": 1}, recomputed [1]"),
    ([1], {"a": 1}, ": says [1], recomputed {\"a\": 1}"),
    ({"z": "中"}, {"z": "文"}, "z: says \"中\", recomputed \"文\""),
    ({1: "a"}, {1: "b"}, "1: says \"a\", recomputed \"b\""),
])
def test_first_difference(have, want, msg):
    assert _first_difference(have, want) == msg


# ---- check_previous -------------------------------------------------------------------------------------------------

def checked(entries, meta=None, directory="prev"):
    return Checked(Path(directory), meta or {}, entries, "s")


def test_check_previous(signer):
    rs = chain(signer, 6)
    prev, cur = checked(rs[:3]), checked(rs[3:])
    assert check_previous(cur, prev, "w") == "contiguous with previous bundle prev (seq 1..3 then 4..6)"
    assert check_previous(checked(rs[2:]), prev, "w") == "contiguous with previous bundle prev (seq 1..3 then 3..6)"
    assert check_previous(checked(rs[:2]), checked(rs[:4]), "w") == (
        "contiguous with previous bundle prev (seq 1..4 then 1..2)")
    assert check_previous(checked([rs[3], as_stub(rs[4])]), checked([rs[0], as_stub(rs[1]), rs[2]]), "w") == (
        "contiguous with previous bundle prev (seq 1..3 then 4..5)")
    m_prev, m_cur = meta_for(signer, rs[:3]), meta_for(signer, rs[3:])
    assert check_previous(checked(rs[3:], m_cur), checked(rs[:3], m_prev), "w").startswith("contiguous")
    # overlapping bundles: the heads are not compared
    assert check_previous(checked(rs[2:], meta_for(signer, rs[2:])), checked(rs[:3], m_prev), "w").startswith("contiguous")


def test_check_previous_refuses(signer):
    rs = chain(signer, 6)
    other = chain(signer, 6, bodies={4: {"x": 1}})
    assert refused(check_previous, checked([]), checked(rs[:3]), "w") == (
        "w: one of the bundles has no records; continuity cannot be shown")
    assert refused(check_previous, checked(rs[3:]), checked([]), "w") == (
        "w: one of the bundles has no records; continuity cannot be shown")
    assert refused(check_previous, checked(rs[:3]), checked(rs[3:]), "w") == (
        "w: the previous bundle starts at seq 4, after this one (seq 1); pass the older bundle as --previous")
    assert refused(check_previous, checked(rs[4:]), checked(rs[:3]), "w") == (
        "w: records seq 4..4 are in neither bundle: the previous bundle ends at seq 3, this one starts at seq 5; "
        "the bundles are not contiguous")
    assert refused(check_previous, checked(rs[5:]), checked(rs[:3]), "w") == (
        "w: records seq 4..5 are in neither bundle: the previous bundle ends at seq 3, this one starts at seq 6; "
        "the bundles are not contiguous")
    assert refused(check_previous, checked(other[2:]), checked(rs[:4]), "w") == (
        "w: the two bundles differ at seq 4; one of them was rewritten")
    elsewhere = chain(signer, 3, start=4, prev=hashlib.sha256(b"elsewhere").hexdigest())
    assert refused(check_previous, checked(elsewhere), checked(rs[:3]), "w") == (
        "w: seq 4 does not link to the previous bundle's last record seq 3")
    m_prev = meta_for(signer, rs[:3])
    wrong = meta_for(signer, rs[3:], previous_head=head_line(3, rs[1].hash, None, signer))
    assert refused(check_previous, checked(rs[3:], wrong), checked(rs[:3], m_prev), "w") == (
        "w: this bundle's previous_head is not the previous bundle's head")
    # the head line is compared without its signature, its time included
    other_time = meta_for(signer, rs[3:], previous_head=head_line(3, rs[2].hash, rs[2].time, signer))
    assert refused(check_previous, checked(rs[3:], other_time), checked(rs[:3], m_prev), "w") == (
        "w: this bundle's previous_head is not the previous bundle's head")
    unsigned = {**m_prev, "head": m_prev["head"].split(" sig=")[0]}
    assert check_previous(checked(rs[3:], meta_for(signer, rs[3:])), checked(rs[:3], unsigned), "w").startswith("contig")
    # without a head on one side the heads are not compared
    assert check_previous(checked(rs[3:], wrong), checked(rs[:3], {}), "w").startswith("contiguous")
    assert check_previous(checked(rs[3:], {}), checked(rs[:3], m_prev), "w").startswith("contiguous")


# ---- whole bundles: directories --------------------------------------------------------------------------------------

def test_plain_bundle_without_bundle_json(tmp_path, signer):
    b = build(tmp_path / "b", signer, chain(signer, 2))
    assert verify_bundle(b, pin=pin(signer)) == (
        f"bundle {b}: signature by key {signer.id} valid, 3 files intact, 2 records (seq 1..2) chained and signed; "
        "key pinned by --key k.pub")


def test_bundle_with_meta_stubs_and_clock_step(tmp_path, signer):
    rs = chain(signer, 4, start=2, policies={3: "lis"},
               bodies={4: {"clock_step": {"previous_seq": 3, "seconds_back": 60.0}}}, minutes={4: 1})
    steps = [{"seq": 4, "previous_seq": 3, "seconds_back": 60.0}]
    meta = meta_for(signer, rs, omit={3}, clock_steps=1, clock_step_records=steps, tool="backupkit 0.0.1")
    b = build(tmp_path / "b", signer, rs, omit={3}, meta=meta)
    out = verify_bundle(b, pin=pin(signer), expected_key_id=signer.id)
    assert out == (f"bundle {b}: signature by key {signer.id} valid, 5 files intact, 4 records (seq 2..5) chained and "
                   "signed (1 of other systems as hashes only); 1 clock step(s) at seq 4 (the clock went back; order is "
                   "by seq); key pinned by --key k.pub\n"
                   f"note: verdicts not recomputed: made by backupkit 0.0.1, this is backupkit {__version__}")


def test_two_stubs_and_two_clock_steps_in_the_summary(tmp_path, signer):
    cs = {"previous_seq": 1, "seconds_back": 1.0}
    rs = chain(signer, 5, policies={2: "lis", 4: "lis"}, bodies={3: {"clock_step": cs}, 5: {"clock_step": cs}})
    b = build(tmp_path / "b", signer, rs, omit={2, 4})
    assert verify_bundle(b, pin=pin(signer)) == (
        f"bundle {b}: signature by key {signer.id} valid, 3 files intact, 5 records (seq 1..5) chained and signed "
        "(2 of other systems as hashes only); 2 clock step(s) at seq 3, 5 (the clock went back; order is by seq); "
        "key pinned by --key k.pub")


def test_empty_bundle(tmp_path, signer):
    b = build(tmp_path / "b", signer, [], meta={"records": 0, "first_seq": None, "last_seq": None})
    assert verify_bundle(b, pin=pin(signer)) == (
        f"bundle {b}: signature by key {signer.id} valid, 4 files intact, 0 records (no records) chained and signed; "
        f"key pinned by --key k.pub\nnote: verdicts not recomputed: made by None, this is backupkit {__version__}")


def test_trust_bundle_key(tmp_path, signer):
    rs = chain(signer, 1)
    b = build(tmp_path / "b", signer, rs, meta={"key_fingerprint": fingerprint(signer.public)})
    out = verify_bundle(b, pin=Pin("bundle (UNPINNED)", "", trust_bundle=True))
    assert out == (f"bundle {b}: signature by key {signer.id} valid, 4 files intact, 1 records (seq 1..1) chained and "
                   f"signed; UNPINNED: trusted the key inside the bundle, fingerprint {fingerprint(signer.public)}; "
                   "compare it with the registered one\n"
                   f"note: verdicts not recomputed: made by None, this is backupkit {__version__}")
    c = build(tmp_path / "c", signer, rs)
    assert verify_bundle(c, pin=Pin("bundle (UNPINNED)", "", trust_bundle=True)).endswith(
        "UNPINNED: trusted the key inside the bundle, fingerprint ?; compare it with the registered one")


def test_pin_and_key_refusals(tmp_path, signer, other):
    rs = chain(signer, 1)
    b = build(tmp_path / "b", signer, rs)
    assert "no pinned key" in refused(verify_bundle, b)
    assert refused(verify_bundle, b, pin=pin(other)).startswith(
        f"bundle {b}: signed by key with fingerprint {fingerprint(signer.public)}, but the pinned key (--key k.pub)")
    assert refused(verify_bundle, b, pin=pin(signer), expected_key_id=other.id) == (
        f"bundle {b}: signed by key {signer.id}, expected {other.id}")
    # signing.pub is another key than the one that signed SHA256SUMS
    c = build(tmp_path / "c", signer, rs, pub_signer=other)
    assert refused(verify_bundle, c, pin=pin(other)) == (
        f"bundle {c}: SHA256SUMS signed by key {signer.id}, but signing.pub is {other.id}")
    # SHA256SUMS.sig names the right key but the signature is another key's
    d = build(tmp_path / "d", signer, rs)
    (d / "SHA256SUMS.sig").write_text(f"ed25519 {signer.id} {other.sign((d / 'SHA256SUMS').read_bytes())}\n")
    assert refused(verify_bundle, d, pin=pin(signer)) == (
        f"bundle {d}: SHA256SUMS: signature does not verify; it was altered or signed by another key")


@pytest.mark.parametrize("name", ["SHA256SUMS", "SHA256SUMS.sig", "signing.pub", "records.jsonl"])
def test_required_file_missing(tmp_path, signer, name):
    b = build(tmp_path / "b", signer, chain(signer, 1))
    (b / name).unlink()
    assert refused(verify_bundle, b, pin=pin(signer)) == f"bundle {b}: {name} is missing"


def test_files_against_sums_and_sizes(tmp_path, signer):
    rs = chain(signer, 2)
    b = build(tmp_path / "b", signer, rs, files={"notes/a.txt": b"hello"})
    assert verify_bundle(b, pin=pin(signer)).startswith(f"bundle {b}: signature by key {signer.id} valid, 4 files intact")
    (b / "notes" / "a.txt").write_bytes(b"hellO")
    assert refused(verify_bundle, b, pin=pin(signer)) == (
        f"bundle {b}: notes/a.txt does not match SHA256SUMS; it was altered")
    (b / "notes" / "a.txt").write_bytes(b"hello!")
    assert refused(verify_bundle, b, pin=pin(signer)) == (
        f"bundle {b}: notes/a.txt is 6 bytes, SHA256SUMS declares 5")
    (b / "notes" / "a.txt").unlink()
    assert refused(verify_bundle, b, pin=pin(signer)) == (
        f"bundle {b}: notes/a.txt is listed in SHA256SUMS but missing")


def test_sizes_missing_from_the_directory(tmp_path, signer):
    b = build(tmp_path / "b", signer, chain(signer, 1))
    (b / "SIZES").unlink()
    assert refused(verify_bundle, b, pin=pin(signer)) == f"bundle {b}: SIZES is listed in SHA256SUMS but missing"


def test_sizes_unlisted_is_not_used(tmp_path, signer):
    b = build(tmp_path / "b", signer, chain(signer, 1), files={"a.txt": b"abc"})
    data = (b / "SHA256SUMS").read_bytes()
    data = b"".join(line + b"\n" for line in data.splitlines() if not line.endswith(b"  SIZES"))
    (b / "SHA256SUMS").write_bytes(data)
    (b / "SHA256SUMS.sig").write_text(signature_line(signer, data))
    (b / "SIZES").unlink()
    assert verify_bundle(b, pin=pin(signer)).startswith(f"bundle {b}: signature by key {signer.id} valid, 3 files intact")
    (b / "SIZES").write_text("99  a.txt\n")
    assert refused(verify_bundle, b, pin=pin(signer)) == (
        f"bundle {b}: SIZES is not listed in SHA256SUMS; it was added after signing")


def test_added_files_are_refused(tmp_path, signer):
    b = build(tmp_path / "b", signer, chain(signer, 1), files={"sub/a.txt": b"x"})
    (b / "sub" / "extra.txt").write_text("added")
    assert refused(verify_bundle, b, pin=pin(signer)) == (
        f"bundle {b}: sub/extra.txt is not listed in SHA256SUMS; it was added after signing")
    (b / "sub" / "extra.txt").unlink()
    (b / "sub" / "empty").mkdir()
    assert verify_bundle(b, pin=pin(signer)).startswith(f"bundle {b}: signature")


@pytest.mark.parametrize("lines,msg", [
    (["{not json"], "records.jsonl line 1 is not a ledger record"),
    (["R1", "[1, 2]"], "records.jsonl line 2 is not a ledger record"),
    (["R1", '{"seq": 2}'], "records.jsonl line 2 is not a ledger record"),
    (["R1", '{"seq": 2, "omitted": true}'], "records.jsonl line 2 is not a ledger record"),
    (["R1", "R2", '{"seq": 3, "bogus": 1}'], "records.jsonl line 3 is not a ledger record"),
])
def test_records_that_are_not_records(tmp_path, signer, lines, msg):
    rs = chain(signer, 2)
    text = {"R1": canonical(rs[0].as_dict()).decode(), "R2": canonical(rs[1].as_dict()).decode()}
    b = build(tmp_path / "b", signer, [])
    (b / "records.jsonl").write_text("".join(text.get(x, x) + "\n" for x in lines))
    write_sums(b, signer)
    assert refused(verify_bundle, b, pin=pin(signer)) == f"bundle {b}: {msg}"


def test_edited_record_in_a_resigned_bundle(tmp_path, signer):
    rs = chain(signer, 2)
    b = build(tmp_path / "b", signer, [rs[0], Record(**{**rs[1].as_dict(), "subject": "x"})])
    assert refused(verify_bundle, b, pin=pin(signer)) == (
        f"bundle {b}/records.jsonl: record seq 2 (annotation x): content does not match its hash; the record was edited")


def test_bundle_json(tmp_path, signer, other):
    rs = chain(signer, 3)
    meta = meta_for(signer, rs)
    b = build(tmp_path / "ok", signer, rs, meta=meta)
    assert verify_bundle(b, pin=pin(signer)).startswith(f"bundle {b}: signature")
    assert verify_bundle(b, pin=pin(signer)).endswith(
        f"key pinned by --key k.pub\nnote: verdicts not recomputed: made by None, this is backupkit {__version__}")
    cases = [
        ({**meta, "key_id": other.id}, f"bundle.json says key_id {other.id}, but the bundle is signed by {signer.id}"),
        ({**meta, "key_fingerprint": "ff"},
         f"bundle.json says key_fingerprint ff, but the bundle is signed by {fingerprint(signer.public)}"),
        ({**meta, "records": 4}, "bundle.json says records 4, but records.jsonl has 3"),
    ]
    for i, (m, msg) in enumerate(cases):
        d = build(tmp_path / f"b{i}", signer, rs, meta=m)
        assert refused(verify_bundle, d, pin=pin(signer)) == f"bundle {d}: {msg}"
    d = build(tmp_path / "nojson", signer, rs, files={"bundle.json": b"{nope"})
    assert refused(verify_bundle, d, pin=pin(signer)) == f"bundle {d}: bundle.json is not JSON"
    d = build(tmp_path / "list", signer, rs, files={"bundle.json": b"[1, 2]"})
    assert verify_bundle(d, pin=pin(signer)).endswith("key pinned by --key k.pub")  # not a mapping: no meta


def test_heads(tmp_path, signer, other):
    rs = chain(signer, 4, start=2)
    meta = meta_for(signer, rs)
    assert verify_bundle(build(tmp_path / "ok", signer, rs, meta=meta), pin=pin(signer)).startswith("bundle")
    assert verify_bundle(build(tmp_path / "nohead", signer, rs, meta=meta, head=False), pin=pin(signer)).startswith("bundle")
    genesis = chain(signer, 2)
    assert verify_bundle(build(tmp_path / "g", signer, genesis, meta=meta_for(signer, genesis)),
                         pin=pin(signer)).startswith("bundle")
    last, first = rs[-1], rs[0]
    cases = [
        ({**meta, "head": head_line(4, rs[2].hash, None, signer)},
         f"bundle.json head is seq 4 hash {rs[2].hash[:16]}…, but records.jsonl ends at seq 5 hash {last.hash[:16]}…; "
         "records were cut"),
        ({**meta, "head": head_line(5, rs[2].hash, None, signer)},
         f"bundle.json head is seq 5 hash {rs[2].hash[:16]}…, but records.jsonl ends at seq 5 hash {last.hash[:16]}…; "
         "records were cut"),
        ({**meta, "previous_head": head_line(0, GENESIS, None, signer)},
         "bundle.json previous_head (seq 0) does not link to the first record (seq 2)"),
        ({**meta, "previous_head": head_line(1, rs[1].hash, None, signer)},
         "bundle.json previous_head (seq 1) does not link to the first record (seq 2)"),
        ({**meta, "previous_head": head_line(2, first.prev_hash, None, signer)},
         "bundle.json previous_head (seq 2) does not link to the first record (seq 2)"),
        ({**meta, "head": head_line(5, last.hash, None, other)},
         f"bundle.json head: head signed by key {other.id}, not by the configured signing key {signer.id}"),
    ]
    for i, (m, msg) in enumerate(cases):
        d = build(tmp_path / f"b{i}", signer, rs, meta=m)
        assert refused(verify_bundle, d, pin=pin(signer)) == f"bundle {d}: {msg}"
    d = build(tmp_path / "headfile", signer, rs, meta=meta, files={"HEAD": head_line(5, last.hash, "x", signer).encode()})
    assert refused(verify_bundle, d, pin=pin(signer)) == f"bundle {d}: HEAD differs from bundle.json head"
    g = build(tmp_path / "g1", signer, genesis, meta={**meta_for(signer, genesis),
                                                      "previous_head": head_line(0, genesis[0].hash, None, signer)})
    assert refused(verify_bundle, g, pin=pin(signer)) == (
        f"bundle {g}: bundle.json previous_head (seq 0) does not link to the first record (seq 1)")
    # an empty bundle: the heads are parsed, not compared with records
    e = build(tmp_path / "empty", signer, [], meta={"records": 0, "head": head_line(9, last.hash, None, signer),
                                                     "previous_head": head_line(9, last.hash, None, signer)})
    assert verify_bundle(e, pin=pin(signer)).startswith("bundle")


def test_policy_versions(tmp_path, signer):
    rs = chain(signer, 1)
    sha = hashlib.sha256(POLICY).hexdigest()
    v = [{"system": "his", "sha256": sha, "file": f"policies/versions/{sha}.yaml"}]
    ok = build(tmp_path / "ok", signer, rs, meta={**meta_for(signer, rs), "policy_versions": v},
               files={f"policies/versions/{sha}.yaml": POLICY})
    assert verify_bundle(ok, pin=pin(signer)).startswith("bundle")
    bad = build(tmp_path / "bad", signer, rs, meta={**meta_for(signer, rs), "policy_versions": v},
                files={f"policies/versions/{sha}.yaml": OTHER_POLICY})
    assert refused(verify_bundle, bad, pin=pin(signer)) == (
        f"bundle {bad}: bundle.json lists policy version {sha[:16]} at policies/versions/{sha}.yaml, which is missing "
        "or has another hash")
    gone = build(tmp_path / "gone", signer, rs, meta={**meta_for(signer, rs), "policy_versions": v})
    assert refused(verify_bundle, gone, pin=pin(signer)) == (
        f"bundle {gone}: bundle.json lists policy version {sha[:16]} at policies/versions/{sha}.yaml, which is missing "
        "or has another hash")


def test_controls_must_cite_records_in_the_bundle(tmp_path, signer):
    rs = chain(signer, 3, policies={2: "lis"})
    controls = [{"framework": "f", "controls": [{"id": "C1", "evidence": [{"records": [1, 3]}]},
                                                {"id": "C2", "evidence": []}]}]
    ok = build(tmp_path / "ok", signer, rs, omit={2}, files={"controls.json": json.dumps(controls).encode()})
    assert verify_bundle(ok, pin=pin(signer)).startswith("bundle")
    controls[0]["controls"][1]["evidence"] = [{"records": [3, 2, 9]}]
    bad = build(tmp_path / "bad", signer, rs, omit={2}, files={"controls.json": json.dumps(controls).encode()})
    assert refused(verify_bundle, bad, pin=pin(signer)) == f"bundle {bad}: control C2 cites records [2, 9] not in the bundle"


# ---- recomputed verdicts ---------------------------------------------------------------------------------------------

def test_recomputed_bundle_verifies(tmp_path, signer):
    rs = chain(signer, 3)
    meta = recompute_meta(signer, rs)
    b = build(tmp_path / "b", signer, rs, meta=meta, policies={"his.yaml": POLICY}, derived=True)
    assert verify_bundle(b, pin=pin(signer)) == (
        f"bundle {b}: signature by key {signer.id} valid, 8 files intact, 3 records (seq 1..3) chained and signed; "
        "key pinned by --key k.pub")


def test_filtered_recomputed_bundle_with_stubs(tmp_path, signer):
    rs = chain(signer, 4, policies={2: "lis", 4: "*"})
    meta = recompute_meta(signer, rs, omit={2}, filtered=True)
    b = build(tmp_path / "b", signer, rs, omit={2}, meta=meta, policies={"his.yaml": POLICY}, derived=True)
    assert "note" not in verify_bundle(b, pin=pin(signer))
    stray = build(tmp_path / "stray", signer, rs, meta=recompute_meta(signer, rs, filtered=True),
                  policies={"his.yaml": POLICY}, derived=True)
    assert refused(verify_bundle, stray, pin=pin(signer)) == (
        f"bundle {stray}: records [2] belong to systems outside the bundle's systems")
    unfiltered = build(tmp_path / "all", signer, rs, meta=recompute_meta(signer, rs, filtered=False),
                       policies={"his.yaml": POLICY}, derived=True)
    assert "note" not in verify_bundle(unfiltered, pin=pin(signer))


def test_two_systems_recomputed(tmp_path, signer):
    rs = chain(signer, 2, policies={2: "lis"})
    meta = recompute_meta(signer, rs, systems=("lis", "his"))
    b = build(tmp_path / "b", signer, rs, meta=meta, policies={"his.yaml": POLICY, "lis.yaml": OTHER_POLICY},
              derived=True)
    assert "note" not in verify_bundle(b, pin=pin(signer))


@pytest.mark.parametrize("drop,note", [
    ("tool", "verdicts not recomputed: made by None, this is backupkit " + __version__),
    ("period", "verdicts not recomputed: bundle.json has no period or settings"),
    ("settings", "verdicts not recomputed: bundle.json has no period or settings"),
])
def test_recompute_skipped(tmp_path, signer, drop, note):
    rs = chain(signer, 1)
    meta = recompute_meta(signer, rs)
    del meta[drop]
    b = build(tmp_path / "b", signer, rs, meta=meta)
    assert verify_bundle(b, pin=pin(signer)).endswith(f"key pinned by --key k.pub\nnote: {note}")


def test_recompute_refusals(tmp_path, signer):
    rs = chain(signer, 2)
    meta = recompute_meta(signer, rs)
    b = build(tmp_path / "nopolicy", signer, rs, meta=meta, policies={"lis.yaml": OTHER_POLICY})
    assert refused(verify_bundle, b, pin=pin(signer)) == (
        f"bundle {b}: bundle.json lists systems ['his'] with no policy file under policies/")
    b = build(tmp_path / "broken", signer, rs, meta=meta, policies={"his.yaml": b"system: his\n"})
    assert refused(verify_bundle, b, pin=pin(signer)).startswith(f"bundle {b}: a bundled policy does not load: ")
    b = build(tmp_path / "nocontrols", signer, rs, meta=meta, policies={"his.yaml": POLICY})
    assert refused(verify_bundle, b, pin=pin(signer)) == f"bundle {b}: controls.json is missing"
    d = tmp_path / "pol"
    d.mkdir()
    (d / "his.yaml").write_bytes(POLICY)
    files = derived_files(rs, (), meta, [d / "his.yaml"])
    b = build(tmp_path / "noexc", signer, rs, meta=meta, policies={"his.yaml": POLICY},
              files={"controls.json": files["controls.json"]})
    assert refused(verify_bundle, b, pin=pin(signer)) == f"bundle {b}: exceptions.json is missing"
    b = build(tmp_path / "edited", signer, rs, meta=meta, policies={"his.yaml": POLICY},
              files={"controls.json": files["controls.json"], "exceptions.json": b"[]"})
    want = json.loads(files["exceptions.json"])
    assert want, "the period has exceptions to edit away"
    assert refused(verify_bundle, b, pin=pin(signer)) == (
        f"bundle {b}: exceptions.json does not follow from records.jsonl and the bundled policies "
        f"(top level: 0 entries, recomputed {len(want)}); it was edited")


# ---- zips --------------------------------------------------------------------------------------------------------

def test_zip_bundle_verifies_and_names_the_zip(tmp_path, signer):
    rs = chain(signer, 3)
    meta = recompute_meta(signer, rs)
    d = build(tmp_path / "d", signer, rs, meta=meta, policies={"his.yaml": POLICY}, derived=True,
              files={f"policies/versions/{'c' * 64}.yaml": POLICY, "empty.txt": b""})
    z = zip_dir(d, tmp_path / "b.zip")
    assert verify_bundle(z, pin=pin(signer)) == (
        f"bundle {z}: signature by key {signer.id} valid, 10 files intact, 3 records (seq 1..3) chained and signed; "
        "key pinned by --key k.pub")


def test_zip_errors_name_the_zip_not_the_temporary_directory(tmp_path, signer, other):
    rs = chain(signer, 2)
    d = build(tmp_path / "d", signer, rs, meta={**meta_for(signer, rs), "records": 5})
    z = zip_dir(d, tmp_path / "b.zip")
    assert refused(verify_bundle, z, pin=pin(signer)) == f"bundle {z}: bundle.json says records 5, but records.jsonl has 2"
    assert refused(verify_bundle, z, pin=pin(signer), expected_key_id=other.id) == (
        f"bundle {z}: signed by key {signer.id}, expected {other.id}")


def test_zip_with_many_files_has_a_large_sha256sums(tmp_path, signer):
    rs = chain(signer, 1)
    d = build(tmp_path / "d", signer, rs, files={f"f/{i:03d}.txt": b"x" for i in range(60)})
    assert (d / "SHA256SUMS").stat().st_size > V.MAX_SIG
    z = zip_dir(d, tmp_path / "b.zip")
    assert verify_bundle(z, pin=pin(signer)).startswith(f"bundle {z}: signature by key {signer.id} valid, 63 files")


def test_not_a_bundle(tmp_path, signer):
    f = tmp_path / "plain.txt"
    f.write_text("hello")
    assert refused(verify_bundle, f, pin=pin(signer)) == f"bundle {f}: not a directory or zip file"
    assert refused(verify_bundle, tmp_path / "nothing", pin=pin(signer)) == (
        f"bundle {tmp_path / 'nothing'}: not a directory or zip file")


@pytest.mark.parametrize("name", ["/etc/x", "../x", "a/../../x", "a\\b"])
def test_zip_unsafe_paths(tmp_path, signer, name):
    d = build(tmp_path / "d", signer, chain(signer, 1))
    z = zip_dir(d, tmp_path / "b.zip", extra={name: b"x"})
    assert refused(safe_extract, z, tmp_path / "out", pin(signer)) == f"bundle {z}: unsafe path {name!r} in the zip"


def test_zip_dotted_names_are_safe(tmp_path, signer):
    d = build(tmp_path / "d", signer, chain(signer, 1), files={"a..b/c..txt": b"x"})
    z = zip_dir(d, tmp_path / "b.zip")
    safe_extract(z, tmp_path / "out", pin(signer))
    assert (tmp_path / "out" / "a..b" / "c..txt").read_bytes() == b"x"


def test_safe_extract_writes_every_member(tmp_path, signer):
    d = build(tmp_path / "d", signer, chain(signer, 1), files={"p/v/deep.yaml": b"deep", "p/top.txt": b"top",
                                                          "q/r/s/only.txt": b"only"})
    z = zip_dir(d, tmp_path / "b.zip")
    with zipfile.ZipFile(z, "a") as w:
        w.writestr(zipfile.ZipInfo("p/emptydir/"), b"")
    out = tmp_path / "out"
    out.mkdir()
    safe_extract(z, out, pin(signer))
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    want = {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    assert got == want


def test_zip_refusals_before_extracting(tmp_path, signer, other):
    rs = chain(signer, 1)
    d = build(tmp_path / "d", signer, rs, files={"a.txt": b"abc"})

    def variant(name, **kw):
        return zip_dir(d, tmp_path / f"{name}.zip", **kw)

    z = variant("added", extra={"b.txt": b"zzz"})
    assert refused(safe_extract, z, tmp_path / "o1", pin(signer)) == (
        f"bundle {z}: b.txt is not listed in SHA256SUMS; it was added after signing")
    assert refused(safe_extract, variant("wrongkey"), tmp_path / "o2", pin(other)).startswith(
        f"bundle {tmp_path / 'wrongkey.zip'}: signed by key with fingerprint {fingerprint(signer.public)}")
    assert "no pinned key" in refused(safe_extract, variant("nopin"), tmp_path / "o3", None)


def test_zip_sums_signature_and_sizes(tmp_path, signer, other):
    rs = chain(signer, 1)
    d = build(tmp_path / "d", signer, rs, files={"a.txt": b"abc"})
    sizes = (d / "SIZES").read_text()

    # SHA256SUMS signed by another key
    (d / "SHA256SUMS.sig").write_text(signature_line(other, (d / "SHA256SUMS").read_bytes()))
    z = zip_dir(d, tmp_path / "sig.zip")
    assert refused(safe_extract, z, tmp_path / "o", pin(signer)) == (
        f"bundle {z}: SHA256SUMS: signature does not verify; it was altered or signed by another key")

    # a file with no declared size
    resign_sums(d, signer, "".join(l + "\n" for l in sizes.splitlines() if not l.endswith("  a.txt")))
    z = zip_dir(d, tmp_path / "nosize.zip")
    assert refused(safe_extract, z, tmp_path / "o", pin(signer)) == f"bundle {z}: SHA256SUMS declares no size for a.txt"

    # a declared size that is not the member's
    resign_sums(d, signer, sizes.replace("3  a.txt", "2  a.txt"))
    z = zip_dir(d, tmp_path / "size.zip")
    assert refused(safe_extract, z, tmp_path / "o", pin(signer)) == (
        f"bundle {z}: a.txt is 3 bytes in the zip, SIZES (signed through SHA256SUMS) declares 2; refused before extracting")

    # SIZES not listed in SHA256SUMS
    resign_sums(d, signer, sizes)
    data = b"".join(l + b"\n" for l in (d / "SHA256SUMS").read_bytes().splitlines() if not l.endswith(b"  SIZES"))
    (d / "SHA256SUMS").write_bytes(data)
    (d / "SHA256SUMS.sig").write_text(signature_line(signer, data))
    z = zip_dir(d, tmp_path / "nosizes.zip")
    assert refused(safe_extract, z, tmp_path / "o", pin(signer)) == (
        f"bundle {z}: SHA256SUMS does not list SIZES; sizes cannot be checked before extracting")

    # SIZES altered after signing
    resign_sums(d, signer, sizes)
    (d / "SIZES").write_text(sizes + "1  x\n")
    z = zip_dir(d, tmp_path / "sizesedit.zip")
    assert refused(safe_extract, z, tmp_path / "o", pin(signer)) == f"bundle {z}: SIZES does not match SHA256SUMS; it was altered"

    # a malformed signature line
    resign_sums(d, signer, sizes)
    (d / "SHA256SUMS.sig").write_text("nonsense\n")
    z = zip_dir(d, tmp_path / "badsig.zip")
    assert refused(safe_extract, z, tmp_path / "o", pin(signer)) == f"bundle {z}: manifest.sig is malformed"


def test_zip_members_over_the_limits(tmp_path, signer):
    d = build(tmp_path / "d", signer, chain(signer, 1))
    z = zip_dir(d, tmp_path / "pub.zip")
    with zipfile.ZipFile(z) as r:
        members = {n: r.read(n) for n in r.namelist()}
    members["signing.pub"] = b"x" * 4097
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as w:
        for n, data in members.items():
            w.writestr(n, data)
    assert refused(safe_extract, big, tmp_path / "o", pin(signer)) == (
        f"bundle {big}: signing.pub is 4097 bytes, more than the 4096 allowed")


def test_zip_total_size_limit(tmp_path, signer, monkeypatch):
    d = build(tmp_path / "d", signer, chain(signer, 1), files={"a.txt": b"abc"})
    z = zip_dir(d, tmp_path / "b.zip")
    with zipfile.ZipFile(z) as r:
        total = sum(i.file_size for i in r.infolist() if i.filename not in ("SHA256SUMS", "SHA256SUMS.sig"))
    monkeypatch.setattr(V, "MAX_TOTAL", total)
    safe_extract(z, tmp_path / "o1", pin(signer))
    monkeypatch.setattr(V, "MAX_TOTAL", total - 1)
    assert refused(safe_extract, z, tmp_path / "o2", pin(signer)) == (
        f"bundle {z}: the files total {total} bytes, more than a bundle can be")


def test_previous_bundles(tmp_path, signer):
    rs = chain(signer, 6)
    old = build(tmp_path / "old", signer, rs[:3], meta=meta_for(signer, rs[:3]))
    new = build(tmp_path / "new", signer, rs[3:], meta=meta_for(signer, rs[3:]))
    zold = zip_dir(old, tmp_path / "old.zip")
    assert verify_bundle(new, pin=pin(signer), previous=zold) == (
        f"bundle {new}: signature by key {signer.id} valid, 5 files intact, 3 records (seq 4..6) chained and signed; "
        f"key pinned by --key k.pub\ncontiguous with previous bundle {zold} (seq 1..3 then 4..6)\n"
        f"note: verdicts not recomputed: made by None, this is backupkit {__version__}")
    assert refused(verify_bundle, old, pin=pin(signer), previous=new).startswith(
        f"bundle {old}: the previous bundle starts at seq 4, after this one (seq 1)")
