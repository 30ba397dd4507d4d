"""What the loop needs from an instrument, typed against ``bluesky.protocols`` only.

The protocol names no concrete class, so ophyd devices, ophyd-async devices and the
simulators' wrappers all qualify; an instrument is "some movables for the parameters, some
readables for the measurement", which is exactly what a Bluesky plan can drive.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from bluesky.protocols import Movable, Readable

if TYPE_CHECKING:
    from instruments._epics import DeclaredInstrument

ExitStatus = Literal["success", "fail", "abort"]


def hinted_fields(device: Any) -> list[str]:
    """The fields a device hints (``hints['fields']``: ophyd's ``Kind.hinted``, ophyd-async's
    ``HINTED_SIGNAL``), or none.

    The one reading of hints for the package: which field is an output, which key is an
    input's readback and which are a run's plot dimensions all follow it, so they cannot
    disagree. ``hints`` is a property computed from the device's own structure (no call to
    the hardware), as the RunEngine reads it; a plugin's property that raises, or returns
    something other than a mapping with a list of fields, counts as no hints: a plot axis or a
    default key is not worth failing a trial over, and the callers refuse what stays
    ambiguous.
    """
    try:
        hints = getattr(device, "hints", None)
        fields = hints.get("fields") if isinstance(hints, Mapping) else None
    except Exception:
        return []
    if not isinstance(fields, list | tuple) or not all(isinstance(f, str) for f in fields):
        return []  # hints of another shape (Signal objects, ...) name no data key
    return list(fields)


@runtime_checkable
class Instrument(Protocol):
    """Devices that carry out one trial: set the inputs, trigger and read the detectors.

    Attributes are read-only properties so that an implementation may hold narrower types
    (``dict[str, SimActuator]``) and still satisfy the protocol.
    """

    @property
    def name(self) -> str:
        """Human-readable instrument name (recorded in every start document)."""
        ...

    @property
    def inputs(self) -> Mapping[str, Movable[Any]]:
        """Parameter name -> device that sets it; each must also be ``Readable``."""
        ...

    @property
    def detectors(self) -> Sequence[Readable[Any]]:
        """Devices read at each trial; ``Triggerable`` ones are triggered first."""
        ...

    @property
    def outputs(self) -> tuple[str, ...]:
        """Event data keys that hold the trial's outcomes (objectives, constraints)."""
        ...

    def close(self) -> None:
        """Release resources (threads, connections); called once, when the campaign ends."""
        ...


@dataclass
class TrialResult:
    """Everything one trial produced: outcome, provenance and the raw documents.

    ``parameters`` as commanded live in the start document; ``readbacks`` are what the
    devices reported after moving, kept separately because they can differ (deadband,
    quantisation, a drive that stalled).

    Attributes:
        run_uid: uid of the run's start document; ``None`` if no run was opened (e.g. a
            limit violation caught before the RunEngine was called).
        exit_status: ``success``, ``fail`` (device or plan error) or ``abort`` (interrupted).
        outputs: declared output name -> measured value (``float``).
        readbacks: parameter name -> value read back from its device.
        error: ``"ExceptionType: message"`` for a failed or aborted trial, else ``None``.
        documents: ``(name, doc)`` pairs in emission order (start, descriptor, event, stop).
        started: wall-clock start, epoch seconds.
        finished: wall-clock end, epoch seconds.
        duration: elapsed seconds of the dispatch, from a monotonic clock.
        instrument_busy: seconds of ``duration`` spent in device calls and waiting on their
            statuses (set, trigger, read, wait); ``duration - instrument_busy`` is the
            RunEngine's own overhead.
        transient: the failure may well not recur at the same point (a timeout, a device
            error flagged ``transient``, a ``TimeoutError``/``ConnectionError``), so a retry
            policy may try again; ``False`` for success and for deterministic failures.
        timed_out: the run exceeded its timeout and was aborted through the RunEngine.
    """

    run_uid: str | None
    exit_status: ExitStatus
    outputs: dict[str, float] = field(default_factory=dict)
    readbacks: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    documents: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    duration: float = 0.0
    instrument_busy: float = 0.0
    transient: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the trial succeeded and every output was measured."""
        return self.exit_status == "success"


def close_instrument(instrument: Instrument, *, safe_state: bool = True) -> None:
    """Close ``instrument``; with ``safe_state=False`` write no declared safe state.

    Only a declared instrument (an instrument file: EPICS PVs, plugin devices) has a safe
    state (``on_stop``) to write when it closes. It is left unwritten by the read-only
    commands (``instruments check``, ``plan --dry-run``: nothing was moved), and by a runner
    whose lease another runner took over: that runner now drives the hardware, and a safe
    state written by the stalled one landed in the middle of the new owner's trial (found in
    review).
    """
    declared = _declared(instrument)
    if not safe_state and declared is not None:
        declared.close(safe_state=False)
    else:
        instrument.close()


def _declared(instrument: Instrument) -> DeclaredInstrument | None:
    """``instrument`` if it is a declared instrument (an instrument file), else ``None``.

    Judged without importing ``instruments._epics``: a declared instrument exists only once
    that module is imported, and importing it (caproto, ~1 s) from here deadlocked a second
    Ctrl-C. The first stop's close imported it on the main thread; the second's handler,
    run inside that import, waited for the safe-state writer, whose own import waited for
    the main thread's: 10 s, then "SAFE STATE NOT WRITTEN" (exit 3) for a function
    instrument, which has no safe state (found in review, session 39).
    """
    module = sys.modules.get("instruments._epics")
    cls = getattr(module, "DeclaredInstrument", None) if module is not None else None
    return instrument if cls is not None and isinstance(instrument, cls) else None


def write_safe_state(instrument: Instrument) -> list[str]:
    """Write ``instrument``'s declared safe state (``on_stop``) now; return the problems.

    For a process about to exit without closing its devices (a second Ctrl-C while the
    first one's stop hangs on a device): closing would stop every move first, which may be
    what hangs. Only a declared instrument has a safe state; any other writes nothing.
    """
    declared = _declared(instrument)
    if declared is not None and declared.spec.on_stop:
        return [str(problem) for problem in declared.safe_state()]
    return []


def safe_state_failures(instrument: Instrument) -> list[str]:
    """What ``instrument``'s last close could not write of its safe state, one line each
    (the setpoint PV named); empty for an instrument without one."""
    declared = _declared(instrument)
    if declared is not None:
        return [str(failure) for failure in declared.safe_state_failures]
    return []
