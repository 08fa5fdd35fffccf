"""Settle the transactions in flight around a backup's snapshot by reading the WAL.

Called by the snapshot (pgbackrest_snapshot.py) while it is still open, when transactions were in
progress or committed-but-invisible around it: note which of them have written their commit
record (``written``), switch WAL, wait until the switched segment is archived, fetch the segments
from a few before the snapshot's position to the switch with ``pgbackrest archive-get``, list
their commit records with ``pg_waldump --rmgr=Transaction`` and let pg_walcut.find_cut name the
recovery target that holds exactly the snapshot (every written one must be in the WAL read). Anything that goes wrong returns (None, why): the snapshot is then
retried, or recorded as approximate; it never fails the backup.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ..errors import BackupkitError
from .kit import child_env, tail_text
from .pg_cluster import find_tool as pg_find_tool
from .pg_walcut import Commit, Snapshot, find_cut, lsn_text, parse_commits
from .pgbackrest_cluster import chown_tree
from .pgbackrest_plan import lsn_int, parse_segment, segment_name, segment_of_lsn, segments_between
from .pgbackrest_repo import PgBackrest, wait_archived

logger = logging.getLogger(__name__)

SCAN_BACK = 4  # segments read before the one holding the snapshot's position


@dataclass
class WalScan:
    tool: PgBackrest
    check: psycopg.Connection
    archive_dir: Path
    seg_size: int
    wal_start: str
    major: int
    bin_dir: str | None
    what: str

    def __call__(self, snap: str, lsn: str, ids: list[int]) -> tuple[str | None, str]:
        try:
            return self.resolve(snap, lsn, ids)
        except (BackupkitError, OSError, ValueError, subprocess.SubprocessError, psycopg.Error) as e:
            return None, " ".join(str(e).split())

    def written(self, ids: list[int]) -> tuple[set[int], str]:
        """The ids whose commit record is already in WAL: committed in pg_xact, or still in progress while
        waiting for a synchronous standby (commit record flushed, not yet visible). Any other id in progress
        has not written one (a commit is in pg_xact within one WAL flush) and, if it commits, commits after
        the WAL read. Without pg_read_all_stats every id in progress counts as written (conservative)."""
        (seeing,) = self.check.execute(
            "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') "
            "OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)").fetchone()
        rows = self.check.execute(
            "SELECT x, txid_status(x), EXISTS (SELECT 1 FROM pg_stat_activity a "
            "WHERE a.backend_xid::text::bigint = x %% 4294967296 AND a.wait_event = 'SyncRep') "
            "FROM unnest(%s::bigint[]) AS x", [ids]).fetchall()
        out = {int(x) for x, status, syncrep in rows
               if status == "committed" or (status == "in progress" and (syncrep or not seeing))}
        return out, "" if seeing else " (the backup role cannot see other sessions: grant it pg_read_all_stats)"

    def resolve(self, snap: str, lsn: str, ids: list[int]) -> tuple[str | None, str]:
        committed, note = self.written(ids)
        end_lsn, end_seg = self.check.execute(
            "SELECT l::text, pg_walfile_name(l) FROM pg_switch_wal() AS l").fetchone()
        wait_archived(self.archive_dir, end_seg, self.what)
        tli, first, _ = scan_window(self.wal_start, lsn, self.seg_size)
        segments = segments_between(segment_name(tli, first, self.seg_size), end_seg, self.seg_size)
        waldump = pg_find_tool("pg_waldump", self.major, bin_dir=self.bin_dir)
        commits, failed = read_commits(self.tool, waldump, segments, tli, lsn_text(first * self.seg_size), end_lsn)
        if failed:
            return None, failed
        cut, why = find_cut(commits, Snapshot.parse(snap), lsn_int(lsn), committed)
        logger.info("%s: WAL %s..%s read for the snapshot at %s: %s", self.what, segments[0], segments[-1], lsn, why)
        if cut is None:
            return None, why + note
        return (lsn if cut == lsn_int(lsn) else lsn_text(cut)), why


def scan_window(first_available: str, lsn: str, seg_size: int) -> tuple[int, int, int]:
    """Where to read commit records around ``lsn``: (timeline, first segment number, number of the segment
    holding ``lsn``); SCAN_BACK segments before ``lsn``'s, never before ``first_available`` (whose
    timeline it is)."""
    tli, start_no = parse_segment(first_available, seg_size)
    _, at = parse_segment(segment_of_lsn(tli, lsn, seg_size), seg_size)
    return tli, max(start_no, at - SCAN_BACK), at


def read_commits(tool: PgBackrest, waldump: Path, segments: list[str], tli: int, start: str, end: str
                 ) -> tuple[list[Commit], str]:
    """The commit records from ``start`` to ``end`` (LSNs) in ``segments``, fetched with ``tool``'s
    ``archive-get`` into a private temporary directory and listed by ``pg_waldump --rmgr=Transaction``;
    ([], why) when pg_waldump fails."""
    with tempfile.TemporaryDirectory(prefix="bk-walscan-") as d:
        chown_tree(Path(d), tool.run_as)
        for seg in segments:
            tool.run("archive-get", params=(seg, f"{d}/{seg}"), timeout=300)
        proc = subprocess.run(
            [str(waldump), "-p", d, "--rmgr=Transaction", "-t", str(tli), "-s", start, "-e", end],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=child_env(), check=False)
    if proc.returncode != 0:
        return [], f"pg_waldump failed (exit {proc.returncode}): {tail_text(proc.stderr) or 'no message'}"
    return parse_commits(proc.stdout), ""
