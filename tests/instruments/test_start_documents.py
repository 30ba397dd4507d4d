"""Start and stop documents a facility catalog can use: Bluesky's conventions, scan ids.

Real RunEngines (the dispatcher's own, as every campaign slot has), real ophyd devices, and
event-model's schema on every document. Found in a facility integrator's review: a start
document without ``detectors``/``motors``/``hints`` (no plot axis, no catalog columns),
``scan_id`` counting from 1 on every slot's engine (a Tiled search by scan id found two runs
of one campaign), and a run cut short by a dead process that never got a stop document.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
from event_model import DocumentNames, RunRouter, schema_validators
from instrument_doubles import Actuator, Detector, FakeInstrument, make_instrument
from ophyd.sim import SynAxis

from instruments import Dispatcher, TrialArgumentError, trial_plan
from instruments._dispatch import DIED_REASON, closing_stop_document
from instruments._plans import RESERVED_MD_KEYS

Docs = list[tuple[str, dict[str, Any]]]


def _valid(documents: Docs) -> None:
    for name, doc in documents:
        schema_validators[DocumentNames[name]].validate(doc)


def test_the_start_document_follows_bluesky_conventions() -> None:
    with Dispatcher(make_instrument()) as dispatcher:
        result = dispatcher.run(12, "camp", {"x": 1.0, "z": 0.5}, trial_number=3)
    assert result.exit_status == "success", result.error
    _valid(result.documents)
    start = result.documents[0][1]
    assert (start["trial_id"], start["trial_number"], start["scan_id"]) == (12, 3, 3)
    assert start["detectors"] == ["det"]
    assert start["motors"] == ["x", "z"]
    assert start["num_points"] == 1
    assert start["hints"] == {"dimensions": [[["x", "z"], "primary"]]}
    assert start["plan_args"] == {
        "campaign": "camp",
        "trial_id": 12,
        "instrument": start["instrument"],
        "parameters": {"x": 1.0, "z": 0.5},
    }
    # the hinted fields are event data keys: a plot (BestEffortCallback) finds its axis
    event = next(doc for name, doc in result.documents if name == "event")
    assert {"x", "z"} <= set(event["data"])
    versions = start["versions"]
    assert versions["closedloop"] == importlib.metadata.version("closedloop")
    assert "bluesky" in versions and "ophyd" in versions  # the engine's own are kept


def test_motors_and_dimensions_name_the_devices_fields() -> None:
    """A device named unlike its parameter reads under its own name, and hints its field;
    the start document says so rather than the parameter's name (not an event key)."""
    stage = SynAxis(name="stage_x")
    det = Detector("det", lambda: {"y": stage.readback.get()})
    inst = FakeInstrument("stage", {"x": stage}, [det])
    with Dispatcher(inst) as dispatcher:
        result = dispatcher.run(1, "camp", {"x": 0.25}, trial_number=1)
    assert result.exit_status == "success", result.error
    _valid(result.documents)
    start = result.documents[0][1]
    assert start["motors"] == ["stage_x"]
    assert start["hints"] == {"dimensions": [[["stage_x"], "primary"]]}
    event = next(doc for name, doc in result.documents if name == "event")
    assert "stage_x" in event["data"]


class _BadHints(Actuator):
    @property
    def hints(self) -> dict[str, Any]:
        raise RuntimeError("hints unavailable")


def test_a_device_whose_hints_raise_still_runs_with_its_readback_key() -> None:
    x = _BadHints("x")
    inst = FakeInstrument("bad", {"x": x}, [Detector("det", lambda: {"y": 1.0})])
    msgs = list(trial_plan(inst, {"x": 0.5}, campaign="c", trial_id=1))
    assert msgs[0].kwargs["hints"] == {"dimensions": [[["x"], "primary"]]}


def test_scan_ids_are_trial_numbers_across_slots_and_engines() -> None:
    """Two slots (two engines) and a resumed session (a third) number runs by trial: each
    scan_id once, where bluesky's count gave 1, 1, 2, 2 and, after a resume, 1 again."""
    starts: list[dict[str, Any]] = []
    with Dispatcher(make_instrument()) as a, Dispatcher(make_instrument()) as b:
        for number, slot in ((1, a), (2, b), (3, a), (4, b)):
            result = slot.run(100 + number, "c", {"x": 0.0, "z": 0.0}, trial_number=number)
            starts.append(result.documents[0][1])
    with Dispatcher(make_instrument()) as resumed:
        starts.append(resumed.run(105, "c", {"x": 0.0, "z": 0.0}, trial_number=5).documents[0][1])
    assert [s["scan_id"] for s in starts] == [1, 2, 3, 4, 5]
    assert [s["trial_number"] for s in starts] == [1, 2, 3, 4, 5]


def test_without_a_trial_number_the_engine_counts_as_bluesky_does() -> None:
    with Dispatcher(make_instrument()) as dispatcher:
        first = dispatcher.run(1, "c", {"x": 0.0, "z": 0.0})
        second = dispatcher.run(2, "c", {"x": 0.0, "z": 0.0})
    assert [r.documents[0][1]["scan_id"] for r in (first, second)] == [1, 2]
    assert "trial_number" not in first.documents[0][1]


@pytest.mark.parametrize(
    "key", ["trial_number", "detectors", "motors", "num_points", "hints", "scan_id", "trial_id"]
)
def test_caller_metadata_may_not_set_the_plans_own_keys(key: str) -> None:
    assert key in RESERVED_MD_KEYS
    with pytest.raises(TrialArgumentError, match=key):
        trial_plan(make_instrument(), {"x": 0.0, "z": 0.0}, campaign="c", trial_id=1, md={key: 1})


def _real_run() -> Docs:
    with Dispatcher(make_instrument()) as dispatcher:
        result = dispatcher.run(1, "c", {"x": 0.5, "z": 0.5}, trial_number=1)
    assert result.exit_status == "success", result.error
    return result.documents


@pytest.mark.parametrize(("kept", "events"), [(1, {}), (2, {"primary": 0}), (3, {"primary": 1})])
def test_a_run_cut_short_gets_a_valid_abort_stop(kept: int, events: dict[str, int]) -> None:
    """What a process that died after ``kept`` documents left: the stop ``resume`` stores
    is valid, closes that run, and counts the stored events per stream."""
    documents = _real_run()[:kept]
    stop = closing_stop_document(documents, now=123.0)
    assert stop is not None
    _valid([*documents, ("stop", stop)])
    assert set(stop) == {"run_start", "time", "uid", "exit_status", "reason", "num_events"}
    assert stop["run_start"] == documents[0][1]["uid"]
    assert (stop["exit_status"], stop["reason"], stop["time"]) == ("abort", DIED_REASON, 123.0)
    assert stop["num_events"] == events
    # a RunRouter sees the run begin and end
    seen: list[str] = []

    def factory(name: str, doc: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        return [lambda n, d: seen.append(n)], []

    router = RunRouter([factory])
    for name, doc in [*documents, ("stop", stop)]:
        router(name, doc)
    assert seen[0] == "start" and seen[-1] == "stop"


def test_nothing_to_close_without_a_start_or_with_a_stop() -> None:
    documents = _real_run()
    assert closing_stop_document(documents) is None  # it has its stop
    assert closing_stop_document([]) is None  # never began
