"""The recovery target that holds exactly a snapshot (pg_walcut.py): pure decisions on commit records."""

from __future__ import annotations

import pytest

from backupkit.engines.pg_walcut import Commit, Snapshot, find_cut, lsn_text, parse_commits

WALDUMP = """\
rmgr: Transaction len (rec/tot):     34/    34, tx:        727, lsn: 0/01D8A448, prev 0/01D8A408, desc: COMMIT 2026-11-28 05:56:28.993386 UTC
rmgr: Transaction len (rec/tot):     46/    46, tx:        729, lsn: 0/01D8A668, prev 0/01D8A628, desc: COMMIT 2026-11-28 05:56:29.040930 UTC; subxacts: 730
rmgr: Transaction len (rec/tot):     34/    34, tx:        731, lsn: 0/01D8A700, prev 0/01D8A668, desc: ABORT 2026-11-28 05:56:29.1 UTC
rmgr: Transaction len (rec/tot):     90/    90, tx:          0, lsn: 1/00000028, prev 0/01D8A700, desc: COMMIT_PREPARED 733: 2026-11-28 05:56:29.2 UTC
rmgr: Transaction len (rec/tot):     90/    90, tx:        740, lsn: 1/00000090, prev 1/00000028, desc: PREPARE gid t1: 2026-11-28
"""


def test_parse_commits_reads_commits_and_prepared_commits_only():
    assert parse_commits(WALDUMP) == [Commit(0x01D8A448, 727), Commit(0x01D8A668, 729),
                                      Commit((1 << 32) | 0x28, 733, prepared=True)]


def test_snapshot_parse_visibility_and_epochs():
    s = Snapshot.parse("100:110:103,105")
    assert (s.xmin, s.xmax, s.xip) == (100, 110, frozenset({103, 105}))
    assert [x for x in range(98, 112) if s.sees(x)] == [98, 99, 100, 101, 102, 104, 106, 107, 108, 109]
    assert Snapshot.parse("5:5:").xip == frozenset()
    with pytest.raises(ValueError, match="not a txid snapshot"):
        Snapshot.parse("nonsense")
    e = Snapshot.parse(f"{(3 << 32) + 10}:{(3 << 32) + 20}:")
    assert e.full(15) == (3 << 32) + 15
    assert e.full(0xFFFFFFF0) == (2 << 32) + 0xFFFFFFF0  # just before the epoch turned
    late = Snapshot.parse(f"{(3 << 32) + 0xFFFFFFF0}:{(3 << 32) + 0xFFFFFFFA}:")
    assert late.full(5) == (4 << 32) + 5  # just after it turns
    assert lsn_text((1 << 32) | 0x1D8A448) == "1/1D8A448"


S = Snapshot.parse("100:110:103,105")  # 103 and 105 run at the snapshot


def test_no_invisible_commit_before_the_position_keeps_it():
    commits = [Commit(10, 101), Commit(20, 104), Commit(60, 103)]
    assert find_cut(commits, S, 50, {103})[0] == 50


def test_an_invisible_commit_before_the_position_moves_the_target_to_it():
    commits = [Commit(10, 101), Commit(20, 104), Commit(30, 103), Commit(40, 105), Commit(60, 111)]
    cut, why = find_cut(commits, S, 50, {103, 105})
    assert cut == 30
    assert "transaction 103" in why


def test_a_visible_commit_after_an_invisible_one_has_no_exact_target():
    commits = [Commit(10, 101), Commit(30, 103), Commit(40, 104)]
    cut, why = find_cut(commits, S, 50, {103})
    assert cut is None
    assert "104" in why and "103" in why


def test_a_visible_commit_after_the_position_does_not_matter_and_equal_lsn_is_the_cut():
    commits = [Commit(30, 103), Commit(50, 104)]
    assert find_cut(commits, S, 50, {103})[0] == 30
    assert find_cut([Commit(50, 103)], S, 50, {103})[0] == 50  # at L: not replayed anyway


def test_a_committed_transaction_missing_from_the_wal_read_is_unresolved():
    cut, why = find_cut([Commit(10, 101)], S, 50, {103})
    assert cut is None
    assert "103" in why and "not in the WAL read" in why


def test_xids_past_xmax_are_invisible():
    assert find_cut([Commit(10, 101), Commit(20, 112)], S, 50, {112})[0] == 20


def test_xmin_running_is_invisible_and_epoch_boundaries_are_exact():
    s = Snapshot.parse("100:110:100,105")  # xmin is the oldest transaction still running
    assert not s.sees(100) and s.sees(99) and s.sees(101) and not s.sees(110)
    half = 1 << 31
    ref = Snapshot.parse(f"{(5 << 32) + 7}:{(5 << 32) + 7}:")
    for x in (0, 1, 7, 0x7FFFFFFF, 0x80000000, 0x80000006, 0x80000007, 0x80000008, 0xFFFFFFFE, 0xFFFFFFFF, 0x12345679):
        full = ref.full(x)
        assert full & 0xFFFFFFFF == x
        assert -half <= full - ref.xmax <= half, hex(x)
    assert ref.full(0x80000007) == (5 << 32) + 7 + half  # exactly half a span ahead: kept ahead
    assert ref.full(0x80000008) == (4 << 32) + 0x80000008  # just beyond: the previous epoch
    low = Snapshot.parse(f"{(5 << 32) + 0xFFFFFFF0}:{(5 << 32) + 0xFFFFFFF0}:")
    assert low.full(0x7FFFFFF0) == (6 << 32) + 0x7FFFFFF0 - (1 << 32)  # exactly half behind: kept behind
    assert low.full(0x7FFFFFEF) == (6 << 32) + 0x7FFFFFEF  # just beyond: the next epoch


def test_records_are_values_and_high_lsn_words_are_hex():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        Commit(1, 2).lsn = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        S.xmin = 1
    line = ("rmgr: Transaction len (rec/tot):     34/    34, tx:        727, lsn: 1F/01D8A448, prev 1F/01D8A408, "
            "desc: COMMIT 2026-11-28 05:56:28.993386 UTC")
    assert parse_commits(line) == [Commit((0x1F << 32) | 0x01D8A448, 727)]
