"""The bundle's report.html: self-contained (inline CSS, no script), printable on A4 with
headers and page numbers, in Chinese or English (every word from glossary.yaml).

Everything the template shows is prepared here as plain data from the records,
defensively: a record of any kind, from any failure point (a drill that failed
before it had a backup or a scratch, a body from an older or newer version),
renders; a field that is absent shows "—", never an error.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from calendar import monthrange
from datetime import date

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from ..keys import fingerprint_groups
from ..records import DrillRecord, Step, VerifyRecord
from . import i18n
from .i18n import duration, label, show_time, term, verdict_label


def _d(v) -> dict:
    return v if isinstance(v, dict) else {}


def _l(v) -> list:
    return v if isinstance(v, list) else []


def code(v) -> Markup:
    return Markup("<code>{}</code>").format(v)


def user_text(v) -> Markup:
    """Free text an operator typed (a note, a corrective action): quoted as written."""
    return Markup('<span class="user">{}</span>').format(v)


# ---- drills --------------------------------------------------------------------------------------

_STEP_FAILED = re.compile(r"\Astep (\S+) failed(?:: (.*))?\Z", re.S)
_CHECK = re.compile(r"\Acheck (failed|skipped \(unproven\)): (.*?)(?:: (.*))?\Z", re.S)
_WAIVED = re.compile(r"\Adeviation \(waived by policy\): (.*?)(?:: (.*))?\Z", re.S)
_FIXED = {
    "the restore did not complete": {"zh": "恢复未完成", "en": "the restore did not complete"},
    "no data-proving check passed (fingerprints were not compared)":
        {"zh": "没有通过任何能证明数据的检查（未比对数据指纹）", "en": "no data-proving check passed (fingerprints were not compared)"},
    "recovery time exceeded the tier's RTO": {"zh": "恢复时间超过停机等级（恢复时间目标）", "en": "recovery time exceeded the tier's RTO"},
    "recovery point is older than the RPO": {"zh": "恢复点早于恢复点目标", "en": "recovery point is older than the RPO"},
    "recovery time was not measured": {"zh": "未测得恢复时间", "en": "recovery time was not measured"},
}


def deviation(text: str, lang: str) -> Markup:
    """A drill's deviation sentence (written by backupkit.verdict) in the report's language; tool
    output it quotes (error messages, check names) stays verbatim in <code>."""
    text = str(text)
    if text in _FIXED:
        return Markup(escape(_FIXED[text][lang]))
    m = _STEP_FAILED.match(text)
    if m:
        step = term("steps", m[1], lang)
        head = f"步骤“{step}”失败" if lang == "zh" else f"step {step} failed"
        return Markup(escape(head)) + (Markup("：" if lang == "zh" else ": ") + code(m[2]) if m[2] else Markup(""))
    m = _CHECK.match(text)
    if m:
        what = ("检查未通过" if m[1] == "failed" else "检查被跳过（未证明）") if lang == "zh" else f"check {m[1]}"
        return _about_check(what, m[2], m[3], lang)
    m = _WAIVED.match(text)
    if m:
        return _about_check("偏差（策略豁免）" if lang == "zh" else "deviation (waived by policy)", m[1], m[2], lang)
    return (Markup("原文：") if lang == "zh" else Markup("")) + code(text)


def _about_check(what: str, name: str, detail: str | None, lang: str) -> Markup:
    """``what: <code>check name</code>[: <code>detail</code>]`` with the language's colon."""
    sep = Markup("：" if lang == "zh" else ": ")
    return Markup(escape(what)) + sep + code(name) + (sep + code(detail) if detail else Markup(""))


_FP = re.compile(r"manifest rows=(\S+) hash=(\S+), restored rows=(\S+) hash=(\S+)")
_ROWS = re.compile(r"\Arows=(\S+)(?: hash=(\S+))?\Z")


def check_view(c: dict, lang: str) -> dict:
    name = str(c.get("name", ""))
    status = str(c.get("status", ""))
    detail = str(c.get("detail", "") or "")
    kind, subject = "other", name
    if name.startswith("fingerprint "):
        kind, subject = "fingerprint", name[len("fingerprint "):]
    elif name.startswith("assertion "):
        kind, subject = "assertion", name[len("assertion "):]
    elif "integrity" in name or "foreign_key" in name or "check" in name:
        kind = "integrity"
    expected = actual = Markup("—")
    rows_word = "行数" if lang == "zh" else "rows"
    hash_word = "哈希" if lang == "zh" else "hash"

    def rh(rows, h):
        out = Markup(escape(f"{rows_word} ")) + code(rows)
        return out + (Markup(escape(f"，{hash_word} " if lang == "zh" else f", {hash_word} ")) + code(h)
                      if h and h != "None" else Markup(""))

    if kind == "fingerprint":
        m, p = _FP.search(detail), _ROWS.match(detail)
        if m:
            expected, actual = rh(m[1], m[2]), rh(m[3], m[4])
        elif p:
            expected = actual = rh(p[1], p[2])
        elif detail:
            actual = code(detail)
    elif kind == "assertion":
        expected = code(c.get("expect")) if c.get("expect") else Markup("—")
        actual = code(detail) if detail else Markup("—")
    elif detail:
        actual = code(detail)
    return {"kind": term("check_kinds", kind, lang), "subject": subject, "status": status,
            "status_text": label(lang, {"passed": "passed", "failed": "failed", "skipped": "skipped"}.get(status, "failed")),
            "expected": expected, "actual": actual, "sql": c.get("sql") or ""}


_SCRATCH_KEYS = {"kind": ("类型", "kind"), "path": ("路径", "path"), "source": ("生产源", "production source"),
                 "is_source": ("是否为生产源", "is the production source"), "host": ("主机", "host"),
                 "port": ("端口", "port"), "database": ("数据库", "database"), "dsn": ("连接串", "DSN"),
                 "server": ("服务器", "server"), "data_dir": ("数据目录", "data directory"),
                 "socket": ("套接字目录", "socket directory"), "user": ("用户", "user")}


def kv_view(d: dict, lang: str) -> list[tuple[str, Markup]]:
    out = []
    for k, v in d.items():
        name = _SCRATCH_KEYS.get(k)
        shown_k = (name[0] if lang == "zh" else name[1]) if name else k
        if isinstance(v, bool):
            shown_v = Markup(escape(label(lang, "yes" if v else "no")))
        else:
            shown_v = code(v if not isinstance(v, (dict, list)) else str(v))
        out.append((shown_k if name else Markup("<code>{}</code>").format(k), shown_v))
    return out


def drill_view(r, reviews, lang: str, tz, as_of) -> dict:
    b = _d(r.body)
    copy, rto, rpo, backup = _d(b.get("copy")), _d(b.get("rto")), _d(b.get("rpo")), _d(b.get("backup"))
    if copy.get("location") == "target" or copy.get("target"):
        copy_text = label(lang, "copy_target", target=copy.get("target", "?"))
    elif copy.get("location") == "local":
        copy_text = label(lang, "copy_local")
    else:
        copy_text = label(lang, "not_reached")
    timeline = []
    for s in _l(b.get("timeline")):
        s = _d(s)
        ok = Step.model_validate(s).ok
        timeline.append({"step": term("steps", str(s.get("step", "")), lang), "raw": s.get("step", ""),
                         "started": show_time(s.get("started"), tz) if s.get("started") else "—",
                         "seconds": duration(s.get("seconds"), lang),
                         "ok": ok,
                         "status": label(lang, "ok" if ok else "failed_status"),
                         "detail": s.get("detail") if not ok else ""})
    teardown_text, teardown_ok = teardown_summary(_d(b.get("teardown")), lang)
    revs, notes, actions = reviews.for_drill(r.subject)
    measured = rto.get("measured_seconds")
    target = rto.get("target_seconds")
    age, judged = rpo.get("age_seconds"), rpo.get("judged")
    if age is None:
        rpo_text = Markup(escape(label(lang, "not_reached")))
    elif judged is False or rpo.get("met") is None:
        rpo_text = Markup(escape(label(lang, "rpo_not_judged", age=duration(age, lang))))
    else:
        rpo_text = Markup(escape(label(lang, "rpo_judged", age=duration(age, lang),
                                       target=duration(rpo.get("target_seconds"), lang),
                                       verdict=label(lang, "within" if rpo.get("met") else "over"))))
    op = _d(b.get("operator"))
    passed = DrillRecord.of(r).passed
    return {
        "seq": r.seq, "id": r.subject, "system": r.policy, "passed": passed,
        "verdict": label(lang, "passed" if passed else "failed"),
        "started": show_time(b.get("started") or r.time, tz), "finished": show_time(b.get("finished") or r.time, tz),
        "backup_id": b.get("backup_id") or "", "copy_text": copy_text,
        "manifest": backup.get("manifest_sha256") or "", "policy_sha": backup.get("policy_sha256") or "",
        "recovery_point": show_time(rpo.get("recovery_point"), tz) if rpo.get("recovery_point") else "—",
        "scratch": kv_view(_d(b.get("scratch")), lang), "timeline": timeline,
        "checks": [check_view(_d(c), lang) for c in _l(b.get("checks"))],
        "rto_measured": duration(measured, lang) if isinstance(measured, (int, float)) else label(lang, "not_measured"),
        "rto_target": duration(target, lang) if isinstance(target, (int, float)) else "—",
        "rto_met": rto.get("met"), "tier": duration(target, lang) if isinstance(target, (int, float)) else "—",
        "rpo": rpo_text, "deviations": [deviation(x, lang) for x in _l(b.get("deviations"))],
        "teardown": teardown_text, "teardown_ok": teardown_ok, "workdir_removed": b.get("workdir_removed"),
        "operator": op.get("user") or "—", "account": op.get("account") or "", "host": op.get("host") or "",
        "designated": b.get("reviewer") or "",
        "reviews": [{"seq": x.seq, "time": show_time(x.time, tz), "reviewer": _d(x.body).get("reviewer", ""),
                     "accepted": _d(x.body).get("verdict") == "accepted",
                     "verdict": label(lang, "review_accepted" if _d(x.body).get("verdict") == "accepted"
                                      else "review_rejected"),
                     "note": _d(x.body).get("note", ""), "account": _d(_d(x.body).get("operator")).get("account", "")}
                    for x in revs],
        "notes": [{"seq": x.seq, "time": show_time(x.time, tz), "text": _d(x.body).get("text", "")} for x in notes],
        "actions": [action_view(a, lang, tz, as_of) for a in actions],
        "typed_actions": [str(x) for x in _l(b.get("corrective_actions"))],
    }


def action_view(a, lang, tz, as_of) -> dict:
    ob, cb = _d(a.opened.body), _d(a.closed.body) if a.closed is not None else {}
    overdue = a.overdue(as_of.astimezone(tz).date())
    state = "closed" if a.closed is not None else ("overdue" if overdue else "open")
    return {"id": a.id, "system": a.system, "seq": a.opened.seq, "drill_id": a.drill_id, "owner": ob.get("owner", ""),
            "due": ob.get("due", ""), "text": ob.get("text", ""), "state": state, "state_text": label(lang, state),
            "closed_seq": a.closed.seq if a.closed is not None else None,
            "closed_time": show_time(a.closed.time, tz) if a.closed is not None else "",
            "closed_by": cb.get("by", ""), "closed_note": cb.get("note", "")}


# ---- charts --------------------------------------------------------------------------------------


def calendar(facts, systems: list[str], days: list[date], as_of, tz) -> list[dict]:
    """Per system, one row per month and one cell per day of the month (1..31): the date axis is
    printed, not hidden in tooltips."""
    if not days:
        return []
    period = set(days)
    today = as_of.astimezone(tz).date()
    months = []
    d = date(days[0].year, days[0].month, 1)
    while d <= days[-1]:
        months.append(d)
        d = date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    out = []
    for s in systems:
        f = facts[s]
        failed_days = {i18n.local_day(r.time, tz) for r in f.failed_backups}
        rows = []
        for m in months:
            cells = []
            for n in range(1, 32):
                if n > monthrange(m.year, m.month)[1]:
                    cells.append({"cls": "cal-none-day", "sym": "", "title": ""})
                    continue
                day = date(m.year, m.month, n)
                if day not in period:
                    cells.append({"cls": "cal-out", "sym": "", "title": day.isoformat()})
                elif day in f.backup_days:
                    cells.append({"cls": "cal-day c-ok", "sym": "✓", "title": day.isoformat()})
                elif day in failed_days:
                    cells.append({"cls": "cal-day c-failed", "sym": "✗", "title": day.isoformat()})
                elif day > today or day not in f.due:
                    cells.append({"cls": "cal-day c-future", "sym": "", "title": day.isoformat()})
                else:
                    cells.append({"cls": "cal-day c-none", "sym": "·", "title": day.isoformat()})
            rows.append({"month": f"{m.year}-{m.month:02d}", "cells": cells})
        out.append({"system": s, "rows": rows})
    return out


def rto_bars(drills: list[dict], records, lang) -> list[dict]:
    out = []
    by_seq = {r.seq: r for r in records}
    for d in drills:
        rto = _d(_d(by_seq[d["seq"]].body).get("rto"))
        m, t = rto.get("measured_seconds"), rto.get("target_seconds")
        ratio = (min(m / t, 1.25) if isinstance(m, (int, float)) and isinstance(t, (int, float)) and t else 0.0)
        out.append({"seq": d["seq"], "label": f"{d['system']} {d['started'][:10]}", "id": d["id"],
                    "measured": d["rto_measured"], "target": d["rto_target"], "width": round(ratio * 80, 1),
                    "met": rto.get("met") is True, "verdict": d["verdict"], "passed": d["passed"]})
    return out


def coverage(facts, policies, lang) -> list[dict]:
    out = []
    for p in policies:
        f = facts[p.system]
        total = len(f.backups)
        copied = sum(1 for b in f.backups if all(c.copy_seq for c in f.copies if c.backup_seq == b.seq)) \
            if p.targets else 0
        out.append({"system": p.system, "copied": copied, "total": total,
                    "ratio": (copied / total) if total else 0.0,
                    "text": label(lang, "copied_of", copied=copied, total=total, targets=", ".join(p.targets))
                    if p.targets else label(lang, "no_target")})
    return out


def summary(facts, policies, drills, lang, tz) -> list[dict]:
    rows = []
    for p in policies:
        f = facts[p.system]
        mine = [d for d in drills if d["system"] == p.system]
        last_rto = next((d for d in reversed(mine) if d["rto_met"] is not None), None)
        n_due = len(f.due)
        rows.append({"system": p.system, "title": p.title, "tier": duration(p.tier, lang),
                     "rpo": duration(p.rpo, lang), "backups": len(f.backups),
                     "days": f"{sum(1 for d in f.due if d in f.backup_days)} / {n_due}",
                     "days_ok": n_due == sum(1 for d in f.due if d in f.backup_days),
                     "last_backup": show_time(f.backups[-1].time, tz) if f.backups else "—",
                     "drills_passed": sum(1 for d in mine if d["passed"]), "drills": len(mine),
                     "last_rto": last_rto["rto_measured"] if last_rto else "—",
                     "last_rto_met": last_rto["rto_met"] if last_rto else None})
    return rows


def verify_view(records, systems, lang, tz) -> list[dict]:
    out = []
    for r in records:
        if r.kind != "verify":
            continue
        b = _d(r.body)
        rows = [x for x in VerifyRecord.of(r).results if x.system in systems]
        if not rows:
            continue
        out.append({"seq": r.seq, "time": show_time(r.time, tz),
                    "where": b.get("where") or b.get("target") or b.get("location") or "",
                    "deep": label(lang, "deep" if b.get("deep") else "shallow"), "checked": len(rows),
                    "failed": [x.as_dict() for x in rows if not x.ok]})
    return out


def prune_view(records, lang, tz) -> list[dict]:
    out = []
    for r in records:
        if r.kind != "prune":
            continue
        b = _d(r.body)
        phase = b.get("phase", "done")
        ids = _l(b.get("remove")) if phase == "planned" else _l(b.get("removed"))
        out.append({"seq": r.seq, "time": show_time(r.time, tz), "system": r.policy,
                    "location": b.get("location") or r.subject, "phase": label(lang, "phase_planned" if phase == "planned" else "phase_done"),
                    "ids": [str(x) for x in ids]})
    return out


def css_string(s: str) -> Markup:
    """A CSS string literal for @page margin boxes (quotes, backslashes and '<' escaped)."""
    out = "".join(c if c.isalnum() or c in " -_.,:;()/·（）：、，。" or ord(c) > 127 else f"\\{ord(c):x} " for c in str(s))
    return Markup(f'"{out}"')


def environment() -> Environment:
    env = Environment(loader=PackageLoader("backupkit.evidence", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["css"] = css_string
    return env


def common(meta, policies, derived, lang, tz, settings) -> dict:
    p = meta["period"]
    L = SimpleNamespace(**{k: v[lang] for k, v in i18n.glossary()["labels"].items()})  # no dict methods in the way
    return {
        "L": L, "lang": lang, "meta": meta, "settings": settings,
        "unit": settings.unit or label(lang, "not_set"), "filing": settings.filing_number or label(lang, "not_set"),
        "level": label(lang, "level_n", n=settings.level),
        "period_text": label(lang, "period_value", since=p["first_day"], until=p["last_day"],
                             zone=i18n.zone_label(tz, i18n.aware(p["start"]))),
        "generated": show_time(meta["generated"], tz), "fp": fingerprint_groups(meta["key_fingerprint"]),
        "V": lambda v: verdict_label(v, lang), "dur": lambda s: duration(s, lang),
    }


def render_report(meta: dict, records, policies, derived, lang: str, tz, settings) -> str:
    from .facts import period_days

    as_of = i18n.aware(meta["period"]["as_of"])
    drills = [drill_view(r, derived.reviews, lang, tz, as_of) for r in records if r.kind == "drill"]
    days = period_days(i18n.aware(meta["period"]["start"]), i18n.aware(meta["period"]["end_exclusive"]), tz)
    systems = [p.system for p in policies]
    ctx = common(meta, policies, derived, lang, tz, settings)
    actions = [action_view(a, lang, tz, as_of) for a in derived.reviews.actions.values() if a.system in systems]
    ctx.update(
        summary=summary(derived.facts, policies, drills, lang, tz),
        calendar=calendar(derived.facts, systems, days, as_of, tz),
        rto=rto_bars(drills, records, lang), coverage=coverage(derived.facts, policies, lang),
        controls=derived.controls, exceptions=derived.exceptions, drills=drills, actions=actions,
        verifies=verify_view(records, set(systems), lang, tz), prunes=prune_view(records, lang, tz),
        versions=meta["policy_versions"], missing_versions=meta["policy_versions_missing"],
        T=lambda section, key: term(section, key, lang), n_days=len(days),
        zone_text=i18n.zone_label(tz, i18n.aware(meta["period"]["start"])),
    )
    return environment().get_template("report.html.j2").render(**ctx)


# Teardown proofs name each fact <thing>_exists / _running / _open (engines.kit.teardown_proof);
# SQLite records before 2026-11-28 carry only ``exists_after_teardown``.
_PROOF_SUFFIXES = ("_exists", "_running", "_open")


def teardown_summary(teardown: dict, lang: str) -> tuple[Markup | None, bool | None]:
    """(text, ok) for a drill's teardown proof: ok only when every recorded fact is false."""
    facts = {k: v for k, v in teardown.items() if k.endswith(_PROOF_SUFFIXES)}
    if facts:  # a fact the engine could not check (None) is not proof that it is gone
        left = sorted(k if v else f"{k}=unknown" for k, v in facts.items() if v is not False)
        ok = not left and not teardown.get("errors")
    elif "exists_after_teardown" in teardown:
        left, ok = [], teardown.get("exists_after_teardown") is False
    else:
        return None, None
    where = next((str(teardown[k]) for k in ("path", "datadir", "database", "stage_dir", "user", "aux_instance")
                  if teardown.get(k)),
                 "?")
    text = Markup(escape(label(lang, "teardown_ok" if ok else "teardown_left", path="{path}"))).replace("{path}", code(where))
    if left:
        text += Markup(" (") + escape(", ".join(left)) + Markup(")")
    return text, ok
