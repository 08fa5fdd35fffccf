"""The faster MariaDB fingerprints and drill restore, against the real MariaDB server on
127.0.0.1:3306 and real ephemeral servers: the same values as format 1's published query
(old manifests verify), several sessions sharing the dump's snapshot under concurrent writes,
and the restore spooling while the scratch server starts. Nothing is mocked.
"""

from __future__ import annotations

import threading
import time

import pytest

from backupkit.engines import mariadb_fingerprint as mfp
from backupkit.engines import mariadb_server
from backupkit.engines.mariadb import MariadbEngine
from backupkit.engines.mariadb_conn import Endpoint, connect, query
from backupkit.errors import ConfigError
from backupkit.policy import load_policy

from fixtures.mariadb import MDB_HOST, MDB_PORT, make_mdb_policy, mdb_connect, mdb_exec, mdb_scalar
from test_mariadb_engine import ALL_TYPES_SQL, assert_torn_down, dump, restore, scratch_exec

GOLDEN_SQL = [
    "CREATE TABLE g (id INT PRIMARY KEY, a VARCHAR(10), b DECIMAL(6,2), c BLOB, d DATETIME(3)) ENGINE=InnoDB",
    "INSERT INTO g SELECT seq, IF(seq % 3 = 0, NULL, IF(seq % 3 = 1, '', CONCAT('N', seq))), seq / 4, "
    "IF(seq % 5 = 0, NULL, UNHEX(HEX(seq))), TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_3000",
    "CREATE TABLE dup (k VARCHAR(5), v INT) ENGINE=InnoDB",
    "INSERT INTO dup VALUES ('N', NULL), (NULL, NULL), ('', 1), ('N', NULL), ('N', NULL)",
]
# Computed by the format-1 code as first released (DECIMAL(20,0) sums, merged derived table): manifests
# written before this change hold these values, and the drill must still reproduce them.
GOLDEN = {"`dup`": (5, "4e25cc3a64c1c35526a29f41c6a3b6ed"), "`g`": (3000, "e55803fc8acba5ece9889870dfe9ab6c")}


# ALL_TYPES_SQL (results cut to 200 rows) plus the types it lacks, with values from the first format-1 code.
ALL_TYPES_GOLDEN = {
    "`audit`": (0, "0" * 32), "`empty_table`": (0, "0" * 32),
    "`events_log`": (5, "9294533480a6288e78625f9ab036c365"), "`gbk_bin_notes`": (2, "ef985fc241851bbb3160a54f4e4c436d"),
    "`gbk_notes`": (3, "e6b06975f0911f96cb728b18c80d29d5"), "`geo`": (2, "a28cb2a4a21b5ac7701866af1432a9de"),
    "`patients`": (3, "19c2dd09331b20380f906aac9f011a6e"), "`results`": (200, "e0697434d7be8e8c2f8b064a8ce575d9")}
MORE_TYPES_SQL = [
    "CREATE TABLE geo (id INT PRIMARY KEY, p POINT, b BIT(3), y YEAR, t TIME(2), u INET6, f FLOAT, s SET('a','b'))",
    "INSERT INTO geo VALUES (1, ST_GeomFromText('POINT(1 2)', 4326), b'101', 2024, '-12:00:01.5', '::1', 1.5, 'a,b'), "
    "(2, NULL, NULL, NULL, NULL, NULL, NULL, '')",
]


def format1_published_sql(table: str, columns) -> str:
    """The table query exactly as docs/format.md published it for format 1."""
    row = "CONCAT(" + ", ".join(mfp.column_expr(n, dt) for n, dt in columns) + ")"
    return ("SELECT COUNT(*), "
            "COALESCE(SUM(CAST(CONV(SUBSTRING(r.h, 1, 16), 16, 10) AS DECIMAL(20,0))), 0), "
            "COALESCE(SUM(CAST(CONV(SUBSTRING(r.h, 17, 16), 16, 10) AS DECIMAL(20,0))), 0) "
            f"FROM (SELECT SHA2({row}, 256) AS h FROM {mfp.quote_ident(table)} AS t) AS r")


def _conns(db: str, n: int):
    ep = Endpoint(host=MDB_HOST, port=MDB_PORT, user="root", database=db)
    conns = [connect(ep, what="test") for _ in range(n)]
    for c in conns:
        query(c, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    return conns


def test_fingerprints_equal_format1_values_for_any_number_of_sessions(mdb_database, monkeypatch):
    db = mdb_database("bk_fp1")
    mdb_exec(db, *GOLDEN_SQL)
    monkeypatch.setattr(mfp, "SPLIT_ROWS", 0)  # cut every integer-keyed table into key ranges
    for n in (1, 2, 3):
        conns = _conns(db, n)
        try:
            got = mfp.table_fingerprints(conns[0], db, "full", conns[1:])
        finally:
            for c in conns:
                c.close()
        assert {k: (v["rows"], v["hash"]) for k, v in got.items()} == GOLDEN, n
    # and the published format-1 query gives the same sums as today's table_sql
    conn = _conns(db, 1)[0]
    try:
        cols = mfp.table_columns(conn, db)
        for t in ("g", "dup"):
            old = query(conn, format1_published_sql(t, cols[t]))[0]
            new = query(conn, mfp.table_sql(t, cols[t], "full"))[0]
            assert [int(x) for x in old] == [int(x) for x in new[:3]]
        ranges = mfp.key_ranges(conn, "g", "id", 3)
        assert len(ranges) == 3 and sum(
            int(query(conn, f"SELECT COUNT(*) FROM g AS t WHERE {w}")[0][0]) for w in ranges) == 3000
    finally:
        conn.close()


@pytest.mark.parametrize("chunk_rows", [1, 0, 100_000])
def test_every_type_keeps_its_format1_value_on_every_query_path(mdb_database, monkeypatch, chunk_rows):
    """chunk_rows 1: integer-keyed tables in one-row-wide key ranges (materialized); 0: every table counts as
    large, so tables without an integer key take the merged (unmaterialized) path; 100000: whole tables."""
    db = mdb_database("bk_fpall")
    mdb_exec(db, *[q.replace("seq_1_to_2000", "seq_1_to_200") for q in ALL_TYPES_SQL], *MORE_TYPES_SQL)
    monkeypatch.setattr(mfp, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(mfp, "SPLIT_ROWS", 0)
    conns = _conns(db, 2)
    try:
        def disk_tables():
            return int(query(conns[0], "SHOW SESSION STATUS LIKE 'Created_tmp_disk_tables'")[0][1])

        before = disk_tables()
        got = mfp.table_fingerprints(conns[0], db, "full", conns[1:])
        after_full = disk_tables()
        mfp.table_fingerprints(conns[0], db, "rows")
        after_rows = disk_tables()
    finally:
        for c in conns:
            c.close()
    assert {k: (v["rows"], v["hash"]) for k, v in got.items()} == ALL_TYPES_GOLDEN
    # the hashes never spill to an on-disk temporary table: full mode creates no more than the catalog queries do
    assert after_full - before <= after_rows - after_full + 1


def test_parallel_sessions_share_the_dump_snapshot_under_concurrent_writes(mdb_database, age_keys, dump_dir,
                                                                            tmp_path, monkeypatch):
    db = mdb_database("bk_par")
    mdb_exec(db, "CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40), at DATETIME(6)) ENGINE=InnoDB",
             "CREATE TABLE audit (order_id BIGINT PRIMARY KEY, note VARCHAR(10)) ENGINE=InnoDB",
             "INSERT INTO orders (item, at) SELECT CONCAT('item ', seq), NOW(6) FROM seq_1_to_30000")
    monkeypatch.setattr(mfp, "SPLIT_ROWS", 0)  # every table split over the four sessions
    stop = threading.Event()
    inserted = [0]

    def writer():
        conn = mdb_connect(db, autocommit=False)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():  # updates spread over the whole key range, plus inserts at the end
                    cur.execute("INSERT INTO orders (item, at) VALUES ('concurrent', NOW(6))")
                    cur.execute("INSERT INTO audit VALUES (LAST_INSERT_ID(), 'x')")
                    cur.execute("UPDATE orders SET item = CONCAT(item, '+') WHERE id = 1 + FLOOR(RAND() * 30000)")
                    conn.commit()
                    inserted[0] += 1
        finally:
            conn.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.3)
        engine = MariadbEngine()
        policy = make_mdb_policy(db, source={"dsn": f"mariadb://root@{MDB_HOST}:{MDB_PORT}/{db}",
                                             "options": {"fingerprint_sessions": 4}})
        result, sink = dump(engine, policy, dump_dir(), age_keys)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    fp = result.fingerprints
    assert inserted[0] > 0
    assert result.details["fingerprint_sessions"] == 4
    assert result.consistency["exactness"] == "exact"
    assert "3 further fingerprint session(s)" in result.consistency["proof"]
    assert fp["`orders`"]["rows"] - 30000 == fp["`audit`"]["rows"] > 0  # one snapshot across sessions
    assert mdb_scalar(db, "SELECT COUNT(*) FROM orders") > fp["`orders`"]["rows"]  # writes went on
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        restore(engine, policy, scratch, sink, age_keys, result)
        assert engine.fingerprints(scratch=scratch, mode="full", like=fp) == fp  # the dump saw the same data
        scratch_exec(scratch, "UPDATE orders SET item = 'tampered' WHERE id = 29999")
        after = engine.fingerprints(scratch=scratch, mode="full", like=fp)
        assert after["`orders`"]["rows"] == fp["`orders`"]["rows"] and after["`orders`"]["hash"] != fp["`orders`"]["hash"]
    assert_torn_down(scratch)


def test_restore_spools_while_the_ephemeral_server_starts(mdb_database, age_keys, dump_dir, tmp_path, monkeypatch):
    db = mdb_database("bk_spool")
    mdb_exec(db, *GOLDEN_SQL)
    engine = MariadbEngine()
    policy = make_mdb_policy(db)
    result, sink = dump(engine, policy, dump_dir(), age_keys)
    real_start = mariadb_server.EphemeralServer.start

    def slow_start(self, *a, **kw):  # a slow host: the stream must be spooled, not lost or blocked on
        time.sleep(2.0)
        return real_start(self, *a, **kw)

    monkeypatch.setattr(mariadb_server.EphemeralServer, "start", slow_start)
    with engine.scratch(policy=policy, workdir=tmp_path / "d") as scratch:
        restore(engine, policy, scratch, sink, age_keys, result)
        assert scratch.info["restore_spooled_bytes"] > 1000
        assert engine.fingerprints(scratch=scratch, mode="full", like=result.fingerprints) == result.fingerprints
        leftovers = [p for p in (tmp_path / "d").rglob("*") if p.is_file() and "mariadb-scratch" not in str(p)]
        assert leftovers == []  # the spool was an unlinked temporary file
    assert_torn_down(scratch)


@pytest.mark.parametrize("options,needle", [
    ({"fingerprint_sessions": 0}, "field 'source.options.fingerprint_sessions': must be a whole number"),
    ({"fingerprint_sessions": 17}, "field 'source.options.fingerprint_sessions': must be a whole number"),
    ({"fingerprint_sessions": "2"}, "field 'source.options.fingerprint_sessions': must be a whole number"),
])
def test_fingerprint_sessions_is_validated_at_load(tmp_path, options, needle):
    import yaml

    f = tmp_path / "lis.yaml"
    f.write_text(yaml.safe_dump({"system": "lis", "tier": "30m", "engine": "mariadb",
                                 "source": {"dsn": "mariadb://u@h/db", "options": options}}))
    with pytest.raises(ConfigError) as e:
        load_policy(f)
    assert str(f) in str(e.value) and needle in str(e.value), str(e.value)


@pytest.mark.parametrize("fast", [True, False])
def test_ephemeral_server_bootstrap_and_install_db_fallback(tmp_path, monkeypatch, fast):
    if not fast:  # the system SQL files are not found: mariadb-install-db as before
        monkeypatch.setattr(mariadb_server, "bootstrap_sql", lambda install: None)
    server = mariadb_server.new_server(tmp_path / "w")
    server.start()
    try:
        assert server.bootstrapped.startswith("mariadbd --bootstrap") if fast else server.bootstrapped == ""
        conn = connect(server.endpoint(), what="test", pinned=False)
        try:
            users = {(u, h) for u, h in query(conn, "SELECT user, host FROM mysql.user")}
            assert ("root", "localhost") in users
            query(conn, "CREATE DATABASE t")
            query(conn, "CREATE TABLE t.x (id INT PRIMARY KEY) ENGINE=InnoDB")
            assert query(conn, "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 't'") == [("InnoDB",)]
            help_rows = int(query(conn, "SELECT COUNT(*) FROM mysql.help_topic")[0][0])
            assert (help_rows == 0) if fast else (help_rows > 0)
        finally:
            conn.close()
    finally:
        proof = server.stop()
    assert proof["datadir_exists"] is False and proof["server_pid_running"] is False


def test_fixed_length_temporal_parts_equal_the_published_encoding(mdb_database):
    """DATE, DATETIME(p) and TIMESTAMP(p) parts written with their constant length give the bytes of the
    published CONCAT('V', LENGTH(x), ':', x), for edge values too (zero dates, year 0001 and 9999)."""
    db = mdb_database("bk_fplen")
    mdb_exec(db, "SET SESSION sql_mode = ''",
             "CREATE TABLE d (id INT PRIMARY KEY, a DATE, b DATETIME, c DATETIME(1), e DATETIME(6), "
             "f TIMESTAMP NULL, g TIMESTAMP(3) NULL, h TIMESTAMP(6) NULL)",
             "INSERT INTO d VALUES (1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', "
             "'0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00'), "
             "(2, '0001-01-01', '0001-01-01 00:00:00', '2024-02-29 23:59:59.9', '9999-12-31 23:59:59.999999', "
             "'1970-01-01 00:00:01', '2038-01-19 03:14:07.999', '2001-02-03 04:05:06.000007'), "
             "(3, '2024-00-15', '2024-05-00 10:00:00', NULL, '1000-01-01 00:00:00', NULL, NULL, NULL)")
    conn = _conns(db, 1)[0]
    try:
        cols = mfp.table_columns(conn, db)["d"]
        lengths = mfp.fixed_lengths(conn, db)["d"]
        assert lengths == {"a": 10, "b": 19, "c": 21, "e": 26, "f": 19, "g": 23, "h": 26}
        for n, dt in cols[1:]:
            rows = query(conn, f"SELECT {mfp.column_expr(n, dt)} = {mfp.column_expr(n, dt, lengths[n])}, "
                               f"{mfp.column_expr(n, dt)} FROM d AS t ORDER BY id")
            assert all(int(r[0]) == 1 for r in rows), (n, rows)
        sums = [query(conn, mfp.table_sql("d", cols, "full", materialize=m, lengths=ln))[0]
                for m in (False, True) for ln in (None, lengths)]
        assert len({tuple(int(x) for x in s) for s in sums}) == 1
    finally:
        conn.close()


def test_connections_share_one_tls_context_and_still_use_tls_when_offered(tmp_path):
    """PyMySQL's default "preferred" TLS still negotiates TLS with a server that offers it, through the one
    context shared by every connection of the process; a server without TLS works as before."""
    import os
    import pwd
    import subprocess

    from backupkit.engines import mariadb_conn

    server = mariadb_server.new_server(tmp_path / "w", tcp=True)
    cert, key = server.root / "cert.pem", server.root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=scratch",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    if server.run_as:
        pw = pwd.getpwnam(server.run_as)
        for p in (cert, key):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    server.extra = [f"--ssl-cert={cert}", f"--ssl-key={key}"]
    server.start()
    try:
        ctxs = []
        for _ in range(2):
            conn = connect(server.endpoint(), what="test", pinned=False)
            try:
                assert query(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")[0][1]  # TLS negotiated
                ctxs.append(conn.ctx)
            finally:
                conn.close()
        assert ctxs[0] is ctxs[1] and isinstance(ctxs[0], mariadb_conn._SharedTlsContext)
        plain = connect(Endpoint(host=MDB_HOST, port=MDB_PORT, user="root"), what="test", pinned=False)
        try:
            assert plain.ctx is ctxs[0] and query(plain, "SELECT 1") == [(1,)]
        finally:
            plain.close()
    finally:
        server.stop()
