"""Logging: human lines on stderr (rich on a TTY), optional JSON lines to a file.

Callers should never pass secrets in the first place; as a second line of
defence every handler set up here carries a ``RedactFilter`` that masks URL
credentials, webhook tokens and ``password=...`` values (backupkit.redact) in
the message, its arguments and any traceback before anything is written.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from .redact import redact_text


class RedactFilter(logging.Filter):
    """Replace a record's message by its redacted, formatted form (args folded in), and redact tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: log the pieces rather than lose the line
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact_text(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


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
    for old in list(root.handlers):  # a second setup (the config's log_file after --log-json) closes the first
        root.removeHandler(old)
        old.close()
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        h: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        h.setFormatter(logging.Formatter("%(message)s"))
    else:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("backupkit: %(levelname)s %(message)s"))
    h.setLevel(logging.DEBUG if verbose else logging.WARNING)
    h.addFilter(RedactFilter())
    root.addHandler(h)
    if json_file is not None:
        jh = JsonLines(json_file)
        jh.setLevel(logging.DEBUG)
        jh.addFilter(RedactFilter())
        root.addHandler(jh)
    root.propagate = False
