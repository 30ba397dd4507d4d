"""Injected faults: hangs, NaN/inf outputs, out-of-range readbacks, a failing region."""

from __future__ import annotations

import math
import threading
from typing import Any

import bluesky.plans as bp
import pytest
from bluesky import RunEngine
from bluesky.utils import FailedStatus, RunEngineInterrupted

from simulators import (
    ExpressionError,
    SimActuator,
    SimulatedFault,
    build_simulated_instrument,
    parse_expression,
)


def _linear(inputs: dict[str, Any]) -> dict[str, float]:
    return {"yield": 2.0 * inputs["x"] + inputs["n"]}


def _instrument(**kwargs: Any) -> Any:
    inputs = {"x": (0.0, 10.0), "n": {"type": "int", "bounds": (0, 3)}}
    return build_simulated_instrument(_linear, inputs=inputs, outputs=("yield",), **kwargs)


def test_hang_never_completes_until_stopped() -> None:
    inst = _instrument(hang_rate=1.0, seed=1)
    det = inst.detector
    status = det.trigger()
    assert not status.done
    det.stop()  # what the dispatcher does after aborting a timed-out run
    assert status.done and not status.success
    exc = status.exception()
    assert isinstance(exc, SimulatedFault) and "stopped before completion" in str(exc)
    # The detector is free again: the next trigger is not refused as busy.
    det._sim_hang_rate = 0.0
    assert det.trigger().success
    inst.close()


def test_nan_rate_makes_every_output_non_finite() -> None:
    inst = _instrument(nan_rate=1.0, seed=2)
    seen = set()
    for _ in range(12):
        assert inst.detector.trigger().success  # the run succeeds; the engine must filter
        value = inst.detector.read()["yield"]["value"]
        assert not math.isfinite(value)
        seen.add("nan" if math.isnan(value) else ("+inf" if value > 0 else "-inf"))
    assert seen == {"nan", "+inf", "-inf"}
    inst.close()


def test_zero_rates_leave_the_noise_stream_unchanged() -> None:
    plain = _instrument(noise=0.1, seed=7)
    zero = _instrument(noise=0.1, seed=7, hang_rate=0.0, nan_rate=0.0, failure_rate=0.0)
    for inst in (plain, zero):
        inst.detector.trigger()
    assert plain.detector.read()["yield"]["value"] == zero.detector.read()["yield"]["value"]
    plain.close()
    zero.close()


def test_readback_out_of_range_keeps_the_setpoint() -> None:
    act = SimActuator("x", limits=(0.0, 10.0), out_of_range_rate=1.0, seed=3)
    for _ in range(20):
        act.set(5.0)
        assert act.setpoint.get() == 5.0
        readback = act.readback.get()
        assert readback < 0.0 - 0.05 * 10 or readback > 10.0 + 0.05 * 10
        assert readback > -5.0 - 1e-9 and readback < 15.0 + 1e-9  # 5 to 50 % of the span
    integer = SimActuator("n", limits=(0, 3), integer=True, out_of_range_rate=1.0, seed=4)
    integer.set(2)
    assert isinstance(integer.readback.get(), int)
    assert not 0 <= integer.readback.get() <= 3
    with pytest.raises(ValueError, match="categorical"):
        SimActuator("c", choices=("a", "b"), out_of_range_rate=0.5)
    with pytest.raises(ValueError, match="probability"):
        SimActuator("x", limits=(0.0, 1.0), out_of_range_rate=1.5)


def test_instrument_rate_applies_to_numeric_inputs() -> None:
    inst = build_simulated_instrument(
        lambda i: {"y": 1.0},
        inputs={"x": (0.0, 1.0), "c": ["a", "b"]},
        outputs=("y",),
        readback_out_of_range_rate=1.0,
        seed=5,
    )
    inst.inputs["x"].set(0.5)
    inst.inputs["c"].set("b")
    assert not 0.0 <= inst.inputs["x"].readback.get() <= 1.0
    assert inst.inputs["c"].readback.get() == "b"
    inst.close()


def test_failing_region_is_deterministic_and_not_transient() -> None:
    inst = _instrument(failing_region="x + n > 6", failure_rate=0.0, seed=6)
    inst.inputs["x"].set(4.0)
    inst.inputs["n"].set(3)
    for _ in range(3):
        status = inst.detector.trigger()
        exc = status.exception()
        assert isinstance(exc, SimulatedFault)
        assert exc.injected and not exc.transient
        assert "failing region `x + n > 6`" in str(exc) and "x=4" in str(exc)
    inst.inputs["x"].set(1.0)
    assert inst.detector.trigger().success
    inst.close()


def test_failure_rate_fault_is_transient() -> None:
    inst = _instrument(failure_rate=1.0, seed=8)
    exc = inst.detector.trigger().exception()
    assert isinstance(exc, SimulatedFault) and exc.transient and exc.injected
    inst.close()


def test_failing_region_accepts_an_expression_or_a_predicate() -> None:
    expression = parse_expression("x > 5", ["x", "n"])
    by_expression = _instrument(failing_region=expression)
    by_predicate = _instrument(failing_region=lambda inputs: inputs["x"] > 5)
    for inst in (by_expression, by_predicate):
        inst.inputs["x"].set(6.0)
        assert isinstance(inst.detector.trigger().exception(), SimulatedFault)
        inst.close()


@pytest.mark.parametrize(
    ("region", "fragment"),
    [
        ("__import__('os')", "function calls"),
        ("x + c > 1", "unknown name 'c'"),  # a choice input is not numeric
        ("x + 1", "must be a condition"),
    ],
)
def test_bad_failing_region_is_refused(region: str, fragment: str) -> None:
    with pytest.raises(ExpressionError, match=fragment):
        build_simulated_instrument(
            lambda i: {"y": 1.0},
            inputs={"x": (0.0, 1.0), "c": ["a", "b"]},
            outputs=("y",),
            failing_region=region,
        )


def test_a_hung_trigger_is_aborted_by_the_run_engine(RE: RunEngine) -> None:  # noqa: N803
    """bluesky side: abort cancels the wait; the hung Status is failed by stop()."""
    inst = _instrument(hang_rate=1.0, seed=9)
    timer = threading.Timer(0.2, RE.abort, args=("test",))
    timer.start()
    with pytest.raises(RunEngineInterrupted):
        RE(bp.count([inst.detector]))
    timer.join()
    inst.detector.stop()
    det = inst.detector
    assert det._sim_pending is not None and det._sim_pending.done
    inst.close()


def _exiter(inputs: dict[str, Any]) -> dict[str, float]:
    raise SystemExit(3)  # a script's sys.exit() reached from the simulator


def _closes(inputs: dict[str, Any]) -> dict[str, float]:
    raise GeneratorExit("generator closed")


def _interrupts(inputs: dict[str, Any]) -> dict[str, float]:
    raise KeyboardInterrupt  # raised by the code itself: on a timer thread it is no Ctrl-C


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("function", "latency", "kind"),
    [
        (_exiter, 0.0, SystemExit),  # on the RunEngine's own trigger() call
        (_exiter, 0.01, SystemExit),  # on the latency timer's thread
        (_closes, 0.01, GeneratorExit),
        (_interrupts, 0.01, KeyboardInterrupt),
    ],
)
def test_base_exceptions_from_the_function_fail_the_run_not_the_engine(
    RE: RunEngine,  # noqa: N803
    function: Any,
    latency: float,
    kind: type[BaseException],
) -> None:
    """Was: SystemExit escaped ``except Exception``; the trial hung past its timeout."""
    inst = build_simulated_instrument(
        function, inputs={"x": (0.0, 1.0)}, outputs=("y",), latency=latency, seed=1
    )
    det = inst.detector
    for number in (1, 2):  # the second is measured, not refused as "still in progress"
        with pytest.raises(FailedStatus) as info:
            RE(bp.count([det]))
        fault = info.value.__cause__
        assert isinstance(fault, SimulatedFault) and not fault.injected
        assert fault.trigger_number == number
        assert str(fault).startswith(kind.__name__)  # the function's exception leads
        assert f"; raised by function {function.__name__} (test_device_faults.py" in str(fault)
        assert isinstance(fault.__cause__, kind)
        assert RE.state == "idle"
    inst.close()
