"""The signed manifest of one backup (docs/format.md).

``manifest.json`` is the manifest as canonical JSON; ``manifest.sig`` holds one
line ``ed25519 <key-id> <hex signature>`` over exactly those bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import canonical
from .errors import VerificationFailed
from .files import MANIFEST_MAX, SIGNATURE_MAX, read_bounded
from .keys import Signer, key_id, public_raw, verify_signature

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


def signature_line(signer: Signer, data: bytes) -> str:
    return f"ed25519 {signer.id} {signer.sign(data)}\n"


def write_manifest(directory: Path, manifest: dict, signer: Signer) -> bytes:
    """Write manifest.json (canonical) and manifest.sig into ``directory``; return the manifest bytes."""
    data = canonical(manifest)
    (directory / MANIFEST).write_bytes(data)
    (directory / SIGNATURE).write_text(signature_line(signer, data))
    return data


def parse_signature(text: str | bytes, what: str) -> tuple[str, str]:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise VerificationFailed(f"{what}: manifest.sig is malformed (not ASCII)") from None
    parts = text.split()
    if len(parts) != 3 or parts[0] != "ed25519" or len(text) > SIGNATURE_MAX:
        raise VerificationFailed(f"{what}: manifest.sig is malformed")
    return parts[1], parts[2]


def verify_manifest_bytes(data: bytes, sig_text: str | bytes, public: Ed25519PublicKey, what: str) -> dict:
    """Check the signature over ``data`` and return the parsed manifest."""
    kid, sig = parse_signature(sig_text, what)
    if kid != key_id(public_raw(public)):
        raise VerificationFailed(
            f"{what}: manifest signed by key {kid}, not by the configured signing key {key_id(public_raw(public))}"
        )
    verify_signature(public, sig, data, f"{what} manifest")
    try:
        m = json.loads(data)
    except ValueError:
        raise VerificationFailed(f"{what}: manifest.json is not JSON") from None
    if not isinstance(m, dict) or not isinstance(m.get("streams"), list):
        raise VerificationFailed(f"{what}: manifest.json is not a backupkit manifest")
    return m


def read_manifest_files(directory: Path, what: str) -> tuple[bytes, bytes]:
    """The raw bytes of ``manifest.json`` and ``manifest.sig``: regular files, size-bounded."""
    try:
        return (read_bounded(directory / MANIFEST, MANIFEST_MAX, what),
                read_bounded(directory / SIGNATURE, SIGNATURE_MAX, what))
    except FileNotFoundError as e:
        raise VerificationFailed(f"{what}: {Path(e.filename).name} is missing") from None


def load_manifest(directory: Path, public: Ed25519PublicKey, what: str) -> dict:
    """Read and verify ``directory``'s manifest signature (not its binding: see provenance.py)."""
    data, sig = read_manifest_files(directory, what)
    return verify_manifest_bytes(data, sig, public, what)
