"""Patient data never lies around in plaintext, and an interrupted drill always cleans up (issue 9).

Runs are paused or killed at named points (``BACKUPKIT_FAILPOINT=name:stop`` makes the process SIGSTOP
itself there), an unprivileged OS user (``nobody``) then tries to read every file backupkit has made,
and SIGTERM, SIGHUP or SIGKILL is delivered to the real process.
"""

import json
import os
import signal
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from backupkit.engines import kit
from backupkit.evidence.report import teardown_summary

from test_mariadb_cli import mdb_workspace  # noqa: F401  (fixture)
from test_postgres_cli import pg_workspace  # noqa: F401  (fixture)

READER = r"""
import os, sys
readable = []
for root in sys.argv[1:]:
    for d, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            try:
                with open(p, 'rb') as fh:
                    fh.read(1)
                readable.append(p)
            except OSError:
                pass
print('\n'.join(readable))
"""


def nobody_can_read(*roots) -> list[str]:
    """Files under ``roots`` that the unprivileged user ``nobody`` can open and read."""
    p = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", READER, *map(str, roots)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [line for line in p.stdout.splitlines() if line]


def _work(ws) -> Path:
    return ws.root / "work"


def _configure(ws):
    """The workspace's own work_dir, and its own TMPDIR: what a drill puts in the system temp directory (the
    scratch's socket directory, a fallback private root) lands there, so _temp_leftovers sees this test's
    leftovers only, never those of another run sharing the machine's /tmp."""
    ws.edit_config(lambda c: c.update(work_dir=str(_work(ws))))
    tmp = Path(tempfile.mkdtemp(prefix="bk-test-tmpdir-"))  # in /tmp: the scratch's OS user must reach it
    os.chmod(tmp, 0o1777)  # like /tmp: the scratch server's OS user (postgres) creates its socket directory here
    _TMPDIRS.append(tmp)
    ws.extra_env["TMPDIR"] = str(tmp)


_TMPDIRS: list[Path] = []


@pytest.fixture(autouse=True)
def _remove_tmpdirs():
    yield
    while _TMPDIRS:
        shutil.rmtree(_TMPDIRS.pop(), ignore_errors=True)


def _paused(ws, point: str, *args: str) -> subprocess.Popen:
    """Start the CLI with a stop failpoint and wait until it has stopped itself there."""
    proc = subprocess.Popen([sys.executable, "-m", "backupkit.cli", *args], env=ws.env(BACKUPKIT_FAILPOINT=f"{point}:stop"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "?"
        if state == "T":
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run never reached failpoint {point}")


def _deliver(proc: subprocess.Popen, sig: int) -> tuple[int, str, str]:
    os.kill(proc.pid, sig)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def _temp_leftovers(ws) -> list[Path]:
    """What the workspace's drills left in its TMPDIR (see _configure)."""
    tmp = Path(ws.extra_env["TMPDIR"])
    return [p for pat in ("bk-pg-scratch-*", "bk-pgsock-*", "backupkit-drill-*") for p in tmp.glob(pat)]


def _postmasters_under(*roots: Path) -> list[int]:
    pids = []
    for root in roots:
        for pidfile in Path(root).rglob("postmaster.pid") if Path(root).exists() else []:
            pids.append(abs(int(pidfile.read_text().splitlines()[0])))
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- private by construction --------------------------------------------------------------------------------------

@pytest.mark.parametrize("point", ["sqlite-snapshot-written", "backup-before-commit"])
def test_sqlite_backup_in_progress_is_private(workspace, point):
    _configure(workspace)
    proc = _paused(workspace, point, "backup", "demo-lis")
    try:
        staging = list((workspace.repo / ".staging").iterdir())
        assert staging, "the backup has a staging directory at this point"
        if point == "sqlite-snapshot-written":
            assert list((workspace.repo / ".staging").glob("*/work/snapshot.sqlite"))
        assert nobody_can_read(workspace.repo, _work(workspace)) == []
    finally:
        code, _, err = _deliver(proc, signal.SIGKILL)
    workspace.ok("backup", "demo-lis", "--no-copy")  # the next run removes what the killed one left
    assert not list((workspace.repo / ".staging").iterdir())


def test_pg_backup_in_progress_is_private(pg_workspace):
    ws = pg_workspace
    _configure(ws)
    proc = _paused(ws, "backup-before-commit", "backup", "his")
    try:
        assert list((ws.repo / ".staging").iterdir())
        assert nobody_can_read(ws.repo, _work(ws)) == []
    finally:
        _deliver(proc, signal.SIGKILL)


def test_sqlite_drill_in_progress_is_private_and_committed_files_too(workspace):
    _configure(workspace)
    workspace.ok("backup", "demo-lis")
    proc = _paused(workspace, "drill-after-restore", "drill", "demo-lis", "--from", "offsite")
    try:
        restored = list(_work(workspace).rglob("scratch-demo-lis-*.sqlite"))
        assert restored and sqlite3.connect(restored[0]).execute("SELECT count(*) FROM patients").fetchone()[0] > 0
        assert nobody_can_read(workspace.repo, _work(workspace), workspace.offsite, workspace.ledger.parent) == []
    finally:
        code, _, _ = _deliver(proc, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM


def test_pg_drill_in_progress_is_private(pg_workspace):
    ws = pg_workspace
    _configure(ws)
    ws.ok("backup", "his", "--no-copy")
    proc = _paused(ws, "drill-after-restore", "drill", "his")
    try:
        roots = [ws.repo, _work(ws), *_temp_leftovers(ws)]
        assert _postmasters_under(*roots), "a scratch server is running at this point"
        assert nobody_can_read(*roots) == []
    finally:
        _deliver(proc, signal.SIGTERM)


def test_work_dir_under_a_world_writable_parent_is_refused(workspace, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    workspace.edit_config(lambda c: c.update(work_dir=str(shared / "bk")))
    workspace.ok("backup", "demo-lis", "--no-copy")
    r = workspace.run("drill", "demo-lis")
    assert r.code == 2 and f"{shared} is writable by every user" in r.err and "chmod o-w" in r.err, r
    os.chmod(shared, 0o1777)  # the sticky bit makes it safe, as for /tmp
    workspace.ok("drill", "demo-lis")


# --- interrupted drills -----------------------------------------------------------------------------------------

POINTS = ["drill-after-verify", "drill-after-provision", "drill-after-restore"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("point", POINTS)
def test_sqlite_drill_interrupted_tears_down_and_records(workspace, point, sig):
    _configure(workspace)
    workspace.ok("backup", "demo-lis", "--no-copy")
    proc = _paused(workspace, point, "drill", "demo-lis")
    code, _, err = _deliver(proc, sig)
    assert code == 128 + sig and f"interrupted by {signal.Signals(sig).name}" in err, err
    assert list(_work(workspace).iterdir()) == []
    body = json.loads(workspace.ledger_rows("drill")[-1][3])
    assert body["verdict"] == "interrupted" and body["workdir_removed"] is True
    assert any(signal.Signals(sig).name in d for d in body["deviations"])
    if point != "drill-after-verify":
        assert body["teardown"]["exists_after_teardown"] is False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("point", POINTS)
def test_pg_drill_interrupted_tears_down_and_records(pg_workspace, point, sig):
    ws = pg_workspace
    _configure(ws)
    ws.ok("backup", "his", "--no-copy")
    proc = _paused(ws, point, "drill", "his")
    pids = _postmasters_under(_work(ws), *_temp_leftovers(ws))
    code, _, err = _deliver(proc, sig)
    assert code == 128 + sig, err
    assert list(_work(ws).iterdir()) == [] and _temp_leftovers(ws) == []
    assert not any(_alive(p) for p in pids)
    body = json.loads(ws.ledger_rows("drill")[-1][3])
    assert body["verdict"] == "interrupted"
    if point != "drill-after-verify":
        assert body["teardown"]["postmaster_running"] is False and body["teardown"]["datadir_exists"] is False


@pytest.mark.parametrize("point", POINTS)
def test_sqlite_drill_sigkilled_is_cleaned_and_recorded_by_cleanup(workspace, point):
    _configure(workspace)
    workspace.ok("backup", "demo-lis", "--no-copy")
    proc = _paused(workspace, point, "drill", "demo-lis")
    drill_dirs = list(_work(workspace).iterdir())
    _deliver(proc, signal.SIGKILL)
    assert [d for d in _work(workspace).iterdir()] == drill_dirs  # the killed run could not clean
    n = len(workspace.ledger_rows("drill"))
    r = workspace.ok("cleanup")
    assert "1 leftover(s) cleaned" in r.out, r
    assert list(_work(workspace).iterdir()) == []
    rows = workspace.ledger_rows("drill")
    assert len(rows) == n + 1
    body = json.loads(rows[-1][3])
    assert body["verdict"] == "abandoned" and body["teardown"]["workdir_exists"] is False
    assert "nothing to clean up" in workspace.ok("cleanup").out


@pytest.mark.parametrize("point", ["drill-after-provision", "drill-after-restore"])
def test_pg_drill_sigkilled_leaves_no_server_after_the_next_run(pg_workspace, point):
    ws = pg_workspace
    _configure(ws)
    ws.ok("backup", "his", "--no-copy")
    proc = _paused(ws, point, "drill", "his")
    time.sleep(0.5)
    _deliver(proc, signal.SIGKILL)
    deadline = time.time() + 60  # the background start may still be bringing the server up
    while time.time() < deadline and not _postmasters_under(_work(ws), *_temp_leftovers(ws)):
        time.sleep(0.2)
    pids = _postmasters_under(_work(ws), *_temp_leftovers(ws))
    if point == "drill-after-restore":  # after provision the server may still have been in initdb
        assert pids and any(_alive(p) for p in pids), "the killed drill left its scratch server running"
    assert list(_work(ws).iterdir()), "the killed drill left its work directory"
    ws.ok("drill", "his")  # the next run of that system cleans up first, then drills
    assert not any(_alive(p) for p in pids)
    assert list(_work(ws).iterdir()) == [] and _temp_leftovers(ws) == []
    verdicts = [json.loads(r[3])["verdict"] for r in ws.ledger_rows("drill")]
    assert verdicts[-2:] == ["abandoned", "passed"]


def test_a_live_drill_is_never_cleaned(workspace):
    _configure(workspace)
    workspace.ok("backup", "demo-lis", "--no-copy")
    proc = _paused(workspace, "drill-after-restore", "drill", "demo-lis")
    try:
        assert "nothing to clean up" in workspace.ok("cleanup").out
        assert list(_work(workspace).iterdir())
    finally:
        code, _, _ = _deliver(proc, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM


# --- restore --force over a live SQLite file ------------------------------------------------------------------------

CRASHING_WRITER = r"""
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("DELETE FROM patients WHERE id > 10")
db.execute("UPDATE patients SET name = 'overwritten'")
os.kill(os.getpid(), signal.SIGKILL)  # the application crashes: its -wal stays beside the database
"""


def test_restore_force_over_a_file_with_a_stale_wal_gives_the_exact_backup(workspace, tmp_path):
    workspace.ok("backup", "demo-lis", "--no-copy")
    dest = tmp_path / "production.sqlite"
    import shutil

    shutil.copy(workspace.db, dest)
    os.chmod(dest, 0o600)
    subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(dest)])
    assert Path(f"{dest}-wal").exists() and Path(f"{dest}-wal").stat().st_size > 0
    r = workspace.run("restore", "demo-lis", "--to", str(dest), "--force")
    assert r.code == 0 and "fingerprints match" in r.out, r
    # the stale log is gone (a -wal the restore's own read-only check opened is empty)
    assert not Path(f"{dest}-wal").exists() or Path(f"{dest}-wal").stat().st_size == 0
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    src = sqlite3.connect(workspace.db)
    got = sqlite3.connect(dest)
    for q in ("SELECT count(*) FROM patients", "SELECT count(*) FROM patients WHERE name = 'overwritten'",
              "SELECT group_concat(name) FROM (SELECT name FROM patients ORDER BY id LIMIT 50)"):
        assert got.execute(q).fetchone() == src.execute(q).fetchone(), q


def test_restore_force_refuses_while_the_database_is_open(workspace, tmp_path):
    workspace.ok("backup", "demo-lis", "--no-copy")
    dest = tmp_path / "production.sqlite"
    import shutil

    shutil.copy(workspace.db, dest)
    before = dest.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import sqlite3, time\ndb = sqlite3.connect({str(dest)!r})\n"
                               "db.execute('SELECT 1 FROM patients').fetchone()\nprint('open', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        r = workspace.run("restore", "demo-lis", "--to", str(dest), "--force")
        assert r.code == 1 and f"pid {holder.pid}" in r.err and "nothing was changed" in r.err, r
        assert dest.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()


# --- keyed fingerprints -----------------------------------------------------------------------------------------

def test_a_manifest_does_not_confirm_a_guess_about_a_small_table(workspace, tmp_path):
    from backupkit.engines.sqlite import table_fingerprints

    db = sqlite3.connect(workspace.db)
    db.execute("CREATE TABLE diagnosis (patient_id INTEGER, hiv_positive INTEGER)")
    db.execute("INSERT INTO diagnosis VALUES (1, 1)")
    db.commit()
    db.close()
    workspace.ok("backup", "demo-lis", "--no-copy")
    (bdir,) = workspace.backups()
    manifest = json.loads((bdir / "manifest.json").read_text())
    stored = manifest["fingerprints"]["diagnosis"]
    assert stored["rows"] == 1  # sizes stay visible
    for guess in (0, 1):  # whoever holds the manifest but no key tries both answers
        g = sqlite3.connect(tmp_path / f"guess{guess}.sqlite")
        g.execute("CREATE TABLE diagnosis (patient_id INTEGER, hiv_positive INTEGER)")
        g.execute("INSERT INTO diagnosis VALUES (1, ?)", (guess,))
        g.commit()
        assert table_fingerprints(g, "full")["diagnosis"]["hash"] != stored["hash"]
    assert manifest["fingerprint_key"]["stream"] == "fpkey"
    workspace.ok("drill", "demo-lis")  # the drill recovers the key and still proves every table


def test_a_damaged_fingerprint_key_stream_fails_the_drill(workspace):
    workspace.ok("backup", "demo-lis", "--no-copy")
    (bdir,) = workspace.backups()
    with open(bdir / "fpkey.zst.age", "r+b") as f:
        f.seek(-20, os.SEEK_END)
        f.write(b"\0" * 4)
    r = workspace.run("drill", "demo-lis")
    assert r.code == 3 and "fpkey" in r.out + r.err, r


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
def test_a_killed_drill_leaves_no_restored_database_on_the_scratch_server(request, engine):
    """A database scratch lives on a server, outside the work directory: after a SIGKILL, cleanup drops it
    (found by the name derived from the dead drill's work directory) and records the proof."""
    from fixtures.mariadb import mdb_connect
    from fixtures.postgres import PG_HOST, PG_PORT, PG_USER, pg_exec

    if engine == "postgres":
        ws, system = request.getfixturevalue("pg_workspace"), "his"
        dsn = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"

        def scratch_databases() -> list[str]:
            import psycopg

            with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres") as c:
                return [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE "
                                                "'backupkit\\_drill\\_his\\_%' ORDER BY 1")]
    else:
        ws, system = request.getfixturevalue("mdb_workspace"), "lis"
        server = request.getfixturevalue("mdb_scratch_server")
        dsn = f"mariadb://root@127.0.0.1:{server.port}/"

        def scratch_databases() -> list[str]:
            conn = mdb_connect(port=server.port)
            try:
                with conn.cursor() as cur:
                    cur.execute("SHOW DATABASES LIKE 'backupkit\\_drill\\_lis\\_%'")
                    return sorted(r[0] for r in cur.fetchall())
            finally:
                conn.close()
    ws.edit_policy(lambda p: p["drill"].update(scratch={"type": "database", "dsn": dsn}), system=system)
    _configure(ws)
    ws.ok("backup", system, "--no-copy")
    proc = _paused(ws, "drill-after-restore", "drill", system)
    left = scratch_databases()
    assert len(left) == 1, left  # restored, with the patients' data in it
    (work,) = list(_work(ws).iterdir())
    assert left[0].endswith(kit.scratch_tag(work / "scratch"))
    _deliver(proc, signal.SIGKILL)
    assert scratch_databases() == left, "a SIGKILLed drill cannot have dropped it"
    try:
        ws.ok("cleanup")
        assert scratch_databases() == []
        body = json.loads(ws.ledger_rows("drill")[-1][3])
        assert body["verdict"] == "abandoned"
        td = body["teardown"]
        assert td["database"] == left[0] and td["database_exists"] is False and td["workdir_exists"] is False
        assert kit.proof_clean(td) and teardown_summary(td, "en")[1] is True
        ws.ok("drill", system)  # and the next drill drops its own scratch as usual
        assert scratch_databases() == []
    finally:
        for name in scratch_databases():
            if engine == "postgres":
                pg_exec("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                conn = mdb_connect(port=server.port)
                conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
                conn.close()


@pytest.fixture
def open_tmp():
    """A directory the scratch server's OS user can traverse to (pytest's tmp_path parents are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="bk-test-volume-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_a_scratch_server_keeps_its_data_on_the_work_volume(open_tmp):
    # The server runs as postgres when backupkit runs as root: a work_dir backupkit creates, and the
    # scratch directory inside a run's work directory, are made traversable but never listable, so the
    # server's data stays there instead of falling back to the system temp directory (maybe a small
    # tmpfs). Nobody else can list them or read what is inside.
    from backupkit.engines.pg_cluster import server_os_user
    from backupkit.workdir import WorkDir

    run_as = server_os_user()
    work_dir = open_tmp / "work"
    wd = WorkDir(work_dir, kind="drill", system="his", ident="D1")
    try:
        assert (work_dir.stat().st_mode & 0o777) == 0o711
        scratch = wd.path / "scratch"
        root = kit.private_root(scratch, run_as)
        assert root.parent == scratch, "the scratch root fell back to the system temp directory"
        assert (root.stat().st_mode & 0o777) == 0o700
        if run_as:
            import pwd

            assert root.stat().st_uid == pwd.getpwnam(run_as).pw_uid
            assert (scratch.stat().st_mode & 0o777) == 0o711
        (root / "restored.dat").write_bytes(b"patient data")
        (root / "restored.dat").chmod(0o600)
        assert nobody_can_read(work_dir) == []
        listing = subprocess.run(["runuser", "-u", "nobody", "--", "ls", str(work_dir), str(scratch)],
                                 capture_output=True, text=True)
        assert listing.returncode != 0 and "Permission denied" in listing.stderr
    finally:
        wd.close()


def test_an_operators_closed_work_dir_is_left_as_it_is(open_tmp):
    # A work_dir the operator made 0700 is not widened: the scratch server's data goes to the temp
    # directory, and the log line says how to keep it on the volume.
    from backupkit.engines.pg_cluster import server_os_user
    from backupkit.workdir import WorkDir

    run_as = server_os_user()
    work_dir = open_tmp / "closed"
    work_dir.mkdir(mode=0o700)
    work_dir.chmod(0o700)
    wd = WorkDir(work_dir, kind="drill", system="his", ident="D2")
    try:
        root = kit.private_root(wd.path / "scratch", run_as)
        assert (work_dir.stat().st_mode & 0o777) == 0o700
        assert (root.parent == wd.path / "scratch") is (run_as is None)
    finally:
        wd.close()
        if root.parent != wd.path / "scratch":
            shutil.rmtree(root, ignore_errors=True)
