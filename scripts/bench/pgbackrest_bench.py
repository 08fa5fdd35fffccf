#!/usr/bin/env python3
"""Physical-mode benchmark: backupkit on pgBackRest against pgBackRest alone, on a private archiving cluster.

Rows (every figure a ratio measured in the same run, rounds alternating which side goes first; the
targets are issue 14's):

- ``physical backup``: ``backupkit backup`` (pgbackrest backup + fingerprints in a snapshot + pack,
  compress, encrypt, sign) ÷ ``pgbackrest backup --type=full`` alone. Target <= 1.1.
- ``physical backup size``: the artifact's bytes ÷ what pgBackRest stored for that backup (its
  ``repo-size`` plus the WAL segments it needs, as archived). Target <= 1.1.
- ``physical drill``: ``backupkit drill`` (decrypt, unpack, pgbackrest restore, recovery to the
  backup's LSN, pg_checksums, amcheck beside the full fingerprints, assertions, teardown) ÷ ``pgbackrest
  restore`` + start + recovery (``--type=immediate``) + promotion alone. Target <= 1.3.
- ``physical drill ÷ logical drill``: the same drill ÷ ``backupkit drill`` of a logical (pg_dump) backup
  of the same database taken in the first round. Reported, no target.

``measure()`` is what ``scripts/bench/rows_pgbackrest.py`` (picked up by run.py) calls; alone:

    python scripts/bench/pgbackrest_bench.py --rows 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import yaml  # noqa: E402

from backupkit import keys  # noqa: E402
from backupkit.engines.kit import free_port  # noqa: E402
from fixtures.pgbackrest import STANZA, archiving_cluster  # noqa: E402  (the cluster the tests use)

DB = "bench_phys"


def _dataset(c, rows: int) -> None:
    c.exec("postgres", f"CREATE DATABASE {DB}")
    c.exec(DB, "CREATE TABLE patients (id bigserial PRIMARY KEY, name text, born date, note text)",
           f"INSERT INTO patients (name, born, note) SELECT 'p' || g, date '1950-01-01' + g % 20000, "
           f"repeat(md5(g::text), 4) FROM generate_series(1, {rows}) g",
           "CREATE TABLE visits (id bigint PRIMARY KEY, patient_id bigint, at timestamptz, ward text)",
           f"INSERT INTO visits SELECT g, 1 + g % {rows}, now() - g * interval '1 minute', 'ICU' "
           f"FROM generate_series(1, {rows * 2}) g",
           "CREATE INDEX visits_patient ON visits (patient_id)", "CHECKPOINT")


def _config(c, work: Path) -> Path:
    home = work / "cfg"
    (home / "policies").mkdir(parents=True)
    ident, rec = keys.generate_identity()
    keys.write_private(home / "identity.txt", ident.encode())
    keys.write_private(home / "signing.pem", keys.generate_signing_key())
    (home / "recipient.txt").write_text(rec + "\n")
    cfg = {"repository": str(work / "repo"), "ledger": str(work / "ledger.db"), "policies": str(home / "policies"),
           "keys": {"recipients": [str(home / "recipient.txt")], "identity": str(home / "identity.txt"),
                    "signing_key": str(home / "signing.pem")}}
    (home / "backupkit.yaml").write_text(yaml.safe_dump(cfg))
    drill = {"fingerprint": "full", "assertions": [
        {"name": "patients", "sql": "SELECT count(*) FROM patients", "expect": "> 0"}]}
    # the same database twice: physical (pgBackRest) and logical (pg_dump), for the physical ÷ logical drill row
    for system, source in (("phys", c.source(DB)), ("logi", {"dsn": c.dsn(DB)})):
        policy = {"system": system, "tier": "6h", "engine": "postgres", "source": source, "drill": drill}
        (home / "policies" / f"{system}.yaml").write_text(yaml.safe_dump(policy))
    return home / "backupkit.yaml"


def _backup_steps(work: Path) -> str:
    """The newest physical backup's own timings (pgbackrest backup, fingerprints, packing), for the round's log."""
    import json
    from datetime import datetime

    (latest,) = sorted((work / "repo" / "phys").iterdir())[-1:]
    m = json.loads((latest / "manifest.json").read_text())
    pb, con = m["details"]["pgbackrest"], m["consistency"]
    total = (datetime.fromisoformat(m["finished"]) - datetime.fromisoformat(m["started"])).total_seconds()
    return (f"    backup: dump {total:.2f}s = pgbackrest backup {pb['backup_seconds']:.2f}s + fingerprints "
            f"{con.get('fingerprint_seconds', 0):.2f}s (beside packing {pb['stream_seconds']:.2f}s) + checks, WAL switch")


def _size_ratio(work: Path, c) -> float:
    """The newest physical backup's artifact bytes ÷ pgBackRest's bytes for it (repo-size + its archived WAL)."""
    import json

    (latest,) = sorted((work / "repo" / "phys").iterdir())[-1:]
    m = json.loads((latest / "manifest.json").read_text())
    ours = sum(st["artifact_bytes"] for st in m["streams"])
    pb = m["details"]["pgbackrest"]
    first, last = pb["wal_segments"]
    wal = sum(f.stat().st_size for f in (c.repo / "archive").rglob("*")
              if f.is_file() and len(f.name) > 24 and first <= f.name[:24] <= last)
    return ours / (pb["repo_size"] + wal)


def _timed(argv: list[str], out: list | None = None) -> float:
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, cwd="/", check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} exited {p.returncode}: {(p.stderr or p.stdout)[-2000:]}")
    if out is not None:
        out.append(p.stdout)
    return time.monotonic() - t0


def _drill_steps(stdout: str) -> str:
    """The drill record's step and check timings, for the round's log line (where the time goes)."""
    import json

    try:
        rec = json.loads(stdout)
    except ValueError:
        return ""
    steps = " ".join(f"{s['step']}={s['seconds']:.2f}" for s in rec.get("steps") or rec.get("timeline") or []
                     if isinstance(s.get("seconds"), (int, float)))
    checks = " ".join(f"{c['name']}={(c.get('data') or {}).get('seconds')}" for c in rec.get("checks", [])
                      if isinstance(c.get("data"), dict) and "seconds" in c["data"])
    return f"    steps: {steps}\n    checks: {checks}"


def _baseline_restore(c) -> float:
    """pgbackrest restore (latest set) into a fresh directory + start + recovery + promotion, as the drill does."""
    root = Path(tempfile.mkdtemp(prefix="bk-bench-rst-"))
    sock = Path(tempfile.mkdtemp(prefix="bk-bench-s-"))
    if c.run_as:
        shutil.chown(root, c.run_as, c.run_as)
        shutil.chown(sock, c.run_as, c.run_as)
    data = root / "data"
    pre = ["runuser", "-u", c.run_as, "--"] if c.run_as else []
    port = free_port()
    try:
        t0 = time.monotonic()
        _timed(pre + ["pgbackrest", f"--config={c.conf}", f"--stanza={STANZA}", f"--pg1-path={data}",
                      "--type=immediate", "--target-action=promote", "--archive-mode=off", "restore"])
        _timed(pre + [str(c.bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                      f"-c port={port} -c listen_addresses= -c unix_socket_directories={sock} -c archive_mode=off",
                      "start"])
        import psycopg

        while True:
            with psycopg.connect(f"host={sock} port={port} user=postgres dbname=postgres", autocommit=True) as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    break
            time.sleep(0.05)
        return time.monotonic() - t0
    finally:
        subprocess.run(pre + [str(c.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)


def measure(rows: int, repeat: int) -> dict[str, list[float]]:
    """Return {row key: [ratios]} over ``repeat`` alternating rounds (keys as in ROWS)."""
    out: dict[str, list[float]] = {k: [] for k, _, _ in ROWS}
    with archiving_cluster(prefix="bk-bench-pgbr-") as c, tempfile.TemporaryDirectory(prefix="bk-bench-") as tmp:
        _dataset(c, rows)
        cfg = _config(c, Path(tmp))
        bk = [sys.executable, "-m", "backupkit.cli", "--config", str(cfg)]
        _timed(bk + ["backup", "logi", "--no-copy"])
        for i in range(repeat):
            pb_argv = (["runuser", "-u", c.run_as, "--"] if c.run_as else []) + [
                "pgbackrest", f"--config={c.conf}", f"--stanza={STANZA}", "--type=full", "backup"]
            if i % 2 == 0:
                t_pb, t_bk = _timed(pb_argv), _timed(bk + ["backup", "phys", "--no-copy"])
            else:
                t_bk, t_pb = _timed(bk + ["backup", "phys", "--no-copy"]), _timed(pb_argv)
            out["backup"].append(t_bk / t_pb)
            out["size"].append(_size_ratio(Path(tmp), c))
            drill_out: list[str] = []
            if i % 2 == 0:
                t_rb, t_dr = _baseline_restore(c), _timed(bk + ["drill", "phys", "--json"], drill_out)
                t_lg = _timed(bk + ["drill", "logi"])
            else:
                t_lg = _timed(bk + ["drill", "logi"])
                t_dr, t_rb = _timed(bk + ["drill", "phys", "--json"], drill_out), _baseline_restore(c)
            out["drill"].append(t_dr / t_rb)
            out["drill_vs_logical"].append(t_dr / t_lg)
            print(f"round {i + 1}: backup {t_bk:.2f}s / pgbackrest {t_pb:.2f}s; drill {t_dr:.2f}s / "
                  f"restore+recovery {t_rb:.2f}s; logical drill {t_lg:.2f}s\n{_backup_steps(Path(tmp))}\n"
                  f"{_drill_steps(drill_out[0])}",
                  file=sys.stderr)
    return out


ROWS = (("backup", "physical backup: backupkit / pgbackrest backup alone", 1.1),
        ("size", "physical backup bytes / pgbackrest repo-size + its WAL", 1.1),
        ("drill", "physical drill: backupkit / pgbackrest restore+start+recovery", 1.3),
        ("drill_vs_logical", "physical drill / logical drill (same database)", None))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    from run import compile_backupkit

    compile_backupkit()
    res = measure(args.rows, args.repeat)
    failed = False
    for key, name, target in ROWS:
        r = res[key]
        med = statistics.median(r)
        ok = target is None or med <= target
        failed |= not ok
        judged = "target -        INFO" if target is None else f"target <= {target:<5g}  {'PASS' if ok else 'FAIL'}"
        print(f"{name:62s}  {med:8.3f}  ({min(r):.3f}-{max(r):.3f})  {judged}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
