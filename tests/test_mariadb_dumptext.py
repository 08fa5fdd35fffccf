"""Fingerprints from mariadb-dump's own text (method dump-text) against the real MariaDB on
127.0.0.1:3306 and real ephemeral scratches: hostile names and trigger bodies restore and pass, a
changed value fails, the auditor's recomputation in docs/format.md gives the recorded hash, and
format-1 manifests (SQL hashes only) still verify. The parser alone: test_units_mariadb_dumptext.py."""

from __future__ import annotations

import subprocess

from backupkit.engines.mariadb import MariadbEngine
from backupkit.engines.mariadb_fingerprint import all_fingerprints
from backupkit.verdict import compare_fingerprints

from fixtures.mariadb import make_mdb_policy, mdb_connect, mdb_exec
from test_mariadb_engine import assert_torn_down, dump, restore, scratch_exec

HOSTILE_SQL = [
    "CREATE TABLE `a``b` (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB",
    "INSERT INTO `a``b` VALUES (1, 'x;\ny'), (2, 'INSERT INTO `t` VALUES (1);')",
    "CREATE TABLE `患者 表` (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB CHARACTER SET gbk",
    "INSERT INTO `患者 表` SELECT seq, REPEAT('内科;\n', seq % 50) FROM seq_1_to_3000",
    "CREATE TABLE `-x` (id INT PRIMARY KEY) ENGINE=InnoDB",
    "INSERT INTO `-x` VALUES (1), (2)",
    "CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
    "INSERT INTO t VALUES (1, 1), (2, 2)",
    "CREATE TABLE t_audit (n INT) ENGINE=InnoDB",  # no primary key: SQL hash
    "CREATE TABLE t_my (id INT PRIMARY KEY, v INT) ENGINE=MyISAM",  # not InnoDB: SQL hash
    "INSERT INTO t_my VALUES (1, 1)",
    "CREATE TABLE t_part (id INT PRIMARY KEY, v INT) ENGINE=InnoDB PARTITION BY HASH (id) PARTITIONS 3",
    "INSERT INTO t_part SELECT seq, seq FROM seq_1_to_30",
    # a trigger whose body holds a line that reads like a data statement of t
    "CREATE TRIGGER t_tr AFTER UPDATE ON t FOR EACH ROW\nINSERT INTO `t_audit` VALUES (1)",
    # a secondary index covering every column: without --order-by-primary the server may read it instead
    "CREATE TABLE cover (id INT PRIMARY KEY, code VARCHAR(10), INDEX (code)) ENGINE=InnoDB",
    "INSERT INTO cover SELECT seq, CONCAT('c', 1000 - seq) FROM seq_1_to_500",
]


def test_hostile_names_and_trigger_bodies_restore_and_pass_and_a_change_fails(mdb_database, age_keys, dump_dir, tmp_path):
    db = mdb_database("bk_dt")
    mdb_exec(db, *HOSTILE_SQL)
    engine = MariadbEngine()
    policy = make_mdb_policy(db)
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    fp = result.fingerprints
    text = {k for k, v in fp.items() if v.get("method") == "dump-text"}
    assert text == {"`a``b`", "`患者 表`", "`-x`", "`t`", "`cover`"}
    assert {k: fp[k]["rows"] for k in ("`a``b`", "`患者 表`", "`t_my`", "`t_part`")} == {
        "`a``b`": 2, "`患者 表`": 3000, "`t_my`": 1, "`t_part`": 30}
    assert result.details["fingerprint_format"] == 2
    for table in ("t", "cover"):  # the auditor's recomputation in docs/format.md gives the recorded hash
        cmd = ("mariadb-dump -uroot -h127.0.0.1 -P3306 --protocol=tcp --single-transaction --quick --no-create-info "
               "--skip-triggers --hex-blob --default-character-set=utf8mb4 --tz-utc --order-by-primary "
               f"--net-buffer-length=1046528 --max-allowed-packet=1G --skip-dump-date {db} {table} "
               f"| awk '/^INSERT INTO `{table}` /{{on=1}} on{{print}} on && /;$/{{on=0}}' | sha256sum")
        out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, check=True).stdout
        assert out.split()[0] == fp[f"`{table}`"]["hash"], table
    assert "--order-by-primary" in result.details["dump_options"]
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="full", like=fp) == fp
        # the restored copy is read again in another physical order: same content, same hashes
        scratch_exec(scratch, "ALTER TABLE cover ENGINE=InnoDB", "OPTIMIZE TABLE `患者 表`")
        assert engine.fingerprints(scratch=scratch, mode="full", like=fp) == fp
        # one value changed, row count kept: named, and nothing else fails
        scratch_exec(scratch, "UPDATE `患者 表` SET v = CONCAT(v, ' ') WHERE id = 2999")
        after = engine.fingerprints(scratch=scratch, mode="full", like=fp)
        failed = [c for c in compare_fingerprints(fp, after) if c["status"] == "failed"]
        assert [c["name"] for c in failed] == ["fingerprint `患者 表`"]
        assert "manifest rows=3000" in failed[0]["detail"] and "restored rows=3000" in failed[0]["detail"]
        # a row deleted and another inserted in its place elsewhere: the count alone would not see it
        scratch_exec(scratch, "UPDATE `患者 表` SET v = REPEAT('内科;\n', 2999 % 50) WHERE id = 2999",
                     "DELETE FROM cover WHERE id = 1", "INSERT INTO cover VALUES (501, 'c999')")
        after = engine.fingerprints(scratch=scratch, mode="full", like=fp)
        assert [c["name"] for c in compare_fingerprints(fp, after) if c["status"] == "failed"] == ["fingerprint `cover`"]
    assert_torn_down(scratch)


def test_manifests_with_sql_hashes_only_still_verify(mdb_database, age_keys, dump_dir, tmp_path):
    """A manifest written before format 2 records no method: the drill recomputes every table in SQL."""
    db = mdb_database("bk_dt1")
    mdb_exec(db, *HOSTILE_SQL[:8])
    engine = MariadbEngine()
    policy = make_mdb_policy(db)
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    conn = mdb_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        legacy = all_fingerprints(conn, db, "full")
    finally:
        conn.close()
    assert not any("method" in v for v in legacy.values())
    assert {k for k, v in legacy.items() if v.get("kind") == "table"} == {"`a``b`", "`患者 表`", "`-x`", "`t`"}
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="full", like=legacy) == legacy
        scratch_exec(scratch, "UPDATE t SET v = 3 WHERE id = 2")
        after = engine.fingerprints(scratch=scratch, mode="full", like=legacy)
        assert [c["name"] for c in compare_fingerprints(legacy, after) if c["status"] == "failed"] == ["fingerprint `t`"]
