"""Simulated instruments: benchmark functions and a flow reactor, wrapped as Ophyd devices.

The physics of every simulator is a pure function (inputs dict -> outputs dict), testable
without a RunEngine; :func:`build_simulated_instrument` wraps any such function as Ophyd
devices (one settable :class:`SimActuator` per input, a triggerable :class:`SimDetector`) so
that a dry run drives exactly the code path real hardware uses. This package is the leaf of
the dependency graph: it imports neither ``planners``, ``instruments`` nor ``loop``.
"""

from simulators._datasets import (
    OLYMPUS_CITATION,
    Dataset,
    DatasetError,
    DatasetSimulator,
    DatasetSpec,
    LookupTable,
    PointNotInDataset,
    UnknownDatasetError,
    bundled_dataset_names,
    dataset_simulator,
    load_dataset,
    load_spec,
)
from simulators._devices import (
    SimActuator,
    SimDetector,
    SimLimitError,
    SimulatedFault,
    SimulatedInstrument,
    build_simulated_instrument,
)
from simulators._emulator import Emulator, cached_emulator, cross_validate, fit_emulator
from simulators._executor import DaskExecutor, ExecutorUnavailable
from simulators._expressions import Expression, ExpressionError, parse_expression
from simulators._flow_reactor import (
    CATALYSTS,
    FLOW_REACTOR_OPTIMA,
    Catalyst,
    estimate_flow_reactor_optima,
    flow_reactor,
    flow_reactor_array,
    flow_reactor_problem,
)
from simulators._functions import (
    ParamSpec,
    TestProblem,
    ackley,
    ackley_array,
    branin,
    branin_array,
    hartmann6,
    hartmann6_array,
    regret,
    rosenbrock,
    rosenbrock_array,
)
from simulators._registry import SIMULATORS, UnknownSimulatorError, get_problem

__all__ = [
    "DaskExecutor",
    "ExecutorUnavailable",
    "CATALYSTS",
    "load_spec",
    "load_dataset",
    "fit_emulator",
    "dataset_simulator",
    "cross_validate",
    "cached_emulator",
    "bundled_dataset_names",
    "UnknownDatasetError",
    "PointNotInDataset",
    "LookupTable",
    "Emulator",
    "DatasetSpec",
    "DatasetSimulator",
    "DatasetError",
    "Dataset",
    "FLOW_REACTOR_OPTIMA",
    "OLYMPUS_CITATION",
    "SIMULATORS",
    "Catalyst",
    "Expression",
    "ExpressionError",
    "ParamSpec",
    "SimActuator",
    "SimDetector",
    "SimLimitError",
    "SimulatedFault",
    "SimulatedInstrument",
    "TestProblem",
    "UnknownSimulatorError",
    "ackley",
    "ackley_array",
    "branin",
    "branin_array",
    "build_simulated_instrument",
    "estimate_flow_reactor_optima",
    "flow_reactor",
    "flow_reactor_array",
    "flow_reactor_problem",
    "get_problem",
    "hartmann6",
    "hartmann6_array",
    "parse_expression",
    "regret",
    "rosenbrock",
    "rosenbrock_array",
]
