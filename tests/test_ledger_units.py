"""ledger: the hash chain, signatures, clock steps and the SQLite file, on real files with a real Ed25519 key."""

import dataclasses
import os
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

import backupkit.ledger as ledger_mod
from backupkit.canonical import canonical
from backupkit.errors import ConfigError, VerificationFailed
from backupkit.keys import generate_signing_key, load_signer, verify_signature
from backupkit.ledger import GENESIS, KINDS, Ledger, Record, check_chain, clock_step, record_hash, snapshot_head

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)


def iso(t):
    return t.isoformat(timespec="microseconds")


@pytest.fixture
def clock(monkeypatch):
    """Times the next appends are stamped with; one minute apart from T0 unless a test pushes its own."""
    times: list[datetime] = []
    state = {"next": T0}

    def now_iso():
        if times:
            return iso(times.pop(0))
        t, state["next"] = state["next"], state["next"] + timedelta(minutes=1)
        return iso(t)

    monkeypatch.setattr(ledger_mod, "now_iso", now_iso)
    return times


@pytest.fixture
def ledger(tmp_path, clock):
    with Ledger(tmp_path / "ledger.db") as lg:
        yield lg


def fill(ledger, signer, n, kind="backup", policy="his"):
    return [ledger.append(signer, kind=kind, policy=policy, subject=f"b{i}", body={"i": i}) for i in range(1, n + 1)]


# --- pure pieces ----------------------------------------------------------------------------------------------------

def test_genesis_and_kinds():
    assert GENESIS == "0000000000000000000000000000000000000000000000000000000000000000"
    assert {"backup", "copy", "verify", "drill", "restore", "prune", "hold"} <= KINDS


def test_record_hash_is_sha256_of_prev_and_canonical_content():
    import hashlib

    content = {"seq": 1, "time": "t", "kind": "backup", "policy": "his", "subject": "s", "body": {"b": [1, 2]}}
    assert record_hash(GENESIS, content) == hashlib.sha256(GENESIS.encode() + canonical(content)).hexdigest()
    assert record_hash("a" * 64, content) != record_hash(GENESIS, content)


@pytest.mark.parametrize("previous,time,back", [
    (T0, T0, None),
    (T0, T0 + timedelta(seconds=1), None),
    (T0, T0 - timedelta(microseconds=1), 1e-06),
    (T0, T0 - timedelta(seconds=0.5), 0.5),
    (T0, T0 - timedelta(seconds=1), 1.0),
    (T0, T0 - timedelta(seconds=3.5), 3.5),
    (T0, T0 - timedelta(days=3, microseconds=250), 259200.00025),
    (T0, (T0 - timedelta(hours=1)).astimezone(timezone(timedelta(hours=2))), 3600.0),
])
def test_clock_step_exact(previous, time, back):
    assert clock_step(iso(previous), iso(time)) == back


def test_record_content_as_dict_when_and_frozen():
    r = Record(3, "2026-11-01T02:00:00.000000+00:00", "copy", "his", "s", {"a": 1}, "p", "h", "k", "sig")
    assert r.content() == {"seq": 3, "time": "2026-11-01T02:00:00.000000+00:00", "kind": "copy", "policy": "his",
                           "subject": "s", "body": {"a": 1}}
    assert r.as_dict() == {**r.content(), "prev_hash": "p", "hash": "h", "key_id": "k", "signature": "sig"}
    assert r.when == T0
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.seq = 4  # type: ignore[misc]


def test_now_iso_is_utc_with_microseconds():
    before = datetime.now(timezone.utc)
    t = ledger_mod.now_iso()
    assert len(t) == len("2026-11-01T02:00:00.000000+00:00") and t.endswith("+00:00")
    assert before <= datetime.fromisoformat(t) <= datetime.now(timezone.utc)


# --- appending --------------------------------------------------------------------------------------------------------

def test_append_chains_and_signs(ledger, signer):
    r1, r2 = fill(ledger, signer, 2)
    assert (r1.seq, r1.prev_hash, r1.time, r1.key_id) == (1, GENESIS, iso(T0), signer.id)
    assert (r2.seq, r2.prev_hash, r2.time) == (2, r1.hash, iso(T0 + timedelta(minutes=1)))
    for r in (r1, r2):
        assert r.hash == record_hash(r.prev_hash, r.content())
        verify_signature(signer.public, r.signature, r.hash.encode("ascii"), "x")
    assert list(ledger.records()) == [r1, r2]


def test_append_stores_the_normalised_body(ledger, signer):
    r = ledger.append(signer, kind="copy", policy="his", subject="s", body={"t": ("a", 1), "n": None})
    assert r.body == {"t": ["a", 1], "n": None}
    assert list(ledger.records()) == [r]


def test_append_refuses_an_unknown_kind(ledger, signer):
    with pytest.raises(ValueError) as e:
        ledger.append(signer, kind="backups", policy="his", subject="s", body={})
    assert str(e.value) == "unknown ledger record kind 'backups'"
    assert ledger.head() == (0, GENESIS, None)


def test_append_records_a_clock_step_back(ledger, signer, clock):
    clock += [T0, T0 - timedelta(seconds=3.5), T0 - timedelta(seconds=3.5), T0]
    r1, r2, r3, r4 = fill(ledger, signer, 4)
    assert r1.body == {"i": 1}
    assert r2.body == {"i": 2, "clock_step": {"previous_seq": 1, "previous_time": iso(T0), "seconds_back": 3.5}}
    assert r3.body == {"i": 3} and r4.body == {"i": 4}  # same time, then forward: no step
    assert list(ledger.records()) == [r1, r2, r3, r4]
    assert ledger.verify(signer.public) == 4


def test_append_rolls_back_when_signing_fails(ledger, signer):
    first = fill(ledger, signer, 1)[0]

    class Broken:
        id = signer.id

        def sign(self, data):
            raise RuntimeError("hsm gone")

    with pytest.raises(RuntimeError):
        ledger.append(Broken(), kind="backup", policy="his", subject="x", body={})
    assert ledger.head() == (1, first.hash, first.time)
    assert ledger.append(signer, kind="backup", policy="his", subject="y", body={}).seq == 2


# --- reading -------------------------------------------------------------------------------------------------------

def test_records_filters(ledger, signer):
    a = ledger.append(signer, kind="backup", policy="his", subject="a", body={})  # T0
    b = ledger.append(signer, kind="copy", policy="his", subject="b", body={})  # T0+1m
    c = ledger.append(signer, kind="backup", policy="lis", subject="c", body={})  # T0+2m
    assert list(ledger.records(kind="backup")) == [a, c]
    assert list(ledger.records(policy="his")) == [a, b]
    assert list(ledger.records(kind="backup", policy="his")) == [a]
    assert list(ledger.records(since=b.time)) == [b, c]
    assert list(ledger.records(until=b.time)) == [a]
    assert list(ledger.records(since=a.time, until=c.time)) == [a, b]
    assert list(ledger.records(kind="drill")) == []


def test_records_keeps_an_unparseable_body(ledger, signer, tmp_path):
    fill(ledger, signer, 1)
    raw = sqlite3.connect(tmp_path / "ledger.db")
    raw.execute("INSERT INTO records VALUES (2,'t','backup','his','s','not json','p','h2','k','sig')")
    raw.commit()
    raw.close()
    assert [r.body for r in ledger.records()] == [{"i": 1}, {"_unparseable": "not json"}]
    last = list(ledger.records())[-1]
    assert (last.prev_hash, last.hash, last.key_id, last.signature) == ("p", "h2", "k", "sig")


def test_head_and_hash_at(ledger, signer):
    assert ledger.head() == (0, GENESIS, None)
    assert ledger.hash_at(0) is None and ledger.hash_at(1) is None
    r1, r2, r3 = fill(ledger, signer, 3)
    assert ledger.head() == (3, r3.hash, r3.time)
    assert [ledger.hash_at(s) for s in (0, 1, 2, 3, 4)] == [None, r1.hash, r2.hash, r3.hash, None]


# --- the file -------------------------------------------------------------------------------------------------------

def test_open_creates_parent_directories_and_reopens(tmp_path, signer, clock):
    path = tmp_path / "a" / "b" / "ledger.db"
    with Ledger(path) as lg:
        fill(lg, signer, 2)
    with Ledger(path) as lg:  # the directory exists now
        assert lg.head()[0] == 2 and lg.verify(signer.public) == 2


def test_updates_and_deletes_are_refused(ledger, signer, tmp_path):
    fill(ledger, signer, 1)
    for sql in ("UPDATE records SET subject='x'", "DELETE FROM records"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ledger.db.execute(sql)
    assert ledger.verify(signer.public) == 1


def _raw(ledger, *sql):
    raw = sqlite3.connect(ledger.path)
    for s in sql:
        raw.execute(s)
    raw.commit()
    raw.close()


def test_verify_names_dropped_triggers_and_they_stay_dropped(ledger, signer, tmp_path):
    fill(ledger, signer, 2)
    _raw(ledger, "DROP TRIGGER records_no_delete")
    with Ledger(ledger.path) as again:  # reopening does not quietly re-create them
        with pytest.raises(VerificationFailed) as e:
            again.verify(signer.public)
    assert str(e.value) == (f"ledger {ledger.path}: append-only triggers ['records_no_delete'] were dropped outside "
                            "backupkit")
    _raw(ledger, "DROP TRIGGER records_no_update")
    with pytest.raises(VerificationFailed) as e:
        ledger.verify(signer.public)
    assert "triggers ['records_no_delete', 'records_no_update'] were dropped" in str(e.value)


def test_verify_names_an_edited_and_a_deleted_record(ledger, signer):
    fill(ledger, signer, 3)
    assert ledger.verify(signer.public) == 3
    _raw(ledger, "DROP TRIGGER records_no_update", "UPDATE records SET body='{\"i\":9}' WHERE seq=2",
         "CREATE TRIGGER records_no_update BEFORE UPDATE ON records BEGIN SELECT RAISE(ABORT, 'x'); END")
    with pytest.raises(VerificationFailed) as e:
        ledger.verify(signer.public)
    assert str(e.value) == (f"ledger {ledger.path}: record seq 2 (backup b2): content does not match its hash; "
                            "the record was edited")
    _raw(ledger, "DROP TRIGGER records_no_delete", "DELETE FROM records WHERE seq=2",
         "CREATE TRIGGER records_no_delete BEFORE DELETE ON records BEGIN SELECT RAISE(ABORT, 'x'); END")
    with pytest.raises(VerificationFailed) as e:
        ledger.verify(signer.public)
    assert str(e.value) == f"ledger {ledger.path}: record seq 2 is missing (next is 3); records were deleted"


def test_snapshot_and_snapshot_head(ledger, signer, tmp_path):
    dest = tmp_path / "snap.db"
    ledger.snapshot(dest)  # dest does not exist yet
    assert snapshot_head(dest) == (0, GENESIS, None)
    recs = fill(ledger, signer, 2)
    assert ledger.snapshot(dest) == dest  # overwrites
    before = dest.read_bytes()
    assert snapshot_head(dest) == (2, recs[1].hash, recs[1].time) == ledger.head()
    assert dest.read_bytes() == before
    with Ledger(dest) as copy:
        assert list(copy.records()) == recs and copy.verify(signer.public) == 2


def test_snapshot_head_does_not_create_a_missing_file(tmp_path):
    with pytest.raises(sqlite3.OperationalError):
        snapshot_head(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()


# --- check_chain ------------------------------------------------------------------------------------------------------

def test_check_chain_counts_exactly(ledger, signer):
    recs = fill(ledger, signer, 3)
    assert check_chain([], signer.public) == 0
    assert check_chain(recs[:1], signer.public) == 1
    assert check_chain(recs, signer.public) == 3
    assert check_chain(recs[1:], signer.public, first_prev=None) == 2
    assert check_chain(recs[2:], signer.public, first_prev=recs[1].hash) == 1


@pytest.mark.parametrize("mangle,message", [
    (lambda r, o: [r[0], r[2]], "seg: record seq 2 is missing (next is 3); records were deleted"),
    (lambda r, o: [r[0], r[1], r[1]], "seg: record seq 3 is missing (next is 2); records were deleted"),
    (lambda r, o: r[1:], "seg: record seq 2 (backup b2): prev_hash does not match the previous record; "
                         "the chain was altered"),
    (lambda r, o: [r[0], dataclasses.replace(r[1], prev_hash=GENESIS), r[2]],
     "seg: record seq 2 (backup b2): prev_hash does not match the previous record; the chain was altered"),
    (lambda r, o: [r[0], dataclasses.replace(r[1], body={"i": 9}), r[2]],
     "seg: record seq 2 (backup b2): content does not match its hash; the record was edited"),
    (lambda r, o: [r[0], r[1], dataclasses.replace(r[2], key_id=o.id)],
     "seg: record seq 3 (backup b3): signed by key {other}, expected {me}"),
    (lambda r, o: [r[0], dataclasses.replace(r[1], signature=o.sign(r[1].hash.encode("ascii"))), r[2]],
     "seg: record seq 2 (backup b2): signature does not verify; it was altered or signed by another key"),
])
def test_check_chain_names_the_first_broken_link(ledger, signer, other, mangle, message):
    recs = fill(ledger, signer, 3)
    with pytest.raises(VerificationFailed) as e:
        check_chain(mangle(recs, other), signer.public, what="seg")
    assert str(e.value) == message.format(other=other.id, me=signer.id)


def test_check_chain_of_another_key(ledger, other, signer):
    recs = fill(ledger, other, 1)
    assert check_chain(recs, other.public) == 1
    with pytest.raises(VerificationFailed, match=f"ledger: record seq 1 \\(backup b1\\): signed by key {other.id}, "
                                                 f"expected {signer.id}"):
        check_chain(recs, signer.public)


# --- read-only opening --------------------------------------------------------------------------------------------

def test_readonly_reads_an_existing_ledger_without_writing(ledger, signer):
    recs = fill(ledger, signer, 2)
    with Ledger(ledger.path, readonly=True) as ro:
        assert ro.readonly is True
        assert list(ro.records()) == recs and ro.head() == ledger.head() and ro.verify(signer.public) == 2
        with pytest.raises(ValueError) as e:
            ro.append(signer, kind="backup", policy="his", subject="x", body={})
        assert str(e.value) == "this ledger was opened read-only"
    assert ledger.head()[0] == 2 and ledger.readonly is False


def test_readonly_on_a_missing_ledger_is_empty_and_creates_nothing(tmp_path, signer):
    path = tmp_path / "none" / "ledger.db"
    with Ledger(path, readonly=True) as ro:
        assert ro.head() == (0, GENESIS, None) and list(ro.records()) == [] and ro.verify(signer.public) == 0
        with pytest.raises(ValueError, match="read-only"):
            ro.append(signer, kind="backup", policy="his", subject="x", body={})
    assert not path.parent.exists()


@pytest.mark.parametrize("readonly", [False, True])
def test_open_refuses_junk_with_the_config_hint(tmp_path, readonly):
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError) as e:
        Ledger(path, readonly=readonly)
    assert str(e.value) == f"ledger {path}: cannot open (file is not a database); check 'ledger:' in the config"


def test_open_names_an_unopenable_path_with_the_access_hint(tmp_path):
    path = tmp_path / "ledger.db"
    path.mkdir()  # a directory where the ledger file should be
    with pytest.raises(ConfigError) as e:
        Ledger(path)
    assert str(e.value) == (f"ledger {path}: cannot open (unable to open database file); backupkit needs write access "
                            "to it and its directory (run as the backupkit user)")


@pytest.mark.parametrize("readonly", [False, True])
def test_a_locked_ledger_is_waited_for_60_s(ledger, signer, readonly):
    fill(ledger, signer, 1)
    with Ledger(ledger.path, readonly=readonly) as lg:
        assert lg.db.execute("PRAGMA busy_timeout").fetchone() == (60000,)
