"""A parameter none of whose values an input's ``limits`` allow can run no trial: a fixed
value of 250 on limits [0, 100] passed ``validate`` with a warning, then failed ten trials
to ``max_failures`` (found in review). Refused at the limits' line; a numeric choice value
outside them is warned about, as bounds reaching outside are."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from loop import CampaignConfigError, load_campaign

INSTRUMENT = """\
name: bench
inputs:
  fx: {device: "ophyd.sim:SoftPositioner", args: {init_pos: 0}, limits: [0, 100]}
  ch: {device: "ophyd.sim:SoftPositioner", args: {init_pos: 0}, limits: [0, 100]}
outputs:
  y: {device: "ophyd:Signal", args: {value: 1.0}}
"""

CAMPAIGN = """\
name: lim
parameters:
  - {name: fx, type: fixed, value: FIXED}
  - {name: ch, type: choice, values: [10, 50, LAST], ordered: true}
objectives: [{name: y, goal: maximize}]
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 3}
"""


def _campaign(tmp_path: Path, fixed: float, last: float) -> Path:
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.replace("FIXED", f"{fixed:g}").replace("LAST", f"{last:g}"))
    return path


def test_a_fixed_value_outside_the_limits_is_refused_at_their_line(tmp_path: Path) -> None:
    with pytest.raises(CampaignConfigError) as refused:
        load_campaign(_campaign(tmp_path, 250, 90))
    said = str(refused.value)
    assert (
        f"{tmp_path / 'bench.yaml'}:3: instrument file bench.yaml: parameter 'fx' has value "
        "250, outside its input's limits [0, 100]: no trial could be sent to the device"
    ) in said, said
    assert "fix: give the parameter values within the limits" in said


def test_a_choice_value_outside_the_limits_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        load_campaign(_campaign(tmp_path, 50, 500))
    said = [r.getMessage() for r in caplog.records if "reaching outside" in r.getMessage()]
    assert said == [
        f"instrument file bench.yaml: parameter 'ch' has values 500 reaching outside its "
        f"input's limits [0, 100] ({tmp_path / 'bench.yaml'}:4); proposals outside the "
        "limits are not sent and their trials fail (narrow the values to the limits)"
    ], said


def test_an_int_with_no_whole_number_within_the_limits_is_refused(tmp_path: Path) -> None:
    """Bounds [1, 3] overlap limits [1.2, 1.8], but no whole number lies in them: every
    trial would be refused (found in review)."""
    (tmp_path / "bench.yaml").write_text(
        INSTRUMENT.replace("fx: {", "n: {").replace("limits: [0, 100]}", "limits: [1.2, 1.8]}", 1)
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        CAMPAIGN.replace(
            "{name: fx, type: fixed, value: FIXED}", "{name: n, type: int, bounds: [1, 3]}"
        ).replace("LAST", "90")
    )
    with pytest.raises(CampaignConfigError) as refused:
        load_campaign(path)
    assert "parameter 'n' has bounds [1, 3], outside its input's limits [1.2, 1.8]" in str(
        refused.value
    ), str(refused.value)
