"""Proposal strategies behind one protocol: random, Sobol and BoTorch."""

from planners._config import Acquisition, InitialDesign, PlannerConfig
from planners._protocol import Objective, Observation, Planner, TrialOutcome
from planners._space import (
    ChoiceParameter,
    FloatParameter,
    IntParameter,
    InvalidPoint,
    Parameter,
    Point,
    Space,
)

__all__ = [
    "Acquisition",
    "ChoiceParameter",
    "FloatParameter",
    "InitialDesign",
    "IntParameter",
    "InvalidPoint",
    "Objective",
    "Observation",
    "Parameter",
    "Planner",
    "PlannerConfig",
    "Point",
    "Space",
    "TrialOutcome",
]
