"""The engine contract: one set of tests every engine passes against its real server (the model is
restic's backend test suite). Each test is parameterized by engine (and scratch type where the engine has
more than one); tests/contract_support.py holds one small adapter per engine, and the tests never branch
on the engine. docs/engines.md section 4 says what a new engine must add here.

Oracle joins opt-in: its variant (``oracle-database``) is in the lists only when BACKUPKIT_TEST_ORACLE_DSN
names a real database (docs/oracle.md, "Running the opt-in tests"); otherwise there is no Oracle test here
at all, and tests/test_oracle_integration.py's skip is the one visible sign that Oracle was not proven.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from backupkit.actions.backup import backup_one
from backupkit.actions.drill import run_drill
from backupkit.context import Context
from backupkit.engines import kit
from backupkit.errors import ConfigError, JobFailed

from contract_support import (SYSTEM, WRITER_FIRST_ID, MariadbAdapter, OracleAdapter, PostgresAdapter, SqliteAdapter,
                              descendants, io_wchar, oracle_variants, proc_comm, ChildSpy)

ORACLE = oracle_variants()  # ["oracle-database"] only when BACKUPKIT_TEST_ORACLE_DSN is set, else []
# every scratch type each engine drills into
DRILL_VARIANTS = ["sqlite", "postgres-ephemeral", "postgres-database", "mariadb-ephemeral", "mariadb-database"] + ORACLE
# dump-side contract: one variant per engine (the cheapest scratch where a drill is part of the test)
ENGINES = ["sqlite", "postgres-database", "mariadb-database"] + ORACLE
# the scratch-is-the-source refusal: once per engine
REFUSAL_VARIANTS = ["sqlite", "postgres", "mariadb"] + ORACLE


@pytest.fixture(scope="module")
def mdb_contract_server(tmp_path_factory, mdb_admin):
    """A second real MariaDB server for ``database`` scratches (MariaDB refuses the source *server*)."""
    from backupkit.engines.mariadb_server import new_server

    server = new_server(tmp_path_factory.mktemp("mdb-contract-scratch"), tcp=True)
    server.start()
    try:
        yield server
    finally:
        proof = server.stop()
        assert kit.proof_clean(proof), proof


@pytest.fixture
def adapter(request, workspace, tmp_path):
    engine, _, scratch = request.param.partition("-")
    scratch = scratch or "ephemeral"
    if engine == "sqlite":
        a = SqliteAdapter(workspace, tmp_path, scratch)
    elif engine == "postgres":
        a = PostgresAdapter(workspace, tmp_path, scratch, request.getfixturevalue("pg_database"))
    elif engine == "oracle":
        a = OracleAdapter(workspace, tmp_path, scratch)
    else:
        server = request.getfixturevalue("mdb_contract_server") if scratch == "database" else None
        a = MariadbAdapter(workspace, tmp_path, scratch, request.getfixturevalue("mdb_database"), server)
    a.extra["request"] = request
    a.create_source()
    yield a
    if "drop_user" in a.extra:
        from fixtures.mariadb import mdb_exec

        mdb_exec(None, a.extra["drop_user"])
    a.cleanup()


def _ctx(a) -> Context:
    return Context.load(a.ws.config)


def _backup(a, ctx=None):
    own = ctx is None
    ctx = ctx or _ctx(a)
    try:
        out = backup_one(ctx, ctx.policy(SYSTEM), copy=False)
        assert out.ok, out.error
        (bdir,) = [d for d in a.ws.backups(SYSTEM) if d.name == out.backup_id]
        return json.loads((bdir / "manifest.json").read_text())
    finally:
        if own:
            ctx.close()


def _drill(a, after_restore=None):
    ctx = _ctx(a)
    try:
        return run_drill(ctx, ctx.policy(SYSTEM), after_restore=after_restore)
    finally:
        ctx.close()


def _assert_torn_down(a, record):
    proof = record.get("teardown")
    assert proof, f"{a.id}: the drill record has no teardown proof: {record.get('failed_step')} {record.get('deviations')}"
    checked = [k for k in proof if k.endswith(("_exists", "_running", "_open"))]
    assert checked, f"{a.id}: the teardown proof states no verified fact kit.proof_clean could judge: {proof}"
    assert kit.proof_clean(proof), proof
    assert all(proof[k] is False for k in checked), proof  # verified False, never None (unknown)
    a.assert_scratch_gone(record)
    assert record["workdir_removed"] is True
    assert "servers_stopped_after_teardown" not in record, record  # the engine stopped its scratch, not the net


@pytest.mark.parametrize("adapter", DRILL_VARIANTS, indirect=True)
def test_round_trip_backup_then_drill_passes_with_equal_fingerprints(adapter):
    a = adapter
    manifest = _backup(a)
    fps = manifest["fingerprints"]
    patients, visits = a.table_key("patients"), a.table_key("visits")
    assert fps[patients]["rows"] == 300 and fps[visits]["rows"] == 1500
    seen = {}

    def look(engine, scratch):
        seen["kind"] = scratch.kind
        seen["name"] = engine.query_scalar(scratch=scratch, sql="SELECT name FROM patients WHERE id = 7")
        seen["visits"] = engine.query_scalar(scratch=scratch, sql="SELECT COUNT(*) FROM visits")

    out = _drill(a, after_restore=look)
    rec = out.record
    assert out.exit_code == 0 and rec["verdict"] == "passed", rec["deviations"]
    assert seen == {"kind": "file" if a.engine == "sqlite" else a.scratch_type, "name": "患者7 张", "visits": 1500}
    by_name = {c["name"]: c for c in rec["checks"]}
    tables = [k for k, v in fps.items() if v.get("kind", "table") == "table"]
    assert {patients, visits} <= set(tables)
    for key in tables:  # every table of the manifest was compared, and matched
        assert by_name[f"fingerprint {key}"]["status"] == "passed", by_name.get(f"fingerprint {key}")
    assert all(c["status"] in ("passed", "waived") for c in rec["checks"]), rec["checks"]
    _assert_torn_down(a, rec)
    assert [json.loads(r[3])["verdict"] for r in a.ws.ledger_rows("drill")] == ["passed"]


@pytest.mark.parametrize("adapter", DRILL_VARIANTS, indirect=True)
def test_a_change_in_the_scratch_after_restore_fails_the_drill_naming_the_table(adapter):
    a = adapter
    _backup(a)
    out = _drill(a, after_restore=a.tamper)  # UPDATE one patient's name, DELETE one visit
    rec = out.record
    assert out.exit_code == 3, (rec["verdict"], rec["deviations"])
    failed = {c["name"]: c["detail"] for c in rec["checks"] if c["status"] == "failed"}
    patients, visits = a.table_key("patients"), a.table_key("visits")
    assert set(failed) == {f"fingerprint {patients}", f"fingerprint {visits}"}, failed
    assert "1499" in failed[f"fingerprint {visits}"], failed
    text = " ".join(rec["deviations"])
    assert patients in text and visits in text, rec["deviations"]
    _assert_torn_down(a, rec)
    assert [json.loads(r[3])["verdict"] for r in a.ws.ledger_rows("drill")] == ["failed"]


@pytest.mark.parametrize("adapter", REFUSAL_VARIANTS, indirect=True)
def test_a_scratch_that_resolves_to_the_source_is_refused_before_anything_is_created(adapter):
    a = adapter
    before = a.created_state()
    attempts = a.refusals()
    assert len(attempts) >= 3
    not_refused = []
    for label, attempt in attempts:
        try:
            attempt()
        except ConfigError as e:
            msg = str(e)
            assert "source" in msg and "\n" not in msg, (label, msg)
            continue
        except Exception as e:  # noqa: BLE001 - any other outcome is a contract breach; collect them all
            not_refused.append(f"{label}: {type(e).__name__}: {e}")
            continue
        not_refused.append(f"{label}: not refused")
    assert not_refused == [], "\n".join(not_refused)
    assert a.created_state() == before
    assert not (a.tmp / "refused-workdir").exists()


@pytest.mark.parametrize("adapter", DRILL_VARIANTS, indirect=True)
def test_teardown_proof_is_clean_after_a_drill_that_failed_midway(adapter):
    a = adapter
    _backup(a)
    alive = {}

    def fail_midway(engine, scratch):
        alive["visits"] = engine.query_scalar(scratch=scratch, sql="SELECT COUNT(*) FROM visits")
        raise JobFailed(f"policy {SYSTEM}: injected failure between restore and checks")

    out = _drill(a, after_restore=fail_midway)
    rec = out.record
    assert alive == {"visits": 1500}  # the scratch was up and restored when the drill failed
    assert out.exit_code == 1 and rec["verdict"] == "failed", (rec["verdict"], rec["deviations"])
    assert any("injected failure" in d for d in rec["deviations"]), rec["deviations"]
    assert [s["step"] for s in rec["timeline"]][-1] == "teardown"
    _assert_torn_down(a, rec)


@pytest.mark.parametrize("adapter", ENGINES, indirect=True)
def test_a_dump_killed_mid_stream_leaves_no_backup_and_records_nothing_good(adapter):
    a = adapter
    a.make_big()
    a.write_policy(backup={"compression_level": 19, "threads": 0})  # a slow sink: the dump is still running
    ws = a.ws
    proc = subprocess.Popen([sys.executable, "-m", "backupkit.cli", "backup", SYSTEM, "--no-copy"],
                            env=ws.env(**a.kill_env()), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = None
    if a.dump_programs:
        deadline = time.time() + 120
        while killed is None and proc.poll() is None and time.time() < deadline:
            for pid in descendants(proc.pid):
                if proc_comm(pid) in a.dump_programs and io_wchar(pid) > 1 << 20:  # 1 MiB into the pipeline
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
            time.sleep(0.005)
        assert killed, f"{a.dump_programs} never ran long enough to be killed"
    out, err = proc.communicate(timeout=120)
    if killed:
        assert proc.returncode == 1, err
        assert any(p in err for p in a.dump_programs) and "Traceback" not in err, err
        assert not kit.process_running(killed)
    else:  # the failpoint killed backupkit itself in the middle of the dump
        assert proc.returncode == -signal.SIGKILL, err
    assert ws.backups(SYSTEM) == []
    assert ws.ledger_rows("backup") == []
    if killed:
        assert not list((ws.repo / ".staging").iterdir())
    # the next backup works, and whatever the killed one left is cleaned and recorded as abandoned, never good
    a.write_policy(backup={"compression_level": 1})
    a.execute("DROP TABLE IF EXISTS bulk")
    _backup(a)
    assert len(ws.backups(SYSTEM)) == 1 and len(ws.ledger_rows("backup")) == 1
    assert not list((ws.repo / ".staging").iterdir())
    assert ws.ledger_rows("abandoned"), "the killed backup was not recorded as abandoned"


@pytest.mark.parametrize("adapter", ENGINES, indirect=True)
def test_secrets_never_reach_child_argv_environment_logs_or_ledger(adapter, caplog, capfd):
    a = adapter
    password = a.use_password()
    secrets_ = [password] if password else []
    for key_file in ("identity.txt", "signing.pem"):  # the backup's own key material is a secret too
        lines = (a.ws.keys / key_file).read_text().splitlines()
        secrets_ += [ln.strip() for ln in lines if ln.strip() and not ln.startswith(("#", "-----"))]
    assert len(secrets_) >= 2 + bool(a.dump_programs)
    caplog.set_level(logging.DEBUG)
    with ChildSpy() as spy:
        manifest = _backup(a)
        out = _drill(a)
    assert out.exit_code == 0, out.record["deviations"]
    assert manifest["fingerprints"]
    assert set(a.dump_programs) <= spy.programs(), f"the spy never saw {a.dump_programs} running: {spy.programs()}"
    for pid, (comm, cmdline, environ) in spy.seen.items():
        for s in secrets_:
            assert s.encode() not in cmdline, f"secret in the command line of {comm} ({pid})"
            assert s.encode() not in environ, f"secret in the environment of {comm} ({pid})"
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    ledger = a.ws.ledger.read_bytes() + b"".join(p.read_bytes() for p in a.ws.repo.rglob("manifest.json"))
    for s in secrets_:
        assert s not in logs
        assert s.encode() not in ledger


@pytest.mark.parametrize("adapter", ENGINES, indirect=True)
def test_concurrent_writes_during_the_dump_still_drill_exact(adapter):
    a = adapter
    stop = threading.Event()
    committed = [0]
    failure: list[BaseException] = []

    def writer():
        conn, ph = a.writer()
        try:
            i = WRITER_FIRST_ID
            while not stop.is_set():
                conn.cursor().execute(f"INSERT INTO visits VALUES ({ph}, 1, 'concurrent', 1.5)", (i,))
                i += 1
                committed[0] += 1  # autocommit: counted after its commit
        except BaseException as e:  # noqa: BLE001
            failure.append(e)
        finally:
            conn.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        while committed[0] < 20 and t.is_alive():
            time.sleep(0.01)
        c0 = committed[0]
        manifest = _backup(a)
        c1 = committed[0]
        time.sleep(0.2)
    finally:
        stop.set()
        t.join()
    assert not failure, failure
    rows = manifest["fingerprints"][a.table_key("visits")]["rows"]
    assert c1 > c0, "no write committed while the backup ran"
    assert 1500 + c0 <= rows <= 1500 + c1 + 1, (c0, rows, c1)
    assert a.count("visits") > rows  # writes went on after the dump's snapshot
    # docs/engines.md: an engine that cannot prove its snapshot says exactness: approximate (absent means exact;
    # PostgreSQL's logical engine does not write the field)
    assert manifest["consistency"].get("exactness", "exact") == "exact", manifest["consistency"]
    out = _drill(a)
    assert out.exit_code == 0 and out.record["verdict"] == "passed", out.record["deviations"]
    by_name = {c["name"]: c["status"] for c in out.record["checks"]}
    assert by_name[f"fingerprint {a.table_key('visits')}"] == "passed"
    assert by_name[f"fingerprint {a.table_key('patients')}"] == "passed"
