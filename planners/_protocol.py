"""The one interface every proposal strategy implements, and the data it exchanges.

Planners are pure: they see the search space, what has been measured and what is in flight,
and return proposals. They never touch devices or the store, so a planner's state is always
rebuilt by ingesting the store's trials (``resume`` needs no pickled model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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

    @property
    def sign(self) -> float:
        """+1 for maximise, -1 for minimise: planners maximise ``sign * value``."""
        return 1.0 if self.goal == "maximize" else -1.0


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
