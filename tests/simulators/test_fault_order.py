"""Which fault a trial fails with when more than one is injected: the failing region is the
point's (judged on the setpoints), a glitched readback is the instrument's.

Found in review: the region was judged on the readbacks, so a good point whose readback an
``readback_out_of_range_rate`` glitch threw into the region failed as "inputs (x1=17.3,
...) lie in the failing region" at a point never commanded: a permanent failure of a good
point (never retried, learned as failed), its readbacks not stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loop import Runner, Store, parse_campaign
from loop.failures import failure_kind
from simulators import SimulatedFault, build_simulated_instrument


def _linear(inputs: dict[str, Any]) -> dict[str, float]:
    return {"y": 2.0 * inputs["x"]}


def _instrument(**kwargs: Any) -> Any:
    return build_simulated_instrument(
        _linear, inputs={"x": (0.0, 10.0)}, outputs=("y",), seed=1, **kwargs
    )


def test_the_region_is_judged_on_the_setpoint_not_the_readback() -> None:
    """A controller that overshoots by 3 into the region, then one that undershoots out of
    it: the point asked for decides, both ways; the function still sees the readback."""
    overshoot = _instrument(failing_region="x > 5", readback_error=lambda target: target + 3.0)
    overshoot.inputs["x"].set(4.0)
    assert overshoot.inputs["x"].readback.get() == 7.0  # in the region, as read back
    assert overshoot.detector.trigger().success
    assert overshoot.detector.read()["y"]["value"] == 14.0  # the physics sees the readback
    overshoot.close()

    undershoot = _instrument(failing_region="x > 5", readback_error=lambda target: target - 3.0)
    undershoot.inputs["x"].set(6.0)
    assert undershoot.inputs["x"].readback.get() == 3.0
    for _ in range(2):  # deterministic: the same point fails every time
        exc = undershoot.detector.trigger().exception()
        assert isinstance(exc, SimulatedFault) and exc.injected and not exc.transient
        assert "setpoints (x=6) lie in the failing region `x > 5`" in str(exc)
    undershoot.close()


def test_an_out_of_range_readback_in_the_region_does_not_fail_the_trigger() -> None:
    """Every readback lands outside the limits, which this region covers: the trigger
    succeeds (the dispatcher then fails the trial on the readback, keeping it)."""
    inst = _instrument(failing_region="x < 0 or x > 10", readback_out_of_range_rate=1.0)
    for _ in range(5):
        inst.inputs["x"].set(5.0)
        assert not 0.0 <= inst.inputs["x"].readback.get() <= 10.0
        assert inst.detector.trigger().success
    inst.close()


CAMPAIGN = """
name: fault-order
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument:
  simulator: branin
  readback_out_of_range_rate: 1.0
  failing_region: "x1 < -5 or x1 > 10 or x2 < 0 or x2 > 15"
  max_retries: 2
planner: {kind: sobol}
budget: {max_trials: 2, max_failures: 3}
seed: 3
"""


def test_a_glitched_readback_fails_its_trial_as_a_readback_out_of_range(tmp_path: Path) -> None:
    """End to end (the repro's shape): every trial fails as "readback out of range", with
    its readbacks and outputs stored, at the point commanded; none as the failing region."""
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        summary = Runner(parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path), store).run()
        assert summary.status == "failed"
        assert summary.failure_counts == {"readback out of range": 3}
        trials = store.trials(summary.campaign_id)
        assert len(trials) == 3
        observations = store.observations(summary.campaign_id)
        for trial in trials:
            assert failure_kind(trial.error) == "readback out of range", trial.error
            assert "failing region" not in (trial.error or "")
            p = trial.parameters
            assert -5 <= p["x1"] <= 10 and 0 <= p["x2"] <= 15  # the point asked for
            readbacks = trial.readbacks or {}
            assert not -5 <= readbacks["x1"] <= 10 and not 0 <= readbacks["x2"] <= 15
            assert "y" in observations[trial.id or 0]  # the measurement is kept
    finally:
        store.close()


@pytest.mark.parametrize("tolerance", [0.0, 0.6])
def test_the_campaigns_readback_tolerance_decides_a_stray_readback(
    tmp_path: Path, tolerance: float
) -> None:
    """``instrument.readback_tolerance`` from the campaign file to the dispatcher: readbacks
    5-50 % of the span outside the bounds fail every trial with none, and pass with 60 %
    (their values stored as read either way). Only the dispatcher's own tests set it
    before, so a runner ignoring the key passed the suite (found in review)."""
    text = (
        CAMPAIGN.replace('  failing_region: "x1 < -5 or x1 > 10 or x2 < 0 or x2 > 15"\n', "")
        .replace("  max_retries: 2\n", f"  readback_tolerance: {tolerance}\n  latency: 0\n")
        .replace("max_trials: 2, max_failures: 3", "max_trials: 3, max_failures: 3")
    )
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        summary = Runner(parse_campaign(text, path=path, base_dir=tmp_path), store).run()
        trials = store.trials(summary.campaign_id)
        if tolerance == 0.0:
            assert summary.status == "failed"
            assert summary.failure_counts == {"readback out of range": 3}
        else:
            assert summary.status == "completed" and summary.failed == 0
        assert len(trials) == 3
        for trial in trials:
            readbacks = trial.readbacks or {}
            assert not -5 <= readbacks["x1"] <= 10 and not 0 <= readbacks["x2"] <= 15
    finally:
        store.close()
