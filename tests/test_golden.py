"""The on-disk format stays readable: a backup made by 0.1.0 restores today."""

import hashlib
import json
import shutil
from pathlib import Path

from backupkit.artifact import DirectorySource
from backupkit.engines.sqlite import SqliteEngine
from backupkit.keys import load_identities, load_public_key
from backupkit.manifest import load_manifest
from backupkit.policy import load_policy
from backupkit.verdict import compare_fingerprints

GOLDEN = Path(__file__).parent / "golden"


def test_golden_backup_verifies_and_restores(tmp_path):
    ident = tmp_path / "identity.txt"
    shutil.copy(GOLDEN / "identity.txt", ident)
    ident.chmod(0o600)  # git does not keep the mode
    public = load_public_key((GOLDEN / "signing.pub").read_bytes(), "golden signing.pub")
    manifest = load_manifest(GOLDEN / "backup", public, "golden backup")
    assert manifest["format"] == 1
    raw = json.loads((GOLDEN / "backup" / "manifest.json").read_text())
    assert raw == manifest
    for s in manifest["streams"]:
        assert hashlib.sha256((GOLDEN / "backup" / s["file"]).read_bytes()).hexdigest() == s["artifact_sha256"]

    policy = load_policy(GOLDEN / "policy.yaml")
    engine = SqliteEngine()
    source = DirectorySource(GOLDEN / "backup", manifest["streams"], load_identities(ident), what="golden",
                             recipient_ids=manifest["recipients"])
    with engine.scratch(policy=policy, workdir=tmp_path / "scratch") as scratch:
        engine.restore(policy=policy, scratch=scratch, source=source)
        assert [c.status for c in engine.integrity_check(scratch=scratch)] == ["passed", "passed"]
        actual = engine.fingerprints(scratch=scratch, mode=manifest["fingerprint_mode"])
    checks = compare_fingerprints(manifest["fingerprints"], actual)
    assert checks and all(c["status"] == "passed" for c in checks), checks
    assert manifest["fingerprints"]["patients"]["rows"] > 0
