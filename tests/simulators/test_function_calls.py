"""How a detector calls its function: never twice at once, pickled once for a cluster, and a
number too large for a float refused as a wrong output.

Found in review: after a trial timed out, the retry and the next point called the user's
function again while the timed-out call still ran (three calls in flight on one slot); a
function file holding a module-level lock failed every trial on ``executor: local`` as
``TypeError ... raised by function measure`` although the function never ran; ``10**400``
failed as ``OverflowError``, an instrument fault.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from instruments import Dispatcher, load_function
from loop.failures import UNMEASURED, failure_kind
from simulators import SimulatedFault, build_simulated_instrument
from simulators._executor import DaskExecutor, FunctionNotSendable


class Probe:
    """A function that blocks at ``x == 0.5`` until released and counts its calls in flight."""

    def __init__(self, delay: float | None = None) -> None:
        self.gate = threading.Event()
        self.delay = delay  # seconds every call takes instead of waiting at the gate
        self.calls: list[float] = []
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, inputs: dict[str, Any]) -> dict[str, float]:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.calls.append(inputs["x"])
        try:
            if self.delay is not None:
                time.sleep(self.delay)
            elif inputs["x"] == 0.5:
                assert self.gate.wait(20), "never released"
            return {"y": inputs["x"]}
        finally:
            with self._lock:
                self.active -= 1

    def wait_for_calls(self, n: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.calls) < n:
            assert time.monotonic() < deadline, self.calls
            time.sleep(0.01)


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    yield p
    p.gate.set()  # never leave a thread blocked behind the test


def _instrument(function: Any, seed: int = 1, **kwargs: Any) -> Any:
    return build_simulated_instrument(
        function, inputs={"x": (0.0, 1.0)}, outputs=["y"], seed=seed, **kwargs
    )


def _stuck(inst: Any, probe: Probe) -> None:
    """Trigger at x = 0.5 (the call blocks) and stop it, as a trial's timeout does."""
    first = inst.detector.trigger()
    probe.wait_for_calls(1)
    inst.detector.stop()
    assert first.done and not first.success


def test_a_trigger_after_a_stopped_one_waits_for_its_function_to_return(
    probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    inst = _instrument(probe, latency=0.01)
    try:
        _stuck(inst, probe)
        inst.inputs["x"].set(0.25)
        second = inst.detector.trigger()
        time.sleep(0.3)
        assert not second.done and probe.calls == [0.5], "the function was entered twice"
        assert "is still running for a trial stopped" in caplog.text
        assert "function is never called twice at once" in caplog.text
        probe.gate.set()
        second.wait(5)
        assert second.success
        assert probe.calls == [0.5, 0.25] and probe.peak == 1
        assert inst.detector.read()["y"]["value"] == 0.25  # its own inputs, not the stopped
    finally:
        inst.close()


def test_the_next_session_in_this_process_waits_for_a_call_left_running(probe: Probe) -> None:
    """An interrupted notebook cell, then a resume in the same kernel: the new session's
    detector (built anew, the same function and slot seed) entered the function while the
    stopped session's call still ran (found in review, session 39)."""
    old = _instrument(probe, latency=0.01)
    _stuck(old, probe)
    old.close()  # the interrupted session ends; its call runs on
    new = _instrument(probe, latency=0.01)
    try:
        new.inputs["x"].set(0.25)
        second = new.detector.trigger()
        time.sleep(0.3)
        assert not second.done and probe.calls == [0.5], "the function was entered twice"
        probe.gate.set()
        second.wait(5)
        assert second.success and probe.calls == [0.5, 0.25] and probe.peak == 1
    finally:
        new.close()


def test_slots_with_their_own_seeds_call_one_function_at_once() -> None:
    """The guard is per slot (its seed), not per function: a campaign's slots measure at
    once, as they should."""
    probe = Probe(delay=0.5)
    slots = [_instrument(probe, seed=seed, latency=0.01) for seed in (1, 2)]
    try:
        for status in [inst.detector.trigger() for inst in slots]:
            status.wait(5)
        assert probe.peak == 2
    finally:
        for inst in slots:
            inst.close()


def test_a_trigger_stopped_while_it_waits_never_calls_the_function(probe: Probe) -> None:
    inst = _instrument(probe, latency=0.01)
    try:
        _stuck(inst, probe)
        inst.inputs["x"].set(0.25)
        waiting = inst.detector.trigger()
        time.sleep(0.1)
        inst.detector.stop()
        exc = waiting.exception()
        assert isinstance(exc, SimulatedFault)
        assert "stopped before completion, while waiting for function Probe" in str(exc)
        assert "still running from trigger #1" in str(exc) and "so it was not called" in str(exc)
        inst.inputs["x"].set(0.75)
        third = inst.detector.trigger()
        probe.gate.set()
        third.wait(5)
        assert third.success and probe.calls == [0.5, 0.75] and probe.peak == 1
    finally:
        inst.close()


def test_a_script_s_trigger_returns_at_once_while_a_stopped_call_runs(probe: Probe) -> None:
    """At latency 0 outside an event loop the function runs in the caller's thread; behind
    a stopped call, the wait is a thread's, not the caller's."""
    inst = _instrument(probe)  # latency 0
    try:
        blocked = threading.Thread(target=inst.detector.trigger, daemon=True)
        blocked.start()  # computes in this thread, which blocks at the gate
        probe.wait_for_calls(1)
        inst.detector.stop()
        inst.inputs["x"].set(0.25)
        # trigger() returns while the stopped call still holds the gate: had it waited for
        # that call, the thread would still be waiting (the gate opens only below)
        triggered: list[Any] = []
        caller = threading.Thread(target=lambda: triggered.append(inst.detector.trigger()))
        caller.start()
        caller.join(timeout=30)
        assert not caller.is_alive() and not probe.gate.is_set()
        (second,) = triggered
        assert not second.done
        probe.gate.set()
        second.wait(5)
        assert second.success and probe.peak == 1
        blocked.join(5)
    finally:
        inst.close()


def test_each_slot_s_detector_waits_only_for_its_own_function_call(probe: Probe) -> None:
    """``count: 2``: two instruments (as the runner builds one per slot, each with a seed
    of its own) of one function."""
    stuck, other = _instrument(probe, latency=0.01), _instrument(probe, seed=2, latency=0.01)
    try:
        _stuck(stuck, probe)
        other.inputs["x"].set(0.25)
        assert other.detector.trigger().wait(5) is None  # not held by the other slot's call
        stuck.inputs["x"].set(0.25)
        held = stuck.detector.trigger()
        time.sleep(0.2)
        assert not held.done
        probe.gate.set()
        held.wait(5)
        assert held.success and probe.calls == [0.5, 0.25, 0.25]
    finally:
        stuck.close()
        other.close()


def test_through_the_run_engine_a_timed_out_call_is_never_joined_by_the_next(
    probe: Probe,
) -> None:
    """The review's case: timeout shorter than the function, trials back to back. The call
    lasts 2 s: with 0.8 s, under a load of 4 on 2 cores the first trial's abort and the
    retry's start took longer than the call, and the retry called the function itself."""
    probe.delay = 2.0
    inst = _instrument(probe)
    try:
        with Dispatcher(inst) as dispatcher:
            first = dispatcher.run(1, "c", {"x": 0.2}, timeout=0.3)
            retry = dispatcher.run(2, "c", {"x": 0.2}, timeout=0.3)  # waits, times out
            time.sleep(2.2)  # the first call has returned
            later = dispatcher.run(3, "c", {"x": 0.4}, timeout=3)
        assert first.timed_out and retry.timed_out, (first.error, retry.error)
        # the retry never measured: said, and read as such (not as its point's timeout,
        # which the planner learned as a failing point on a retry: found in review)
        assert (first.error or "").startswith("timed out after 0.3 s"), first.error
        assert (retry.error or "").startswith(
            "not measured: function Probe was still running the call of a trial stopped "
        ), retry.error
        assert "so this trial never called it; timed out after 0.3 s" in (retry.error or "")
        assert failure_kind(retry.error) == UNMEASURED
        assert failure_kind(first.error) == "timeout"
        assert later.ok and later.outputs["y"] == pytest.approx(0.4), later.error
        assert probe.peak == 1
        assert probe.calls == [0.2, 0.4]  # the retry was stopped while it waited
    finally:
        inst.close()


def test_a_stopped_executor_trial_does_not_hold_the_next_one() -> None:
    """On an executor the function runs elsewhere (a Dask abort ends its worker): the next
    trigger is submitted at once, nothing waits in this process."""
    release = threading.Event()
    submitted: list[float] = []

    def slow(inputs: dict[str, Any]) -> dict[str, float]:
        submitted.append(inputs["x"])
        release.wait(10)
        return {"y": inputs["x"]}

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        inst = _instrument(slow, executor=pool)
        try:
            first = inst.detector.trigger()
            inst.detector.stop()
            assert first.done and not first.success
            inst.inputs["x"].set(0.25)
            second = inst.detector.trigger()
            deadline = time.monotonic() + 5
            while len(submitted) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert submitted == [0.5, 0.25]  # both in flight on the pool at once
            release.set()
            second.wait(5)
            assert second.success
        finally:
            release.set()
            inst.close()


# ---------------------------------------------------------------------------- pickling
LOCKED = """\
import threading

LOCK = threading.Lock()
CALLS = [0]


def measure(inputs):
    with LOCK:
        CALLS[0] += 1
    return {"y": inputs["x"]}


def helper():
    with LOCK:
        return 1.0


def indirect(inputs):
    return {"y": helper()}


def fine(inputs):
    return {"y": inputs["x"] + CALLS[0]}
"""


def _executor() -> DaskExecutor:
    """A DaskExecutor on a stand-in client: pickling needs no cluster."""
    client = types.SimpleNamespace(scheduler=types.SimpleNamespace(address="tcp://127.0.0.1:1"))
    return DaskExecutor(client, None, "local")


def test_a_function_that_cannot_be_pickled_is_refused_when_the_detector_is_built(
    tmp_path: Path,
) -> None:
    (tmp_path / "inst.py").write_text(LOCKED)
    measure = load_function("inst.py:measure", base_dir=tmp_path)
    with pytest.raises(FunctionNotSendable) as info:
        _instrument(measure, executor=_executor())
    message = str(info.value)
    assert info.value.function is measure
    assert message.startswith(
        "function measure (inst.py) cannot be sent to the Dask cluster (executor: local): "
        "TypeError: cannot pickle '_thread.lock' object, from its module-level LOCK (a lock)"
    ), message
    assert "create them inside the function" in message
    assert "`executor: {kind: inprocess}`" in message
    assert isinstance(info.value, ValueError)  # a configuration error, not a fault


def test_the_culprit_is_named_through_a_helper_and_a_usable_function_is_pickled_once(
    tmp_path: Path,
) -> None:
    (tmp_path / "inst.py").write_text(LOCKED)
    executor = _executor()
    with pytest.raises(FunctionNotSendable, match=r"LOCK \(a lock, used by helper\)"):
        executor.prepare(load_function("inst.py:indirect", base_dir=tmp_path))
    fine = load_function("inst.py:fine", base_dir=tmp_path)
    executor.prepare(fine)
    executor.prepare(fine)
    assert list(executor._blobs) == [id(fine)]


def test_the_function_is_pickled_before_the_first_trigger(tmp_path: Path) -> None:
    executor = _executor()
    pickled: list[Any] = []
    original = executor._blob

    def spy(function: Any) -> bytes:
        pickled.append(function)
        return original(function)

    executor._blob = spy  # type: ignore[method-assign]
    inst = _instrument(lambda d: {"y": 1.0}, executor=executor)
    assert len(pickled) == 1  # at build time, no trigger yet
    inst.close()


# ---------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["huge", "minus-huge"])
def test_a_number_too_large_for_a_float_is_a_wrong_output(value: int) -> None:
    """Was: ``trigger #11 failed: OverflowError``, counted as an instrument failure."""
    inst = build_simulated_instrument(
        lambda d: {"y": value}, inputs={"x": (0, 1)}, outputs=("y",), name="det"
    )
    exc = inst.detector.trigger().exception()
    inst.close()
    assert isinstance(exc, SimulatedFault) and not exc.injected and not exc.transient
    text = str(exc)
    assert "returned a non-numeric output: y = " in text, text
    assert "is too large for a float (at most 1.798e+308)" in text, text
    assert "OverflowError" not in text


def test_a_detector_on_an_executor_never_waits_for_an_in_process_call(probe: Probe) -> None:
    """A session moved to an executor after an in-process one left a call running: its trial
    ran (on the executor), and its abort had taken the left-over call for one it waited for,
    storing "not measured ... never called it" (found in review, session 39)."""
    old = _instrument(probe, latency=0.01)
    _stuck(old, probe)
    old.close()  # the in-process call runs on
    probe.delay = 1.0  # the executor's call of the same function takes a while
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        moved = _instrument(probe, latency=0.01, executor=pool)
        try:
            status = moved.detector.trigger()
            time.sleep(0.2)
            moved.detector.stop()  # its trial timed out while the executor ran it
            assert "waiting for" not in str(status.exception())
            assert moved.detector.unstarted() is None
        finally:
            moved.close()
            probe.gate.set()
