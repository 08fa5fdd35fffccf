"""The due-based daemon runs what is due, catches up missed slots, and spaces retries."""

from datetime import datetime, timedelta, timezone

from backupkit.context import Context
from backupkit.scheduler import Daemon


def test_tick_runs_due_jobs_and_catches_up(workspace):
    ctx = Context.load(workspace.config)
    d = Daemon(ctx)
    now = datetime.now(timezone.utc)
    ran = d.tick(now)
    assert ran == ["backup demo-lis", "drill demo-lis"]
    assert len(workspace.backups()) == 1 and len(workspace.ledger_rows("drill")) == 1
    assert d.tick(now + timedelta(minutes=1)) == []  # nothing is due any more
    # the host was "down" for two days: the next tick backs up once for the missed slot, not twice
    later = now + timedelta(days=2)
    assert d.tick(later) == ["backup demo-lis"]
    assert d.tick(later + timedelta(minutes=1)) == []
    rows = workspace.ledger_rows("backup")
    assert len(rows) == 2 and '"trigger":"daemon"' in rows[-1][3]
    ctx.close()


def test_failed_backup_is_retried_later_not_every_tick(workspace):
    workspace.db.unlink()
    ctx = Context.load(workspace.config)
    d = Daemon(ctx, drills=False)
    now = datetime.now(timezone.utc)
    assert d.tick(now) == ["backup demo-lis"]
    assert d.tick(now + timedelta(minutes=5)) == []
    assert d.tick(now + timedelta(hours=1, minutes=1)) == ["backup demo-lis"]
    ctx.close()


def test_crontab_lines(workspace):
    r = workspace.ok("schedule", "crontab")
    assert f"0 2 * * *  backupkit --config {workspace.config} --quiet backup demo-lis --trigger cron" in r.out
