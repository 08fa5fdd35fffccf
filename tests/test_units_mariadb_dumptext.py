"""The parser behind MariaDB's dump-text fingerprints (mariadb_dumptext), on its own: every chunking of a
dump gives the same hashes; trigger and routine definitions, other tables and names with line breaks
are passed over; a table with rows but no INSERT statement fails."""

from __future__ import annotations

import hashlib
import random

import pytest

from backupkit.engines import mariadb_dumptext as dt
from backupkit.engines.mariadb import fill_text_hashes
from backupkit.errors import JobFailed

T_STATEMENTS = [
    b"INSERT INTO `t` VALUES\n(1,'a;b'),\n(2,'x\\ny;\\n'),\n(3,'INSERT INTO `t` VALUES (9);');\n",
    b"INSERT INTO `t` VALUES (4,'" + b"w" * 3000 + b"'),(5,NULL);\n",  # one line longer than MAX_HEAD
]
Q_STATEMENTS = [b"INSERT INTO `a``b` VALUES\n(1,0x00FF);\n"]
DUMP = b"".join([
    b"-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n",
    b"CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n);\n",
    b"-- " + b"c" * 2500 + b"\n",  # a comment longer than MAX_HEAD
    b"LOCK TABLES `t` WRITE;\n", T_STATEMENTS[0], T_STATEMENTS[1], b"UNLOCK TABLES;\n",
    b"INSERT INTO `other` VALUES\n(1,'INSERT INTO `t` VALUES (7);'),\n(2,'');\n",  # not hashed
    Q_STATEMENTS[0],
    b"DELIMITER ;;\n/*!50003 CREATE*/ /*!50003 TRIGGER `tr` AFTER UPDATE ON `t` FOR EACH ROW\n",
    b"INSERT INTO `t` VALUES (8);\n",  # a trigger body: passed over
    b"INSERT INTO `a``b` VALUES (8) */;;\nDELIMITER ;\n",
    b"INSERT INTO `t\nx` VALUES (1);\n",  # a name with a line break never matches
    b"-- Dump completed\n",
])


def expected() -> dict[str, str]:
    return {"t": hashlib.sha256(b"".join(T_STATEMENTS)).hexdigest(), "a`b": hashlib.sha256(b"".join(Q_STATEMENTS)).hexdigest(),
            "empty": hashlib.sha256(b"").hexdigest()}


def feed(chunks) -> dt.InsertHasher:
    h = dt.InsertHasher(["t", "a`b", "empty"])
    for c in chunks:
        h.feed(c)
    return h


def test_statements_are_hashed_the_same_at_every_chunking():
    want = expected()
    whole = feed([DUMP])
    assert whole.hashes() == want
    assert whole.lines == {"t": 2, "a`b": 1, "empty": 0}
    for size in list(range(1, 40)) + [1023, 1024, 1025, 1026, 4096]:
        h = feed([DUMP[i:i + size] for i in range(0, len(DUMP), size)])
        assert h.hashes() == want, size
        assert h.lines == whole.lines, size
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(DUMP)), rng.randint(1, 40)))
        h = feed([DUMP[a:b] for a, b in zip([0, *cuts], [*cuts, len(DUMP)])])
        assert h.hashes() == want, cuts


def test_a_changed_byte_in_a_hashed_statement_changes_only_its_table():
    changed = DUMP.replace(b"(2,'x\\ny;", b"(2,'x\\nz;")
    h = feed([changed])
    assert h.hashes()["t"] != expected()["t"] and h.hashes()["a`b"] == expected()["a`b"]
    # the trigger body and the other table's rows are not part of t's hash
    assert feed([DUMP.replace(b"VALUES (8);\n", b"VALUES (80);\n")]).hashes() == expected()
    assert feed([DUMP.replace(b"(1,'INSERT INTO `t` VALUES (7);')", b"(1,'')")]).hashes() == expected()


@pytest.mark.parametrize("head,result", [
    (b"INSERT INTO `t` VALUES", (True, "t")),
    (b"INSERT INTO `a``b` (`x`) VALUES", (True, "a`b")),
    (b"INSERT INTO `a``", (False, None)),  # the next byte decides whether the name goes on
    (b"INSERT INTO `ab`", (False, None)),
    (b"INSERT INTO `ab`\n", (True, "ab")),
    (b"INSERT", (False, None)),
    (b"INSERT\n", (True, None)),
    (b"UNLOCK TABLES;", (True, None)),
    ("INSERT INTO `患者` VALUES".encode(), (True, "患者")),
])
def test_insert_table(head, result):
    assert dt.insert_table(head) == result


def test_statement_end():
    assert dt.statement_end(b"(1,'a;b'),\n(2,';');\nX", 0) == 18
    assert dt.statement_end(b"(1,'a;b');\n", 6) == 9
    assert dt.statement_end(b"(1,'a;b')", 0) == -1
    assert dt.statement_end(b";", 0) == -1  # the line break may come in the next chunk
    assert dt.statement_end(b";;\n", 0) == 1


def test_a_table_with_rows_but_no_insert_statement_fails():
    h = dt.InsertHasher(["t"])
    fps = {"`t`": {"kind": "table", "rows": 3, "hash": None, "method": "dump-text"}}
    with pytest.raises(JobFailed, match=r"no INSERT line for table `t`, which has 3 row"):
        fill_text_hashes(fps, h, what="the dump")
    fps["`t`"]["rows"] = 0
    fill_text_hashes(fps, h, what="the dump")
    assert fps["`t`"]["hash"] == hashlib.sha256(b"").hexdigest()
