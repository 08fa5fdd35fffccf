"""actions/lifecycle.ScratchLifecycle: provision and teardown are timed steps, and the scratch is torn
down whatever ends the block (an error, Ctrl-C, a real SIGTERM under ``interruptible``); a failed
provision tears nothing down. The scratch is a real generator context manager, as engines write them."""

import contextlib
import os
import signal
import time
from types import SimpleNamespace

import pytest

from backupkit.actions.lifecycle import ScratchLifecycle, Timeline, interruptible
from backupkit.errors import Interrupted, JobFailed


def scratch_cm(events: list, *, fail_provision=False, fail_teardown=False):
    @contextlib.contextmanager
    def cm():
        events.append("provision")
        if fail_provision:
            raise JobFailed("initdb failed")
        s = SimpleNamespace(teardown_proof=None)
        try:
            yield s
        finally:
            events.append("teardown")
            if fail_teardown:
                raise JobFailed("pg_ctl stop failed")
            s.teardown_proof = {"datadir_exists": False}
    return cm()


def steps(tl):
    return [(s["step"], s["status"]) for s in tl.steps]


def test_a_normal_block_times_provision_and_teardown():
    events, tl = [], Timeline()
    life = ScratchLifecycle(scratch_cm(events), tl)
    with life as scratch:
        assert events == ["provision"] and life.torn_down is False
        tl.run("restore", lambda: None)
    assert events == ["provision", "teardown"]
    assert steps(tl) == [("provision", "ok"), ("restore", "ok"), ("teardown", "ok")]
    assert "started" in tl.steps[-1]  # a timed step, not an added one
    assert life.torn_down is True and life.proof == {"datadir_exists": False} and scratch.teardown_proof == life.proof
    assert tl.failed_step() is None


@pytest.mark.parametrize("exc", [JobFailed("restore failed"), KeyboardInterrupt(), Interrupted(signal.SIGTERM)])
def test_whatever_ends_the_block_the_scratch_is_torn_down_and_the_exception_goes_on(exc):
    events, tl = [], Timeline()
    life = ScratchLifecycle(scratch_cm(events), tl)
    with pytest.raises(type(exc)):
        with life:
            tl.run("restore", _raise, exc)
    assert events == ["provision", "teardown"]
    assert steps(tl) == [("provision", "ok"), ("restore", "failed"), ("teardown", "ok")]
    assert tl.steps[-1]["detail"] == "" and "started" not in tl.steps[-1]
    assert life.torn_down is True and life.proof == {"datadir_exists": False}
    assert tl.failed_step() == "restore"


def test_a_failed_provision_tears_nothing_down():
    events, tl = [], Timeline()
    life = ScratchLifecycle(scratch_cm(events, fail_provision=True), tl)
    with pytest.raises(JobFailed, match="initdb failed"):
        with life:
            raise AssertionError("never entered")
    assert events == ["provision"] and steps(tl) == [("provision", "failed")]
    assert life.torn_down is False and life.proof is None and tl.failed_step() == "provision"


def test_a_failing_teardown_is_a_failed_step_and_raises():
    events, tl = [], Timeline()
    life = ScratchLifecycle(scratch_cm(events, fail_teardown=True), tl)
    with pytest.raises(JobFailed, match="pg_ctl stop failed"):
        with life:
            pass
    assert steps(tl) == [("provision", "ok"), ("teardown", "failed")] and life.torn_down is False


def test_a_real_sigterm_under_interruptible_tears_down_once():
    events, tl = [], Timeline()
    life = ScratchLifecycle(scratch_cm(events), tl)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as e:
        with interruptible() as received, life:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal interrupts this
            raise AssertionError("SIGTERM did not interrupt the block")
    assert e.value.signum == signal.SIGTERM and received == [signal.SIGTERM]
    assert events == ["provision", "teardown"] and life.torn_down is True
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


def _raise(exc):
    raise exc
