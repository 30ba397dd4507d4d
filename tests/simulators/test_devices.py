"""Ophyd wrappers: protocols, naming, limits, a real RunEngine, latency, faults, seeds."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.protocols import Locatable, Movable, Readable, Stageable, Triggerable
from bluesky.utils import FailedStatus
from ophyd.utils import LimitError

from simulators import (
    ParamSpec,
    SimActuator,
    SimDetector,
    SimLimitError,
    SimulatedFault,
    build_simulated_instrument,
    flow_reactor,
    get_problem,
)

Docs = list[tuple[str, dict[str, Any]]]


def _linear(inputs: dict[str, Any]) -> dict[str, float]:
    return {"yield": 2.0 * inputs["x"], "cost": inputs["x"] + 1.0}


def _instrument(**kwargs: Any) -> Any:
    return build_simulated_instrument(
        _linear, inputs={"x": (0.0, 10.0)}, outputs=("yield", "cost"), **kwargs
    )


def _snapshot(act: SimActuator) -> tuple[Any, ...]:
    return (act.setpoint.get(), act.readback.get(), act.setpoint.timestamp, act.readback.timestamp)


# --- actuators ---------------------------------------------------------------------------------


def test_actuator_satisfies_bluesky_protocols_and_names_keys_after_itself() -> None:
    act = SimActuator("temperature", limits=(30.0, 110.0))
    for protocol in (Movable, Readable, Locatable, Stageable):
        assert isinstance(act, protocol)
    assert act.readback.name == "temperature"
    assert act.setpoint.name == "temperature_setpoint"
    assert list(act.read()) == ["temperature", "temperature_setpoint"]
    assert act.hints == {"fields": ["temperature"]}
    assert act.limits == (30.0, 110.0) and act.choices is None
    assert act.position == 70.0  # starts mid-range


def test_set_moves_setpoint_and_readback_and_returns_a_finished_status() -> None:
    act = SimActuator("t", limits=(0.0, 1.0))
    status = act.set(0.25)
    assert status.done and status.success
    assert act.locate() == {"setpoint": 0.25, "readback": 0.25}
    assert type(act.readback.get()) is float


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf, "0.5", None, True])
def test_numeric_limits_refused_before_any_signal_changes(bad: Any) -> None:
    act = SimActuator("t", limits=(0.0, 1.0))
    act.set(0.3)
    before = _snapshot(act)
    with pytest.raises(SimLimitError) as info:
        act.set(bad)
    assert isinstance(info.value, LimitError) and isinstance(info.value, ValueError)
    assert info.value.device == "t" and info.value.limits == (0.0, 1.0)
    assert _snapshot(act) == before


def test_choices_refused_before_any_signal_changes() -> None:
    act = SimActuator("catalyst", choices=("Pd(OAc)2", "XPhos-Pd-G3"))
    assert act.limits == ("Pd(OAc)2", "XPhos-Pd-G3")
    act.set("XPhos-Pd-G3")
    before = _snapshot(act)
    for bad in ("Pt", "xphos-pd-g3", 0, None):
        with pytest.raises(LimitError, match="not one of"):
            act.set(bad)
        assert _snapshot(act) == before


def test_numeric_choices_do_not_confuse_bools_or_strings() -> None:
    act = SimActuator("n", choices=(1, 2.5))
    act.set(1.0)
    assert act.readback.get() == 1 and type(act.readback.get()) is int  # canonical choice
    for bad in (True, "1"):
        with pytest.raises(LimitError):
            act.set(bad)


def test_signals_cannot_be_written_around_the_limits() -> None:
    act = SimActuator("t", limits=(0.0, 1.0))
    with pytest.raises(Exception, match="(?i)internal"):
        act.setpoint.put(99.0)
    with pytest.raises(Exception, match="(?i)internal"):
        act.readback.put(99.0)


def test_integer_actuator() -> None:
    act = SimActuator("n", limits=(1, 4), integer=True)
    act.set(3.0)
    assert act.readback.get() == 3 and type(act.readback.get()) is int
    with pytest.raises(LimitError, match="integer"):
        act.set(2.5)


def test_readback_error_sd_is_seeded_and_callable_error_is_applied() -> None:
    a = SimActuator("t", limits=(0.0, 100.0), readback_error=0.5, seed=3)
    b = SimActuator("t", limits=(0.0, 100.0), readback_error=0.5, seed=3)
    got = []
    for act in (a, b):
        act.set(50.0)
        got.append(act.readback.get())
        assert act.setpoint.get() == 50.0
    assert got[0] == got[1] != 50.0 and abs(got[0] - 50.0) < 3.0
    lagging = SimActuator("t", limits=(0.0, 100.0), readback_error=lambda sp: sp - 1.0)
    lagging.set(50.0)
    assert lagging.locate() == {"setpoint": 50.0, "readback": 49.0}


def test_actuator_argument_errors() -> None:
    with pytest.raises(ValueError):
        SimActuator("t")
    with pytest.raises(ValueError):
        SimActuator("t", limits=(0.0, 1.0), choices=("a",))
    with pytest.raises(ValueError):
        SimActuator("t", limits=(1.0, 0.0))
    with pytest.raises(ValueError):
        SimActuator("c", choices=("a", "b"), readback_error=0.1)
    with pytest.raises(ValueError):
        SimActuator("t", limits=(0.0, 1.0), readback_error=-1.0)


# --- detector ----------------------------------------------------------------------------------


def test_detector_keys_are_exact_output_names_even_keywords() -> None:
    inst = _instrument()
    det = inst.detector
    for protocol in (Triggerable, Readable, Stageable):
        assert isinstance(det, protocol)
    assert isinstance(det, SimDetector)
    assert list(det.read()) == ["yield", "cost"] == list(det.describe())
    assert det.hints == {"fields": ["yield", "cost"]}
    assert det.yield_.name == "yield"  # type: ignore[attr-defined]
    assert math.isnan(det.read()["yield"]["value"])  # nothing measured yet


def test_awkward_output_names_get_unique_safe_attributes() -> None:
    outputs = ("1st", "a-b", "a_b", "read", "name", "_x", "class")

    def f(inputs: dict[str, Any]) -> dict[str, float]:
        return {o: float(i) for i, o in enumerate(outputs)}

    inst = build_simulated_instrument(f, inputs={"x": (0, 1)}, outputs=outputs)
    det = inst.detector
    det.trigger()
    assert {k: v["value"] for k, v in det.read().items()} == f({})
    assert len(set(det.component_names)) == len(outputs)


def test_trigger_reads_achieved_values_and_keeps_noiseless_copy() -> None:
    inst = build_simulated_instrument(
        _linear,
        inputs={"x": (0.0, 10.0)},
        outputs=("yield", "cost"),
        readback_error=lambda sp: sp + 0.5,
    )
    inst.inputs["x"].set(2.0)
    status = inst.detector.trigger()
    assert status.done and status.success
    assert inst.detector.last_noiseless == {"yield": 5.0, "cost": 3.5}  # physics saw 2.5


def test_seeded_noise_is_reproducible_and_per_output() -> None:
    def run(seed: int) -> list[float]:
        inst = _instrument(noise={"yield": 0.1}, seed=seed)
        values = []
        for x in (1.0, 2.0, 3.0):
            inst.inputs["x"].set(x)
            inst.detector.trigger()
            reading = inst.detector.read()
            assert reading["cost"]["value"] == x + 1.0  # no noise configured on cost
            values.append(reading["yield"]["value"])
        return values

    first, again, other = run(7), run(7), run(8)
    assert first == again != other
    assert all(v != 2.0 * x for v, x in zip(first, (1.0, 2.0, 3.0), strict=True))


def test_noise_and_rate_validation() -> None:
    with pytest.raises(ValueError, match="unknown outputs"):
        _instrument(noise={"purity": 0.1})
    with pytest.raises(ValueError):
        _instrument(noise=-1.0)
    with pytest.raises(ValueError):
        _instrument(failure_rate=1.5)
    with pytest.raises(ValueError):
        _instrument(latency=-1.0)


def test_latency_is_honoured_without_blocking_the_caller() -> None:
    inst = _instrument(latency=0.2)
    start = time.perf_counter()
    status = inst.detector.trigger()
    assert not status.done  # trigger() returned before the measurement finished
    status.wait(timeout=2.0)
    assert status.success and time.perf_counter() - start >= 0.2
    assert inst.detector.read()["yield"]["value"] == 10.0


def test_second_trigger_while_busy_fails_without_disturbing_the_first() -> None:
    inst = _instrument(latency=0.1)
    first = inst.detector.trigger()
    second = inst.detector.trigger()
    assert second.done and not second.success
    assert "in progress" in str(second.exception())
    first.wait(timeout=2.0)
    assert first.success


def test_close_fails_a_measurement_in_flight() -> None:
    inst = _instrument(latency=5.0)
    status = inst.detector.trigger()
    inst.close()
    assert status.done and not status.success
    assert "closed" in str(status.exception())
    inst.close()  # idempotent


def test_function_errors_become_faults_that_say_what_happened() -> None:
    def broken(inputs: dict[str, Any]) -> dict[str, float]:
        raise ZeroDivisionError("division by zero in the model")

    inst = build_simulated_instrument(broken, inputs={"x": (0, 1)}, outputs=("y",))
    status = inst.detector.trigger()
    exc = status.exception()
    assert isinstance(exc, SimulatedFault) and not exc.injected
    assert "ZeroDivisionError: division by zero in the model" in str(exc)
    assert isinstance(exc.__cause__, ZeroDivisionError)
    assert inst.detector.last_noiseless == {}

    inst = build_simulated_instrument(lambda d: {"z": 1.0}, inputs={"x": (0, 1)}, outputs=("y",))
    assert "did not return ['y']" in str(inst.detector.trigger().exception())


@pytest.mark.parametrize("value", ["1.5", True, np.bool_(False), b"2"])
def test_text_and_bools_are_not_measurements(value: Any) -> None:
    """Was: ``float()`` quietly read "1.5" as 1.5 and True as 1.0."""
    inst = build_simulated_instrument(
        lambda d: {"y": value}, inputs={"x": (0, 1)}, outputs=("y",), name="det"
    )
    exc = inst.detector.trigger().exception()
    assert isinstance(exc, SimulatedFault) and not exc.injected
    assert f"returned a non-numeric output: y = {value!r} is a {type(value).__name__}" in str(exc)
    inst.close()


@pytest.mark.parametrize("value", [2, 2.0, np.float32(2.0), np.int64(2)])
def test_numbers_of_any_kind_are_measurements(value: Any) -> None:
    inst = build_simulated_instrument(lambda d: {"y": value}, inputs={"x": (0, 1)}, outputs=("y",))
    assert inst.detector.trigger().success
    assert inst.detector.read()["y"]["value"] == 2.0
    inst.close()


def test_non_finite_outputs_pass_through() -> None:
    inst = build_simulated_instrument(
        lambda d: {"y": math.nan, "z": math.inf}, inputs={"x": (0, 1)}, outputs=("y", "z")
    )
    status = inst.detector.trigger()
    assert status.success
    reading = inst.detector.read()
    assert math.isnan(reading["y"]["value"]) and reading["z"]["value"] == math.inf


# --- builder -----------------------------------------------------------------------------------


def test_builder_accepts_every_input_form() -> None:
    inst = build_simulated_instrument(
        lambda d: {"out": 0.0},
        inputs={
            "a": (0.0, 1.0),  # two numbers: limits
            "b": [1, 2, 3],  # more than two: choices
            "c": ("x", "y"),  # strings: choices
            "d": ParamSpec("d", kind="int", bounds=(1, 4)),
            "e": ParamSpec("e", kind="choice", values=(1.0, 2.0)),  # two numeric choices
            "f": {"type": "float", "bounds": [0.5, 30.0], "log": True},  # campaign dict
            "g": SimpleNamespace(type="choice", values=("p", "q")),  # pydantic-like model
        },
        outputs=("out",),
    )
    acts = inst.inputs
    assert acts["a"].limits == (0.0, 1.0) and acts["a"].choices is None
    assert acts["b"].choices == (1, 2, 3)
    assert acts["c"].choices == ("x", "y")
    assert acts["d"].limits == (1.0, 4.0)
    with pytest.raises(LimitError):
        acts["d"].set(1.5)
    assert acts["e"].choices == (1.0, 2.0)
    assert acts["f"].limits == (0.5, 30.0)
    assert acts["g"].choices == ("p", "q")
    with pytest.raises(ValueError, match="input 'h'"):
        build_simulated_instrument(lambda d: {}, inputs={"h": 3.0}, outputs=("out",))


def test_builder_refuses_clashing_data_keys() -> None:
    with pytest.raises(ValueError, match="clash"):
        build_simulated_instrument(lambda d: {}, inputs={"x": (0, 1)}, outputs=("x",))
    with pytest.raises(ValueError, match="clash"):
        build_simulated_instrument(lambda d: {}, inputs={"x": (0, 1)}, outputs=("x_setpoint",))
    with pytest.raises(ValueError, match="outputs"):
        build_simulated_instrument(lambda d: {}, inputs={"x": (0, 1)}, outputs="y")


def test_builder_from_a_problem_uses_its_space_and_outputs() -> None:
    inst = build_simulated_instrument(get_problem("flow_reactor"), name="reactor")
    assert list(inst.inputs) == ["temperature", "residence_time", "equivalents", "catalyst"]
    assert inst.outputs == ("yield", "impurity", "cost")
    assert inst.inputs["catalyst"].choices == ("Pd(OAc)2", "Pd(PPh3)4", "XPhos-Pd-G3")
    assert inst.problem is get_problem("flow_reactor")
    assert inst.detector.name == "reactor"


def test_one_seed_makes_the_whole_instrument_reproducible() -> None:
    def run() -> tuple[float, float]:
        inst = _instrument(noise=0.1, readback_error=0.2, seed=42)
        inst.inputs["x"].set(5.0)
        inst.detector.trigger()
        return inst.inputs["x"].position, inst.detector.read()["yield"]["value"]

    assert run() == run()


# --- with a real RunEngine ---------------------------------------------------------------------


def test_runengine_mv_then_count_produces_the_expected_documents(
    RE: RunEngine,  # noqa: N803
    docs: Docs,
) -> None:
    inst = build_simulated_instrument(get_problem("flow_reactor"), name="reactor", seed=0)
    point = {
        "temperature": 60.0,
        "residence_time": 12.0,
        "equivalents": 2.4,
        "catalyst": "Pd(PPh3)4",
    }
    args: list[Any] = []
    for key, value in point.items():
        args += [inst.inputs[key], value]
    RE(bps.mv(*args))
    (uid,) = RE(bp.count([inst.detector, *inst.inputs.values()], md={"trial_id": 7}))  # type: ignore[misc]

    names = [name for name, _ in docs]
    assert names == ["start", "descriptor", "event", "stop"]
    start, descriptor, event, stop = (doc for _, doc in docs)
    assert start["uid"] == uid and start["trial_id"] == 7
    keys = set(point) | {f"{k}_setpoint" for k in point} | {"yield", "impurity", "cost"}
    assert set(descriptor["data_keys"]) == keys
    assert descriptor["object_keys"]["reactor"] == ["yield", "impurity", "cost"]
    assert descriptor["data_keys"]["catalyst"]["dtype"] == "string"
    expected = flow_reactor(point)
    for key, value in expected.items():
        assert event["data"][key] == pytest.approx(value, rel=1e-12)
    assert {k: event["data"][k] for k in point} == point
    assert stop["exit_status"] == "success"


def test_runengine_refuses_out_of_limits_move_before_anything_moves(RE: RunEngine) -> None:  # noqa: N803
    inst = _instrument()
    before = _snapshot(inst.inputs["x"])
    with pytest.raises(LimitError):
        RE(bps.mv(inst.inputs["x"], 11.0))
    assert _snapshot(inst.inputs["x"]) == before


def test_runengine_is_not_blocked_by_latency(RE: RunEngine) -> None:  # noqa: N803
    """Two 1.5 s detectors triggered together overlap: far under the 3 s of a serial wait (a
    margin of 1.2 s, which no load of a shared machine has taken; 0.45 s once was)."""
    a = _instrument(latency=1.5, name="a")
    b = build_simulated_instrument(  # distinct data keys, so both fit in one event
        lambda d: {"yield2": 0.0, "cost2": 0.0},
        inputs={"x2": (0.0, 10.0)},
        outputs=("yield2", "cost2"),
        latency=1.5,
        name="b",
    )
    b_det = b.detector
    start = time.perf_counter()
    RE(bp.count([a.detector, b_det]))
    elapsed = time.perf_counter() - start
    assert 1.5 <= elapsed < 2.7


def test_injected_failure_fails_the_run_with_the_reason(
    RE: RunEngine,  # noqa: N803
    docs: Docs,
) -> None:
    inst = _instrument(failure_rate=1.0, seed=0)
    with pytest.raises(FailedStatus) as info:
        RE(bp.count([inst.detector]))
    cause = info.value.__cause__
    assert isinstance(cause, SimulatedFault) and cause.injected and cause.trigger_number == 1
    (stop,) = [doc for name, doc in docs if name == "stop"]
    assert stop["exit_status"] == "fail"
    assert "injected instrument fault" in stop["reason"]


def test_failure_rate_is_seeded() -> None:
    def outcomes(seed: int) -> list[bool]:
        inst = _instrument(failure_rate=0.5, seed=seed)
        return [inst.detector.trigger().success for _ in range(40)]

    first = outcomes(1)
    assert first == outcomes(1)
    assert 5 < sum(first) < 35


def test_a_descriptor_says_each_inputs_units_limits_and_choices() -> None:
    """A catalog reads from the descriptor what the campaign declares of an input."""
    from event_model import DocumentNames, schema_validators

    inst = build_simulated_instrument(
        lambda inputs: {"y": 1.0},
        inputs={
            "t": {"type": "float", "bounds": (30, 110), "unit": "degC"},
            "n": {"type": "int", "bounds": (1, 4)},
            "c": ["Pd", "Ni"],
        },
        outputs=["y"],
    )
    docs: list[tuple[str, dict[str, Any]]] = []
    RunEngine()(bp.count(list(inst.inputs.values())), lambda n, d: docs.append((n, d)))
    for name, doc in docs:
        schema_validators[DocumentNames[name]].validate(doc)
    keys = next(d for n, d in docs if n == "descriptor")["data_keys"]
    assert keys["t"]["units"] == keys["t_setpoint"]["units"] == "degC"
    assert keys["t"]["limits"] == {"control": {"low": 30.0, "high": 110.0}}
    assert "units" not in keys["n"] and keys["n"]["limits"]["control"]["high"] == 4
    assert keys["c"]["choices"] == ["Pd", "Ni"]
