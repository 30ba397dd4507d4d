"""Proposal strategies behind one protocol: random, Sobol and BoTorch."""

from planners._baselines import PositionalDesign, RandomPlanner, SobolPlanner
from planners._botorch import BoTorchPlanner, BoTorchSettings, SuggestTiming
from planners._config import Acquisition, InitialDesign, PlannerConfig
from planners._constraints import ConstraintError, InfeasibleSpaceError, ParameterConstraint
from planners._factory import make_planner
from planners._pareto import hypervolume, hypervolume_trace, pareto_mask, reference_point
from planners._protocol import (
    Objective,
    Observation,
    OutcomeConstraint,
    Planner,
    TrialOutcome,
    parse_outcome_constraint,
)
from planners._space import (
    ChoiceParameter,
    FixedParameter,
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
    "ConstraintError",
    "FixedParameter",
    "FloatParameter",
    "InfeasibleSpaceError",
    "InitialDesign",
    "IntParameter",
    "InvalidPoint",
    "Objective",
    "Observation",
    "OutcomeConstraint",
    "Parameter",
    "ParameterConstraint",
    "Planner",
    "PlannerConfig",
    "Point",
    "PositionalDesign",
    "RandomPlanner",
    "SobolPlanner",
    "Space",
    "SuggestTiming",
    "TrialOutcome",
    "hypervolume",
    "hypervolume_trace",
    "make_planner",
    "pareto_mask",
    "parse_outcome_constraint",
    "reference_point",
]
