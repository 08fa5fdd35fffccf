"""anchor: signed ledger heads on a real SQLite ledger with a real Ed25519 key; exact lines and messages."""

import os
import re
from datetime import datetime, timedelta, timezone

import pytest

import backupkit.ledger as ledger_mod
from backupkit.anchor import PREFIX, Head, check_head, compare, head_line, make_head, parse_head
from backupkit.errors import VerificationFailed
from backupkit.keys import generate_signing_key, load_signer
from backupkit.ledger import GENESIS, Ledger

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    times = iter(T0 + timedelta(minutes=i) for i in range(100))
    monkeypatch.setattr(ledger_mod, "now_iso", lambda: next(times).isoformat(timespec="microseconds"))
    with Ledger(tmp_path / "ledger.db") as lg:
        yield lg


def fill(ledger, signer, n):
    return [ledger.append(signer, kind="backup", policy="his", subject=f"b{i}", body={}) for i in range(1, n + 1)]


LINE_RE = re.compile(r"backupkit-ledger-head 1 seq=(\d+) hash=([0-9a-f]{64}) time=(\S+) key=([0-9a-f]{16}) "
                     r"sig=([0-9a-f]{128})")


def test_head_line_exact_body(signer):
    line = head_line(7, "a" * 64, None, signer)
    assert line.startswith(f"{PREFIX} seq=7 hash={'a' * 64} time=- key={signer.id} sig=")
    assert LINE_RE.fullmatch(line)
    line = head_line(0, GENESIS, "2026-11-01T02:00:00+00:00", signer)
    assert line.startswith(f"{PREFIX} seq=0 hash={GENESIS} time=2026-11-01T02:00:00+00:00 key={signer.id} sig=")


def test_make_head_of_empty_and_filled_ledger(ledger, signer):
    head = parse_head(make_head(ledger, signer), signer.public, "x")
    assert (head.seq, head.hash, head.time, head.key_id) == (0, GENESIS, "-", signer.id)
    recs = fill(ledger, signer, 3)
    head = parse_head(make_head(ledger, signer), signer.public, "x")
    assert (head.seq, head.hash, head.time) == (3, recs[-1].hash, recs[-1].time)


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: s.encode("ascii"), lambda s: "  " + s + "\n",
                                  lambda s: (s + "\r\n").encode("ascii")])
def test_parse_head_accepts_str_bytes_and_whitespace(signer, wrap):
    line = head_line(12, "b" * 64, "t", signer)
    assert parse_head(wrap(line), signer.public, "x") == Head(12, "b" * 64, "t", signer.id, line)


def test_parse_head_refusals_are_exact(signer, other):
    line = head_line(3, "c" * 64, "t", signer)
    with pytest.raises(VerificationFailed) as e:
        parse_head("junk", signer.public, "target nas")
    assert str(e.value) == ("target nas: not a backupkit ledger head line "
                            f"(expected '{PREFIX} seq=… hash=… sig=…')")
    with pytest.raises(VerificationFailed) as e:
        parse_head(line, other.public, "target nas")
    assert str(e.value) == (f"target nas: head signed by key {signer.id}, not by the configured signing key {other.id}")
    forged = line.replace("seq=3", "seq=4")
    with pytest.raises(VerificationFailed) as e:
        parse_head(forged, signer.public, "target nas")
    assert str(e.value) == ("target nas head: signature does not verify; it was altered or signed by another key")
    with pytest.raises(VerificationFailed):
        parse_head(line.encode("ascii") + b"\xff", signer.public, "target nas")


@pytest.mark.parametrize("head_seq,head_hash,local_seq,local_hash,verdict", [
    (4, "h", 3, "h", "ahead"),
    (4, "h", 4, "h", None),
    (4, "h", 5, "h", None),
    (4, "h", 4, "g", "diverged"),
    (4, GENESIS, 4, None, "diverged"),
    (0, GENESIS, 0, None, None),
    (0, GENESIS, 0, "x", None),
    (0, "h", 0, "h", "diverged"),
    (1, GENESIS, 1, GENESIS, None),
    (1, GENESIS, 0, None, "ahead"),
])
def test_compare_exact(head_seq, head_hash, local_seq, local_hash, verdict):
    assert compare(head_seq, head_hash, local_seq, local_hash) == verdict


def test_check_head_consistent(ledger, signer):
    recs = fill(ledger, signer, 3)
    for seq, h in ((0, GENESIS), (1, recs[0].hash), (3, recs[2].hash)):
        check_head(ledger, Head(seq, h, "t", signer.id, ""), "target nas")


def test_check_head_ahead_message(ledger, signer):
    recs = fill(ledger, signer, 2)
    with pytest.raises(VerificationFailed) as e:
        check_head(ledger, Head(3, recs[1].hash, "t", signer.id, ""), "target nas")
    assert str(e.value) == (
        f"target nas is ahead of the local ledger {ledger.path}: its signed head is seq 3, the local ledger ends at "
        "seq 2; the local ledger was rolled back or replaced. Restore the newer ledger (the target keeps a copy in "
        "_ledger/ledger.db) before running backups")


def test_check_head_diverged_messages(ledger, signer):
    recs = fill(ledger, signer, 2)
    with pytest.raises(VerificationFailed) as e:
        check_head(ledger, Head(2, "d" * 64, "t", signer.id, ""), "target nas")
    assert str(e.value) == (
        f"target nas and the local ledger {ledger.path} diverge at seq 2: the signed head records hash "
        f"{'d' * 16}…, the local record there has {recs[1].hash[:16]}…; the local history was rewritten")
    with pytest.raises(VerificationFailed) as e:
        check_head(ledger, Head(0, "e" * 64, "t", signer.id, ""), "checkpoint")
    assert str(e.value) == (
        f"checkpoint and the local ledger {ledger.path} diverge at seq 0: the signed head records hash "
        f"{'e' * 16}…, the local record there has none…; the local history was rewritten")


def test_head_is_immutable(signer):
    import dataclasses

    head = parse_head(head_line(1, "a" * 64, "t", signer), signer.public, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.seq = 2  # type: ignore[misc]
