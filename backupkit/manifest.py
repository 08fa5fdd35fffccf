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


def parse_signature(text: str, what: str) -> tuple[str, str]:
    parts = text.split()
    if len(parts) != 3 or parts[0] != "ed25519":
        raise VerificationFailed(f"{what}: manifest.sig is malformed")
    return parts[1], parts[2]


def verify_manifest_bytes(data: bytes, sig_text: str, public: Ed25519PublicKey, what: str) -> dict:
    """Check the signature over ``data`` and return the parsed manifest."""
    kid, sig = parse_signature(sig_text, what)
    if kid != key_id(public_raw(public)):
        raise VerificationFailed(
            f"{what}: manifest signed by key {kid}, not by the configured signing key {key_id(public_raw(public))}"
        )
    verify_signature(public, sig, data, f"{what} manifest")
    try:
        return json.loads(data)
    except ValueError:
        raise VerificationFailed(f"{what}: manifest.json is not JSON") from None


def load_manifest(directory: Path, public: Ed25519PublicKey, what: str) -> dict:
    """Read and verify ``directory``'s manifest. Raises VerificationFailed naming ``what``."""
    try:
        data = (directory / MANIFEST).read_bytes()
        sig = (directory / SIGNATURE).read_text()
    except FileNotFoundError as e:
        raise VerificationFailed(f"{what}: {Path(e.filename).name} is missing") from None
    return verify_manifest_bytes(data, sig, public, what)
