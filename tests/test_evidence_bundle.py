"""Evidence bundles over a three-month ledger, through the real CLI: they render, verify against a
pinned key, and every forgery, truncation, gap and zip bomb is refused (exit 3)."""

import hashlib
import html.parser
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta

import pytest

from backupkit.context import Context
from backupkit.evidence.export import write_sums
from backupkit.keys import Signer, fingerprint, public_pem
from backupkit.ledger import GENESIS, record_hash
from backupkit.evidence.i18n import glossary

import test_evidence_history as H


@pytest.fixture
def history(workspace):
    info = H.build(workspace)
    info.update(H.real_failed_drill(workspace))
    return info


def today():
    return datetime.now(H.CST).date()


def export(workspace, out, *args, lang="zh"):
    r = workspace.run("evidence", "export", "--since", str(H.d0()), "--until", str(today()), "--lang", lang,
                      "--out", str(out), *args)
    assert r.code == 0, r
    return out


def fp(workspace) -> str:
    ctx = Context.load(workspace.config)
    try:
        return fingerprint(ctx.signer.public)
    finally:
        ctx.close()


def run_unconfigured(workspace, *args):
    """The CLI as an assessor runs it: no backupkit config on the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPKIT_")}
    env["BACKUPKIT_CONFIG"] = str(workspace.root / "no-such-config.yaml")
    p = subprocess.run([sys.executable, "-m", "backupkit.cli", *args], env=env, text=True, capture_output=True)
    return p


def resign(workspace, bundle):
    ctx = Context.load(workspace.config)
    try:
        write_sums(bundle, ctx.signer)
    finally:
        ctx.close()


def items(bundle, framework="mlps2-l3") -> dict:
    fw = next(f for f in json.loads((bundle / "controls.json").read_text()) if f["framework"] == framework)
    return {c["id"]: c for c in fw["controls"]}


# ---- the three-month history renders, verifies, and says what happened --------------------------------------------

def test_three_months_in_zh_and_en_dir_and_zip(workspace, history, tmp_path):
    zh = export(workspace, tmp_path / "zh")
    en = export(workspace, tmp_path / "en.zip", lang="en")
    for b in (zh, en):
        r = run_unconfigured(workspace, "evidence", "verify", str(b), "--fingerprint", fp(workspace))
        assert r.returncode == 0, r.stderr
        assert "chained and signed" in r.stdout and "key pinned by --fingerprint" in r.stdout
    c = items(zh)
    verdicts = {k: v["verdict"] for k, v in c.items()}
    assert verdicts["8.1.4.9 a"] == "partial"          # 3 missed days of 93 and the last drill failed
    assert verdicts["8.1.4.9 b"] == "partial"          # scheduled copies are not real-time
    assert verdicts["8.1.4.9 c"] == "not_applicable"
    assert verdicts["8.1.10.11 a"] == verdicts["8.1.10.11 c"] == verdicts["8.1.10.13 b"] == "documents"
    assert verdicts["8.1.10.11 b"] == "conformant"     # evidence.yaml states the media
    assert verdicts["GB/T 28448-2019 L3-CES1-29"] == "partial"
    days = next(f for f in c["8.1.4.9 a"]["systems"][0]["findings"] if f["rule"] == "backup_days")
    assert "93 天" in days["text"]["zh"] and "88 天" in days["text"]["zh"]
    gaps = next(f for f in c["8.1.4.9 a"]["systems"][0]["findings"] if f["rule"] == "drill_recency")
    assert gaps["verdict"] == "partial" and "37天" in gaps["text"]["zh"]

    exc = json.loads((zh / "exceptions.json").read_text())
    kinds = {e["type"] for e in exc}
    assert {"missed_backup", "failed_backup", "failed_copy", "copy_lag", "copy_missing", "drill_gap", "drill_failed",
            "rto_exceeded", "verify_failed", "clock_step", "action_overdue"} <= kinds
    assert next(e for e in exc if e["type"] == "copy_lag")["records"][-1] == history["late_copy"]
    assert next(e for e in exc if e["type"] == "action_overdue")["records"] == [history["overdue_action"]]
    assert next(e for e in exc if e["type"] == "verify_failed")["records"] == [history["failed_verify"]]
    assert next(e for e in exc if e["type"] == "clock_step")["records"] == [history["clock_step"]]
    missed = sorted(e["when"] for e in exc if e["type"] == "missed_backup")
    assert [str(H.d0() + timedelta(days=d)) for d in H.MISSED_DAYS] == missed[:3]
    gap_whens = [e for e in exc if e["type"] == "drill_gap"]
    assert len(gap_whens) >= 2

    report = (zh / "report.html").read_text()
    # reviews and corrective actions beside their drill; the pre-drill --reviewer is not shown as a review
    failed_id = history["failed_drill"][0]
    block = report[report.index(f'data-drill="{failed_id}"'):]
    block = block[:block.index("</table>\n", block.index("纠正措施"))]
    assert "复核通过" in block and "李主任" in block and "CA-overdue" in block and "已逾期" in block
    assert "演练前指定的复核人（仅为登记，不代表已复核）" in report
    real = report[report.index(f'data-drill="{history["drill_id"]}"'):]
    assert "未创建演练环境" in real and "校验签名与哈希" in real
    # policy versions: the old one (kept at the time) and the one in force are both in the bundle
    meta = json.loads((zh / "bundle.json").read_text())
    shas = {v["sha256"] for v in meta["policy_versions"]}
    assert hashlib.sha256(H.OLD_POLICY).hexdigest() in shas and meta["policy_versions_missing"] == []
    for v in meta["policy_versions"]:
        assert hashlib.sha256((zh / v["file"]).read_bytes()).hexdigest() == v["sha256"]
    # period bounds are inclusive days in the display zone and printed as such
    assert meta["period"]["first_day"] == str(H.d0()) and meta["period"]["last_day"] == str(today())
    assert f"{H.d0()} 至 {today()}（含首尾两日，Asia/Shanghai, UTC+08:00）" in report
    # CSV: zh headers, UTF-8 with BOM; en headers in the en bundle
    raw = (zh / "backups.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and raw[3:].decode().startswith("记录序号,系统,备份编号")
    assert (zh / "drills.csv").read_bytes()[3:].decode().splitlines()[0].startswith("记录序号,系统,演练编号")
    with zipfile.ZipFile(en) as z:
        assert z.read("backups.csv").startswith(b"\xef\xbb\xbfseq,system,backup_id")
        assert "Restore drills" in z.read("report.html").decode()


class _Text(html.parser.HTMLParser):
    """Visible text outside <code>, <style>, <title> and quoted user text."""

    def __init__(self):
        super().__init__()
        self.skip, self.words = [], []

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if tag in ("code", "style", "title", "pre") or {"user", "name"} & set(cls.split()):
            self.skip.append(tag)
        elif self.skip and tag == self.skip[-1]:
            self.skip.append(tag)

    def handle_endtag(self, tag):
        if self.skip and tag == self.skip[-1]:
            self.skip.pop()

    def handle_data(self, data):
        if not self.skip:
            data = re.sub(r"[\w.\-]+\.(?:json|jsonl|yaml|csv|html|pub|sig)\b", " ", data)  # file names are names
            data = re.sub(r"\b(?:D|CA)?\d{8}T?\d{0,6}(?:\.\d{3})?Z?-[0-9a-f]{6}\b|\b[0-9a-f]{8,64}\b", " ", data)  # IDs, hashes
            self.words += re.findall(r"[A-Za-z]{2,}", data)


def english_words(html_text: str, names: set[str]) -> list[str]:
    allow = {str(w) for w in glossary()["allow"]} | names
    p = _Text()
    p.feed(html_text)
    return sorted({w for w in p.words if w not in allow})


def test_zh_report_and_forms_have_no_untranslated_english(workspace, history, tmp_path):
    b = export(workspace, tmp_path / "zh")
    names = {"demo", "lis", "offsite", "CA", "closed", "overdue", "Asia", "Shanghai"}  # systems, targets, IDs, zone
    for f in ("report.html", "paperwork.html"):
        assert english_words((b / f).read_text(), names) == [], f
    # the test itself bites: an English sentence in the zh report is found
    assert english_words("<p>backup failed</p>", names) == ["backup", "failed"]


def test_export_renders_every_record_kind_and_failure_point(workspace, tmp_path):
    """Item 1: one record of every kind, drills failed at every point (no backup, no scratch, no timings),
    bodies from other versions: zh and en, dir and zip all export and verify."""
    H.write_settings(workspace)
    H.real_failed_drill(workspace)
    w = H.Writer(workspace)
    now = datetime.now(H.CST)
    odd = [("drill", "D-empty", {}), ("drill", "D-no-backup", {"verdict": "failed", "failed_step": "fetch",
                                                                 "deviations": ["step fetch failed: no backup"],
                                                                 "copy": None, "rto": None, "rpo": "x", "timeline": [{}],
                                                                 "checks": [{"name": 3}], "teardown": "gone"}),
           ("restore", "r", {"status": "failed"}), ("prune", "local", {"location": "local", "removed": ["x"]}),
           ("verify", "*", {"results": "none"}), ("review", "D-empty", {"text": "legacy note"}),
           ("review", "D-empty", {"type": "drill_review", "verdict": "maybe"}),
           ("corrective_action", "CA-x", {"action": "close"}), ("corrective_action", "CA-y", {"action": "open"}),
           ("hold", "b", {"action": "release"}), ("annotation", "a", {"text": 1}), ("abandoned", "z", {}),
           ("copy", "b", {"status": "ok", "target": "offsite"}), ("backup", "weird", {"streams": "no"})]
    for i, (kind, subject, body) in enumerate(odd):
        w.add(now + timedelta(seconds=i + 1), kind, subject, body)
    w.add(now + timedelta(seconds=30), "annotation", "*", {"text": "all systems"}, system="*")
    w.ledger.close()
    until = str((now + timedelta(days=1)).date())
    for lang in ("zh", "en"):
        for out in (tmp_path / f"{lang}", tmp_path / f"{lang}.zip"):
            r = workspace.run("evidence", "export", "--until", until, "--lang", lang, "--out", str(out))
            assert r.code == 0, r
            assert workspace.run("evidence", "verify", str(out)).code == 0
    html_ = (tmp_path / "zh" / "report.html").read_text()
    assert "D-no-backup" in html_ and "<built-in method" not in html_ and "Undefined" not in html_


# ---- trust anchored outside the bundle ----------------------------------------------------------------------------

def forge(bundle, flip_seq, new_key: Signer):
    """Rebuild the whole chain with another key after flipping a failed drill to passed."""
    lines = [json.loads(x) for x in (bundle / "records.jsonl").read_text().splitlines()]
    prev = lines[0]["prev_hash"]
    for r in lines:
        if r["seq"] == flip_seq:
            r["body"]["verdict"] = "passed"
            r["body"]["deviations"] = []
        r["prev_hash"] = prev
        content = {k: r[k] for k in ("seq", "time", "kind", "policy", "subject", "body")}
        r["hash"] = record_hash(prev, content)
        r["key_id"] = new_key.id
        r["signature"] = new_key.sign(r["hash"].encode())
        prev = r["hash"]
    (bundle / "records.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
    meta = json.loads((bundle / "bundle.json").read_text())
    meta.pop("head"), meta.pop("previous_head")
    meta["key_id"], meta["key_fingerprint"] = new_key.id, fingerprint(new_key.public)
    (bundle / "bundle.json").write_text(json.dumps(meta))
    (bundle / "signing.pub").write_bytes(public_pem(new_key.public))
    write_sums(bundle, new_key)


def test_forged_bundle_with_a_new_key_is_refused(workspace, history, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    b = export(workspace, tmp_path / "b")
    good = tmp_path / "good"
    shutil.copytree(b, good)
    forge(b, history["failed_drill"][1], Signer(Ed25519PrivateKey.generate()))
    registered = fp(workspace)
    r = run_unconfigured(workspace, "evidence", "verify", str(b), "--fingerprint", registered)
    assert r.returncode == 3 and "not signed by the registered key" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = workspace.run("evidence", "verify", str(b))  # on the hospital's host: pinned by the configured key
    assert r.code == 3 and "pinned key" in r.err
    r = run_unconfigured(workspace, "evidence", "verify", str(b))  # no pin at all: refused
    assert r.returncode == 3 and "no pinned key" in r.stderr
    r = run_unconfigured(workspace, "evidence", "verify", str(good), "--trust-bundle-key")
    assert r.returncode == 0 and "WARNING" in r.stderr and "UNPINNED" in r.stdout, r.stderr
    pub = tmp_path / "registered.pub"
    workspace.ok("keys", "register", "--pub", str(pub))
    r = run_unconfigured(workspace, "evidence", "verify", str(b), "--key", str(pub))
    assert r.returncode == 3 and "not signed by the registered key" in r.stderr


def test_keys_register_prints_the_full_fingerprint(workspace, tmp_path):
    H.write_settings(workspace)
    out = tmp_path / "form.html"
    r = workspace.ok("keys", "register", "--html", str(out))
    grouped = " ".join(fp(workspace)[i:i + 4] for i in range(0, 64, 4))
    assert grouped in r.out and "公钥登记表" in r.out and "某市第三人民医院" in r.out and "批准人" in r.out
    assert grouped in out.read_text() and "PRIVATE" not in r.out + out.read_text()
    assert grouped in workspace.ok("keys", "show").out
    r = run_unconfigured(workspace, "evidence", "verify", str(tmp_path), "--fingerprint", "abc")
    assert r.returncode == 2 and "--fingerprint" in r.stderr


# ---- completeness -------------------------------------------------------------------------------------------------

def test_truncated_or_edited_bundle_is_refused_even_when_resigned(workspace, history, tmp_path):
    b = export(workspace, tmp_path / "b")
    good = tmp_path / "good"
    shutil.copytree(b, good)
    lines = (b / "records.jsonl").read_text().splitlines()
    (b / "records.jsonl").write_text("\n".join(lines[:-6]) + "\n")
    resign(workspace, b)
    r = workspace.run("evidence", "verify", str(b))
    assert r.code == 3 and "bundle.json says records" in r.err, r
    # cut records and a bundle.json rewritten to match: the signed head still names the real end
    meta = json.loads((b / "bundle.json").read_text())
    meta.update(records=meta["records"] - 6, last_seq=meta["last_seq"] - 6)
    (b / "bundle.json").write_text(json.dumps(meta, ensure_ascii=False))
    resign(workspace, b)
    r = workspace.run("evidence", "verify", str(b))
    assert r.code == 3 and "records were cut" in r.err, r
    # controls.json edited to say 符合, re-signed: recomputed from the records, refused
    c = json.loads((good / "controls.json").read_text())
    c[0]["controls"][0]["verdict"] = "conformant"
    (good / "controls.json").write_text(json.dumps(c, ensure_ascii=False))
    resign(workspace, good)
    r = workspace.run("evidence", "verify", str(good))
    assert r.code == 3 and "controls.json does not follow" in r.err, r


def test_previous_bundle_must_be_contiguous(workspace, history, tmp_path):
    mid = H.d0() + timedelta(days=45)
    old = tmp_path / "old"
    workspace.ok("evidence", "export", "--since", str(H.d0()), "--until", str(mid), "--out", str(old))
    new = tmp_path / "new"
    workspace.ok("evidence", "export", "--since", str(mid + timedelta(days=1)), "--until", str(today()), "--out", str(new))
    r = workspace.ok("evidence", "verify", str(new), "--previous", str(old))
    assert "contiguous with previous bundle" in r.out
    gap = tmp_path / "gap"
    workspace.ok("evidence", "export", "--since", str(mid + timedelta(days=3)), "--until", str(today()), "--out", str(gap))
    r = workspace.run("evidence", "verify", str(gap), "--previous", str(old))
    assert r.code == 3 and "are in neither bundle" in r.err, r
    # the old bundle's tail cut by the key holder, fully re-signed (head line too): the next bundle exposes it
    lines = (old / "records.jsonl").read_text().splitlines()
    kept = [json.loads(x) for x in lines[:-6]]
    (old / "records.jsonl").write_text("\n".join(lines[:-6]) + "\n")
    ctx = Context.load(workspace.config)
    from backupkit.anchor import head_line
    meta = json.loads((old / "bundle.json").read_text())
    meta.update(records=len(kept), last_seq=kept[-1]["seq"],
                head=head_line(kept[-1]["seq"], kept[-1]["hash"], kept[-1]["time"], ctx.signer))
    meta.pop("clock_steps", None), meta.pop("clock_step_records", None)
    (old / "bundle.json").write_text(json.dumps(meta, ensure_ascii=False))
    (old / "HEAD").write_text(meta["head"] + "\n")
    (old / "controls.json").unlink(), (old / "exceptions.json").unlink()
    meta["tool"] = "backupkit 0.0.0"  # so verify does not recompute the verdicts the forger dropped
    (old / "bundle.json").write_text(json.dumps(meta, ensure_ascii=False))
    write_sums(old, ctx.signer)
    ctx.close()
    assert workspace.run("evidence", "verify", str(old)).code == 0  # alone it looks fine
    r = workspace.run("evidence", "verify", str(new), "--previous", str(old))
    assert r.code == 3 and "neither bundle" in r.err, r


def test_system_filtered_bundle_keeps_other_systems_as_hashes(workspace, history, tmp_path):
    other = workspace.policies / "his.yaml"
    data = workspace.policy_file().read_text().replace("system: demo-lis", "system: his").replace(
        "检验信息系统 LIS (demo)", "医院信息系统")
    other.write_text(data)
    w = H.Writer(workspace)
    secret_subject = "20261128T000000.000Z-abcdef"
    w.add(datetime.now(H.CST), "backup", secret_subject, {"engine": "sqlite", "note": "HIS-ONLY-CONTENT"}, system="his")
    w.ledger.close()
    workspace.ok("backup", "demo-lis", "--no-copy")
    b = export(workspace, tmp_path / "one", "--system", "demo-lis")
    lines = [json.loads(x) for x in (b / "records.jsonl").read_text().splitlines()]
    stubs = [x for x in lines if x.get("omitted")]
    assert len(stubs) == 1 and set(stubs[0]) == {"seq", "omitted", "prev_hash", "hash", "key_id", "signature"}
    for f in b.rglob("*"):
        if f.is_file():
            assert b"HIS-ONLY-CONTENT" not in f.read_bytes() and secret_subject.encode() not in f.read_bytes(), f
    r = workspace.ok("evidence", "verify", str(b))
    assert "1 of other systems as hashes only" in r.out
    stubs[0]["hash"] = "0" * 64  # a stub whose record was swapped: its signature no longer verifies
    (b / "records.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    resign(workspace, b)
    r = workspace.run("evidence", "verify", str(b))
    assert r.code == 3 and f"record seq {stubs[0]['seq']}: signature does not verify" in r.err, r
    assert r.err.count("\n") == 1


# ---- bounded verification -----------------------------------------------------------------------------------------

def test_zip_bomb_is_refused_before_extraction(workspace, tmp_path):
    workspace.ok("backup", "demo-lis")
    good = tmp_path / "b.zip"
    workspace.ok("evidence", "export", "--out", str(good))
    bomb = tmp_path / "bomb.zip"
    zeros = b"\0" * (256 << 20)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for i in src.infolist():
            dst.writestr(i.filename, zeros if i.filename == "report.html" else src.read(i))
    assert bomb.stat().st_size < 2 << 20
    t0 = time.monotonic()
    r = workspace.run("evidence", "verify", str(bomb))
    assert r.code == 3 and "report.html" in r.err and "refused before extracting" in r.err, r
    assert time.monotonic() - t0 < 20
    extra = tmp_path / "extra.zip"
    shutil.copy(good, extra)
    with zipfile.ZipFile(extra, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("padding.bin", zeros)
    r = workspace.run("evidence", "verify", str(extra))
    assert r.code == 3 and "padding.bin is not listed" in r.err, r


# ---- anchors, atomicity -------------------------------------------------------------------------------------------

def test_export_refuses_a_rolled_back_ledger_and_warns_on_an_unreachable_target(workspace, tmp_path):
    workspace.ok("backup", "demo-lis")
    old = tmp_path / "old-ledger.db"
    src = sqlite3.connect(workspace.ledger)
    dst = sqlite3.connect(old)
    src.backup(dst)
    src.close(), dst.close()
    workspace.ok("backup", "demo-lis")  # the target's signed head moves on
    for suffix in ("-wal", "-shm"):
        (workspace.ledger.parent / (workspace.ledger.name + suffix)).unlink(missing_ok=True)
    shutil.copy(old, workspace.ledger)
    out = tmp_path / "b"
    r = workspace.run("evidence", "export", "--out", str(out))
    assert r.code == 3 and "rolled back" in r.err and "target offsite" in r.err, r
    assert not out.exists() and not list(tmp_path.glob(".b.partial-*"))
    workspace.edit_config(lambda c: c["targets"]["offsite"].update(path=str(tmp_path / "unmounted")))
    r = workspace.run("evidence", "export", "--out", str(out))
    assert r.code == 0 and "warning: ledger head on target offsite could not be checked" in r.err, r


def test_review_and_action_commands(workspace):
    workspace.ok("backup", "demo-lis")
    drill = json.loads(workspace.ok("drill", "demo-lis", "--json").out)["drill_id"]
    r = workspace.run("review", "drill", "D20990101T000000Z-000000", "--reviewer", "x", "--verdict", "accepted")
    assert r.code == 2 and "is not in the ledger" in r.err
    r = workspace.run("review", "action", "add", "demo-lis", "--owner", "张工", "--due", "next week", "--text", "t")
    assert r.code == 2 and "--due" in r.err
    workspace.ok("review", "drill", drill, "--reviewer", "李主任", "--verdict", "rejected", "--note", "截图缺失")
    aid = workspace.ok("review", "action", "add", "demo-lis", "--drill", drill, "--owner", "张工", "--due",
                       "2020-01-01", "--text", "补充截图").out.split()[2]
    rows = workspace.ledger_rows("review") + workspace.ledger_rows("corrective_action")
    bodies = [json.loads(x[3]) for x in rows]
    assert bodies[0]["verdict"] == "rejected" and bodies[0]["reviewer"] == "李主任" and bodies[0]["drill_id"] == drill
    assert bodies[1]["owner"] == "张工" and bodies[1]["due"] == "2020-01-01"
    out = workspace.root / "b"
    workspace.ok("evidence", "export", "--out", str(out))
    exc = {e["type"] for e in json.loads((out / "exceptions.json").read_text())}
    assert {"review_rejected", "action_overdue"} <= exc
    workspace.ok("review", "action", "close", aid, "--by", "李主任", "--note", "已补充")
    r = workspace.run("review", "action", "close", aid, "--by", "李主任")
    assert r.code == 2 and "already closed" in r.err
    out2 = workspace.root / "b2"
    workspace.ok("evidence", "export", "--out", str(out2))
    assert "action_overdue" not in {e["type"] for e in json.loads((out2 / "exceptions.json").read_text())}
