"""The Dispatcher against faulty instruments: timeouts, NaN/inf, out-of-range readbacks."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest
from instrument_doubles import Actuator, Detector, FakeInstrument
from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, Signal

from instruments import Dispatcher, input_specs, is_transient, readback_problems
from instruments._epics import build_declared_instrument
from instruments._instrument_file import parse_instrument
from simulators import SimulatedFault, build_simulated_instrument
from simulators._keys import SAID_TRANSIENT


def _branin_like(inputs: dict[str, Any]) -> dict[str, float]:
    return {"y": inputs["x1"] + inputs["x2"]}


def _instrument(**kwargs: Any) -> Any:
    return build_simulated_instrument(
        _branin_like,
        inputs={"x1": (-5.0, 10.0), "x2": (0.0, 15.0)},
        outputs=("y",),
        seed=1,
        **kwargs,
    )


POINT = {"x1": 1.0, "x2": 2.0}
LIMITS = {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}


def test_a_hung_run_times_out_and_the_next_trial_runs() -> None:
    inst = _instrument(hang_rate=1.0)
    with Dispatcher(inst) as dispatcher:
        result = dispatcher.run(1, "c", POINT, timeout=0.3)
        assert result.exit_status == "fail"
        assert result.timed_out and result.transient
        assert result.error is not None and result.error.startswith("timed out after 0.3 s")
        names = [name for name, _ in result.documents]
        assert names[0] == "start" and names[-1] == "stop"
        assert result.documents[-1][1]["exit_status"] == "abort"
        assert result.outputs == {}
        # The hung detector was stopped: the next trigger is not refused as busy.
        inst.detector._sim_hang_rate = 0.0
        ok = dispatcher.run(2, "c", POINT, timeout=30)
        assert ok.ok and not ok.timed_out and not ok.transient
        assert ok.outputs == {"y": 3.0}
    inst.close()


def test_timeout_must_be_positive() -> None:
    inst = _instrument()
    with Dispatcher(inst) as dispatcher, pytest.raises(ValueError, match="timeout"):
        dispatcher.run(1, "c", POINT, timeout=0)
    inst.close()


def test_non_finite_outputs_fail_and_are_kept() -> None:
    inst = _instrument(nan_rate=1.0, readback_out_of_range_rate=1.0)
    with Dispatcher(inst, readback_limits=LIMITS, readback_tolerance=0.01) as dispatcher:
        result = dispatcher.run(1, "c", POINT)
    # a function's NaN is the point's, even beside a readback out of range: not transient
    assert result.exit_status == "fail" and not result.transient
    assert "lies outside the campaign's bounds" in (result.error or "")
    assert "output 'y' is not finite" in (result.error or "")
    assert not math.isfinite(result.outputs["y"])  # kept for the store
    stop = result.documents[-1][1]  # closed by the plan's own verdict, the event kept
    assert (stop["exit_status"], stop["reason"]) == ("fail", result.error)
    assert [n for n, _ in result.documents] == ["start", "descriptor", "event", "stop"]
    inst.close()


def test_out_of_range_readback_fails_the_trial_as_transient() -> None:
    """The device did not get where the point sent it: the instrument's condition, so the
    failure is transient (retried; its first attempt not learned as the point's)."""
    inst = _instrument(readback_out_of_range_rate=1.0)
    with Dispatcher(inst, readback_limits=LIMITS, readback_tolerance=0.01) as dispatcher:
        result = dispatcher.run(1, "c", POINT)
    assert result.exit_status == "fail" and result.transient
    assert "lies outside the campaign's bounds" in (result.error or "")
    assert set(result.readbacks) == {"x1", "x2"}  # kept for the store
    assert not all(lo <= result.readbacks[k] <= hi for k, (lo, hi) in LIMITS.items())
    assert set(result.outputs) == {"y"}  # what was read is kept with the failed trial
    # The stop document says so too (it said "success", and a catalog counted the run as a
    # good one: found in review).
    stop = result.documents[-1][1]
    assert (stop["exit_status"], stop["reason"]) == ("fail", result.error)
    inst.close()


def test_without_limits_the_dispatcher_does_not_judge_readbacks() -> None:
    inst = _instrument(readback_out_of_range_rate=1.0)
    with Dispatcher(inst) as dispatcher:
        assert dispatcher.run(1, "c", POINT).ok
    inst.close()


def test_injected_fault_is_transient_failing_region_is_not() -> None:
    flaky = _instrument(failure_rate=1.0)
    region = _instrument(failing_region="x1 + x2 > 0")
    with Dispatcher(flaky) as d1, Dispatcher(region) as d2:
        first, second = d1.run(1, "c", POINT), d2.run(1, "c", POINT)
    assert first.exit_status == second.exit_status == "fail"
    assert first.transient and not first.timed_out
    assert not second.transient
    assert "failing region" in (second.error or "")
    # The message says each thing once (FailedStatus quotes the device's own error).
    assert (second.error or "").count("failing region") == 1
    flaky.close()
    region.close()


class _PumpStalled(RuntimeError):
    transient = True  # the function's own word: its instrument's fault, not the point's


class _RobotOffline(ConnectionError):
    transient = True


class _Flagged(ValueError):
    transient = "yes"  # not a bool: not a flag


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_PumpStalled("pump stalled"), True),
        (_RobotOffline("no answer from the robot"), True),
        # by type alone a function's failure is its point's (a solver's TimeoutError recurs
        # there; tests/simulators/test_executor.py)
        (TimeoutError("solver gave up"), False),
        (ConnectionError("licence server down"), False),
        (_Flagged("negative flow"), False),
    ],
)
def test_a_function_s_exception_says_whether_its_failure_is_transient(
    exc: Exception, transient: bool
) -> None:
    """A ``function:`` instrument that drives real hardware knows a stalled pump from a bad
    point: its exception's ``transient = True`` is retried (``max_retries``). Before, every
    failure of a function counted as its point's, with no way to say otherwise."""

    def measure(inputs: dict[str, Any]) -> dict[str, float]:
        raise exc

    inst = build_simulated_instrument(
        measure, inputs={"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}, outputs=("y",), seed=1
    )
    with Dispatcher(inst) as dispatcher:
        result = dispatcher.run(1, "c", POINT)
    inst.close()
    assert result.exit_status == "fail"
    assert result.transient is transient
    assert (result.error or "").startswith(f"{type(exc).__name__}: {exc}; raised by function")
    # said in the text too, which is all a crash's resume reconciles from
    assert (result.error or "").endswith(SAID_TRANSIENT) is transient


def test_readback_problems() -> None:
    assert readback_problems({"x1": 10.1}, {"x1": (0.0, 10.0)}, tolerance=0.01) == []
    assert readback_problems({"x1": 10.2}, {"x1": (0.0, 10.0)}, tolerance=0.01) == [
        "readback x1 = 10.2 lies outside the campaign's bounds [0, 10] for it"
    ]
    assert "not finite" in readback_problems({"x1": math.nan}, {"x1": (0, 1)})[0]
    assert "not a number" in readback_problems({"x1": None}, {"x1": (0, 1)})[0]
    # only limited inputs are judged: a choice's readback is not
    assert readback_problems({"c": "a", "x1": 0.5}, {"x1": (0, 1)}) == []


def test_a_missing_readback_of_a_limited_input_is_a_problem() -> None:
    assert readback_problems({"c": "a"}, {"x1": (0, 1)}) == [
        "readback x1 is not in the run's event, so it cannot be checked against its declared "
        "limits [0, 1] (the input's reading must be keyed 'x1' or by its device's name)"
    ]


def test_readback_limits_allow_float_rounding_even_when_zero_wide() -> None:
    fixed = {"f": (0.2, 0.2)}  # a `type: fixed` parameter
    assert readback_problems({"f": 0.19999999999999998}, fixed) == []
    assert readback_problems({"f": 0.2001}, fixed) != []
    # readback_tolerance is a fraction of the span, of |v| when there is none
    assert readback_problems({"f": 0.2019}, fixed, tolerance=0.01) == []
    assert readback_problems({"f": 0.2021}, fixed, tolerance=0.01) != []
    assert readback_problems({"z": 1e-15}, {"z": (0.0, 0.0)}) == []
    assert readback_problems({"z": 1e-6}, {"z": (0.0, 0.0)}) != []
    assert readback_problems({"x": 10 + 1e-12}, {"x": (0.0, 10.0)}) == []


class _RunawayStage(Device):
    """An input whose reading is keyed ``x_user_readback``, not ``x``; it overshoots by 50."""

    user_readback = Cpt(Signal, value=0.0, kind="hinted")

    def set(self, value: float) -> DeviceStatus:
        self.user_readback.put(value + 50.0)
        status = DeviceStatus(self)
        status.set_finished()
        return status


def test_a_readback_missing_from_the_event_fails_the_trial() -> None:
    det = Detector("det", lambda: {"y": 1.0})
    inst = FakeInstrument("i", {"x": _RunawayStage(name="x")}, [det])
    with Dispatcher(inst, readback_limits={"x": (0.0, 1.0)}) as dispatcher:
        result = dispatcher.run(1, "c", {"x": 0.5})
    assert result.exit_status == "fail" and result.readbacks == {}
    assert result.error is not None
    assert result.error.startswith("readback x is not in the run's event")
    assert result.error.endswith("(event data keys: ['x_user_readback', 'y'])")
    stop = result.documents[-1][1]
    assert (stop["exit_status"], stop["reason"]) == ("fail", result.error)


def test_a_fixed_parameter_passes_when_its_readback_differs_by_rounding() -> None:
    # 0.2 mL/min is sent as 3.333... uL/s and reads back as 0.19999999999999998 mL/min
    spec = parse_instrument(
        {
            "name": "pump",
            "inputs": {
                "flow": {
                    "device": "ophyd:Signal",
                    "args": {"value": 3.0},
                    "units": "mL/min",
                    "device_units": "uL/s",
                    "limits": [0.1, 5],
                }
            },
            "outputs": {"y": {"device": "ophyd:Signal", "args": {"value": 0.5}}},
        }
    )
    inst = build_declared_instrument(spec, input_specs([("flow", (0.2, 0.2))]), connect=False)
    try:
        for tolerance in (0.0, 0.01):  # exact, and the campaign's default
            limits = {"flow": (0.2, 0.2)}
            with Dispatcher(inst, readback_limits=limits, readback_tolerance=tolerance) as d:
                result = d.run(1, "c", {"flow": 0.2})
            assert result.ok, result.error
            assert result.readbacks["flow"] != 0.2
            assert math.isclose(result.readbacks["flow"], 0.2)
    finally:
        inst.close()


def test_is_transient() -> None:
    def chain(outer: BaseException, inner: BaseException) -> BaseException:
        outer.__cause__ = inner
        return outer

    fault = SimulatedFault("f", device="d", trigger_number=1, injected=True, transient=True)
    assert is_transient(chain(RuntimeError("status failed"), fault))
    assert not is_transient(RuntimeError("x"))
    assert is_transient(chain(RuntimeError("x"), TimeoutError("no answer")))
    assert is_transient(ConnectionError("PV lost"))
    solid = SimulatedFault("f", device="d", trigger_number=1, injected=True, transient=False)
    assert not is_transient(chain(solid, TimeoutError("inner")))  # the explicit flag wins


# ---------------------------------------------------------------- aborts that cannot land
def test_a_function_that_hangs_at_latency_0_times_out() -> None:
    """At latency 0 the function used to run on the RunEngine's event loop: one that did
    not return blocked the loop, so the timeout's abort could never land."""
    release = threading.Event()
    threads: list[str] = []

    def stuck(inputs: dict[str, Any]) -> dict[str, float]:
        threads.append(threading.current_thread().name)
        if inputs["x1"] > 5:
            release.wait(1.5)  # returns: the next trial waits for it, never calls it twice
        return {"y": inputs["x1"] + inputs["x2"]}

    inst = build_simulated_instrument(
        stuck, inputs={"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}, outputs=("y",), seed=1
    )
    try:
        with Dispatcher(inst) as dispatcher:
            t0 = time.monotonic()
            result = dispatcher.run(1, "c", {"x1": 8.0, "x2": 2.0}, timeout=0.5)
            took = time.monotonic() - t0
            assert result.exit_status == "fail" and result.timed_out, result.error
            assert took < 3, took
            assert result.documents[-1][1]["exit_status"] == "abort"
            ok = dispatcher.run(2, "c", POINT, timeout=5)  # the next trial runs
            assert ok.ok and ok.outputs == {"y": 3.0}
            assert "bluesky" not in " ".join(threads)  # never on the engine's loop
    finally:
        release.set()
        inst.close()


class _Blocking(Device):
    """A detector whose trigger() blocks the RunEngine's event loop until released."""

    value = Cpt(Signal, value=0.0, kind="hinted")

    def __init__(self, *args: Any, release: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release
        self.entered = threading.Event()

    def trigger(self) -> DeviceStatus:
        self.entered.set()
        self.release.wait(8)  # the loop thread is stuck here
        status = DeviceStatus(self)
        status.set_finished()
        return status


def test_abort_of_an_engine_whose_loop_is_blocked_returns_within_its_limit() -> None:
    """RE.abort waits, without a limit, for the engine's loop: a stop, a timeout or Ctrl-C
    used to wait for as long as a device call held that loop."""
    release = threading.Event()
    det = _Blocking(name="det", release=release)
    inst = FakeInstrument(
        "blocking", {"x": Actuator("x", limits=(-5.0, 5.0))}, [det], ("det_value",)
    )
    dispatcher = Dispatcher(inst)
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(dispatcher.run(1, "c", {"x": 1.0})))
    runner.start()
    try:
        assert det.entered.wait(10)
        t0 = time.monotonic()
        assert dispatcher.abort("stop", wait=0.3) is True  # under way, not yet taken
        assert dispatcher.abort("stop", wait=0.3) is True  # joins the same abort
        assert time.monotonic() - t0 < 2
    finally:
        release.set()
    runner.join(10)
    assert results and results[0].exit_status == "abort"  # it landed once the loop freed
    dispatcher.close()


def test_an_abort_after_the_run_ended_keeps_the_measurement() -> None:
    """An abort that lands between the stop document (success) and the engine's return is
    not an aborted trial: the run finished and its documents say so."""
    inst = _instrument()
    with Dispatcher(inst) as dispatcher:

        def sink(name: str, doc: dict[str, Any]) -> None:
            if name == "stop":
                dispatcher.abort("late", wait=0)  # taken once this document is handled

        result = dispatcher.run(1, "c", POINT, document_sink=sink)
        assert result.documents[-1][1]["exit_status"] == "success"
        assert result.exit_status == "success" and result.outputs == {"y": 3.0}
    inst.close()
