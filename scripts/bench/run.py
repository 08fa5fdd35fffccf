#!/usr/bin/env python3
"""Benchmark backupkit against the baselines of docs/BENCHMARKS.md.

Given ``--scale S`` (and ``--repeat N``), build or reuse ``bench_his``, then run
each backupkit command and its baseline alternately N times and print one line
per row: name, median ratio, min-max, target, PASS/FAIL. Exit 1 when a target
is missed or a row could not run (a row never disappears silently).

Rows are functions in ``ROWS``; other modules add theirs with ``@row`` (e.g.
the SFTP rows in scripts/bench/rows_*.py, imported automatically).

    python scripts/bench/run.py --scale 1 --repeat 3
    python scripts/bench/run.py --scale 1 --via engine     # PostgresEngine directly, no CLI
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import make_dataset  # noqa: E402

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    seconds: float
    maxrss_kb: int = 0
    bytes: int = 0
    load1: float = 0.0  # 1-minute load average when the sample ended (the machine is shared)


@dataclass
class Bench:
    """Shared state of one run: paths, settings, and every measurement taken (by name)."""

    scale: float
    repeat: int
    via: str
    workdir: Path
    dsn: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def add(self, name: str, s: Sample) -> None:
        s.load1 = os.getloadavg()[0]
        self.samples.setdefault(name, []).append(s)
        logger.info("%s: %.2fs (load %.2f)", name, s.seconds, s.load1)


@dataclass
class RowResult:
    name: str
    ratios: list[float]
    target: str  # e.g. "<= 1.15"; "" = informational
    unit: str = "x"

    def passed(self) -> bool | None:
        if not self.target or not self.ratios:
            return None
        op, value = self.target.split()
        med = statistics.median(self.ratios)
        return med <= float(value) if op == "<=" else med >= float(value)


RowFn = Callable[[Bench], RowResult]
ROWS: list[RowFn] = []


def row(fn: RowFn) -> RowFn:
    """Register a row function (rows print in registration order)."""
    ROWS.append(fn)
    return fn


# ---- running things ----------------------------------------------------------------------------


def run_rss(argv: list[str], env=None) -> Sample:
    """Run a program and return wall time plus its peak RSS (ru_maxrss via wait4)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    import threading

    bufs: dict[str, bytes] = {}
    threads = [threading.Thread(target=lambda k, f: bufs.__setitem__(k, f.read()), args=(k, f))
               for k, f in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = bufs.get("out", b""), bufs.get("err", b"")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {proc.returncode}: {(err or out).decode(errors='replace')[-3000:]}")
    return Sample(wall, ru.ru_maxrss)


def compile_backupkit() -> None:
    """Write backupkit's bytecode before measuring, as ``pip install`` does for a real installation: an
    editable checkout with PYTHONDONTWRITEBYTECODE set (as on the CI machine) would otherwise compile every
    module again in every measured command (0.15-0.2 s each, docs/benchmarks.md)."""
    import compileall

    compileall.compile_dir(str(REPO / "backupkit"), quiet=1)


def pipeline(stages: list[list[str]], out_path: Path | None = None) -> tuple[float, bytes]:
    """Run ``a | b | c`` without a shell; return (wall seconds, last stage's stdout)."""
    t0 = time.monotonic()
    procs = []
    prev = None
    for argv in stages:
        p = subprocess.Popen(argv, stdin=prev, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if prev is not None:
            prev.close()
        prev = p.stdout
        procs.append(p)
    out = procs[-1].stdout.read()
    for p in procs:
        p.wait()
        if p.returncode != 0:
            raise RuntimeError(f"{p.args[0]} exited {p.returncode}: {p.stderr.read().decode(errors='replace')[-1500:]}")
    return time.monotonic() - t0, out


# ---- setup -------------------------------------------------------------------------------------


def pg_params(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}


def write_config(b: Bench) -> Path:
    """Create keys, a global config and two policies (fingerprint rows / full) on bench_his."""
    import yaml

    from backupkit import keys

    home = b.workdir / "cfg"
    if home.exists():
        shutil.rmtree(home)
    (home / "policies").mkdir(parents=True)
    ident, rec = keys.generate_identity()
    keys.write_private(home / "identity.txt", ident.encode())
    keys.write_private(home / "signing.pem", keys.generate_signing_key())
    (home / "recipient.txt").write_text(rec + "\n")
    # work_dir on the bench volume, as docs/operations.md advises and where the restore baseline works too
    # (the default, the system temp directory, may be another file system: here /tmp makes initdb twice as slow)
    cfg = {"repository": str(b.workdir / "repo"), "ledger": str(b.workdir / "ledger.db"),
           "policies": str(home / "policies"), "work_dir": str(b.workdir / "work"),
           "keys": {"recipients": [str(home / "recipient.txt")], "identity": str(home / "identity.txt"),
                    "signing_key": str(home / "signing.pem")}}
    (home / "backupkit.yaml").write_text(yaml.safe_dump(cfg))
    p = pg_params(b.dsn)
    source = {"host": p.get("host", "127.0.0.1"), "port": int(p.get("port", 5432)), "user": p.get("user", "postgres"),
              "database": make_dataset.DATABASE}
    for system, mode in (("his", "rows"), ("his-full", "full")):
        policy = {"system": system, "tier": "6h", "engine": "postgres", "source": source,
                  "drill": {"fingerprint": mode, "scratch": {"type": "ephemeral"},
                            "assertions": [{"name": "patients", "sql": "SELECT count(*) FROM patients", "expect": "> 0"}]}}
        (home / "policies" / f"{system}.yaml").write_text(yaml.safe_dump(policy, allow_unicode=True))
    return home / "backupkit.yaml"


def backupkit_argv(b: Bench, command: str, system: str) -> list[str]:
    if b.via == "cli":
        return [sys.executable, "-m", "backupkit.cli", "--config", str(b.config), command, system]
    return [sys.executable, str(HERE / "engine_job.py"), command, "--config", str(b.config), "--system", system,
            "--out", str(b.workdir / "engine-out" / system)]


# ---- measurements (each appends one sample per call) ----------------------------------------------


def measure_backup(b: Bench, system: str) -> None:
    s = run_rss(backupkit_argv(b, "backup", system))
    s.bytes = artifact_bytes(b, system)
    b.add(f"backup:{system}", s)


def artifact_bytes(b: Bench, system: str) -> int:
    """Size of the newest backup's *.zst.age files of ``system``."""
    root = b.workdir / ("repo" if b.via == "cli" else "engine-out") / system
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and any(d.glob("*.zst.age"))), key=lambda d: d.stat().st_mtime)
    return sum(f.stat().st_size for f in dirs[-1].glob("*.zst.age"))


def measure_drill(b: Bench, system: str) -> None:
    b.add(f"drill:{system}", run_rss(backupkit_argv(b, "drill", system)))


def pg_bin(tool: str) -> str:
    from backupkit.engines.pg_cluster import find_tool

    return str(find_tool(tool, 15 if not os.environ.get("PGMAJOR") else int(os.environ["PGMAJOR"]), allow_newer=True))


def dump_argv(b: Bench, *extra: str) -> list[str]:
    from psycopg.conninfo import make_conninfo

    return [pg_bin("pg_dump"), *extra, "--dbname", make_conninfo(**{**pg_params(b.dsn), "dbname": make_dataset.DATABASE})]


def measure_practical(b: Bench) -> None:
    out = b.workdir / "baseline.dump.zst"
    wall, _ = pipeline([dump_argv(b, "-Fc", "-Z0"), ["zstd", "-3", "-T2", "-q", "-c"], ["tee", str(out)], ["sha256sum"]])
    b.add("practical", Sample(wall, 0, out.stat().st_size))


def measure_pg_dump_fc(b: Bench) -> None:
    out = b.workdir / "baseline.dump.gz"
    with open(out, "wb") as f:
        t0 = time.monotonic()
        subprocess.run(dump_argv(b, "-Fc"), stdout=f, check=True)
        wall = time.monotonic() - t0
    b.add("pg_dump_fc", Sample(wall, 0, out.stat().st_size))


def measure_restore_baseline(b: Bench) -> None:
    """zstd -d to a file + pg_restore -j2 into a fresh database on the same server."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    src = b.workdir / "baseline.dump.zst"
    if not src.exists():
        measure_practical(b)
    plain = b.workdir / "baseline.restore.dump"
    target = "bench_restore_baseline"
    with psycopg.connect(b.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {target} TEMPLATE template0")
    try:
        t0 = time.monotonic()
        subprocess.run(["zstd", "-d", "-q", "-f", str(src), "-o", str(plain)], check=True)
        subprocess.run([pg_bin("pg_restore"), "-j2", "--dbname", make_conninfo(**{**pg_params(b.dsn), "dbname": target}),
                        str(plain)], check=True, stderr=subprocess.PIPE)
        b.add("restore_baseline", Sample(time.monotonic() - t0))
    finally:
        plain.unlink(missing_ok=True)
        with psycopg.connect(b.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")


def ensure_measured(b: Bench) -> None:
    """Alternate backupkit and baselines ``repeat`` times (once per run, shared by all rows)."""
    if b.samples:
        return
    for i in range(b.repeat):
        logger.info("round %d/%d", i + 1, b.repeat)
        measure_backup(b, "his")
        measure_practical(b)
        measure_pg_dump_fc(b)
        measure_backup(b, "his-full")
        measure_drill(b, "his")
        measure_restore_baseline(b)
        measure_drill(b, "his-full")


def ratios(b: Bench, ours: str, base: str, attr: str = "seconds") -> list[float]:
    ensure_measured(b)
    return [getattr(o, attr) / getattr(x, attr) for o, x in zip(b.samples[ours], b.samples[base])]


# ---- rows ----------------------------------------------------------------------------------------


@row
def row_backup_vs_practical(b: Bench) -> RowResult:
    return RowResult("backup (rows) / pg_dump -Z0|zstd -T2|tee|sha256sum", ratios(b, "backup:his", "practical"), "<= 1.15")


@row
def row_backup_full_vs_practical(b: Bench) -> RowResult:
    return RowResult("backup (full fingerprint) / same pipeline", ratios(b, "backup:his-full", "practical"), "<= 1.25")


@row
def row_backup_vs_pg_dump(b: Bench) -> RowResult:
    return RowResult("backup (rows) / pg_dump -Fc", ratios(b, "backup:his", "pg_dump_fc"), "<= 0.45")


@row
def row_size(b: Bench) -> RowResult:
    return RowResult("artifact bytes / pg_dump -Fc bytes", ratios(b, "backup:his", "pg_dump_fc", "bytes"), "<= 1.0")


@row
def row_drill_rows(b: Bench) -> RowResult:
    return RowResult("drill (rows) / zstd -d + pg_restore -j2", ratios(b, "drill:his", "restore_baseline"), "<= 1.15")


@row
def row_drill_full(b: Bench) -> RowResult:
    return RowResult("drill (full, schema+LO+sequence checks) / zstd -d + pg_restore -j2",
                     ratios(b, "drill:his-full", "restore_baseline"), "<= 1.3")


@row
def row_memory(b: Bench) -> RowResult:
    ensure_measured(b)
    peaks = [s.maxrss_kb / 1024 for k in ("backup:his", "backup:his-full", "drill:his", "drill:his-full")
             for s in b.samples[k]]
    return RowResult(f"peak RSS backup+drill at scale {b.scale:g} (MB)", peaks, "<= 150", unit="MB")


@row
def row_growth(b: Bench) -> RowResult:
    """Wall time at this scale / at scale 1 (from a previous run's results file)."""
    ensure_measured(b)
    if b.scale == 1:
        return RowResult("growth: needs a run at another scale [info]", [], "")
    prev = b.workdir / "results-scale1.json"
    if not prev.exists():
        raise RuntimeError(f"no scale-1 results in {prev}; run --scale 1 first")
    base = json.loads(prev.read_text())
    now = statistics.median(s.seconds for s in b.samples["backup:his"])
    return RowResult(f"growth: backup wall at scale {b.scale:g} / scale 1", [now / base["backup:his"]],
                     f"<= {5.5 * b.scale / 5:.2f}")


def load_extra_rows() -> None:
    # rows_*.py do `from run import row`: make that the running module, not a second copy of it
    sys.modules.setdefault("run", sys.modules[__name__])
    for f in sorted(HERE.glob("rows_*.py")):
        importlib.import_module(f.stem)


def fmt(r: RowResult) -> str:
    if not r.ratios:
        return f"{r.name:58s}  {'-':>8s}  {'':17s}  target {r.target or '-':8s}  INFO"
    med, lo, hi = statistics.median(r.ratios), min(r.ratios), max(r.ratios)
    verdict = {True: "PASS", False: "FAIL", None: "INFO"}[r.passed()]
    return f"{r.name:58s}  {med:8.3f}  ({lo:.3f}-{hi:.3f})  target {r.target or '-':8s}  {verdict}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dsn", default=make_dataset.DEFAULT_DSN)
    ap.add_argument("--via", choices=["cli", "engine"], default="cli",
                    help="cli: backupkit --config CFG backup/drill; engine: PostgresEngine directly")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("BENCH_DIR", "/var/tmp/backupkit-bench")))
    ap.add_argument("--only", default="",
                    help="comma-separated words; run only the rows whose function name contains one of them "
                         "(e.g. 'drill' or 'mariadb,pgbackrest'); default: every row")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    args.workdir.mkdir(parents=True, exist_ok=True)
    compile_backupkit()
    make_dataset.main(["--scale", str(args.scale), "--dsn", args.dsn, "--if-missing"])
    start_load = os.getloadavg()[0]
    b = Bench(args.scale, args.repeat, args.via, args.workdir, args.dsn)
    for d in ("repo", "engine-out"):
        shutil.rmtree(args.workdir / d, ignore_errors=True)
    (args.workdir / "ledger.db").unlink(missing_ok=True)
    b.config = write_config(b)
    load_extra_rows()
    failed = False
    print(f"backupkit benchmark: scale {args.scale:g}, {args.repeat} rounds, via {args.via}")
    words = [w for w in args.only.split(",") if w]
    for fn in ROWS:
        if words and not any(w in fn.__name__ for w in words):
            continue
        try:
            r = fn(b)
        except Exception as e:  # a row that cannot run is reported, never skipped
            print(f"{fn.__name__:58s}  ERROR: {' '.join(str(e).split())[:300]}")
            logger.debug("%s", traceback.format_exc())
            failed = True
            continue
        print(fmt(r), flush=True)
        failed |= r.passed() is False
    if b.samples:
        summary = {k: statistics.median(s.seconds for s in v) for k, v in b.samples.items()}
        (args.workdir / f"results-scale{args.scale:g}.json").write_text(json.dumps(summary, indent=1))
        raw = {k: [{"seconds": round(x.seconds, 3), "load1": x.load1} for x in v] for k, v in b.samples.items()}
        (args.workdir / f"samples-scale{args.scale:g}.json").write_text(json.dumps(raw, indent=1))
        print("medians (s): " + ", ".join(f"{k}={v:.2f}" for k, v in summary.items()))
        loads = [x.load1 for v in b.samples.values() for x in v]
        print(f"1-minute load average at the end of each sample: {min(loads):.2f}-{max(loads):.2f} "
              f"(at start: {start_load:.2f}; 2 busy cores read as about 2)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
