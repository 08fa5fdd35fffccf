"""Keys: age X25519 recipients (public, on every backup host), age identities
(private, only where drills and restores run) and the Ed25519 signing key for
manifests and ledger records.

A key ID is the first 16 hex characters of SHA-256 over the public key: the
``age1...`` recipient string for age keys, the raw 32-byte public key for
Ed25519. The Ed25519 key's full SHA-256 (64 hex, ``fingerprint``) is what an
assessor pins when verifying evidence: 64 bits of key ID are not enough. Private key files must not be readable by group or others.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pyrage import x25519

from .errors import ConfigError, VerificationFailed


def key_id(public: bytes | str) -> str:
    data = public.encode("ascii") if isinstance(public, str) else public
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(pub: "Ed25519PublicKey") -> str:
    """The full SHA-256 (64 hex) over the raw 32-byte Ed25519 public key; the key ID is its first 16 hex."""
    return hashlib.sha256(public_raw(pub)).hexdigest()


def fingerprint_groups(fp: str) -> str:
    """``ab12 cd34 …``: 16 groups of 4 hex, for reading aloud and comparing on paper."""
    return " ".join(fp[i:i + 4] for i in range(0, len(fp), 4))


def parse_fingerprint(text: str, origin: str = "--fingerprint") -> str:
    """Accept a fingerprint with spaces, colons or a ``SHA256:`` prefix; exactly 64 hex digits."""
    t = text.strip().lower().removeprefix("sha256:").replace(" ", "").replace(":", "").replace("-", "")
    if len(t) != 64 or any(c not in "0123456789abcdef" for c in t):
        raise ConfigError(f"option {origin}: expected the 64-hex-digit SHA-256 key fingerprint "
                          "(from 'backupkit keys show' or the key registration form)")
    return t


def check_private_mode(path: Path, what: str) -> None:
    """Refuse a private key file that is missing or readable by group/others."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found; check the 'keys' section of the config") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} is not readable by this user; fix its owner") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"{what} {path} is readable by group or others (mode {mode:04o}); chmod 600 it")


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# ---- age -------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    text: str  # age1...

    @property
    def id(self) -> str:
        return key_id(self.text)

    def to_pyrage(self) -> x25519.Recipient:
        return x25519.Recipient.from_str(self.text)


def parse_recipient(text: str, origin: str) -> Recipient:
    text = text.strip()
    try:
        x25519.Recipient.from_str(text)
    except Exception:
        raise ConfigError(f"{origin}: {text[:12]}... is not an age X25519 recipient (age1...)") from None
    return Recipient(text)


def load_recipients(entries: list[str]) -> list[Recipient]:
    """Given config entries (``age1...`` literals or files of them), return the recipients."""
    out: list[Recipient] = []
    for e in entries:
        if e.startswith("age1"):
            out.append(parse_recipient(e, "config keys.recipients"))
            continue
        p = Path(e)
        try:
            lines = p.read_text().splitlines()
        except FileNotFoundError:
            raise ConfigError(f"recipient file {p} not found; check keys.recipients in the config") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(parse_recipient(line, str(p)))
    if not out:
        raise ConfigError("no age recipients configured; set keys.recipients in the config")
    return out


@dataclass(frozen=True)
class Identity:
    secret: x25519.Identity
    recipient: Recipient
    path: Path | None = None

    @property
    def id(self) -> str:
        return self.recipient.id

    def __repr__(self) -> str:  # never leak the secret through a repr
        return f"Identity(id={self.id}, path={self.path})"


def generate_identity() -> tuple[str, str]:
    """Return (identity file text, recipient string) for a new X25519 key."""
    ident = x25519.Identity.generate()
    rec = str(ident.to_public())
    return f"# created by backupkit\n# public key: {rec}\n{ident}\n", rec


def load_identities(path: Path | None) -> list[Identity]:
    """Load the age identity file (mode 0600); each AGE-SECRET-KEY line is one identity."""
    if path is None:
        raise ConfigError("no age identity configured; set keys.identity in the config on hosts that drill or restore")
    check_private_mode(path, "age identity")
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                secret = x25519.Identity.from_str(line)
            except Exception:
                raise ConfigError(f"age identity {path}: a line is not a valid AGE-SECRET-KEY") from None
            out.append(Identity(secret, Recipient(str(secret.to_public())), path))
    if not out:
        raise ConfigError(f"age identity {path} holds no AGE-SECRET-KEY line")
    return out


# ---- Ed25519 ---------------------------------------------------------------


def generate_signing_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Signer:
    key: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    @property
    def id(self) -> str:
        return key_id(public_raw(self.public))

    def sign(self, data: bytes) -> str:
        return self.key.sign(data).hex()

    def __repr__(self) -> str:
        return f"Signer(id={self.id})"


def load_signer(path: Path) -> Signer:
    check_private_mode(path, "signing key")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except Exception:
        raise ConfigError(f"signing key {path} is not a PEM Ed25519 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an Ed25519 key")
    return Signer(key)


def load_public_key(pem: bytes, origin: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except Exception:
        raise VerificationFailed(f"{origin}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationFailed(f"{origin}: not an Ed25519 public key")
    return key


def verify_signature(pub: Ed25519PublicKey, signature_hex: str, data: bytes, what: str) -> None:
    """Raise VerificationFailed naming ``what`` unless the signature is valid."""
    try:
        pub.verify(bytes.fromhex(signature_hex.strip()), data)
    except (InvalidSignature, ValueError):
        raise VerificationFailed(f"{what}: signature does not verify; it was altered or signed by another key") from None
