"""The bundle's report.html: self-contained (inline CSS and SVG), printable,
in Chinese or English. Charts are computed here as plain data for the template."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from jinja2 import Environment, PackageLoader, select_autoescape

from ..durations import format_duration

LABELS = {
    "zh": {
        "title": "数据备份与恢复演练审计证据", "period": "统计期间", "generated": "生成时间", "key": "签名公钥 ID",
        "summary": "系统概况", "system": "系统", "tier": "停机等级 (RTO)", "rpo": "RPO", "backups": "备份次数",
        "last_backup": "最近备份", "offsite": "异地副本覆盖率", "drills": "恢复演练 (通过/总数)", "last_rto": "最近实测恢复时间",
        "calendar": "备份日历", "rto_chart": "每次演练恢复时间 vs 目标", "coverage": "异地副本覆盖",
        "controls": "合规控制点", "control": "控制点", "met": "符合", "not_met": "不符合", "evidence": "证据记录",
        "drill_detail": "恢复演练明细", "verdict": "结论", "passed": "通过", "failed": "未通过", "checks": "检查项",
        "deviations": "偏差", "operator": "执行人", "reviewer": "复核人", "timeline": "步骤耗时", "copy": "使用副本",
        "verify_howto": "离线验证方法", "no_drills": "期间内无恢复演练记录", "all": "全部", "records": "记录",
        "backup_ok": "有备份", "backup_none": "无备份", "backup_failed": "仅失败/中断", "target": "目标",
        "corrective": "纠正措施", "teardown": "演练环境销毁证明",
    },
    "en": {
        "title": "Backup and restore-drill audit evidence", "period": "Period", "generated": "Generated",
        "key": "Signing key ID", "summary": "Systems", "system": "System", "tier": "Downtime tier (RTO)", "rpo": "RPO",
        "backups": "Backups", "last_backup": "Last backup", "offsite": "Offsite coverage",
        "drills": "Drills (passed/total)", "last_rto": "Last measured RTO", "calendar": "Backup calendar",
        "rto_chart": "Recovery time per drill vs target", "coverage": "Offsite copy coverage", "controls": "Controls",
        "control": "Control", "met": "met", "not_met": "NOT met", "evidence": "Evidence records",
        "drill_detail": "Restore drills", "verdict": "Verdict", "passed": "passed", "failed": "FAILED",
        "checks": "Checks", "deviations": "Deviations", "operator": "Operator", "reviewer": "Reviewer",
        "timeline": "Step durations", "copy": "Copy used", "verify_howto": "How to verify offline",
        "no_drills": "No restore drill in this period", "all": "all", "records": "records", "backup_ok": "backup",
        "backup_none": "none", "backup_failed": "failed/interrupted only", "target": "target",
        "corrective": "Corrective actions", "teardown": "Teardown proof",
    },
}


def _day(iso: str) -> date:
    return datetime.fromisoformat(iso).date()


def calendar(records, systems: list[str], since: str | None, until: str | None) -> dict:
    """Per system, one cell per day: ok / failed / none."""
    days_with = {}
    for r in records:
        if r.kind in ("backup", "abandoned"):
            state = days_with.setdefault((r.policy, _day(r.time)), "failed")
            if r.kind == "backup":
                days_with[(r.policy, _day(r.time))] = "ok"
            else:
                days_with[(r.policy, _day(r.time))] = state
    all_days = [d for (_, d) in days_with] or [date.today()]
    start = _day(since) if since else min(all_days)
    end = (_day(until) - timedelta(days=1)) if until else max(max(all_days), start)
    if (end - start).days > 400:
        start = end - timedelta(days=400)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return {"days": [d.isoformat() for d in days],
            "rows": [{"system": s, "cells": [days_with.get((s, d), "none") for d in days]} for s in systems]}


def rto_bars(records) -> list[dict]:
    out = []
    for r in records:
        if r.kind != "drill":
            continue
        rto = r.body.get("rto") or {}
        m, t = rto.get("measured_seconds"), rto.get("target_seconds") or 0
        out.append({"label": f"{r.policy} {r.time[:10]}", "measured": format_duration(m) if m is not None else "—",
                    "target": format_duration(t), "ratio": min((m or 0) / t, 1.25) if t and m is not None else 0,
                    "met": rto.get("met"), "verdict": r.body.get("verdict")})
    return out


def coverage(records, policies) -> list[dict]:
    out = []
    for p in policies:
        ids = {r.subject for r in records if r.kind == "backup" and r.policy == p.system}
        copied = {r.subject for r in records if r.kind == "copy" and r.policy == p.system and r.body.get("status") == "ok"}
        n = len(ids)
        out.append({"system": p.system, "backups": n, "copied": len(ids & copied),
                    "ratio": (len(ids & copied) / n) if n else 0.0, "targets": ", ".join(p.targets) or "—"})
    return out


def summary(records, policies) -> list[dict]:
    rows = []
    for p in policies:
        mine = [r for r in records if r.policy == p.system]
        backups = [r for r in mine if r.kind == "backup"]
        drills = [r for r in mine if r.kind == "drill"]
        last_rto = next(((r.body.get("rto") or {}) for r in reversed(drills)), {})
        rows.append({"system": p.system, "title": p.title, "tier": p.tier_label, "rpo": format_duration(p.rpo),
                     "backups": len(backups), "last_backup": backups[-1].time[:19] if backups else "—",
                     "drills_passed": sum(1 for d in drills if d.body.get("verdict") == "passed"),
                     "drills": len(drills),
                     "last_rto": format_duration(last_rto["measured_seconds"]) if last_rto.get("measured_seconds") is not None else "—",
                     "last_rto_met": last_rto.get("met")})
    return rows


def render_report(meta: dict, records, policies, controls: list[dict], lang: str) -> str:
    env = Environment(loader=PackageLoader("backupkit.evidence", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["dur"] = lambda s: format_duration(s) if s is not None else "—"
    drills = [r for r in records if r.kind == "drill"]
    return env.get_template("report.html.j2").render(
        L=LABELS[lang], lang=lang, meta=meta, summary=summary(records, policies),
        calendar=calendar(records, [p.system for p in policies], meta["since"], meta["until"]),
        rto=rto_bars(records), coverage=coverage(records, policies), controls=controls, drills=drills,
    )
