"""Event-model's document validation through jsonschema-rs: the same verdicts, faster.

The documents are a real trial's, from a real RunEngine on simulated Ophyd devices whose
descriptor carries units and limits (the data keys that made validation slow).
"""

from __future__ import annotations

import copy
import decimal
import enum
from typing import Any

import event_model
import jsonschema
import numpy as np
import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schemas

from instruments import Dispatcher
from instruments._validation import FastValidator, install, plain_json
from simulators import build_simulated_instrument

Docs = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def trial_docs(RE: RunEngine) -> dict[str, dict[str, Any]]:
    docs: Docs = []
    inst = build_simulated_instrument(
        lambda inputs: {"y": inputs["x1"] + inputs["x2"]},
        inputs={
            "x1": {"type": "float", "bounds": (-5, 10), "unit": "mm"},
            "x2": {"type": "int", "bounds": (0, 15)},
            "c": ["Pd", "Ni"],
        },
        outputs=["y"],
    )
    result = Dispatcher(inst, run_engine=RE, document_sink=lambda n, d: docs.append((n, d))).run(
        1, "c", {"x1": 1.0, "x2": 2, "c": "Ni"}
    )
    assert result.exit_status == "success"
    return dict(docs)


def test_a_dispatcher_puts_the_fast_validators_in_front_of_event_models(
    trial_docs: dict[str, dict[str, Any]],
) -> None:
    assert install()  # idempotent: the dispatcher installed them already
    for name in schemas:
        validator = event_model.schema_validators[name]
        assert isinstance(validator, FastValidator), name
        assert not isinstance(validator.original, FastValidator)  # installed once
    # the descriptor this test validated has what made it slow
    x1 = trial_docs["descriptor"]["data_keys"]["x1"]
    assert x1["units"] == "mm" and x1["limits"]["control"] == {"low": -5, "high": 10}


def test_valid_documents_pass_and_invalid_ones_raise_event_models_own_error(
    trial_docs: dict[str, dict[str, Any]],
) -> None:
    install()
    for name, doc in trial_docs.items():
        validator = event_model.schema_validators[DocumentNames[name]]
        validator.validate(doc)
        assert validator.original.is_valid(doc)

    broken = copy.deepcopy(trial_docs["descriptor"])
    broken["data_keys"]["x1"]["limits"]["control"]["low"] = "minus five"
    validator = event_model.schema_validators[DocumentNames.descriptor]
    with pytest.raises(jsonschema.ValidationError) as raised:
        validator.validate(broken)
    with pytest.raises(jsonschema.ValidationError) as original:
        validator.original.validate(broken)
    assert raised.value.message == original.value.message

    no_uid = {k: v for k, v in trial_docs["stop"].items() if k != "uid"}
    with pytest.raises(jsonschema.ValidationError, match="'uid' is a required property"):
        event_model.schema_validators[DocumentNames.stop].validate(no_uid)


def test_what_only_event_models_type_checker_accepts_still_passes(
    trial_docs: dict[str, dict[str, Any]],
) -> None:
    """A NumPy array where the schema says array: event-model accepts it, so it passes."""
    install()
    descriptor = copy.deepcopy(trial_docs["descriptor"])
    descriptor["data_keys"]["x1"]["shape"] = np.array([], dtype=int)
    validator = event_model.schema_validators[DocumentNames.descriptor]
    assert validator.original.is_valid(descriptor)
    validator.validate(descriptor)
    # and the original's other methods are reachable through the fast one
    assert list(validator.iter_errors(descriptor)) == []


def test_only_plain_json_reaches_jsonschema_rs_so_no_verdict_changes(
    trial_docs: dict[str, dict[str, Any]],
) -> None:
    """jsonschema-rs reads a Decimal as a number and an Enum member as its value, where
    jsonschema refuses both, and accepted metadata nested 10 000 deep (jsonschema:
    RecursionError) and crashed the process at 30 000 (found in review): such documents get
    event-model's verdict, raised as before."""
    install()
    validator = event_model.schema_validators[DocumentNames.start]
    start = trial_docs["start"]
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(2000):
        node["k"] = {}
        node = node["k"]

    class Kind(enum.Enum):
        N = 3

    for doc in (
        {**start, "scan_id": decimal.Decimal("2")},
        {**start, "scan_id": Kind.N},
        {**start, "md": deep},
    ):
        assert not plain_json(doc)
        with pytest.raises((jsonschema.ValidationError, RecursionError)) as raised:
            validator.validate(doc)
        with pytest.raises(type(raised.value)):
            validator.original.validate(doc)
    assert copy.copy(validator).validate is not None  # a copy is a FastValidator too


def test_a_trials_own_documents_all_take_the_fast_way(
    trial_docs: dict[str, dict[str, Any]],
) -> None:
    """Subclasses of JSON's types are JSON: ophyd's descriptors carry OrderedDicts, and with
    exact types every descriptor went the slow way (found in review)."""
    assert set(trial_docs) == {"start", "descriptor", "event", "stop"}
    for name, doc in trial_docs.items():
        assert plain_json(doc), name
