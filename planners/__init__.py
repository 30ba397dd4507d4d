"""Proposal strategies behind one protocol: random, Sobol and BoTorch."""

from planners._baselines import PositionalDesign, RandomPlanner, SobolPlanner
from planners._botorch import BoTorchPlanner, BoTorchSettings, SuggestTiming
from planners._config import Acquisition, InitialDesign, PlannerConfig
from planners._factory import make_planner
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
    "BoTorchPlanner",
    "BoTorchSettings",
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
    "PositionalDesign",
    "RandomPlanner",
    "SobolPlanner",
    "Space",
    "SuggestTiming",
    "TrialOutcome",
    "make_planner",
]
