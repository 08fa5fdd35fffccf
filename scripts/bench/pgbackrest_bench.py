#!/usr/bin/env python3
"""Physical-mode benchmark: backupkit on pgBackRest against pgBackRest alone, on a private archiving cluster.

Rows (every figure a ratio measured in the same run, rounds alternating which side goes first):

- ``physical backup``: ``backupkit backup`` (pgbackrest backup + fingerprints in a snapshot + pack,
  compress, encrypt, sign) ÷ ``pgbackrest backup --type=full`` alone. Informational target <= 2.5.
- ``physical drill``: ``backupkit drill`` (decrypt, unpack, pgbackrest restore, recovery to the
  backup's LSN, pg_checksums, amcheck, full fingerprints, assertions, teardown) ÷ ``pgbackrest
  restore`` + start + recovery (``--type=immediate``) + promotion alone. Informational target <= 3.

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
    policy = {"system": "phys", "tier": "6h", "engine": "postgres", "source": c.source(DB),
              "drill": {"fingerprint": "full", "assertions": [
                  {"name": "patients", "sql": "SELECT count(*) FROM patients", "expect": "> 0"}]}}
    (home / "policies" / "phys.yaml").write_text(yaml.safe_dump(policy))
    return home / "backupkit.yaml"


def _timed(argv: list[str]) -> float:
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, cwd="/", check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} exited {p.returncode}: {(p.stderr or p.stdout)[-2000:]}")
    return time.monotonic() - t0


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
    """Return {"backup": [ratios], "drill": [ratios]} over ``repeat`` alternating rounds."""
    out: dict[str, list[float]] = {"backup": [], "drill": []}
    with archiving_cluster(prefix="bk-bench-pgbr-") as c, tempfile.TemporaryDirectory(prefix="bk-bench-") as tmp:
        _dataset(c, rows)
        cfg = _config(c, Path(tmp))
        bk = [sys.executable, "-m", "backupkit.cli", "--config", str(cfg)]
        for i in range(repeat):
            pb_argv = (["runuser", "-u", c.run_as, "--"] if c.run_as else []) + [
                "pgbackrest", f"--config={c.conf}", f"--stanza={STANZA}", "--type=full", "backup"]
            if i % 2 == 0:
                t_pb, t_bk = _timed(pb_argv), _timed(bk + ["backup", "phys", "--no-copy"])
            else:
                t_bk, t_pb = _timed(bk + ["backup", "phys", "--no-copy"]), _timed(pb_argv)
            out["backup"].append(t_bk / t_pb)
            if i % 2 == 0:
                t_rb, t_dr = _baseline_restore(c), _timed(bk + ["drill", "phys"])
            else:
                t_dr, t_rb = _timed(bk + ["drill", "phys"]), _baseline_restore(c)
            out["drill"].append(t_dr / t_rb)
            print(f"round {i + 1}: backup {t_bk:.2f}s / pgbackrest {t_pb:.2f}s; drill {t_dr:.2f}s / "
                  f"restore+recovery {t_rb:.2f}s", file=sys.stderr)
    return out


ROWS = (("backup", "physical backup: backupkit / pgbackrest backup alone", 2.5),
        ("drill", "physical drill: backupkit / pgbackrest restore+start+recovery", 3.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    res = measure(args.rows, args.repeat)
    failed = False
    for key, name, target in ROWS:
        r = res[key]
        med = statistics.median(r)
        ok = med <= target
        failed |= not ok
        print(f"{name:62s}  {med:8.3f}  ({min(r):.3f}-{max(r):.3f})  target <= {target:<5g}  {'PASS' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
