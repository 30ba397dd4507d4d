"""Planner settings as written under ``planner:`` in a campaign file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Acquisition = Literal[
    "qLogNoisyExpectedImprovement",
    "qLogExpectedImprovement",
    "qUpperConfidenceBound",
]


class InitialDesign(BaseModel):
    """Space-filling points run before the model takes over."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sobol", "random"] = Field(
        default="sobol", description="Scrambled Sobol (balanced) or independent uniform draws."
    )
    n: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Number of initial trials; default max(5, d + 1) for d parameters.",
    )

    def size(self, dim: int) -> int:
        return self.n if self.n is not None else max(5, dim + 1)


class PlannerConfig(BaseModel):
    """Which strategy proposes the next experiments, and how."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["botorch", "sobol", "random", "ax"] = Field(
        default="botorch",
        description="Bayesian optimisation (BoTorch, or Ax's Client), or a model-free baseline.",
    )
    initial: InitialDesign = Field(default_factory=InitialDesign)
    acquisition: Acquisition = Field(
        default="qLogNoisyExpectedImprovement",
        description="BoTorch acquisition function (Log variants: plain EI is numerically poor).",
    )
    batch_size: int = Field(default=1, ge=1, le=64, description="Proposals per suggest call.")
