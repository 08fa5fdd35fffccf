"""Reading the table of contents of a pg_dump custom-format archive as it streams by.

pg_dump writes the whole TOC, with every entry's SQL, at the start of a custom
archive written to a pipe, before any table data. ``TocTap`` wraps pg_dump's
stdout, passes every byte through unchanged and parses the header and TOC from
the first bytes; after that it costs nothing. backupkit uses it to record the
sequence values exactly as pg_dump wrote them (``SEQUENCE SET`` entries), which
a second read in another session could not give: sequences are not MVCC.

Archive versions 1.12 to 1.16 (pg_dump 9.x to 17) are understood; anything else
leaves ``error`` set and the caller falls back.

With ``hash_data``, the tap also walks the data blocks that follow the TOC and
hashes each table's rows as pg_dump wrote them (``DataBlocks``; docs/format.md,
"PostgreSQL", method ``dump-text``): a full-mode fingerprint without a second
scan of the source.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field

from .kit import DRAIN_BATCH, DRAIN_PAUSE

MAX_TOC_BYTES = 256 << 20
SETVAL = re.compile(r"setval\('(?:[^']|'')*',\s*(-?\d+),\s*(true|false)\)")


class _NeedMore(Exception):
    pass


@dataclass
class TocEntry:
    dump_id: int
    desc: str
    namespace: str | None
    tag: str | None
    defn: str | None
    offset_at: int = 0  # where this entry's data offset field (flag byte, then the offset) lies in the archive
    data_state: int = 0  # that flag: OFFSET_NOT_SET, OFFSET_SET or OFFSET_NO_DATA
    data_offset: int = 0  # with OFFSET_SET, where the entry's data block starts


class _Cursor:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0
        self.int_size = 4

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise _NeedMore
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        raw = self.take(self.int_size)
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def str(self) -> str | None:
        n = self.int()
        if n < 0:
            return None
        return self.take(n).decode("utf-8", "replace")


def parse_toc(buf: bytes) -> tuple[dict, list[TocEntry]]:
    """Given the first bytes of a custom archive, return (header, entries).
    Raises _NeedMore when the TOC is not complete yet and ValueError when the format is unknown."""
    c = _Cursor(buf)
    if c.take(5) != b"PGDMP":
        raise ValueError("not a pg_dump custom archive (no PGDMP magic)")
    version = (c.byte(), c.byte(), c.byte())
    if not ((1, 12) <= version[:2] <= (1, 16)):
        raise ValueError(f"archive version {version[0]}.{version[1]} is not understood")
    c.int_size = c.byte()
    off_size = c.byte()
    fmt = c.byte()
    if fmt != 1:
        raise ValueError(f"archive format {fmt} is not custom")
    if version[:2] >= (1, 15):
        c.byte()  # compression algorithm
    else:
        c.int()  # compression level
    for _ in range(7):  # creation time
        c.int()
    header = {"version": ".".join(map(str, version)), "dbname": c.str(), "server": c.str(), "pg_dump": c.str()}
    count = c.int()
    entries = []
    for _ in range(count):
        dump_id = c.int()
        c.int()  # has data dumper
        c.str()  # catalog table oid
        c.str()  # oid
        tag = c.str()
        desc = c.str()
        c.int()  # section
        defn = c.str()
        c.str()  # drop statement
        c.str()  # copy statement
        namespace = c.str()
        c.str()  # tablespace
        if version[:2] >= (1, 14):
            c.str()  # table access method
        if version[:2] >= (1, 16):
            c.int()  # relkind
        c.str()  # owner
        c.str()  # "false" (WITH OIDS, no longer supported)
        while c.str() is not None:  # dependencies, terminated by NULL
            pass
        offset_at = c.pos
        field_ = c.take(1 + off_size)  # custom format: data offset flag and offset
        entries.append(TocEntry(dump_id, desc or "", namespace, tag, defn, offset_at, field_[0],
                                int.from_bytes(field_[1:], "little")))
    header["int_size"], header["off_size"], header["toc_bytes"] = c.int_size, off_size, c.pos
    return header, entries


def sequence_values(entries: list[TocEntry]) -> dict[tuple[str, str], tuple[int, bool]]:
    """{(schema, sequence): (last_value, is_called)} from the SEQUENCE SET entries."""
    out = {}
    for e in entries:
        if e.desc == "SEQUENCE SET" and e.defn:
            m = SETVAL.search(e.defn)
            if m and e.namespace is not None and e.tag is not None:
                out[(e.namespace, e.tag)] = (int(m.group(1)), m.group(2) == "true")
    return out


BLK_DATA, BLK_BLOBS = 1, 3  # pg_backup_custom.c block types
OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA = 1, 2, 3  # pg_backup_archiver.h K_OFFSET_*: a TOC entry's data offset
COPY_END = b"\\.\n\n\n"  # the chunk pg_dump ends a table's COPY data with (not a row: rows hold one newline)
FIRST_ROW_CHECK = 1 << 20  # a first row longer than this is not checked; its table takes the SQL method
WALK_BYTES = 1 << 20  # the data blocks are walked in pieces of at least this many bytes
DRAIN_BYTES = 4 << 20  # TocTap.drain walks pieces of exactly this many bytes


def frame_row(row: bytes) -> bytes:
    """The chunk header pg_dump -Fc -Z0 writes before one COPY row: a zero sign byte and the row's
    length as 4 bytes, little-endian (docs/format.md, method ``dump-text``)."""
    return b"\0" + len(row).to_bytes(4, "little")


@dataclass
class TableData:
    """One table data block: the SHA-256 of its row chunks and whether its first chunk held exactly one row."""

    dump_id: int
    sha256: str
    one_row_chunks: bool


@dataclass
class DataBlocks:
    """The data blocks after the TOC of a ``pg_dump -Fc -Z0`` archive, walked as they stream by.

    A table's block is a series of chunks (a zero sign byte, a 4-byte little-endian length, the bytes)
    ended by a zero-length chunk. pg_dump writes one chunk per COPY row, then the chunk ``\\.\\n\\n\\n``.
    COPY text never holds a zero byte and a length is never zero, so the first run of five zero
    bytes in a block is its end: the walk is one ``find`` and one ``sha256.update`` per read, not a
    step per row. The hash covers every chunk except the final ``\\.`` one. The first chunk of every
    table is checked to hold exactly one row; a block where it does not (a pg_dump that frames rows
    otherwise) is reported with ``one_row_chunks`` false. Large-object blocks are walked chunk by
    chunk and not hashed. ``error`` is set (and walking stops) on anything unexpected."""

    int_size: int
    hash_rows: bool = True  # False: only find the blocks (``offsets``), hash nothing
    base: int = 0  # the archive offset of the first byte fed (the end of the TOC)
    tables: dict[int, TableData] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)  # dump id -> archive offset of its block header
    error: str | None = None
    _state: str = "header"
    _pending: bytes = b""
    _sha: object = None
    _dump_id: int = 0
    _first: bool = False
    _at: int = -1  # archive offset of the next byte to walk (of ``_pending``, when it holds bytes)
    _ok: bool = True
    _blob_left: int = 0

    def __post_init__(self) -> None:
        self._at = self.base
        if self.int_size != 4:
            self.error = f"archive integers are {self.int_size} bytes, not 4"
        self._end = b"\0" * (1 + self.int_size)
        self._copy_end = frame_row(COPY_END) + COPY_END  # pg_dump's last chunk of a table: not hashed
        self._tail = self._copy_end + self._end  # how a table's block ends

    def feed(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        buf = self._pending + data if self._pending else data
        self._pending = b""
        try:
            self._walk(buf)
        except ValueError as e:
            self.error = str(e)
        self._at += len(buf) - len(self._pending)

    def finish(self) -> None:
        """The archive ended: anything but a block boundary is an error."""
        if self.error is None and (self._state != "header" or self._pending):
            self.error = "the archive ended inside a data block"

    def _walk(self, buf: bytes) -> None:
        n, pos, isz = len(buf), 0, self.int_size
        view = memoryview(buf)
        while pos < n:
            if self._state == "header":
                if n - pos < 2 + isz:
                    break
                kind, dump_id = buf[pos], self._int(buf, pos + 1)
                if kind in (BLK_DATA, BLK_BLOBS):
                    self.offsets[dump_id] = self._at + pos
                pos += 2 + isz
                if kind == BLK_DATA:
                    self._state, self._dump_id, self._ok = "table", dump_id, True
                    self._sha, self._first = (hashlib.sha256(), True) if self.hash_rows else (None, False)
                elif kind == BLK_BLOBS:
                    self._state = "blob"
                else:
                    raise ValueError(f"unknown data block type {kind}")
            elif self._state == "table":
                if self._first:
                    if n - pos < 1 + isz:
                        break
                    size = self._int(buf, pos)
                    if 0 < size <= FIRST_ROW_CHECK and n - pos < 1 + isz + size:
                        break  # wait for the whole first row
                    if size > FIRST_ROW_CHECK:
                        self._ok = False  # not checked: not vouched for
                    elif size:
                        row = buf[pos + 1 + isz:pos + 1 + isz + size]
                        self._ok = row == COPY_END or (row.endswith(b"\n") and row.count(b"\n") == 1)
                    self._first = False
                end = buf.find(self._end, pos)
                if end < 0:
                    keep = self._tail_to_hold(buf, pos)
                    if self._sha is not None:
                        self._sha.update(view[pos:n - keep])
                    self._pending = bytes(view[n - keep:])
                    return
                if self._sha is not None:
                    stop = end - len(self._copy_end)
                    if stop >= pos and buf[stop:end] == self._copy_end:
                        self._sha.update(view[pos:stop])
                    else:
                        self._sha.update(view[pos:end])
                    self.tables[self._dump_id] = TableData(self._dump_id, self._sha.hexdigest(), self._ok)
                pos, self._state = end + len(self._end), "header"
            elif self._state == "blob":  # an object id, then its chunks; object id 0 ends the block
                if n - pos < 1 + isz:
                    break
                oid = self._int(buf, pos)
                pos += 1 + isz
                self._state = "blob-chunk" if oid else "header"
            elif self._state == "blob-chunk":
                if self._blob_left:
                    take = min(self._blob_left, n - pos)
                    pos, self._blob_left = pos + take, self._blob_left - take
                    continue
                if n - pos < 1 + isz:
                    break
                size = self._int(buf, pos)
                pos += 1 + isz
                if size < 0:
                    raise ValueError("negative chunk length in a large-object block")
                if size == 0:
                    self._state = "blob"
                self._blob_left = size
        self._pending = bytes(view[pos:])

    def _tail_to_hold(self, buf: bytes, pos: int) -> int:
        """How many bytes at the end of ``buf`` (from ``pos``) may begin the block's end: the COPY end
        chunk followed by the end marker, or the end marker alone. Usually none, so no copy is made."""
        n = len(buf)
        for k in range(min(len(self._tail), n - pos), 0, -1):
            if buf.endswith(self._tail[:k]) or (k < len(self._end) and buf.endswith(self._end[:k])):
                return k
        return 0

    def _int(self, buf: bytes, pos: int) -> int:
        value = int.from_bytes(buf[pos + 1:pos + 1 + self.int_size], "little")
        return -value if buf[pos] else value


def table_data_ids(entries: list[TocEntry]) -> dict[tuple[str, str], int]:
    """{(schema, table): dump id} of the TOC's TABLE DATA entries."""
    return {(e.namespace, e.tag): e.dump_id for e in entries
            if e.desc == "TABLE DATA" and e.namespace is not None and e.tag is not None}


class TocTap:
    """A pass-through reader over pg_dump's stdout that parses the archive's TOC on the way and,
    with ``hash_data``, hashes every table data block after it (``blocks``)."""

    def __init__(self, raw, *, hash_data: bool = False, find_blocks: bool = False):
        self.raw = raw
        self._buf = bytearray()
        self.done = False
        self.hash_data = hash_data
        self.find_blocks = find_blocks or hash_data
        self.header: dict | None = None
        self.entries: list[TocEntry] = []
        self.error: str | None = None
        self.blocks: DataBlocks | None = None
        self._pending_walk = bytearray()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if not self.done and data:
            self._feed(data)
        elif self.blocks is not None:
            # A pipe hands over what pg_dump wrote so far, often a few KiB: walk in pieces of WALK_BYTES
            # or more, so the walk's cost per call does not count once per small read. table_hashes
            # walks the rest.
            self._pending_walk += data
            if len(self._pending_walk) >= WALK_BYTES:
                self.blocks.feed(self._pending_walk)  # the walk keeps no reference to it
                self._pending_walk.clear()
        return data

    def drain(self) -> None:
        """Read the stream to its end and walk it, passing nothing on (the output is discarded): the data
        blocks are read into one reused buffer and walked a full buffer at a time, with no copies."""
        while not self.done:  # the TOC, parsed as it comes
            data = self.raw.read(1 << 16)
            if not data:
                return
            self._feed(data)
        buf = bytearray(DRAIN_BYTES)
        view, filled = memoryview(buf), 0
        while n := self.raw.readinto(view[filled:]):
            filled += n
            if filled == len(buf):
                if self.blocks is not None:
                    self.blocks.feed(buf)
                filled = 0
            elif n < DRAIN_BATCH:
                time.sleep(DRAIN_PAUSE)  # let the pipe fill: fewer, larger reads
        if filled and self.blocks is not None:
            self.blocks.feed(bytes(view[:filled]))

    def _feed(self, data: bytes) -> None:
        self._buf += data
        try:
            self.header, self.entries = parse_toc(bytes(self._buf))
        except _NeedMore:
            if len(self._buf) > MAX_TOC_BYTES:
                self._stop(f"the archive's table of contents is larger than {MAX_TOC_BYTES >> 20} MiB")
            return
        except (ValueError, UnicodeDecodeError) as e:
            self._stop(str(e))
            return
        rest = bytes(self._buf[self.header["toc_bytes"]:])
        self._stop(None)
        if self.find_blocks:
            self.blocks = DataBlocks(self.header["int_size"], hash_rows=self.hash_data, base=self.header["toc_bytes"])
            self.blocks.feed(rest)

    def _stop(self, error: str | None) -> None:
        self.error = error
        self.done = True
        self._buf = bytearray()

    def table_hashes(self) -> tuple[dict[tuple[str, str], TableData], str | None]:
        """After the stream ended: walk what is left, then {(schema, table): TableData} and why there
        are none (or None)."""
        if not self.hash_data:
            return {}, "data blocks were not hashed"
        error = self._walk_rest()
        if error:
            return {}, error
        ids = table_data_ids(self.entries)
        return {name: self.blocks.tables[i] for name, i in ids.items() if i in self.blocks.tables}, None

    def block_offsets(self) -> tuple[dict[int, int], str | None]:
        """After the stream ended: {dump id: archive offset of its data block} for every data entry
        of the TOC, and why there are none (or None)."""
        if not self.find_blocks:
            return {}, "data blocks were not walked"
        error = self._walk_rest()
        if error:
            return {}, error
        wanted = {e.dump_id for e in self.entries if e.data_state == OFFSET_NOT_SET}
        if set(self.blocks.offsets) != wanted:
            return {}, "the data blocks do not match the table of contents"
        return dict(self.blocks.offsets), None

    def _walk_rest(self) -> str | None:
        if self.error or self.header is None or self.blocks is None:
            return self.error or "the table of contents was not complete"
        if self._pending_walk:
            self.blocks.feed(self._pending_walk)
            self._pending_walk.clear()
        self.blocks.finish()
        return self.blocks.error

    def close(self) -> None:
        self.raw.close()


def read_toc(path) -> tuple[dict, list[TocEntry]]:
    """The header and TOC of a custom archive file. Raises ValueError when it is not one we understand."""
    size = 1 << 20
    with open(path, "rb") as f:
        while True:
            f.seek(0)
            head = f.read(size)
            try:
                return parse_toc(head)
            except _NeedMore:
                if len(head) < size or size >= MAX_TOC_BYTES:
                    raise ValueError("the archive ends inside its table of contents") from None
                size *= 4


def set_data_offsets(path, offsets: dict[int, int]) -> int:
    """Write the data block offsets recorded at backup into the TOC of a custom archive that pg_dump
    wrote to a pipe (where it could not), as pg_dump itself does when it writes to a file. pg_restore
    then seeks to each block and, with ``--jobs``, restores the largest tables first. Only the
    offset fields change. Every offset is checked first against the block header it must point at
    (block type and dump id); on any doubt nothing is written and ValueError says why.
    Returns how many entries were set."""
    header, entries = read_toc(path)
    todo = [e for e in entries if e.data_state == OFFSET_NOT_SET]
    if {e.dump_id for e in todo} != set(offsets):
        raise ValueError("the recorded data blocks do not match the archive's table of contents")
    isz, osz = header["int_size"], header["off_size"]
    if not 4 <= osz <= 8:
        raise ValueError(f"archive offsets are {osz} bytes")
    with open(path, "r+b") as f:
        end = f.seek(0, 2)
        for e in todo:
            at = offsets[e.dump_id]
            if not header["toc_bytes"] <= at <= end - (2 + isz):
                raise ValueError(f"the recorded offset of data block {e.dump_id} is outside the archive")
            f.seek(at)
            block = f.read(2 + isz)
            if block[0] not in (BLK_DATA, BLK_BLOBS) or block[1] != 0 or \
                    int.from_bytes(block[2:], "little") != e.dump_id:
                raise ValueError(f"no header of data block {e.dump_id} at its recorded offset {at}")
        for e in todo:
            f.seek(e.offset_at)
            f.write(bytes([OFFSET_SET]) + offsets[e.dump_id].to_bytes(osz, "little"))
    return len(todo)
