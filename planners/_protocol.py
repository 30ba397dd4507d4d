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
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from planners._space import Point

TrialOutcome = Literal["completed", "failed", "abandoned"]
"""How a trial ended, as a planner sees it.

``completed``: the run finished (its outputs may still be unusable, e.g. NaN). ``failed``: the
instrument could not measure the point, which is evidence about the point (a planner may learn
where experiments fail). ``abandoned``: the trial was interrupted (Ctrl-C, kill) and says
nothing about the point; it only keeps its position in an initial design.
"""


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
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op><=|>=)\s*(?P<bound>[^\s].*?)\s*$"
)


def parse_outcome_constraint(text: str) -> OutcomeConstraint:
    """``"name <= number"`` or ``"name >= number"`` as an :class:`OutcomeConstraint`.

    Raises:
        ValueError: anything else, with the form to write instead.
    """
    if not isinstance(text, str):
        raise ValueError(f"outcome constraint {text!r} must be text; write e.g. 'impurity <= 0.05'")
    match = _CONSTRAINT.match(text)
    if match is None:
        raise ValueError(
            f"outcome constraint {text!r} is not 'output <= number' or 'output >= number'; "
            "write e.g. 'impurity <= 0.05' (strict < and > are not supported)"
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
    op: Literal["<=", ">="] = "<=" if match["op"] == "<=" else ">="
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


@runtime_checkable
class Planner(Protocol):
    """Proposal strategy: ``ingest`` what happened, ``suggest`` what to run next.

    ``suggest`` takes the points still in flight (``pending``) so that it never proposes them
    again and keeps a batch diverse. It returns exactly ``n`` valid points of the space.

    Attributes:
        last_kinds: how each point of the last ``suggest`` was made (``initial``, ``model``,
            ``sobol``, ``random``), stored with the trial so reports can tell the design
            from the model's choices.
    """

    last_kinds: list[str]

    def ingest(self, observations: Sequence[Observation]) -> None:
        """Add finished trials (called with every trial once, in trial order)."""
        ...

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        """Propose ``n`` points given the trials in flight."""
        ...
