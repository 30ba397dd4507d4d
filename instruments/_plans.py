"""The one Bluesky plan a trial runs.

A trial is exactly one run, so provenance is one join: the start document names the
campaign, the trial and the commanded parameters; the single ``primary`` event holds the
detectors' readings and the inputs' readbacks side by side.

The start document also follows the keys Bluesky's own ``scan``-like plans write, so a
facility catalog (Tiled, databroker) and live callbacks (BestEffortCallback) read a trial
like any other run: ``detectors`` and ``motors`` (device names), ``num_points`` (1: one
event) and ``hints['dimensions']`` (the inputs' fields, which all move together, against
the ``primary`` stream).

An instrument with interlocks (its ``gate``) has them read again after the trigger and read,
before the run closes: one that broke during the acquisition fails the run (its stop
document says ``fail`` with the reason) and the trial, as transient (see
:func:`instruments._safety.check_after_acquisition`).

The dispatcher's verdict on the reading (``check``: outputs missing or not finite, readbacks
outside their declared limits) is reached in the plan too, before the run closes, for the
same reason: a run whose trial closedloop fails had a stop document saying ``success``, and
a catalog searching ``exit_status == "success"`` found twice the runs ``status`` counted
(found in review). Now such a run closes as ``fail`` with the verdict as its reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator, RunEngineControlException

from instruments._errors import MeasurementRejected, TrialArgumentError, describe_exception
from instruments._protocol import Instrument, hinted_fields
from instruments._safety import Gate, check_after_acquisition

logger = logging.getLogger(__name__)

PLAN_NAME = "closedloop_trial"
STREAM_NAME = "primary"
# Keys the plan owns in the start document; caller metadata may not override them, so a
# stored run can always be traced back to its trial.
# The start-document key of the map parameter name -> its device's name (see
# :func:`readback_keys`): a stored run then says where its readbacks are, for ``resume``.
READBACK_KEYS_MD = "readback_keys"
# ``scan_id`` is the engine's (the dispatcher makes it the trial number); the conventional
# keys describe what this plan does, so a caller may not contradict them either.
RESERVED_MD_KEYS = frozenset(
    {
        "campaign",
        "trial_id",
        "trial_number",
        "parameters",
        "plan_name",
        "plan_args",
        "instrument",
        READBACK_KEYS_MD,
        "detectors",
        "motors",
        "num_points",
        "hints",
        "scan_id",
    }
)


def readback_keys(inputs: Mapping[str, Any]) -> dict[str, str]:
    """Parameter name -> the other event data key its readback may have: its device's name.

    An ophyd device reads under its own name (``SynAxis(name="stage_x")`` driving parameter
    ``x`` reads ``stage_x``); a device without a name (or with an empty one) reads under
    the parameter's. :func:`trial_plan` records this map in every start document
    (``READBACK_KEYS_MD``), so a stored run can be read by the same rule without its devices
    (``instruments._dispatch.outputs_and_readbacks``).
    """
    keys: dict[str, str] = {}
    for name, device in inputs.items():
        key = getattr(device, "name", None)
        keys[name] = key if isinstance(key, str) and key else name
    return keys


def _device_name(device: Any, otherwise: str) -> str:
    name = getattr(device, "name", None)
    return name if isinstance(name, str) and name else otherwise


def dimension_fields(inputs: Mapping[str, Any]) -> list[str]:
    """The event data keys of the inputs' readbacks, for ``hints['dimensions']``.

    A device's own ``hints['fields']`` when it has any (an ophyd ``EpicsMotor`` hints
    ``motor``, its readback), else the key its readback is recorded under
    (:func:`readback_keys`), read by :func:`~instruments._protocol.hinted_fields`.
    """
    keys = readback_keys(inputs)
    fields: list[str] = []
    for name, device in inputs.items():
        fields.extend(hinted_fields(device) or [keys[name]])
    return fields


def check_trial_arguments(instrument: Instrument, parameters: Mapping[str, Any]) -> None:
    """Raise :class:`TrialArgumentError` unless ``parameters`` fit ``instrument`` exactly.

    Kept separate from :func:`trial_plan` so the dispatcher can reject a bad call before it
    touches the RunEngine at all.
    """
    inputs = instrument.inputs
    missing = [name for name in inputs if name not in parameters]
    extra = [name for name in parameters if name not in inputs]
    if missing or extra:
        raise TrialArgumentError(
            f"parameters do not match the inputs of instrument {instrument.name!r}: "
            f"missing {missing}, unknown {extra}; expected exactly {sorted(inputs)}"
        )
    seen: dict[int, str] = {}
    for name, device in inputs.items():
        if not isinstance(device, Movable):
            raise TrialArgumentError(f"input {name!r} ({device!r}) is not bluesky Movable")
        if not isinstance(device, Readable):
            raise TrialArgumentError(
                f"input {name!r} ({device!r}) is not bluesky Readable, so its readback "
                "cannot be recorded"
            )
        if id(device) in seen:
            raise TrialArgumentError(
                f"inputs {seen[id(device)]!r} and {name!r} share one device; each parameter "
                "needs its own"
            )
        seen[id(device)] = name
    for detector in instrument.detectors:
        if not isinstance(detector, Readable):
            raise TrialArgumentError(f"detector {detector!r} is not bluesky Readable")


def trial_plan(
    instrument: Instrument,
    parameters: Mapping[str, Any],
    *,
    campaign: str,
    trial_id: int,
    trial_number: int | None = None,
    md: Mapping[str, Any] | None = None,
    check: Callable[[Mapping[str, Any]], None] | None = None,
) -> MsgGenerator[str]:
    """One trial as one run: move every input at once, then trigger and read everything.

    The arguments are checked here, when the plan is created, i.e. before its first ``Msg``
    (the plan body is a separate generator), so a mismatch never opens a half-run.

    Args:
        instrument: devices for the trial.
        parameters: parameter name -> commanded value, exactly one per instrument input.
        campaign: campaign name, recorded in the start document.
        trial_id: the store's trial id, recorded in the start document (unique in the
            store, so what a ``retry_of`` names).
        trial_number: the campaign's own number of the trial (1, 2, ...; what ``closedloop
            status`` shows), recorded as ``trial_number`` when given.
        md: extra start-document metadata; may not use the plan's reserved keys
            (:data:`RESERVED_MD_KEYS`: ``campaign``, ``trial_id``, ``trial_number``,
            ``parameters``, ``plan_name``, ``plan_args``, ``instrument``, ``readback_keys``,
            ``detectors``, ``motors``, ``num_points``, ``hints``, ``scan_id``).
        check: called with the event's data (key -> value) once it is read; an exception
            it raises closes the run as ``fail`` with its text as the reason (the event is
            stored first). The dispatcher's verdict on the reading (see the module
            docstring); a preview (``plan --dry-run``) reads nothing and passes none.

    Returns:
        A plan whose return value is the run's start uid.

    Raises:
        TrialArgumentError: (a ``ValueError``) parameters missing or unknown, an input that
            is not Movable and Readable, two inputs on one device, or reserved md keys.
    """
    check_trial_arguments(instrument, parameters)
    clash = sorted(RESERVED_MD_KEYS.intersection(md or {}))
    if clash:
        raise TrialArgumentError(f"md may not set the trial's own keys {clash}")
    start_md: dict[str, Any] = {
        **(md or {}),
        "campaign": campaign,
        "trial_id": trial_id,
        "parameters": dict(parameters),
        "plan_name": PLAN_NAME,
        # as Bluesky's own plans record theirs: databroker and queueserver list them
        "plan_args": {
            "campaign": campaign,
            "trial_id": trial_id,
            "instrument": instrument.name,
            "parameters": dict(parameters),
        },
        "instrument": instrument.name,
        READBACK_KEYS_MD: readback_keys(instrument.inputs),
        # Bluesky's conventions (see the module docstring)
        "detectors": [_device_name(d, f"detector{i}") for i, d in enumerate(instrument.detectors)],
        "motors": list(readback_keys(instrument.inputs).values()),
        "num_points": 1,
        "hints": {"dimensions": [[dimension_fields(instrument.inputs), STREAM_NAME]]},
    }
    if trial_number is not None:
        start_md["trial_number"] = trial_number
    # Commanded values are moved in the instrument's input order, one ``mv`` so that all
    # inputs travel concurrently and are waited for together.
    mv_args: list[Any] = []
    for name, device in instrument.inputs.items():
        mv_args.extend((device, parameters[name]))
    readables: list[Readable[Any]] = [*instrument.detectors]
    readables.extend(
        device for device in instrument.inputs.values() if isinstance(device, Readable)
    )
    gate = getattr(instrument, "gate", None)
    interlocks = gate if isinstance(gate, Gate) and gate.checks else None
    return _trial_body(mv_args, readables, start_md, interlocks, check)


def _trial_body(
    mv_args: list[Any],
    readables: list[Readable[Any]],
    start_md: dict[str, Any],
    interlocks: Gate | None = None,
    check: Callable[[Mapping[str, Any]], None] | None = None,
) -> MsgGenerator[str]:
    def measure() -> MsgGenerator[None]:
        yield from bps.mv(*mv_args)
        reading = yield from bps.trigger_and_read(readables, name=STREAM_NAME)
        if interlocks is not None:
            yield from _interlocks_held(interlocks)
        if check is not None and reading:
            check({key: value["value"] for key, value in reading.items()})

    # Closes the run with exit_status='fail' and the error as reason when a status fails or
    # a device raises, so a failed trial still has a stop document.
    uid: str = yield from _run_wrapper(measure(), md=start_md)
    return uid


def _run_wrapper(plan: MsgGenerator[None], *, md: dict[str, Any]) -> MsgGenerator[str]:
    """``bluesky.preprocessors.run_wrapper``, with the stop reason of a failed run told as
    the dispatcher tells the trial's error (:func:`~instruments._errors.describe_exception`).

    bluesky's own wrapper writes ``str(exc)``: for a failed status that is
    ``DeviceStatus(device=x, done=True, success=False)``, and for a device that raised the
    bare message without its class. The device's own exception ("x stalled at 0.4") was
    lost to a catalog, and ``closedloop resume``, which rebuilds a failed trial's error from
    the stop document after a kill, stored another text than the live trial, under another
    failure kind ("TimeoutError: ..." lost its class, and with it being transient; found in
    session 38 and review). Only the plan's own verdict, a
    :class:`~instruments._errors.MeasurementRejected`, keeps its text word for word, as the
    dispatcher reads it.
    """
    uid: str = yield from bps.open_run(md)

    def except_plan(exc: BaseException) -> MsgGenerator[None]:
        if isinstance(exc, RunEngineControlException):  # RequestAbort, RequestStop
            yield from bps.close_run(exit_status=getattr(exc, "exit_status", "abort"))
        else:
            reason = str(exc) if isinstance(exc, MeasurementRejected) else describe_exception(exc)
            yield from bps.close_run(exit_status="fail", reason=reason)

    yield from bpp.contingency_wrapper(plan, except_plan=except_plan, else_plan=bps.close_run)
    return uid


def _interlocks_held(gate: Gate) -> MsgGenerator[None]:
    """Read the interlocks again now that the acquisition is done; raise
    :class:`~instruments._safety.InterlockBroken` (the run then closes as ``fail``) if one
    broke meanwhile.

    A ``wait_for`` message, whose futures come back to the plan, so the check's own
    exception is raised here (a failed status would be wrapped, and its text would not
    say why in the stop document). A simulator (``plan --dry-run``) answers ``None``:
    nothing was read.
    """
    futures = yield from bps.wait_for([_ReadInterlocks(gate)])
    for future in futures or ():
        future.result()


class _ReadInterlocks:
    """The awaitable factory of :func:`_interlocks_held`, named for ``plan --dry-run``.

    The reads (Channel Access gets, a plugin device's ``get``) run on a worker thread, not
    on the RunEngine's event loop: a PV slow to answer must not stall the loop, and with it
    the watchdog's abort and Ctrl-C.
    """

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def __call__(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, check_after_acquisition, self.gate)

    def __repr__(self) -> str:
        rules = ", ".join(str(check.interlock) for check in self.gate.checks)
        return f"interlocks again: {rules}"
