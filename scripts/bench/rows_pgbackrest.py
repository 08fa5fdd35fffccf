"""Physical-mode rows for run.py: backupkit on pgBackRest vs pgBackRest alone (scripts/bench/pgbackrest_bench.py)."""

from __future__ import annotations

import pgbackrest_bench
from run import Bench, RowResult, row

_ratios: dict[str, list[float]] = {}


def _measure(b: Bench) -> dict[str, list[float]]:
    if not _ratios:
        _ratios.update(pgbackrest_bench.measure(int(200_000 * b.scale), max(3, b.repeat)))
    return _ratios


def _row(i: int, b: Bench) -> RowResult:
    key, name, target = pgbackrest_bench.ROWS[i]
    return RowResult(name, _measure(b)[key], f"<= {target}" if target is not None else "")


@row
def row_pgbackrest_backup(b: Bench) -> RowResult:
    return _row(0, b)


@row
def row_pgbackrest_size(b: Bench) -> RowResult:
    return _row(1, b)


@row
def row_pgbackrest_drill(b: Bench) -> RowResult:
    return _row(2, b)


@row
def row_pgbackrest_drill_vs_logical(b: Bench) -> RowResult:
    return _row(3, b)
