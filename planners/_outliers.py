"""Readings far outside all others (overrange codes, sentinels such as 9.9e37): one rule.

A reading is outlying when it is of sentinel magnitude, at least
:data:`SENTINEL_MAGNITUDE` (1e30) in absolute value, *and* far outside the ordinary
readings, those below it (:func:`clip_column`: it would squash them below what the model
can resolve). Far outside alone is no sentinel: a screening hit of 40 among titres of
5.000 and 5.001, a beam of 12000 counts after dark counts of 3-6, is the result the
campaign is looking for (found in review: both were left out of best, never met
``target``, and the model saw them clipped to the background, so the planner never
exploited them). Sentinels are outlying however many there are, as long as one reading is
ordinary: a detector that saturates over half the space still measured nothing there
(found in review: at 7 codes of 9.9e37 in 14 trials "best" became 9.9e37).

The BoTorch planner clips such readings for its model (``_clip_outliers``), the Ax
planner the values it tells Ax (:func:`model_column`), and the campaign's notion of its
best trial (:func:`best_index`, :func:`best_trace`: ``run``'s live line and summary,
``status``, the report, ``target``, ``patience``) leaves them out and names them instead
of crowning them the best trial. All must agree on what is "far outside", so the rule
lives here, in NumPy only: ``closedloop status`` does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Below this the standardised noise variance is not allowed to go: keeps the Cholesky factor
# of near-duplicate inputs well conditioned without blurring noiseless objectives (1e-4, the
# GPyTorch default, left Branin regret at ~0.03 in ``benchmarks/planner_tuning.py``). It
# also sets how far outside the others a reading must be to count as outlying (see
# planners._botorch._clip_outliers): the GP cannot resolve anything finer.
NOISE_FLOOR = 1e-5

SENTINEL_MAGNITUDE = 1e30
"""Smallest absolute value that may be an overrange code or a sentinel (see
:func:`clip_column`). Such codes are vast: 9.9e37 from EPICS and Keithley overrange, 3.4e38
(float32's maximum), 1e300; no physical reading in a campaign's units comes near 1e30. So a
value below it that is far outside the others is taken as real, and kept as measured."""


def outlying(values: ArrayLike, noise_floor: float = NOISE_FLOOR) -> NDArray[np.bool_]:
    """Which of ``values`` the planner's model would clip as outlying (see
    :func:`planners._botorch._clip_outliers`): at least :data:`SENTINEL_MAGNITUDE` in
    magnitude and far outside the values below it, however many such values there are
    (:func:`clip_column`). Non-finite values are never flagged (they are failures, not
    readings)."""
    y = np.asarray(values, dtype=np.float64)
    mask = np.zeros(len(y), dtype=bool)
    finite = np.isfinite(y)
    kept = y[finite]
    mask[finite] = model_column(kept, noise_floor) != kept
    return mask


def model_column(values: ArrayLike, noise_floor: float = NOISE_FLOOR) -> NDArray[np.float64]:
    """One output's finite values as a planner's model is given them (a new array): the
    outlying ones clipped by :func:`clip_column` with the factor ``sqrt(n / noise_floor)``
    of :func:`planners._botorch._clip_outliers`, nothing moved below two values.

    The Ax planner tells Ax these values (``planners._ax``): told raw, Ax's model saw the
    readings flattened beside the code's spike.
    """
    y = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    if len(y) < 2:
        return y
    return clip_column(y, math.sqrt(len(y) / noise_floor))


def best_index(values: Sequence[float], sign: float) -> tuple[int | None, NDArray[np.bool_]]:
    """The campaign's best trial: the index of the best finite value of ``values`` (the
    largest ``sign * value``) with the :func:`outlying` ones left out, and that mask.

    ``values`` holds one objective's value per trial, NaN for every trial that cannot be
    the best (not completed, infeasible, no finite value); the outlying values are those
    among the rest. The first of equal values wins (the trial that got there first).
    ``None`` when no value is left. A saturated detector's 9.9e37 was crowned the best
    trial, froze ``patience``'s best (stopping a campaign still improving) and set the
    scale of every panel (found in review); runner and report call this one function. A
    value below :data:`SENTINEL_MAGNITUDE` is never left out, however far outside the
    others: a hit after a flat background is the best trial.
    """
    y, keep, mask = _candidates(values)
    if not keep.any():
        return None, mask
    return int(np.argmax(np.where(keep, sign * y, -np.inf))), mask


def best_trace(
    values: Sequence[float], sign: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The best value so far at each index (NaN before the first), as :func:`best_index`
    picks it, and the outlying mask.

    The outlying values are judged over all of ``values`` (what is known now), so the
    trace never rises to a reading later seen to be a sentinel, and its last value is the
    value at :func:`best_index`; ``patience`` compares two of its points.
    """
    y, keep, mask = _candidates(values)
    signed = np.maximum.accumulate(np.where(keep, sign * y, -np.inf)) if len(y) else y
    trace = np.where(np.isfinite(signed), sign * signed, np.nan)
    return trace.astype(np.float64), mask


def _candidates(
    values: Sequence[float],
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """``values`` as floats, which of them may be the best, and which are outlying."""
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    mask = outlying(y)
    return y, np.isfinite(y) & ~mask, mask


# Largest outlying group at each end of a column that _far_outside looks for: it tests
# every pair of group sizes (a sentinel at one end must not hide one at the other). It only
# judges columns of sentinel-magnitude values (clip_column judges codes among ordinary
# readings against those readings, however many codes there are).
_MAX_OUTLIERS = 128
# Distance from the median beyond which a value is clipped whatever the others (see the end
# of _far_outside; clip_column clips any value above it onto the ordinary ones): its square,
# summed over the column, would overflow float64.
_UNREPRESENTABLE = 1e150


def clip_column(y: np.ndarray, factor: float) -> np.ndarray:
    """One column of :func:`planners._botorch._clip_outliers` (finite values; a new array).

    Only a value of sentinel magnitude (``|y| >= SENTINEL_MAGNITUDE``) is ever moved, and
    it is moved when it is far outside the ordinary values (those below that magnitude):
    its distance to their range is more than ``factor`` times that range (see
    :func:`planners._botorch._clip_outliers` for ``factor``: the ordinary values would be
    squashed below what the GP resolves), or it is above ``_UNREPRESENTABLE`` in
    magnitude, where the variance would overflow whatever the rest. It is moved onto the
    nearest of the ordinary values (their minimum or maximum: classic winsorising). Every
    ordinary value is kept as measured: a genuine extreme (a hit of 40 among 5s) reaches
    the model as it is.

    The sentinels are judged against the ordinary values only, never against each other,
    and however many they are. Judged by distances alone (:func:`_far_outside`, which
    must keep its outliers a strict minority, since by distance a majority cannot be told
    from a minority), 7 codes of 9.9e37 in 14 values (5 in 10) were no longer peeled off
    and the model saw the readings squashed, and 9.9e37 became the best trial; one reading
    and one code, or a code among equal readings, were not told apart at all; and two
    different codes (9.9e37 and 3.4e38) hid each other (the group's own range exceeded
    its gap). The magnitude says which side is the code: no physical reading comes near
    1e30, so a majority of codes is a detector saturated over most of the space, still
    no measurement (found in review).

    When every value is of sentinel magnitude there is nothing ordinary to judge against
    or clip onto: :func:`_far_outside`'s result stands (its own overflow guard included).
    """
    ordinary = np.abs(y) < SENTINEL_MAGNITUDE
    if not ordinary.any():
        return _far_outside(y, factor)
    low, high = float(y[ordinary].min()), float(y[ordinary].max())
    # Distance to the ordinary range: positive for every sentinel, since |y| >= 1e30 lies
    # outside any range of values below 1e30; no overflow for the same reason.
    gap = np.maximum(low - y, y - high)
    vast = ~ordinary & ((gap > factor * (high - low)) | (np.abs(y) > _UNREPRESENTABLE))
    out = np.array(y, dtype=np.float64, copy=True)
    out[vast] = np.clip(y[vast], low, high)
    return out


def _far_outside(y: np.ndarray, factor: float) -> np.ndarray:
    """The values of ``y`` with those far outside the others moved in (a new array), by
    their distances alone: :func:`clip_column`'s rule for a column with no ordinary value
    (every value at least ``SENTINEL_MAGNITUDE``; it judges the others by magnitude).

    First the kept values ``s[a..b]`` of the sorted values ``s``: outlying groups are peeled
    off the ends, fewest values first, until none is left. Peeling the ``i`` largest and
    the ``j`` smallest values (``i + j`` a strict minority) is allowed when each peeled end
    is separated from the rest by a gap wider than ``factor`` times the rest's range and
    wider than the group's own range (a cluster far away, not the end of a long tail).
    Nothing is peeled from a rest of equal values: it has no differences to protect, and a
    lone different value is information. Then, walking outwards from the kept values,
    every gap wider than ``factor`` times the range inside it (compressed so far) is
    closed; every other difference is kept, so a group of values keeps its order and
    internal spread unless that spread is itself out of all proportion. Last, a value more
    than ``_UNREPRESENTABLE`` from the median is clipped even where the rest are all equal.
    """
    n = len(y)
    order = np.argsort(y, kind="stable")
    s = y[order]
    lo, hi = 0, n - 1  # the kept values are s[lo..hi]
    budget = (n - 1) // 2  # peeled values stay a strict minority
    with np.errstate(over="ignore", invalid="ignore"):  # a gap of 2e308 is inf: still wide
        while budget > 0:
            k = min(budget, _MAX_OUTLIERS, hi - lo - 1)
            if k < 1:
                break
            up, low = np.meshgrid(np.arange(k + 1), np.arange(k + 1), indexing="ij")
            a, b = lo + low, hi - up  # candidate kept range
            rest = s[b] - s[a]
            above = np.minimum(b + 1, hi)
            below = np.maximum(a - 1, lo)
            gap_up, group_up = s[above] - s[b], s[hi] - s[above]
            gap_low, group_low = s[a] - s[below], s[below] - s[lo]
            ok_up = (up == 0) | ((gap_up > factor * rest) & (gap_up > group_up))
            ok_low = (low == 0) | ((gap_low > factor * rest) & (gap_low > group_low))
            total = up + low
            ok = ok_up & ok_low & (rest > 0) & (total >= 1) & (total <= budget)
            if not ok.any():
                break
            score = np.where(ok, total * (k + 1) + up, np.iinfo(np.int64).max)
            u, w = np.unravel_index(int(score.argmin()), score.shape)
            lo, hi, budget = lo + int(w), hi - int(u), budget - int(u + w)
    new = s.copy()
    for j in range(hi + 1, n):  # upwards from the kept values
        inside = new[j - 1] - new[lo]
        step = s[j] - s[j - 1]
        new[j] = new[j - 1] + (0.0 if step > factor * inside else step)
    for j in range(lo - 1, -1, -1):  # downwards likewise
        inside = new[hi] - new[j + 1]
        step = s[j + 1] - s[j]
        new[j] = new[j + 1] - (0.0 if step > factor * inside else step)
    # Whatever the rest, a value ~1e154 from the others overflows the variance (its square):
    # the GP could not be fitted at all, so it is clipped even among equal values.
    with np.errstate(over="ignore"):
        sane = s[np.abs(s - s[(n - 1) // 2]) <= _UNREPRESENTABLE]
    new = np.clip(new, sane.min(), sane.max())
    out = np.empty_like(new)
    out[order] = new
    return out
