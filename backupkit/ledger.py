"""The evidence ledger: an append-only, hash-chained, signed SQLite table.

Each record's ``hash = sha256(prev_hash_hex ‖ canonical(record))`` where
``record = {seq, time, kind, policy, subject, body}``; the signature is Ed25519
over the ASCII hex hash. Triggers refuse UPDATE and DELETE, and ``verify``
walks the whole chain, so an edit made by any other means is named by seq.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import canonical
from .errors import ConfigError, VerificationFailed
from .keys import Signer, key_id, public_raw, verify_signature

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
KINDS = {"backup", "copy", "verify", "drill", "restore", "prune", "review", "annotation", "abandoned", "hold", "corrective_action"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    policy    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_policy_kind ON records(policy, kind, seq);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the backupkit ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'the backupkit ledger is append-only'); END;
"""
TRIGGERS = {"records_no_update", "records_no_delete"}


@dataclass(frozen=True)
class Record:
    seq: int
    time: str
    kind: str
    policy: str
    subject: str
    body: dict
    prev_hash: str
    hash: str
    key_id: str
    signature: str

    def content(self) -> dict:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, "policy": self.policy,
                "subject": self.subject, "body": self.body}

    def as_dict(self) -> dict:
        d = self.content()
        d.update(prev_hash=self.prev_hash, hash=self.hash, key_id=self.key_id, signature=self.signature)
        return d

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.time)


def record_hash(prev_hash: str, content: dict) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(content)).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def clock_step(previous_time: str, time: str) -> float | None:
    """Seconds the clock went back between two consecutive records, or None when it did not."""
    back = (datetime.fromisoformat(previous_time) - datetime.fromisoformat(time)).total_seconds()
    return round(back, 6) if back > 0 else None


def check_chain(records: Iterable[Record], public: Ed25519PublicKey, *, first_prev: str | None = GENESIS,
                what: str = "ledger") -> int:
    """Walk ``records`` in seq order; raise VerificationFailed at the first broken link.

    ``first_prev`` is the prev_hash the first record must carry (None: accept
    any, for a chain segment). Returns the number of records checked.
    """
    kid = key_id(public_raw(public))
    prev = first_prev
    expected_seq = None
    n = 0
    for r in records:
        where = f"{what}: record seq {r.seq} ({r.kind} {r.subject})"
        if expected_seq is not None and r.seq != expected_seq:
            raise VerificationFailed(f"{what}: record seq {expected_seq} is missing (next is {r.seq}); records were deleted")
        if prev is not None and r.prev_hash != prev:
            raise VerificationFailed(f"{where}: prev_hash does not match the previous record; the chain was altered")
        if record_hash(r.prev_hash, r.content()) != r.hash:
            raise VerificationFailed(f"{where}: content does not match its hash; the record was edited")
        if r.key_id != kid:
            raise VerificationFailed(f"{where}: signed by key {r.key_id}, expected {kid}")
        verify_signature(public, r.signature, r.hash.encode("ascii"), where)
        prev = r.hash
        expected_seq = r.seq + 1
        n += 1
    return n


class Ledger:
    def __init__(self, path: Path, *, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        try:
            if readonly:  # status, list, verify of the chain: no write access needed to the ledger or its directory
                if not path.exists():  # nothing recorded yet: an empty ledger
                    self.db = sqlite3.connect(":memory:", isolation_level=None)
                    self.db.executescript(SCHEMA)
                    return
                self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60, isolation_level=None)
                try:
                    self.db.execute("SELECT 1 FROM sqlite_master").fetchone()
                except sqlite3.OperationalError:  # WAL without a writable -shm: read the checkpointed file as is
                    self.db.close()
                    self.db = sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            # Created once; never re-created on open, so dropped triggers stay visible to verify().
            if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name='records'").fetchone():
                self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            hint = ("; backupkit needs write access to it and its directory (run as the backupkit user)"
                    if "readonly" in str(e) or "unable to open" in str(e) else "; check 'ledger:' in the config")
            raise ConfigError(f"ledger {path}: cannot open ({e}){hint}") from None
        except PermissionError as e:
            raise ConfigError(f"ledger {path}: permission denied ({e.filename}); run as the backupkit user") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def append(self, signer: Signer, *, kind: str, policy: str, subject: str, body: dict[str, Any]) -> Record:
        """Append one signed record, atomically with respect to other writers."""
        if self.readonly:
            raise ValueError("this ledger was opened read-only")
        if kind not in KINDS:
            raise ValueError(f"unknown ledger record kind {kind!r}")
        body = json.loads(canonical(body))  # normalise (tuples, etc.) so what is stored is what is hashed
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT seq, hash, time FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            now = now_iso()
            step = clock_step(row[2], now) if row else None
            if step is not None:  # order comes from seq, never from the clock: record the step, do not refuse it
                body = {**body, "clock_step": {"previous_seq": row[0], "previous_time": row[2], "seconds_back": step}}
                logger.warning("ledger %s: the clock is %.0fs behind the previous record (seq %d); "
                               "recorded as a clock-step warning", self.path, step, row[0])
            content = {"seq": seq, "time": now, "kind": kind, "policy": policy, "subject": subject, "body": body}
            h = record_hash(prev, content)
            rec = Record(prev_hash=prev, hash=h, key_id=signer.id, signature=signer.sign(h.encode("ascii")), **content)
            self.db.execute(
                "INSERT INTO records(seq,time,kind,policy,subject,body,prev_hash,hash,key_id,signature) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (rec.seq, rec.time, rec.kind, rec.policy, rec.subject, canonical(body).decode(), rec.prev_hash,
                 rec.hash, rec.key_id, rec.signature),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return rec

    def records(self, *, kind: str | None = None, policy: str | None = None, since: str | None = None,
                until: str | None = None) -> Iterator[Record]:
        q = "SELECT seq,time,kind,policy,subject,body,prev_hash,hash,key_id,signature FROM records WHERE 1=1"
        args: list[Any] = []
        for col, op, val in (("kind", "=", kind), ("policy", "=", policy), ("time", ">=", since), ("time", "<", until)):
            if val is not None:
                q += f" AND {col} {op} ?"
                args.append(val)
        for row in self.db.execute(q + " ORDER BY seq", args):
            try:
                body = json.loads(row[5])
            except ValueError:
                body = {"_unparseable": row[5]}
            yield Record(row[0], row[1], row[2], row[3], row[4], body, *row[6:])

    def head(self) -> tuple[int, str, str | None]:
        """(seq, hash, time) of the newest record; (0, GENESIS, None) for an empty ledger."""
        row = self.db.execute("SELECT seq, hash, time FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1], row[2]) if row else (0, GENESIS, None)

    def hash_at(self, seq: int) -> str | None:
        row = self.db.execute("SELECT hash FROM records WHERE seq=?", (seq,)).fetchone()
        return row[0] if row else None

    def verify(self, public: Ed25519PublicKey) -> int:
        """Walk the whole chain; raise VerificationFailed naming the first bad record."""
        n = check_chain(self.records(), public, what=f"ledger {self.path}")
        present = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        if not TRIGGERS <= present:
            raise VerificationFailed(
                f"ledger {self.path}: append-only triggers {sorted(TRIGGERS - present)} were dropped outside backupkit"
            )
        return n

    def snapshot(self, dest: Path) -> Path:
        """Write a consistent copy of the ledger to ``dest`` (for offsite copies and bundles)."""
        dest.unlink(missing_ok=True)
        out = sqlite3.connect(dest)
        try:
            self.db.backup(out)
        finally:
            out.close()
        return dest


def snapshot_head(path: Path) -> tuple[int, str, str | None]:
    """(seq, hash, time) of the newest record of a ledger file, read without modifying it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT seq, hash, time FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        db.close()
    return (row[0], row[1], row[2]) if row else (0, GENESIS, None)
