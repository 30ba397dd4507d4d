"""Pareto fronts and hypervolumes of measured outputs, in plain numpy.

Used by ``loop`` status/export/report and the benchmarks, which must stay fast to import:
nothing here imports torch. All functions take ``Y`` as an ``n x m`` array of *raw* output
values (output units, columns in objective order) and the :class:`~planners.Objective` list,
and work internally in the maximisation-signed space (``sign * y``), where a point dominates
another if it is at least as good in every objective and better in one.

Reference points (``ref``) are given in output units too, like ``Objective.reference_point``:
the worst value of each objective still worth having. The hypervolume is the volume of the
region that the feasible points dominate and that dominates the reference point; points not
strictly better than the reference point in every objective add nothing. Where a campaign
gives none, :func:`reference_point` infers one from every feasible trial (what
``status``, the report and ``patience`` measure from) and :func:`front_reference_point`
from the Pareto front (what the BoTorch planner's acquisition aims above); see each for
why they differ.

Hypervolumes are exact (no Monte Carlo): a sweep for two objectives and recursive slicing
along the last objective for three and four (HSO, While et al. 2006), which is cheap at the
sizes of a lab campaign (fronts of tens of points).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from planners._protocol import Objective

# Inferred reference point: this fraction of the observed range below the worst value.
_REFERENCE_MARGIN = 0.1
# Elements per vectorised comparison or prefix table (~8 MB of float64 at most).
_COMPARE_CELLS = 1_000_000


def _signs(objectives: Sequence[Objective]) -> NDArray[np.float64]:
    return np.array([o.sign for o in objectives], dtype=np.float64)


def _as_matrix(Y: ArrayLike, objectives: Sequence[Objective]) -> NDArray[np.float64]:
    m = len(objectives)
    if m == 0:
        raise ValueError("at least one objective is needed")
    arr = np.asarray(Y, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, m)
    if arr.ndim == 1 and m == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != m:
        raise ValueError(f"Y must be n x {m} (one column per objective), got shape {arr.shape}")
    return arr


def _usable(Y: NDArray[np.float64], feasible: ArrayLike | None) -> NDArray[np.bool_]:
    """Rows that count: finite in every objective and feasible (when a mask is given)."""
    mask = np.asarray(np.isfinite(Y).all(axis=1), dtype=bool)
    if feasible is not None:
        f = np.asarray(feasible, dtype=bool).reshape(-1)
        if f.shape[0] != Y.shape[0]:
            raise ValueError(f"feasible has {f.shape[0]} entries for {Y.shape[0]} rows of Y")
        mask &= f
    return mask


def _nondominated(S: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Mask of the rows of a maximisation-signed matrix that no other row dominates.

    Duplicated rows are all kept (neither dominates the other). Rows are compared with all
    rows a block at a time (at most ``_COMPARE_CELLS`` comparisons per numpy call): a Python
    loop per row was most of the time of a hypervolume with 3-4 objectives, which prunes
    every slice with this.
    """
    n, m = S.shape
    keep = np.ones(n, dtype=bool)
    block = max(1, _COMPARE_CELLS // max(1, n * m))
    for start in range(0, n, block):
        rows = S[start : start + block]
        # ge[i, j]: row j is at least as good as row i everywhere; gt: better somewhere.
        # Column by column: numpy reduces a short last axis slowly.
        ge = np.ones((rows.shape[0], n), dtype=bool)
        gt = np.zeros((rows.shape[0], n), dtype=bool)
        for j in range(m):
            ge &= S[None, :, j] >= rows[:, j, None]
            gt |= S[None, :, j] > rows[:, j, None]
        keep[start : start + block] = ~(ge & gt).any(axis=1)
    return keep


def pareto_mask(
    Y: ArrayLike, objectives: Sequence[Objective], feasible: ArrayLike | None = None
) -> NDArray[np.bool_]:
    """Which rows of ``Y`` are on the Pareto front of the feasible, finite rows.

    A row worse than an objective's given ``reference_point`` (the worst value still worth
    having) is not on the front: it adds nothing to the hypervolume, and Ax leaves such
    points off its front too (found in review: a trial at cost 21 listed on the front of a
    campaign whose cost reference was 16). Such a row cannot dominate a row within the
    reference point either, so leaving it out first changes no other row's place.

    Args:
        Y: ``n x m`` raw output values, columns in objective order.
        objectives: the ``m`` objectives (their goals give the direction).
        feasible: optional ``n`` booleans (e.g. outcome constraints satisfied); infeasible
            rows are never on the front and do not dominate anything.

    Returns:
        ``n`` booleans. With one objective: the rows attaining the best value.
    """
    arr = _as_matrix(Y, objectives)
    usable = _usable(arr, feasible) & worth_having(arr, objectives)
    out = np.zeros(arr.shape[0], dtype=bool)
    if usable.any():
        S = arr[usable] * _signs(objectives)
        out[np.flatnonzero(usable)[_nondominated(S)]] = True
    return out


def front_after(
    front: ArrayLike, y: ArrayLike, objectives: Sequence[Objective], feasible: bool = True
) -> tuple[bool, NDArray[np.bool_]]:
    """One more row for a front :func:`pareto_mask` made: ``(on, pushed_off)``, whether row
    ``y`` joins the front and which of the rows of ``front`` it dominates.

    The same front as :func:`pareto_mask` of all the rows, at the cost of comparing ``y``
    with the front alone (a row that dominates ``y`` is on the front or dominated by a row
    that is, and dominates ``y`` too): a campaign that ranked every trial after each one
    spent 77 ms a trial at 2000 trials with 3 objectives, growing with the square of the
    trials (found in review).
    """
    rows = _as_matrix(front, objectives)
    row = _as_matrix(np.reshape(np.asarray(y, dtype=np.float64), (1, -1)), objectives)
    none = np.zeros(rows.shape[0], dtype=bool)
    if not (_usable(row, [feasible]) & worth_having(row, objectives))[0]:
        return False, none
    signs = _signs(objectives)
    S, r = rows * signs, row[0] * signs
    if ((S >= r).all(axis=1) & (S > r).any(axis=1)).any():
        return False, none
    return True, (r >= S).all(axis=1) & (r > S).any(axis=1)


def worth_having(Y: ArrayLike, objectives: Sequence[Objective]) -> NDArray[np.bool_]:
    """Rows at least as good as every given ``reference_point`` (objectives without one
    do not judge; NaN is judged by :func:`_usable`, not here)."""
    arr = _as_matrix(Y, objectives)
    keep = np.ones(arr.shape[0], dtype=bool)
    for j, objective in enumerate(objectives):
        ref = objective.reference_point
        if ref is not None:
            column = arr[:, j]
            better = column >= ref if objective.goal == "maximize" else column <= ref
            keep &= better | ~np.isfinite(column)
    return keep


def reference_point(
    objectives: Sequence[Objective], Y: ArrayLike, feasible: ArrayLike | None = None
) -> NDArray[np.float64]:
    """The reference point the campaign's hypervolume is measured from, in output units.

    Each objective's ``reference_point`` where given; otherwise the worst value observed
    moved 10 % of the observed range further towards "worse" (down for a maximised
    objective, up for a minimised one), both the worst value and the range taken over the
    feasible rows, or over all finite rows while none is feasible. Every feasible trial is
    inside, so every front there has been has a volume and a front that improves grows it.
    The range comes from the same rows as the worst value: an infeasible trial's reading
    (an overrange sentinel such as 9.9e37 where the constraint fails) once set the scale of
    the feasible volume (found in review: a hypervolume of 1.75e37 for a front of values
    below 5). The front's own nadir (:func:`front_reference_point`) moves up with the
    front: a trial that dominates every earlier one leaves a front of one point, 10 % of
    its magnitude above the reference, and the earlier fronts at 0 (a report trace flat at
    0 until that trial; a ``patience`` gain below any ``min_improvement`` for a campaign
    that had just tripled its front).

    Once a trial is feasible and two feasible values of each objective differ, it moves
    only towards "worse", as trials set a new worst value or widen the range, which only
    enlarges volumes: ``hypervolume_trace`` and ``patience`` measure every prefix from one
    reference point, so no gain comes from that move, but two ``status`` readings taken at
    different times may differ by it (give ``reference_point`` for a fixed scale). With no
    range (one value) the move is 10 % of the value's magnitude (0.1 at zero).

    Raises:
        ValueError: a reference point is missing and there is no finite value to infer it.
    """
    arr = _as_matrix(Y, objectives)
    rows = _usable(arr, feasible)
    if not rows.any():
        rows = _usable(arr, None)
    data = arr[rows]
    return _inferred(objectives, data)


def front_reference_point(
    objectives: Sequence[Objective], Y: ArrayLike, feasible: ArrayLike | None = None
) -> NDArray[np.float64]:
    """The reference point a hypervolume acquisition aims above, in output units.

    Each objective's ``reference_point`` where given; otherwise the worst value on the
    Pareto front (the nadir) moved 10 % of the front's range towards "worse": BoTorch's
    ``infer_reference_point``, which Ax uses too. Every front point counts, and
    improvement is measured near the front rather than from the worst trial of all, which
    makes a planner spend its trials on the front's far extremes. With a ``feasible`` mask
    the front is that of the feasible rows when there are any. A front of one point moves
    by 10 % of its magnitude (or 0.1 at zero). Not for a campaign's reported hypervolume:
    it moves with the front (see :func:`reference_point`).

    Raises:
        ValueError: a reference point is missing and there is no finite value to infer it.
    """
    arr = _as_matrix(Y, objectives)
    rows = _usable(arr, feasible)
    if feasible is not None and not rows.any():
        rows = _usable(arr, None)
    data = arr[rows]
    if data.shape[0] > 0:
        data = data[_nondominated(data * _signs(objectives))]
    return _inferred(objectives, data)


def _inferred(objectives: Sequence[Objective], data: NDArray[np.float64]) -> NDArray[np.float64]:
    """Given reference points, else the worst value of ``data`` less 10 % of its range (of
    the worst value's magnitude where that range is 0).

    One set of rows for both: a margin from a wider set (every finite row, infeasible ones
    included) let one infeasible sentinel set the scale of the feasible volume.
    """
    ref = np.empty(len(objectives), dtype=np.float64)
    for j, o in enumerate(objectives):
        if o.reference_point is not None:
            ref[j] = o.reference_point
            continue
        if data.shape[0] == 0:
            raise ValueError(
                f"objective {o.name!r} has no reference_point and no measured values to "
                "infer one from; set reference_point for it"
            )
        worst = float((data[:, j] * o.sign).min())
        span = float(np.ptp(data[:, j]))
        if span <= 0:
            span = abs(worst) if worst != 0 else 1.0
        ref[j] = o.sign * (worst - _REFERENCE_MARGIN * span)
    return ref


def _hv2(S: NDArray[np.float64]) -> float:
    """Area dominated by rows of ``S`` (2 columns, all > 0: reference at the origin)."""
    order = np.argsort(-S[:, 0], kind="stable")
    xs, ys = S[order, 0], S[order, 1]
    # Sweep from the largest first coordinate: each point adds the strip between its
    # first coordinate and the next one's, up to the best second coordinate so far.
    best_y = np.maximum.accumulate(ys)
    widths = xs - np.append(xs[1:], 0.0)
    return float((widths * best_y).sum())


def _hv3(S: NDArray[np.float64]) -> float:
    """Volume dominated by rows of ``S`` (3 columns, all > 0), sliced along the last column.

    Slice ``k`` (between the ``k``-th and next highest third coordinate) is the area that
    the ``k + 1`` highest points dominate in the first two columns. All those areas come
    from one table: with the points sorted by first coordinate (descending), the area of a
    set is ``sum(width_t * best second coordinate among its points up to t)``, and row ``k``
    of the table keeps only the points in slice ``k``'s set. Same volume as slicing into
    2-D sweeps one by one, without a Python call per slice.
    """
    n = S.shape[0]
    order = np.argsort(-S[:, 2], kind="stable")
    levels = S[order, 2]
    heights = levels - np.append(levels[1:], 0.0)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)  # a point's position in the third-coordinate order
    by_x = np.argsort(-S[:, 0], kind="stable")
    xs, ys, joins = S[by_x, 0], S[by_x, 1], rank[by_x]
    widths = xs - np.append(xs[1:], 0.0)
    total = 0.0
    step = max(1, _COMPARE_CELLS // n)
    for start in range(0, n, step):
        k = np.arange(start, min(n, start + step))[:, None]
        best = np.maximum.accumulate(np.where(joins[None, :] <= k, ys[None, :], 0.0), axis=1)
        areas = best @ widths
        h = heights[start : start + step]
        total += float((h[h > 0] * areas[h > 0]).sum())
    return total


def _hv(S: NDArray[np.float64]) -> float:
    """Exact volume dominated by rows of ``S`` (all > 0, reference at the origin)."""
    n, m = S.shape
    if n == 0:
        return 0.0
    if m == 1:
        return float(S[:, 0].max())
    if m == 2:
        return _hv2(S)
    S = S[_nondominated(S)]
    if m == 3:
        return _hv3(S)
    # Slice along the last column from the top: between consecutive distinct levels the
    # cross-section is the (m-1)-volume dominated by the points at or above the slice.
    order = np.argsort(-S[:, -1], kind="stable")
    S = S[order]
    levels = S[:, -1]
    total = 0.0
    for i in range(S.shape[0]):
        lower = levels[i + 1] if i + 1 < S.shape[0] else 0.0
        height = levels[i] - lower
        if height > 0:
            total += height * _hv(S[: i + 1, :-1])
    return total


def _signed_shifted(
    Y: ArrayLike,
    objectives: Sequence[Objective],
    ref: ArrayLike | None,
    feasible: ArrayLike | None,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Signed values minus the signed reference (``n x m``) and the rows that count."""
    arr = _as_matrix(Y, objectives)
    if ref is None:
        r = reference_point(objectives, arr, feasible)
    else:
        r = np.asarray(ref, dtype=np.float64).reshape(-1)
        if r.shape[0] != len(objectives):
            raise ValueError(f"ref has {r.shape[0]} values for {len(objectives)} objectives")
    signs = _signs(objectives)
    shifted = arr * signs - r * signs
    usable = _usable(arr, feasible) & (shifted > 0).all(axis=1)
    return shifted, usable


def hypervolume(
    Y: ArrayLike,
    objectives: Sequence[Objective],
    ref: ArrayLike | None = None,
    feasible: ArrayLike | None = None,
) -> float:
    """Exact hypervolume dominated by the feasible rows of ``Y``, in the signed space.

    Args:
        Y: ``n x m`` raw output values (1–4 objectives are supported; more work but grow
            expensive).
        objectives: the ``m`` objectives.
        ref: reference point in output units; default :func:`reference_point` of ``Y``.
        feasible: optional ``n`` booleans; infeasible and non-finite rows add nothing.

    Returns:
        The volume, in products of the outputs' units (0.0 when no row beats ``ref``).
    """
    shifted, usable = _signed_shifted(Y, objectives, ref, feasible)
    return _hv(shifted[usable])


def hypervolume_trace(
    Y: ArrayLike,
    objectives: Sequence[Objective],
    ref: ArrayLike | None = None,
    feasible: ArrayLike | None = None,
    *,
    max_evaluations: int | None = None,
) -> list[float]:
    """Hypervolume of the first ``k`` rows for ``k = 1 .. n`` (trial order).

    One reference point for the whole trace (given, or :func:`reference_point` of all of
    ``Y``), so the trace never decreases and values are comparable along it.

    Args:
        max_evaluations: compute the volume at most this many times. The trace changes only
            where the front does; when it changes more often than this, the volume is
            computed at this many of those changes, spread evenly over them and always
            including the last, and held in between: each value is then the exact volume
            at or before that trial (never above the truth, the same steps at the computed
            changes) and the last value is exact. A long campaign's trace then costs a
            bounded number of volumes. ``None``: every change (exact everywhere).
    """
    if max_evaluations is not None and max_evaluations < 1:
        raise ValueError(f"max_evaluations must be at least 1, got {max_evaluations}")
    shifted, usable = _signed_shifted(Y, objectives, ref, feasible)
    evaluate: set[int] | None = None  # rows after which to compute the volume; None: all
    if max_evaluations is not None:
        changes = [i for i, _ in _front_changes(shifted, usable)]
        if len(changes) > max_evaluations:
            picks = np.linspace(0, len(changes) - 1, max_evaluations).round().astype(np.int64)
            evaluate = {changes[p] for p in picks}
    volumes = {
        i: _hv(front)
        for i, front in _front_changes(shifted, usable)
        if evaluate is None or i in evaluate
    }
    trace: list[float] = []
    current = 0.0
    for i in range(shifted.shape[0]):
        current = volumes.get(i, current)
        trace.append(current)
    return trace


def _front_changes(
    shifted: NDArray[np.float64], usable: NDArray[np.bool_]
) -> Iterator[tuple[int, NDArray[np.float64]]]:
    """``(row, front after it)`` for each row that changes the front of the rows so far.

    A dominated (or repeated) row leaves the front, and so the volume, unchanged.
    """
    front = np.empty((0, shifted.shape[1]), dtype=np.float64)
    for i in range(shifted.shape[0]):
        if usable[i]:
            row = shifted[i]
            if not ((front >= row).all(axis=1)).any():
                front = np.vstack([front[~(row >= front).all(axis=1)], row])
                yield i, front
