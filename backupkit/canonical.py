"""Canonical JSON, the byte form everything is signed and hashed over:
sorted keys, no insignificant whitespace, UTF-8 (not ASCII-escaped)."""

from __future__ import annotations

import json
from typing import Any


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
