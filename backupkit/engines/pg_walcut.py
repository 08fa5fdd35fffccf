"""Where to stop WAL replay so a recovered copy holds exactly one snapshot's transactions.

A snapshot S sees a transaction once it has left the proc array; its commit record was written
to WAL *before* that (then flushed). So every transaction S sees has its commit record before
the insert position L read after S, but a transaction that S does not see may also have its
commit record before L (it was flushing at S). Recovered to L, such a copy holds S plus those.

Given the commit records (in WAL order) around L, the copy recovered to C (exclusive) holds exactly
S's transactions iff every commit record before C is visible in S and none in [C, L) is. C is the
first commit record before L that S does not see (or L when there is none); the cut fails when a
transaction S sees committed after it in WAL order (it then exists in no recovery point).

Pure functions: the caller reads the WAL (``pg_waldump --rmgr=Transaction``) and the snapshot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

XID_SPAN = 1 << 32

RECORD_RE = re.compile(
    r"rmgr: Transaction .*?tx:\s*(\d+), lsn: ([0-9A-Fa-f]+/[0-9A-Fa-f]+), .*?desc: (COMMIT_PREPARED|COMMIT)\b"
    r"(?: (\d+):)?")


@dataclass(frozen=True)
class Commit:
    lsn: int
    xid: int  # 32-bit, as WAL records it
    prepared: bool = False


@dataclass(frozen=True)
class Snapshot:
    """``txid_current_snapshot()`` text ``xmin:xmax:xip,...`` (64-bit, epoch-extended ids)."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        try:
            lo, hi, xip = text.strip().split(":")
            return cls(int(lo), int(hi), frozenset(int(x) for x in xip.split(",") if x))
        except ValueError:
            raise ValueError(f"{text!r} is not a txid snapshot (xmin:xmax:xip)") from None

    def full(self, xid32: int) -> int:
        """The 64-bit id of a 32-bit WAL xid: the one within 2^31 of xmax."""
        full = (self.xmax & ~(XID_SPAN - 1)) | (xid32 & (XID_SPAN - 1))
        if full > self.xmax + XID_SPAN // 2:
            full -= XID_SPAN
        elif full < self.xmax - XID_SPAN // 2:
            full += XID_SPAN
        return full

    def sees(self, xid: int) -> bool:
        """Whether a committed transaction (64-bit id) is visible in this snapshot."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)


def parse_commits(text: str) -> list[Commit]:
    """Commit records from ``pg_waldump --rmgr=Transaction`` output, in WAL order."""
    out = []
    for line in text.splitlines():
        m = RECORD_RE.search(line)
        if not m:
            continue
        hi, lo = m.group(2).split("/")
        prepared = m.group(3) == "COMMIT_PREPARED"
        xid = int(m.group(4)) if prepared and m.group(4) else int(m.group(1))
        out.append(Commit(lsn=(int(hi, 16) << 32) | int(lo, 16), xid=xid, prepared=prepared))
    return out


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def find_cut(commits: list[Commit], snapshot: Snapshot, lsn: int,
             committed: set[int]) -> tuple[int | None, str]:
    """Given the commit records of a WAL range that starts before ``lsn`` and ends after every
    transaction in ``committed`` (64-bit ids S does not see, known committed) committed, return
    (C, why): the recovery target (exclusive) holding exactly S's transactions, or (None, why not)."""
    seen = {snapshot.full(c.xid) for c in commits}
    lost = sorted(committed - seen)
    if lost:
        return None, (f"the commit record of transaction {lost[0]} is not in the WAL read (it committed before "
                      "the range scanned)")
    before = [c for c in commits if c.lsn < lsn]
    cut = next((c for c in before if not snapshot.sees(snapshot.full(c.xid))), None)
    if cut is None:
        return lsn, "no transaction the snapshot does not see committed before the WAL position"
    late = next((c for c in before if c.lsn > cut.lsn and snapshot.sees(snapshot.full(c.xid))), None)
    if late is not None:
        return None, (f"transaction {snapshot.full(late.xid)} (visible in the snapshot) committed in WAL after "
                      f"transaction {snapshot.full(cut.xid)} (not visible): no WAL position holds exactly the snapshot")
    return cut.lsn, (f"transaction {snapshot.full(cut.xid)} committed at {lsn_text(cut.lsn)}, before the WAL position "
                     "but after the snapshot: replay stops before its commit record")
