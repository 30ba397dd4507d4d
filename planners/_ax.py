"""Ax as an alternative planner: the campaign's space and goals driven through Ax's ``Client``.

``planner: {kind: ax}`` hands the proposals to Ax (``ax-platform`` >= 1.0, the ``Client``
ask/tell API) while the loop, the store and the instruments stay the same. The mapping:

* parameters: ``float`` and ``int`` as ``RangeParameterConfig`` (``log`` ->
  ``scaling="log"``); ``choice`` as ``ChoiceParameterConfig`` with ``is_ordered`` from
  ``ChoiceParameter.ordered``; ``fixed`` parameters are not sent to Ax and are added back to
  each proposal. Ax sees aliases (``p0``, ``p1``, ...; metrics ``obj0``, ``con0``, ...)
  because it parses constraint and objective strings with SymPy, where a parameter called
  ``E``, ``gamma`` or ``lambda`` or an output called ``yield`` would be misread. A float is
  shown to Ax as ``(value - offset) * scale`` (``_float_map``): a range narrower than 1
  times the power of two that makes it 1 to 2 wide, as Ax refuses a range narrower than
  ~1.2e-5 (``100 * EPS``: a concentration of [1e-6, 1e-5] M, log or not, crashed the first
  suggest); a linear range more than 2^20 of its widths from zero shifted to start at 0,
  as Ax's model fit fails there ([1e8, 1e8 + 2]: "All attempts to fit the model have
  failed"; [1e7, 1e7 + 2] was fine). A power of two maps Ax's values back exactly, so a
  rebuilt planner tells Ax the very values the live one proposed; with an offset they agree
  to rounding (a value keeps ~1e-16 of the offset), not bit for bit, which the initial
  design, positional, does not depend on (a rebuilt planner re-proposed initial points
  there: Ax knew them only to rounding). An int range has at most ``_AX_MAX_INT_VALUES``
  values: Ax lists every integer of the range (a range of 10^9 filled the memory);
* linear parameter constraints: written out from their coefficients in the units Ax sees
  (a float's coefficient divided by its scale, its offset folded into the bound; Ax
  applies them before its own log/unit transforms, so a constraint may not touch a
  log-scale parameter, nor a choice: both are a ``ValueError`` naming ``kind: botorch``);
* outputs: an output whose first non-zero value told is below 1 in magnitude is told to Ax
  times the power of ten that brings that value to [1, 10), and its bounds (reference
  point, outcome constraint) alike: Ax takes an output whose spread is below 1e-8 for a
  constant (``StandardizeY``), so outputs in units of 1e-9 taught its model nothing. The
  factor depends on the trials told, in order, so a rebuilt planner chooses the same one;
* objectives: ``"obj0, -obj1"`` (``-`` for minimise); an objective's ``reference_point``
  becomes Ax's objective threshold (``obj0 >= ref`` when maximised);
* outcome constraints: ``"con0 <= 0.05"`` on their own metric (even when they bound an
  objective, which Ax's single-objective config would otherwise reject);
* the seed: ``Client(random_seed=seed)``, Ax's Sobol seed and the initial design's; the
  initial design size from ``planner.initial.n``; a batch of Ax's is
  ``get_next_trials(max_trials=n)``.

State. Like every planner this one is rebuilt from the store by ingesting the trials in
order: each observation becomes an Ax trial (``attach_trial``, then ``complete_trial``,
``mark_trial_failed`` or ``mark_trial_abandoned``). Points Ax proposed become ``RUNNING`` Ax
trials; an ingested observation completes the running trial of the same point. Before each
``suggest`` the running trials are reconciled with ``pending``: pending points Ax does not
know are attached as running trials (so Ax conditions on them and never proposes them
again), and running trials that are no longer pending and were never ingested are marked
abandoned. A point the instrument ran at slightly different readbacks is attached as its own
trial, and the proposal it came from is abandoned at the next ``suggest``. Then Ax's
generation strategy is moved past every step already done (``_catch_up``), so a rebuilt
planner proposes what the planner that made those trials would have.

The initial design. Ax's strategy decides when it ends (prior trials count toward
``initial.n``, failed ones do not) and the kind of a batch is decided once for all of it (a
batch begun before the initial design ends is all initial points). Its first point is the
centre of the space (Ax's own, which for a box whose middle breaks a linear constraint is
the centre of the feasible region; skipped when there are trials already), unless
``initial.centre: false``; the others come from the BoTorch planner's positional design for
the same ``initial`` settings (``_initial``; ``kind: sobol``, scrambled Sobol points, or
``random``, uniform draws), not from Ax's Sobol step. That restarted its sequence in every
new ``Client`` (every ``resume``, every ``suggest`` of ask/tell, ``plan --store``) and
skipped only the points it knew exactly, so a rebuilt planner proposed again the initial
points measured at readbacks away from their proposal (ask/tell ``--actual``: one point
three times) or told to Ax with the rounding of an offset range. Position ``k`` of the
design is the same point however the campaign got there, as for the BoTorch planner, and
for float, int and ordered choice parameters its Sobol points are Ax's own sequence point
for point (the same scrambled engine, seed and dimensions; a log value may differ in its
last bit); an unordered choice is encoded as the BoTorch planner does it, not one-hot as in
Ax. Ax picks its own acquisition, so ``acquisition`` is refused when the campaign loads
(``check_settings`` in ``planners._config``).

Failed trials (and trials with no usable objective value) are left out of Ax's model and of
its duplicate check (``Experiment.arms_by_signature_for_deduplication``): its model proposed
one failed point again and again until ``max_failures`` ended the campaign. So each failed
point is also attached as an abandoned trial, which Ax takes for a point in flight (its
model looks elsewhere), live and rebuilt alike; and a proposal that still repeats a failed
point is abandoned and Ax asked again (``_propose``).

When Ax runs out of new points (a small discrete space), or cannot propose yet (with
``initial.n: 1`` its model follows the centre point at once, and needs a completed trial),
or proposes a point that repeats a pending one or one of the same batch (within 1e-6 of
each float's range, ints and choices exactly: ``near_duplicate``, the BoTorch planner's
rule; its model, stuck on a constraint's corner, proposed one point twice per batch, batch
after batch), the rest of a batch comes from the same design (``last_kinds`` says ``sobol``,
or ``random`` with ``initial.kind: random``).

Outputs reach Ax as the BoTorch planner's model sees them: a reading of sentinel magnitude
far outside the others (an overrange code such as 9.9e37) clipped onto the nearest of them
(``_complete``, :func:`planners._outliers.model_column`), with the same warning, once per
trial; the stored values are untouched.

What Ax cannot do is refused by the constructor, before Ax is imported (a campaign file is
checked when it loads): nonlinear parameter constraints, linear ones over log-scale or choice
parameters, integer ranges of more than ``_AX_MAX_INT_VALUES`` values, choices of more than
``_AX_MAX_CHOICE_VALUES`` values, and finite candidate
tables, each naming ``kind: botorch``; and two linear constraints that together are an
equality (its sampler cannot enter a region of no width).
Constraints that leave no room in some other way are found by Ax's sampler at the first
suggest: an ``InfeasibleSpaceError``, as the designs raise.

Ax is imported lazily on the first ``ingest``/``suggest`` (the import costs ~2 s), and its
logging is routed into this module's logger at DEBUG (Ax attaches its own INFO stream handler
on import, which would print a line per trial into the campaign's output). Warnings raised in
Ax, BoTorch, GPyTorch, linear_operator or Pyro code are library internals a campaign's user
cannot act on: a process-wide filter by module ignores them (``_filter_library_warnings``),
and every other warning, from any thread, shows as usual.
"""

from __future__ import annotations

import io
import logging
import math
import re
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from planners._baselines import PositionalDesign, RepeatGuard, near_duplicate
from planners._config import PlannerConfig, PlannerUnavailable
from planners._constraints import InfeasibleSpaceError, ParameterConstraint
from planners._outliers import SENTINEL_MAGNITUDE, model_column
from planners._protocol import Objective, Observation, OutcomeConstraint, check_observations
from planners._space import (
    ChoiceParameter,
    FixedParameter,
    FloatParameter,
    IntParameter,
    InvalidPoint,
    Point,
    Space,
)

logger = logging.getLogger(__name__)

_USE_BOTORCH = "use planner kind: botorch"

# Generation nodes of Ax's default strategy that make space-filling points, not model ones.
_INITIAL_NODES = ("Center", "CenterOfSearchSpace", "Sobol")

# Ax's model lists every value of an integer parameter (``ax.adapter.adapter_utils``
# ``extract_search_space_digest``; a log-scale one becomes a choice of every value): 10^5
# values cost ~0.5 GB, 10^6 ~0.9 GB and a second a suggest, 10^9 more memory than a
# workstation has. The BoTorch planner searches a wide range as a relaxed float instead.
_AX_MAX_INT_VALUES = 100_000
# Ax refuses a ChoiceParameter of more values (``ax.core.parameter.MAX_VALUES_CHOICE_PARAM``),
# but only at the first proposal: a campaign was stored, then stopped with "please report it".
_AX_MAX_CHOICE_VALUES = 1000
# A linear float range further from zero than this many of its widths is shifted to start
# at 0 for Ax (see ``_float_map``).
_FAR_FROM_ZERO = 2.0**20
# Times Ax is asked again for the proposals dropped as repeats of failed points (see
# ``AxPlanner._propose``); what is still missing comes from the initial design.
_FAILED_REPEAT_ROUNDS = 2


@dataclass(frozen=True)
class _AxParameter:
    """How one campaign parameter is shown to Ax and read back."""

    name: str  # campaign name
    alias: str  # Ax name
    to_ax: Callable[[Any], Any]
    from_ax: Callable[[Any], Any]


class AxPlanner:
    """Proposals from Ax's ``Client`` (ask/tell), behind the :class:`Planner` protocol.

    Args:
        space: the search space.
        objectives: 1-4 objectives; several make a multi-objective (hypervolume) campaign.
        config: the campaign's ``planner:`` section (``initial``; ``acquisition``, which
            Ax does not follow, is refused by ``check_planner`` when a campaign loads).
        seed: the campaign seed, passed to Ax as ``random_seed`` and Sobol seed.
        outcome_constraints: bounds on measured outputs.

    Raises:
        ValueError: for what Ax cannot express (see the module docstring), naming the
            alternative.
    """

    def __init__(
        self,
        space: Space,
        objectives: Sequence[Objective],
        config: PlannerConfig,
        seed: int,
        *,
        outcome_constraints: Sequence[OutcomeConstraint] = (),
    ) -> None:
        if not objectives:
            raise ValueError("a campaign needs at least one objective")
        self.space = space
        self.objectives = tuple(objectives)
        self.outcome_constraints = tuple(outcome_constraints)
        self.config = config
        self.seed = int(seed)
        self.last_kinds: list[str] = []
        if space.candidates is not None:
            raise ValueError(
                "Ax cannot restrict its proposals to a finite table of candidates (an "
                f"enumerated dataset); {_USE_BOTORCH} (or sobol/random)"
            )
        self._parameters = _ax_parameters(space)
        self._fixed: dict[str, Any] = dict(space.fixed)
        self._constraints = [self._constraint_string(c) for c in space.constraints]
        self._refuse_equalities()
        self._metrics = self._metric_map()
        self.n_initial = config.initial.size(max(1, len(self._parameters)))
        # Whether the design starts at Ax's centre (``_initial``): as for the BoTorch
        # planner, but by default always, Ax's own default (``InitialDesign.centre_first``).
        self._centre = config.initial.centre_first(len(self.objectives), "ax")
        # The initial design after Ax's centre, and what Ax cannot propose (see
        # ``suggest``): the BoTorch planner's design for the same settings, its position 0
        # the centre when the design starts there, as Ax's own design does.
        self._design = PositionalDesign(
            space, self.seed, config.initial.kind, centre_first=self._centre
        )
        self._client: Any = None
        # Measured repeats of a point among the trials the client starts from: each adds to
        # Ax's initialization budget (see ``_replicates_in``).
        self._replicates = 0
        # Ax trial index -> the campaign point it stands for, for every RUNNING Ax trial.
        self._running: dict[int, Point] = {}
        # The points told as failed, or with no usable objective value (see ``_propose``).
        self._failed: list[Point] = []
        self.n_ingested = 0  # trials heard of (the design's position)
        self._measured: list[Point] = []  # points measured, not abandoned (see RepeatGuard)
        self._repeats = RepeatGuard(space, f"from the {config.initial.kind} design")
        # Output name -> the factor its values are told to Ax with (see ``_scaled``).
        self._scales: dict[str, float] = {}
        # The completed trials and what Ax is told of them (see ``_complete``): by Ax
        # metric alias, the (Ax trial, value measured) of each, in the order told; the
        # aliases with a value of sentinel magnitude; by Ax trial, its point, the values
        # measured and the values Ax has; the trials warned of.
        self._columns: dict[str, list[tuple[int, float]]] = {}
        self._sentinels: set[str] = set()
        self._completed: dict[int, tuple[Point, dict[str, float]]] = {}
        self._told: dict[int, dict[str, float]] = {}
        self._clipped_reported: set[int] = set()

    # ------------------------------------------------------------------ protocol
    def ingest(self, observations: Sequence[Observation]) -> None:
        """Tell Ax how each trial ended (attaching trials Ax did not propose)."""
        check_observations(self.space, observations)
        if self._client is None:
            self._replicates = self._replicates_in(observations)
        client = self._ensure_client()
        outside: list[str] = []
        for obs in observations:
            self.n_ingested += 1
            if obs.outcome != "abandoned":
                self._measured.append(obs.parameters)
            try:
                point = self.space.validate(obs.parameters)
            except InvalidPoint as exc:
                outside.append(str(exc))
                continue
            index = self._trial_for(client, point)
            if index is None:
                continue
            if not self._tell(client, index, obs):
                self._failed.append(point)
                # Ax takes an abandoned trial's point for one in flight, so its model looks
                # elsewhere (see ``_propose``); so does a rebuilt planner's, from the start.
                client.mark_trial_abandoned(self._attach(client, point))
        if outside:
            # once per ingest, not once per point: hundreds of prior-data rows measured
            # before the space was narrowed printed a line each at every command (found in
            # review)
            logger.warning(
                "%d observation(s) outside the space not told to Ax (Ax models only points "
                "inside its bounds and constraints; a readback past a bound, or prior data "
                "measured before the space was narrowed): %s",
                len(outside),
                outside[0] + ("; ..." if len(outside) > 1 else ""),
            )

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        """``n`` points from Ax, given the points in flight (attached as running trials)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            self.last_kinds = []
            return []
        client = self._ensure_client()
        # Ax fits and optimises on one torch thread, as the BoTorch planner's suggest does:
        # with torch's default of one per core, a suggest on a 2-core machine with another
        # process busy took 17 s against 1.4 s (Hartmann6, 25 points, session 22).
        from planners._botorch import torch_threads

        with torch_threads(1):
            return self._suggest(client, n, [dict(p) for p in pending])

    def _suggest(self, client: Any, n: int, pending: list[Point]) -> list[Point]:
        self._reconcile(client, pending)
        node = _catch_up(client)
        position = self.n_ingested + len(pending)
        if node is not None and node.startswith(_INITIAL_NODES):
            points, kinds = self._initial(client, n, position, pending)
        else:
            points, kinds = self._propose(client, n)
        if len(points) < n:
            # Ax stops short when it cannot find new points (e.g. a small finite space with
            # deduplication); the protocol promises n, so the rest come from the design.
            kind = self.config.initial.kind
            logger.info("Ax proposed %d of %d points; the rest are %s points", len(points), n, kind)
            extra = self._from_design(client, position + len(points), n - len(points), pending)
            points.extend(extra)
            kinds.extend([kind] * len(extra))
        self.last_kinds = kinds
        return points

    def _initial(
        self, client: Any, n: int, position: int, pending: list[Point]
    ) -> tuple[list[Point], list[str]]:
        """A batch of initial points: Ax's centre first when the campaign has no trial yet
        (unless ``initial.centre: false``), then the design at the batch's positions.

        Positional, as the BoTorch planner's initial design: position ``k`` (every trial
        heard of, any outcome, plus those pending, plus the index in the batch) is the same
        point however the campaign got there, so a rebuilt planner (``resume``, every
        ``suggest`` of ask/tell, ``plan --store``) proposes what one that never stopped
        would have. Ax's own Sobol step starts its sequence over in every new ``Client``
        and skips only the points it knows exactly: a rebuilt planner proposed again the
        initial points measured at readbacks away from their proposal (ask/tell
        ``--actual``: one point three times), or told with the rounding of an offset range
        (``_float_map``). The design is the BoTorch planner's for the same ``initial``
        settings (``kind: sobol`` or ``random``, with or without the centre); its Sobol
        points are Ax's sequence point for point (the same scrambled Sobol engine, seed and
        dimensions) for float, int and ordered choice parameters. Ax's strategy still
        decides when its initial phase ends (``_catch_up``).
        """
        points: list[Point] = []
        if position == 0 and self._centre:
            # Ax's centre: the middle of the box (the design's own centre), or, when that
            # breaks a linear constraint, the centre of the feasible region. The design goes
            # on at its position 1 either way: its first point after its own centre, or,
            # where it has none, its second (nothing repeats).
            points, _ = self._propose(client, 1)
        points += self._from_design(client, position + len(points), n - len(points), pending)
        return points, ["initial"] * len(points)

    def _from_design(self, client: Any, position: int, n: int, pending: list[Point]) -> list[Point]:
        """``n`` points of the design from ``position`` on, each a running Ax trial."""
        held = [*pending, *self._proposed()]
        points = self._design.points(
            position, n, self._repeats.avoid(held, self._measured, n), pending=held
        )
        for point in points:
            index = self._attach(client, point)
            self._running[index] = point
        return points

    def _proposed(self) -> list[Point]:
        """The points of the running Ax trials: pending ones and those of this batch."""
        return list(self._running.values())

    def _propose(self, client: Any, n: int) -> tuple[list[Point], list[str]]:
        """Up to ``n`` new points from Ax and their kinds, each a running Ax trial.

        A proposal that repeats a point in flight, one of the batch, or one that failed
        (``near_duplicate``: floats within 1e-6 of their range, ints and choices exactly)
        is dropped and its Ax trial abandoned. Ax leaves failed trials out of its model and
        of its duplicate check: its model proposed one failed point 8 times in a row, until
        ``max_failures`` ended the campaign. A failed point is a pending one for Ax already
        (``ingest``), which makes such a repeat rare; the abandoned proposal is pending
        too, so Ax is asked again for the dropped repeats of failed points, up to
        ``_FAILED_REPEAT_ROUNDS`` times. A repeat of a point in flight, and whatever is
        still missing, is left to the design fill-in (``suggest``).
        """
        points: list[Point] = []
        kinds: list[str] = []
        for _ in range(1 + _FAILED_REPEAT_ROUNDS):
            repeated = 0
            for index, parameters in sorted(_generate(client, n - len(points)).items()):
                try:
                    point = self._from_ax(parameters)
                except InvalidPoint as exc:
                    # Not expected (Ax honours bounds, types and linear constraints), but
                    # a proposal outside the space must never reach an instrument.
                    logger.warning("Ax proposed a point outside the space (%s); dropped", exc)
                    client.mark_trial_abandoned(index)
                    continue
                if near_duplicate(self.space, point, self._failed):
                    logger.info("Ax proposed a point that failed again (%s); dropped", point)
                    client.mark_trial_abandoned(index)
                    repeated += 1
                    continue
                if near_duplicate(self.space, point, self._proposed()):
                    # Measuring one point twice at once teaches nothing; a design point
                    # fills in (``suggest``).
                    logger.info("Ax proposed a point in flight again (%s); a design point", point)
                    client.mark_trial_abandoned(index)
                    continue
                self._running[index] = point
                points.append(point)
                kinds.append(self._kind_of(client, index))
            if not repeated or len(points) >= n:
                break
        return points, kinds

    # ------------------------------------------------------------------ Ax client
    def _ensure_client(self) -> Any:
        # Every call into Ax starts here: the filters are put back if something (a test
        # harness, a user's ``catch_warnings``) reset the warning filters since.
        _filter_library_warnings()
        if self._client is not None:
            return self._client
        ax = _import_ax()
        client = ax.Client(random_seed=self.seed)
        client.configure_experiment(
            parameters=[
                self._parameter_config(ax, p)
                for p in self.space.parameters
                if not isinstance(p, FixedParameter)
            ],
            parameter_constraints=[c for c in self._constraints if c] or None,
            name="closedloop",
        )
        self._configure_optimization(client)
        client.configure_generation_strategy(
            method="fast",
            initialization_budget=self.n_initial + self._replicates,
            initialization_random_seed=self.seed,
            initialize_with_center=self._centre,
            # The protocol must return n points even while initial trials are running.
            allow_exceeding_initialization_budget=True,
        )
        self._client = client
        return client

    def _configure_optimization(self, client: Any) -> None:
        """Objectives and outcome constraints, their bounds in the units Ax is told
        (``_scaled``); set again when an output's factor is chosen."""
        objective = ", ".join(
            ("-" if o.goal == "minimize" else "") + alias
            for o, alias in zip(self.objectives, self._objective_aliases, strict=True)
        )
        client.configure_optimization(
            objective=objective, outcome_constraints=self._outcome_strings() or None
        )

    def _parameter_config(self, ax: Any, p: Any) -> Any:
        alias = self._by_name[p.name].alias
        if isinstance(p, FloatParameter | IntParameter):
            kind = "int" if isinstance(p, IntParameter) else "float"
            if isinstance(p, IntParameter):
                bounds: tuple[Any, Any] = (int(p.bounds[0]), int(p.bounds[1]))
            else:
                offset, scale = _float_map(p)
                lo, hi = (float(b) for b in p.bounds)
                bounds = ((lo - offset) * scale, (hi - offset) * scale)
            return ax.RangeParameterConfig(
                name=alias,
                bounds=bounds,
                parameter_type=kind,
                scaling="log" if p.log else "linear",
            )
        values, kind = _choice_values(p)
        return ax.ChoiceParameterConfig(
            name=alias,
            values=values,
            parameter_type=kind,
            is_ordered=p.ordered,
        )

    @property
    def _by_name(self) -> dict[str, _AxParameter]:
        return {a.name: a for a in self._parameters}

    def _to_ax(self, point: Mapping[str, Any]) -> dict[str, Any]:
        return {a.alias: a.to_ax(point[a.name]) for a in self._parameters}

    def _from_ax(self, parameters: Mapping[str, Any]) -> Point:
        point: Point = {a.name: a.from_ax(parameters[a.alias]) for a in self._parameters}
        point.update(self._fixed)
        ordered = {name: point[name] for name in self.space.names if name in point}
        return self.space.validate(ordered)

    def _kind_of(self, client: Any, index: int) -> str:
        try:
            runs = client._experiment.trials[index].generator_runs
            node = getattr(runs[0], "_generation_node_name", None) if runs else None
        except (AttributeError, KeyError, IndexError):  # Ax internals moved: not critical
            node = None
        if node is None:
            return "model"
        return "initial" if any(str(node).startswith(s) for s in _INITIAL_NODES) else "model"

    # ------------------------------------------------------------------ trial bookkeeping
    def _replicates_in(self, observations: Sequence[Observation]) -> int:
        """How many completed observations repeat an earlier one's point (replicates of a
        standard condition in prior data, a ``suggest --repeat``).

        Ax counts every trial toward its initialization budget, each replicate its own
        trial; the BoTorch planner counts distinct points (``BoTorchPlanner._design_done``).
        Three replicate prior rows with ``initial.n: 4`` left Ax one design point where
        BoTorch ran three, and four left it none (found in review): so the budget Ax is
        given grows by the replicates the client starts from (a campaign's prior data; a
        rebuilt planner's history). Later replicates are not counted: by then the budget
        is Ax's."""
        keys = []
        for obs in observations:
            if obs.outcome != "completed":
                continue
            try:
                keys.append(self._key(self.space.validate(obs.parameters)))
            except InvalidPoint:
                continue  # not told to Ax: not one of its trials
        return len(keys) - len(set(keys))

    def _key(self, point: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(repr(point.get(name)) for name in self.space.names)

    def _trial_for(self, client: Any, point: Point) -> int | None:
        """The Ax trial an observation at ``point`` (a member of the space) belongs to:
        its running proposal, or a new one."""
        key = self._key(point)
        for index, proposed in self._running.items():
            if self._key(proposed) == key:
                del self._running[index]
                return index
        # Not proposed by Ax, or run at readbacks away from the proposal (which the next
        # suggest then closes as abandoned: it is no longer pending).
        try:
            return self._attach(client, point)
        except ValueError as exc:  # not expected: the point is a member of the space
            logger.warning("Ax refused observed point %s (%s); not told to Ax", point, exc)
            return None

    def _tell(self, client: Any, index: int, obs: Observation) -> bool:
        """Tell Ax how trial ``index`` ended; ``False`` when Ax now has it as failed."""
        if obs.outcome == "abandoned":
            client.mark_trial_abandoned(index)
            return True
        if obs.outcome == "failed":
            client.mark_trial_failed(index, failed_reason="the instrument could not measure it")
            return False
        raw: dict[str, float] = {}
        for alias, name in self._metrics.items():
            value = obs.outputs.get(name)
            if value is not None and math.isfinite(value):
                raw[alias] = float(value)
        if not all(a in raw for a in self._objective_aliases):
            # No usable objective value: nothing for Ax's model, as the BoTorch planner does.
            client.mark_trial_failed(index, failed_reason="objective missing or not finite")
            return False
        bounds_before = self._outcome_strings()
        for alias, value in raw.items():
            self._choose_scale(self._metrics[alias], value)
        if self._outcome_strings() != bounds_before:
            self._configure_optimization(client)
        self._complete(client, index, raw, obs.parameters)
        return True

    def _complete(self, client: Any, index: int, raw: dict[str, float], parameters: Point) -> None:
        """Complete Ax trial ``index`` with its values ``raw`` (by metric alias) as Ax's
        model is to see them, and tell Ax again what this changes for earlier trials.

        Each output's values are those the BoTorch planner's model sees
        (:func:`planners._outliers.model_column`, one rule): a value of sentinel magnitude
        far outside the others (an overrange code such as 9.9e37) clipped onto the nearest
        of them. Told raw, Ax standardised the readings flat beside one spike: a 2-D peak
        maximised (best 0) with 9.9e37 read at trial 3 reached -0.33, -0.028 and -0.090
        in 6 model trials (seeds 0-2), clipped -0.026, -0.008 and -0.006.

        Where a code is clipped to depends on every value told, so a later trial can
        change it (a code among the first readings moves when a reading beyond the others
        comes in; a code told first is clipped once a reading follows): the trials whose
        values change are told again (``Client.attach_data``: Ax 1.3 replaces a trial's
        value of the same metric, ``Experiment.attach_data``). Only an output that has a
        value of sentinel magnitude is worked out again (no other value ever moves). Each
        value is told in its output's units for Ax (``_scaled``). The observation, and
        the store, keep what was measured; each trial with a clipped value is warned of
        once per planner, as the BoTorch planner does.
        """
        told = {alias: self._scaled(self._metrics[alias], value) for alias, value in raw.items()}
        self._told[index] = told
        self._completed[index] = (parameters, raw)
        changed: set[int] = set()
        clipped: dict[int, list[str]] = {}
        for alias, value in raw.items():
            self._columns.setdefault(alias, []).append((index, value))
            if abs(value) >= SENTINEL_MAGNITUDE:
                self._sentinels.add(alias)
        for alias in [a for a in self._metrics if a in self._sentinels]:
            name = self._metrics[alias]
            rows = self._columns[alias]
            model = model_column([value for _, value in rows])
            for (trial, value), seen in zip(rows, model.tolist(), strict=True):
                if seen != value:
                    clipped.setdefault(trial, []).append(name)
                new = self._scaled(name, seen)
                if self._told[trial][alias] != new:
                    self._told[trial][alias] = new
                    changed.add(trial)
        client.complete_trial(trial_index=index, raw_data=dict(told))
        for trial in sorted(changed - {index}):
            client.attach_data(trial_index=trial, raw_data=dict(self._told[trial]))
        for trial in sorted(clipped.keys() - self._clipped_reported):
            self._clipped_reported.add(trial)
            self._warn_clipped(trial, clipped[trial])

    def _warn_clipped(self, trial: int, names: list[str]) -> None:
        """The BoTorch planner's warning for a trial whose value of ``names`` is clipped
        (``_complete``): once per trial, naming the values and the point."""
        point, raw = self._completed[trial]
        measured = {self._metrics[alias]: value for alias, value in raw.items()}
        values = [f"{name} = {measured[name]:.6g}" for name in dict.fromkeys(names)]
        shown = [f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in point.items()]
        logger.warning(
            "%s at %s is far outside the other values (an overrange code or a sentinel?); "
            "the model sees it clipped to the nearest of them (the stored value is unchanged)",
            ", ".join(values),
            ", ".join(shown),
        )

    def _choose_scale(self, name: str, value: float) -> None:
        """Fix the factor output ``name`` is told to Ax with, if ``value`` is the first
        that can (see ``_scaled``)."""
        if name in self._scales or value == 0.0 or abs(value) >= SENTINEL_MAGNITUDE:
            return
        exponent = -math.floor(math.log10(abs(value)))
        scale = 10.0 ** min(exponent, 300) if exponent > 0 else 1.0
        self._scales[name] = scale
        if scale != 1.0:
            logger.debug("output %s is told to Ax times %g", name, scale)

    def _scaled(self, name: str, value: float) -> float:
        """``value`` of output ``name`` in the units Ax is told.

        Ax takes an output whose spread is below 1e-8 for a constant (``StandardizeY``): a
        signal in units of 1e-9 taught its model nothing. So the first non-zero value of
        an output below 1 in magnitude fixes its factor, the power of ten that brings it
        to [1, 10) (``_choose_scale``; zeros before it are zeros in any units, and a value
        of sentinel magnitude, an overrange code, says nothing of the output's units);
        other outputs keep theirs. A factor chosen from the trials told, in order, is the
        same for a planner rebuilt from the store; the bounds on the output
        (``_outcome_strings``) follow it, and so do the values told before it was chosen
        (``_complete``).
        """
        return value * self._scales.get(name, 1.0)

    def _reconcile(self, client: Any, pending: list[Point]) -> None:
        """Make Ax's running trials exactly the pending points."""
        unmatched = list(pending)
        for index, proposed in list(self._running.items()):
            key = self._key(proposed)
            hit = next((i for i, p in enumerate(unmatched) if self._key(p) == key), None)
            if hit is None:
                # Proposed, never run nor told (e.g. a stop before it was persisted).
                client.mark_trial_abandoned(index)
                del self._running[index]
            else:
                unmatched.pop(hit)
        for point in unmatched:
            try:
                valid = self.space.validate(point)
            except InvalidPoint as exc:
                logger.warning("pending point %s is not in the space: %s", point, exc)
                continue
            index = self._attach(client, valid)
            self._running[index] = valid

    def _attach(self, client: Any, point: Point) -> int:
        """Attach ``point``, a member of the space, as a running Ax trial.

        Ax checks an attached point against its search space, whose linear constraints are
        tightened so that Ax's own proposals pass ``Space.validate`` (see
        ``_constraint_string``). A point on a constraint's boundary, valid for the campaign
        (a pending proposal of another planner, prior data, a readback), would be refused.
        So the constraints are lifted for the attach alone: the point has passed the
        campaign's exact check already, and Ax's model ignores parameter constraints when
        it fits (it drops them from its model space), so the point is used like any other.
        Ax still checks names, types and bounds, and generates under the tightened bound.
        """
        search_space = client._experiment.search_space
        tightened = list(search_space.parameter_constraints)
        if not tightened:
            return int(client.attach_trial(parameters=self._to_ax(point)))
        search_space.set_parameter_constraints([])
        try:
            return int(client.attach_trial(parameters=self._to_ax(point)))
        finally:
            search_space.set_parameter_constraints(tightened)

    def _refuse_equalities(self) -> None:
        """Refuse two linear constraints that together are an equality (``a + b <= 7`` and
        ``a + b >= 7``, or any multiples of them).

        The region between them has no width, and Ax cannot search it: its polytope sampler
        must find a strictly feasible start (over integers it fails by rounding), and over
        floats the 1e-6 tightening of ``_constraint_string`` makes the pair contradictory.
        The run crashed at the first suggest; refused here, the campaign fails when it loads.
        """
        linear = [c for c in self.space.constraints if c.is_linear and c.coefficients]
        for i, first in enumerate(linear):
            for second in linear[i + 1 :]:
                width = _width_between(first, second)
                if width is None or width > self._room(first, second):
                    continue
                if width < -self._room(first, second):
                    raise ValueError(
                        f"constraints {first.index} ({first.text!r}) and {second.index} "
                        f"({second.text!r}) contradict each other: no point meets both; "
                        "relax one of them"
                    )
                pair = (
                    f"constraints {first.index} ({first.text!r}) and {second.index} "
                    f"({second.text!r}) together are an equality"
                )
                by_name = {p.name: p for p in self.space.parameters}
                if all(isinstance(by_name[n], IntParameter) for n in first.coefficients):
                    raise ValueError(
                        f"{pair}, whose integer points Ax's sampler cannot reach; "
                        f"{_USE_BOTORCH} (or sobol/random)"
                    )
                raise ValueError(
                    f"{pair} over float parameters: a region of no volume, which no planner "
                    "can sample; fix one parameter with type: fixed, or drop one and compute "
                    "it from the others in the instrument"
                )

    def _room(self, first: ParameterConstraint, second: ParameterConstraint) -> float:
        """The least width Ax needs between two opposed constraints: what their tightening
        takes (in ``first``'s units), and rounding."""
        k = -next(second.coefficients[n] / c for n, c in first.coefficients.items())
        scale = 1.0 + abs(first.constant) + sum(abs(c) for c in first.coefficients.values())
        return self._tightening(first) + self._tightening(second) / k + 1e-12 * scale

    # ------------------------------------------------------------------ goals
    @property
    def _objective_aliases(self) -> list[str]:
        return [f"obj{j}" for j in range(len(self.objectives))]

    def _metric_map(self) -> dict[str, str]:
        """Ax metric alias -> campaign output name."""
        out = {f"obj{j}": o.name for j, o in enumerate(self.objectives)}
        out |= {f"con{k}": c.name for k, c in enumerate(self.outcome_constraints)}
        return out

    def _outcome_strings(self) -> list[str]:
        """Reference points and outcome constraints for Ax, in the units it is told."""
        strings = []
        if len(self.objectives) > 1:
            for j, o in enumerate(self.objectives):
                if o.reference_point is not None:
                    op = ">=" if o.goal == "maximize" else "<="
                    bound = float(o.reference_point) * self._scales.get(o.name, 1.0)
                    strings.append(f"obj{j} {op} {bound!r}")
        for k, c in enumerate(self.outcome_constraints):
            bound = float(c.bound) * self._scales.get(c.name, 1.0)
            strings.append(f"con{k} {c.op} {bound!r}")
        return strings

    def _constraint_string(self, constraint: ParameterConstraint) -> str:
        """A linear parameter constraint in Ax's syntax over the aliases ("" if trivial).

        ``ParameterConstraint`` gives ``slack = constant + sum(c * value) >= 0`` in raw
        units (fixed parameters folded into ``constant``), i.e. ``sum(-c * value) <=
        constant``. Ax sees a float as ``(value - o) * s`` (``_float_map``), so its
        coefficient is ``c / s`` and ``c * o`` goes into the constant; the whole is divided
        by its largest coefficient. Ax's optimiser
        meets a linear constraint only to its solver's tolerance, so with float parameters
        the bound is tightened by 1e-6 of the range the constraint spans over the box (a
        sliver no experiment can tell from the boundary); all-integer constraints stay
        exact. Points in that sliver are still attached
        (``_attach``): the tightening binds Ax's proposals, not the points it is told about.
        """
        text = constraint.text
        if not constraint.is_linear:
            raise ValueError(
                f"Ax cannot express nonlinear parameter constraints ({text!r}); {_USE_BOTORCH}"
            )
        by_name = {p.name: p for p in self.space.parameters}
        terms = []
        constant = float(constraint.constant)
        for name, coef in constraint.coefficients.items():
            p = by_name[name]
            if isinstance(p, FixedParameter):  # pragma: no cover - folded in by the parser
                continue
            if isinstance(p, ChoiceParameter):
                raise ValueError(
                    f"Ax cannot apply the parameter constraint {text!r} to the choice "
                    f"parameter '{name}'; {_USE_BOTORCH}"
                )
            if p.log:
                raise ValueError(
                    f"Ax cannot apply the linear constraint {text!r} to the log-scale "
                    f"parameter '{name}' (Ax models it in log space, where the constraint "
                    f"is not linear); {_USE_BOTORCH}, or set log: false"
                )
            if coef == 0.0:
                continue
            if isinstance(p, FloatParameter):
                offset, scale = _float_map(p)
                constant += float(coef) * offset
                coef = float(coef) / scale
            terms.append((-float(coef), self._by_name[name].alias))
        if not terms:
            return ""
        # Divided by its largest coefficient: BoTorch's samplers and optimisers meet a
        # constraint to an absolute tolerance, which coefficients of 1e-6 would make loose.
        norm = max(abs(c) for c, _ in terms)
        bound = (constant - self._tightening(constraint)) / norm
        return " + ".join(f"{c / norm!r}*{alias}" for c, alias in terms) + f" <= {bound!r}"

    def _tightening(self, constraint: ParameterConstraint) -> float:
        """How much ``_constraint_string`` tightens a linear constraint's bound for Ax: 1e-6
        of the range its expression spans over the box when it has a float parameter, else
        nothing. (Relative to that range, not to the values: a constraint on concentrations
        of 1e-5 M was tightened by 1e-6 M, a tenth of its room.)"""
        by_name = {p.name: p for p in self.space.parameters}
        span = 0.0
        has_float = False
        for name, coef in constraint.coefficients.items():
            p = by_name[name]
            if isinstance(p, FloatParameter | IntParameter):
                span += abs(coef) * (float(p.bounds[1]) - float(p.bounds[0]))
                has_float = has_float or isinstance(p, FloatParameter)
        return 1e-6 * span if has_float else 0.0


def _width_between(first: ParameterConstraint, second: ParameterConstraint) -> float | None:
    """The width of the region two linear constraints leave when they bound the same
    expression from both sides (negative: none at all); ``None`` when they do not.

    ``first`` is ``s1 = c1 + a . x >= 0``; ``second`` opposes it when its coefficients are
    ``-k a`` with ``k > 0``, and then ``s1 + s2 / k = c1 + c2 / k`` is the width, in
    ``first``'s units.
    """
    a, b = first.coefficients, second.coefficients
    if set(a) != set(b):
        return None
    ratios = [-b[n] / a[n] for n in a]
    k = ratios[0]
    if k <= 0 or any(not math.isclose(r, k, rel_tol=1e-9) for r in ratios):
        return None
    return first.constant + second.constant / k


# ---------------------------------------------------------------------- parameters
def _ax_parameters(space: Space) -> list[_AxParameter]:
    """How each varying parameter is shown to Ax (see the module docstring).

    Raises:
        ValueError: an integer range Ax cannot hold (``_AX_MAX_INT_VALUES``), or a choice
            (``_AX_MAX_CHOICE_VALUES``).
    """
    out = []
    for i, p in enumerate(q for q in space.parameters if not isinstance(q, FixedParameter)):
        alias = f"p{i}"
        if isinstance(p, FloatParameter):
            offset, scale = _float_map(p)
            out.append(
                _AxParameter(
                    p.name,
                    alias,
                    partial(_to_ax_units, offset, scale),
                    partial(_from_ax_units, p, offset, scale),
                )
            )
        elif isinstance(p, IntParameter):
            n_values = p.bounds[1] - p.bounds[0] + 1
            if n_values > _AX_MAX_INT_VALUES:
                raise ValueError(
                    f"integer parameter '{p.name}' has {n_values} values "
                    f"([{p.bounds[0]}, {p.bounds[1]}]); Ax lists every value of an integer "
                    f"range, which takes too much memory beyond {_AX_MAX_INT_VALUES} values; "
                    f"{_USE_BOTORCH}, or make '{p.name}' a float parameter and round it in "
                    "the instrument"
                )
            out.append(_AxParameter(p.name, alias, int, int))
        elif isinstance(p, ChoiceParameter):
            if len(p.values) > _AX_MAX_CHOICE_VALUES:
                raise ValueError(
                    f"choice parameter '{p.name}' has {len(p.values)} values; Ax takes at most "
                    f"{_AX_MAX_CHOICE_VALUES} values in a choice; {_USE_BOTORCH}"
                    + (
                        ", where ordered levels are one column whatever their number"
                        if p.ordered
                        else ""
                    )
                )
            values, _ = _choice_values(p)
            to_ax = dict(zip([repr(v) for v in p.values], values, strict=True))
            pairs = list(zip(values, p.values, strict=True))
            out.append(_AxParameter(p.name, alias, partial(_label, to_ax), partial(_lookup, pairs)))
        else:  # pragma: no cover - the parameter union is closed
            raise ValueError(f"parameter '{p.name}' of type {type(p).__name__} is not supported")
    return out


def _float_map(p: FloatParameter) -> tuple[float, float]:
    """``(offset, scale)``: Ax sees a float as ``(value - offset) * scale`` (see the module
    docstring). ``scale`` is 1 for a range at least 1 wide, else the power of two that makes
    it 1 to 2 wide; ``offset`` is the lower bound of a linear range more than 2^20 of its
    widths from zero, else 0."""
    lo, hi = (float(b) for b in p.bounds)
    width = hi - lo
    exponent = -math.floor(math.log2(width)) if 0.0 < width < 1.0 else 0
    far = not p.log and max(abs(lo), abs(hi)) > _FAR_FROM_ZERO * width
    return (lo if far else 0.0), math.ldexp(1.0, exponent)


def _to_ax_units(offset: float, scale: float, value: Any) -> float:
    return (float(value) - offset) * scale


def _from_ax_units(p: FloatParameter, offset: float, scale: float, value: Any) -> float:
    """A float Ax proposed, back in the campaign's units (exactly without an offset:
    ``scale`` is a power of two), within its bounds."""
    lo, hi = (float(b) for b in p.bounds)
    return min(max(offset + float(value) / scale, lo), hi)


def _label(to_ax: dict[str, Any], value: Any) -> Any:
    return to_ax[repr(value)]


def _lookup(back: list[tuple[Any, Any]], value: Any) -> Any:
    for ax_value, ours in back:
        if type(ax_value) is type(value) and ax_value == value:
            return ours
    for ax_value, ours in back:  # Ax may hand back 1.0 for 1
        if ax_value == value:
            return ours
    raise InvalidPoint(f"Ax returned {value!r}, which is not one of the choice's values")


def _choice_values(p: ChoiceParameter) -> tuple[list[Any], str]:
    """The values Ax gets for a choice, and their Ax type.

    Homogeneous values go as they are. Ax sorts numeric choice values, so an ordered numeric
    choice not listed in ascending order, and any mix of types, go as text labels (Ax keeps
    the order of text values).
    """
    values = list(p.values)
    ordered = p.ordered
    if all(isinstance(v, bool) for v in values):
        return values, "bool"
    if all(isinstance(v, str) for v in values):
        return values, "str"
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numeric and (not ordered or values == sorted(values)):
        if all(isinstance(v, int) for v in values):
            return values, "int"
        return [float(v) for v in values], "float"
    labels = [str(v) for v in values]
    if len(set(labels)) != len(labels):
        labels = [f"{k}:{v}" for k, v in enumerate(values)]
    return labels, "str"


# ---------------------------------------------------------------------- Ax plumbing
def _generate(client: Any, n: int) -> dict[int, Any]:
    """Up to ``n`` new Ax trials (index -> Ax parameters), fewer if Ax cannot make them now.

    Ax raises (rather than returning fewer) for the whole batch when it cannot make all of
    it; then the batch is made one trial at a time until Ax stops. It stops when a discrete
    space has no new point left, and when its model has no data yet: with
    ``initial.n: 1`` Ax's strategy is its centre point, then the model at once (no Sobol
    step), so a second proposal before a first trial has completed (a batch, a second
    instrument slot, a first trial that failed) has nothing to fit. The caller fills the
    rest of the batch from the initial design.

    Raises:
        InfeasibleSpaceError: Ax's sampler found no point that meets the linear parameter
            constraints (BoTorch's ``InfeasibilityError``).
    """
    from ax.exceptions.core import DataRequiredError, OptimizationComplete
    from ax.exceptions.generation_strategy import MaxParallelismReachedException
    from botorch.exceptions.errors import InfeasibilityError

    cannot_now = (OptimizationComplete, MaxParallelismReachedException, DataRequiredError)
    trials: dict[int, Any] = {}
    try:
        try:
            return dict(client.get_next_trials(max_trials=n))
        except cannot_now as exc:
            logger.info("Ax could not make %d trials at once (%s); making them one by one", n, exc)
        for _ in range(n):
            try:
                trials |= client.get_next_trials(max_trials=1)
            except cannot_now as exc:
                logger.info("Ax cannot propose a further point now: %s", exc)
                break
    except InfeasibilityError as exc:
        raise InfeasibleSpaceError(
            f"Ax found no point that meets all the parameter constraints ({exc}); check "
            "that they can hold together within the bounds, or relax them",
            draws=0,
            feasible_fraction=0.0,
        ) from None
    return trials


def _catch_up(client: Any) -> str | None:
    """Move Ax's generation strategy past every step whose exit condition already holds, and
    name the step it is on (``None`` when out of reach).

    Ax moves at most one step per ``get_next_trials``, and only from the step it is on: a
    fresh ``Client`` told N finished trials (a planner rebuilt from the store: ``resume``,
    every ``suggest`` of ask/tell, ``plan --store``) sits at its centre step, skips it, and
    hands the call to its Sobol step without checking that step's exit condition. So every
    rebuilt planner proposed one more initial point before its model: ask/tell never reached
    the model (seven ``suggest -n 1``/``tell`` rounds, all ``kind: initial``), and a failed
    initial point came back at every call. Ax's own check of how many trials it can make
    now (``GenerationStrategy.current_generator_run_limit``, public; the legacy
    ``AxClient.get_current_trial_generation_limit``) first walks the strategy through
    every step that is done, as a planner that made those trials itself would have; the
    same step, the same model, so a rebuilt planner proposes what an uninterrupted one
    does. Ax's ``Client`` keeps its strategy in a private attribute (Ax is pinned in
    ``constraints.txt``): where a later Ax moves it, proposals fall back to Ax's own pace,
    and its own initial design (``AxPlanner._initial`` is then not used: Sobol points even
    with ``initial.kind: random``).
    """
    strategy = getattr(client, "_maybe_generation_strategy", None)
    limit = getattr(strategy, "current_generator_run_limit", None)
    if limit is None:
        logger.debug("Ax's generation strategy is not reachable; its steps move at Ax's pace")
        return None
    limit()
    node = getattr(strategy, "current_node_name", None)
    return node if isinstance(node, str) else None


_ROUTED = False
_IMPORT_LOCK = threading.Lock()

# Warnings raised inside Ax and the libraries under it: internals (pandas deprecations,
# "no objective thresholds, winsorizing", tensor copy hints) a campaign's user cannot act on.
_LIBRARY_MODULES = r"(ax|botorch|gpytorch|linear_operator|pyro)(\.|$)"
_LIBRARY_FILTER = ("ignore", None, Warning, re.compile(_LIBRARY_MODULES), 0)


def _filter_library_warnings() -> None:
    """Ignore the warnings raised in Ax, BoTorch, GPyTorch, linear_operator and Pyro code.

    A process-wide filter by the module a warning is raised in, not a ``catch_warnings``
    around Ax's calls: that swaps the warning state of the whole process (it is not
    thread-safe), so while Ax computed, the warnings of the instrument's slot threads were
    swallowed too (3 of 8 shown with Ax, 8 of 8 with BoTorch). Warnings from anywhere else,
    from any thread, show as they would without Ax. Called before every use of Ax: the
    filter goes back in front when something (a test harness, a user's filter) was put
    before it or reset the filters; otherwise the filters are left alone (changing them
    makes Python show again the warnings it showed once).
    """
    if not warnings.filters or warnings.filters[0] != _LIBRARY_FILTER:
        warnings.filterwarnings("ignore", module=_LIBRARY_MODULES)


def _import_ax() -> Any:
    """Import Ax (slow, noisy) once, and route its log records into this module's logger.

    Ax's stream handler binds ``sys.stderr`` when it is created, on import, and logs a line
    during the import: the importing thread's writes to stderr go to a buffer (logged at
    DEBUG), other threads' pass through (a ``redirect_stderr`` swallowed them too), and
    the handler is replaced by one that forwards Ax's records to this module's logger.

    Ax is an optional extra: a campaign of kind ``ax`` is refused when it loads if Ax is not
    installed (``planners._config.check_available``), and an import that fails all the same
    (an install broken since, a dependency missing, the planner used from Python) raises
    :class:`~planners._config.PlannerUnavailable`, which names the install that fixes it,
    not a ``ModuleNotFoundError`` that reads like a bug in closedloop.
    """
    global _ROUTED
    with _IMPORT_LOCK:
        if _ROUTED:
            import ax

            return ax
        stream = _ThreadStderr(sys.stderr)
        sys.stderr = stream  # type: ignore[assignment]
        try:
            _filter_library_warnings()
            import ax
            from ax.utils.common import logger as ax_logger
        except ImportError as exc:
            raise PlannerUnavailable("ax", cause=exc) from exc
        finally:
            stream.release()
        for line in stream.captured.getvalue().splitlines():
            logger.debug("ax (import): %s", line)
        root = logging.getLogger(ax_logger.AX_ROOT_LOGGER_NAME)
        root.removeHandler(ax_logger.ROOT_STREAM_HANDLER)
        root.addHandler(_ForwardHandler())
        _ROUTED = True
        return ax


class _ThreadStderr:
    """``sys.stderr`` while Ax imports: the importing thread's writes are kept, others pass.

    Stays a plain pass-through once released (a handler bound during the import keeps it).
    """

    def __init__(self, real: Any) -> None:
        self._real = real
        self._thread: int | None = threading.get_ident()
        self.captured = io.StringIO()

    def write(self, text: str) -> int:
        if self._thread is not None and threading.get_ident() == self._thread:
            return self.captured.write(text)
        return int(self._real.write(text))

    def flush(self) -> None:
        self._real.flush()

    def release(self) -> None:
        """Stop keeping writes, and put the real stream back (unless replaced since)."""
        self._thread = None
        if sys.stderr is self:
            sys.stderr = self._real

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, ...
        return getattr(self._real, name)


class _ForwardHandler(logging.Handler):
    """Ax's records as DEBUG records of this module (INFO for Ax's errors)."""

    def emit(self, record: logging.LogRecord) -> None:
        level = logging.INFO if record.levelno >= logging.ERROR else logging.DEBUG
        if logger.isEnabledFor(level):
            logger.log(level, "ax %s: %s", record.name, record.getMessage())
