"""Control mappings and their verdicts: 符合 / 部分符合 / 不符合 / 不适用, or 待核查文档.

Mappings are data (``backupkit/data/controls/*.yaml``, linked from
``policies/controls``): each assessment item (测评项) names its control point
(控制点), the standard's own text and a list of rules with their thresholds.
A rule is a pure function from one system's counted facts (facts.py), its
policy and the organisation's settings to a ``Finding``: a verdict
(rules.py), a sentence in zh and en, and the record seqs behind it. An item's
verdict per system is the worst of its rules; overall, the worst of its
systems. ``evaluate`` is deterministic, so ``evidence verify`` recomputes it
from the bundle and rejects an edited controls.json.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable

import yaml

from ..durations import parse_duration
from ..records import DrillRecord
from . import rules
from .facts import Facts
from .i18n import LANGS, message


@dataclass
class Finding:
    rule: str
    verdict: str
    key: str
    args: dict = field(default_factory=dict)
    records: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        def pick(v, lang):
            return v[lang] if isinstance(v, dict) and lang in v else v

        text = {lang: message(lang, self.key, {k: pick(v, lang) for k, v in self.args.items()}) for lang in LANGS}
        return {"rule": self.rule, "verdict": self.verdict, "text": text, "records": sorted(set(self.records))}


Rule = Callable[[Facts, object, object, dict], Finding]


def _seconds(value, policy) -> float:
    if value == "rpo":
        return policy.rpo.total_seconds()
    return parse_duration(value).total_seconds()


def backup_days(f: Facts, policy, st, p: dict) -> Finding:
    n, m = sum(1 for d in f.due if d in f.backup_days), len(f.due)
    v = rules.ratio(n, m, p.get("full_percent", 100), p.get("partial_percent", 90))
    seqs = [s for d in f.due for s in f.backup_days.get(d, [])] + [r.seq for r in f.failed_backups]
    if m == 0:
        return Finding("backup_days", v, "days_none", {}, seqs)
    return Finding("backup_days", v, "days", {"n": n, "m": m, "pct": rules.percent(n, m),
                                               "full": p.get("full_percent", 100),
                                               "partial": p.get("partial_percent", 90)}, seqs)


def offsite_lag(f: Facts, policy, st, p: dict) -> Finding:
    if not policy.targets:
        return Finding("offsite_lag", rules.NON, "no_targets")
    if not f.copies:
        return Finding("offsite_lag", rules.NON, "lag_no_backups")
    limit = _seconds(p.get("max_lag", "rpo"), policy)
    ok = [c for c in f.copies if c.lag is not None and c.lag <= limit]
    v = rules.ratio(len(ok), len(f.copies), p.get("full_percent", 100), p.get("partial_percent", 90))
    lags = [c.lag for c in f.copies if c.lag is not None]
    worst = max(lags) if len(lags) == len(f.copies) else None
    seqs = [c.copy_seq for c in f.copies if c.copy_seq] + [r.seq for r in f.failed_copies]
    return Finding("offsite_lag", v, "lag", {"ok": len(ok), "total": len(f.copies), "limit_s": limit,
                                             "pct": rules.percent(len(ok), len(f.copies)),
                                             "worst_s": worst if worst is not None else None}, seqs)


def realtime_replication(f: Facts, policy, st, p: dict) -> Finding:
    text = st.system(policy.system).realtime_replication
    if text.strip():
        return Finding("realtime_replication", rules.declared(text), "realtime_declared", {"text": text.strip()})
    return Finding("realtime_replication", rules.declared(text), "realtime_missing")


def drill_recency(f: Facts, policy, st, p: dict) -> Finding:
    every = policy.drill.every.total_seconds()
    gaps = [g for _, _, g in f.drill_gaps]
    v = rules.drill_gaps(gaps, every, len(f.passing))
    seqs = [r.seq for r in f.drills]
    if not f.passing:
        return Finding("drill_recency", v, "no_passing_drill", {"every_s": every}, seqs)
    return Finding("drill_recency", v, "drill_gaps", {"every_s": every, "n": len(f.passing),
                                                      "worst_s": max(gaps) if gaps else 0.0}, seqs)


def last_drill(f: Facts, policy, st, p: dict) -> Finding:
    if not f.drills:
        return Finding("last_drill", rules.NON, "no_drill")
    last = max(f.drills, key=lambda r: r.seq)
    passed = DrillRecord.of(last).passed
    v = rules.last_drill(passed, bool(f.passing))
    key = "last_drill_passed" if passed else ("last_drill_failed_earlier_passed" if f.passing else "last_drill_failed")
    return Finding("last_drill", v, key, {"drill": last.subject}, [last.seq] + [r.seq for r in f.passing[-1:]])


def rto_within_tier(f: Facts, policy, st, p: dict) -> Finding:
    tier = policy.tier.total_seconds()
    measured = [m for _, m in f.measured]
    v = rules.rto(measured, tier)
    seqs = [s for s, _ in f.measured]
    if not measured:
        return Finding("rto_within_tier", v, "rto_none", {}, [r.seq for r in f.drills])
    over = sum(1 for m in measured if m > tier)
    key = "rto_all_met" if over == 0 else ("rto_last_over" if measured[-1] > tier else "rto_some_over")
    return Finding("rto_within_tier", v, key, {"n": len(measured), "over": over, "tier_s": tier,
                                               "worst_s": max(measured), "last_s": measured[-1]}, seqs)


def _streams(r) -> list:
    s = r.body.get("streams") if isinstance(r.body, dict) else None
    return s if isinstance(s, list) else []


def backups_hashed(f: Facts, policy, st, p: dict) -> Finding:
    n = len(f.backups)
    ok = sum(1 for r in f.backups if _streams(r) and all(isinstance(s, dict) and s.get("artifact_sha256")
                                                          for s in _streams(r)))
    if n == 0:
        return Finding("backups_hashed", rules.NON, "no_backups")
    v = rules.worst([rules.all_of(ok, n), rules.failures(len(f.verify_failures))])
    seqs = [r.seq for r in f.backups] + [s for s, _ in f.verify_failures]
    if f.verify_failures:
        return Finding("backups_hashed", v, "verify_failures", {"n": len(f.verify_failures)}, seqs)
    return Finding("backups_hashed", v, "hashed", {"ok": ok, "n": n}, seqs)


def backups_encrypted(f: Facts, policy, st, p: dict) -> Finding:
    n = len(f.backups)
    ok = sum(1 for r in f.backups if isinstance(r.body, dict) and r.body.get("recipients"))
    if n == 0:
        return Finding("backups_encrypted", rules.NON, "no_backups")
    return Finding("backups_encrypted", rules.all_of(ok, n), "encrypted", {"ok": ok, "n": n},
                   [r.seq for r in f.backups])


def ledger_chain(f: Facts, policy, st, p: dict) -> Finding:
    return Finding("ledger_chain", rules.CONFORMANT, "ledger_chain")


def ledger_offsite(f: Facts, policy, st, p: dict) -> Finding:
    n = len(f.ok_copies)
    if n == 0:
        return Finding("ledger_offsite", rules.NON, "ledger_not_copied", {}, [r.seq for r in f.failed_copies])
    return Finding("ledger_offsite", rules.CONFORMANT, "ledger_copied", {"n": n}, [r.seq for r in f.ok_copies])


def policy_identifies(f: Facts, policy, st, p: dict) -> Finding:
    return Finding("policy_identifies", rules.DOCUMENTS, "policy_identifies",
                   {"file": policy.file.name if policy.file else policy.system})


def policy_defines(f: Facts, policy, st, p: dict) -> Finding:
    media = st.system(policy.system).media
    r = policy.retention
    return Finding("policy_defines", rules.stated(media), "policy_defines", {
        "engine": policy.engine, "at": policy.backup.at, "daily": r.daily, "weekly": r.weekly,
        "monthly": r.monthly, "yearly": r.yearly,
        "media": media.strip() or {"zh": message("zh", "media_missing", {}), "en": message("en", "media_missing", {})}})


def documents(f: Facts, policy, st, p: dict) -> Finding:
    return Finding("documents", rules.DOCUMENTS, "documents", {"what": p.get("what", {"zh": "", "en": ""})})


def not_applicable(f: Facts, policy, st, p: dict) -> Finding:
    return Finding("not_applicable", rules.NA, "not_applicable", {"why": p.get("why", {"zh": "", "en": ""})})


def tiers_set(f: Facts, policy, st, p: dict) -> Finding:
    return Finding("tiers_set", rules.CONFORMANT, "tiers_set",
                   {"tier_s": policy.tier.total_seconds(), "rpo_s": policy.rpo.total_seconds()})


RULES: dict[str, Rule] = {fn.__name__: fn for fn in (
    backup_days, offsite_lag, realtime_replication, drill_recency, last_drill, rto_within_tier, backups_hashed,
    backups_encrypted, ledger_chain, ledger_offsite, policy_identifies, policy_defines, documents, not_applicable,
    tiers_set)}


def _rule_list(c: dict) -> list[tuple[str, dict]]:
    out = []
    for entry in c.get("rules", []):
        (name, params), = entry.items()
        out.append((name, params or {}))
    return out


@functools.lru_cache(maxsize=1)
def load_mappings() -> dict[str, dict]:
    out = {}
    for f in resources.files("backupkit.data.controls").iterdir():
        if f.name.endswith(".yaml"):
            m = yaml.safe_load(f.read_text(encoding="utf-8"))
            for c in m["controls"]:
                for name, _ in _rule_list(c):
                    if name not in RULES:
                        raise ValueError(f"control mapping {f.name}: item {c['id']}: unknown rule {name!r}")
            out[m["id"]] = m
    return out


def evaluate(facts_by_system: dict[str, Facts], policies: list, settings) -> list[dict]:
    """For every mapping some policy in scope names: each item, per system, its findings and verdict."""
    mappings = load_mappings()
    wanted = sorted({c for p in policies for c in p.controls}, key=lambda m: (not m.startswith("mlps"), m))
    result = []
    for mid in wanted:
        m = mappings[mid]
        scoped = [p for p in policies if mid in p.controls]
        controls = []
        for c in m["controls"]:
            per_system = []
            for p in scoped:
                findings = [RULES[name](facts_by_system[p.system], p, settings, params).as_dict()
                            for name, params in _rule_list(c)]
                per_system.append({"system": p.system, "verdict": rules.worst(x["verdict"] for x in findings),
                                   "findings": findings})
            verdict = rules.worst(s["verdict"] for s in per_system)
            controls.append({
                "id": c["id"], "point": c["point"], "text": c["text"], "verdict": verdict,
                "met": verdict == rules.CONFORMANT,
                "rules": [{name: params} for name, params in _rule_list(c)],
                "systems": per_system,
                "evidence": [{"requirement": x["rule"], "met": x["verdict"] == rules.CONFORMANT,
                              "records": x["records"], "detail": x["text"]["en"]}
                             for s in per_system for x in s["findings"]],
            })
        result.append({"framework": mid, "title": m["title"], "controls": controls})
    return result
