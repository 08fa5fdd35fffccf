"""The exceptions section: every miss, failure, gap and overdue action of the period, each with its
record seqs. Pure and deterministic (``evidence verify`` recomputes it)."""

from __future__ import annotations

from datetime import datetime, tzinfo

from ..records import CopyRecord, DrillRecord
from ..reviews import Reviews
from .facts import Facts
from .i18n import LANGS, local_day, message, show_time


_STATUS = {"missing": {"zh": "缺失", "en": "missing"}, "failed": {"zh": "损坏或校验失败", "en": "damaged"},
           "corrupt": {"zh": "损坏", "en": "corrupt"}}


def _status(s) -> dict:
    return _STATUS.get(str(s), {"zh": f"状态“{s}”", "en": str(s)})


def _or(v, default):
    return default if v is None else v


def _ex(kind: str, system: str, when: str, key: str, args: dict, records: list[int]) -> dict:
    return {"type": kind, "system": system, "when": when, "records": sorted({r for r in records if r}),
            "text": {lang: message(lang, key, {k: (v[lang] if isinstance(v, dict) else v) for k, v in args.items()})
                     for lang in LANGS}}


def exceptions(facts_by_system: dict[str, Facts], policies: list, records, reviews: Reviews, *, as_of: datetime,
               tz: tzinfo, missing_policies: list[dict]) -> list[dict]:
    out: list[dict] = []
    for p in policies:
        f = facts_by_system[p.system]
        s = p.system
        for d in f.missed:
            failed = [r.seq for r in f.failed_backups if local_day(r.time, tz) == d]
            out.append(_ex("missed_backup", s, d.isoformat(), "ex_missed_backup", {"day": d.isoformat()}, failed))
        for r in f.failed_backups:
            out.append(_ex("failed_backup", s, show_time(r.time, tz), "ex_failed_backup", {"subject": r.subject}, [r.seq]))
        for r in f.failed_copies:
            out.append(_ex("failed_copy", s, show_time(r.time, tz), "ex_failed_copy",
                           {"subject": r.subject, "target": _or(CopyRecord.of(r).target, "?")}, [r.seq]))
        limit = p.rpo.total_seconds()
        for c in f.copies:
            b = next(r for r in f.backups if r.seq == c.backup_seq)
            if c.lag is None:
                out.append(_ex("copy_missing", s, show_time(b.time, tz), "ex_copy_missing",
                               {"subject": c.backup_id, "target": c.target}, [c.backup_seq]))
            elif c.lag > limit:
                out.append(_ex("copy_lag", s, show_time(b.time, tz), "ex_copy_lag",
                               {"subject": c.backup_id, "target": c.target, "lag_s": c.lag, "limit_s": limit},
                               [c.backup_seq, c.copy_seq]))
        every = p.drill.every.total_seconds()
        for (a, b, gap), (sa, sb) in zip(f.drill_gaps, f.gap_drill_seqs):
            if gap > every:
                out.append(_ex("drill_gap", s, show_time(a.isoformat(), tz), "ex_drill_gap",
                               {"start": show_time(a.isoformat(), tz, seconds=False),
                                "end": show_time(b.isoformat(), tz, seconds=False), "gap_s": gap, "every_s": every},
                               [sa, sb]))
        tier = p.tier.total_seconds()
        for r in f.drills:
            d = DrillRecord.of(r)
            revs, _, _ = reviews.for_drill(r.subject)
            if not d.passed:
                out.append(_ex("drill_failed", s, show_time(r.time, tz), "ex_drill_failed", {"subject": r.subject},
                               [r.seq]))
                if not revs:
                    out.append(_ex("drill_unreviewed", s, show_time(r.time, tz), "ex_drill_unreviewed",
                                   {"subject": r.subject}, [r.seq]))
            for rv in revs:
                if rv.body.get("verdict") == "rejected":
                    out.append(_ex("review_rejected", s, show_time(rv.time, tz), "ex_review_rejected",
                                   {"subject": r.subject, "reviewer": rv.body.get("reviewer", "")}, [r.seq, rv.seq]))
            m = d.measured_rto
            if m is not None and m > tier:
                out.append(_ex("rto_exceeded", s, show_time(r.time, tz), "ex_rto_exceeded",
                               {"subject": r.subject, "measured_s": m, "tier_s": tier}, [r.seq]))
        for seq, row in f.verify_failures:
            v = next(r for r in records if r.seq == seq)
            out.append(_ex("verify_failed", s, show_time(v.time, tz), "ex_verify_failed",
                           {"subject": row.get("backup_id", "?"), "status": _status(row.get("status"))}, [seq]))
        for a in reviews.actions.values():
            if a.system == s and a.overdue(as_of.astimezone(tz).date()):
                out.append(_ex("action_overdue", s, a.due, "ex_action_overdue",
                               {"subject": a.id, "owner": a.opened.body.get("owner", ""), "due": a.due},
                               [a.opened.seq]))
    scope = {p.system for p in policies}
    for r in records:
        step = r.body.get("clock_step") if isinstance(r.body, dict) else None
        if isinstance(step, dict) and (r.policy in scope or r.policy == "*"):
            out.append(_ex("clock_step", r.policy, show_time(r.time, tz), "ex_clock_step",
                           {"seq": r.seq, "back_s": float(step.get("seconds_back") or 0)}, [r.seq]))
    for m in missing_policies:
        out.append(_ex("policy_missing", m["system"], "", "ex_policy_missing", {"sha": m["sha256"][:16]}, m["records"]))
    return sorted(out, key=lambda e: (e["system"], e["when"], e["type"]))
