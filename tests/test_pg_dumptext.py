"""PostgreSQL fingerprint format 4, method ``dump-text``: a table's full fingerprint is the SHA-256 of
its COPY rows exactly as ``pg_dump -Fc -Z0`` wrote them into the backup (docs/format.md).

Everything runs against the real server and real pg_dump archives: the archive walk gives the
definition's value (computed row by row from COPY) at every way the stream can be cut; large
objects whose bytes hold runs of zeros do not end a block early; what the method cannot vouch for
(money, inheritance, a first row too long to check, another framing) is fingerprinted in SQL and
says so; and a drill of a hostile schema passes, then fails on one changed value naming the table.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import psycopg
import pytest

from backupkit.artifact import DirectorySink
from backupkit.engines.pg_archive import (
    COPY_END,
    FIRST_ROW_CHECK,
    WALK_BYTES,
    DataBlocks,
    TableData,
    TocTap,
    frame_row,
    parse_toc,
    sequence_values,
    table_data_ids,
)
from backupkit.engines.pg_fingerprint import ROWS_IMPLIED, DUMP_PGOPTIONS, copy_text_hash, dump_text_keys, table_names
from backupkit.engines.postgres import PostgresEngine, fill_dump_text, pg_dump_pattern, split_tables
from backupkit.keyed import keyed
from backupkit.verdict import compare_fingerprints

from fixtures.postgres import make_policy, open_source, pg_dsn, pg_exec

pytestmark = pytest.mark.postgres

HOSTILE_SQL = [
    "CREATE TYPE ward AS ENUM ('内科', '外科')",
    # a name with a quote, a dot, a newline and Chinese; values with tabs, newlines, backslashes, zero bytes
    """CREATE TABLE "病人 ""表"".x
y" (id int PRIMARY KEY, name text, w ward, photo bytea, at timestamptz, v numeric, f float8, j jsonb)""",
    """INSERT INTO "病人 ""表"".x
y" VALUES (1, E'王\\t小明\\n第二行\\\\', '内科', '\\x0000000000000000ff'::bytea, '2024-03-01 08:30+08', 1.50, -0.0,
           '{"a": 1.0}'), (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL), (3, '', '外科', '\\x'::bytea, 'infinity',
           'NaN', 'NaN', '[]')""",
    "CREATE TABLE empty_one (id int)",
    "CREATE TABLE no_key (v text)",
    "INSERT INTO no_key SELECT 'row ' || (g % 7) FROM generate_series(1, 3000) g",
    # money follows lc_monetary, which pg_dump does not pin: fingerprinted in SQL
    "CREATE TABLE bills (id int PRIMARY KEY, amount money)",
    "INSERT INTO bills VALUES (1, 12.5), (2, NULL)",
    # an inheritance tree: its restored column order may differ, so SQL
    "CREATE TABLE base_log (id int, msg text)",
    "CREATE TABLE child_log (extra text) INHERITS (base_log)",
    "INSERT INTO base_log VALUES (1, 'parent')",
    "INSERT INTO child_log VALUES (2, 'child', 'x')",
    # large objects whose bytes hold long runs of zeros (a block end marker is five zero bytes)
    "SELECT lo_from_bytea(0, decode(repeat('00', 70000) || 'ff' || repeat('00', 9), 'hex'))",
    "SELECT lo_from_bytea(0, '\\x00000000000001'::bytea)",
    "CREATE TABLE after_blobs (id int PRIMARY KEY, t text)",
    "INSERT INTO after_blobs SELECT g, repeat('x', g % 50) FROM generate_series(1, 500) g",
]


def pg_dump_archive(db: str, path: Path, *extra: str) -> bytes:
    env = {"PATH": "/usr/bin:/bin", "PGOPTIONS": DUMP_PGOPTIONS}
    subprocess.run(["pg_dump", "--format=custom", "--compress=0", *extra, "--file", str(path), "--dbname", pg_dsn(db)],
                   check=True, env=env)
    return path.read_bytes()


def walk(archive: bytes, cuts) -> TocTap:
    """Feed the archive through a TocTap in pieces of the given sizes (cycled)."""
    class Reader:
        def __init__(self):
            self.pos, self.sizes = 0, iter(cuts)

        def read(self, size=-1):
            n = next(self.sizes)
            out = archive[self.pos:self.pos + n]
            self.pos += len(out)
            return out

    tap = TocTap(Reader(), hash_data=True)
    while tap.read():
        pass
    return tap


def cycle(sizes):
    while True:
        yield from sizes


def test_archive_walk_gives_the_definition_at_every_cut(pg_database, tmp_path):
    db = pg_database("bk_dtext")
    pg_exec(db, *HOSTILE_SQL, "INSERT INTO no_key SELECT repeat('长', 100) FROM generate_series(1, 6000)")
    archive = pg_dump_archive(db, tmp_path / "a.dump")
    assert WALK_BYTES < len(archive) < 2 * WALK_BYTES  # one whole walk piece, then a shorter last one
    with psycopg.connect(pg_dsn(db), autocommit=True) as conn:
        names = {(s, t): k for k, (s, t) in table_names(conn, [
            'public."病人 ""表"".x\ny"', "public.empty_one", "public.no_key", "public.bills", "public.base_log",
            "public.child_log", "public.after_blobs"]).items()}
        expected = {st: copy_text_hash(conn, *st) for st in names}
    assert len(expected) == 7 and expected[("public", "empty_one")] == hashlib.sha256(b"").hexdigest()

    whole, error = walk(archive, cycle([1 << 20])).table_hashes()
    assert error is None
    assert {st: d.sha256 for st, d in whole.items()} == expected
    assert all(d.one_row_chunks for d in whole.values())
    toc_end = parse_toc(archive)[0]["toc_bytes"]
    rng = random.Random(7)
    for sizes in [[1], [2], [3], [5], [7], [9], [10], [11], [14], [15], [16], [19], [20], [21], [4093],
                  *([rng.randint(1, 300) for _ in range(50)] for _ in range(20)),
                  [toc_end - 1, 1, 1, 1, 1 << 20], [toc_end, 13, 1 << 20], [toc_end + 3, 1 << 20]]:
        tables, error = walk(archive, cycle(sizes)).table_hashes()
        assert error is None, sizes
        assert {st: d.sha256 for st, d in tables.items()} == expected, sizes
        assert all(d.one_row_chunks for d in tables.values()), sizes


def test_archive_walk_errors_and_framing(pg_database, tmp_path):
    """A truncated archive, an unknown block type and a chunk holding two rows are reported, not hashed
    as if complete; a block without pg_dump's final ``\\.`` chunk hashes the same (the rows alone)."""
    db = pg_database("bk_dtext")
    pg_exec(db, "CREATE TABLE t (v text)", "INSERT INTO t VALUES ('a'), ('b')")
    archive = pg_dump_archive(db, tmp_path / "a.dump")
    toc_end = parse_toc(archive)[0]["toc_bytes"]
    data = archive[toc_end:]
    rows = [b"a\n", b"b\n"]
    body = b"".join(frame_row(r) + r for r in rows)
    assert data[6:] == body + frame_row(COPY_END) + COPY_END + b"\0" * 5  # what pg_dump 15 writes
    want = hashlib.sha256(body).hexdigest()

    def blocks(payload: bytes) -> DataBlocks:
        b = DataBlocks(4)
        b.feed(payload)
        b.finish()
        return b

    head = data[:6]
    assert blocks(data).tables[head_id(head)] == TableData(head_id(head), want, True)
    assert blocks(head + body + b"\0" * 5).tables[head_id(head)].sha256 == want  # no \. chunk
    two_in_one = frame_row(b"a\nb\n") + b"a\nb\n"
    assert blocks(head + two_in_one + b"\0" * 5).tables[head_id(head)].one_row_chunks is False
    assert blocks(data[:-3]).error == "the archive ended inside a data block"
    assert "unknown data block type 9" in blocks(b"\x09" + data[1:]).error
    tap = walk(archive[:-3], cycle([64]))
    assert tap.table_hashes() == ({}, "the archive ended inside a data block")


def head_id(head: bytes) -> int:
    return int.from_bytes(head[2:6], "little")


def test_fill_names_what_the_archive_could_not_give():
    fps = {"public.a": {"kind": "table", "rows": 1, "hash": None, "method": "dump-text"},
           "public.b": {"kind": "table", "rows": 1, "hash": None, "method": "dump-text"},
           "public.c": {"kind": "table", "rows": 1, "hash": None, "method": "dump-text"},
           "public.d": {"kind": "table", "rows": 1, "hash": "x", "method": "row64"}}
    names = {"public.a": ("public", "a"), "public.b": ("public", "b"), "public.c": ("public", "c")}
    tables = {("public", "a"): TableData(1, "h1", True), ("public", "b"): TableData(2, "h2", False)}
    missing = fill_dump_text(fps, tables, names)
    assert missing == {"public.b": "pg_dump did not write one row per chunk", "public.c": "no data block in the archive"}
    assert fps["public.a"]["hash"] == "h1" and fps["public.b"]["hash"] is None and fps["public.d"]["hash"] == "x"
    assert dump_text_keys(fps) == ["public.a", "public.b", "public.c"]


def dump_and_restore(db, age_keys, dump_dir, tmp_path):
    engine = PostgresEngine()
    policy = make_policy(db, drill={"fingerprint": "full"})
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    result = engine.dump(policy=policy, sink=sink)
    return engine, policy, sink, result


def test_hostile_schema_drill_passes_and_one_changed_value_fails_that_table(pg_database, age_keys, dump_dir,
                                                                            tmp_path, monkeypatch):
    db = pg_database("bk_dtext")
    pg_exec(db, *HOSTILE_SQL, f"ALTER DATABASE {db} SET TimeZone = 'Asia/Shanghai'",
            f"ALTER DATABASE {db} SET bytea_output = 'escape'",
            # a first row longer than the framing check reads: that table is fingerprinted in SQL
            "CREATE TABLE big_first (id int, t text)",
            "INSERT INTO big_first VALUES (1, repeat('长', 400000)), (2, 'short')")
    engine, policy, sink, result = dump_and_restore(db, age_keys, dump_dir, tmp_path)
    fp = result.fingerprints
    hostile = 'public."病人 ""表"".x\ny"'
    assert set(dump_text_keys(fp)) == {hostile, "public.empty_one", "public.no_key", "public.after_blobs"}
    assert fp["public.bills"]["method"] == fp["public.base_log"]["method"] == fp["public.child_log"]["method"] == "row64"
    assert result.details["dump_text"] == {"tables": 4, "sql_instead": {
        "public.big_first": "pg_dump did not write one row per chunk"}}
    assert fp["public.big_first"]["method"] == "row64" and fp["public.big_first"]["rows"] == 2
    assert fp["large objects"]["count"] == 2
    with psycopg.connect(pg_dsn(db), autocommit=True) as conn:
        # the session's own TimeZone and bytea_output do not reach the hash: the dump pins them
        conn.execute("SET TimeZone = 'America/New_York'")
        assert fp[hostile]["hash"] == copy_text_hash(conn, "public", '病人 "表".x\ny')

    with engine.scratch(policy=policy, workdir=tmp_path / "w") as scratch:
        scratch.manifest = {"fingerprints": fp, "details": result.details}
        engine.restore(policy=policy, scratch=scratch, source=open_source(sink, age_keys))
        checks, actual = engine.check_restored(scratch=scratch, mode="full", like=fp)
        assert [c.status for c in checks] == ["passed"]
        assert [c for c in compare_fingerprints(fp, actual) if c["status"] != "passed"] == []
        # Equal dump-text hashes: the drill does not count those tables again, and says why. What it
        # reports is what counting gives.
        for k in dump_text_keys(fp):
            assert actual[k]["rows"] == fp[k]["rows"] and actual[k]["info"] == {"rows": ROWS_IMPLIED}, k
        assert "info" not in actual["public.bills"]  # row64 tables are counted as ever
        counted = engine.fingerprints(scratch=scratch, mode="full", like=fp)
        assert {k: {f: v for f, v in e.items() if f != "info"} for k, e in actual.items()} == counted
        # A keyed manifest (what a drill has): compared under the backup's key; without it, all counted.
        key = b"k" * 32
        _, with_key = engine.check_restored(scratch=scratch, mode="full", like=keyed(fp, key), key=key)
        assert all(with_key[k].get("info") == {"rows": ROWS_IMPLIED} for k in dump_text_keys(fp))
        assert [c for c in compare_fingerprints(keyed(fp, key), keyed(with_key, key)) if c["status"] != "passed"] == []
        _, no_key = engine.check_restored(scratch=scratch, mode="full", like=keyed(fp, key))
        assert not any("info" in no_key[k] for k in dump_text_keys(fp)) and no_key == counted
        actual = counted

        # a redump whose framing cannot be trusted: the drill hashes those tables row by row from COPY
        real_redump = PostgresEngine._redump

        def reframed(self, scr, keys):
            return {k: TableData(v.dump_id, "not used", False) for k, v in real_redump(self, scr, keys).items()}

        monkeypatch.setattr(PostgresEngine, "_redump", reframed)
        assert engine.fingerprints(scratch=scratch, mode="full", like=fp) == actual
        monkeypatch.undo()

        with psycopg.connect(scratch.handle.endpoint.conninfo(), autocommit=True) as conn:
            conn.execute('UPDATE "病人 ""表"".x\ny" SET v = 1.5 WHERE id = 1')  # 1.50 -> 1.5, same row count
        bad = [c for c in compare_fingerprints(fp, engine.fingerprints(scratch=scratch, mode="full", like=fp))
               if c["status"] == "failed"]
        assert [c["name"] for c in bad] == [f"fingerprint {hostile}"]
        assert "rows=3" in bad[0]["detail"]

        # The drill counts a table whose hash differs: the record shows the restored count, not the backup's.
        with psycopg.connect(scratch.handle.endpoint.conninfo(), autocommit=True) as conn:
            conn.execute("DELETE FROM no_key WHERE ctid = (SELECT min(ctid) FROM no_key)")
        _, after = engine.check_restored(scratch=scratch, mode="full", like=fp)
        assert after["public.no_key"]["rows"] == fp["public.no_key"]["rows"] - 1 and "info" not in after["public.no_key"]
        assert after[hostile]["rows"] == 3 and "info" not in after[hostile]  # same count, other content: counted
        bad = [c["name"] for c in compare_fingerprints(fp, after) if c["status"] == "failed"]
        assert bad == [f"fingerprint {hostile}", "fingerprint public.no_key"]


def documented_recipe() -> str:
    """The shell recipe of docs/format.md ("To recompute by hand"), exactly as written there."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()
    block = text.split("*To recompute by hand*", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert "COPY public.lab_results TO STDOUT" in block and "psql -X -d his" in block
    return block


def test_the_documented_recipe_gives_the_recorded_hash(pg_database, age_keys, dump_dir, tmp_path):
    db = pg_database("bk_dtext")
    pg_exec(db, *HOSTILE_SQL, f"ALTER DATABASE {db} SET TimeZone = 'Asia/Shanghai'",
            "CREATE TABLE lab_results (id int PRIMARY KEY, v numeric, at timestamptz, src regclass, r float8, b bytea)",
            "INSERT INTO lab_results SELECT g, g / 8.0, '2024-01-01 08:00+08'::timestamptz + g * interval '1 h', "
            "'pg_class', g * 0.1, decode(lpad(to_hex(g), 8, '0'), 'hex') FROM generate_series(1, 300) g")
    engine, policy, sink, result = dump_and_restore(db, age_keys, dump_dir, tmp_path)
    assert result.fingerprints["public.lab_results"]["method"] == "dump-text"
    recipe = documented_recipe().replace("psql -X -d his", f"psql -X -h 127.0.0.1 -U postgres -d {db}")
    out = subprocess.run(["bash", "-o", "pipefail", "-c", recipe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == result.fingerprints["public.lab_results"]["hash"]


HOSTILE_NAMES = ['a"b', "x.y", "we*rd?", "UPPER", "new\nline", "$1", "a[b]|c", "表 名", "(x)+"]


def test_pg_dump_patterns_match_exactly_one_hostile_name(pg_database, tmp_path):
    """The drill's second dump splits the tables over two pg_dump processes by --table/--exclude-table
    patterns: each pattern matches its table and nothing else, whatever the name holds."""
    db = pg_database("bk_dtext")
    statements = ['CREATE SCHEMA "s.c*"']
    for name in HOSTILE_NAMES:
        ident = '"s.c*".' + '"' + name.replace('"', '""') + '"'
        statements += [f"CREATE TABLE {ident} (v int)", f"INSERT INTO {ident} VALUES (1)"]
    pg_exec(db, *statements, "CREATE TABLE s_c (v int)", "CREATE TABLE xay (v int)")
    everything = {("s.c*", n) for n in HOSTILE_NAMES} | {("public", "s_c"), ("public", "xay")}
    for name in HOSTILE_NAMES:
        one = pg_dump_archive(db, tmp_path / "one.dump", "--data-only", f"--table={pg_dump_pattern('s.c*', name)}")
        assert set(table_data_ids(parse_toc(one)[1])) == {("s.c*", name)}, name
        rest = pg_dump_archive(db, tmp_path / "rest.dump", "--data-only",
                               f"--exclude-table={pg_dump_pattern('s.c*', name)}")
        assert set(table_data_ids(parse_toc(rest)[1])) == everything - {("s.c*", name)}, name


def test_split_tables_balances_two_processes():
    t = [(("s", f"t{i}"), size) for i, size in enumerate([100, 60, 50, 10, 0])]
    first = split_tables(t)
    assert first == [("s", "t1"), ("s", "t2")]  # largest first, each to the lighter side: 60+50 | 100+10+0
    assert split_tables([(("s", "only"), 5)]) == [] and split_tables([]) == []


def _int(v: int) -> bytes:
    return (b"\1" if v < 0 else b"\0") + abs(v).to_bytes(4, "little")


def _table_block(dump_id: int, chunks: list[bytes], copy_end: bool = True) -> bytes:
    body = b"".join(_int(len(c)) + c for c in chunks)
    return b"\x01" + _int(dump_id) + body + (_int(len(COPY_END)) + COPY_END if copy_end else b"") + _int(0)


def _blob_block(dump_id: int, blobs: dict[int, list[bytes]]) -> bytes:
    out = b"\x03" + _int(dump_id)
    for oid, chunks in blobs.items():
        out += _int(oid) + b"".join(_int(len(c)) + c for c in chunks) + _int(0)
    return out + _int(0)


def _sha(chunks: list[bytes]) -> str:
    return hashlib.sha256(b"".join(_int(len(c)) + c for c in chunks)).hexdigest()


SYNTHETIC = {  # dump id: (chunks, pg_dump's \. chunk written, the first chunk holds one row)
    1: ([b"a\n", b"bb\tx\\n\n", b"\\.x\n"], True, True),
    2: ([], False, True),  # an empty table without the \. chunk
    3: ([b"x" * 9 + b"\n", b"y" * 255 + b"\n", b"z" * 2559 + b"\n", b"w" * 9 + b"\n"], False, True),  # 0x0a, 0x00 in lengths
    (1 << 24) + 3: ([b"v" * 70000 + b"\n", b"u\n"], True, True),  # a length and a dump id past two bytes
    4: ([b"r1\nr2\n", b"r3\n"], True, False),  # two rows in one chunk
    5: ([], True, True),  # an empty table as pg_dump 15 writes it
}


def synthetic_blocks() -> list[bytes]:
    out = []
    for dump_id, (chunks, copy_end, _) in SYNTHETIC.items():
        out.append(_table_block(dump_id, chunks, copy_end))
        if dump_id == 2:  # large objects whose bytes hold zero runs and look like block ends
            out.append(_blob_block(9, {(1 << 32) - 2: [b"\0" * 10, b"\x01\0\0\0\0\0"],
                                       16386: [b"\0\x05\0\0\0" + COPY_END + b"\0" * 5]}))
    return out


def synthetic_archive() -> bytes:
    return b"".join(synthetic_blocks())


def test_synthetic_archive_at_every_cut_and_byte_by_byte():
    """Every cut of a stream holding each kind of block gives the same hashes and framing verdicts, with
    no error: a block end split over two reads, length bytes equal to a newline or zero, a table without
    pg_dump's final \\. chunk, large objects whose bytes look like a block end."""
    data = synthetic_archive()
    want = {i: TableData(i, _sha(chunks), one) for i, (chunks, _, one) in SYNTHETIC.items()}
    at, offsets = 100, {}  # where each block starts, as if the TOC took the first 100 bytes
    for block in synthetic_blocks():
        offsets[int.from_bytes(block[2:6], "little")] = at
        at += len(block)

    def run(pieces) -> DataBlocks:
        b, find = DataBlocks(4, base=100), DataBlocks(4, hash_rows=False, base=100)
        for p in pieces:
            b.feed(p)
            find.feed(p)
        b.finish()
        find.finish()
        assert b.error is None and find.error is None
        assert b.offsets == find.offsets == (offsets if len(b.tables) == len(want) else small_offsets)
        assert find.tables == {}
        return b

    assert run([data]).tables == want
    big = (1 << 24) + 3
    block = _table_block(big, *SYNTHETIC[big][:2])
    small, small_want = data.replace(block, b""), {k: v for k, v in want.items() if k != big}
    small_offsets = {k: v - (len(block) if v > offsets[big] else 0) for k, v in offsets.items() if k != big}
    for k in range(1, len(small)):
        assert run([small[:k], small[k:]]).tables == small_want, k
    assert run([small[i:i + 1] for i in range(len(small))]).tables == small_want
    at = data.index(block)
    for k in [*range(at - 12, at + 40), *range(at + len(block) - 40, at + len(block) + 12)]:
        assert run([data[:k], data[k:]]).tables == want, k
    rng = random.Random(3)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), 6))
        assert run([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]).tables == want


def test_truncated_anywhere_is_an_error_and_a_long_first_row_is_not_vouched_for():
    data = synthetic_archive()
    ends, at = set(), 0
    for block in synthetic_blocks():
        at += len(block)
        ends.add(at)
    for k in range(1, len(data)):
        b = DataBlocks(4)
        b.feed(data[:k])
        b.finish()
        assert (b.error is None) == (k in ends), k  # only a cut between blocks is a clean end
        assert b.error in (None, "the archive ended inside a data block"), k
    long_first = [b"x" * (FIRST_ROW_CHECK + 1) + b"\n", b"y\n"]
    block = _table_block(7, long_first)
    for size in (1 << 16, len(block)):
        b = DataBlocks(4)
        for i in range(0, len(block), size):
            b.feed(block[i:i + size])
        b.finish()
        assert b.error is None and b.tables[7] == TableData(7, _sha(long_first), False)
    at_limit = [b"x" * (FIRST_ROW_CHECK - 1) + b"\n"]  # exactly as long as the check reads: vouched for
    b = DataBlocks(4)
    block = _table_block(8, at_limit)
    b.feed(block[:1 << 16])
    assert b.tables == {} and b.error is None  # waiting for the whole first row
    b.feed(block[1 << 16:])
    b.finish()
    assert b.error is None and b.tables[8] == TableData(8, _sha(at_limit), True)


def _str(s: str | None) -> bytes:
    return _int(-1) if s is None else _int(len(s.encode())) + s.encode()


def synthetic_toc(minor: int, entries: list[tuple[int, str, str, str, str | None]]) -> bytes:
    """A custom archive's header and TOC as pg_dump writes them for archive version 1.<minor>
    (pg_backup_archiver.c WriteHead/WriteToc): entries are (dump id, desc, namespace, tag, defn)."""
    out = b"PGDMP" + bytes([1, minor, 0, 4, 8, 1])
    out += bytes([0]) if minor >= 15 else _int(0)  # compression algorithm (1.15+) or level
    out += b"".join(_int(v) for v in (0, 0, 0, 1, 0, 126, 0)) + _str("his") + _str("15.2") + _str("15.2")
    out += _int(len(entries))
    for dump_id, desc, namespace, tag, defn in entries:
        out += _int(dump_id) + _int(1) + _str("1259") + _str("16384") + _str(tag) + _str(desc) + _int(2)
        out += _str(defn) + _str("") + _str("") + _str(namespace) + _str("")
        if minor >= 14:
            out += _str("heap")
        if minor >= 16:
            out += _int(114)  # relkind
        out += _str("postgres") + _str("false") + _str("3") + _str(None) + bytes([2]) + b"\0" * 8
    return out


@pytest.mark.parametrize("minor", [12, 13, 14, 15, 16])
def test_toc_of_every_understood_archive_version_and_what_follows(minor):
    entries = [(3366, "TABLE DATA", "public", "t", ""),
               (3370, "SEQUENCE SET", "public", "s", "SELECT pg_catalog.setval('public.s', 42, true);\n"),
               (3371, "SEQUENCE SET", "public", "u", "SELECT pg_catalog.setval('public.u', 1, false);\n"),
               (3372, "SEQUENCE SET", None, "v", "SELECT pg_catalog.setval('v', 5, true);\n"),
               (3373, "TABLE", "public", "s2", "SELECT pg_catalog.setval('public.s2', 7, true);\n")]
    toc = synthetic_toc(minor, entries)
    assert parse_toc(toc)[0]["toc_bytes"] == len(toc)  # a TOC that ends exactly where the bytes end
    header, parsed = parse_toc(toc + b"rest")
    assert header["version"] == f"1.{minor}.0" and header["toc_bytes"] == len(toc) and header["int_size"] == 4
    assert [(e.dump_id, e.desc, e.namespace, e.tag, e.defn) for e in parsed] == entries
    assert sequence_values(parsed) == {("public", "s"): (42, True), ("public", "u"): (1, False)}
    assert table_data_ids(parsed) == {("public", "t"): 3366}
    rows = [b"1\tx\n", b"2\t\\N\n"]
    for cut in (1, 7, len(toc) - 1, len(toc), len(toc) + 3):
        stream = toc + _table_block(3366, rows)
        tap = walk(stream, cycle([cut, 1 << 20]))
        assert tap.table_hashes() == ({("public", "t"): TableData(3366, _sha(rows), True)}, None), cut
    for stream, why in ((b"PGDMX" + toc[5:], "not a pg_dump custom archive (no PGDMP magic)"),
                        (toc[:len(toc) - 1], "the table of contents was not complete")):
        tap = walk(stream, cycle([1 << 20]))
        assert tap.table_hashes() == ({}, why)
        assert TocTap(None).table_hashes() == ({}, "data blocks were not hashed")
    for bad, why in ((b"PGDMX", "no PGDMP magic"), (b"PGDMP" + bytes([1, 11, 0]), "1.11 is not understood"),
                     (b"PGDMP" + bytes([1, 17, 0]), "1.17 is not understood"),
                     (b"PGDMP" + bytes([1, 14, 0, 4, 8, 3]), "format 3 is not custom")):
        with pytest.raises(ValueError, match=why):
            parse_toc(bad + b"\0" * 64)
