"""Logging: human lines on stderr (rich on a TTY), optional JSON lines to a file.

Nothing here ever formats secrets: callers never pass them in the first place.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path


class JsonLines(logging.Handler):
    def __init__(self, path: Path):
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        self.f.write(json.dumps({"time": datetime.now(timezone.utc).isoformat(), "level": record.levelname,
                                 "logger": record.name, "message": record.getMessage()}, ensure_ascii=False) + "\n")
        self.f.flush()


def setup(verbose: bool = False, json_file: Path | None = None) -> None:
    root = logging.getLogger("backupkit")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.handlers.clear()
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        h: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        h.setFormatter(logging.Formatter("%(message)s"))
    else:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("backupkit: %(levelname)s %(message)s"))
    h.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.addHandler(h)
    if json_file is not None:
        jh = JsonLines(json_file)
        jh.setLevel(logging.DEBUG)
        root.addHandler(jh)
    root.propagate = False
