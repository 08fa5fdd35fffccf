"""Every version of every policy file, kept by content hash so evidence can show the policy a
backup was taken under after the file changed.

The store is ``policy-versions/<sha256>.yaml`` next to the ledger. ``remember`` adds the
current files (evidence export, reviews and ``keys register`` call it; so should every command
that records under a policy); ``lookup`` returns a version's bytes or None when it was never kept.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

STORE = "policy-versions"


def store_dir(ledger_path: Path) -> Path:
    return Path(ledger_path).parent / STORE


def remember(ledger_path: Path, policies) -> None:
    d = store_dir(ledger_path)
    for p in policies:
        if p.file is None or not p.content_sha256:
            continue
        try:
            data = Path(p.file).read_bytes()
        except OSError:
            continue
        sha = hashlib.sha256(data).hexdigest()
        dest = d / f"{sha}.yaml"
        if dest.exists():
            continue
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{sha}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, dest)


def lookup(ledger_path: Path, sha: str) -> bytes | None:
    if not sha or any(c not in "0123456789abcdef" for c in sha):
        return None
    f = store_dir(ledger_path) / f"{sha}.yaml"
    try:
        data = f.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha else None
