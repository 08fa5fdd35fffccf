#!/usr/bin/env python3
"""Offsite-copy benchmark: backupkit's SFTP target against OpenSSH on a private loopback sshd.

Rows (docs BENCHMARKS.md; every figure is a ratio measured in the same run):

- ``offsite copy``: backupkit SFTP upload throughput ÷ OpenSSH ``sftp -b`` put
  throughput, same file, same sshd, same key. Both include connecting and
  authenticating; neither includes verification. Target ≥ 0.9.
- ``offsite verify (read-back)``: throughput of hashing the remote copy by
  reading it back ÷ backupkit's upload throughput. Target ≥ 0.8.

Runs alternate (which side goes first flips every round) and each row reports
the median ratio with its min and max. ``measure()`` is what
``scripts/bench/run.py`` calls; run this file alone to print the rows and exit
non-zero when a target is missed:

    python scripts/bench/sftp_bench.py --size-mb 256 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from backupkit.targets.base import Blob  # noqa: E402
from backupkit.targets.sftp import PARTIAL, SftpTarget  # noqa: E402
from fixtures.sshd import SshdServer  # noqa: E402  (the one sshd launcher, shared with the tests)


class Row(NamedTuple):
    name: str
    median: float
    min: float
    max: float
    target: float
    passed: bool  # ratio >= target (higher is better for both rows)


def _random_file(path: Path, size: int) -> None:
    # Encrypted artifacts are incompressible: random bytes are the honest payload.
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


def _openssh_put(server: SshdServer, local: Path, remote: str, batch: Path) -> float:
    batch.write_text(f"put {local} {remote}\n")
    argv = [
        "sftp", "-q", "-F", "/dev/null", "-b", str(batch), "-P", str(server.port),
        "-i", str(server.client_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", f"{server.user}@{server.host}",
    ]  # fmt: skip
    start = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise RuntimeError(f"sftp put failed ({p.returncode}): {p.stderr.strip()}")
    return elapsed


def _backupkit_put(server: SshdServer, remote_dir: Path, blob: Blob) -> tuple[float, float]:
    """(seconds to connect + upload, seconds to read back + hash) with a fresh target."""
    t = SftpTarget("bench", server.target_config(remote_dir, verify="read-back"))
    try:
        partial = str(remote_dir / ("bk.bin" + PARTIAL))
        start = time.perf_counter()
        sftp = t._client()  # connect + authenticate, as sftp -b does
        # The transfer half of put(), without the verification half timed below.
        t._upload(sftp, partial, blob, 0)
        upload = time.perf_counter() - start
        start = time.perf_counter()
        digest, n = t._read_back_sha256(sftp, partial)
        readback = time.perf_counter() - start
        if digest != blob.sha256 or n != blob.size:
            raise RuntimeError("read-back hash does not match the uploaded file")
        return upload, readback
    finally:
        t.close()


def measure(scale_file_size_mb: float = 256, repeat: int = 5, workdir: str | os.PathLike | None = None) -> list[Row]:
    """Given a file size in MB and a number of rounds, start a private sshd,
    time backupkit and OpenSSH alternately, and return the two result rows."""
    import hashlib

    work = Path(tempfile.mkdtemp(prefix="backupkit-sftp-bench-", dir=workdir))
    server = SshdServer(work / "sshd")
    try:
        server.start()
        remote = server.remote_dir("bench")
        local = work / "payload.bin"
        size = int(scale_file_size_mb * 1_000_000)
        _random_file(local, size)
        h = hashlib.sha256()
        with open(local, "rb") as f:
            while b := f.read(1 << 20):
                h.update(b)
        blob = Blob(local, size, h.hexdigest())
        batch = work / "batch"
        up_ratio, rb_ratio, speeds = [], [], []
        for i in range(repeat):
            order = ("openssh", "backupkit") if i % 2 == 0 else ("backupkit", "openssh")
            times: dict[str, tuple[float, ...]] = {}
            for side in order:
                for leftover in remote.iterdir():
                    leftover.unlink()
                if side == "openssh":
                    times[side] = (_openssh_put(server, local, str(remote / "ssh.bin"), batch),)
                else:
                    times[side] = _backupkit_put(server, remote, blob)
            ssh_s, (bk_s, rb_s) = times["openssh"][0], times["backupkit"]
            up_ratio.append(ssh_s / bk_s)  # throughput ratio = inverse time ratio
            rb_ratio.append(bk_s / rb_s)
            speeds.append((size / ssh_s / 1e6, size / bk_s / 1e6, size / rb_s / 1e6))
        measure.last_speeds = speeds  # type: ignore[attr-defined]
        return [
            _row("offsite copy: backupkit SFTP upload / OpenSSH sftp put (throughput)", up_ratio, 0.9),
            _row("offsite verify: read-back hash / backupkit upload (throughput)", rb_ratio, 0.8),
        ]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _row(name: str, ratios: list[float], target: float) -> Row:
    med = statistics.median(ratios)
    return Row(name, round(med, 3), round(min(ratios), 3), round(max(ratios), 3), target, med >= target)


def rows(scale: float = 1, repeat: int = 5) -> list[Row]:
    """The rows for ``run.py --scale S``: the upload file is 256 MB x scale (about one artifact)."""
    return measure(256 * scale, repeat)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=256, help="payload size in MB (default 256)")
    ap.add_argument("--repeat", type=int, default=5, help="alternating rounds (default 5)")
    args = ap.parse_args(argv)
    result = measure(args.size_mb, args.repeat)
    for ssh, bk, rb in measure.last_speeds:  # type: ignore[attr-defined]
        print(f"  round: openssh put {ssh:.0f} MB/s, backupkit upload {bk:.0f} MB/s, read-back {rb:.0f} MB/s")
    for r in result:
        mark = "ok  " if r.passed else "MISS"
        print(f"{mark} {r.name}: median {r.median:.2f} (min {r.min:.2f}, max {r.max:.2f}), target >= {r.target}")
    return 0 if all(r.passed for r in result) else 1


if __name__ == "__main__":
    sys.exit(main())
