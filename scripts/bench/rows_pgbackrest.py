"""Physical-mode rows for run.py: backupkit on pgBackRest vs pgBackRest alone (scripts/bench/pgbackrest_bench.py)."""

from __future__ import annotations

import pgbackrest_bench
from run import Bench, RowResult, row

_ratios: dict[str, list[float]] = {}


def _measure(b: Bench) -> dict[str, list[float]]:
    if not _ratios:
        _ratios.update(pgbackrest_bench.measure(int(200_000 * b.scale), max(3, b.repeat)))
    return _ratios


@row
def row_pgbackrest_backup(b: Bench) -> RowResult:
    key, name, target = pgbackrest_bench.ROWS[0]
    return RowResult(name, _measure(b)[key], f"<= {target}")


@row
def row_pgbackrest_drill(b: Bench) -> RowResult:
    key, name, target = pgbackrest_bench.ROWS[1]
    return RowResult(name, _measure(b)[key], f"<= {target}")
