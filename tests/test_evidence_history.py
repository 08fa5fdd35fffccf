"""A three-month ledger for the evidence tests: genuinely signed records appended with
backupkit.ledger.Ledger.append (the clock pinned per record), followed by real CLI runs.

Days are counted from D0, 92 days before today, in Asia/Shanghai (the display zone the
workspace's evidence.yaml sets). What the history holds, so the tests can assert it:
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from unittest import mock
from zoneinfo import ZoneInfo

import yaml

from backupkit.evidence import policystore
from backupkit.keys import load_signer
from backupkit.ledger import Ledger

CST = ZoneInfo("Asia/Shanghai")
SYSTEM = "demo-lis"
MISSED_DAYS = (10, 11, 45)           # no backup on these days (11 has a failed one)
COPY_LATE_DAY, COPY_NEVER_DAY = 20, 30  # copy failed then made 30 h late; copy failed, never retried
PASSED_DRILL_DAYS = (5, 41, 78)      # gaps of 36 and 37 days against every: 30d
FAILED_DRILL_DAY = 50                # over the 30 min tier
OLD_POLICY = b"# the policy before day 40\nsystem: demo-lis\ntier: 30m\nengine: sqlite\nsource: {path: /x}\n"
SETTINGS = {"unit": "某市第三人民医院", "filing_number": "43010099999-20001", "level": 3, "timezone": "Asia/Shanghai",
            "approver": "李主任",
            "systems": {SYSTEM: {"name": "检验信息系统", "owner": "张工", "media": "本地磁盘阵列；异地备份目录",
                                 "location": "信息中心机房；灾备机房"}}}


def d0() -> date:
    return datetime.now(CST).date() - timedelta(days=92)


def at(day: int, hh: int = 2, mm: int = 0) -> datetime:
    d = d0() + timedelta(days=day)
    return datetime(d.year, d.month, d.day, hh, mm, tzinfo=CST)


@contextmanager
def clock(t: datetime):
    with mock.patch("backupkit.ledger.now_iso", return_value=t.astimezone(timezone.utc).isoformat(timespec="microseconds")):
        yield


def write_settings(workspace, **extra) -> None:
    (workspace.config.parent / "evidence.yaml").write_text(
        yaml.safe_dump({**SETTINGS, **extra}, allow_unicode=True, sort_keys=False), encoding="utf-8")


class Writer:
    def __init__(self, workspace):
        self.ws = workspace
        self.signer = load_signer(workspace.keys / "signing.pem")
        self.ledger = Ledger(workspace.ledger)
        self.current_sha = hashlib.sha256(workspace.policy_file().read_bytes()).hexdigest()
        self.old_sha = hashlib.sha256(OLD_POLICY).hexdigest()
        store = policystore.store_dir(workspace.ledger)
        store.mkdir(parents=True, exist_ok=True)
        (store / f"{self.old_sha}.yaml").write_bytes(OLD_POLICY)  # kept at the time (a policy store at backup time)

    def add(self, t: datetime, kind: str, subject: str, body: dict, system: str = SYSTEM):
        with clock(t):
            return self.ledger.append(self.signer, kind=kind, policy=system, subject=subject, body=body)

    def backup(self, day: int, system: str = SYSTEM):
        t = at(day)
        bid = t.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.000Z-") + hashlib.sha256(f"{system}{day}".encode()).hexdigest()[:6]
        sha = self.old_sha if day < 40 else self.current_sha
        body = {"manifest_sha256": hashlib.sha256(bid.encode()).hexdigest(), "engine": "sqlite",
                "policy": {"id": system, "sha256": sha, "file": f"{system}.yaml"}, "tier": "30m",
                "started": t.isoformat(), "finished": (t + timedelta(seconds=40)).isoformat(),
                "consistency": {"kind": "sqlite", "time": t.isoformat()}, "run": {"trigger": "cron"},
                "operator": {"user": "backupkit", "account": "backupkit", "host": "his-bk1"},
                "streams": [{"name": "data", "artifact_sha256": hashlib.sha256(bid.encode() + b"a").hexdigest(),
                             "artifact_bytes": 123456}],
                "content_bytes": 400000, "artifact_bytes": 123456, "recipients": ["384358127ed36955"],
                "retention": {"class": "standard"}}
        return bid, self.add(t, "backup", bid, body, system)

    def copy(self, t: datetime, bid: str, ok: bool = True, system: str = SYSTEM):
        body = {"backup_id": bid, "target": "offsite", "files": [{"file": "data.zst.age", "bytes": 123456}],
                "operator": {"user": "backupkit"}}
        body.update({"status": "ok", "verified": True} if ok else {"status": "failed", "error": "target offsite: No space left on device"})
        return self.add(t, "copy", bid, body, system)

    def drill(self, day: int, bid: str, *, passed: bool, seconds: float):
        t = at(day, 10)
        did = t.astimezone(timezone.utc).strftime("D%Y%m%dT%H%M%SZ-") + f"{day:06x}"
        checks = [{"name": "sqlite integrity_check", "status": "passed", "detail": "ok", "proves_data": False},
                  {"name": "fingerprint patients", "status": "passed", "proves_data": True, "detail": "rows=250 hash=1a5ce19b90e4ba4e"},
                  {"name": "assertion patients present", "status": "passed", "detail": "250 > 0",
                   "sql": "SELECT count(*) FROM patients", "expect": "> 0"}]
        if not passed:
            checks[1] = {"name": "fingerprint patients", "status": "failed", "proves_data": True,
                         "detail": "table patients: manifest rows=250 hash=1a5ce19b90e4ba4e, restored rows=249 hash=09f3aa51c2e7d001"}
        body = {"drill_id": did, "system": SYSTEM, "engine": "sqlite", "started": t.isoformat(),
                "finished": (t + timedelta(seconds=seconds + 5)).isoformat(),
                "operator": {"user": "王工", "account": "backupkit", "host": "dr-host"}, "reviewer": "李主任",
                "tier": "30m", "backup_id": bid, "copy": {"location": "target", "target": "offsite"},
                "backup": {"manifest_sha256": hashlib.sha256(bid.encode()).hexdigest(),
                           "policy_sha256": self.old_sha if day < 40 else self.current_sha},
                "scratch": {"kind": "file", "path": f"/var/tmp/backupkit-drill-{day}/scratch.sqlite", "is_source": False},
                "teardown": {"path": f"/var/tmp/backupkit-drill-{day}/scratch.sqlite", "exists_after_teardown": False},
                "workdir_removed": True,
                "rto": {"tier": "30m", "target_seconds": 1800.0, "measured_seconds": seconds, "met": seconds <= 1800},
                "rpo": {"target_seconds": 86400.0, "met": True, "age_seconds": 28800.0, "judged": True,
                        "recovery_point": at(day).isoformat()},
                "timeline": [{"step": "fetch", "started": t.isoformat(), "seconds": 12.5, "status": "ok"},
                             {"step": "restore", "started": t.isoformat(), "seconds": seconds - 20, "status": "ok"},
                             {"step": "checks", "started": t.isoformat(), "seconds": 7.5, "status": "ok"},
                             {"step": "teardown", "started": t.isoformat(), "seconds": 0.2, "status": "ok"}],
                "checks": checks, "verdict": "passed" if passed else "failed",
                "deviations": [] if passed else ["check failed: fingerprint patients: table patients: manifest rows=250 "
                                                 "hash=1a5ce19b90e4ba4e, restored rows=249 hash=09f3aa51c2e7d001",
                                                 "recovery time exceeded the tier's RTO"],
                "corrective_actions": [], "failed_step": None}
        return did, self.add(t, "drill", did, body)


def build(workspace) -> dict:
    """Append the three months; return what the tests need (IDs and seqs)."""
    write_settings(workspace)
    w = Writer(workspace)
    info: dict = {"backups": {}, "drills": {}}
    for day in range(0, 90):
        if day == 11:
            w.add(at(day), "abandoned", at(day).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.000Z-0000ff"),
                  {"reason": "I/O error: No space left on device"})
        if day in MISSED_DAYS:
            continue
        bid, rec = w.backup(day)
        info["backups"][day] = bid
        if day == COPY_LATE_DAY:
            w.copy(at(day, 2, 5), bid, ok=False)
        elif day == COPY_NEVER_DAY:
            info["failed_copy"] = w.copy(at(day, 2, 5), bid, ok=False).seq
        else:
            w.copy(at(day, 2, 5), bid)
        if day == COPY_LATE_DAY + 1:  # 30 hours after its backup
            info["late_copy"] = w.copy(at(day, 8), info["backups"][COPY_LATE_DAY]).seq
        if day in PASSED_DRILL_DAYS:
            info["drills"][day] = w.drill(day, bid, passed=True, seconds=600.0)
        if day == FAILED_DRILL_DAY:
            did, rec = w.drill(day, bid, passed=False, seconds=2400.0)
            info["failed_drill"] = (did, rec.seq)
            w.add(at(day, 16), "review", did, {"type": "drill_review", "drill_id": did, "drill_seq": rec.seq,
                                               "reviewer": "李主任", "verdict": "accepted",
                                               "note": "记录属实，数据指纹不一致，需更换存储", "operator": {"user": "李主任"}})
            w.add(at(day, 17), "corrective_action", "CA-closed", {"action": "open", "drill_id": did, "owner": "张工",
                                                                  "due": (d0() + timedelta(days=60)).isoformat(),
                                                                  "text": "更换异地备份磁盘"})
            info["overdue_action"] = w.add(at(day, 18), "corrective_action", "CA-overdue", {
                "action": "open", "drill_id": did, "owner": "赵工", "due": (d0() + timedelta(days=70)).isoformat(),
                "text": "修订恢复操作手册"}).seq
        if day == FAILED_DRILL_DAY + 8:
            w.add(at(day, 9), "corrective_action", "CA-closed", {"action": "close", "by": "李主任", "note": "已更换并复测"})
        if day == 15:
            w.add(at(day, 3), "verify", "demo-lis", {"deep": True, "results": [
                {"system": SYSTEM, "backup_id": bid, "status": "ok", "detail": "ok"}]})
        if day == 60:
            info["failed_verify"] = w.add(at(day, 3), "verify", "demo-lis", {"deep": False, "results": [
                {"system": SYSTEM, "backup_id": info["backups"][59], "status": "missing", "detail": "gone"}]}).seq
        if day == 62:
            plan = w.add(at(day, 4), "prune", "local", {"location": "local", "phase": "planned",
                                                       "remove": [info["backups"][0]], "kept": {}})
            w.add(at(day, 4, 1), "prune", "local", {"location": "local", "phase": "done", "plan_seq": plan.seq,
                                                   "removed": [info["backups"][0]]})
        if day == 63:
            w.add(at(day, 9), "hold", info["backups"][1], {"action": "hold", "reason": "医疗纠纷 2026-118"})
        if day == 64:
            w.add(at(day, 9), "annotation", SYSTEM, {"text": "交接：备份负责人由张工改为赵工"})
        if day == 70:
            w.add(at(day, 9), "restore", info["backups"][69], {"backup_id": info["backups"][69],
                                                              "destination": "scratch", "seconds": 300})
        if day == 80:  # the clock stepped back two hours for one record
            info["clock_step"] = w.add(at(day, 0), "annotation", SYSTEM, {"text": "NTP 校时"}).seq
    w.ledger.close()
    return info


def real_failed_drill(workspace) -> dict:
    """Real CLI records after the history: a backup, its artifact corrupted, a drill that fails before any
    scratch exists, its review and a corrective action."""
    workspace.ok("backup", SYSTEM)
    (bdir,) = [p for p in workspace.backups()]
    art = bdir / "data.zst.age"
    data = bytearray(art.read_bytes())
    data[200] ^= 0xFF
    art.write_bytes(bytes(data))
    r = workspace.run("drill", SYSTEM, "--json")
    assert r.code == 3, r
    rec = json.loads(r.out)
    assert rec["verdict"] == "failed" and "scratch" not in rec and "teardown" not in rec
    workspace.ok("review", "drill", rec["drill_id"], "--reviewer", "李主任", "--verdict", "accepted",
                 "--note", "备份文件损坏，已确认")
    due = (datetime.now(CST).date() + timedelta(days=7)).isoformat()
    out = workspace.ok("review", "action", "add", SYSTEM, "--drill", rec["drill_id"], "--owner", "张工", "--due", due,
                       "--text", "重新备份并复测").out
    return {"drill_id": rec["drill_id"], "action_id": out.split()[2]}
