"""Point-in-time drills (`backupkit drill SYS --to-time T`) of PostgreSQL physical mode (pgBackRest),
against a private archiving cluster (fixtures/pgbackrest.py): recovery to exactly T proven by the
policy's assertions, a T the archived WAL does not reach, the refusals, and the pure rule that keeps
a point-in-time drill from standing in for the regular drill in status / due / retention."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backupkit.actions.drill import PITR_NO_FINGERPRINTS, parse_to_time, pitr_base, pitr_reached
from backupkit.actions.status import assess
from backupkit.due import counts_as_regular_drill
from backupkit.engines import pitr_refusal
from backupkit.engines.kit import proof_clean
from backupkit.errors import ConfigError
from backupkit.history import history, protected
from backupkit.ledger import Record
from backupkit.policy import Policy

from fixtures.pgbackrest import his_on_cluster

ASSERTIONS = [
    {"name": "rows A present", "sql": "SELECT count(*) FROM events WHERE batch = 'A'", "expect": "= 300"},
    {"name": "rows B present", "sql": "SELECT count(*) FROM events WHERE batch = 'B'", "expect": "= 200"},
    {"name": "rows C absent", "sql": "SELECT count(*) FROM events WHERE batch = 'C'", "expect": "= 0"},
]


@pytest.fixture
def pitr_ws(workspace, pgbr_cluster):
    with his_on_cluster(workspace, pgbr_cluster, [
            "CREATE TABLE events (id bigserial PRIMARY KEY, batch text NOT NULL, at timestamptz "
            "DEFAULT clock_timestamp())", "INSERT INTO events (batch) SELECT 'A' FROM generate_series(1, 300)"],
            {"fingerprint": "full", "assertions": ASSERTIONS}) as ws:
        yield ws


def _switch_and_wait_archived(c) -> str:
    """pg_switch_wal(), then wait until the switched segment is archived; returns its name."""
    seg = c.scalar("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
    for _ in range(600):
        if (c.scalar("postgres", "SELECT last_archived_wal FROM pg_stat_archiver") or "") >= seg:
            return seg
        time.sleep(0.1)
    pytest.fail(f"WAL segment {seg} was not archived within 60s")


def _drill_records(ws) -> list[dict]:
    return [json.loads(body) for _, _, _, body in ws.ledger_rows("drill")]


def _status_row(ws) -> dict:
    r = ws.run("status", "--json")
    return next(row for row in json.loads(r.out) if row["system"] == "his")


def test_pitr_drill_recovers_to_the_time_and_the_assertions_prove_it(pitr_ws):
    ws, c = pitr_ws, pitr_ws.cluster
    ws.ok("backup", "his", "--no-copy")
    backup_id = ws.backups("his")[-1].name
    c.exec(ws.db_name, "INSERT INTO events (batch) SELECT 'B' FROM generate_series(1, 200)")
    t = c.scalar("postgres", "SELECT clock_timestamp()")  # after B's commit, before C's
    time.sleep(0.2)
    c.exec(ws.db_name, "INSERT INTO events (batch) SELECT 'C' FROM generate_series(1, 100)")
    last = _switch_and_wait_archived(c)
    to_time = t.astimezone(timezone(timedelta(hours=8))).isoformat()  # an offset other than the server's

    r = ws.run("drill", "his", "--to-time", to_time)
    assert r.code == 0, r
    assert f"point-in-time drill to {to_time} from backup {backup_id}" in r.out
    assert "fingerprints not compared: this is a point-in-time drill" in r.out
    assert "RPO not applicable" in r.out

    (rec,) = _drill_records(ws)
    assert rec["verdict"] == "passed", rec["deviations"]
    assert rec["mode"] == "pitr" and rec["backup_id"] == backup_id
    p = rec["pitr"]
    assert p["target_time"] == to_time and p["base_backup"] == backup_id
    assert p["fingerprints"] == PITR_NO_FINGERPRINTS
    assert p["wal_from_live_repository"] and p["wal_from_live_repository"][1] == p["last_wal_available"]
    assert p["last_wal_available"] >= last[:24]
    wal = p["wal_replayed"]
    manifest = json.loads((ws.backups("his")[-1] / "manifest.json").read_text())
    assert wal["first"] == manifest["details"]["pgbackrest"]["wal_segments"][0]
    assert wal["count"] >= 2 and wal["first"] <= wal["last"] <= p["last_wal_available"]
    assert "recovery stopping before commit" in (p["recovery_stopped"] or ""), p
    replayed = datetime.fromisoformat(p["last_replayed_transaction"])
    assert replayed <= t  # B's commit, at or before T; C's commit (after T) was not replayed
    assert p["recovery_seconds"] is not None and p["restore_seconds"] is not None

    names = {ch["name"]: ch for ch in rec["checks"]}
    assert not [n for n in names if n.startswith("fingerprint")]  # no fingerprints compared
    reached = names["recovery to --to-time"]
    assert reached["status"] == "passed" and reached["proves_data"] is False, reached
    assert "replay stopped before the commit of transaction" in reached["detail"]
    assert {"pg_checksums", "amcheck"} <= {n for n, ch in names.items() if ch["status"] == "passed"}
    for a in ("rows A present", "rows B present", "rows C absent"):
        assert names[f"assertion {a}"]["status"] == "passed" and names[f"assertion {a}"]["proves_data"] is True
    assert rec["rpo"]["judged"] is False and rec["rpo"]["met"] is None and "not applicable" in rec["rpo"]["not_applicable"]
    assert rec["rpo"]["recovery_point"] == to_time
    assert rec["scratch"]["recovery"]["target_time"] == to_time and rec["scratch"]["recovery"]["inclusive"] is False
    assert proof_clean(rec["teardown"]) and not Path(rec["teardown"]["datadir"]).exists()

    # visible in the ledger, but no stand-in for the regular drill: status still wants one, --due still drills
    row = _status_row(ws)
    assert row["drill_ok"] is False and row["last_drill"] is None and "no passing drill yet" in row["problems"]
    ws.edit_policy(lambda d: d["drill"].update(assertions=ASSERTIONS[:1]), system="his")  # the backup has no B rows
    assert ws.run("drill", "--due", "--json").code == 0
    assert len(_drill_records(ws)) == 2 and "mode" not in _drill_records(ws)[1]
    assert _status_row(ws)["drill_ok"] is True


def test_pitr_drill_to_a_time_the_archived_wal_does_not_reach_fails_naming_it(pitr_ws):
    ws, c = pitr_ws, pitr_ws.cluster
    ws.ok("backup", "his", "--no-copy")
    c.exec(ws.db_name, "INSERT INTO events (batch) SELECT 'B' FROM generate_series(1, 200)")
    _switch_and_wait_archived(c)
    to_time = "2099-01-01T00:00:00+00:00"
    r = ws.run("drill", "his", "--to-time", to_time)
    assert r.code == 3, r
    (line,) = [ln for ln in r.err.splitlines() if "drill of his failed" in ln]
    assert f"recovery ended before reaching --to-time {to_time}" in line
    (rec,) = _drill_records(ws)
    assert rec["verdict"] == "failed" and rec["failed_step"] == "restore" and rec["mode"] == "pitr"
    assert f"the archived WAL ends with segment {rec['pitr']['last_wal_available']}" in line
    assert proof_clean(rec["teardown"])
    row = _status_row(ws)  # a failed point-in-time drill is not "the last drill failed" of the regular drill
    assert "the last drill failed" not in row["problems"] and row["last_drill"] is None


def test_pitr_refusals_name_the_option_and_record_nothing(pitr_ws):
    ws = pitr_ws
    r = ws.run("drill", "his", "--to-time", "2026-11-28T06:10:00")
    assert r.code == 2 and "--to-time" in r.err and "UTC offset" in r.err, r
    r = ws.run("drill", "his", "--to-time", "yesterday")
    assert r.code == 2 and "--to-time" in r.err and "ISO 8601" in r.err, r
    r = ws.run("drill", "--to-time", "2026-11-28T06:10:00+08:00")
    assert r.code == 2 and "--to-time" in r.err and "SYSTEM" in r.err, r

    ws.ok("backup", "his", "--no-copy")
    backup_id = ws.backups("his")[-1].name
    r = ws.run("drill", "his", "--to-time", "2000-01-01T00:00:00+00:00")
    assert r.code == 2 and "--to-time 2000-01-01T00:00:00+00:00" in r.err and "no physical backup" in r.err, r
    assert backup_id in r.err  # names the oldest there is
    r = ws.run("drill", "his", "--backup", backup_id, "--to-time", "2000-01-01T00:00:00+08:00")
    assert r.code == 2 and f"--backup {backup_id}" in r.err and "after --to-time" in r.err, r

    ws.edit_policy(lambda d: d["drill"].pop("assertions"), system="his")
    r = ws.run("drill", "his", "--to-time", "2099-01-01T00:00:00+00:00")
    assert r.code == 2 and "--to-time" in r.err and "drill.assertions" in r.err, r

    ws.edit_policy(lambda d: (d["source"].pop("mode"), d["source"].pop("pgbackrest"),
                              d["drill"].update(assertions=ASSERTIONS)), system="his")  # logical mode
    r = ws.run("drill", "his", "--to-time", "2099-01-01T00:00:00+00:00")
    assert r.code == 2 and "--to-time" in r.err and "mode logical" in r.err and "mode: pgbackrest" in r.err, r
    assert not ws.ledger_rows("drill")


# ---- pure rules --------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
H, D = timedelta(hours=1), timedelta(days=1)


def _rec(seq, kind, age, subject, **body):
    return Record(seq, (NOW - age).isoformat(), kind, "his", subject, body, "", "", "", "")


def _drill(seq, age, backup_id, verdict="passed", pitr=False):
    body = {"verdict": verdict, "backup_id": backup_id, "rto": {"measured_seconds": 60}}
    if pitr:
        body.update(mode="pitr", pitr={"target_time": (NOW - age).isoformat(), "base_backup": backup_id})
    return _rec(seq, "drill", age, f"D{seq}", **body)


def _policy():
    return Policy.model_validate({"system": "his", "tier": "30m", "rpo": "24h", "engine": "sqlite",
                                  "source": {"path": "/x"}, "targets": [], "drill": {"every": "30d"}})


def test_a_pitr_drill_never_stands_in_for_the_regular_drill():
    assert counts_as_regular_drill({"verdict": "passed"}) and counts_as_regular_drill({})
    assert counts_as_regular_drill("not a dict") and counts_as_regular_drill({"mode": "regular"})
    assert not counts_as_regular_drill({"mode": "pitr", "verdict": "passed"})

    backups = [_rec(1, "backup", 3 * D, "B1"), _rec(2, "backup", H, "B2")]
    # only a passing PITR drill of the latest backup: status still wants a drill, nothing is protected by it
    st = assess(_policy(), backups + [_drill(3, H, "B2", pitr=True)], NOW)
    assert st.drill_ok is False and st.last_drill is None and "no passing drill yet" in st.problems
    assert protected(history(backups + [_drill(3, H, "B2", pitr=True)], "his"), ["B1", "B2"]) == {}

    # a regular pass, then a failed PITR drill of the same backup: the regular drill still counts and
    # that backup stays the newest whose latest drill passed (retention keeps it)
    recs = backups + [_drill(3, 2 * H, "B2"), _drill(4, H, "B2", verdict="failed", pitr=True)]
    st = assess(_policy(), recs, NOW)
    assert st.drill_ok is True and st.last_drill == "D3" and st.last_drill_verdict == "passed"
    assert "the last drill failed" not in st.problems
    assert list(protected(history(recs, "his"), ["B1", "B2"])) == ["B2"]

    # a regular failure after a PITR pass is still the last drill, failed
    recs = backups + [_drill(3, 2 * H, "B2", pitr=True), _drill(4, H, "B2", verdict="failed")]
    st = assess(_policy(), recs, NOW)
    assert st.last_drill == "D4" and "the last drill failed" in st.problems and st.drill_ok is False


def test_pitr_base_choice_and_time_parsing():
    phys = lambda t: {"consistency": {"kind": "postgres-physical", "time": t}}  # noqa: E731
    cands = [("B1", phys("2026-11-27T02:00:00+00:00")), ("L1", {"consistency": {"kind": "postgres",
                                                                               "time": "2026-11-27T23:00:00+00:00"}}),
             ("B2", phys("2026-11-28T02:00:00+00:00")), ("B3", phys("2026-11-29T02:00:00+00:00"))]
    t = parse_to_time("2026-11-28T12:00:00+08:00")  # 04:00 UTC
    assert t == datetime(2026, 11, 28, 4, tzinfo=timezone.utc)
    assert pitr_base(cands, t, None, "his") == "B2"
    assert pitr_base(cands, parse_to_time("2026-11-28T01:00:00Z"), None, "his") == "B1"  # a logical one never
    assert pitr_base(cands, parse_to_time("2026-11-28T02:00:00Z"), None, "his") == "B2"  # consistent at T: usable
    assert pitr_base(cands, t, "B1", "his") == "B1"
    with pytest.raises(ConfigError, match="--backup B3: its consistency time .* is after --to-time"):
        pitr_base(cands, t, "B3", "his")
    with pytest.raises(ConfigError, match="--backup L1: is not a physical"):
        pitr_base(cands, t, "L1", "his")
    with pytest.raises(ConfigError, match="--to-time 2026-11-01T00:00:00\\+00:00: no physical backup .* oldest is B1"):
        pitr_base(cands, parse_to_time("2026-11-01T00:00:00+00:00"), None, "his")
    with pytest.raises(ConfigError, match="--to-time .* no UTC offset"):
        parse_to_time("2026-11-28T06:10:00")
    with pytest.raises(ConfigError, match="--to-time .* not an ISO 8601"):
        parse_to_time("last tuesday")

    from types import SimpleNamespace
    assert pitr_refusal("postgres", SimpleNamespace(mode="pgbackrest")) is None
    why = pitr_refusal("postgres", SimpleNamespace(mode="logical"))
    assert "mode logical" in why and "engine: postgres + source.mode: pgbackrest" in why
    assert pitr_refusal("sqlite", SimpleNamespace(mode=None))


def test_pitr_reached_reads_where_the_server_stopped():
    t = parse_to_time("2026-11-28T06:10:00+08:00")
    line = "recovery stopping before commit of transaction 7361, time 2026-11-28 06:10:00.5+08"
    ok = pitr_reached(line, t)
    assert ok["status"] == "passed" and "transaction 7361 at 2026-11-28T06:10:00.500000+08:00" in ok["detail"]
    assert pitr_reached(line.replace("06:10:00.5+08", "06:10:00+08"), t)["status"] == "passed"  # at T: stops before
    assert pitr_reached(line.replace("commit", "abort"), t)["status"] == "passed"
    assert pitr_reached(line.replace("+08", "+05:30"), t)["status"] == "passed"  # 00:40 UTC, after 22:10 UTC
    early = pitr_reached(line.replace("06:10:00.5+08", "06:09:59.9+08"), t)
    assert early["status"] == "failed" and "the copy is not at --to-time" in early["detail"]
    for stopped in (None, "recovery stopping before WAL location (LSN) \"0/5C000028\"",
                    "recovery stopping before commit of transaction 7, time not-a-time",
                    "recovery stopping before commit of transaction 7, time 2026-11-28 06:10:00.5"):
        bad = pitr_reached(stopped, t)
        assert bad["status"] == "failed" and "did not say where recovery stopped" in bad["detail"], stopped
