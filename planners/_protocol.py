"""The one interface every proposal strategy implements, and the data it exchanges.

Planners are pure: they see the search space, what has been measured and what is in flight,
and return proposals. They never touch devices or the store, so a planner's state is always
rebuilt by ingesting the store's trials (``resume`` needs no pickled model).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from planners._space import InvalidPoint, Point, Space

TrialOutcome = Literal["completed", "failed", "abandoned"]
"""How a trial ended, as a planner sees it.

``completed``: the run finished (its outputs may still be unusable, e.g. NaN). ``failed``: the
instrument could not measure the point, which is evidence about the point (a planner may learn
where experiments fail). ``abandoned``: the trial was interrupted (Ctrl-C, kill) and says
nothing about the point; it only keeps its position in an initial design.
"""

DESIGN_KINDS = frozenset({"initial", "sobol", "random"})
"""Labels of design points (:attr:`Planner.last_kinds`): made by a positional design, without
a model, so they cost next to nothing; the loop does not time them for its pace
(``loop.scheduler``), and reports mark them as the initial design (``loop.report``). Any other
label a planner gives counts as a model's proposal, whatever its name (a plugin's ``local``,
``ts``, ...). Kept here, with the protocol that defines the labels, so the engine and the
reports read one list."""

ENGINE_KINDS = frozenset({"retry", "prior"})
"""Labels the engine gives trials itself, which no planner's proposal may carry: ``retry``,
the re-run of a failed point (a rebuilt planner skips the failed attempt a ``retry`` trial
follows), and ``prior``, prior data (never dispatched, not counted by ``max_trials``)."""


class Objective(BaseModel):
    """One output to optimise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Name of an instrument output.")
    goal: Literal["maximize", "minimize"] = Field(
        default="maximize", description="Direction of optimisation."
    )

    reference_point: float | None = Field(
        default=None,
        description=(
            "With several objectives: the worst value still worth having, in the output's "
            "units (the hypervolume's reference point); inferred from the data when omitted."
        ),
    )

    @property
    def sign(self) -> float:
        """+1 for maximise, -1 for minimise: planners maximise ``sign * value``."""
        return 1.0 if self.goal == "maximize" else -1.0


class OutcomeConstraint(BaseModel):
    """A bound a measured output must respect for a trial to count (``impurity <= 0.05``).

    Built from campaign text with :func:`parse_outcome_constraint`. The planner models the
    output and weights its acquisition by the probability of satisfying the bound; reports
    count only trials that satisfy every outcome constraint as feasible.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Name of an instrument output.")
    op: Literal["<=", ">="] = Field(description="Direction of the bound.")
    bound: float = Field(description="The bound, in the output's units.")
    text: str = Field(default="", description="The constraint as written in the campaign.")

    def slack(self, value: float) -> float:
        """How far inside the bound ``value`` is (negative: violated)."""
        return self.bound - value if self.op == "<=" else value - self.bound

    def satisfied(self, outputs: Mapping[str, float]) -> bool:
        """True when the output is present, finite and within the bound."""
        value = outputs.get(self.name)
        return value is not None and math.isfinite(value) and self.slack(value) >= 0


_CONSTRAINT = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op><=|>=|<|>)\s*(?P<bound>[^\s=].*?)\s*$"
)


_REVERSED = re.compile(
    r"^\s*(?P<bound>[^\s<>=]+)\s*(?P<op><=|>=|<|>)\s*(?P<name>[A-Za-z_][\w.]*)\s*$"
)
_FLIPPED = {"<=": ">=", ">=": "<=", "<": ">=", ">": "<="}


def _constraint_hint(text: str) -> str:
    """What a constraint that is not ``output OP number`` seems to mean, as a hint: the
    output on the right (``0.03 >= impurity``; the message used to say "strict < and > are
    not supported", whatever the mistake: found in review)."""
    reversed_ = _REVERSED.match(text)
    if reversed_ is None:
        return ""
    flipped = _FLIPPED[reversed_["op"]]
    return f" (the output goes on the left: '{reversed_['name']} {flipped} {reversed_['bound']}')"


def parse_outcome_constraint(text: str) -> OutcomeConstraint:
    """``"name <= number"`` or ``"name >= number"`` (``<``, ``>`` read alike) as an
    :class:`OutcomeConstraint`.

    Raises:
        ValueError: anything else, with the form to write instead.
    """
    if not isinstance(text, str):
        raise ValueError(f"outcome constraint {text!r} must be text; write e.g. 'impurity <= 0.05'")
    match = _CONSTRAINT.match(text)
    if match is None:
        raise ValueError(
            f"outcome constraint {text!r} is not 'output <= number' or 'output >= number'"
            f"{_constraint_hint(text)}; write e.g. 'impurity <= 0.05'"
        )
    raw = match["bound"]
    try:
        if "_" in raw:  # float() reads 1_0 as 10: a slip for 1.0 read as another bound
            raise ValueError(raw)
        bound = float(raw)
    except ValueError:
        raise ValueError(
            f"outcome constraint {text!r}: the bound {raw!r} is not a number; "
            "write e.g. 'impurity <= 0.05'"
        ) from None
    if not math.isfinite(bound):
        raise ValueError(
            f"outcome constraint {text!r}: the bound must be finite; write e.g. 'impurity <= 0.05'"
        )
    # < and > read as <= and >=, as a parameter constraint's do: a measured value is never
    # exactly on the bound, and one syntax keeps one meaning across the file
    op: Literal["<=", ">="] = "<=" if match["op"].startswith("<") else ">="
    return OutcomeConstraint(name=match["name"], op=op, bound=bound, text=text.strip())


@dataclass(frozen=True)
class Observation:
    """A finished trial as a planner sees it.

    Attributes:
        parameters: the point the instrument actually ran (readbacks where the instrument
            reports them, otherwise the commanded values); always a member of the space.
        outputs: measured values by output name; empty for a failed trial.
        outcome: ``completed``, ``failed`` or ``abandoned`` (see :data:`TrialOutcome`); failed
            and abandoned trials still count for the position in an initial design so that a
            resumed campaign continues the same sequence.
    """

    parameters: Point
    outputs: dict[str, float] = field(default_factory=dict)
    outcome: TrialOutcome = "completed"

    def usable_for(self, names: Sequence[str]) -> bool:
        """True when every named output is present and finite (NaN/inf never reach a model)."""
        return self.outcome == "completed" and all(
            n in self.outputs and math.isfinite(self.outputs[n]) for n in names
        )


def check_observations(space: Space, observations: Sequence[Observation]) -> None:
    """Refuse observations a planner could not learn from, before it keeps any of them.

    The loop only ever hands a planner well-formed observations; a script driving a planner
    (README: From Python) may not. Taken as they were, an observation missing a parameter
    or with a ``None`` output broke every later ``suggest`` with an error naming no
    observation (``KeyError: 'y'``, ``TypeError``), and an unknown ``outcome`` was read as
    something else (found in review). So: the space's parameters and no others, each of its
    type (a choice one of its values, a number finite; outside the bounds is allowed: prior
    data and readbacks may lie there), an outcome of :data:`TrialOutcome`, outputs that are
    numbers (NaN and inf included: such a reading is skipped, not an error).

    Raises:
        ValueError: naming the observation (its position in ``observations``) and what is
            wrong with it.
    """
    outcomes = get_args(TrialOutcome)
    for k, obs in enumerate(observations):
        where = f"observation {k} of {len(observations)}"
        if not isinstance(obs, Observation):
            raise TypeError(f"{where} is a {type(obs).__name__}, not a planners.Observation")
        if obs.outcome not in outcomes:
            raise ValueError(f"{where}: outcome {obs.outcome!r} is not one of {list(outcomes)}")
        try:
            space.check_measured(obs.parameters)
        except InvalidPoint as exc:
            raise ValueError(f"{where}: {exc}") from None
        for name, value in obs.outputs.items():
            if not _is_real(value):
                raise ValueError(
                    f"{where}: output {name}={value!r} is not a number (a reading that failed "
                    "is float('nan'), or the observation's outcome 'failed')"
                )


def _is_real(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@runtime_checkable
class Planner(Protocol):
    """Proposal strategy: ``ingest`` what happened, ``suggest`` what to run next.

    The contract every planner keeps, the built-in ones and a campaign's own
    (``planner: {plugin: ...}``, built as ``Class(context, **args)`` with a
    :class:`~planners.PlannerContext`; README: Your own planner):

    * The loop calls one method at a time, on its planner thread, never two at once.
    * The planner's state is rebuilt from the store: on every ``resume``, ``suggest`` and
      ``plan`` a new planner ingests every finished trial, so it keeps nothing it cannot
      learn again from them (no pickles), and the same seed and trials give the same
      proposals. Derive every random draw from ``context.seed`` and what was ingested.
    * A planner never touches devices or the store.

    Attributes:
        last_kinds: how each point of the last ``suggest`` was made, one label per point (a
            word of letters, digits and ``_.-``, at most 40 characters), stored with the
            trial. ``initial``, ``sobol`` and ``random`` (:data:`DESIGN_KINDS`) mark design
            points: the loop does not time them for its pace, and reports mark them as the
            initial design. Any other label (``model``, or a planner's own such as
            ``local``) is a model proposal, timed for the pace. ``retry`` and ``prior``
            (:data:`ENGINE_KINDS`) belong to the engine (a re-run of a failed point, prior
            data) and are refused from a planner.

    A plugin's ``ingest`` or ``suggest`` that raises stops the campaign as a broken answer
    does: a ``PlannerError`` naming the plugin and its exception (``-v`` shows the
    traceback), the trials in flight measured and stored first, the campaign resumable once
    the plugin is fixed. An exception a built-in planner raises is closedloop's bug.
    """

    last_kinds: list[str]

    def ingest(self, observations: Sequence[Observation]) -> None:
        """Learn finished trials: each exactly once, in the order they ended (with several
        instrument slots not always trial order; a rebuilt planner gets the live one's order).

        What arrives: completed trials (``outputs`` may hold NaN or miss an output:
        :meth:`Observation.usable_for` says which count), failed trials (``outcome
        "failed"``, empty ``outputs``: the instrument could not measure the point),
        abandoned ones (interrupted, evidence of nothing, but they hold their place in a
        design), prior data (completed trials stored before the first proposal), and trials
        that broke an outcome constraint (completed: the constraint is the planner's to
        model). ``parameters`` is the point actually run (readbacks where the instrument
        reports them), a member of the space.
        """
        ...

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        """Propose exactly ``n`` new points of the space, and set ``last_kinds`` to their
        ``n`` labels.

        ``pending``: every point that is not yet ingested but will be: trials in flight on
        the instrument, proposals queued for a free slot, trials to be retried, and
        ``closedloop suggest`` proposals awaiting ``tell``. Never propose one of them again,
        and keep a batch diverse around them. Each point must be a member of the space
        (``space.validate(point)`` returns it unchanged: bounds, integers, choices and the
        parameter constraints). A float within 1e-9 of its range outside a bound, or an int
        within 1e-9 of a whole number, is set to the bound or the integer; any other point
        outside the space, another count than ``n``, or labels that do not match stop the
        campaign with a ``PlannerError`` naming the planner, before anything of the answer
        is stored (trials already in flight are measured first).
        """
        ...
