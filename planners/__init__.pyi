# The public names of ``planners``, for type checkers and for the lazy loader in __init__.py
# (lazy_loader.attach_stub reads the imports below): a name is importable from the package
# exactly when it is listed here.
from ._baselines import PositionalDesign, RandomPlanner, SobolPlanner
from ._botorch import BoTorchPlanner, BoTorchSettings, ModelEstimates, SuggestTiming
from ._config import Acquisition, InitialDesign, PlannerConfig
from ._constraints import ConstraintError, InfeasibleSpaceError, ParameterConstraint
from ._factory import check_planner, make_planner
from ._pareto import hypervolume, hypervolume_trace, pareto_mask, reference_point
from ._plugin import PlannerContext, PlannerPluginError
from ._progress import ProgressCallback, progress_listener, report_progress
from ._protocol import (
    Objective,
    Observation,
    OutcomeConstraint,
    Planner,
    TrialOutcome,
    parse_outcome_constraint,
)
from ._room import ConstraintsLeaveNoRoom
from ._space import (
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
    "ConstraintsLeaveNoRoom",
    "FixedParameter",
    "FloatParameter",
    "InfeasibleSpaceError",
    "InitialDesign",
    "IntParameter",
    "InvalidPoint",
    "ModelEstimates",
    "Objective",
    "Observation",
    "OutcomeConstraint",
    "Parameter",
    "ParameterConstraint",
    "Planner",
    "PlannerConfig",
    "PlannerContext",
    "PlannerPluginError",
    "Point",
    "PositionalDesign",
    "ProgressCallback",
    "RandomPlanner",
    "SobolPlanner",
    "Space",
    "SuggestTiming",
    "TrialOutcome",
    "hypervolume",
    "hypervolume_trace",
    "check_planner",
    "make_planner",
    "pareto_mask",
    "parse_outcome_constraint",
    "progress_listener",
    "reference_point",
    "report_progress",
]
