"""Retry and rate-limit wrappers: decision logic as pure tests, throttling against a real sshd."""

from __future__ import annotations

import time

import pytest

from backupkit.config import RetryConfig
from backupkit.errors import ConfigError, JobFailed, TransientError, VerificationFailed
from backupkit.targets.base import PutResult, Target
from backupkit.targets.sftp import SftpTarget
from backupkit.targets.wrappers import RateLimitTarget, RetryTarget, TokenBucket, parse_rate, unwrap, wrap
from fixtures.sshd import make_blob


@pytest.mark.parametrize(
    "text,rate",
    [
        ("20MB/s", 20_000_000),
        ("20 MB/s", 20_000_000),
        ("512KiB/s", 524_288),
        ("1.5GB/s", 1_500_000_000),
        ("100Mbit/s", 12_500_000),
        ("100Mbps", 12_500_000),
        ("1000", 1000),
        ("64k", 64_000),
    ],
)
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "20XB/s", "", "0MB/s", "-1MB/s", "MB/s"])
def test_parse_rate_rejects(text):
    with pytest.raises(ConfigError, match="max_rate"):
        parse_rate(text)


class Flaky(Target):
    """Fails the first ``fail`` calls with ``error``, then succeeds (retry logic only; no I/O)."""

    def __init__(self, fail: int, error: Exception):
        self.name, self.fail, self.error, self.calls = "nas", fail, error, 0

    def _maybe_fail(self):
        self.calls += 1
        if self.calls <= self.fail:
            raise self.error

    def put(self, key, blob):
        self._maybe_fail()
        return PutResult(key, 1, "0" * 64, "local-rehash", 1)

    def stat(self, key):
        self._maybe_fail()
        return 1

    def sha256(self, key):
        self._maybe_fail()
        return "0" * 64, "local-rehash"

    def open_read(self, key):
        raise NotImplementedError

    def list(self, prefix=""):
        self._maybe_fail()
        return ["a"]

    def remove(self, key):
        self._maybe_fail()


def test_retry_backs_off_exponentially_then_succeeds():
    sleeps: list[float] = []
    t = RetryTarget(Flaky(3, TransientError("target nas: connection lost")), RetryConfig(attempts=5, max_time=100, initial_delay=1), sleep=sleeps.append)
    assert t.list() == ["a"]
    assert sleeps == [1, 2, 4]


def test_retry_respects_attempts_and_keeps_last_error():
    inner = Flaky(10, OSError(5, "Input/output error"))
    t = RetryTarget(inner, RetryConfig(attempts=3, max_time=100, initial_delay=0), sleep=lambda s: None)
    with pytest.raises(JobFailed, match=r"^target nas: stat of k failed after 3 attempts in \d+s: .*Input/output error"):
        t.stat("k")
    assert inner.calls == 3


def test_retry_stops_when_the_time_budget_would_be_exceeded():
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    inner = Flaky(100, TransientError("target nas: down"))
    t = RetryTarget(inner, RetryConfig(attempts=100, max_time=10, initial_delay=1), sleep=sleep, clock=lambda: now[0])
    with pytest.raises(JobFailed, match="after 4 attempts"):
        t.remove("k")
    assert sleeps == [1, 2, 4]  # 1+2+4=7; another 8 s would pass the 10 s budget


@pytest.mark.parametrize("error", [VerificationFailed("hash mismatch"), ConfigError("bad key mode"),
                                   JobFailed("target nas: root@nas refused the key")])
def test_answers_are_not_retried(error):
    inner = Flaky(1, error)
    t = RetryTarget(inner, RetryConfig(attempts=5, max_time=100, initial_delay=0), sleep=lambda s: None)
    with pytest.raises(type(error)):
        t.sha256("k")
    assert inner.calls == 1


def test_wrap_and_unwrap():
    from backupkit.config import LocalTargetConfig

    inner = Flaky(0, OSError())
    cfg = LocalTargetConfig(type="local", path="/x", max_rate="1MB/s", retry=RetryConfig(attempts=3))
    t = wrap(inner, cfg)
    assert isinstance(t, RetryTarget) and isinstance(t.inner, RateLimitTarget)
    assert unwrap(t) is inner and unwrap(t, RateLimitTarget) is t.inner and unwrap(t, SftpTarget) is None
    assert wrap(inner, LocalTargetConfig(type="local", path="/x")) is inner  # attempts=1, no rate: bare


def test_token_bucket_paces():
    now = [0.0]
    slept: list[float] = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    b = TokenBucket(1000, burst=500, clock=lambda: now[0], sleep=sleep)
    b.take(500)
    b.take(500)
    assert slept == [0.5, 0.5]
    now[0] += 10  # idle: the burst refills, but only up to 500
    b.take(500)
    assert slept == [0.5, 0.5]
    b.take(250)
    assert slept[-1] == 0.25


@pytest.mark.sftp
def test_rate_limit_holds_sftp_upload_and_download(sshd, tmp_path):
    blob = make_blob(tmp_path / "data", 200_000)
    remote = sshd.remote_dir("rate")
    with RateLimitTarget(SftpTarget("offsite", sshd.target_config(remote, verify="remote-sha256sum")), 1_000_000) as t:
        t.stat("warm-up")  # connect outside the timed part
        start = time.monotonic()
        res = t.put("k", blob)
        assert time.monotonic() - start >= 0.15
        assert res.sha256 == blob.sha256 and res.bytes_sent == blob.size
        start = time.monotonic()
        with t.open_read("k") as f:
            data = f.read(1 << 20) + f.read(1 << 20) + f.read(1 << 20) + f.read(1 << 20)
            while chunk := f.read(1 << 20):
                data += chunk
        assert time.monotonic() - start >= 0.15
        assert len(data) == blob.size
