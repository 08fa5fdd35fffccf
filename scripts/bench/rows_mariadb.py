"""MariaDB rows for run.py: backupkit on a hospital-shaped MariaDB database vs mariadb-dump/zstd and
zstd -d/mariadb by hand (scripts/bench/mariadb_bench.py, which also runs alone)."""

from __future__ import annotations

import mariadb_bench
from run import Bench, RowResult, row

_ratios: dict[str, list[float]] = {}


def _measure(b: Bench) -> dict[str, list[float]]:
    if not _ratios:
        _ratios.update(mariadb_bench.measure(b.scale, max(3, b.repeat), b.workdir / "mariadb"))
    return _ratios


def _row(key: str):
    def fn(b: Bench) -> RowResult:
        name, target = next((n, t) for k, n, t in mariadb_bench.ROWS if k == key)
        return RowResult(name, _measure(b)[key], target, unit="MB" if key.startswith("rss") else "x")

    fn.__name__ = f"row_mariadb_{key}"
    return row(fn)


for _key, _, _ in mariadb_bench.ROWS:
    _row(_key)
