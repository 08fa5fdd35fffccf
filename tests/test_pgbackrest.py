"""PostgreSQL physical mode on pgBackRest, against a private archiving cluster (fixtures/pgbackrest.py):
backup (full and incremental) through the artifact pipeline, drills that restore with pgBackRest into a
private data directory and prove the data, and the faults: a change in the scratch, a missing WAL
segment, a corrupted repository file, a scratch that would be the source, missing server settings."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from backupkit.actions.backup import backup_one
from backupkit.actions.drill import run_drill
from backupkit.context import Context
from backupkit.engines import pgbackrest as pgbr_engine
from backupkit.engines.kit import proof_clean
from backupkit.engines.pgbackrest_plan import lsn_int, segments_between, settings_problems
from backupkit.engines.pgbackrest_repo import MemberFeed
from backupkit.errors import ConfigError, JobFailed

from fixtures.pgbackrest import his_on_cluster

HOSPITAL_SQL = [
    "CREATE TABLE patients (id bigserial PRIMARY KEY, name text NOT NULL, born date, photo bytea, tags text[])",
    "CREATE TABLE encounters (id bigint PRIMARY KEY, patient_id bigint REFERENCES patients(id), "
    "admitted timestamptz NOT NULL, ward text, data jsonb, cost numeric(12,2))",
    "CREATE INDEX encounters_ward ON encounters (ward)",
    "CREATE UNLOGGED TABLE scratchpad (k int, v text)",
    "INSERT INTO scratchpad SELECT g, 'x' FROM generate_series(1, 10) g",
    "INSERT INTO patients (name, born, photo, tags) SELECT '患者' || g, date '1950-01-01' + g % 20000, "
    "CASE WHEN g % 3 = 0 THEN decode(md5(g::text), 'hex') END, ARRAY['a' || g % 5, NULL] FROM generate_series(1, 3000) g",
    "INSERT INTO encounters SELECT g, 1 + g % 3000, now() - (g || ' minutes')::interval, "
    "(ARRAY['内科','外科','ICU'])[1 + g % 3], jsonb_build_object('bp', 120 + g % 30), g * 1.25 FROM generate_series(1, 6000) g",
]


@pytest.fixture
def pgbr_ws(workspace, pgbr_cluster):
    with his_on_cluster(workspace, pgbr_cluster, HOSPITAL_SQL, {"fingerprint": "full", "assertions": [
            {"name": "patients present", "sql": "SELECT count(*) FROM patients", "expect": "> 0"}]}) as ws:
        yield ws


def _manifest(ws) -> dict:
    return json.loads((ws.backups("his")[-1] / "manifest.json").read_text())


def _failed(record) -> list[dict]:
    return [c for c in record["checks"] if c["status"] == "failed"]


def test_cli_full_then_incremental_backup_and_drills_pass(pgbr_ws):
    ws, c = pgbr_ws, pgbr_ws.cluster
    ws.ok("backup", "his")  # and copied offsite
    m1 = _manifest(ws)
    pb1 = m1["details"]["pgbackrest"]
    assert sorted(s["name"] for s in m1["streams"]) == ["data", "fpkey"]
    assert pb1["type"] == "full" and pb1["chain"] == [pb1["label"]]
    assert pb1["lsn_start"] and pb1["lsn_stop"] and len(pb1["manifest_sha256"]) == 64 and pb1["size"] > 0
    assert m1["consistency"]["kind"] == "postgres-physical" and m1["consistency"]["exactness"] == "exact"
    assert m1["fingerprints"]["public.encounters"]["rows"] == 6000

    c.exec(ws.db_name, "INSERT INTO encounters SELECT g, 1, now(), 'ICU', NULL, 1 FROM generate_series(6001, 6500) g",
           "INSERT INTO patients (name) VALUES ('new')")
    ws.edit_policy(lambda d: d["source"]["pgbackrest"].update(type="incr"), system="his")
    ws.ok("backup", "his", "--no-copy")
    m2 = _manifest(ws)
    pb2 = m2["details"]["pgbackrest"]
    assert pb2["type"] == "incr" and pb2["prior"] == pb1["label"] and pb2["chain"] == [pb1["label"], pb2["label"]]
    assert m2["fingerprints"]["public.encounters"]["rows"] == 6500

    rec = json.loads(ws.ok("drill", "his", "--json").out)  # the newest: the incremental
    assert rec["verdict"] == "passed", rec["deviations"]
    passed = {c["name"] for c in rec["checks"] if c["status"] == "passed"}
    assert {"pg_checksums", "amcheck", "fingerprint public.encounters", "fingerprint public.patients",
            "fingerprint sequence public.patients_id_seq", "fingerprint schema", "assertion patients present"} <= passed
    enc = next(c for c in rec["checks"] if c["name"] == "fingerprint public.encounters")
    assert "rows=6500" in enc["detail"]
    unlogged = next(c for c in rec["checks"] if c["name"] == "fingerprint public.scratchpad")
    assert unlogged["status"] == "passed" and "not compared" in unlogged["detail"]
    assert rec["scratch"]["recovery"]["target_lsn"] == m2["consistency"]["lsn"]
    assert rec["scratch"]["data_checksums"] is True and rec["scratch"]["listen_addresses"] == ""
    # WAL is read back only from the private copy of the repository, never from production's
    assert f"--config={Path(rec['scratch']['datadir']).parent / 'pgbackrest.conf'}" in rec["scratch"]["restore_command"]
    assert proof_clean(rec["teardown"]) and not Path(rec["teardown"]["datadir"]).exists()

    assert "0 failed" in ws.ok("verify", "--deep").out
    rec1 = json.loads(ws.ok("drill", "his", "--from", "offsite", "--backup", ws.backups("his")[0].name, "--json").out)
    assert rec1["copy"]["location"] == "target"
    assert rec1["verdict"] == "passed", rec1["deviations"]
    enc1 = next(c for c in rec1["checks"] if c["name"] == "fingerprint public.encounters")
    assert "rows=6000" in enc1["detail"]


def test_change_in_scratch_is_caught_exit_3(pgbr_ws):
    ws = pgbr_ws
    ws.ok("backup", "his", "--no-copy")
    ctx = Context.load(ws.config)

    def tamper(engine, scratch):
        with engine._pg._connect(scratch) as conn:
            conn.execute("UPDATE encounters SET ward = 'X' WHERE id = 42")

    out = run_drill(ctx, ctx.policy("his"), after_restore=tamper)
    ctx.close()
    assert out.exit_code == 3
    assert [c["name"] for c in _failed(out.record)] == ["fingerprint public.encounters"]
    assert proof_clean(out.record["teardown"])


def _backup_with_hook(ws, monkeypatch, hook):
    """backupkit backup in process, with ``hook(repo_archive_dir, segment)`` run once the WAL is archived."""
    real = pgbr_engine.wait_archived

    def wait(archive_dir, segment, what, timeout):
        real(archive_dir, segment, what, timeout)
        hook(archive_dir, segment)

    monkeypatch.setattr(pgbr_engine, "wait_archived", wait)
    ctx = Context.load(ws.config)
    try:
        return backup_one(ctx, ctx.policy("his"), copy=False)
    finally:
        ctx.close()


def test_missing_wal_segment_fails_backup_and_drill_naming_it(pgbr_ws, monkeypatch):
    ws = pgbr_ws
    lost: list[Path] = []

    def lose_a_segment(archive_dir, segment):
        # the newest backup's first segment, named by its backup history file (<segment>.<offset>.backup):
        # always inside the range the backup needs (which other archived files are depends on timing)
        start = max(p.name for p in archive_dir.rglob("*.backup"))[:24]
        (f,) = archive_dir.rglob(f"{start}-*")
        lost.append(f)
        f.rename(f.with_name("moved-away"))

    out = _backup_with_hook(ws, monkeypatch, lose_a_segment)
    assert not out.ok and f"WAL segment {lost[0].name[:24]} is missing" in str(out.error), out.error
    assert not ws.backups("his")  # nothing committed
    lost[0].with_name("moved-away").rename(lost[0])
    monkeypatch.undo()

    # A backup whose artifact lacks a segment (the packer was told to leave it out): the drill names it.
    real_files = pgbr_engine.segment_files
    dropped: list[str] = []

    def files_without_one(directory, segments):
        files, missing = real_files(directory, segments)
        dropped.append(segments[0])
        return [f for f in files if not f.name.startswith(segments[0])], missing

    monkeypatch.setattr(pgbr_engine, "segment_files", files_without_one)
    ctx = Context.load(ws.config)
    assert backup_one(ctx, ctx.policy("his"), copy=False).ok
    monkeypatch.undo()
    out = run_drill(ctx, ctx.policy("his"))
    ctx.close()
    assert out.exit_code == 3
    assert dropped[0] in out.record["deviations"][0] or any(dropped[0] in (s.get("detail") or "") for s in out.record["timeline"])
    assert proof_clean(out.record["teardown"])


def test_a_failure_while_the_set_is_packed_records_nothing_and_leaves_no_thread(pgbr_ws, monkeypatch):
    """The backup set is packed, compressed and encrypted while the fingerprints are taken: when they fail,
    the packing stops, nothing is committed or recorded as good, and no packing thread is left behind."""
    import threading

    ws = pgbr_ws
    started: list[bool] = []

    def fail_after_packing_started(*args, **kwargs):
        started.append(any(t.name == "pgbackrest-stream" and t.is_alive() for t in threading.enumerate()))
        raise JobFailed("policy his: the fingerprint snapshot failed (test)")

    monkeypatch.setattr(pgbr_engine, "snapshot_fingerprints", fail_after_packing_started)
    ctx = Context.load(ws.config)
    out = backup_one(ctx, ctx.policy("his"), copy=False)
    ctx.close()
    assert started == [True]  # it was packing while the fingerprints ran
    assert not out.ok and "the fingerprint snapshot failed (test)" in str(out.error)
    assert not ws.backups("his")
    assert not [t.name for t in threading.enumerate() if t.name.startswith("pgbackrest-")]
    assert not [b for _, _, _, b in ws.ledger_rows("backup")]


def test_member_feed_packs_the_set_then_the_wal_or_stops_at_the_next_file():
    a, b, w = (Path("a"), "repo/a"), (Path("b"), "repo/b"), (Path("w"), "repo/w")
    feed = MemberFeed([a, b])
    it = iter(feed)
    assert next(it) == a and next(it) == b
    feed.finish([w])
    assert list(it) == [w]
    feed = MemberFeed([a, b])
    it = iter(feed)
    assert next(it) == a
    feed.cancel("stopped (test)")
    with pytest.raises(JobFailed, match="stopped"):
        next(it)  # at the next file, before the rest of the set
    feed = MemberFeed([])
    feed.cancel()
    with pytest.raises(JobFailed, match="before its WAL was known"):
        list(feed)


def test_corrupted_repository_file_fails_the_drill(pgbr_ws, monkeypatch):
    ws = pgbr_ws
    corrupted: list[Path] = []

    real_members = pgbr_engine.repo_members

    def corrupt_then_list(repo, stanza, labels, arch, segments):
        # right after pgbackrest backup, before backupkit packs the set (it packs while fingerprinting)
        newest = repo / "backup" / stanza / labels[-1]
        f = max((p for p in (newest / "pg_data" / "base").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        data = bytearray(f.read_bytes())
        for i in range(len(data) // 2, len(data) // 2 + 64):
            data[i] ^= 0xFF
        f.write_bytes(bytes(data))
        corrupted.append(f)
        return real_members(repo, stanza, labels, arch, segments)

    monkeypatch.setattr(pgbr_engine, "repo_members", corrupt_then_list)
    ctx = Context.load(ws.config)
    assert backup_one(ctx, ctx.policy("his"), copy=False).ok  # backupkit packs what pgBackRest stored
    ctx.close()
    monkeypatch.undo()
    verify = ws.cluster.pgbackrest("verify", "--output=text", check=False)  # pgBackRest's own check fails too
    assert corrupted and "status: error" in verify.stdout and "checksum invalid: 1" in verify.stdout, verify
    ctx = Context.load(ws.config)
    out = run_drill(ctx, ctx.policy("his"))
    ctx.close()
    assert out.exit_code in (3, 4) and out.record["verdict"] != "passed"
    assert out.record["failed_step"] == "restore", out.record
    assert "pgbackrest restore" in out.record["deviations"][0] or "restore" in out.record["deviations"][0]
    assert proof_clean(out.record["teardown"])


def test_scratch_that_would_be_the_source_is_refused(pgbr_ws):
    ws, c = pgbr_ws, pgbr_ws.cluster
    ws.ok("backup", "his", "--no-copy")
    ws.edit_policy(lambda d: d["drill"].update(scratch={"type": "database", "dsn": c.dsn(ws.db_name)}), system="his")
    r = ws.run("drill", "his")  # refused when the policy loads: a physical copy needs its own cluster
    assert r.code == 2 and "ephemeral" in r.err and "drill.scratch" in r.err, r
    assert not ws.ledger_rows("drill")

    ws.edit_policy(lambda d: d["drill"].pop("scratch"), system="his")
    ctx = Context.load(ws.config)
    policy = ctx.policy("his")
    ctx.close()
    inside = c.repo / "drill-work"
    with pytest.raises(ConfigError, match="overlaps the pgBackRest repository"):
        with pgbr_engine.PgBackrestEngine().scratch(policy=policy, workdir=inside):
            pass
    assert not inside.exists()
    with pytest.raises(ConfigError, match="overlaps the source data directory"):
        with pgbr_engine.PgBackrestEngine().scratch(policy=policy, workdir=c.datadir / "x"):
            pass
    assert not (c.datadir / "x").exists()


def test_missing_server_settings_print_the_lines_to_add(pgbr_ws):
    ws = pgbr_ws
    ws.edit_policy(lambda d: d["source"]["pgbackrest"].update(stanza="other"), system="his")
    r = ws.run("backup", "his", "--no-copy")
    assert r.code != 0
    assert "archive_command = 'pgbackrest" in r.err and "--stanza=other archive-push %p'" in r.err, r
    assert "never edits" in r.err
    assert settings_problems({"wal_level": "minimal", "archive_mode": "off", "archive_command": ""},
                             stanza="s", config=None) == [
        "wal_level = replica", "archive_mode = on", "archive_command = 'pgbackrest --stanza=s archive-push %p'"]
    assert segments_between("0000000100000000000000FE", "000000010000000100000001", 1 << 24) == [
        "0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000", "000000010000000100000001"]
    with pytest.raises(ValueError):
        segments_between("000000010000000000000100", "000000010000000100000001", 1 << 24)  # no such segment


def test_cross_proof_recovers_to_the_logical_backups_lsn(pgbr_ws):
    """Physical backup, then writes, then a logical backup of the same database: `backupkit drill` recovers a
    second copy of the physical backup to the logical snapshot's LSN and finds the logical manifest's fingerprints."""
    ws, c = pgbr_ws, pgbr_ws.cluster
    ws.ok("backup", "his", "--no-copy")
    physical_id = ws.backups("his")[0].name
    rec = json.loads(ws.ok("drill", "his", "--json").out)  # cross_proof off: no such check
    assert not [k for k in rec["checks"] if k["name"].startswith("cross-proof")]
    c.exec(ws.db_name, "INSERT INTO encounters SELECT g, 2, now(), '内科', NULL, 2 FROM generate_series(7001, 7300) g",
           "UPDATE patients SET name = name || '*' WHERE id % 10 = 0")
    ws.edit_policy(lambda d: (d["source"].pop("mode"), d["source"].pop("pgbackrest")), system="his")
    ws.ok("backup", "his", "--no-copy")  # logical, same system, same database
    logical_id = next(p.name for p in ws.backups("his") if p.name != physical_id)
    c.exec(ws.db_name, "DELETE FROM encounters WHERE id > 7000")  # after the logical snapshot: must not be seen
    c.pgbackrest("check")  # switch and archive the WAL holding the logical snapshot's LSN
    ws.edit_policy(lambda d: d["source"].update(mode="pgbackrest", pgbackrest={
        **c.source(ws.db_name)["pgbackrest"], "cross_proof": True}), system="his")

    r = ws.run("drill", "his", "--backup", physical_id, "--json")
    assert r.code == 0, r
    rec = json.loads(r.out)
    (check,) = [k for k in rec["checks"] if k["name"].startswith("cross-proof")]
    assert check["name"] == f"cross-proof logical his/{logical_id}" and check["status"] == "passed", check
    assert check["proves_data"] is True
    logical = json.loads((ws.repo / "his" / logical_id / "manifest.json").read_text())
    assert check["data"]["lsn"] == logical["consistency"]["lsn"] and check["data"]["entries"] >= 5
    assert check["data"]["wal_from_live_repository"] and proof_clean(check["data"]["teardown"])
    assert "cross_proof" in [s["step"] for s in rec["timeline"]]


def test_concurrent_writes_during_backup_still_drill_exact(pgbr_ws):
    """Writers commit all through the backup and the snapshot: the copy recovered to the recorded LSN holds
    exactly the snapshot's transactions (sequence positions included)."""
    import threading

    ws, c = pgbr_ws, pgbr_ws.cluster
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            with c.connect(ws.db_name) as conn:
                while not stop.is_set():
                    conn.execute("INSERT INTO patients (name) VALUES ('busy')")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        ctx = Context.load(ws.config)
        out = backup_one(ctx, ctx.policy("his"), copy=False)
        ctx.close()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert out.ok, out.error
    assert not errors
    m = _manifest(ws)
    assert m["consistency"]["exactness"] == "exact", m["consistency"].get("approximate_because")
    assert "proof" in m["consistency"]
    rec = json.loads(ws.ok("drill", "his", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]
    assert m["fingerprints"]["public.patients"]["rows"] > 3000


@contextlib.contextmanager
def held_commit(c, db: str):
    """One INSERT into ``db``'s patients ('stuck in sync rep') whose commit record is in WAL (and committed in
    pg_xact) but that stays invisible to snapshots while the block runs: it waits for a synchronous standby
    ('nobody') that never comes. Released (committed, visible) on exit."""
    import threading

    stuck: dict = {}

    def hold_a_commit():
        conn = c.connect(db)
        stuck["conn"] = conn
        stuck["pid"] = conn.info.backend_pid
        with contextlib.suppress(psycopg.Error):  # cancelled at the end: "canceling wait for synchronous replication"
            conn.execute("INSERT INTO patients (name) VALUES ('stuck in sync rep')")

    c.exec("postgres", "ALTER SYSTEM SET synchronous_standby_names = 'nobody'", "SELECT pg_reload_conf()")
    try:
        t = threading.Thread(target=hold_a_commit)
        t.start()
        stuck["thread"] = t
        for _ in range(200):
            if c.scalar("postgres", "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the inserting session never waited for the synchronous standby")
        yield
    finally:
        c.exec("postgres", "ALTER SYSTEM RESET synchronous_standby_names", "SELECT pg_reload_conf()")
        if "pid" in stuck:
            c.exec("postgres", f"SELECT pg_cancel_backend({stuck['pid']})")
            stuck["thread"].join()
            stuck["conn"].close()


def test_commit_in_wal_but_invisible_to_the_snapshot_moves_the_recovery_target(pgbr_ws, monkeypatch):
    """A transaction waiting for a synchronous standby has its commit record in WAL (and is committed in
    pg_xact) but is still invisible to snapshots: recovered to the snapshot's WAL position, the copy would
    hold its row. The backup reads the WAL and stops replay before that commit record; the drill passes,
    exactly, and the row is not in the copy."""
    from backupkit.engines import pgbackrest_snapshot

    ws, c = pgbr_ws, pgbr_ws.cluster
    real = pgbackrest_snapshot.snapshot_fingerprints
    holding: list = []

    def with_a_held_commit(*args, **kwargs):
        cm = held_commit(c, ws.db_name)
        cm.__enter__()
        holding.append(cm)
        return real(*args, **kwargs)

    monkeypatch.setattr(pgbr_engine, "snapshot_fingerprints", with_a_held_commit)
    try:
        ctx = Context.load(ws.config)
        out = backup_one(ctx, ctx.policy("his"), copy=False)
        ctx.close()
    finally:
        for cm in holding:
            cm.__exit__(None, None, None)
    assert out.ok, out.error
    con = _manifest(ws)["consistency"]
    assert con["exactness"] == "exact", con.get("approximate_because")
    assert con["snapshot_lsn"] != con["lsn"] == con["recovery_target_lsn"]
    assert lsn_int(con["lsn"]) < lsn_int(con["snapshot_lsn"])
    assert "pg_waldump" in con["proof"]
    assert c.scalar(ws.db_name, "SELECT count(*) FROM patients WHERE name = 'stuck in sync rep'") == 1  # committed
    rec = json.loads(ws.ok("drill", "his", "--json").out)
    assert rec["verdict"] == "passed", rec["deviations"]
    assert _manifest(ws)["fingerprints"]["public.patients"]["rows"] == 3000


def test_cross_proof_stops_before_a_commit_the_logical_snapshot_does_not_see(pgbr_ws):
    """A logical backup taken while a commit record is in WAL but its transaction still invisible: replayed to
    the logical snapshot's WAL position, the physical copy would hold that row and the cross-proof would fail a
    correct backup. The drill reads the WAL, stops replay before that commit, and the cross-proof passes."""
    ws, c = pgbr_ws, pgbr_ws.cluster
    ws.ok("backup", "his", "--no-copy")
    physical_id = ws.backups("his")[0].name
    ws.edit_policy(lambda d: (d["source"].pop("mode"), d["source"].pop("pgbackrest")), system="his")
    with held_commit(c, ws.db_name):
        ws.ok("backup", "his", "--no-copy")  # logical, while the INSERT's commit record is in WAL, invisible
    logical_id = next(p.name for p in ws.backups("his") if p.name != physical_id)
    logical = json.loads((ws.repo / "his" / logical_id / "manifest.json").read_text())
    assert logical["fingerprints"]["public.patients"]["rows"] == 3000  # the snapshot did not see it
    assert c.scalar(ws.db_name, "SELECT count(*) FROM patients WHERE name = 'stuck in sync rep'") == 1  # committed
    c.pgbackrest("check")  # switch and archive the WAL holding the logical snapshot's LSN
    ws.edit_policy(lambda d: d["source"].update(mode="pgbackrest", pgbackrest={
        **c.source(ws.db_name)["pgbackrest"], "cross_proof": True}), system="his")

    r = ws.run("drill", "his", "--backup", physical_id, "--json")
    rec = json.loads(r.out)
    (check,) = [k for k in rec["checks"] if k["name"].startswith("cross-proof")]
    assert r.code == 0 and check["status"] == "passed", check
    data = check["data"]
    assert data["lsn"] == logical["consistency"]["lsn"]
    assert lsn_int(data["target_lsn"]) < lsn_int(data["lsn"]), data
    assert "before the WAL position but after the snapshot" in data["recovery_target"], data
    assert f"recovered to LSN {data['target_lsn']}, before the logical snapshot's LSN {data['lsn']}" in check["detail"]


def test_encrypted_repository_drills_with_the_cipher_pass_file_and_never_shows_it(workspace, pgbr_cluster_encrypted):
    from fixtures.pgbackrest import CIPHER_PASS

    from backupkit.keys import write_private

    ws, c = workspace, pgbr_cluster_encrypted
    c.exec("postgres", "CREATE DATABASE enc")
    c.exec("enc", *HOSPITAL_SQL)
    pass_file = ws.root / "pgbr-cipher.pass"
    source = c.source("enc")
    policy = {"system": "his", "tier": "30m", "rpo": "24h", "engine": "postgres", "source": source,
              "drill": {"fingerprint": "full"}}
    ws.policy_file("demo-lis").unlink()
    ws.policy_file("his").write_text(yaml.safe_dump(policy))
    ws.ok("backup", "his", "--no-copy")
    m = _manifest(ws)
    assert m["details"]["pgbackrest"]["repo_cipher"] == "aes-256-cbc"

    r = ws.run("drill", "his")  # no cipher_pass_file: refused, naming the field
    assert r.code == 2 and "source.pgbackrest.cipher_pass_file" in r.err, r

    write_private(pass_file, (CIPHER_PASS + "\n").encode())
    ws.edit_policy(lambda d: d["source"]["pgbackrest"].update(cipher_pass_file=str(pass_file)), system="his")
    r = ws.run("drill", "his", "--json")
    assert r.code == 0, r
    assert json.loads(r.out)["verdict"] == "passed"
    for text in (r.out, r.err, (ws.backups("his")[0] / "manifest.json").read_text(),
                 json.dumps([row[3] for row in ws.ledger_rows()], default=str)):
        assert CIPHER_PASS not in text


def test_pure_decisions_of_the_plan():
    from backupkit.engines.pgbackrest_plan import chain, new_backup, segment_of_lsn

    stanza = {"name": "bk", "backup": [{"label": "F1", "prior": None}, {"label": "F1_D2", "prior": "F1"},
                                       {"label": "F1_I3", "prior": "F1_D2"}]}
    assert chain(stanza, "F1_I3") == ["F1", "F1_D2", "F1_I3"]
    assert new_backup({"F1", "F1_D2"}, stanza)["label"] == "F1_I3" and new_backup({"F1", "F1_D2", "F1_I3"}, stanza) is None
    with pytest.raises(KeyError):
        chain({"backup": [{"label": "X", "prior": "gone"}]}, "X")  # a chain whose full was expired
    ok = {"wal_level": "replica", "archive_mode": "on",
          "archive_command": "pgbackrest --config=/etc/p.conf --stanza=main archive-push %p"}
    assert settings_problems(ok, stanza="main", config=None) == []
    assert settings_problems(ok, stanza="mai", config=None)  # another stanza's archive_command does not count
    seg = 1 << 24
    assert segment_of_lsn(1, "0/3000000", seg) == "000000010000000000000002"  # boundary: the byte before
    assert segment_of_lsn(1, "0/3000028", seg) == "000000010000000000000003"
    assert segment_of_lsn(2, "1/0", seg) == "0000000200000000000000FF"


def _sets(ws) -> list[str]:
    info = json.loads(ws.cluster.pgbackrest("info", "--output=json").stdout)
    return [b["label"] for b in info[0].get("backup") or []]


def test_prune_expires_only_the_pgbackrest_sets_of_pruned_backups_never_the_drilled_one(pgbr_ws):
    """Retention (policy numbers) decides which backups go; `prune` then runs `pgbackrest expire --set` for the
    sets only those backups used. The newest backup whose drill passed keeps its set, so does the newest, so
    does a set backupkit did not take (the DBA's own)."""
    ws, c = pgbr_ws, pgbr_ws.cluster
    ws.edit_policy(lambda d: (d["source"]["pgbackrest"].update(expire=True),
                              d.update(retention={"daily": 1, "weekly": 0, "monthly": 0, "yearly": 0})), system="his")
    earlier = set(_sets(ws))  # other tests' sets in the shared stanza: not this system's, never expired
    labels = []
    for i in range(3):
        ws.ok("backup", "his", "--no-copy")
        labels.append(_manifest(ws)["details"]["pgbackrest"]["label"])
        if i == 0:
            assert json.loads(ws.ok("drill", "his", "--json").out)["verdict"] == "passed"
    c.pgbackrest("backup", "--type=full")  # the DBA's own backup, outside backupkit
    dba = [lbl for lbl in _sets(ws) if lbl not in labels and lbl not in earlier]
    assert len(dba) == 1
    ids = [p.name for p in ws.backups("his")]

    dry = ws.ok("prune", "--dry-run").out
    assert f"his on pgbackrest:bk:repo1: would remove 1, kept {len(earlier) + 3}" in dry
    assert f"remove  {labels[1]}" in dry and f"keep    {labels[0]}" in dry
    assert labels[1] in _sets(ws)  # a dry run expires nothing

    ws.ok("prune")
    assert sorted(_sets(ws)) == sorted([*earlier, labels[0], labels[2], *dba])
    assert [p.name for p in ws.backups("his")] == [ids[0], ids[2]]
    done = [json.loads(body) for _, _, subject, body in ws.ledger_rows("prune") if subject.startswith("pgbackrest:")]
    assert [d["removed"] for d in done] == [[labels[1]]]
    assert json.loads(ws.ok("drill", "his", "--backup", ids[0], "--json").out)["verdict"] == "passed"
