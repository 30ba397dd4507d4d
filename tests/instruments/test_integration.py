"""The real ``simulators`` package behind ``build_instrument``, dispatched on a RunEngine."""

from __future__ import annotations

from pathlib import Path

import pytest
from bluesky import RunEngine

from instruments import Dispatcher, InstrumentConfig, build_instrument, list_simulators


def test_function_instrument_end_to_end(tmp_path: Path, RE: RunEngine) -> None:
    (tmp_path / "model.py").write_text(
        "def f(inputs):\n    return {'y': -(inputs['x'] - 0.3) ** 2}\n"
    )
    config = InstrumentConfig(function="model.py:f", outputs=["y"])
    instrument = build_instrument(config, [("x", (0.0, 1.0))], base_dir=tmp_path, seed=0)
    try:
        result = Dispatcher(instrument, run_engine=RE).run(1, "c", {"x": 0.5})
        assert result.exit_status == "success", result.error
        assert result.readbacks == {"x": pytest.approx(0.5)}
        assert result.outputs == {"y": pytest.approx(-0.04)}
        event = result.documents[2][1]
        assert "x_setpoint" in event["data"]
        # out of the campaign's bounds: rejected before anything moves
        rejected = Dispatcher(instrument, run_engine=RE).run(2, "c", {"x": 1.5})
        assert rejected.exit_status == "fail" and rejected.run_uid is None
    finally:
        instrument.close()


def test_every_builtin_simulator_runs_one_trial(RE: RunEngine) -> None:
    for info in list_simulators():
        config = InstrumentConfig(simulator=info.name)
        instrument = build_instrument(config, list(info.inputs), base_dir=Path("."), seed=1)
        try:
            point = {
                s.name: (s.bounds[0] + s.bounds[1]) / 2 if s.bounds else (s.values or ())[0]
                for s in info.inputs
            }
            for s in info.inputs:
                if s.kind == "int":
                    point[s.name] = int(point[s.name])
            result = Dispatcher(instrument, run_engine=RE).run(1, info.name, point)
            assert result.exit_status == "success", (info.name, result.error)
            assert set(result.outputs) == set(info.outputs)
            assert set(result.readbacks) == {s.name for s in info.inputs}
        finally:
            instrument.close()
