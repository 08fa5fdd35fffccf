"""Reading the table of contents of a pg_dump custom-format archive as it streams by.

pg_dump writes the whole TOC, with every entry's SQL, at the start of a custom
archive written to a pipe, before any table data. ``TocTap`` wraps pg_dump's
stdout, passes every byte through unchanged and parses the header and TOC from
the first bytes; after that it costs nothing. backupkit uses it to record the
sequence values exactly as pg_dump wrote them (``SEQUENCE SET`` entries), which
a second read in another session could not give: sequences are not MVCC.

Archive versions 1.12 to 1.16 (pg_dump 9.x to 17) are understood; anything else
leaves ``error`` set and the caller falls back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
        c.take(1 + off_size)  # custom format: data offset flag and offset
        entries.append(TocEntry(dump_id, desc or "", namespace, tag, defn))
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


class TocTap:
    """A pass-through reader over pg_dump's stdout that parses the archive's TOC on the way."""

    def __init__(self, raw):
        self.raw = raw
        self._buf = bytearray()
        self.done = False
        self.header: dict | None = None
        self.entries: list[TocEntry] = []
        self.error: str | None = None

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if not self.done and data:
            self._feed(data)
        return data

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
        self._stop(None)

    def _stop(self, error: str | None) -> None:
        self.error = error
        self.done = True
        self._buf = bytearray()

    def close(self) -> None:
        self.raw.close()
