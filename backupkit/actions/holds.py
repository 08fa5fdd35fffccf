"""``backupkit hold``: keep a backup whatever retention says (an audit, an incident, a court order)."""

from __future__ import annotations

from ..context import Context
from ..errors import ConfigError
from ..ledger import Record
from ..provenance import ledger_history


def set_hold(ctx: Context, system: str, backup_id: str, *, reason: str, release: bool) -> Record:
    policy = ctx.policy(system)
    hist = ledger_history(ctx.ledger, policy.system)
    if backup_id not in hist.committed:
        raise ConfigError(f"backup {system}/{backup_id} is not in the ledger; see 'backupkit list {system}'")
    if release and backup_id not in hist.holds:
        raise ConfigError(f"backup {system}/{backup_id} is not on hold")
    return ctx.ledger.append(ctx.signer, kind="hold", policy=system, subject=backup_id,
                             body={"action": "release" if release else "hold", "reason": reason,
                                   "operator": ctx.operator})
