#!/usr/bin/env python3
"""Run one backup or drill through PostgresEngine directly (no CLI, no repository).

Used by run.py ``--via engine`` to measure the engine's share of the work:
``backup`` dumps into a DirectorySink under ``--out/<timestamp>``; ``drill``
restores the newest one there into an ephemeral scratch and compares fingerprints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backupkit.artifact import DirectorySink, DirectorySource  # noqa: E402
from backupkit.config import load_config  # noqa: E402
from backupkit.engines.postgres import PostgresEngine  # noqa: E402
from backupkit.keys import load_identities, load_recipients  # noqa: E402
from backupkit.policy import load_policy  # noqa: E402
from backupkit.verdict import compare_fingerprints  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["backup", "drill"])
    ap.add_argument("--config", required=True)
    ap.add_argument("--system", required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    cfg = load_config(a.config)
    policy = load_policy(cfg.policies / f"{a.system}.yaml")
    engine = PostgresEngine()
    t0 = time.monotonic()
    if a.command == "backup":
        d = a.out / time.strftime("%Y%m%dT%H%M%S")
        sink = DirectorySink(d, load_recipients(cfg.keys.recipients), level=policy.backup.compression_level)
        r = engine.dump(policy=policy, sink=sink)
        (d / "result.json").write_text(json.dumps({"streams": [dataclasses.asdict(s) for s in sink.streams],
                                                   "fingerprints": r.fingerprints, "details": r.details}, default=str))
        print(json.dumps({"seconds": time.monotonic() - t0, **r.details}, default=str))
        return 0
    d = sorted(p for p in a.out.iterdir() if (p / "result.json").exists())[-1]
    meta = json.loads((d / "result.json").read_text())
    ids = load_identities(cfg.keys.identity)
    source = DirectorySource(d, meta["streams"], ids, what="bench", recipient_ids=[i.id for i in ids])
    steps = {}
    with engine.scratch(policy=policy, workdir=a.out / "scratch") as scratch:
        scratch.manifest = {"fingerprints": meta["fingerprints"], "details": meta.get("details") or {}}
        engine.restore(policy=policy, scratch=scratch, source=source)
        steps["restore"] = time.monotonic() - t0
        checks = engine.integrity_check(scratch=scratch)
        steps["integrity"] = time.monotonic() - t0
        fp = engine.fingerprints(scratch=scratch, mode=policy.drill.fingerprint, like=meta["fingerprints"])
        steps["fingerprints"] = time.monotonic() - t0
    bad = [c for c in compare_fingerprints(meta["fingerprints"], fp) if c["status"] != "passed"]
    if bad or any(c.status == "failed" for c in checks):
        print("drill FAILED: fingerprints or checks differ", file=sys.stderr)
        return 3
    print(json.dumps({"steps": steps, "teardown": scratch.teardown_proof}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
