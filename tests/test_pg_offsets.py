"""PostgreSQL data block offsets: a backup streamed through a pipe records where each data block of
its archive starts, and a restore writes those offsets into its copy of the archive, as pg_dump
itself does when it writes to a file. pg_restore then seeks to each block and, with ``--jobs``,
starts with the largest tables instead of the first ones in the archive.

Against the real server and real pg_dump/pg_restore: the recorded offsets are those pg_dump writes
into a file archive of the same database; the patched archive equals that file byte for byte apart
from its creation time; pg_restore -j2 then launches the largest table first; and anything that
does not fit (a shifted offset, a missing or extra block, a truncated archive) changes nothing
and the restore goes on without offsets, saying why.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from backupkit.artifact import DirectorySink
from backupkit.engines.pg_archive import OFFSET_NO_DATA, OFFSET_NOT_SET, OFFSET_SET, read_toc, set_data_offsets
from backupkit.engines.pg_fingerprint import DUMP_PGOPTIONS
from backupkit.engines.postgres import PostgresEngine
from backupkit.verdict import compare_fingerprints

from fixtures.postgres import make_policy, open_source, pg_dsn, pg_exec

pytestmark = pytest.mark.postgres

SCHEMA = [
    "CREATE TABLE a_small (id int PRIMARY KEY, t text)",  # first in the archive, smallest
    "INSERT INTO a_small SELECT g, 'x' FROM generate_series(1, 50) g",
    "CREATE TABLE m_empty (id int)",
    "CREATE TABLE z_big (id int PRIMARY KEY, t text)",  # last in the archive, largest
    "INSERT INTO z_big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 40000) g",
    "CREATE TABLE 表 (v text)",
    "INSERT INTO 表 SELECT '值' || g FROM generate_series(1, 500) g",
    "SELECT lo_from_bytea(0, decode(repeat('00', 3000), 'hex'))",  # a large-object block too
    "CREATE SEQUENCE s START 7",
]


def backup(db, age_keys, dump_dir, mode: str):
    engine = PostgresEngine()
    policy = make_policy(db, drill={"fingerprint": mode})
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    return engine, policy, sink, engine.dump(policy=policy, sink=sink)


def file_archive(db: str, path: Path) -> bytes:
    """What pg_dump writes when it can seek: the TOC rewritten with every data offset at the end."""
    subprocess.run(["pg_dump", "--format=custom", "--compress=0", "--file", str(path), "--dbname", pg_dsn(db)],
                   check=True, env={"PATH": "/usr/bin:/bin", "PGOPTIONS": DUMP_PGOPTIONS})
    return path.read_bytes()


def without_creation_time(archive: bytes) -> bytes:
    """The archive with its header's creation time (seven 5-byte integers) blanked."""
    start = 12 if archive[6] >= 15 else 16  # magic, version, sizes, format, then the compression field
    return archive[:start] + b"\0" * 35 + archive[start + 35:]


@pytest.mark.parametrize("mode", ["rows", "full"])
def test_recorded_offsets_are_those_pg_dump_writes_to_a_file(pg_database, age_keys, dump_dir, tmp_path, mode):
    db = pg_database("bk_offsets")
    pg_exec(db, *SCHEMA)
    engine, policy, sink, result = backup(db, age_keys, dump_dir, mode)
    recorded = {dump_id: at for dump_id, at in result.details["data_offsets"]}

    seekable = file_archive(db, tmp_path / "file.dump")
    _, entries = read_toc(tmp_path / "file.dump")
    assert {e.dump_id: e.data_offset for e in entries if e.data_state == OFFSET_SET} == recorded
    assert len(recorded) == 5  # four tables and the large objects
    assert {e.desc for e in entries if e.dump_id in recorded} == {"TABLE DATA", "BLOBS"}

    piped = open_source(sink, age_keys).to_file("data", tmp_path / "piped.dump")
    header, entries = read_toc(piped)
    assert {e.dump_id for e in entries if e.data_state == OFFSET_NOT_SET} == set(recorded)
    assert all(e.data_state in (OFFSET_NOT_SET, OFFSET_NO_DATA) for e in entries)
    assert set_data_offsets(piped, recorded) == 5
    assert without_creation_time(piped.read_bytes()) == without_creation_time(seekable)


def test_set_data_offsets_refuses_what_it_cannot_vouch_for_and_changes_nothing(pg_database, age_keys, dump_dir,
                                                                            tmp_path):
    db = pg_database("bk_offsets")
    pg_exec(db, *SCHEMA)
    _, _, sink, result = backup(db, age_keys, dump_dir, "rows")
    recorded = {dump_id: at for dump_id, at in result.details["data_offsets"]}
    piped = open_source(sink, age_keys).to_file("data", tmp_path / "piped.dump")
    before = hashlib.sha256(piped.read_bytes()).hexdigest()
    first, *_ = sorted(recorded)
    size = piped.stat().st_size
    cases = [
        ({**recorded, first: recorded[first] + 1}, f"no header of data block {first} at its recorded offset"),
        ({**recorded, first: recorded[max(recorded)]}, f"no header of data block {first}"),  # another block's header
        ({**recorded, first: size}, f"the recorded offset of data block {first} is outside the archive"),
        ({**recorded, first: 10}, "outside the archive"),  # inside the TOC
        ({k: v for k, v in recorded.items() if k != first}, "do not match the archive's table of contents"),
        ({**recorded, 99999: recorded[first]}, "do not match the archive's table of contents"),
    ]
    for offsets, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            set_data_offsets(piped, offsets)
        assert hashlib.sha256(piped.read_bytes()).hexdigest() == before, message

    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(piped.read_bytes()[:200])
    with pytest.raises(ValueError, match="ends inside its table of contents"):
        set_data_offsets(truncated, recorded)
    seekable = tmp_path / "file.dump"
    file_archive(db, seekable)
    assert set_data_offsets(seekable, {}) == 0  # pg_dump wrote it to a file: nothing to set
    with pytest.raises(ValueError, match="do not match"):
        set_data_offsets(seekable, recorded)


def launch_order(archive: Path, db: str) -> list[str]:
    """The TABLE DATA items in the order pg_restore -j2 launches them."""
    proc = subprocess.run(["pg_restore", "--verbose", "--jobs=2", "--dbname", pg_dsn(db), str(archive)],
                          capture_output=True, text=True, check=True)
    return re.findall(r"launching item \d+ TABLE DATA (\S+)", proc.stderr)


def test_pg_restore_starts_with_the_largest_table_once_the_offsets_are_set(pg_database, age_keys, dump_dir,
                                                                        tmp_path):
    db = pg_database("bk_offsets")
    pg_exec(db, *SCHEMA)
    _, _, sink, result = backup(db, age_keys, dump_dir, "rows")
    piped = open_source(sink, age_keys).to_file("data", tmp_path / "piped.dump")
    assert launch_order(piped, pg_database("bk_offsets_in_order"))[0] == "a_small"  # archive order
    set_data_offsets(piped, {dump_id: at for dump_id, at in result.details["data_offsets"]})
    assert launch_order(piped, pg_database("bk_offsets_by_size"))[0] == "z_big"


def test_drill_restores_with_the_offsets_and_without_them_when_they_do_not_fit(pg_database, age_keys, dump_dir,
                                                                             tmp_path):
    db = pg_database("bk_offsets")
    pg_exec(db, *SCHEMA)
    engine, policy, sink, result = backup(db, age_keys, dump_dir, "full")
    good = result.details
    shifted = {**good, "data_offsets": [[dump_id, at + 1] for dump_id, at in good["data_offsets"]]}
    for details, said in [(good, "set for 5 data blocks from the manifest"),
                          (shifted, "not set (no header of data block"),
                          ({k: v for k, v in good.items() if k != "data_offsets"}, "none recorded at backup")]:
        with engine.scratch(policy=policy, workdir=tmp_path / "w") as scratch:
            scratch.manifest = {"fingerprints": result.fingerprints, "details": details}
            engine.restore(policy=policy, scratch=scratch, source=open_source(sink, age_keys))
            assert scratch.info["archive_offsets"].startswith(said)
            checks, actual = engine.check_restored(scratch=scratch, mode="full", like=result.fingerprints)
            assert [c.status for c in checks] == ["passed"]
            assert [c for c in compare_fingerprints(result.fingerprints, actual) if c["status"] != "passed"] == []
            assert actual["sequence public.s"]["last_value"] == 7
