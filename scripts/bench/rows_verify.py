"""verify (no key): backupkit's re-hash throughput / sha256sum on the same file, alternating."""

from __future__ import annotations

import os
import subprocess
import time

from backupkit.artifact import sha256_file
from run import Bench, RowResult, row


@row
def row_verify_rehash(b: Bench) -> RowResult:
    path = b.workdir / "rehash.bin"
    size = int(512 * 1_000_000 * max(b.scale, 0.1))
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as f:
            for _ in range(size // (1 << 20)):
                f.write(os.urandom(1 << 20))
            f.write(os.urandom(size % (1 << 20)))
    ratios = []
    for _ in range(max(3, b.repeat)):
        t0 = time.perf_counter()
        ours, _ = sha256_file(path)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
        t_theirs = time.perf_counter() - t0
        assert out == ours
        ratios.append(t_theirs / t_ours)  # throughput ratio = inverse time ratio
    return RowResult("verify (no key): re-hash throughput / sha256sum", ratios, ">= 0.9")
