"""manifest: writing, parsing and verifying a signed manifest, on real files with a real Ed25519 key."""

import json
import os

import pytest

from backupkit.canonical import canonical
from backupkit.errors import VerificationFailed
from backupkit.files import SIGNATURE_MAX
from backupkit.keys import generate_signing_key, load_signer
from backupkit.manifest import (MANIFEST, SIGNATURE, load_manifest, parse_signature, read_manifest_files,
                                signature_line, verify_manifest_bytes, write_manifest)

M = {"system": "his", "backup_id": "20261126T020000.000Z-1a2b3c", "streams": [{"name": "db", "size": 3}]}


@pytest.fixture
def backup_dir(tmp_path):
    d = tmp_path / "backup"
    d.mkdir()
    return d


def test_names():
    assert (MANIFEST, SIGNATURE) == ("manifest.json", "manifest.sig")


def test_signature_line_exact(signer):
    line = signature_line(signer, b"data")
    assert line == f"ed25519 {signer.id} {signer.sign(b'data')}\n"
    assert len(line) == len("ed25519 ") + 16 + 1 + 128 + 1


def test_write_then_load_round_trip(backup_dir, signer):
    data = write_manifest(backup_dir, M, signer)
    assert data == canonical(M)
    assert (backup_dir / "manifest.json").read_bytes() == data
    assert (backup_dir / "manifest.sig").read_text() == signature_line(signer, data)
    assert read_manifest_files(backup_dir, "w") == (data, signature_line(signer, data).encode("ascii"))
    assert load_manifest(backup_dir, signer.public, "w") == M


@pytest.mark.parametrize("text,parsed", [
    ("ed25519 kid sig", ("kid", "sig")),
    ("ed25519 kid sig\n", ("kid", "sig")),
    (b"  ed25519\tkid  sig \r\n", ("kid", "sig")),
    ("ed25519 kid sig".ljust(SIGNATURE_MAX), ("kid", "sig")),  # exactly the bound
])
def test_parse_signature_accepts(text, parsed):
    assert parse_signature(text, "w") == parsed


@pytest.mark.parametrize("text,message", [
    ("", "w: manifest.sig is malformed"),
    ("ed25519 kid", "w: manifest.sig is malformed"),
    ("ed25519 kid sig extra", "w: manifest.sig is malformed"),
    ("ed448 kid sig", "w: manifest.sig is malformed"),
    ("ED25519 kid sig", "w: manifest.sig is malformed"),
    ("ed25519 kid sig".ljust(SIGNATURE_MAX + 1), "w: manifest.sig is malformed"),
    ("ed25519 kid sig\n".encode() + b"\xff", "w: manifest.sig is malformed (not ASCII)"),
])
def test_parse_signature_refuses(text, message):
    with pytest.raises(VerificationFailed) as e:
        parse_signature(text, "w")
    assert str(e.value) == message


def test_verify_refuses_another_key_and_altered_bytes(signer, other):
    data = canonical(M)
    with pytest.raises(VerificationFailed) as e:
        verify_manifest_bytes(data, signature_line(other, data), signer.public, "w")
    assert str(e.value) == f"w: manifest signed by key {other.id}, not by the configured signing key {signer.id}"
    with pytest.raises(VerificationFailed) as e:
        verify_manifest_bytes(data + b" ", signature_line(signer, data), signer.public, "w")
    assert str(e.value) == "w manifest: signature does not verify; it was altered or signed by another key"
    forged = f"ed25519 {signer.id} {other.sign(data)}"
    with pytest.raises(VerificationFailed, match="signature does not verify"):
        verify_manifest_bytes(data, forged, signer.public, "w")


@pytest.mark.parametrize("data,message", [
    (b"not json", "w: manifest.json is not JSON"),
    (b'["streams"]', "w: manifest.json is not a backupkit manifest"),
    (b'"streams"', "w: manifest.json is not a backupkit manifest"),
    (b"{}", "w: manifest.json is not a backupkit manifest"),
    (b'{"streams":{}}', "w: manifest.json is not a backupkit manifest"),
    (b'{"streams":null}', "w: manifest.json is not a backupkit manifest"),
])
def test_verify_refuses_signed_bytes_that_are_no_manifest(signer, data, message):
    with pytest.raises(VerificationFailed) as e:
        verify_manifest_bytes(data, signature_line(signer, data), signer.public, "w")
    assert str(e.value) == message


@pytest.mark.parametrize("manifest", [{"streams": []}, {"streams": [1], "x": None}, M])
def test_verify_accepts_any_dict_with_a_streams_list(signer, manifest):
    data = json.dumps(manifest).encode()
    assert verify_manifest_bytes(data, signature_line(signer, data).encode(), signer.public, "w") == manifest


@pytest.mark.parametrize("missing", ["manifest.json", "manifest.sig"])
def test_a_missing_file_is_named(backup_dir, signer, missing):
    write_manifest(backup_dir, M, signer)
    (backup_dir / missing).unlink()
    with pytest.raises(VerificationFailed) as e:
        load_manifest(backup_dir, signer.public, "w")
    assert str(e.value) == f"w: {missing} is missing"


def test_an_oversized_signature_file_is_refused(backup_dir, signer):
    write_manifest(backup_dir, M, signer)
    (backup_dir / "manifest.sig").write_text("x" * (SIGNATURE_MAX + 1))
    with pytest.raises(VerificationFailed, match=f"manifest.sig is larger than {SIGNATURE_MAX} bytes"):
        read_manifest_files(backup_dir, "w")


def test_load_refuses_a_tampered_manifest(backup_dir, signer):
    write_manifest(backup_dir, M, signer)
    (backup_dir / "manifest.json").write_bytes(canonical({**M, "system": "lis"}))
    with pytest.raises(VerificationFailed, match="w manifest: signature does not verify"):
        load_manifest(backup_dir, signer.public, "w")
