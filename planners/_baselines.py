"""Model-free planners: scrambled Sobol and uniform random designs.

Both are *positional*: the k-th proposal of a campaign depends only on the seed and on k,
where k counts every trial the planner has heard of (ingested observations, any outcome,
plus the points still pending) and the index within the batch. A campaign rebuilt from its
store by re-ingesting all trials therefore continues exactly the same sequence, with no
pickled generator state. The BoTorch planner reuses these designs for its initial points.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import weakref
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from planners._constraints import InfeasibleSpaceError
from planners._lattice import Lattice, lattice, products
from planners._protocol import Observation, check_observations
from planners._space import (
    ChoiceParameter,
    FloatParameter,
    IntParameter,
    InvalidPoint,
    Point,
    Space,
)

logger = logging.getLogger(__name__)

DesignKind = Literal["sobol", "random"]

# Finite spaces up to this many points are enumerated to find a free point when the design
# collides with a pending one; larger finite spaces are searched by random draws.
_MAX_ENUMERATED_POINTS = 4096
_RANDOM_REPLACEMENT_TRIES = 256
# Rejection sampling of constrained spaces (see PositionalDesign.feasible_unit_points). The
# Sobol design's k-th point is the sequence's k-th feasible draw, with no quota on k: a narrow
# region yields as many points as a campaign asks for. It ends (an InfeasibleSpaceError with
# the estimated feasible fraction) where it cannot find a next point: none in the first
# _MIN_DRAWS draws; past _MAX_DRAWS, a gap longer than _STALL_GAPS mean gaps (and _MIN_DRAWS);
# or _MAX_DESIGN_DRAWS draws in all (~20 s to 1 min of sampling). Draws before _MAX_DRAWS are
# never refused, so designs that fitted in the former fixed budget are unchanged. The
# optimiser's raw samples use whatever feasible points the first _MAX_DRAWS draws hold, or
# none when the first _MIN_DRAWS hold none (the BoTorch planner then starts from the points
# the campaign already knows, see planners/_botorch.py:_feasible_raw_samples).
_MIN_DRAWS = 2**16
_MAX_DRAWS = 2**20
_MAX_DESIGN_DRAWS = 2**26
_STALL_GAPS = 32  # longest observed gap: ~10 mean gaps (thin bands, corners; 2-6 dims)
# Largest chunk of the Sobol sequence drawn at once while searching a rare feasible region.
_MAX_CHUNK = 2**17
# A narrow polytope (linear constraints over float and int parameters) that rejection would
# search for long, or give up on (the random design: 2^16 draws per point): fewer than
# _POLYTOPE_MIN_HITS feasible points in the first _MIN_DRAWS points of a fixed Sobol
# sequence, a feasible fraction below ~1.2e-4 (a test on the space alone, so a design is one
# or the other from its first point on; every space with more room keeps its rejection
# design unchanged: 'x + y >= 1.98' on [0, 1]^2 has 12). Its design is drawn in two parts
# (see _Polytope): the columns in no constraint come from the design's own sequence as in
# an unconstrained space, the constrained columns from the polytope, by an exact simplex
# transform where one applies (kept where at least _SIMPLEX_MIN_HITS of _SIMPLEX_TEST_DRAWS
# transformed Sobol points are feasible) and by hit-and-run chains otherwise.
_POLYTOPE_MIN_HITS = 8
_SIMPLEX_TEST_DRAWS = 4096
_SIMPLEX_MIN_HITS = 16  # an acceptance of ~0.4%: rejection costs ~250 vectorised draws a point
# Hit-and-run mixes in O(m^2) steps in m dimensions (Lovasz): one independent chain of
# max(_CHAIN_MIN_STEPS, _CHAIN_STEPS_PER_DIM2 * m^2) steps per design position. One chain
# thinned by BoTorch's default 20 steps barely moved in >= 8 dimensions: on 12 fractions
# with sum <= 1, 14 consecutive points were near copies (found in review).
_CHAIN_MIN_STEPS = 100
_CHAIN_STEPS_PER_DIM2 = 4
_CHAIN_MEMORY = 2**22  # numbers held at once (32 MB): chains are run in chunks
_CHAIN_REFRESH = 64  # steps between exact recomputations of a chain's slack


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. campaign seed and trial position).

    ``SeedSequence`` hashes its entropy, so neighbouring positions give unrelated streams,
    unlike ``seed + k``.
    """
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts])
    return int(state.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def point_key(space: Space, point: Point) -> Hashable:
    """Identity of a point for duplicate checks (``1`` and ``1.0`` compare equal): its
    values as the space coerces them (a candidate table's row for a table)."""
    coerced = space.validate(point) if space.candidates is not None else space.coerce(point)
    return tuple(repr(coerced[name]) for name in space.names)


class PositionalDesign:
    """A seeded space-filling sequence indexed by trial position.

    Args:
        space: the search space.
        seed: the campaign seed.
        kind: ``sobol`` (scrambled, balanced) or ``random`` (independent uniform draws in the
            encoded scale).
        centre_first: position 0 is the centre of the space (the middle of each encoded
            column: the log-scale midpoint of a log float or int, the middle level of another
            integer or choice column) and position ``k`` the sequence's point ``k - 1``;
            ignored for a candidate table, or when the centre breaks a parameter constraint.
    """

    def __init__(
        self, space: Space, seed: int, kind: DesignKind = "sobol", *, centre_first: bool = False
    ) -> None:
        if kind not in ("sobol", "random"):
            raise ValueError(f"unknown design kind {kind!r}; use 'sobol' or 'random'")
        self.space = space
        self.seed = int(seed)
        self.kind: DesignKind = kind
        self.centre: Point | None = _centre(space) if centre_first else None
        # Memos of the design from position 0 on: positional, and cheap to extend.
        self._feasible_U = torch.empty(0, space.dim, dtype=torch.float64)
        self._sobol: torch.quasirandom.SobolEngine | None = None
        self._drawn = 0
        self._last_hit = -1  # sequence index of the last feasible draw kept
        self._ended = False  # the constrained Sobol design has no further point
        self._candidate_rows: list[int] = []
        self._polytope: _Polytope | Lattice | None | bool = False  # not tested yet
        self._finite: tuple[float, list[Point] | None] | None = None  # see _feasible_points
        self._row_of: dict[Hashable, int] | None = None  # candidate row by point_key

    def unit_points(self, start: int, n: int) -> torch.Tensor:
        """Positions ``start .. start + n - 1`` of the sequence as ``n x d`` points of [0, 1]^d."""
        d = self.space.dim
        if n <= 0:
            return torch.empty(0, d, dtype=torch.float64)
        if self.kind == "sobol":
            # A fresh engine per call keeps the design stateless: fast_forward makes position
            # k the same point however the campaign got there.
            engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=self.seed % 2**31)
            if start > 0:
                engine.fast_forward(start)
            return engine.draw(n, dtype=torch.float64)
        rows = []
        for k in range(start, start + n):
            gen = torch.Generator().manual_seed(derive_seed(self.seed, k))
            rows.append(torch.rand(d, generator=gen, dtype=torch.float64))
        return torch.stack(rows)

    def feasible_unit_points(self, start: int, n: int) -> torch.Tensor:
        """Positions ``start ..`` of the design restricted to the parameter constraints.

        Rejection sampling that keeps the design positional: ``sobol`` continues one Sobol
        sequence from its first point and keeps the feasible ones in order (position k is the
        k-th feasible point, however the campaign got there; whether the design ends before
        k depends only on the sequence, see ``_MAX_DESIGN_DRAWS``); ``random`` redraws from
        position k's own stream until a draw is feasible. A narrow polytope (see
        ``_Polytope``) maps the same draws onto the polytope first, or draws its constrained
        columns by one hit-and-run chain per position: positional in the same way.

        Raises:
            InfeasibleSpaceError: the design cannot find a feasible point for a position (the
                message gives the estimated feasible fraction and the most restrictive
                constraint).
        """
        space = self.space
        polytope = self._narrow_polytope()
        if polytope is not None and self.kind == "random":
            if isinstance(polytope, _Polytope) and polytope.groups:
                return torch.cat(
                    [self._random_simplex_point(polytope, k) for k in range(start, start + n)]
                )
            return self._chain_design(polytope, start, n)
        if self.kind == "random":
            rows = []
            for k in range(start, start + n):
                gen = torch.Generator().manual_seed(derive_seed(self.seed, k))
                drawn = 0
                while True:
                    U = torch.rand(64, space.dim, generator=gen, dtype=torch.float64)
                    ok = space.feasible(space.from_unit_cube(U))
                    drawn += len(U)
                    if bool(ok.any()):
                        rows.append(U[int(ok.nonzero()[0, 0])])
                        break
                    if drawn >= _MIN_DRAWS:
                        raise _infeasible(space, drawn, 0)
            return torch.stack(rows)
        need = start + n
        self._draw_feasible(need, _MAX_DESIGN_DRAWS)
        if len(self._feasible_U) < need:
            raise _infeasible(space, self._drawn, len(self._feasible_U), need=need)
        return self._feasible_U[start:need]

    def leading_feasible_unit_points(self, n: int) -> torch.Tensor:
        """Up to ``n`` first feasible points of the ``sobol`` sequence, from ``_MAX_DRAWS``
        draws at most: fewer when the constraints leave less room.

        For uses that want many feasible points but can do with fewer (the raw samples of
        the model's optimiser): a narrow feasible region must not fail a suggest merely
        because it holds fewer points than a fixed quota. The search follows the design's
        rule (``_accepted``): it stops after ``_MIN_DRAWS`` draws without a first hit, and
        goes on to ``_MAX_DRAWS`` only once it has one. Searching 2^20 draws for a first
        point would cost ~0.4 s (2-D) on every suggest of a narrow space; a caller with
        feasible points of its own (the BoTorch planner's measured points) does better.

        Raises:
            InfeasibleSpaceError: not one feasible point in the first ``_MIN_DRAWS`` draws.
        """
        self._draw_feasible(n, _MAX_DRAWS)
        if not len(self._feasible_U):
            raise _infeasible(self.space, self._drawn, 0)
        return self._feasible_U[:n]

    def known_feasible_unit_points(self) -> torch.Tensor:
        """The feasible points of the ``sobol`` design found so far (``k x d``, maybe empty),
        without drawing more: a fallback for callers that must not fail on a narrow space."""
        return self._feasible_U

    def _draw_feasible(self, need: int, max_draws: int) -> None:
        """Extend the feasible prefix of the Sobol sequence towards ``need`` points, drawing
        up to ``max_draws`` in all, and stop where the design ends (see ``_accepted``)."""
        space = self.space
        polytope = self._narrow_polytope()
        if polytope is not None:
            self._draw_polytope(polytope, need)
            return
        if self._sobol is None:
            self._sobol = torch.quasirandom.SobolEngine(
                space.dim, scramble=True, seed=self.seed % 2**31
            )
        while len(self._feasible_U) < need and not self._ended:
            found = len(self._feasible_U)
            horizon = self._horizon(found)  # no draw from here on can be a next point
            if self._drawn >= horizon:
                self._ended = True
                break
            if self._drawn >= max_draws:
                break
            chunk = max(1024, 2 * (need - found))
            if found:  # a rare region: draw about what the remaining points need at once
                chunk = max(chunk, min(_MAX_CHUNK, (need - found) * self._drawn // found))
            chunk = min(chunk, horizon - self._drawn, max_draws - self._drawn)
            U = self._sobol.draw(chunk, dtype=torch.float64)
            ok = space.feasible(space.from_unit_cube(U))
            hits = ok.nonzero()[:, 0] + self._drawn
            self._drawn += chunk
            kept = self._accepted(hits)
            if kept < len(hits):
                self._ended = True
            if kept:
                self._feasible_U = torch.cat([self._feasible_U, U[ok][:kept]])
                self._last_hit = int(hits[kept - 1])

    def _narrow_polytope(self) -> _Polytope | Lattice | None:
        """The space as a narrow polytope (see ``_Polytope``), or ``None``; tested once."""
        if self._polytope is False:
            if self.space not in _NARROW:
                _NARROW[self.space] = _narrow_polytope(self.space)
            self._polytope = _NARROW[self.space]
        return self._polytope  # type: ignore[return-value]

    def _draw_polytope(self, polytope: _Polytope | Lattice, need: int) -> None:
        """Extend the ``sobol`` design of a narrow polytope towards ``need`` points.

        Simplex transform: the design's Sobol sequence mapped onto the polytope, the
        feasible points kept in order (every one when the groups are the only constraints,
        so position k is then Sobol point k, balanced in every column). Hit-and-run: the
        free columns are Sobol point k's, the constrained ones the end of position k's own
        chain.
        """
        if isinstance(polytope, Lattice) or not polytope.groups:
            found = len(self._feasible_U)
            if need > found:
                U = self._chain_design(polytope, found, need - found)
                self._feasible_U = torch.cat([self._feasible_U, U])
            return
        space = self.space
        if self._sobol is None:
            self._sobol = torch.quasirandom.SobolEngine(
                space.dim, scramble=True, seed=self.seed % 2**31
            )
        while len(self._feasible_U) < need:
            found = len(self._feasible_U)
            # The space's test (_narrow_polytope) measured an acceptance far above 2^-16.
            if self._drawn - self._last_hit > _MIN_DRAWS:  # pragma: no cover
                raise _infeasible(space, self._drawn, found, need=need)
            chunk = max(1024, 2 * (need - found))
            if found:
                chunk = max(chunk, min(_MAX_CHUNK, (need - found) * self._drawn // found))
            U, ok = _simplex_points(space, polytope, self._sobol.draw(chunk, dtype=torch.float64))
            hits = ok.nonzero()[:, 0]
            if len(hits):
                self._last_hit = self._drawn + int(hits[-1])
            self._drawn += chunk
            self._feasible_U = torch.cat([self._feasible_U, U[ok]])

    def _random_simplex_point(self, polytope: _Polytope, k: int) -> torch.Tensor:
        """Position ``k`` of the ``random`` design of a narrow polytope with a simplex
        transform: the first of its own stream's draws that lands inside (usually the first,
        which is the unconstrained design's point ``k`` mapped onto the polytope)."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, k))
        for _ in range(_MIN_DRAWS // 64):
            U = torch.rand(64, self.space.dim, generator=gen, dtype=torch.float64)
            U, ok = _simplex_points(self.space, polytope, U)
            if bool(ok.any()):
                return U[int(ok.nonzero()[0, 0])].unsqueeze(0)
        raise _infeasible(self.space, _MIN_DRAWS, 0)  # pragma: no cover - as in _draw_polytope

    def _chain_design(self, polytope: _Polytope | Lattice, start: int, n: int) -> torch.Tensor:
        """Positions ``start ..`` of a polytope's design by hit-and-run: the columns in no
        constraint from the design's own sequence (``unit_points``), the constrained ones
        the end of one chain per position, seeded by the campaign seed, the position and
        the kind (independent chains: positional, and no point is a near copy of the one
        before, as consecutive points of one thinned chain were)."""
        U = self.unit_points(start, n)
        salt = 3 if self.kind == "sobol" else 4
        seeds = [derive_seed(self.seed, k, salt) for k in range(start, start + n)]
        if isinstance(polytope, Lattice):
            ends = polytope.ends(seeds)
        else:
            ends = _chain_ends(polytope, seeds)
        U[:, list(polytope.columns)] = polytope.to_unit(ends)
        ok = self.space.feasible(self.space.from_unit_cube(U))
        if not bool(ok.all()):  # pragma: no cover - the chains stay inside
            raise _infeasible(self.space, n, int(ok.sum()), need=start + n)
        return U

    def _horizon(self, found: int) -> int:
        """The sequence index from which ``_accepted`` refuses any hit, ``found`` hits on."""
        if not found:
            return _MIN_DRAWS
        stall = max(_MIN_DRAWS, math.floor(_STALL_GAPS * ((self._last_hit + 1) / found)))
        return max(_MAX_DRAWS, min(_MAX_DESIGN_DRAWS, self._last_hit + stall + 1))

    def _accepted(self, hits: torch.Tensor) -> int:
        """How many of the feasible draws ``hits`` (sequence indices, ascending) continue the
        design; the design ends at the first one refused.

        A rule on the sequence alone, so that where the design ends does not depend on how
        the campaign drew it: the first hit must come within ``_MIN_DRAWS`` draws, every hit
        before ``_MAX_DRAWS`` counts, and a later one within ``_STALL_GAPS`` mean gaps of
        the previous hit and before ``_MAX_DESIGN_DRAWS``.
        """
        if not len(hits):
            return 0
        found = len(self._feasible_U)
        previous = torch.cat([torch.tensor([self._last_hit]), hits[:-1]])
        count = torch.arange(found, found + len(hits))
        mean_gap = (previous + 1).double() / count.clamp(min=1)
        stall = torch.clamp(_STALL_GAPS * mean_gap, min=_MIN_DRAWS)  # as in _horizon
        ok = (hits < _MAX_DRAWS) | (((hits - previous) <= stall) & (hits < _MAX_DESIGN_DRAWS))
        ok = torch.where(count == 0, hits < _MIN_DRAWS, ok)
        refused = (~ok).nonzero()
        return len(hits) if not len(refused) else int(refused[0, 0])

    def candidate_rows(self, start: int, n: int) -> list[int]:
        """Rows of the candidate table for positions ``start ..``: distinct for ``N`` positions.

        ``random`` walks a seeded permutation of the rows (choice without replacement);
        ``sobol`` takes, for each Sobol point, the nearest row not chosen yet (space-filling
        over the table). After ``N`` positions the table is walked again. Rows measured
        before (prior data) or pending are skipped by :meth:`points` (``_table_replacement``).
        """
        space = self.space
        if space.candidates is None:
            raise ValueError("the space has no candidate table")
        N = len(space.candidates)
        if self.kind == "random":
            order = self._row_order()
            return [order[k % N] for k in range(start, start + n)]
        need = start + n
        if len(self._candidate_rows) < need:
            C = space.encoded_candidates / space.bounds[1]
            U = self.unit_points(0, need)
            X = space.from_unit_cube(U) / space.bounds[1]
            taken = torch.zeros(N, dtype=torch.bool)
            for k, j in enumerate(self._candidate_rows):
                taken[j] = True
                if (k + 1) % N == 0:
                    taken[:] = False
            for k in range(len(self._candidate_rows), need):
                distance = torch.cdist(X[k : k + 1], C)[0]
                distance[taken] = math.inf
                j = int(distance.argmin())
                self._candidate_rows.append(j)
                taken[j] = True
                if (k + 1) % N == 0:
                    taken[:] = False
        return self._candidate_rows[start:need]

    def _row_order(self) -> list[int]:
        """The ``random`` design's permutation of the candidate rows."""
        N = len(self.space.candidates or ())
        gen = torch.Generator().manual_seed(derive_seed(self.seed, N, 2))
        return torch.randperm(N, generator=gen).tolist()

    def _table_replacement(self, position: int, taken: set[Hashable]) -> Point | None:
        """A free row for ``position`` of a candidate table, by the design's own rule.

        ``sobol``: the free row nearest position ``position``'s Sobol point (as
        :meth:`candidate_rows` picks rows); ``random``: the next free row of the seeded
        permutation from the position's place on. Positional: the same position and the
        same taken rows give the same row. ``None`` when every row is taken.
        """
        space = self.space
        candidates = space.candidates or ()
        if self._row_of is None:
            self._row_of = {point_key(space, c): j for j, c in enumerate(candidates)}
        used = torch.zeros(len(candidates), dtype=torch.bool)
        for key in taken:
            j = self._row_of.get(key)
            if j is not None:
                used[j] = True
        if bool(used.all()):
            return None
        if self.kind == "random":
            order = self._row_order()
            k = position % len(order)
            return next(dict(candidates[j]) for j in order[k:] + order[:k] if not used[j])
        C = space.encoded_candidates / space.bounds[1]
        X = space.from_unit_cube(self.unit_points(position, 1)) / space.bounds[1]
        distance = torch.cdist(X, C)[0]
        distance[used] = math.inf
        return dict(candidates[int(distance.argmin())])

    def points(
        self, start: int, n: int, avoid: Sequence[Point] = (), *, pending: Sequence[Point] = ()
    ) -> list[Point]:
        """``n`` points for positions ``start, start + 1, ...``, never repeating ``avoid``.

        Args:
            start: position of the first point (trials already known to the campaign).
            n: number of points.
            avoid: points that must not be proposed again (those pending, and in a finite
                space those measured: :meth:`RepeatGuard.avoid`); points of the batch itself
                are avoided as well. Only finite spaces (grids, candidate tables) can collide
                in practice.
            pending: those of ``avoid`` that are in flight. When every point of a finite
                space is taken, a repeat is unavoidable, and it is one of the others (a
                measured point), never a pending one or a batch-mate while the space has
                another: on a 3 x 3 grid with 7 points measured, a batch of 5 handed out
                the last free point three times (found in review).
        """
        space = self.space
        if n <= 0:
            return []
        if self.centre is not None:
            head = [dict(self.centre)] if start == 0 else []
            proposals = head + self._sequence(max(start - 1, 0), n - len(head))
        else:
            proposals = self._sequence(start, n)
        if not np.isfinite(space.cardinality()):
            return proposals
        taken = {point_key(space, p) for p in avoid}
        held = {point_key(space, p) for p in pending}  # never repeated while others are free
        out: list[Point] = []
        for i, point in enumerate(proposals):
            key = point_key(space, point)
            if key in taken:
                free = self._replacement(start + i, taken)
                if free is None and key in held:  # then a measured point, not this one
                    free = self._replacement(start + i, held)
                    if free is None:
                        logger.info(
                            "every point of the finite space is pending; proposing a repeat"
                        )
                point = free or point
            key = point_key(space, point)
            taken.add(key)
            held.add(key)
            out.append(point)
        return out

    def _sequence(self, start: int, n: int) -> list[Point]:
        """Points ``start ..`` of the Sobol/random sequence (without the centre point)."""
        space = self.space
        if n <= 0:
            return []
        if space.candidates is not None:
            rows = self.candidate_rows(start, n)
            return [dict(space.candidates[j]) for j in rows]
        U = self.feasible_unit_points(start, n) if space.constraints else None
        if U is None:
            U = self.unit_points(start, n)
        return space.decode(space.from_unit_cube(U))

    def _feasible_points(self) -> tuple[float, list[Point] | None]:
        """The finite space's feasible count (:func:`feasible_cardinality`) and, up to
        ``_MAX_ENUMERATED_POINTS``, its feasible points; worked out once per design. Late in
        a campaign on a finite space most design points collide with a measured one, and
        enumerating ~4000 constrained points at each collision took a suggest from ~5 ms to
        1-2 s (found in review)."""
        if self._finite is None:
            cardinality = feasible_cardinality(self.space)
            listed = _enumerate(self.space) if cardinality <= _MAX_ENUMERATED_POINTS else None
            self._finite = (cardinality, listed)
        return self._finite

    def _replacement(self, position: int, taken: set[Hashable]) -> Point | None:
        space = self.space
        if space.candidates is not None:
            return self._table_replacement(position, taken)
        cardinality, candidates = self._feasible_points()
        if len(taken) >= cardinality:
            return None
        gen = torch.Generator().manual_seed(derive_seed(self.seed, position, 1))
        if candidates is not None:
            order = torch.randperm(len(candidates), generator=gen).tolist()
            for j in order:
                if point_key(space, candidates[j]) not in taken:
                    return dict(candidates[j])  # the list is kept: never hand it out
            return None
        for point in space.sample_uniform(_RANDOM_REPLACEMENT_TRIES, gen):
            if point_key(space, point) not in taken:
                return point
        logger.info(
            "found no free point in %d draws; proposing a repeat", _RANDOM_REPLACEMENT_TRIES
        )
        return None


class RepeatGuard:
    """Which points a proposal in a finite space must not repeat, and the warning when it must.

    Pending points are never proposed again (their outcomes are on their way). In a finite
    space (only int and choice parameters, or a candidate table) a *measured* point is
    avoided too, until every feasible point (every row) has been measured: on a 5 x 5 grid a
    Sobol design repeated 6 of its first 25 points and a random one 13, and a model, once
    the optimum is measured, can keep scoring it above every unmeasured point; a new point
    teaches more. A table's rows measured as prior data count as measured (the designs
    walked the table by position and measured them again), and an abandoned trial measured
    nothing: its point comes again before the space counts as exhausted. After that,
    repeats are unavoidable, and a user should know once that the budget now goes to
    repeats (which may be wanted: replicates), not once per suggest. One rule for every
    planner, so the designs, BoTorch's initial and model points (a table's rows in
    ``planners._botorch._optimize_table``) and Ax's Sobol fill-ins agree.
    """

    def __init__(self, space: Space, repeats: str) -> None:
        """``repeats`` names what is proposed once the space is exhausted, for the warning."""
        self.space = space
        self._repeats = repeats
        self._finite = math.isfinite(space.cardinality())
        self._n_points: float | None = None  # feasible points (lazy: may enumerate)
        self._reported = False

    def avoid(self, pending: Sequence[Point], measured: Sequence[Point], n: int = 1) -> list[Point]:
        """The points to avoid: ``pending``, plus ``measured`` while the space has room.

        ``n`` is the number of points about to be proposed: a batch that needs more points
        than are left unmeasured and not pending starts the repeats, and the warning says
        so then, not one batch later (found in review: a campaign of batches of 4 repeated
        measured points without it).
        """
        avoid = list(pending)
        if not self._finite:
            return avoid
        if self._n_points is None:
            self._n_points = feasible_cardinality(self.space)
        known: dict[Hashable, Point] = {}
        for p in measured:
            try:
                known.setdefault(point_key(self.space, p), p)
            except InvalidPoint:  # not a row of the table (cannot be proposed anyway)
                continue
        if self._n_points == 0:  # no feasible point at all: the design says so (raises)
            return avoid
        if len(known) >= self._n_points:
            self.report_exhausted(int(self._n_points))
            return avoid
        taken = len(known.keys() | {point_key(self.space, p) for p in avoid})
        if taken < self._n_points:
            avoid += known.values()
        if taken + n > self._n_points:
            self.report_exhausted(int(self._n_points))
        return avoid

    def report_exhausted(self, n_points: int) -> None:
        """Warn, once, that the ``n_points`` points of the space are measured or in flight."""
        if self._reported:
            return
        self._reported = True
        logger.warning(
            "every one of the %d points of the finite search space has been measured or is "
            "being measured; the planner now repeats measured points, %s. Stop the campaign, "
            "or widen the space, if repeats are not wanted",
            n_points,
            self._repeats,
        )


# Two proposals whose float values lie within this fraction of each float's range (in the
# encoded scale: log for a log parameter), with the same int and choice values, are one
# experiment: measuring both at once teaches no more than one.
NEAR_DUPLICATE = 1e-6


def near_duplicate(space: Space, point: Point, others: Sequence[Point]) -> bool:
    """Whether ``point`` repeats one of ``others`` (members of the space): the same int,
    choice and fixed values and every float within ``NEAR_DUPLICATE`` of its range; a
    candidate table's row exactly.

    The rule for proposals against pending points and batch-mates, for every model planner
    (BoTorch's ``_replace_repeats``, Ax's ``_propose``): a model can propose a float point a
    hair's breadth from one already being measured (Ax, stuck on a constraint's corner, did
    twice per batch), which an exact comparison lets through.
    """
    if not others:
        return False
    continuous = space.continuous_dims
    if space.candidates is not None or not continuous:
        key = point_key(space, point)
        return any(point_key(space, other) == key for other in others)
    X = space.encode([point, *others])
    gap = (X[1:] - X[0]).abs()
    discrete = [i for i in range(space.dim) if i not in continuous]
    same = (gap[:, continuous] <= NEAR_DUPLICATE).all(dim=-1)
    if discrete:
        same &= (gap[:, discrete] == 0).all(dim=-1)
    return bool(same.any())


def feasible_cardinality(space: Space) -> float:
    """Number of points of the space that satisfy its constraints: ``Space.cardinality()``
    (which counts before constraints) for an unconstrained or infinite space, the count of
    the enumerated feasible points for a constrained finite one of up to
    ``_MAX_ENUMERATED_POINTS`` points, and the count before constraints (an upper bound)
    for a larger one. Decides when a finite space is exhausted: with ``a + b <= 1`` over
    ``0..3 x 0..3`` that is after 3 points, not 16.
    """
    cardinality = space.cardinality()
    if space.candidates is not None or not space.constraints or not math.isfinite(cardinality):
        return cardinality
    if math.prod(len(axis) for axis in _axes(space)) > _MAX_ENUMERATED_POINTS:
        return cardinality
    return float(len(_enumerate(space)))


def _axes(space: Space) -> list[Sequence[Any]]:
    """The values each column of a finite space can take, its int ranges narrowed to those
    its linear constraints allow (:func:`_int_ranges`)."""
    ranges = _int_ranges(space)
    axes: list[Sequence[Any]] = []
    for p in space.columns:
        if isinstance(p, ChoiceParameter):
            axes.append(p.values)
        elif isinstance(p, IntParameter):
            lo, hi = ranges[p.name]
            axes.append(range(lo, hi + 1))
        else:  # pragma: no cover - callers check cardinality first
            raise ValueError("cannot enumerate a space with float parameters")
    return axes


def _int_ranges(space: Space) -> dict[str, tuple[int, int]]:
    """Each int parameter's bounds, narrowed by what its linear constraints allow.

    ``a + b + c <= 3`` over ``0..100`` leaves 20 points of 1,030,301: counted before the
    constraints, the space was too large to list, its free points were searched by random
    draws (a feasible share of 2e-5: none found), and a campaign repeated points after 7
    of the 20 (found in review). Each linear constraint bounds each of its int parameters
    given the others' ranges (interval propagation, repeated while a bound moves), so the
    box to list shrinks to ``0..3`` each: 64 points. A bound is only ever moved past points
    that cannot be feasible, with a margin for rounding, so no feasible point is lost.
    """
    ranges: dict[str, list[float]] = {}
    ints: set[str] = set()
    for p in space.columns:
        if isinstance(p, IntParameter):
            ranges[p.name] = [float(p.bounds[0]), float(p.bounds[1])]
            ints.add(p.name)
        elif isinstance(p, ChoiceParameter) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in p.values
        ):
            values = [float(v) for v in p.values]  # type: ignore[arg-type]
            ranges[p.name] = [min(values), max(values)]
    linear = [
        c
        for c in space.constraints
        if c.is_linear and c.coefficients and all(n in ranges for n in c.coefficients)
    ]
    for _round in range(len(ints) + 1):
        moved = False
        for c in linear:  # slack = constant + sum(coef * value) >= 0
            tops = {n: max(k * ranges[n][0], k * ranges[n][1]) for n, k in c.coefficients.items()}
            total = c.constant + sum(tops.values())
            for name, k in c.coefficients.items():
                if name not in ints or k == 0:
                    continue
                edge = -(total - tops[name]) / k  # k * value >= -(the rest at its largest)
                margin = 1e-9 * (1.0 + abs(edge))
                lo, hi = ranges[name]
                if k > 0 and math.ceil(edge - margin) > lo:
                    ranges[name][0], moved = float(math.ceil(edge - margin)), True
                elif k < 0 and math.floor(edge + margin) < hi:
                    ranges[name][1], moved = float(math.floor(edge + margin)), True
        if not moved:
            break
    return {n: (int(ranges[n][0]), int(ranges[n][1])) for n in ints}


@dataclass(frozen=True)
class _Simplex:
    """One constraint row ``sum(weight * z') <= budget`` over columns ``at`` of a polytope,
    with ``z' = 1 - z`` where ``flip`` (a negative coefficient): a simplex corner of the
    box, ``weight > 0`` and ``budget > 0``."""

    at: torch.Tensor  # long: positions in _Polytope.columns
    weight: torch.Tensor
    flip: torch.Tensor  # bool
    budget: float


@dataclass(frozen=True)
class _Polytope:
    """A narrow polytope (see ``_POLYTOPE_MIN_HITS``): ``A z <= b`` over the constrained
    columns ``columns``, in *value* coordinates ``z = (value - lower) / (upper - lower)``.

    Why two parts: the columns in no constraint are free, so the design draws them from
    its own sequence as in an unconstrained space (balanced, space-filling; a resumed
    campaign gets the same points); only the constrained columns need a polytope sampler.
    Sampling the whole point from one hit-and-run chain, as the design first did, left
    even the free columns in a small range (a temperature in [300, 1500] K beside 12
    fractions summing to <= 1 spanned 94-335 K over 14 points).

    The sampler of the constrained columns:

    * ``groups`` (non-empty): an exact transform. Each row of ``groups`` (disjoint columns)
      is a simplex corner of the box, and a point of [0, 1]^m maps onto it uniformly by
      conditional inversion (``_onto_simplex``); other constrained columns keep their
      coordinate. The rows not in ``groups`` and the box are then checked (rejection with
      a high acceptance, measured by ``_narrow_polytope``). One-to-one and smooth, so a
      Sobol point stays a well-spread point: the usual composition (fractions with
      ``sum <= 1``) becomes a balanced design.
    * otherwise: independent hit-and-run chains from an interior point (``_chain_ends``).

    A log-scale float column is linear in ``z`` (a constraint is linear in raw values), so
    it is drawn uniformly *in value* within the polytope, not log-uniformly: a feasible
    start, with the small values rarer than a log design would make them. ``to_unit`` maps
    ``z`` back to the encoded (log) unit coordinate. Integer columns are not served here:
    rounding a point of the relaxation to the grid can break the constraint it met, and the
    grid points of a narrow polytope may be few or none; a narrow region with an integer
    column is a :class:`~planners._lattice.Lattice`, drawn on its grid. A choice column in
    a constraint keeps rejection sampling, exact over its values.
    """

    A: torch.Tensor  # rows x m
    b: torch.Tensor  # rows
    columns: tuple[int, ...]
    lower: torch.Tensor  # raw bounds of the constrained columns
    upper: torch.Tensor
    log: torch.Tensor  # bool
    groups: tuple[_Simplex, ...]
    interior: torch.Tensor | None  # a point inside, for the chains (``groups`` empty)

    def to_unit(self, Z: torch.Tensor) -> torch.Tensor:
        """Encoded unit coordinates of value coordinates ``Z`` (``n x m``)."""
        Z = Z.clamp(0.0, 1.0)
        if not bool(self.log.any()):
            return Z
        value = self.lower + Z * (self.upper - self.lower)
        llo, lhi = self.lower.log10(), self.upper.log10()
        logged = ((value.log10() - llo) / (lhi - llo)).clamp(0.0, 1.0)
        return torch.where(self.log, logged, Z)


# Each space's answer of _narrow_polytope: a design is made afresh for every suggest of the
# model's optimiser (its raw samples), and the test costs ~1 s on 30 columns (2^16 draws).
_NARROW: weakref.WeakKeyDictionary[Space, _Polytope | Lattice | None] = weakref.WeakKeyDictionary()


def _narrow_polytope(space: Space) -> _Polytope | Lattice | None:
    """The space as a ``_Polytope`` when its constraints are all linear in float parameters
    and leave it so little room that rejection sampling would struggle (see
    ``_POLYTOPE_MIN_HITS``); else ``None``.

    A float column is ``value = lower + (upper - lower) z`` (``z`` is the encoded unit
    coordinate of a linear column, and a monotone map of a log column's), so a constraint
    ``slack = c + sum(a * value) >= 0`` is linear in ``z``. With an integer column in a
    constraint the narrow region is a :class:`~planners._lattice.Lattice` instead (``None``
    when no grid point meets the constraints: rejection then says so); a choice column in
    one keeps rejection sampling (see ``_Polytope``).
    """
    if space.candidates is not None or not space.constraints:
        return None
    index = {p.name: i for i, p in enumerate(space.columns)}
    whole = False  # an integer column in a constraint: the lattice's chains (planners._lattice)
    for c in space.constraints:
        if not c.is_linear:
            return None
        for name in c.coefficients:
            column = space.columns[index[name]] if name in index else None
            if isinstance(column, IntParameter):
                whole = True
            elif not isinstance(column, FloatParameter):
                return None
    engine = torch.quasirandom.SobolEngine(space.dim, scramble=True, seed=0)
    hits = 0
    for _ in range(_MIN_DRAWS // 4096):  # an ordinary space is done after the first chunk
        U = engine.draw(4096, dtype=torch.float64)
        hits += int(space.feasible(space.from_unit_cube(U)).sum())
        if hits >= _POLYTOPE_MIN_HITS:
            return None
    columns = sorted({index[name] for c in space.constraints for name in c.coefficients})
    if whole:
        return lattice(space, columns)  # None: no grid point at all, which rejection says
    at = {j: i for i, j in enumerate(columns)}
    bounds = torch.tensor(
        [[float(v) for v in space.columns[j].bounds] for j in columns],  # type: ignore[union-attr]
        dtype=torch.float64,
    )
    lower, upper = bounds[:, 0], bounds[:, 1]
    A = torch.zeros(len(space.constraints), len(columns), dtype=torch.float64)
    b = torch.zeros(len(space.constraints), dtype=torch.float64)
    for r, c in enumerate(space.constraints):
        b[r] = c.constant
        for name, a in c.coefficients.items():
            i = at[index[name]]
            A[r, i] = -a * float(upper[i] - lower[i])
            b[r] += a * float(lower[i])
    log = torch.tensor(
        [bool(space.columns[j].log) for j in columns],  # type: ignore[union-attr]
        dtype=torch.bool,
    )
    polytope = _Polytope(A, b, tuple(columns), lower, upper, log, _simplex_groups(A, b), None)
    if polytope.groups:
        probe = torch.quasirandom.SobolEngine(space.dim, scramble=True, seed=0)
        _, ok = _simplex_points(space, polytope, probe.draw(_SIMPLEX_TEST_DRAWS, dtype=A.dtype))
        if int(ok.sum()) >= _SIMPLEX_MIN_HITS:
            return polytope
    from botorch.utils.sampling import find_interior_point

    with _empty_polytope(space):
        box = torch.cat([A, torch.eye(len(columns)), -torch.eye(len(columns))])
        limits = torch.cat([b, torch.ones(len(columns)), torch.zeros(len(columns))])
        interior = find_interior_point(box.numpy(), limits.unsqueeze(-1).numpy())
    return replace(polytope, groups=(), interior=torch.as_tensor(interior, dtype=A.dtype))


def _simplex_groups(A: torch.Tensor, b: torch.Tensor) -> tuple[_Simplex, ...]:
    """Rows of ``A z <= b`` to map onto exactly: any row is a simplex corner of the box
    once its negative coefficients' columns are flipped (``z' = 1 - z``), if its budget
    stays positive. Widest rows first, over disjoint columns (two compositions are two
    groups); rows left out are checked by rejection."""
    groups: list[_Simplex] = []
    taken: set[int] = set()
    order = sorted(range(len(A)), key=lambda r: -int((A[r] != 0).sum()))
    for r in order:
        at = (A[r] != 0).nonzero()[:, 0]
        if taken & set(at.tolist()):
            continue
        weight = A[r, at]
        flip = weight < 0
        budget = float(b[r] - weight[flip].sum())
        if budget <= 0:
            continue
        groups.append(_Simplex(at, weight.abs(), flip, budget))
        taken |= set(at.tolist())
    return tuple(groups)


def _simplex_points(
    space: Space, polytope: _Polytope, U: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``U`` of [0, 1]^d with their constrained columns mapped onto the polytope's
    simplex groups (``n x d``), and which of them are feasible (every constraint, and the
    box: a group's simplex may reach past a column's upper bound)."""
    U = U.clone()
    Z = U[:, list(polytope.columns)]
    inside = torch.ones(len(U), dtype=torch.bool)
    for group in polytope.groups:
        z = _onto_simplex(Z[:, group.at]) * (group.budget / group.weight)
        inside &= (z <= 1.0).all(dim=-1)
        Z[:, group.at] = torch.where(group.flip, 1.0 - z, z)
    U[:, list(polytope.columns)] = polytope.to_unit(Z)
    return U, inside & space.feasible(space.from_unit_cube(U))


def _onto_simplex(U: torch.Tensor) -> torch.Tensor:
    """Points of [0, 1]^m mapped uniformly onto the simplex ``y >= 0, sum(y) <= 1``.

    Conditional inversion (Rosenblatt): ``y_1`` has density ``m (1 - y_1)^(m - 1)``, so
    ``y_1 = 1 - (1 - u_1)^(1/m)``, and the rest is the same problem on the simplex scaled
    by ``1 - y_1``. One-to-one and continuous, unlike sorting the coordinates, so the
    strata of a Sobol sequence stay strata of equal volume on the simplex.
    """
    m = U.shape[-1]
    remaining = torch.ones(len(U), dtype=U.dtype)
    Y = torch.empty_like(U)
    for i in range(m):
        left = remaining * (1.0 - U[:, i]).clamp(0.0, 1.0) ** (1.0 / (m - i))
        Y[:, i] = remaining - left
        remaining = left
    return Y


def _chain_ends(polytope: _Polytope, seeds: Sequence[int]) -> torch.Tensor:
    """The constrained columns' value coordinates (``n x m``) at the end of one hit-and-run
    chain per seed, each from the polytope's interior point with ``_CHAIN_MIN_STEPS`` or
    ``_CHAIN_STEPS_PER_DIM2 * m^2`` steps, run side by side (one chain's random numbers
    come from its own generator, so a chain does not depend on the others)."""
    m = len(polytope.columns)
    interior = polytope.interior if polytope.interior is not None else torch.full((m,), 0.5)
    eye = torch.eye(m, dtype=torch.float64)
    A = torch.cat([polytope.A, eye, -eye])  # the box as rows too
    b = torch.cat([polytope.b, torch.ones(m, dtype=torch.float64), torch.zeros(m)])
    steps = max(_CHAIN_MIN_STEPS, _CHAIN_STEPS_PER_DIM2 * m * m)
    per_chunk = max(1, _CHAIN_MEMORY // (steps * (m + 1 + len(A))))
    ends = []
    for first in range(0, len(seeds), per_chunk):
        chunk = seeds[first : first + per_chunk]
        directions, lengths = [], []
        for seed in chunk:
            gen = torch.Generator().manual_seed(seed % 2**63)
            directions.append(torch.randn(steps, m, generator=gen, dtype=torch.float64))
            lengths.append(torch.rand(steps, generator=gen, dtype=torch.float64))
        D = torch.stack(directions)
        D = D / D.norm(dim=-1, keepdim=True)
        L = torch.stack(lengths)
        # Every step's rates at once, not one small product per step (30x slower on a
        # loaded machine, BLAS threads contending).
        rates = products(D, A)
        Z = interior.to(torch.float64).expand(len(chunk), m).clone()
        for step in range(steps):
            if step % _CHAIN_REFRESH == 0:  # the slack, afresh: no drift from the updates
                slack = b - products(Z, A)
            rate = rates[:, step]
            room = slack.clamp(min=0.0) / rate
            upper = torch.where(rate > 0, room, math.inf).amin(dim=-1)
            lower = torch.where(rate < 0, room, -math.inf).amax(dim=-1)
            length = (lower + L[:, step] * (upper - lower)).unsqueeze(-1)
            Z = Z + length * D[:, step]
            slack = slack - length * rate
        ends.append(Z)
    return torch.cat(ends) if ends else torch.empty(0, m, dtype=torch.float64)


@contextlib.contextmanager
def _empty_polytope(space: Space) -> Iterator[None]:
    """BoTorch's "no interior point" (the sampler's start) as the designs' own error."""
    from botorch.exceptions.errors import InfeasibilityError

    try:
        yield
    except InfeasibilityError:
        raise _infeasible(space, _MIN_DRAWS, 0) from None


def _centre(space: Space) -> Point | None:
    """The centre of the space (see ``PositionalDesign``), or ``None`` for a candidate table
    or when the centre breaks a parameter constraint."""
    if space.candidates is not None:
        return None
    X = space.from_unit_cube(torch.full((1, space.dim), 0.5, dtype=torch.float64))
    if space.constraints and not bool(space.feasible(X).all()):
        logger.info("the centre of the space breaks a parameter constraint; not proposed")
        return None
    return space.decode(X)[0]


def _enumerate(space: Space) -> list[Point]:
    """Every feasible point of a finite space (all int/choice, or a table), in a fixed order."""
    if space.candidates is not None:
        return [dict(p) for p in space.candidates]
    axes = _axes(space)
    points = [
        {**space.fixed, **dict(zip(space.column_names, values, strict=True))}
        for values in itertools.product(*axes)
    ]
    return [p for p in points if space.contains(p)] if space.constraints else points


class _DesignPlanner:
    """A planner that ignores outcomes and proposes the next points of a positional design."""

    _kind: DesignKind

    def __init__(self, space: Space, seed: int = 0) -> None:
        self.space = space
        self.seed = int(seed)
        self.design = PositionalDesign(space, seed, self._kind)
        self.repeats = RepeatGuard(space, f"as the {self._kind} design goes on")
        self.n_ingested = 0  # trials heard of: their number moves the design forward
        self.measured: list[Point] = []  # their points, but an abandoned trial measured none
        self.last_kinds: list[str] = []

    def ingest(self, observations: Sequence[Observation]) -> None:
        """Count the trials, and keep the points measured (a finite space avoids repeating
        them; an interrupted trial's point is proposed again before the space is exhausted)."""
        check_observations(self.space, observations)
        self.n_ingested += len(observations)
        self.measured.extend(o.parameters for o in observations if o.outcome != "abandoned")

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        """The next ``n`` design points after the ingested and pending trials."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.last_kinds = [self._kind] * n
        avoid = self.repeats.avoid(pending, self.measured, n)
        return self.design.points(self.n_ingested + len(pending), n, avoid, pending=pending)


class SobolPlanner(_DesignPlanner):
    """Scrambled Sobol sequence: space-filling, balanced over choice and integer values.

    Args:
        space: the search space.
        seed: scrambling seed; the same seed gives the same sequence.
    """

    _kind: DesignKind = "sobol"


class RandomPlanner(_DesignPlanner):
    """Independent uniform draws (in the encoded, i.e. log, scale), one stream per position.

    Args:
        space: the search space.
        seed: the campaign seed; the k-th proposal depends only on it and on k.
    """

    _kind: DesignKind = "random"


def _infeasible(
    space: Space, draws: int, found: int, *, need: int | None = None
) -> InfeasibleSpaceError:
    """The error for a design that found (too) few feasible points, naming the tightest rule.

    ``need``: the number of feasible points the design was asked to reach, when it found
    some but cannot find the next one (said in the message, so a user sees it is the
    campaign's length, not an empty space, that the constraints do not allow).
    """
    U = torch.quasirandom.SobolEngine(space.dim, scramble=True, seed=0).draw(
        4096, dtype=torch.float64
    )
    values = space.torch_values(space.from_unit_cube(U))
    rates = [(float(c.feasible_torch(values).double().mean()), c) for c in space.constraints]
    rate, tightest = min(rates, key=lambda r: r[0])
    fraction = found / draws if found else 1.0 / draws
    bound = "about" if found else "below"
    wanted = f", and no further one for the design's point {need} " if found and need else " "
    return InfeasibleSpaceError(
        f"the parameter constraints leave almost no room: {found} feasible points in {draws} "
        f"draws{wanted}(feasible fraction {bound} {fraction:.2g}); the most restrictive is "
        f"constraint {tightest.index} ({tightest.text!r}, alone satisfied by {rate:.2g} of the "
        "space). "
        "Check that the constraints can hold together within the bounds, relax them, or "
        "narrow the bounds to the feasible region",
        draws=draws,
        feasible_fraction=fraction,
        tightest=tightest.index,
    )
