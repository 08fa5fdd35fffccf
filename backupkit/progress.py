"""Progress display: rich bars on an interactive terminal, silence otherwise
(cron mail and log files get the plain result lines the CLI prints)."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

_enabled = False


def enable_if_tty() -> None:
    global _enabled
    _enabled = sys.stderr.isatty()


@contextlib.contextmanager
def task(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n_bytes)``; shows a transfer bar while the block runs on a TTY."""
    if not _enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, \
        TransferSpeedColumn

    # with a known total: a bar with done/total; without one (a dump's size is unknown): a spinner with what
    # has passed so far and the elapsed time, never "0/? bytes ?"
    columns = ([BarColumn(), DownloadColumn(), TransferSpeedColumn()] if total else
               [TextColumn("{task.completed:,.0f} bytes so far")])
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), *columns, TimeElapsedColumn(),
                  transient=True, console=None) as p:
        t = p.add_task(description, total=total)
        yield lambda n: p.advance(t, n)
