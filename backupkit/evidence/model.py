"""Everything derived from a bundle's records: facts per system, reviews, verdicts, exceptions,
CSV rows. Deterministic, so ``evidence verify`` recomputes it from the bundle alone."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, tzinfo

from ..records import CopyRecord, DrillRecord
from ..reviews import Reviews, fold
from .controls import evaluate
from .exceptions import exceptions
from .facts import Facts, facts
from .i18n import show_time


@dataclass
class Derived:
    facts: dict[str, Facts]
    reviews: Reviews
    controls: list[dict]
    exceptions: list[dict]


def derive(records, policies, settings, *, start: datetime, end: datetime, as_of: datetime, tz: tzinfo,
           missing_policies: list[dict]) -> Derived:
    """``records``: the full (not omitted) records of the bundle, seq order."""
    fs = {p.system: facts(records, p.system, list(p.targets), start=start, end=end, as_of=as_of, tz=tz)
          for p in policies}
    rv = fold(records)
    return Derived(fs, rv, evaluate(fs, policies, settings),
                   exceptions(fs, policies, records, rv, as_of=as_of, tz=tz, missing_policies=missing_policies))


# ---- CSV: zh or en headers, UTF-8 with BOM (Excel on Chinese Windows reads it right) ---------------

BACKUP_HEADERS = {
    "zh": ["记录序号", "系统", "备份编号", "数据库类型", "开始时间", "结束时间", "一致性时间点", "原始字节数", "加密后字节数",
           "加密文件 SHA-256", "接收方公钥 ID", "已复制到", "执行人", "触发方式", "策略版本 SHA-256", "记录哈希"],
    "en": ["seq", "system", "backup_id", "engine", "started", "finished", "consistency_time", "content_bytes",
           "artifact_bytes", "artifact_sha256", "recipient_key_ids", "offsite_copies", "operator", "trigger",
           "policy_sha256", "record_hash"],
}
DRILL_HEADERS = {
    "zh": ["记录序号", "系统", "演练编号", "开始时间", "结束时间", "备份编号", "使用副本", "结论", "实测恢复时间（秒）",
           "恢复时间目标（秒）", "恢复点距演练（秒）", "恢复点目标（秒）", "是否判定恢复点", "通过检查数", "检查总数", "偏差",
           "执行人", "复核结论", "复核人", "记录哈希"],
    "en": ["seq", "system", "drill_id", "started", "finished", "backup_id", "copy", "verdict", "rto_seconds",
           "rto_target_seconds", "rpo_age_seconds", "rpo_target_seconds", "rpo_judged", "checks_passed", "checks_total",
           "deviations", "operator", "review_verdict", "reviewer", "record_hash"],
}
EXCEPTION_HEADERS = {"zh": ["系统", "时间", "类型", "说明", "记录序号"], "en": ["system", "when", "type", "detail", "records"]}


def _d(v) -> dict:
    return v if isinstance(v, dict) else {}


def to_csv(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8-sig")


def backup_rows(records, tz) -> list[list]:
    copies: dict[str, list[str]] = {}
    for r in records:
        if r.kind == "copy" and CopyRecord.of(r).ok:
            copies.setdefault(r.subject, []).append(str(_d(r.body).get("target", "")))
    out = []
    for r in records:
        if r.kind != "backup":
            continue
        b = _d(r.body)
        streams = [s for s in (b.get("streams") or []) if isinstance(s, dict)]
        out.append([r.seq, r.policy, r.subject, b.get("engine", ""), show_time(b.get("started"), tz),
                    show_time(b.get("finished"), tz), show_time(_d(b.get("consistency")).get("time"), tz),
                    b.get("content_bytes", ""), b.get("artifact_bytes", ""),
                    ";".join(str(s.get("artifact_sha256", "")) for s in streams),
                    ";".join(map(str, b.get("recipients") or [])), ";".join(sorted(set(copies.get(r.subject, [])))),
                    _d(b.get("operator")).get("user", ""), _d(b.get("run")).get("trigger", ""),
                    _d(b.get("policy")).get("sha256", ""), r.hash])
    return out


def drill_rows(records, reviews: Reviews, tz, verdict_word) -> list[list]:
    out = []
    for r in records:
        if r.kind != "drill":
            continue
        b = _d(r.body)
        rto, rpo, copy = _d(b.get("rto")), _d(b.get("rpo")), _d(b.get("copy"))
        checks = [c for c in (b.get("checks") or []) if isinstance(c, dict)]
        d = DrillRecord.of(r)
        revs, _, _ = reviews.for_drill(r.subject)
        last = revs[-1].body if revs else {}
        out.append([r.seq, r.policy, r.subject, show_time(b.get("started"), tz), show_time(b.get("finished"), tz),
                    b.get("backup_id") or "", copy.get("target") or copy.get("location") or "",
                    verdict_word(b.get("verdict")), rto.get("measured_seconds", ""), rto.get("target_seconds", ""),
                    rpo.get("age_seconds", ""), rpo.get("target_seconds", ""), rpo.get("judged", ""),
                    d.checks_passed, len(checks),
                    "; ".join(map(str, b.get("deviations") or [])), _d(b.get("operator")).get("user", ""),
                    verdict_word(last.get("verdict")) if last else "", last.get("reviewer", "") if last else "",
                    r.hash])
    return out


def exception_rows(exc: list[dict], lang: str, type_word) -> list[list]:
    return [[e["system"], e["when"], type_word(e["type"]), e["text"][lang], " ".join(f"#{s}" for s in e["records"])]
            for e in exc]
