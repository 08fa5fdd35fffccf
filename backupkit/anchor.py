"""Signed ledger heads: anchors of the ledger's history kept outside the ledger.

The ledger's hash chain proves no record was edited, but not that none was cut
off the end: a ledger with its newest records deleted (or an older
``ledger.db`` put back) is still a valid chain. So, as transparency logs
publish signed tree heads, backupkit writes the head ``(seq, hash)`` of its
ledger, signed, to every target with each copy, and prints it for the paper
log book (``backupkit ledger head``). A head is one line::

    backupkit-ledger-head 1 seq=429 hash=<64 hex> time=<ISO time> key=<key id> sig=<128 hex>

``sig`` is Ed25519 over the line up to (not including) `` sig=``. A ledger is
consistent with a head when it holds a record at ``seq`` whose hash is
``hash``; a head beyond the ledger's end means the ledger was rolled back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import VerificationFailed
from .keys import Signer, key_id, public_raw, verify_signature
from .ledger import GENESIS, Ledger

PREFIX = "backupkit-ledger-head 1"
LINE = re.compile(
    r"\A" + re.escape(PREFIX) + r" seq=(?P<seq>[0-9]{1,18}) hash=(?P<hash>[0-9a-f]{64}) time=(?P<time>\S+) "
    r"key=(?P<key>[0-9a-f]{16,64}) sig=(?P<sig>[0-9a-f]{128})\Z"
)
HEAD_KEY = "_ledger/head"
LEDGER_KEY = "_ledger/ledger.db"


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    time: str
    key_id: str
    line: str


def make_head(ledger: Ledger, signer: Signer) -> str:
    """The signed head line of ``ledger`` as it is now."""
    return head_line(*ledger.head(), signer)


def head_line(seq: int, h: str, t: str | None, signer: Signer) -> str:
    body = f"{PREFIX} seq={seq} hash={h} time={t or '-'} key={signer.id}"
    return f"{body} sig={signer.sign(body.encode('ascii'))}"


def parse_head(line: str | bytes, public: Ed25519PublicKey, what: str) -> Head:
    """Parse and check one head line; raise VerificationFailed naming ``what`` when it is not genuine."""
    if isinstance(line, bytes):
        line = line.decode("ascii", "replace")
    line = line.strip()
    m = LINE.match(line)
    if not m:
        raise VerificationFailed(f"{what}: not a backupkit ledger head line (expected '{PREFIX} seq=… hash=… sig=…')")
    kid = key_id(public_raw(public))
    if m["key"] != kid:
        raise VerificationFailed(f"{what}: head signed by key {m['key']}, not by the configured signing key {kid}")
    verify_signature(public, m["sig"], line[: line.rindex(" sig=")].encode("ascii"), f"{what} head")
    return Head(int(m["seq"]), m["hash"], m["time"], m["key"], line)


def compare(head_seq: int, head_hash: str, local_seq: int, local_hash_at_head: str | None) -> str | None:
    """Pure verdict of a local ledger against an anchor: None when consistent, else ``ahead`` (the anchor
    has records the ledger lacks: it was rolled back) or ``diverged`` (same seq, other record)."""
    if head_seq > local_seq:
        return "ahead"
    expected = GENESIS if head_seq == 0 else local_hash_at_head
    if expected != head_hash:
        return "diverged"
    return None


def check_head(ledger: Ledger, head: Head, where: str) -> None:
    """Raise VerificationFailed (exit 3) unless ``ledger`` contains ``head``; the message says which side is ahead."""
    seq, _, _ = ledger.head()
    verdict = compare(head.seq, head.hash, seq, ledger.hash_at(head.seq) if head.seq else None)
    if verdict == "ahead":
        raise VerificationFailed(
            f"{where} is ahead of the local ledger {ledger.path}: its signed head is seq {head.seq}, the local ledger "
            f"ends at seq {seq}; the local ledger was rolled back or replaced. Restore the newer ledger "
            "(the target keeps a copy in _ledger/ledger.db) before running backups"
        )
    if verdict == "diverged":
        raise VerificationFailed(
            f"{where} and the local ledger {ledger.path} diverge at seq {head.seq}: the signed head records hash "
            f"{head.hash[:16]}…, the local record there has {(ledger.hash_at(head.seq) or 'none')[:16]}…; "
            "the local history was rewritten"
        )
