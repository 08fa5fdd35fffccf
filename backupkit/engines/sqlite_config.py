"""The typed policy ``source`` of engine sqlite: the database file. Imports no driver."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from .source_config import SourceModel


class SqliteSource(SourceModel):
    """``source`` for ``engine: sqlite``: the file backed up through SQLite's online backup API."""

    engine: ClassVar[str] = "sqlite"
    required_hints: ClassVar[dict[str, str]] = {
        "path": "is required for engine sqlite: the database file to back up (relative paths are relative to the "
                "policy file)"}

    path: Path
