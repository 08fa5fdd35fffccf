"""Operations a tired on-call engineer can trust (issue 11): each observed case, with its exit code and message."""

import json


def test_status_without_a_target_is_no_offsite_copy(workspace):
    workspace.edit_policy(lambda p: p.update(targets=[]))
    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis")
    r = workspace.run("status", "--json")
    assert r.code == 4, r
    (row,) = json.loads(r.out)
    assert row["offsite_ok"] is False and any("no offsite copy" in p for p in row["problems"])


def test_drill_before_any_backup_records_nothing_and_exits_2(workspace):
    r = workspace.run("drill", "demo-lis")
    assert r.code == 2 and "no backup of demo-lis yet" in r.err and "backupkit backup demo-lis" in r.err, r
    assert workspace.ledger_rows("drill") == []


def _without_dac(ws, *args):
    """Run the CLI as root without CAP_DAC_OVERRIDE: file modes apply to it as to any unprivileged user."""
    import subprocess
    import sys

    from fixtures.common import Result

    p = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m",
                        "backupkit.cli", *args], env=ws.env(), capture_output=True, text=True, timeout=300)
    return Result(p.returncode, p.stdout, p.stderr)


def _second_system(ws, system="demo-emr"):
    import yaml

    data = yaml.safe_load(ws.policy_file().read_text())
    data["system"] = system
    (ws.policies / f"{system}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def test_one_broken_policy_stops_nothing_else(workspace):
    _second_system(workspace)
    workspace.edit_policy(lambda p: p.update(rop="24h"), system="demo-emr")  # a typo: rpo
    r = workspace.run("backup", "--all")
    assert r.code == 2 and "demo-emr.yaml" in r.err and "rop" in r.err, r
    assert "demo-lis: backup" in r.out and len(workspace.backups("demo-lis")) == 1
    workspace.ok("backup", "demo-lis")  # naming a healthy system is not affected at all
    r = workspace.run("backup", "demo-emr")
    assert r.code == 2 and "rop" in r.err, r
    workspace.ok("drill", "demo-lis")
    r = workspace.run("status")
    assert r.code == 2 and "system demo-emr is not backed up until this is fixed" in r.err, r
    r = workspace.run("status", "--prometheus")
    assert 'backupkit_policy_error{system="demo-emr"} 1' in r.out and 'backupkit_overdue{system="demo-lis"} 0' in r.out
    for args in (("verify",), ("copy",), ("prune", "--dry-run"), ("list",), ("drill", "--due")):
        r = workspace.run(*args)
        assert r.code == 2 and "demo-emr.yaml" in r.err and "internal error" not in r.err, (args, r)


def test_undefined_target_is_found_at_load_time(workspace):
    workspace.edit_policy(lambda p: p.update(targets=["offsite", "dr-site"]))
    r = workspace.run("backup", "demo-lis")
    assert r.code == 2 and "field 'targets': target 'dr-site' is not defined" in r.err, r
    assert workspace.backups() == []  # nothing was dumped first


def test_prometheus_out_is_written_atomically_even_when_overdue(workspace, tmp_path):
    out = tmp_path / "textfile" / "backupkit.prom"
    out.parent.mkdir()
    r = workspace.run("status", "--prometheus", "--out", str(out))
    assert r.code == 4, r  # no backup yet: overdue, and the file still says so
    text = out.read_text()
    assert 'backupkit_overdue{system="demo-lis"} 1' in text
    assert "backupkit_status_generated_timestamp_seconds " in text
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in out.parent.iterdir()] == ["backupkit.prom"]  # no temp file left behind
    assert "*/15 * * * *" in workspace.ok("schedule", "crontab").out
    assert "status --prometheus --out " in workspace.ok("schedule", "crontab").out


def test_unreadable_recipient_is_a_one_line_permission_error(workspace):
    import os

    os.chmod(workspace.keys / "recipient.txt", 0)
    r = _without_dac(workspace, "backup", "demo-lis")
    assert r.code == 2 and "recipient.txt" in r.err and "permission denied" in r.err.lower(), r
    assert "internal error" not in r.err and len(r.err.strip().splitlines()) == 1


def test_status_and_list_need_no_write_access_to_the_ledger(workspace):
    import os

    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis")
    workspace.ok("verify")
    os.chmod(workspace.ledger, 0o444)
    os.chmod(workspace.ledger.parent, 0o555)
    try:
        r = _without_dac(workspace, "status")
        assert r.code == 0 and "readonly" not in r.err, r
        r = _without_dac(workspace, "list")
        assert r.code == 0 and "readonly" not in r.err, r
    finally:
        os.chmod(workspace.ledger.parent, 0o755)
        os.chmod(workspace.ledger, 0o600)


def test_verify_of_a_named_system_without_backups_is_an_error(workspace):
    r = workspace.run("verify", "--system", "demo-lis")
    assert r.code == 2 and "no backup of demo-lis yet" in r.err, r
    r = workspace.run("verify", "--system", "ghost")
    assert r.code == 2 and "no policy for system 'ghost'" in r.err, r


def _cli(*args, env=None):
    import subprocess
    import sys

    from fixtures.common import Result

    p = subprocess.run([sys.executable, "-m", "backupkit.cli", *args], capture_output=True, text=True, timeout=300,
                       env=env)
    return Result(p.returncode, p.stdout, p.stderr)


def _env(cfg):
    import os

    return {**{k: v for k, v in os.environ.items() if not k.startswith("BACKUPKIT_")}, "BACKUPKIT_CONFIG": str(cfg)}


def test_init_without_a_source_writes_a_disabled_example_that_backup_all_skips(tmp_path):
    r = _cli("init", str(tmp_path / "bk"))
    assert r.code == 0 and "disabled" in r.out, r
    cfg = tmp_path / "bk" / "backupkit.yaml"
    r = _cli("backup", "--all", env=_env(cfg))
    assert r.code == 0 and "demo-lis is disabled" in r.err and "enabled: true" in r.err, r
    r = _cli("backup", "demo-lis", env=_env(cfg))
    assert r.code == 2 and "disabled" in r.err, r


def test_init_sqlite_source_is_checked_and_works(tmp_path):
    from backupkit.demo_data import create_hospital_db

    r = _cli("init", str(tmp_path / "bad"), "--engine", "sqlite", "--source", str(tmp_path / "missing.sqlite"))
    assert r.code == 2 and "no such file" in r.err and not (tmp_path / "bad").exists(), r
    db = tmp_path / "lis.sqlite"
    create_hospital_db(db, rows=1000)
    r = _cli("init", str(tmp_path / "bk"), "--engine", "sqlite", "--source", str(db), "--system", "lis")
    assert r.code == 0 and "is ready" in r.out, r
    env = _env(tmp_path / "bk" / "backupkit.yaml")
    assert _cli("backup", "--all", env=env).code == 0
    assert _cli("drill", "lis", env=env).code == 0


def test_init_postgres_checks_the_dsn_before_writing(tmp_path, pg_source_db):
    from fixtures.postgres import pg_dsn, pg_exec

    pg_exec(pg_source_db, "CREATE TABLE wards (id int PRIMARY KEY, name text)", "INSERT INTO wards VALUES (1, '内科')")
    r = _cli("init", str(tmp_path / "bad"), "--engine", "postgres", "--dsn", "host=127.0.0.1 port=1 dbname=x")
    assert r.code == 1 and "127.0.0.1" in r.err and not (tmp_path / "bad").exists(), r
    r = _cli("init", str(tmp_path / "bk"), "--engine", "postgres", "--dsn", pg_dsn(pg_source_db), "--system", "his")
    assert r.code == 0 and "is ready" in r.out, r
    env = _env(tmp_path / "bk" / "backupkit.yaml")
    r = _cli("backup", "his", env=env)
    assert r.code == 0, r
    r = _cli("drill", "his", env=env)
    assert r.code == 0, r


def test_ledger_annotate_refuses_unknown_system_or_subject(workspace):
    r = workspace.run("ledger", "annotate", "ghost", "note")
    assert r.code == 2 and "ghost" in r.err, r
    r = workspace.run("ledger", "annotate", "demo-lis", "reviewed", "--kind", "review", "--subject", "D20990101T000000Z-000000")
    assert r.code == 2 and "no ledger record" in r.err, r
    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis")
    drill_id = workspace.ledger_rows("drill")[-1][2]
    workspace.ok("ledger", "annotate", "demo-lis", "reviewed by 张工", "--kind", "review", "--subject", drill_id)


def test_emergency_restore_into_the_source_needs_its_own_flag_and_a_confirmation(workspace):
    import sqlite3
    import subprocess
    import sys

    workspace.ok("backup", "demo-lis", "--no-copy")
    (bdir,) = workspace.backups()
    db = sqlite3.connect(workspace.db)
    db.execute("DELETE FROM patients")  # production is damaged
    db.commit()
    db.close()
    r = workspace.run("restore", "demo-lis", "--to", str(workspace.db), "--force")
    assert r.code == 2 and "is the source database" in r.err and "--replace-source" in r.err, r
    r = workspace.run("restore", "demo-lis", "--replace-source")  # no terminal, no --yes
    assert r.code == 2 and "pass --yes" in r.err and str(workspace.db) in r.err, r
    # on a terminal, a wrong answer changes nothing
    p = subprocess.run(["script", "-qec", f"{sys.executable} -m backupkit.cli restore demo-lis --replace-source",
                        "/dev/null"], input="nope\n", env=workspace.env(), capture_output=True, text=True, timeout=120)
    assert "REPLACES the production database" in p.stdout and "not confirmed" in p.stdout, p.stdout
    assert _patients(workspace.db) == 0
    r = workspace.ok("restore", "demo-lis", "--replace-source", "--yes")
    assert "the source database (production)" in r.out
    assert _patients(workspace.db) > 0
    body = json.loads(workspace.ledger_rows("restore")[-1][3])
    assert body["replaced_source"] is True and body["fingerprints"] == "match"


def _patients(path) -> int:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:  # closed: an open handle blocks restore --force
        return db.execute("SELECT count(*) FROM patients").fetchone()[0]


def test_bad_or_empty_evidence_periods_are_refused(workspace, tmp_path):
    workspace.ok("backup", "demo-lis")
    r = workspace.run("evidence", "export", "--since", "2026-03-01", "--until", "2026-02-01", "--out", str(tmp_path / "a"))
    assert r.code == 2 and "before --since" in r.err, r
    r = workspace.run("evidence", "export", "--since", "2001-01-01", "--until", "2001-12-31", "--out", str(tmp_path / "b"))
    assert r.code == 2 and "no ledger record falls between" in r.err, r
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_init_into_a_directory_it_cannot_write_is_a_one_line_error(workspace, tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    r = _without_dac(workspace, "init", str(locked / "bk"))
    assert r.code == 2 and str(locked) in r.err and "permission denied" in r.err.lower(), r
    assert "internal error" not in r.err and len(r.err.strip().splitlines()) == 1


def test_ids_are_never_cut_and_sizes_say_what_they_count(workspace):
    r = workspace.ok("backup", "demo-lis")
    (bid,) = [p.name for p in workspace.backups()]
    assert bid in r.out and ("kB encrypted" in r.out or "MB encrypted" in r.out), r
    out = workspace.ok("list").out
    assert bid in out and "offsite: offsite" in out and "drill: never" in out, out
    r = workspace.ok("prune", "--dry-run")
    assert f"keep    {bid}  newest" in r.out, r
