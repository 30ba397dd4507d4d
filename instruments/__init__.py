"""Instruments: Ophyd devices driven by one Bluesky run per trial.

``build_instrument`` turns a campaign's ``instrument:`` section into devices, ``Dispatcher``
runs each trial on a real ``RunEngine`` and returns a ``TrialResult`` with the run's
documents. Nothing here imports botorch, torch, ``planners`` or ``loop``.
"""

from instruments._build import (
    InputSpec,
    SimulatorInfo,
    build_instrument,
    build_instruments,
    describe_instrument,
    input_specs,
    list_simulators,
    load_function,
    open_executor,
    slot_seed,
)
from instruments._config import ExecutorConfig, InstrumentConfig
from instruments._dispatch import (
    Dispatcher,
    DocumentSink,
    describe_exception,
    is_transient,
    readback_problems,
)
from instruments._errors import (
    DispatcherBusy,
    DispatcherClosed,
    DocumentSinkError,
    ExecutorUnavailable,
    InstrumentConfigError,
    InstrumentError,
    TrialArgumentError,
    TrialInterrupted,
)
from instruments._manual import ManualInstrument
from instruments._plans import PLAN_NAME, STREAM_NAME, check_trial_arguments, trial_plan
from instruments._protocol import ExitStatus, Instrument, TrialResult

__all__ = [
    "PLAN_NAME",
    "STREAM_NAME",
    "Dispatcher",
    "DispatcherBusy",
    "DispatcherClosed",
    "DocumentSink",
    "DocumentSinkError",
    "ExecutorConfig",
    "ExecutorUnavailable",
    "ExitStatus",
    "InputSpec",
    "Instrument",
    "InstrumentConfig",
    "InstrumentConfigError",
    "InstrumentError",
    "ManualInstrument",
    "SimulatorInfo",
    "TrialArgumentError",
    "TrialInterrupted",
    "TrialResult",
    "build_instrument",
    "build_instruments",
    "check_trial_arguments",
    "describe_exception",
    "describe_instrument",
    "input_specs",
    "is_transient",
    "list_simulators",
    "load_function",
    "open_executor",
    "readback_problems",
    "slot_seed",
    "trial_plan",
]
