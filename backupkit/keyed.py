"""Keyed fingerprints: a manifest reveals nothing about table contents.

``manifest.json`` lies unencrypted beside every artifact, offsite too. A plain
content hash of a small table lets anyone holding the manifest confirm a guess
(a one-row table's diagnosis flag, say) without any key. So every content digest
in a manifest's ``fingerprints`` is an HMAC-SHA256 under a random 32-byte key
made for that backup, and the key travels only inside the encrypted artifact:
as the stream ``fpkey`` (64 hex characters, age-encrypted to the backup's
recipients like the data). A drill decrypts it and keys its own recomputation
the same way before comparing.

What is keyed: the ``hash`` of every entry, and every value of a schema entry's
``items``. What stays in clear: row counts, sequence values, object names,
methods, column plans and database properties (an attacker learns sizes, not
contents). The keyed value is the first 32 hex digits of
``HMAC-SHA256(key, entry ‖ 0x00 ‖ field ‖ 0x00 [‖ item ‖ 0x00] ‖ plain digest)``,
so equal contents in two tables do not even show as equal.

Manifests without ``fingerprint_key`` (written before 0.2, like the golden
backup) hold plain digests and are compared as they are.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

KEY_STREAM = "fpkey"
SCHEME = "hmac-sha256-128/1"


def new_key() -> bytes:
    return secrets.token_bytes(32)


def encode_key(key: bytes) -> bytes:
    return key.hex().encode("ascii")


def decode_key(data: bytes) -> bytes:
    text = data.decode("ascii", "replace").strip()
    key = bytes.fromhex(text) if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else b""
    if len(key) != 32:
        raise ValueError("the fingerprint key stream does not hold a 32-byte hex key")
    return key


def mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\0".join(parts).encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def keyed(fingerprints: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``fingerprints`` with every content digest replaced by its keyed form (a new dict; pure)."""
    out: dict[str, Any] = {}
    for name, entry in fingerprints.items():
        if not isinstance(entry, dict):
            out[name] = entry
            continue
        e = dict(entry)
        if isinstance(e.get("hash"), str):
            e["hash"] = mac(key, name, "hash", e["hash"])
        if isinstance(e.get("items"), dict):
            e["items"] = {item: mac(key, name, "items", item, v) if isinstance(v, str) else v
                          for item, v in e["items"].items()}
        out[name] = e
    return out


def manifest_note() -> dict[str, str]:
    """What a manifest records about its keying (docs/format.md)."""
    return {"stream": KEY_STREAM, "scheme": SCHEME}
