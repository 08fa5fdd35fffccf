"""Control mappings: which records evidence which compliance control.

Mappings are data (``backupkit/data/controls/*.yaml``, linked from
``policies/controls``). Each control lists named predicates; a predicate is a
pure function from the period's records and the policies in scope to
(met, evidencing record seqs, explanation).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Callable

import yaml

from ..ledger import Record

Predicate = Callable[[list[Record], list], tuple[bool, list[int], str]]


def _per_system(records: list[Record], policies: list, kind: str, ok: Callable[[Record], bool], what: str):
    seqs, missing = [], []
    for p in policies:
        mine = [r.seq for r in records if r.kind == kind and r.policy == p.system and ok(r)]
        seqs += mine
        if not mine:
            missing.append(p.system)
    if not policies:
        return False, [], "no systems in scope"
    return (not missing, seqs, f"{what} for every system" if not missing else f"no {what} for: {', '.join(missing)}")


def backup_in_period(records, policies):
    return _per_system(records, policies, "backup", lambda r: True, "committed backup in the period")


def drill_passed_in_period(records, policies):
    return _per_system(records, policies, "drill", lambda r: r.body.get("verdict") == "passed",
                       "passing restore drill in the period")


def drill_rto_met(records, policies):
    return _per_system(records, policies, "drill",
                       lambda r: r.body.get("verdict") == "passed" and (r.body.get("rto") or {}).get("met") is True,
                       "drill within the tier's RTO")


def offsite_copy_verified(records, policies):
    scoped = [p for p in policies if p.targets]
    if not scoped:
        return False, [], "no system has an offsite target configured"
    met, seqs, text = _per_system(records, scoped, "copy", lambda r: r.body.get("status") == "ok",
                                  "hash-verified offsite copy")
    unprotected = [p.system for p in policies if not p.targets]
    if unprotected:
        return False, seqs, text + f"; no offsite target configured for: {', '.join(unprotected)}"
    return met, seqs, text


def backups_hashed_and_signed(records, policies):
    return _per_system(records, policies, "backup",
                       lambda r: bool(r.body.get("streams")) and all(s.get("artifact_sha256") for s in r.body["streams"]),
                       "SHA-256 manifest signed with Ed25519")


def backups_encrypted(records, policies):
    return _per_system(records, policies, "backup", lambda r: bool(r.body.get("recipients")),
                       "backup encrypted to a recorded age recipient")


def ledger_chain_intact(records, policies):
    return bool(records), [r.seq for r in records[:1]] + [r.seq for r in records[-1:]], \
        "hash chain and signatures verified at export; verify offline with 'backupkit evidence verify'"


def ledger_copied_offsite(records, policies):
    return _per_system(records, [p for p in policies if p.targets] or policies, "copy",
                       lambda r: r.body.get("status") == "ok", "ledger snapshot copied offsite with a backup")


def policies_in_force(records, policies):
    return bool(policies), [], f"{len(policies)} policy file(s) included under policies/ with their SHA-256"


def criticality_tiers_set(records, policies):
    return bool(policies), [], "each policy sets a downtime tier: " + ", ".join(f"{p.system}={p.tier_label}" for p in policies)


PREDICATES: dict[str, Predicate] = {f.__name__: f for f in (
    backup_in_period, drill_passed_in_period, drill_rto_met, offsite_copy_verified, backups_hashed_and_signed,
    backups_encrypted, ledger_chain_intact, ledger_copied_offsite, policies_in_force, criticality_tiers_set)}


@functools.lru_cache(maxsize=1)
def load_mappings() -> dict[str, dict]:
    out = {}
    for f in resources.files("backupkit.data.controls").iterdir():
        if f.name.endswith(".yaml"):
            m = yaml.safe_load(f.read_text(encoding="utf-8"))
            out[m["id"]] = m
    return out


def evaluate(records: list[Record], policies: list) -> list[dict]:
    """For every mapping some policy in scope names, judge each control."""
    mappings = load_mappings()
    wanted = sorted({c for p in policies for c in p.controls})
    result = []
    for mid in wanted:
        m = mappings.get(mid)
        if m is None:
            result.append({"framework": mid, "title": "unknown mapping", "controls": [],
                           "error": f"no control mapping named {mid!r}"})
            continue
        scoped = [p for p in policies if mid in p.controls]
        controls = []
        for c in m["controls"]:
            parts = [(name, *PREDICATES[name](records, scoped)) for name in c["requires"]]
            controls.append({
                "id": c["id"], "title": c["title"], "met": all(p[1] for p in parts), "note": c.get("note"),
                "systems": [p.system for p in scoped],
                "evidence": [{"requirement": name, "met": met, "records": seqs, "detail": detail}
                             for name, met, seqs, detail in parts],
            })
        result.append({"framework": mid, "title": m["title"], "controls": controls})
    return result
