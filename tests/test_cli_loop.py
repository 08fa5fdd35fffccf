"""The whole product loop on SQLite through the real CLI."""

import json

from backupkit.manifest import MANIFEST


def test_backup_verify_drill_status_evidence(workspace):
    r = workspace.ok("backup", "--all")
    assert "demo-lis: backup" in r.out
    (bdir,) = workspace.backups()
    manifest = json.loads((bdir / MANIFEST).read_text())
    assert set(manifest["fingerprints"]) == {"patients", "encounters", "orders", "lab_results"}
    assert all(fp["hash"] for fp in manifest["fingerprints"].values())
    import hashlib

    (row,) = workspace.ledger_rows("backup")
    assert json.loads(row[3])["manifest_sha256"] == hashlib.sha256((bdir / MANIFEST).read_bytes()).hexdigest()
    # the offsite copy exists, complete, and no partial files linger
    files = sorted(p.name for p in (workspace.offsite / "demo-lis" / bdir.name).iterdir())
    assert files == ["data.zst.age", "fpkey.zst.age", "manifest.json", "manifest.sig"]
    assert (workspace.offsite / "_ledger" / "ledger.db").exists()

    assert "0 failed" in workspace.ok("verify", "--deep").out
    assert "0 failed" in workspace.ok("verify", "--target", "offsite").out

    r = workspace.ok("drill", "demo-lis", "--json")
    rec = json.loads(r.out)
    assert rec["verdict"] == "passed"
    steps = [s["step"] for s in rec["timeline"]]
    for step in ("fetch", "verify_hash", "decrypt_decompress", "provision", "restore", "checks", "teardown"):
        assert step in steps
    assert rec["teardown"]["exists_after_teardown"] is False
    assert rec["rto"]["met"] is True and rec["rpo"]["met"] is True
    names = {c["name"] for c in rec["checks"]}
    assert "fingerprint lab_results" in names and "assertion patients present" in names

    r = workspace.ok("drill", "demo-lis", "--from", "offsite", "--json")
    assert json.loads(r.out)["copy"]["target"] == "offsite"

    st = json.loads(workspace.ok("status", "--json").out)
    assert st[0]["overdue"] is False and st[0]["drill_ok"] is True
    prom = workspace.ok("status", "--prometheus").out
    assert 'backupkit_overdue{system="demo-lis"} 0' in prom

    out = workspace.root / "bundle"
    workspace.ok("evidence", "export", "--out", str(out), "--lang", "en")
    assert "chained and signed" in workspace.ok("evidence", "verify", str(out)).out
    controls = json.loads((out / "controls.json").read_text())
    mlps = next(f for f in controls if f["framework"] == "mlps2-l3")
    # nothing fails outright; 8.1.4.9 b is partial (batch copies are not real-time) and c is not applicable
    assert all(c["verdict"] != "non_conformant" for c in mlps["controls"]), mlps["controls"]
    assert "ledger" in workspace.ok("ledger", "verify").out


def test_status_overdue_without_backups(workspace):
    r = workspace.run("status")
    assert r.code == 4
    assert "no backup yet" in r.out


def test_drill_fails_on_failing_assertion(workspace):
    workspace.edit_policy(lambda p: p["drill"]["assertions"].append(
        {"name": "impossible", "sql": "SELECT count(*) FROM patients", "expect": "> 999999999"}))
    workspace.ok("backup", "demo-lis")
    r = workspace.run("drill", "demo-lis", "--json")
    assert r.code == 1, r
    rec = json.loads(r.out)
    assert rec["verdict"] == "failed"
    assert any("impossible" in d for d in rec["deviations"])
    # the failed drill is recorded in the ledger, complete with teardown proof
    (row,) = workspace.ledger_rows("drill")
    body = json.loads(row[3])
    assert body["verdict"] == "failed" and body["teardown"]["exists_after_teardown"] is False


def test_evidence_bundle_tamper_detected(workspace):
    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis")
    out = workspace.root / "bundle"
    workspace.ok("evidence", "export", "--out", str(out))
    # edit one record in records.jsonl and recompute SHA256SUMS without the key: the signature must fail
    lines = (out / "drills.csv").read_text().splitlines()
    lines[1] = lines[1].replace("passed", "passed ")
    (out / "drills.csv").write_text("\n".join(lines) + "\n")
    r = workspace.run("evidence", "verify", str(out))
    assert r.code == 3 and "drills.csv" in r.err, r


def test_evidence_record_tamper_even_with_resummed_files(workspace, tmp_path):
    import hashlib

    workspace.ok("backup", "demo-lis")
    out = tmp_path / "bundle2"
    workspace.ok("evidence", "export", "--out", str(out))
    recs = (out / "records.jsonl").read_text().splitlines()
    recs[0] = recs[0].replace('"engine":"sqlite"', '"engine":"oracle"')
    (out / "records.jsonl").write_text("\n".join(recs) + "\n")
    sums = []
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        sums.append(f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}  {name}")
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    r = workspace.run("evidence", "verify", str(out))
    assert r.code == 3 and "SHA256SUMS" in r.err, r


def test_report_html_names_the_copy_and_renders_both_languages(workspace):
    workspace.ok("backup", "demo-lis")
    workspace.ok("drill", "demo-lis", "--from", "offsite")
    for lang, words in (("zh", ["使用副本", "恢复演练明细", "符合"]), ("en", ["Copy used", "Restore drills", "met"])):
        out = workspace.root / f"bundle-{lang}"
        workspace.ok("evidence", "export", "--out", str(out), "--lang", lang)
        html = (out / "report.html").read_text()
        for w in words:
            assert w in html, (lang, w)
        assert "offsite" in html and "<script" not in html  # self-contained, no scripts


def test_drill_sample_restores_older_backups_without_judging_their_age(workspace):
    for _ in range(3):
        workspace.ok("backup", "demo-lis", "--no-copy")
    ids = [p.name for p in workspace.backups()]
    r = workspace.ok("drill", "demo-lis", "--sample", "2", "--json")
    recs = json.loads("[" + r.out.replace("}\n{", "},{") + "]")
    assert [x["backup_id"] for x in recs] == [ids[-1], ids[0], ids[1]]
    assert all(x["verdict"] == "passed" for x in recs)
    assert recs[0]["rpo"]["judged"] is True and recs[0]["rpo"]["met"] is True
    assert recs[1]["rpo"]["judged"] is False and recs[1]["rpo"]["met"] is None
    r = workspace.run("drill", "--sample", "1")
    assert r.code == 2 and "need a SYSTEM" in r.err
