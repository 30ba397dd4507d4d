"""The Dispatcher against faulty instruments: timeouts, NaN/inf, out-of-range readbacks."""

from __future__ import annotations

import math
from typing import Any

import pytest

from instruments import Dispatcher, is_transient, readback_problems
from simulators import SimulatedFault, build_simulated_instrument


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
    inst = _instrument(nan_rate=1.0)
    with Dispatcher(inst) as dispatcher:
        result = dispatcher.run(1, "c", POINT)
    assert result.exit_status == "fail" and not result.transient
    assert "output 'y' is not finite" in (result.error or "")
    assert not math.isfinite(result.outputs["y"])  # kept for the store
    assert result.documents[-1][1]["exit_status"] == "success"  # the run itself completed
    inst.close()


def test_out_of_range_readback_fails_the_trial() -> None:
    inst = _instrument(readback_out_of_range_rate=1.0)
    with Dispatcher(inst, readback_limits=LIMITS, readback_tolerance=0.01) as dispatcher:
        result = dispatcher.run(1, "c", POINT)
    assert result.exit_status == "fail"
    assert "lies outside its declared limits" in (result.error or "")
    assert set(result.readbacks) == {"x1", "x2"}  # kept for the store
    assert not all(lo <= result.readbacks[k] <= hi for k, (lo, hi) in LIMITS.items())
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


def test_readback_problems() -> None:
    assert readback_problems({"x1": 10.1}, {"x1": (0.0, 10.0)}, tolerance=0.01) == []
    assert readback_problems({"x1": 10.2}, {"x1": (0.0, 10.0)}, tolerance=0.01) == [
        "readback x1 = 10.2 lies outside its declared limits [0, 10]"
    ]
    assert "not finite" in readback_problems({"x1": math.nan}, {"x1": (0, 1)})[0]
    assert "not a number" in readback_problems({"x1": None}, {"x1": (0, 1)})[0]
    assert readback_problems({"c": "a"}, {"x1": (0, 1)}) == []


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
