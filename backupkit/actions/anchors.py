"""Check the local ledger against the anchors kept outside it: the signed heads
on targets (written with every copy) and checkpoint lines an operator wrote
down (``backupkit ledger head``). See anchor.py."""

from __future__ import annotations

from dataclasses import dataclass

from ..anchor import HEAD_KEY, check_head, parse_head
from ..context import Context
from ..errors import BackupkitError, VerificationFailed
from ..ledger import check_chain
from ..provenance import target_ledger


@dataclass
class AnchorResult:
    where: str
    status: str  # ok | rolled-back | unreachable | none
    detail: str


def check_target(ctx: Context, name: str) -> AnchorResult:
    """The local ledger against target ``name``'s signed head and ledger snapshot."""
    where = f"target {name}"
    try:
        with ctx.target(name) as target:
            if target.stat(HEAD_KEY) is None:
                return AnchorResult(where, "none", "no signed ledger head there yet (written with the next copy)")
            with target.open_read(HEAD_KEY) as f:
                head = parse_head(f.read(4096), ctx.signer.public, f"{where} {HEAD_KEY}")
            check_head(ctx.ledger, head, where)
            with target_ledger(target, ctx.signer.public) as snap:
                if snap is not None:  # every record of the snapshot must be the local record of that seq
                    for r in snap.records():
                        if ctx.ledger.hash_at(r.seq) != r.hash:
                            raise VerificationFailed(
                                f"{where}: its ledger snapshot and the local ledger differ at seq {r.seq}; "
                                "the local history was rewritten or rolled back")
                    check_chain(snap.records(), ctx.signer.public, what=f"{where} ledger snapshot")
            return AnchorResult(where, "ok", f"local ledger contains its signed head (seq {head.seq})")
    except VerificationFailed as e:
        return AnchorResult(where, "rolled-back", str(e))
    except BackupkitError as e:
        return AnchorResult(where, "unreachable", str(e))


def anchor_targets(ctx: Context) -> list[str]:
    """Targets any policy copies to (the ones holding heads)."""
    return sorted({t for p in ctx.policies.values() for t in p.targets})


def check_checkpoint(ctx: Context, line: str) -> AnchorResult:
    head = parse_head(line, ctx.signer.public, "checkpoint")
    try:
        check_head(ctx.ledger, head, f"checkpoint seq {head.seq} ({head.time})")
    except VerificationFailed as e:
        return AnchorResult("checkpoint", "rolled-back", str(e))
    return AnchorResult("checkpoint", "ok", f"the ledger still contains seq {head.seq} with hash {head.hash[:16]}…")
