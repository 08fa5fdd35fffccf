"""Is this the backup the ledger committed? Every reader asks here.

A manifest's signature proves backupkit wrote it, not that it belongs where it
was found: another system's signed backup copied into this system's newest
directory, an old backup copied under a new ID, or an older directory put in
place of the newest on a target are all correctly signed. So every reader
(verify, drill, restore, copy, prune, evidence) checks three things before it
trusts a backup directory:

1. the signature over ``manifest.json`` (manifest.py);
2. the manifest's ``system`` and ``backup_id`` equal the location it was read from;
3. the manifest's SHA-256 equals ``manifest_sha256`` in the ledger's ``backup``
   record for that ID. At a DR site that holds only the target, the target's
   ledger snapshot (``_ledger/ledger.db``, chain and signatures checked) is used.

Any mismatch is VerificationFailed (exit 3) naming the location and both identities.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .anchor import LEDGER_KEY
from .artifact import check_stream_files
from .errors import BackupkitError, VerificationFailed
from .files import MANIFEST_MAX, SIGNATURE_MAX, create_private
from .history import History, history
from .ledger import Ledger, Record, check_chain
from .manifest import MANIFEST, SIGNATURE, read_manifest_files, verify_manifest_bytes
from .names import is_backup_id
from .repository import BackupRef

logger = logging.getLogger(__name__)


def ledger_history(ledger: Ledger, system: str) -> History:
    return history(list(ledger.records(policy=system)) + list(ledger.records(policy="*")), system)


def check_binding(manifest: dict, data: bytes, *, system: str, backup_id: str, where: str,
                  record: Record | None) -> None:
    """Raise VerificationFailed unless ``manifest`` (whose bytes are ``data``) is the one the ledger
    committed for ``system``/``backup_id``. ``where`` names the location for the message."""
    got = (manifest.get("system"), manifest.get("backup_id"))
    if got != (system, backup_id):
        raise VerificationFailed(
            f"{where}: holds the manifest of backup {got[0]}/{got[1]}, not of {system}/{backup_id}; "
            "the directory was swapped or replayed, do not use it"
        )
    if record is None:
        raise VerificationFailed(
            f"{where}: the ledger has no backup record of {system}/{backup_id}; this repository never recorded it "
            f"(a backup cut off by a crash is reconciled by the next 'backupkit backup {system}')"
        )
    want = record.body.get("manifest_sha256")
    have = hashlib.sha256(data).hexdigest()
    if want != have:
        raise VerificationFailed(
            f"{where}: manifest SHA-256 {have[:16]}… is not the {str(want)[:16]}… that ledger record seq {record.seq} "
            f"committed for {system}/{backup_id}; the backup was replaced by another one"
        )


def load_bound(directory: Path, public, hist: History, system: str, backup_id: str, where: str) -> tuple[dict, bytes]:
    """Signature and binding of the manifest in ``directory`` (not the streams). Returns (manifest, bytes)."""
    data, sig = read_manifest_files(directory, where)
    m = verify_manifest_bytes(data, sig, public, where)
    check_binding(m, data, system=system, backup_id=backup_id, where=where, record=hist.record_of(backup_id))
    return m, data


def check_local(public, hist: History, ref: BackupRef) -> dict:
    """Signature, binding, and every stream's size and SHA-256 of a local backup. Returns the manifest."""
    where = f"backup {ref.system}/{ref.backup_id} in {ref.path.parent}"
    m, _ = load_bound(ref.path, public, hist, ref.system, ref.backup_id, where)
    check_stream_files(ref.path, m["streams"], where)
    return m


def _read_remote(target, key: str, limit: int, what: str) -> bytes:
    size = target.stat(key)
    if size is None:
        raise VerificationFailed(f"{what}: {key.rsplit('/', 1)[-1]} is missing")
    if size > limit:
        raise VerificationFailed(f"{what}: {key} is {size} bytes, larger than any backupkit file of its kind")
    with target.open_read(key) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise VerificationFailed(f"{what}: {key} is larger than any backupkit file of its kind")
    return data


def load_bound_remote(target, public, hist: History, system: str, backup_id: str) -> tuple[dict, bytes]:
    """Signature and binding of a backup's manifest on a target. Returns (manifest, bytes)."""
    where = f"backup {system}/{backup_id} on target {target.name}"
    base = f"{system}/{backup_id}/"
    data = _read_remote(target, base + MANIFEST, MANIFEST_MAX, where)
    sig = _read_remote(target, base + SIGNATURE, SIGNATURE_MAX, where)
    m = verify_manifest_bytes(data, sig, public, where)
    check_binding(m, data, system=system, backup_id=backup_id, where=where, record=hist.record_of(backup_id))
    return m, data


@contextmanager
def target_ledger(target, public) -> Iterator[Ledger | None]:
    """The target's ledger snapshot, chain and signatures checked; None when the target has none."""
    if target.stat(LEDGER_KEY) is None:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="backupkit-ledger-"))
    try:
        os.chmod(tmp, 0o700)
        path = tmp / "ledger.db"
        with target.open_read(LEDGER_KEY) as src, create_private(path) as out:
            shutil.copyfileobj(src, out, 1 << 20)
        try:
            led = Ledger(path)
        except BackupkitError as e:
            raise VerificationFailed(f"target {target.name}: {LEDGER_KEY} is not a ledger ({e})") from None
        try:
            check_chain(led.records(), public, what=f"target {target.name} ledger snapshot")
            yield led
        finally:
            led.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def history_with_target(local: History, snapshot: Ledger | None) -> History:
    """``local`` completed with what the target's ledger snapshot knows (a DR site's own ledger may be
    empty). The local ledger wins where both have a record; both are chains signed by the same key."""
    if snapshot is None:
        return local
    remote = ledger_history(snapshot, local.system)
    merged = History(local.system)
    merged.committed = {**remote.committed, **local.committed}
    merged.committed = dict(sorted(merged.committed.items(), key=lambda kv: kv[1].seq))
    for t in set(remote.copied) | set(local.copied):
        merged.copied[t] = remote.copied.get(t, set()) | local.copied.get(t, set())
    for where in set(remote.removed) | set(local.removed):
        merged.removed[where] = remote.removed.get(where, set()) | local.removed.get(where, set())
    merged.pending_prunes = local.pending_prunes
    merged.last_drill = {**remote.last_drill, **local.last_drill}
    merged.last_deep_verify = {**remote.last_deep_verify, **local.last_deep_verify}
    merged.holds = {**remote.holds, **local.holds}
    return merged


def remote_listing(target, system: str) -> tuple[list[str], list[str], list[str]]:
    """(IDs complete on the target (manifest present), IDs with files but no manifest, warnings)."""
    complete, partial, warnings = set(), set(), []
    for key in target.list(f"{system}/"):
        parts = key.split("/")
        if len(parts) < 3 or not is_backup_id(parts[1]):
            warnings.append(f"target {target.name}: {key} is not part of a backup; ignored")
            continue
        (complete if parts[2] == MANIFEST and len(parts) == 3 else partial).add(parts[1])
    return sorted(complete), sorted(partial - complete), warnings
