"""The trial plan's message sequence and argument checks, without a RunEngine."""

from __future__ import annotations

import pytest
from bluesky.simulators import RunEngineSimulator
from instrument_doubles import Actuator, FakeInstrument, make_instrument
from ophyd import Signal

from instruments import PLAN_NAME, TrialArgumentError, trial_plan


def test_message_sequence_is_one_run_one_move_one_event() -> None:
    inst = make_instrument()
    sim = RunEngineSimulator()
    msgs = sim.simulate_plan(
        trial_plan(inst, {"x": 1.0, "z": 0.5}, campaign="c", trial_id=3, md={"operator": "a"})
    )
    x, z = inst.inputs["x"], inst.inputs["z"]
    (det,) = inst.detectors
    assert [(m.command, m.obj) for m in msgs] == [
        ("open_run", None),
        ("set", x),
        ("set", z),
        ("wait", None),
        # ophyd Devices are all Triggerable, so the inputs' (no-op) triggers appear too
        ("trigger", det),
        ("trigger", x),
        ("trigger", z),
        ("wait", None),
        ("create", None),
        ("read", det),
        ("read", x),
        ("read", z),
        ("save", None),
        ("close_run", None),
    ]
    assert msgs[0].kwargs == {
        "operator": "a",
        "campaign": "c",
        "trial_id": 3,
        "parameters": {"x": 1.0, "z": 0.5},
        "plan_name": PLAN_NAME,
        "plan_args": {
            "campaign": "c",
            "trial_id": 3,
            "instrument": inst.name,
            "parameters": {"x": 1.0, "z": 0.5},
        },
        "instrument": "fake",
        "readback_keys": {"x": "x", "z": "z"},  # where each readback is, for resume
        # Bluesky's conventions, as its scan-like plans write them
        "detectors": ["det"],
        "motors": ["x", "z"],
        "num_points": 1,
        "hints": {"dimensions": [[["x", "z"], "primary"]]},
    }
    assert [m.args for m in msgs[1:3]] == [(1.0,), (0.5,)]
    # one move: both sets share the group the first wait waits for
    assert msgs[1].kwargs["group"] == msgs[2].kwargs["group"] == msgs[3].kwargs["group"]
    assert msgs[8].kwargs["name"] == "primary"


@pytest.mark.parametrize(
    ("parameters", "match"),
    [
        ({"x": 1.0}, r"missing \['z'\]"),
        ({"x": 1.0, "z": 0.5, "w": 2.0}, r"unknown \['w'\]"),
    ],
)
def test_parameters_must_match_inputs_before_any_msg(
    parameters: dict[str, float], match: str
) -> None:
    inst = make_instrument()
    # raised when the plan is created: no generator, hence no Msg, ever exists
    with pytest.raises(TrialArgumentError, match=match) as info:
        trial_plan(inst, parameters, campaign="c", trial_id=1)
    assert isinstance(info.value, ValueError)
    assert "expected exactly ['x', 'z']" in str(info.value)


def test_reserved_md_keys_are_refused() -> None:
    with pytest.raises(TrialArgumentError, match="trial_id"):
        trial_plan(
            make_instrument(), {"x": 0, "z": 0}, campaign="c", trial_id=1, md={"trial_id": 9}
        )


def test_inputs_must_be_readable_and_distinct() -> None:
    x = Actuator("x")
    shared = FakeInstrument("shared", {"a": x, "b": x}, [])
    with pytest.raises(TrialArgumentError, match="share one device"):
        trial_plan(shared, {"a": 0, "b": 0}, campaign="c", trial_id=1)

    class SetOnly:
        name = "s"

        def set(self, value: float) -> None: ...

    not_readable = FakeInstrument("nr", {"s": SetOnly()}, [Signal(name="y")])
    with pytest.raises(TrialArgumentError, match="not bluesky Readable"):
        trial_plan(not_readable, {"s": 0}, campaign="c", trial_id=1)
