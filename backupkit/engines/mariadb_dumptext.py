"""MariaDB table hashes taken from the dump's own text (``method: dump-text``, fingerprint format 2).

``mariadb-dump --order-by-primary`` writes the rows of a table with a primary key in primary-key
order, so for such a table the INSERT lines it writes depend on the table's rows and on the options
that shape the text (``TEXT_OPTIONS``) and on nothing else: not on the physical order, the server's
plan or the session. Their SHA-256, over the lines exactly as written, is therefore a hash of the
table's content that does not depend on row order, and the backup gets it from the stream it is
writing anyway: no second scan of the source. The drill dumps the restored copy's tables with the
same options and hashes the same lines; the row counts on both sides still come from ``COUNT(*)``
in SQL (a dump that lost rows fails the drill on the count).

Tables hashed this way (``text_tables``): InnoDB base tables with a PRIMARY KEY, not partitioned,
whose names hold no line break. Every other table keeps the SQL hash of format 1.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

from .mariadb_conn import query
from .mariadb_fingerprint import TEXT_METHOD as METHOD

__all__ = ["METHOD", "TEXT_OPTIONS", "InsertHasher", "HashingTap", "insert_table", "text_tables"]
INSERT_PREFIX = b"INSERT INTO `"
DELIMITER = b"DELIMITER"
MAX_HEAD = 1024  # an INSERT line's prefix with the longest table name (64 characters, backquotes doubled) fits
# The options that decide the text of the INSERT lines: the same at backup and in the drill's second dump
# (--net-buffer-length is mariadb-dump's default, written out so another version's default cannot move the
# statement breaks). They are part of the method's definition (docs/format.md): changing them needs a new
# method name, or manifests written before would be recomputed differently.
TEXT_OPTIONS = ["--hex-blob", "--default-character-set=utf8mb4", "--tz-utc", "--order-by-primary",
                "--net-buffer-length=1046528", "--max-allowed-packet=1G"]


def text_tables(conn, database: str) -> set[str]:
    """Base tables of ``database`` whose content hash is taken from the dump text (module docstring)."""
    rows = query(conn, "SELECT t.TABLE_NAME FROM information_schema.TABLES t WHERE t.TABLE_SCHEMA = %s "
                       "AND t.TABLE_TYPE = 'BASE TABLE' AND t.ENGINE = 'InnoDB' "
                       "AND COALESCE(t.CREATE_OPTIONS, '') NOT LIKE '%%partitioned%%' "
                       "AND EXISTS (SELECT 1 FROM information_schema.STATISTICS s WHERE s.TABLE_SCHEMA = t.TABLE_SCHEMA "
                       "AND s.TABLE_NAME = t.TABLE_NAME AND s.INDEX_NAME = 'PRIMARY')", (database,))
    return {r[0] for r in rows if "\n" not in r[0] and "\r" not in r[0]}


def insert_table(head: bytes) -> tuple[bool, str | None]:
    """Classify the start of a dump line: (decided, table). ``decided`` is False while more bytes are
    needed; ``table`` is the table an ``INSERT INTO `name``` line writes to, else None."""
    n = min(len(head), len(INSERT_PREFIX))
    if head[:n] != INSERT_PREFIX[:n]:
        return True, None
    ended = b"\n" in head or len(head) > MAX_HEAD
    i = len(INSERT_PREFIX)
    while True:
        j = head.find(b"`", i)
        if j < 0 or j + 1 >= len(head):
            return ended, None
        if head[j + 1:j + 2] == b"`":  # a doubled backquote inside the name
            i = j + 2
            continue
        name = head[len(INSERT_PREFIX):j].replace(b"``", b"`")
        if b"\n" in name:
            return True, None
        return True, name.decode("utf-8", "replace")


def statement_end(data, pos: int) -> int:
    """Index of the first ``;\n`` at or after ``pos``, or -1. Found through the ``;`` alone (memchr),
    which is rare in row data, instead of a two-byte search that stops at every row's line break: this
    loop runs over every byte of the dump."""
    k = data.find(b";", pos)
    while k >= 0 and data[k + 1:k + 2] != b"\n":
        k = data.find(b";", k + 1)
    return k


LINE, STATEMENT, REST = 0, 1, 2  # at a line's start; inside an INSERT statement; inside another line


class InsertHasher:
    """Per table, SHA-256 over its INSERT statements (``INSERT INTO `t` ...`` up to and including the
    ``;`` and line break that end it: mariadb-dump escapes line breaks inside values, so ``;\n`` ends
    a statement and nothing else), in the order written, fed with the dump stream in chunks of any
    size. Other statements, and everything between ``DELIMITER ;;`` and ``DELIMITER ;`` (trigger,
    routine and event definitions, whose bodies may hold INSERT lines), are passed over."""

    def __init__(self, tables: Iterable[str]):
        self.digests = {t: hashlib.sha256() for t in tables}
        self.lines = {t: 0 for t in self.digests}  # INSERT statements seen per table
        self._state = LINE
        self._head = bytearray()  # start of the current line, until it is classified
        self._cur = None  # digest of the current statement's table (None: a statement not hashed)
        self._semicolon = False  # the last byte of the statement so far is ';'
        self._definitions = False  # between DELIMITER ;; and DELIMITER ;

    def _statement(self, mv, pos: int, end: int) -> None:
        if self._cur is not None and end > pos:
            self._cur.update(mv[pos:end])

    def feed(self, data) -> None:
        mv = memoryview(data)
        pos, n = 0, len(mv)
        while pos < n:
            if self._state == STATEMENT:
                if self._semicolon and data[pos:pos + 1] == b"\n":  # ';' ended the previous chunk
                    end, ended = pos + 1, True
                else:
                    k = statement_end(data, pos)
                    end, ended = (n, False) if k < 0 else (k + 2, True)
                self._statement(mv, pos, end)
                self._semicolon = not ended and data[end - 1:end] == b";"
                pos = end
                if ended:
                    self._state = LINE
            elif self._state == REST:
                k = data.find(b"\n", pos)
                pos = n if k < 0 else k + 1
                if k >= 0:
                    self._state = LINE
            else:
                k = data.find(b"\n", pos, pos + MAX_HEAD + 1)
                take = min(n if k < 0 else k + 1, pos + MAX_HEAD + 1 - len(self._head))
                self._head += mv[pos:take]
                pos = take
                self._line_start()

    def _line_start(self) -> None:
        head = bytes(self._head)
        whole = head.endswith(b"\n")
        if self._definitions or DELIMITER.startswith(head) or head.startswith(DELIMITER):
            if not whole and len(head) <= MAX_HEAD:  # DELIMITER lines are judged whole
                return
            if head.rstrip() == DELIMITER + b" ;;":
                self._definitions = True
            elif head.rstrip() == DELIMITER + b" ;":
                self._definitions = False
            table, statement = None, False
        else:
            decided, table = insert_table(head)
            if not decided:
                return
            statement = head.startswith(INSERT_PREFIX)
        self._head = bytearray()
        if not statement:
            self._state = LINE if whole else REST
            return
        self._cur = self.digests.get(table)
        if self._cur is not None:
            self.lines[table] += 1
            self._cur.update(head)
        if head.endswith(b";\n"):
            self._state = LINE
        else:
            self._state = STATEMENT
            self._semicolon = head.endswith(b";")

    def hashes(self) -> dict[str, str]:
        return {t: d.hexdigest() for t, d in self.digests.items()}


class HashingTap:
    """A pass-through reader over a dump's stdout that feeds an InsertHasher on the way."""

    def __init__(self, raw, hasher: InsertHasher):
        self.raw, self.hasher = raw, hasher

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if data:
            self.hasher.feed(data)
        return data

    def close(self) -> None:
        self.raw.close()
