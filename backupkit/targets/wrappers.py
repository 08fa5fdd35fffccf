"""Behaviour every target needs, as wrappers that compose around any Target
(after restic's RetryBackend / limiter): retries with exponential backoff, and
a bandwidth limit. ``wrap`` applies them per a target's config; ``unwrap``
finds the target inside (restic's AsBackend).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from ..config import RetryConfig
from ..errors import ConfigError, JobFailed, TransientError
from .base import Blob, PutResult, Target

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TargetWrapper(Target):
    """Delegates everything to ``inner``; subclasses override what they change."""

    def __init__(self, inner: Target):
        self.inner = inner
        self.name = inner.name

    def put(self, key: str, blob: Blob) -> PutResult:
        return self.inner.put(key, blob)

    def stat(self, key: str) -> int | None:
        return self.inner.stat(key)

    def sha256(self, key: str) -> tuple[str, str]:
        return self.inner.sha256(key)

    def open_read(self, key: str) -> BinaryIO:
        return self.inner.open_read(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def remove(self, key: str) -> None:
        self.inner.remove(key)

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()


# ---- retries ------------------------------------------------------------------------


class RetryTarget(TargetWrapper):
    """Retries failed operations with exponential backoff, within ``attempts`` and ``max_time``.

    Every Target method is idempotent by contract, so a TransientError (lost
    connection, unreachable host) or OSError is retried (the SFTP target
    reconnects and resumes its .partial upload). Everything else is an answer,
    not an accident (a refused key, permission denied, a full disk, a bad hash,
    a changed host key) and is raised at once. When the budget is spent, the last error is raised as
    JobFailed naming the target and the number of attempts.
    """

    def __init__(
        self,
        inner: Target,
        cfg: RetryConfig,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(inner)
        self.cfg = cfg
        self._sleep = sleep
        self._clock = clock

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        start = self._clock()
        delay = self.cfg.initial_delay
        last: BaseException | None = None
        attempt = 0
        for attempt in range(1, self.cfg.attempts + 1):
            if attempt > 1:
                logger.info("target %s: %s: attempt %d of %d", self.name, op, attempt, self.cfg.attempts)
            try:
                return fn()
            except (TransientError, OSError) as e:
                last = e
            # anything else (refused key, permission denied, disk full, bad hash, bad config) will
            # not pass by itself within the retry budget: it propagates at once
            why = _without_name(str(last), self.name)
            elapsed = self._clock() - start
            if attempt == self.cfg.attempts:
                logger.warning("target %s: %s: attempt %d of %d failed: %s", self.name, op, attempt, self.cfg.attempts, why)
                break
            if elapsed + delay > self.cfg.max_time:
                logger.warning(
                    "target %s: %s: attempt %d failed: %s; not retrying, the %.0fs retry budget would be exceeded",
                    self.name, op, attempt, why, self.cfg.max_time,
                )
                break
            logger.warning(
                "target %s: %s: attempt %d of %d failed: %s; retrying in %.1fs",
                self.name, op, attempt, self.cfg.attempts, why, delay,
            )
            self._sleep(delay)
            delay = delay * 2 if delay > 0 else 0.0
        elapsed = self._clock() - start
        detail = _without_name(str(last), self.name)
        plural = "s" if attempt != 1 else ""
        raise JobFailed(f"target {self.name}: {op} failed after {attempt} attempt{plural} in {elapsed:.0f}s: {detail}") from last

    def put(self, key: str, blob: Blob) -> PutResult:
        return self._call(f"upload of {key}", lambda: self.inner.put(key, blob))

    def stat(self, key: str) -> int | None:
        return self._call(f"stat of {key}", lambda: self.inner.stat(key))

    def sha256(self, key: str) -> tuple[str, str]:
        return self._call(f"hashing {key}", lambda: self.inner.sha256(key))

    def open_read(self, key: str) -> BinaryIO:
        return self._call(f"opening {key}", lambda: self.inner.open_read(key))

    def list(self, prefix: str = "") -> list[str]:
        return self._call(f"listing {prefix or '/'}", lambda: self.inner.list(prefix))

    def remove(self, key: str) -> None:
        self._call(f"removing {key}", lambda: self.inner.remove(key))


def _without_name(message: str, name: str) -> str:
    prefix = f"target {name}: "
    return message[len(prefix):] if message.startswith(prefix) else message


# ---- bandwidth ----------------------------------------------------------------------

_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
    "k": 10**3, "m": 10**6, "g": 10**9,
    "bit": 1 / 8, "kbit": 10**3 / 8, "mbit": 10**6 / 8, "gbit": 10**9 / 8,
    "bps": 1 / 8, "kbps": 10**3 / 8, "mbps": 10**6 / 8, "gbps": 10**9 / 8,
}  # fmt: skip
_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*(?:/\s*s)?\s*$", re.IGNORECASE)


def parse_rate(text: str) -> int:
    """Bytes per second from ``"20MB/s"``, ``"512KiB/s"``, ``"100Mbit/s"``, ``"100Mbps"`` or a bare number of bytes."""
    m = _RATE.match(str(text))
    unit = (m.group(2) if m else "").lower() or "b"
    if not m or unit not in _UNITS:
        raise ConfigError(f"max_rate {text!r} is not a rate; write e.g. 20MB/s, 512KiB/s or 100Mbit/s")
    rate = int(float(m.group(1)) * _UNITS[unit])
    if rate <= 0:
        raise ConfigError(f"max_rate {text!r} must be more than 0 bytes per second")
    return rate


class TokenBucket:
    """``take(n)`` blocks until n bytes fit in ``rate`` bytes/s (bursts up to ``burst``).

    Starts empty so even a short transfer is held to the rate. Shared by all
    streams of one target so parallel transfers share the limit.
    """

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic, sleep=time.sleep):
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 20, 16384))  # 50 ms of traffic
        self._clock, self._sleep = clock, sleep
        self._tokens = 0.0
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class ThrottledReader:
    """A read-only stream that takes tokens for every byte it returns."""

    def __init__(self, raw: BinaryIO, bucket: TokenBucket, max_read: int):
        self._raw, self._bucket, self._max = raw, bucket, max_read

    def read(self, n: int = -1) -> bytes:
        n = self._max if n is None or n < 0 else min(n, self._max)
        data = self._raw.read(n)
        if data:
            self._bucket.take(len(data))
        return data

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RateLimitTarget(TargetWrapper):
    """Holds uploads (through ``Blob.opener``) and downloads (``open_read``) to ``bytes_per_sec``."""

    def __init__(self, inner: Target, bytes_per_sec: int):
        super().__init__(inner)
        self.bytes_per_sec = int(bytes_per_sec)
        self.bucket = TokenBucket(self.bytes_per_sec)
        # Small reads keep the pace smooth instead of 1 MiB bursts and long sleeps.
        self._max_read = max(16384, min(1 << 20, self.bytes_per_sec // 20))

    def _throttle(self, raw: BinaryIO) -> BinaryIO:
        return ThrottledReader(raw, self.bucket, self._max_read)  # type: ignore[return-value]

    def put(self, key: str, blob: Blob) -> PutResult:
        def opener(path: Path, offset: int) -> BinaryIO:
            return self._throttle(blob.open(offset))

        return self.inner.put(key, replace(blob, opener=opener))

    def open_read(self, key: str) -> BinaryIO:
        return self._throttle(self.inner.open_read(key))


# ---- composition --------------------------------------------------------------------


def wrap(target: Target, cfg) -> Target:
    """Apply the wrappers ``cfg`` asks for: bandwidth limit inside, retries outside
    (each retry is rate-limited too)."""
    rate = getattr(cfg, "max_rate", None)
    if rate:
        target = RateLimitTarget(target, parse_rate(rate))
    retry = getattr(cfg, "retry", None)
    if retry is not None and retry.attempts > 1:
        target = RetryTarget(target, retry)
    return target


W = TypeVar("W", bound=Target)


def unwrap(target: Target, kind: type[W] | None = None) -> W | Target | None:
    """The innermost target (``kind=None``), or the first layer that is a ``kind``, or None."""
    t: Target | None = target
    while t is not None:
        if kind is not None and isinstance(t, kind):
            return t
        inner = getattr(t, "inner", None)
        if inner is None:
            return t if kind is None else None
        t = inner
    return None
