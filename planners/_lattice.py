"""Designs of whole-number spaces that linear constraints leave narrow: Gibbs chains on the
lattice of feasible points.

Why. A design over integer columns finds its points by rejection: Sobol points snapped to
the grid, the feasible ones kept. "At most 3 of 30 additives" (30 ``int [0, 1]`` columns,
``a0 + ... + a29 <= 3``) has 4525 feasible points among 2^30, a fraction of 4e-6: 2^16
draws held none, and an ordinary campaign was refused as if its constraint were wrong
(found in review). Float columns in such a region are served by the polytope samplers of
``planners._baselines`` (an exact simplex map, or hit-and-run); rounding those onto the
grid would break the constraints they met, so whole numbers need a sampler of their own.

How. A feasible lattice point to start from (a mixed-integer program: SciPy's HiGHS, which
also decides exactly whether the grid holds any feasible point), then one chain per design
position, seeded by the position: a fixed schedule of moves, each drawing uniformly among
the feasible values on its line through the current point:

* along one column (the others held): every value the constraints and bounds leave it;
* along pairs of columns: what one gains, the other gives (``e_i - e_j``), or, for two
  columns of one equality (``a.v == c``, written as two inequalities), the move that keeps
  it (``a_j e_i - a_i e_j``, in whole steps for integers). An equality pins every column
  given the others, so moves of one column alone could never leave the start. Where no
  such move keeps every equality, the chains would stay put: that region is left to
  rejection sampling and its clear error.

Each move is a Gibbs update of the uniform distribution on the feasible points (integer
columns on their grid, float columns in their interval), so the chain keeps that
distribution and the design spreads over the feasible points. The arithmetic is per row
and elementwise (no BLAS product), so a position's point does not depend on how many
positions are drawn together: the design stays positional, as the other designs are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from planners._space import FloatParameter, IntParameter, Space

# Full sweeps of the schedule per chain (each: a move along every column, then along
# ``len(columns)`` pairs of them). 30 binary columns under ``sum <= 3`` mix within a few
# sweeps (every column can be set afresh once the others leave room); wide integer ranges
# take longer, and a design point is cheap next to a measurement.
_SWEEPS = 24
# Steps between exact recomputations of a chain's slack (no drift of float columns).
_REFRESH = 64
# Chains run side by side in chunks of at most this many numbers held at once.
_MEMORY = 2**22


@dataclass(frozen=True)
class Lattice:
    """``A v <= b`` over the constrained columns ``columns`` (raw values ``v``), integer
    where ``integer``; the columns in no constraint are the design's own (see
    ``planners._baselines._Polytope``, whose ``columns`` and ``to_unit`` this has too:
    the design draws the free columns and maps the chains' ends the same way).
    """

    A: torch.Tensor  # rows x m
    b: torch.Tensor  # rows
    columns: tuple[int, ...]
    parameters: tuple[FloatParameter | IntParameter, ...]
    lower: torch.Tensor
    upper: torch.Tensor
    integer: torch.Tensor  # bool
    start: torch.Tensor  # a feasible point
    # per pair of columns (i, j): the move (d_i, d_j) that keeps an equality over both
    # (see ``_directions``); (1, -1) where none holds both
    directions: dict[tuple[int, int], tuple[float, float]]

    def to_unit(self, V: torch.Tensor) -> torch.Tensor:
        """The unit-cube coordinates (``n x m``) that ``Space.from_unit_cube`` maps to the
        values ``V``: the middle of a linear integer's cell, else the encoded coordinate."""
        U = torch.empty_like(V)
        for i, p in enumerate(self.parameters):
            lo, hi = (float(x) for x in p.bounds)
            v = V[:, i]
            if p.log:
                U[:, i] = (v.log10() - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
            elif isinstance(p, IntParameter):
                U[:, i] = (v - lo + 0.5) / (hi - lo + 1)
            else:
                U[:, i] = (v - lo) / (hi - lo)
        return U.clamp(0.0, 1.0)

    def ends(self, seeds: Sequence[int]) -> torch.Tensor:
        """The constrained columns' values (``n x m``) at the end of one chain per seed."""
        schedule = _schedule(len(self.columns))
        rows = len(self.A) + 1
        per_chunk = max(1, _MEMORY // (len(schedule) + rows))
        ends = [
            self._run(seeds[first : first + per_chunk], schedule)
            for first in range(0, len(seeds), per_chunk)
        ]
        return torch.cat(ends) if ends else torch.empty(0, len(self.columns), dtype=torch.float64)

    def _run(self, seeds: Sequence[int], schedule: list[tuple[int, int]]) -> torch.Tensor:
        draws = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed % 2**63)
            draws.append(torch.rand(len(schedule), generator=gen, dtype=torch.float64))
        u = torch.stack(draws)
        A, b, lower, upper = self.A, self.b, self.lower, self.upper
        V = self.start.expand(len(seeds), -1).clone()
        slack = torch.empty(0)
        for step, (i, j) in enumerate(schedule):
            if step % _REFRESH == 0:
                slack = b - products(V, A)
            if j < 0:
                rate = A[:, i]
                low, high = lower[i] - V[:, i], upper[i] - V[:, i]
                whole = bool(self.integer[i])
            else:
                di, dj = self.directions.get((i, j), (1.0, -1.0))
                rate = A[:, i] * di + A[:, j] * dj
                low_i, high_i = _steps(lower[i] - V[:, i], upper[i] - V[:, i], di)
                low_j, high_j = _steps(lower[j] - V[:, j], upper[j] - V[:, j], dj)
                low, high = torch.maximum(low_i, low_j), torch.minimum(high_i, high_j)
                whole = bool(self.integer[i] or self.integer[j])
            # rows: rate * t <= slack; the current point (t = 0) always meets them
            room = slack.clamp(min=0.0) / rate
            high = torch.minimum(high, torch.where(rate > 0, room, math.inf).amin(dim=-1))
            low = torch.maximum(low, torch.where(rate < 0, room, -math.inf).amax(dim=-1))
            if whole:
                low = torch.ceil(low - 1e-9).clamp(max=0.0)
                high = torch.floor(high + 1e-9).clamp(min=0.0)
                t = torch.minimum(low + torch.floor(u[:, step] * (high - low + 1.0)), high)
            else:
                t = low + u[:, step] * (high - low)
            if j < 0:
                V[:, i] += t
            else:
                V[:, i] += t * di
                V[:, j] += t * dj
            slack = slack - t.unsqueeze(-1) * rate
        return V


def _steps(low: torch.Tensor, high: torch.Tensor, d: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The steps ``t`` with ``low <= t * d <= high`` (``low <= 0 <= high``)."""
    return (low / d, high / d) if d > 0 else (high / d, low / d)


def lattice(space: Space, columns: Sequence[int]) -> Lattice | None:
    """The space's linear constraints over ``columns`` (float and int columns, some int) as
    a :class:`Lattice`, or ``None`` when no point of the grid meets them all."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    at = {j: k for k, j in enumerate(columns)}
    parameters = tuple(space.columns[j] for j in columns)
    A = np.zeros((len(space.constraints), len(columns)))
    b = np.zeros(len(space.constraints))
    index = {p.name: i for i, p in enumerate(space.columns)}
    for r, c in enumerate(space.constraints):  # slack = constant + sum(a * v) >= 0
        b[r] = c.constant
        for name, a in c.coefficients.items():
            A[r, at[index[name]]] = -a
    lower = np.array([float(p.bounds[0]) for p in parameters])  # type: ignore[union-attr]
    upper = np.array([float(p.bounds[1]) for p in parameters])  # type: ignore[union-attr]
    integer = np.array([isinstance(p, IntParameter) for p in parameters])
    found = milp(
        np.zeros(len(columns)),
        constraints=LinearConstraint(A, -np.inf, b),
        integrality=integer.astype(int),
        bounds=Bounds(lower, upper),
    )
    if found.x is None:
        return None
    start = np.where(integer, np.round(found.x), found.x).clip(lower, upper)
    if not np.all(A @ start <= b + 1e-9 * (1.0 + np.abs(A) @ np.abs(start) + np.abs(b))):
        return None  # pragma: no cover - HiGHS returns a feasible point or none
    design = Lattice(
        A=torch.as_tensor(A),
        b=torch.as_tensor(b),
        columns=tuple(columns),
        parameters=parameters,  # type: ignore[arg-type]
        lower=torch.as_tensor(lower),
        upper=torch.as_tensor(upper),
        integer=torch.as_tensor(integer),
        start=torch.as_tensor(start),
        directions=_directions(A, b, integer),
    )
    # Chains that cannot leave their start (equalities no move here keeps) would give the
    # one point at every position: refused as rejection refuses the region, not run as N
    # copies of a trial (found in review).
    probe = design.ends(list(range(_PROBE_CHAINS)))
    if len(torch.unique(probe, dim=0)) < 2:
        return None
    return design


# Chains run when a lattice is made, to see that they move at all.
_PROBE_CHAINS = 8


def _directions(
    A: NDArray[np.float64], b: NDArray[np.float64], integer: NDArray[np.bool_]
) -> dict[tuple[int, int], tuple[float, float]]:
    """For each pair of columns in one equality (a row ``a.v <= c`` beside ``-a.v <= -c``,
    as ``==`` is written), the move that keeps it: ``(a_j, -a_i)``, in the least whole
    steps when either column is an integer (``n0 + 2 n1 == 40``: ``(2, -1)``; ``n0 == n1``:
    ``(1, 1)``). Moves along ``e_i - e_j`` alone kept only sums with equal coefficients."""
    out: dict[tuple[int, int], tuple[float, float]] = {}
    rows = len(A)
    for r in range(rows):
        for q in range(r + 1, rows):
            scale = 1e-9 * (1.0 + np.abs(A[r]).sum() + abs(b[r]))
            if not (np.abs(A[r] + A[q]).max() <= scale and abs(b[r] + b[q]) <= scale):
                continue
            nonzero = np.flatnonzero(np.abs(A[r]) > scale)
            for i in nonzero:
                for j in nonzero:
                    if i == j or (int(i), int(j)) in out:
                        continue
                    di, dj = float(A[r, j]), -float(A[r, i])
                    if integer[i] or integer[j]:
                        whole = _whole(di, dj)
                        if whole is None:
                            continue
                        di, dj = whole
                    out[int(i), int(j)] = (di, dj)
    return out


def _whole(a: float, b: float) -> tuple[float, float] | None:
    """``(a, b)`` as the least whole numbers in that ratio, or ``None`` (not whole)."""
    if not (float(a).is_integer() and float(b).is_integer()):
        return None
    g = math.gcd(int(a), int(b)) or 1
    return a / g, b / g


def _schedule(m: int) -> list[tuple[int, int]]:
    """The chains' moves: per sweep each column alone (``(i, -1)``), then ``m`` pairs
    ``(i, i + s)`` with the offset ``s`` turning from sweep to sweep, so every pair of
    columns comes up within ``m - 1`` sweeps."""
    moves: list[tuple[int, int]] = []
    for sweep in range(_SWEEPS):
        moves += [(i, -1) for i in range(m)]
        if m > 1:
            offset = 1 + sweep % (m - 1)
            moves += [(i, (i + offset) % m) for i in range(m)]
    return moves


def products(X: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``X @ A.T`` summed term by term in a fixed order: a row's result does not depend on
    the other rows, as a BLAS product's may (its kernel, and so its rounding, can change
    with the number of rows), so a chain ends at the same point however many positions
    are drawn together (the design stays positional to the bit)."""
    out = torch.zeros(*X.shape[:-1], len(A), dtype=X.dtype)
    for j in range(X.shape[-1]):
        out += X[..., j : j + 1] * A[:, j]
    return out
