"""Reviews of drills and corrective actions: signed ledger records written after the fact.

A drill's ``reviewer`` field is only a name typed before the drill ran; a
review is a separate ``review`` record written afterwards by ``backupkit review
drill`` (``{type: drill_review, drill_id, drill_seq, reviewer, verdict:
accepted|rejected, note}``). A corrective action is a ``corrective_action``
record with ``{action: open, drill_id, owner, due, text}`` and, later, one
with ``{action: close, by, note}`` and the same subject (the action ID).
``ledger annotate --kind review`` notes (``{text}``) are kept as notes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from .errors import ConfigError

VERDICTS = ("accepted", "rejected")


@dataclass
class Action:
    id: str
    system: str
    opened: object  # Record
    closed: object | None = None

    @property
    def drill_id(self) -> str:
        return self.opened.body.get("drill_id") or ""

    @property
    def due(self) -> str:
        return self.opened.body.get("due") or ""

    def overdue(self, as_of: date) -> bool:
        """Open and past its due date (the due day itself is still in time)."""
        if self.closed is not None or not self.due:
            return False
        return date.fromisoformat(self.due) < as_of


@dataclass
class Reviews:
    reviews: dict[str, list] = field(default_factory=dict)  # drill_id -> review records (verdicts)
    notes: dict[str, list] = field(default_factory=dict)  # subject -> annotate --kind review records
    actions: dict[str, Action] = field(default_factory=dict)  # action id -> Action

    def for_drill(self, drill_id: str) -> tuple[list, list, list[Action]]:
        return (self.reviews.get(drill_id, []), self.notes.get(drill_id, []),
                [a for a in self.actions.values() if a.drill_id == drill_id])


def fold(records) -> Reviews:
    """Given records in seq order (any kinds), collect reviews, notes and corrective actions."""
    out = Reviews()
    for r in records:
        b = r.body if isinstance(r.body, dict) else {}
        if r.kind == "review":
            if b.get("type") == "drill_review" and b.get("verdict") in VERDICTS:
                out.reviews.setdefault(b.get("drill_id") or r.subject, []).append(r)
            else:
                out.notes.setdefault(r.subject, []).append(r)
        elif r.kind == "corrective_action":
            if b.get("action") == "open":
                out.actions[r.subject] = Action(r.subject, r.policy, r)
            elif b.get("action") == "close" and r.subject in out.actions:
                out.actions[r.subject].closed = r
    return out


def find_drill(ledger, drill_id: str):
    for r in ledger.records(kind="drill"):
        if r.subject == drill_id:
            return r
    raise ConfigError(f"drill {drill_id!r} is not in the ledger; see 'backupkit evidence export' or the drill's output "
                      "for drill IDs (D<time>Z-<hex>)")


def record_review(ctx, drill_id: str, *, reviewer: str, verdict: str, note: str):
    if not reviewer.strip():
        raise ConfigError("option --reviewer: give the reviewer's name")
    drill = find_drill(ctx.ledger, drill_id)
    return ctx.ledger.append(ctx.signer, kind="review", policy=drill.policy, subject=drill_id, body={
        "type": "drill_review", "drill_id": drill_id, "drill_seq": drill.seq, "reviewer": reviewer.strip(),
        "verdict": verdict, "note": note, "operator": ctx.operator})


def _due(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ConfigError(f"option --due: {value!r} is not a date; write YYYY-MM-DD") from None


def open_action(ctx, system: str, *, drill_id: str | None, owner: str, due: str, text: str):
    ctx.policy(system)
    if drill_id:
        drill = find_drill(ctx.ledger, drill_id)
        if drill.policy != system:
            raise ConfigError(f"option --drill: drill {drill_id} is of system {drill.policy}, not {system}")
    if not owner.strip():
        raise ConfigError("option --owner: name who is responsible")
    action_id = datetime.now(timezone.utc).strftime("CA%Y%m%d-") + secrets.token_hex(3)
    return ctx.ledger.append(ctx.signer, kind="corrective_action", policy=system, subject=action_id, body={
        "action": "open", "drill_id": drill_id or "", "owner": owner.strip(), "due": _due(due), "text": text,
        "operator": ctx.operator})


def close_action(ctx, action_id: str, *, by: str, note: str):
    actions = fold(ctx.ledger.records(kind="corrective_action")).actions
    a = actions.get(action_id)
    if a is None:
        raise ConfigError(f"corrective action {action_id!r} is not in the ledger")
    if a.closed is not None:
        raise ConfigError(f"corrective action {action_id} was already closed by ledger record {a.closed.seq}")
    return ctx.ledger.append(ctx.signer, kind="corrective_action", policy=a.system, subject=action_id, body={
        "action": "close", "by": by.strip(), "note": note, "open_seq": a.opened.seq, "operator": ctx.operator})
