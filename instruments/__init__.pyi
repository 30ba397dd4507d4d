# The public names of ``instruments``, for type checkers and for the lazy loader in __init__.py
# (lazy_loader.attach_stub reads the imports below): a name is importable from the package
# exactly when it is listed here.
from ._build import (
    InputSpec,
    SimulatorInfo,
    build_instrument,
    describe_instrument,
    input_specs,
    list_simulators,
    load_function,
    open_executor,
    slot_seed,
)
from ._config import ExecutorConfig, InstrumentConfig
from ._dispatch import (
    Dispatcher,
    DocumentSink,
    is_transient,
    readback_problems,
)
from ._errors import (
    DispatcherBusy,
    DispatcherClosed,
    DocumentSinkError,
    ExecutorUnavailable,
    InstrumentConfigError,
    InstrumentError,
    TrialArgumentError,
    TrialInterrupted,
    describe_exception,
)
from ._manual import ManualInstrument
from ._plans import PLAN_NAME, STREAM_NAME, check_trial_arguments, trial_plan
from ._protocol import (
    ExitStatus,
    Instrument,
    TrialResult,
    close_instrument,
    safe_state_failures,
    write_safe_state,
)

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
    "check_trial_arguments",
    "close_instrument",
    "describe_exception",
    "describe_instrument",
    "input_specs",
    "is_transient",
    "list_simulators",
    "load_function",
    "open_executor",
    "readback_problems",
    "safe_state_failures",
    "slot_seed",
    "trial_plan",
    "write_safe_state",
]
