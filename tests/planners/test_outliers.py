"""Overrange codes among ordinary readings (``planners._outliers``): outlying however many.

A reading of sentinel magnitude (at least 1e30: 9.9e37, 3.4e38, 1e300) far outside the
ordinary readings is outlying, so never the best trial and clipped for the model, whether
it is one code among many readings or most of them (found in review: at 6 of 14 trials a
saturated detector's 9.9e37 was still left out, at 7 of 14 it became the best trial and
the planner's model chased it; one reading and one code, or two different codes, were not
told apart at all). Readings below 1e30 are never left out, however far outside.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loop import Runner, Store, parse_campaign
from loop.runner import TrialReport
from planners._botorch import _clip_outliers
from planners._outliers import (
    NOISE_FLOOR,
    SENTINEL_MAGNITUDE,
    best_index,
    best_trace,
    clip_column,
    outlying,
)

S = 9.9e37
CODES = [9.9e37, 3.4e38, -9.9e37, -3.4e38, 1e300, -1e300, 1e30, 1.7976931348623157e308]
# The reviewer's two campaigns' readings (Ax and BoTorch, seed 4, 14 trials each).
AX_RUN = [206.897, S, 397.225, 7.50145, 216.96, S, S, 9.70575, S, S, 10.0429, 0.00916609, S, S]
BO_RUN = [S, 397.225, 7.50145, 216.96, S, 966.627, S, S, 9.8277, S, S, S, S, 9.31377]


def _factor(n: int) -> float:
    return math.sqrt(n / NOISE_FLOOR)


@pytest.mark.parametrize("run", [AX_RUN, BO_RUN], ids=["ax", "botorch"])
def test_the_reviewed_campaigns_never_crown_the_code(run: list[float]) -> None:
    """Every prefix of both runs: best is the best reading, every code is flagged, and the
    model's clipping moves exactly the codes onto the largest reading."""
    for n in range(1, len(run) + 1):
        values = run[:n]
        codes = [v == S for v in values]
        readings = [v for v in values if v != S]
        index, mask = best_index(values, 1.0)
        if not readings:  # trial 1 of the BoTorch run: nothing else to be the best
            assert index == 0 and not mask.any()
            continue
        assert index is not None and values[index] == max(readings), n
        assert mask.tolist() == codes, n
        trace, _ = best_trace(values, 1.0)
        assert np.nanmax(trace) == max(readings), n
        Y = torch.tensor(values, dtype=torch.float64)[:, None]
        clipped, moved = _clip_outliers(Y, NOISE_FLOOR)
        assert moved[:, 0].tolist() == codes, n
        top = max(readings)
        assert clipped[:, 0].tolist() == [
            top if c else v for v, c in zip(values, codes, strict=True)
        ]


@pytest.mark.parametrize("n", [1, 2, 5, 10])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 9, 10, 11, 20, 40])
def test_any_number_of_codes_among_readings_is_outlying(n: int, k: int) -> None:
    """k codes among n ordinary readings, k up to and past half (and a majority of 40
    codes to 1 reading): all flagged, none of the readings, the best reading is the best."""
    readings = [float(10 + 3 * i) for i in range(n)]
    values = [*readings, *[S] * k]
    assert outlying(values).tolist() == [False] * n + [True] * k
    index, mask = best_index(values, 1.0)
    assert index == n - 1 and mask.sum() == k
    # minimised, an underrange code likewise
    index, mask = best_index([*readings, *[-S] * k], -1.0)
    assert index == 0 and mask.sum() == k


def test_codes_among_equal_readings_and_mixed_codes() -> None:
    """Equal readings, one reading, and different codes at once: each was left in (no
    spread to compare with, or the codes' own spread hid them) and crowned the best."""
    assert outlying([1.0] * 6 + [S]).tolist() == [False] * 6 + [True]
    assert outlying([206.897, S]).tolist() == [False, True]
    assert outlying([S, 397.225]).tolist() == [True, False]
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.9e37, 3.4e38]
    assert best_index(values, 1.0)[0] == 6
    tail = [1.0, 2.0, 3.0, 1e30, 1e33, 1e36, 9.9e37, -9.9e37]  # codes of every magnitude
    assert outlying(tail).tolist() == [False] * 3 + [True] * 5
    assert clip_column(np.array(tail), _factor(len(tail))).tolist() == [1, 2, 3, 3, 3, 3, 3, 1]


def test_documented_behaviour_stays() -> None:
    """A hit of 40 among titres of 5 and a beam among dark counts are the best trial, with
    codes around them or not; a column of codes only is judged by distances, as before."""
    for column in ([5.0, 5.001, 40.0], [3.0, 5.0, 4.0, 6.0, 4.0, 12000.0]):
        assert not outlying(column).any()
        for k in (1, 3, 10):
            values = [*column, *[S] * k]
            index, mask = best_index(values, 1.0)
            assert index == len(column) - 1 and mask.tolist() == [False] * len(column) + [True] * k
    # nothing but codes: nothing ordinary to judge by; equal codes are not outlying, the
    # one whose square overflows the variance is (README's "as measured" for all codes)
    assert not outlying([S] * 5).any()
    assert outlying([S] * 5 + [1e300]).tolist() == [False] * 5 + [True]
    assert best_index([S], 1.0)[0] == 0
    # just below the sentinel magnitude: a value, kept however far outside
    assert not outlying([1.0, 2.0, 3.0, 9.99e29, 9.99e29]).any()


_READING = st.floats(-1e29, 1e29, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    readings=st.lists(_READING, min_size=1, max_size=30),
    codes=st.lists(st.sampled_from(CODES), min_size=0, max_size=60),
    failures=st.lists(st.sampled_from([math.nan, math.inf, -math.inf]), max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_codes_are_told_apart_from_readings(
    readings: list[float], codes: list[float], failures: list[float], seed: int
) -> None:
    """Property: among readings of modest spread (below ~1e26, as every physical one is)
    the codes are exactly the outlying values, however many and in whatever order; no
    reading is ever flagged or moved; the codes are clipped onto the readings' range."""
    readings = [r / 1000.0 for r in readings]  # spread at most 2e26: far from 1e30
    values = np.array([*readings, *codes, *failures])
    np.random.default_rng(seed).shuffle(values)
    is_code = np.abs(values) >= SENTINEL_MAGNITUDE
    finite = np.isfinite(values)
    mask = outlying(values)
    assert mask.tolist() == (is_code & finite).tolist()
    for sign in (1.0, -1.0):
        index, _ = best_index(values.tolist(), sign)
        assert index is not None and sign * values[index] == max(sign * r for r in readings)
    kept = values[finite]
    clipped = clip_column(kept, _factor(len(kept)))
    ordinary = np.abs(kept) < SENTINEL_MAGNITUDE
    assert np.array_equal(clipped[ordinary], kept[ordinary])  # bit for bit
    assert clipped.min() >= min(readings) and clipped.max() <= max(readings)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_READING, min_size=0, max_size=40))
def test_values_below_the_sentinel_magnitude_are_never_left_out(values: list[float]) -> None:
    assert not outlying(values).any()
    if values:  # the planner clips columns of two values or more
        assert np.array_equal(clip_column(np.array(values), _factor(len(values))), values)


# ------------------------------------------------------------------------- the loop
FUNCTION = """
def measure(inputs):
    x = inputs["x"]
    if x > 0.3:  # saturated over most of the range: its overrange code
        return {"counts": 9.9e37}
    return {"counts": 100.0 * x}
"""

CAMPAIGN = """
name: mostly-saturated
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: counts, goal: maximize}]
instrument: {function: "fn.py:measure", outputs: [counts]}
planner: {kind: sobol}
budget: {max_trials: 12, target: 1000}
seed: 1
"""


class _Recorder:
    """What the live line showed: ``(value, outlying, best)`` as each trial ended."""

    def __init__(self) -> None:
        self.lines: list[tuple[float | None, bool, float | None]] = []

    def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
        pass

    def trial_finished(self, report: TrialReport) -> None:
        self.lines.append((report.objective, report.outlying, report.best))


def test_a_mostly_saturated_campaign_keeps_its_best_reading(tmp_path: Path) -> None:
    """A run whose detector saturates over 70 % of the space: once one reading is in, each
    code is left out of best as it comes in and in the summary, best is the best reading
    throughout, and no code meets ``target`` (at a majority of codes all three flipped)."""
    (tmp_path / "fn.py").write_text(FUNCTION)
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    recorder = _Recorder()
    loaded = parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path)
    summary = Runner(loaded, Store(f"sqlite:///{tmp_path / 'store.db'}"), listener=recorder).run()
    values = [value for value, _, _ in recorder.lines]
    codes = [value == S for value in values]
    assert sum(codes) > len(values) / 2 + 1, "the test needs most readings to be codes"
    first = codes.index(False)  # before the first reading a code is all there is
    honest = max(v for v in values if v is not None and v != S)
    assert summary.completed == 12 and "target" not in summary.reason, summary.reason
    assert summary.best is not None and summary.best.objective == honest
    assert len(summary.outlying) == sum(codes)
    for i, (value, flag, best) in enumerate(recorder.lines[first:], start=first):
        assert flag == (value == S), (i, value)
        assert best is not None and best < SENTINEL_MAGNITUDE, (i, best)
