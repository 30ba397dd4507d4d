"""One duration syntax for every time option, and the form a stored duration takes.

Found in review: ``budget.max_duration`` took ``10m`` while ``instrument.timeout: 10m`` and
``latency: 10m`` were refused with "unable to parse string as a number"; ``2 hours`` was
refused without saying which units there are; and a stored duration was ``259200s``, so
``export --format yaml`` of a campaign resumed with ``--max-duration 3d`` wrote the user's
``3d`` back as ``259200s``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from loop.config import (
    Budget,
    CampaignConfigError,
    _stored_duration,
    load_campaign,
    parse_duration,
)
from tests.cli_process import closedloop

CAMPAIGN = """\
name: durations
parameters:
  - {{name: x1, type: float, bounds: [-5, 10]}}
  - {{name: x2, type: float, bounds: [0, 15]}}
objectives: [{{name: y, goal: minimize}}]
instrument:
  simulator: branin
{instrument}
planner: {{kind: sobol}}
budget: {{max_trials: 1, max_duration: 3d}}
seed: 1
"""


def _load(tmp_path: Path, instrument: str) -> object:
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.format(instrument=instrument))
    return load_campaign(path).campaign.instrument


# ------------------------------------------------------------- the instrument's time options
@pytest.mark.parametrize(
    ("written", "seconds"),
    [("10m", 600.0), ("1h30m", 5400.0), ("2 h", 7200.0), ("30 min", 1800.0), ("90s", 90.0)],
)
def test_timeout_and_latency_take_a_duration(tmp_path: Path, written: str, seconds: float) -> None:
    instrument = _load(tmp_path, f"  timeout: {written}\n  latency: {written}")
    assert instrument.timeout == seconds  # type: ignore[attr-defined]
    assert instrument.latency == seconds  # type: ignore[attr-defined]


def test_numbers_stay_seconds_and_a_latency_may_be_0(tmp_path: Path) -> None:
    instrument = _load(tmp_path, "  timeout: 600\n  latency: 0s")
    assert instrument.timeout == 600.0 and instrument.latency == 0.0  # type: ignore[attr-defined]
    instrument = _load(tmp_path, '  timeout: "2.5"\n  latency: 0')
    assert instrument.timeout == 2.5 and instrument.latency == 0.0  # type: ignore[attr-defined]


def test_a_connect_timeout_takes_a_duration(tmp_path: Path) -> None:
    instrument = _load(
        tmp_path, "  executor: {kind: dask, address: 'tcp://h:8786', connect_timeout: 1m}"
    )
    assert instrument.executor.connect_timeout == 60.0  # type: ignore[attr-defined]


def test_an_option_s_own_range_applies_to_the_seconds(tmp_path: Path) -> None:
    with pytest.raises(CampaignConfigError) as caught:
        _load(tmp_path, "  timeout: 0m")
    assert caught.value.line == 8 and "greater than 0" in caught.value.problem
    with pytest.raises(CampaignConfigError) as caught:
        _load(tmp_path, "  latency: 2d")  # more than a day per measurement
    assert caught.value.line == 8 and "86400" in caught.value.problem


@pytest.mark.parametrize("written", ["10 parsecs", "2 hours", "1w", "-5m"])
def test_text_that_is_no_duration_is_refused_with_the_units(tmp_path: Path, written: str) -> None:
    with pytest.raises(CampaignConfigError) as caught:
        _load(tmp_path, f"  timeout: {written}")
    error = caught.value
    assert error.line == 8, error
    assert "unable to parse" not in str(error) and "nor a duration" in error.problem
    assert "d, h, m (or min) and s" in error.fix and "1h30m" in error.fix


@pytest.mark.parametrize("written", ["2 hours", "2hr", "1w"])
def test_a_bad_max_duration_lists_the_units(written: str) -> None:
    with pytest.raises(ValueError, match=r"units d, h, m \(or min\) and s"):
        parse_duration(written)


# ---------------------------------------------------------------------- the stored form
@pytest.mark.parametrize(
    ("seconds", "stored"),
    [
        (3 * 86400, "3d"),
        (5400, "1h30m"),
        (600, "10m"),
        (90, "90s"),
        (60, "1m"),
        (0.5, "0.5s"),
        (366 * 86400, "366d"),
        (1.5 * 86400, "1d12h"),
        (3600.25, "1h0.25s"),
        (1e-5, "0.00001s"),
        (1.1 * 86400, "1.1d"),  # 95040.00000000001 s: one unit, not a float's noise
    ],
)
def test_a_duration_is_stored_as_a_person_writes_it(seconds: float, stored: str) -> None:
    assert _stored_duration(seconds) == stored
    assert Budget(max_trials=1, max_duration=seconds).model_dump(mode="json")["max_duration"] == (
        stored
    )


@given(st.floats(min_value=0.0, max_value=366 * 86400, exclude_min=True, allow_subnormal=False))
@example(0.5)
@example(366 * 86400.0)
@example(2592000.0)
@example(86400.1)
@example(1e-9)
@example(119.99999999999999)
@example(31622399.999999996)
def test_a_stored_duration_reads_back_exactly(seconds: float) -> None:
    stored = _stored_duration(seconds)
    assert parse_duration(stored) == seconds, stored
    assert "e" not in stored.lower(), stored  # the duration syntax has no exponent
    if seconds >= 1e-3:
        assert len(stored) <= 32, stored


@given(st.integers(min_value=1, max_value=366 * 1440))
def test_whole_minutes_are_stored_without_a_fraction(minutes: int) -> None:
    stored = _stored_duration(minutes * 60.0)
    assert "." not in stored and parse_duration(stored) == minutes * 60.0, stored


@given(st.floats(min_value=1e-3, max_value=366 * 86400, allow_subnormal=False))
def test_the_older_stored_forms_still_read(seconds: float) -> None:
    for old in (f"{seconds:g}s", f"{seconds:.15g}s"):  # 2.592e+06s, then 2592000s
        assert math.isclose(parse_duration(old), float(old[:-1]), rel_tol=0.0)


@pytest.mark.slow
def test_export_keeps_a_resumed_campaign_s_3d(tmp_path: Path) -> None:
    """``resume --max-duration 3d`` stores the budget; ``export --format yaml`` wrote it back
    as ``max_duration: 259200s``."""
    (tmp_path / "c.yaml").write_text(
        CAMPAIGN.format(instrument="  timeout: 10m\n  latency: 0s").replace("3d", "2h")
    )
    store = f"sqlite:///{tmp_path / 'c.db'}"
    run = closedloop("run", "c.yaml", "--store", store, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    more = ("resume", "--store", store, "-c", "1", "--max-trials", "2", "--max-duration", "3d")
    resumed = closedloop(*more, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    exported = closedloop("export", "--store", store, "--format", "yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "max_duration: 3d" in exported.stdout and "259200" not in exported.stdout
    assert "timeout: 10m" in exported.stdout
