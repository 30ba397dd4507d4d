"""Trials on a real RunEngine with real ophyd devices."""

from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any

import pytest
from bluesky import RunEngine
from instrument_doubles import (
    Actuator,
    Detector,
    FakeInstrument,
    UncheckedActuator,
    make_instrument,
)
from ophyd import DeviceStatus

from instruments import (
    Dispatcher,
    DispatcherBusy,
    DispatcherClosed,
    DocumentSinkError,
    InstrumentConfigError,
    TrialArgumentError,
    TrialInterrupted,
    input_specs,
)
from instruments._dispatch import outputs_and_readbacks
from instruments._epics import DeclaredInstrument, build_declared_instrument
from instruments._instrument_file import parse_instrument
from instruments._safety import SetpointRefused, check_setpoint

Docs = list[tuple[str, dict[str, Any]]]


def names(documents: Docs) -> list[str]:
    return [name for name, _ in documents]


def test_trial_is_one_run_with_provenance(RE: RunEngine, docs: Docs) -> None:
    inst = make_instrument(quantum=0.25)
    dispatcher = Dispatcher(inst, run_engine=RE, document_sink=lambda n, d: docs.append((n, d)))
    result = dispatcher.run(7, "camp", {"x": 1.1, "z": 0.5}, md={"operator": "ada"})

    assert result.exit_status == "success", result.error
    assert result.error is None
    assert names(result.documents) == ["start", "descriptor", "event", "stop"]
    assert docs == result.documents  # the sink saw every document, in order
    start = result.documents[0][1]
    assert start["uid"] == result.run_uid
    assert (start["campaign"], start["trial_id"], start["operator"]) == ("camp", 7, "ada")
    assert start["plan_name"] == "closedloop_trial"
    assert start["parameters"] == {"x": 1.1, "z": 0.5}  # commanded
    assert result.readbacks == {"x": 1.0, "z": 0.5}  # what the devices reached
    event = result.documents[2][1]
    assert event["data"]["x_setpoint"] == 1.1
    assert result.outputs == {"y": pytest.approx(-0.0 + math.sin(0.5))}
    assert result.documents[3][1]["exit_status"] == "success"
    assert result.documents[1][1]["name"] == "primary"
    assert 0.0 <= result.instrument_busy <= result.duration
    assert result.finished >= result.started
    assert inst.inputs["x"].moves == [1.1]


def test_failed_status_fails_the_trial_and_closes_the_run(RE: RunEngine) -> None:
    result = Dispatcher(make_instrument(mode="fail_status"), run_engine=RE).run(
        1, "c", {"x": 0.0, "z": 0.0}
    )
    assert result.exit_status == "fail"
    assert result.error is not None
    assert "FailedStatus" in result.error and "detector on fire" in result.error
    assert names(result.documents) == ["start", "stop"]
    stop = result.documents[-1][1]
    assert stop["exit_status"] == "fail"
    assert stop["run_start"] == result.run_uid
    assert result.outputs == {}
    assert result.readbacks == {"x": 0.0, "z": 0.0}  # read after the run: where they are
    assert RE.state == "idle"


def test_exception_in_trigger_fails_the_trial(RE: RunEngine) -> None:
    dispatcher = Dispatcher(make_instrument(mode="raise"), run_engine=RE)
    result = dispatcher.run(1, "c", {"x": 0.0, "z": 0.0})
    assert result.exit_status == "fail"
    assert result.error == "RuntimeError: detector exploded in trigger()"
    assert result.documents[-1][1]["exit_status"] == "fail"
    # the engine is reusable afterwards
    dispatcher.instrument.detectors[0].mode = "ok"  # type: ignore[attr-defined]
    assert dispatcher.run(2, "c", {"x": 0.0, "z": 0.0}).exit_status == "success"


def test_limit_violation_fails_before_any_device_moves(RE: RunEngine, docs: Docs) -> None:
    inst = make_instrument()
    dispatcher = Dispatcher(inst, run_engine=RE, document_sink=lambda n, d: docs.append((n, d)))
    # x is fine and comes first; z is out of its limits
    result = dispatcher.run(1, "c", {"x": 1.0, "z": 3.0})
    assert result.exit_status == "fail"
    assert result.error is not None
    assert "LimitError" in result.error and "z=3.0" in result.error
    assert inst.inputs["x"].moves == [] and inst.inputs["z"].moves == []
    assert result.run_uid is None and result.documents == [] and docs == []


def test_limit_error_raised_by_set_still_closes_the_run(RE: RunEngine) -> None:
    # a device without check_value: the RunEngine sees the LimitError from set()
    x = UncheckedActuator("x", limits=(0.0, 1.0))
    det = Detector("det", lambda: {"y": 1.0})
    result = Dispatcher(FakeInstrument("i", {"x": x}, [det]), run_engine=RE).run(1, "c", {"x": 5})
    assert result.exit_status == "fail"
    assert result.error is not None and "LimitError" in result.error
    assert names(result.documents) == ["start", "stop"]
    # the refused stage stayed where it was, and the trial's readbacks say so
    assert result.readbacks == {"x": 0.0}


class StallingActuator(Actuator):
    """A stage that stops halfway to its target and fails its move, as a stalled motor."""

    read_delay = 0.0

    def set(self, value: float) -> DeviceStatus:  # type: ignore[override]
        self._check(value)
        halfway = (self.readback.get() + value) / 2
        self.setpoint.put(value)
        self.readback.put(halfway)
        status = DeviceStatus(self)
        status.set_exception(RuntimeError(f"{self.name} stalled at {halfway}"))
        return status

    def read(self) -> Any:
        time.sleep(self.read_delay)
        return super().read()


def test_a_stalled_move_stores_where_the_stage_stopped(RE: RunEngine) -> None:
    """A run that fails before its event: the trial's readbacks say where the stage
    stopped, read after the run (the documents are the run's own), and the error is the
    stage's."""
    x = StallingActuator("x", limits=(0.0, 1.0))
    det = Detector("det", lambda: {"y": 1.0})
    result = Dispatcher(FakeInstrument("i", {"x": x}, [det]), run_engine=RE).run(1, "c", {"x": 0.8})
    assert result.exit_status == "fail" and "x stalled at 0.4" in (result.error or "")
    assert result.readbacks == {"x": 0.4} and result.outputs == {}
    assert names(result.documents) == ["start", "stop"]
    # the stop document says what the trial's error says, not bluesky's
    # "DeviceStatus(device=x, done=True, success=False)": a catalog reads it, and resume
    # rebuilds a trial killed before it was recorded from it
    assert result.documents[-1][1]["reason"] == result.error


def test_a_device_that_raises_closes_its_run_with_the_trials_own_error(RE: RunEngine) -> None:
    """A ``set()`` that raises (a controller that did not answer) closed its run with
    bluesky's ``str(exc)``, without the class: after a kill, resume rebuilt the trial from
    it as another failure kind, and a transient timeout as a failure of its point (found in
    review, session 39)."""
    from loop.failures import failure_kind, transient_failure

    class Unanswering(Actuator):
        def set(self, value: float) -> DeviceStatus:  # type: ignore[override]
            raise TimeoutError(f"{self.name}: the controller did not answer within 2 s")

    det = Detector("det", lambda: {"y": 1.0})
    inst = FakeInstrument("i", {"x": Unanswering("x", limits=(0.0, 1.0))}, [det])
    result = Dispatcher(inst, run_engine=RE).run(1, "c", {"x": 0.5})
    stop = result.documents[-1][1]
    assert result.exit_status == "fail" and stop["reason"] == result.error
    assert (result.error or "").startswith("TimeoutError: x: the controller did not answer")
    assert failure_kind(stop["reason"]) == failure_kind(result.error) == "timeout"
    assert transient_failure(stop["reason"]) and result.transient


def test_the_read_after_a_failure_is_bounded_and_keeps_the_runs_own_error(
    RE: RunEngine,
) -> None:
    """Best effort: a device that cannot be read leaves its readback out, one that answers
    slowly is not waited for (found in review: read inside the plan, a slow read held the
    RunEngine, and an abort or a timeout then replaced the trial's own error)."""

    class Unreadable(StallingActuator):
        def read(self) -> Any:
            raise ConnectionError("controller gone")

    det = Detector("det", lambda: {"y": 1.0})
    dispatcher = Dispatcher(
        FakeInstrument("i", {"x": Unreadable("x", limits=(0.0, 1.0))}, [det]), run_engine=RE
    )
    result = dispatcher.run(1, "c", {"x": 0.8})
    assert result.exit_status == "fail" and "x stalled at 0.4" in (result.error or "")
    assert result.readbacks == {} and not result.transient
    slow = StallingActuator("x", limits=(0.0, 1.0))
    slow.read_delay = 5.0
    dispatcher = Dispatcher(FakeInstrument("i", {"x": slow}, [det]), run_engine=RE)
    started = time.monotonic()
    result = dispatcher.run(2, "c", {"x": 0.8}, timeout=3)
    assert time.monotonic() - started < 3  # bounded: neither the read nor the timeout
    assert "x stalled at 0.4" in (result.error or "") and not result.timed_out
    assert result.readbacks == {}


def test_a_device_that_does_not_say_its_read_may_be_abandoned_is_not_read(
    RE: RunEngine,
) -> None:
    """A Python API instrument's own device (here ophyd's ``SynAxis``) may hold a driver
    lock through a slow read, which the next trial's ``set`` then waited on, on the
    RunEngine's loop (found in review, session 38): only devices that declare
    ``abandonable_read`` are read after a failed run."""
    from ophyd.sim import SynAxis

    det = Detector("det", lambda: {"y": 1.0}, mode="fail_status")
    inst = FakeInstrument("i", {"x": SynAxis(name="x")}, [det])
    result = Dispatcher(inst, run_engine=RE).run(1, "c", {"x": 0.5})
    assert result.exit_status == "fail" and result.readbacks == {}


def test_missing_and_non_finite_outputs_fail(RE: RunEngine) -> None:
    inst = make_instrument()
    inst.outputs = ("y", "purity")
    result = Dispatcher(inst, run_engine=RE).run(1, "c", {"x": 0.0, "z": 0.0})
    assert result.exit_status == "fail"
    assert result.error is not None and "output 'purity' missing" in result.error
    # the stop document says what closedloop decided, for a catalog that searches on it
    stop = result.documents[-1][1]
    assert (stop["exit_status"], stop["reason"]) == ("fail", result.error)
    assert [n for n, _ in result.documents] == ["start", "descriptor", "event", "stop"]

    det = Detector("det", lambda: {"y": math.nan})
    inst = FakeInstrument("i", {"x": Actuator("x")}, [det])
    result = Dispatcher(inst, run_engine=RE).run(2, "c", {"x": 0.0})
    assert result.exit_status == "fail"
    assert result.error is not None and "not finite" in result.error


def test_the_start_document_says_where_each_readback_is(RE: RunEngine) -> None:
    """``readback_keys``: parameter -> its device's name, the key its reading may have; a
    stored run is read by the same rule without its devices (``resume``)."""
    from ophyd.sim import SynAxis

    inst = FakeInstrument("i", {"x": SynAxis(name="stage_x"), "z": Actuator("z")}, [], ())
    result = Dispatcher(inst, run_engine=RE).run(1, "c", {"x": 0.5, "z": 0.25})
    assert result.exit_status == "success", result.error
    assert result.documents[0][1]["readback_keys"] == {"x": "stage_x", "z": "z"}
    assert result.readbacks == {"x": 0.5, "z": 0.25}
    with pytest.raises(TrialArgumentError, match="md may not set the trial's own keys"):
        Dispatcher(inst, run_engine=RE).run(2, "c", {"x": 0.5, "z": 0.25}, md={"readback_keys": {}})


def test_outputs_and_readbacks_is_one_rule_for_live_and_stored_data() -> None:
    keys = {"x": "stage_x"}
    data = {"stage_x": 0.5, "y": 1.0, "n": "n/a", "inf": math.inf, "null": None}

    def read(outputs: list[str], stored: bool = False, needed: list[str] | None = None) -> Any:
        return outputs_and_readbacks(
            data,
            outputs=outputs,
            needed=needed,
            readback_keys=keys,
            limits={"x": (0, 1)},
            stored=stored,
        )

    ok = read(["y"])
    assert (ok.outputs, ok.readbacks, ok.problems) == ({"y": 1.0}, {"x": 0.5}, [])
    # the parameter's own key wins over its device's
    both = outputs_and_readbacks(
        {**data, "x": 0.25}, outputs=[], needed=None, readback_keys=keys, limits={}
    )
    assert both.readbacks == {"x": 0.25}
    bad = read(["y", "gone", "n", "inf"])
    assert bad.outputs == {"y": 1.0, "inf": math.inf}  # a non-finite value is kept
    assert bad.problems == [
        "output 'gone' missing from the event",
        "output 'n' is not a number: 'n/a' (event data keys: ['inf', 'n', 'null', 'stage_x', 'y'])",
        "output 'inf' is not finite: inf",
    ]
    # live, a null is not a number; from the store (which keeps NaN and inf as null), NaN
    assert read(["null"]).problems[0].startswith("output 'null' is not a number: None")
    stored = read(["null"], stored=True)
    assert math.isnan(stored.outputs["null"])
    assert stored.problems == ["output 'null' is not finite: stored as null (NaN or infinite)"]
    # a side output (no objective or constraint needs it) may be missing or not finite; the
    # non-finite value is kept, a missing one left out; text is still a broken instrument
    side = read(["y", "gone", "inf", "n"], needed=["y"])
    assert side.outputs == {"y": 1.0, "inf": math.inf}
    assert side.problems == [
        "output 'n' is not a number: 'n/a' (event data keys: ['inf', 'n', 'null', 'stage_x', 'y'])"
    ]
    side_stored = read(["y", "null"], stored=True, needed=["y"])
    assert side_stored.problems == [] and math.isnan(side_stored.outputs["null"])
    assert read(["y", "inf"], needed=["inf"]).problems == ["output 'inf' is not finite: inf"]


def test_bad_parameters_raise_before_the_engine_runs(RE: RunEngine) -> None:
    dispatcher = Dispatcher(make_instrument(), run_engine=RE)
    with pytest.raises(TrialArgumentError):
        dispatcher.run(1, "c", {"x": 0.0})
    assert RE.state == "idle"


def test_output_named_like_a_parameter_is_rejected() -> None:
    inst = make_instrument()
    inst.outputs = ("x",)
    with pytest.raises(InstrumentConfigError, match="both parameters and outputs"):
        Dispatcher(inst)


def test_abort_from_another_thread(RE: RunEngine) -> None:
    dispatcher = Dispatcher(make_instrument(mode="slow", delay=30.0), run_engine=RE)
    timer = threading.Timer(0.2, dispatcher.abort, kwargs={"reason": "operator said so"})
    timer.start()
    result = dispatcher.run(1, "c", {"x": 0.0, "z": 0.0})
    timer.join()
    assert result.exit_status == "abort"
    assert result.error == "run aborted: operator said so"
    assert result.duration < 10  # not the 30 s measurement: however loaded the machine
    assert result.documents[-1][0] == "stop"
    assert result.documents[-1][1]["exit_status"] == "abort"
    assert RE.state == "idle"
    assert dispatcher.abort() is False  # nothing running


def test_ctrl_c_aborts_the_run_cleanly_then_propagates(capsys: pytest.CaptureFixture[str]) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    main = threading.main_thread().ident
    assert main is not None
    with Dispatcher(make_instrument(mode="slow", delay=2.0)) as dispatcher:
        timer = threading.Timer(0.2, signal.pthread_kill, args=(main, signal.SIGINT))
        timer.start()
        with pytest.raises(TrialInterrupted) as info:
            dispatcher.run(4, "c", {"x": 0.0, "z": 0.0})
        timer.join()
        assert isinstance(info.value, KeyboardInterrupt)
        result = info.value.result
        assert result.exit_status == "abort"
        assert result.error == "run aborted: KeyboardInterrupt"
        assert result.documents[-1][1]["exit_status"] == "abort"
        assert dispatcher.run_engine.state == "idle"
        # still usable after the interrupt
        dispatcher.instrument.detectors[0].mode = "ok"  # type: ignore[attr-defined]
        assert dispatcher.run(5, "c", {"x": 0.0, "z": 0.0}).exit_status == "success"


def test_sink_failure_does_not_disturb_the_run(RE: RunEngine) -> None:
    def broken(name: str, doc: dict[str, Any]) -> None:
        raise OSError("disk full")

    dispatcher = Dispatcher(make_instrument(), run_engine=RE, document_sink=broken)
    with pytest.raises(DocumentSinkError, match="disk full") as info:
        dispatcher.run(3, "c", {"x": 0.0, "z": 0.0})
    assert info.value.trial_id == 3
    assert info.value.result.exit_status == "success"
    assert names(info.value.result.documents) == ["start", "descriptor", "event", "stop"]


def test_per_call_sink_overrides_the_default(RE: RunEngine, docs: Docs) -> None:
    default: Docs = []
    dispatcher = Dispatcher(
        make_instrument(), run_engine=RE, document_sink=lambda n, d: default.append((n, d))
    )
    dispatcher.run(1, "c", {"x": 0, "z": 0}, document_sink=lambda n, d: docs.append((n, d)))
    assert names(docs) == ["start", "descriptor", "event", "stop"] and default == []


def test_one_trial_at_a_time(RE: RunEngine) -> None:
    dispatcher = Dispatcher(make_instrument(mode="slow", delay=0.5), run_engine=RE)
    worker = threading.Thread(target=dispatcher.run, args=(1, "c", {"x": 0, "z": 0}))
    worker.start()
    try:
        while RE.state == "idle":
            threading.Event().wait(0.01)
        with pytest.raises(DispatcherBusy):
            dispatcher.run(2, "c", {"x": 0, "z": 0})
    finally:
        worker.join()


def test_owned_engine_is_stopped_on_close_and_shared_one_is_not(RE: RunEngine) -> None:
    own = Dispatcher(make_instrument())
    thread = own.run_engine._th
    assert own.run(1, "c", {"x": 0, "z": 0}).exit_status == "success"
    own.close()
    own.close()  # idempotent
    assert not thread.is_alive()
    with pytest.raises(DispatcherClosed):
        own.run(2, "c", {"x": 0, "z": 0})

    shared = Dispatcher(make_instrument(), run_engine=RE)
    shared.close()
    assert RE.loop.is_running()


# ------------------------------------------------------------------ declared inputs
def _declared(inputs: dict[str, Any], parameters: list[tuple[str, Any]]) -> DeclaredInstrument:
    """A declared instrument of plain ophyd Signals (plugin ``device:`` inputs, no IOC)."""
    spec = parse_instrument(
        {
            "name": "bench",
            "inputs": inputs,
            "outputs": {"y": {"device": "ophyd:Signal", "args": {"value": 0.5}}},
        }
    )
    return build_declared_instrument(spec, input_specs(parameters), connect=False)


def test_max_step_refuses_a_move_from_a_position_that_is_not_finite(RE: RunEngine) -> None:
    # a broken thermocouple reads NaN: `abs(190 - nan) > 10` is False, so the step used to pass
    limited = {"limits": [0, 200], "max_step": 10}
    inst = _declared(
        {"temperature": {"device": "ophyd:Signal", "args": {"value": math.nan}, **limited}},
        [("temperature", (0.0, 200.0))],
    )
    device = inst.inputs["temperature"]._positioner
    try:
        dispatcher = Dispatcher(inst, run_engine=RE)
        refused = dispatcher.run(1, "c", {"temperature": 190.0})
        assert refused.exit_status == "fail"
        assert refused.error is not None
        assert "temperature: its current reading nan is not a finite number" in refused.error
        assert "max_step 10" in refused.error
        assert refused.documents == []  # no run opened, nothing sent
        assert math.isnan(device.get())
        device.put(185.0)  # readable again: the same check lets a small step through
        assert dispatcher.run(2, "c", {"temperature": 190.0}).ok
        assert device.get() == 190.0
    finally:
        inst.close()
    no_reading: Any = None
    with pytest.raises(SetpointRefused, match="current reading None is not a finite number"):
        check_setpoint("t", 1.0, limits=None, max_step=5.0, current=lambda: no_reading)


def test_a_choice_on_a_plugin_device_runs_and_must_be_one_of_its_values(RE: RunEngine) -> None:
    inst = _declared(
        {
            "x": {"device": "ophyd:Signal", "args": {"value": 1.0}, "limits": [0, 2]},
            "catalyst": {"device": "ophyd:Signal", "args": {"value": "Pd-A"}},
        },
        [("x", (0.0, 2.0)), ("catalyst", ("Pd-A", "Pd-B"))],
    )
    catalyst = inst.inputs["catalyst"]._positioner
    try:
        dispatcher = Dispatcher(
            inst,
            run_engine=RE,
            readback_limits={"x": (0.0, 2.0)},
            choices={"catalyst": ["Pd-A", "Pd-B"]},
        )
        ok = dispatcher.run(1, "c", {"x": 0.5, "catalyst": "Pd-B"})
        assert ok.ok, ok.error
        assert ok.readbacks == {"x": 0.5, "catalyst": "Pd-B"}

        unknown = dispatcher.run(2, "c", {"x": 0.5, "catalyst": "Pd-C"})
        assert unknown.exit_status == "fail" and unknown.documents == []
        assert "catalyst: setpoint 'Pd-C' is not one of its values ('Pd-A', 'Pd-B')" in (
            unknown.error or ""
        )
        # a numeric parameter still takes numbers only, though its input declares no limit
        text = dispatcher.run(3, "c", {"x": "0.5", "catalyst": "Pd-A"})
        assert text.exit_status == "fail" and text.documents == []
        assert "x: setpoint '0.5' is not a number" in (text.error or "")
        assert catalyst.get() == "Pd-B"
    finally:
        inst.close()
    # a limit declared on an input is never skipped: only a number can be checked against it
    with pytest.raises(SetpointRefused, match="not a number, but the input declares limits"):
        check_setpoint("catalyst", "Pd-A", limits=(0.0, 1.0), max_step=None, current=None)
