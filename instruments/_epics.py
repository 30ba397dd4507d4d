"""Declared instruments: EPICS PVs, motor records and plugin devices behind one ``Instrument``.

:func:`build_declared_instrument` turns an :class:`~instruments._instrument_file.InstrumentFile`
into a :class:`DeclaredInstrument`, which satisfies :class:`instruments.Instrument`, so the
existing ``Dispatcher`` and ``trial_plan`` drive it unchanged:

* each parameter is an :class:`InputDevice` (bluesky ``Movable``, ``Readable``, ``Checkable``,
  ``Stoppable``) whose reading is keyed by the **parameter name**, in the **campaign's
  units**; underneath it drives an ``EpicsSignal(readback, write_pv=setpoint)`` (done when
  the readback is within ``tolerance``, then ``settle_time``), an ``EpicsMotor`` record or a
  plugin device;
* the outputs are one :class:`OutputDetector`: ``trigger()`` writes the acquire PV (with CA
  put-completion, then an optional done condition), ``read()`` reads each output PV (an
  ``EpicsSignalRO``) or plugin reading under the **output name** (a plugin's field: its
  ``key:``, else its hinted field, else its only one; one that has several and says none
  is refused when it connects);
* every wrapper is hinted (its field), and a plugin's data key keeps the device's own
  ``describe()`` entry (source, shape, units, precision, limits);
* safety is in :mod:`instruments._safety`: limits and ``max_step`` in ``check_value`` (the
  dispatcher's pre-check), interlocks before the first put of each trial, ``on_stop`` in
  ``close()``. What the IOC says of its PVs is checked here once they connect: a setpoint
  PV's own control limits (DRVL/DRVH) and a motor record's soft limits (LLM/HLM) refuse a
  setpoint like the file's ``limits`` do, and an input on an ENUM or string PV, or on a PV
  or motor whose EGU is not the unit the file says it speaks, is refused, as is a safe state
  outside the device's own limits. A plugin device says the same of itself
  (:class:`DeviceMeta`: its readback's ``describe()`` units and limits, an ophyd
  positioner's ``egu`` and ``limits``), read when it connects and checked alike.
  A trial's move further than an input's ``max_step`` ramps in steps of at most that,
  each checked and waited for (:meth:`InputDevice._ramp`).
  ``close()`` writes the safe state, an input with ``max_step`` in steps by the same rule
  (:meth:`InputDevice.write_safe_state`), and keeps what it could not write in
  ``safe_state_failures`` (:class:`SafeStateFailure`). A move's put is fenced by a
  per-input lock and a per-move stop flag, so no put of a stopped move (an aborted trial, a
  campaign that stopped) can reach the device after the next trial's or after the safe
  state.

Plugin devices may be sync Ophyd or **ophyd-async** (``async def connect``/``read``, ``set``
and ``trigger`` returning an ``AsyncStatus``): every call into a plugin goes through
:func:`call_device`, which runs an ophyd-async device's calls on one persistent event loop
(made on first use, on a daemon thread) and a sync device's on a pool of daemon worker
threads, and waits for them at most their timeout, so both kinds share one code path:
connected when the instrument is built, moved and triggered by the wrappers' worker threads,
read when the RunEngine reads the wrappers. The loop outlives every RunEngine (a
``Dispatcher`` makes its engine after the devices are built and connected). A sync call
that never returns cannot be interrupted: it is abandoned on its daemon thread (the trial
fails, timed out) and the device is refused further calls until it returns
(:class:`DeviceBusy`), so a wedged device holds one thread, not one per trial.

The Ophyd control layer (``caproto`` by default, pure Python; ``pyepics`` when installed) is
chosen by the file's ``control_layer`` before any EPICS object is created.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import difflib
import functools
import importlib
import importlib.metadata
import inspect
import logging
import math
import numbers
import queue
import re
import reprlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ophyd.status import Status

from instruments._build import InputSpec, load_entry_point
from instruments._errors import InstrumentConfigError, InstrumentError
from instruments._instrument_file import (
    DEVICE_FORM,
    InputDecl,
    InstrumentFile,
    InstrumentFileError,
    OutputDecl,
    converter,
    input_units,
    refuse_unsafe_merge,
    resolve_file,
)
from instruments._protocol import hinted_fields
from instruments._safety import (
    ConnectionCheck,
    Gate,
    InterlockCheck,
    SetpointRefused,
    check_during_ramp,
    check_setpoint,
    next_step,
)
from instruments._yamlfile import line_of

logger = logging.getLogger(__name__)
_PLUGIN_ACQUIRE_TIMEOUT = 3600.0  # s; plugin-only detectors declare no acquire block
_STOP_TIMEOUT = 10.0  # s a plugin's stop() may take (it runs on the RunEngine's thread)
# s a device's own connect(timeout=T) may overrun T before it is given up on: its own
# error (which signal did not connect) says more than ours
_CONNECT_GRACE = 1.0

ENTRY_POINT_GROUP = "closedloop.instruments"
_POLL = 0.02  # s between readback checks while a move settles


class DeviceConnectionError(InstrumentError, ConnectionError):
    """A declared PV or device could not be reached."""


class DeviceTypeError(InstrumentFileError):
    """A declared PV whose type does not fit its role: an ENUM or a string PV as the setpoint
    or readback of a numeric input (a float put to an ENUM PV picks a state by its index), or
    a motor record whose EGU is not the unit the file says it speaks (12 mm sent to a stage
    in um moves it 12 um, and the readback, 12, reads back as the 12 mm asked for)."""


class DeviceLimitsError(InstrumentFileError):
    """A safe state (``on_stop``) outside its device's own limits (a setpoint PV's
    DRVL/DRVH, a motor record's LLM/HLM): the IOC would refuse or clamp it just when the
    campaign stops; or an input that reads further than ``max_step`` outside its limits, so
    no step of a ramp stays within them and every trial would be refused (found in review:
    a campaign started, failed trial after trial, then stepped its safe state from there).
    Either way the instrument is refused when it connects."""


class MotorFault(InstrumentError):
    """A motor record ended a move short of its target and said so: on a limit switch (HLS or
    LLS), or with its readback in alarm. ``EpicsMotor`` only marks such a move failed
    (``UnknownStatusFailure: ... update the Device to use set_exception``); this says why."""


#: EPICS alarm severities in order (0 NO_ALARM ... 3 INVALID), as ``max_alarm`` names them.
_SEVERITIES = ("none", "minor", "major", "invalid")


class OutputInAlarm(InstrumentError):
    """An output PV's alarm severity was worse than its ``max_alarm`` when it was read, or
    it read NaN or an infinity: the IOC says the number is not to be trusted (a detector
    fault, a beam glitch). The instrument's condition, not the point's, so the failure is
    ``transient``: retried up to ``max_retries``, and not learned as the point's."""

    transient = True


class SetpointNotTaken(InstrumentError):
    """The IOC completed a setpoint's put but the PV holds another value: it refused or
    clipped the write; or a device whose readback went back against a ramp's steps. The
    instrument's state (a disabled record, access security, a fault), not the point's, so
    the failure is ``transient`` (retried up to ``max_retries``)."""

    transient = True


class DeviceTimeout(InstrumentError, TimeoutError):
    """A device call did not finish within its declared timeout (the call was cancelled).

    A ``TimeoutError``, so the dispatcher counts the failed trial as transient.
    """


# ---------------------------------------------------------------------------- plumbing
def set_control_layer(name: str) -> None:
    """Select Ophyd's EPICS client once per process (``caproto`` or ``pyepics``)."""
    import ophyd

    current = getattr(getattr(ophyd, "cl", None), "name", None)
    if current == name:
        return
    try:
        ophyd.set_cl(name)
    except ImportError as exc:
        raise InstrumentConfigError(
            f"control_layer {name!r} is not installed ({exc}); use control_layer: caproto",
            field="control_layer",
        ) from exc
    except Exception as exc:  # ophyd refuses to switch once signals exist
        raise InstrumentConfigError(
            f"cannot switch Ophyd's control layer from {current!r} to {name!r}: {exc}",
            field="control_layer",
        ) from exc


class DeviceClassError(InstrumentConfigError):
    """A plugin ``device:`` that names no usable class, or whose constructor failed.

    Attributes:
        problem: what is wrong.
        fix: what to do about it.
    """

    def __init__(self, problem: str, *, fix: str) -> None:
        super().__init__(f"{problem}\n  fix: {fix}", field="device")
        self.problem = problem
        self.fix = fix


def load_device_class(spec: str) -> Callable[..., Any]:
    """``module:Class`` by import, else an entry point of the ``closedloop.instruments`` group.

    Raises:
        DeviceClassError: cannot be imported, or no such entry point (naming them).
    """
    _check_device_form(spec)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            missing = isinstance(exc, ModuleNotFoundError) and exc.name == module_name
            raise DeviceClassError(
                f"device {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}",
                fix=(
                    f"check the module name, and that {module_name!r} is installed in this "
                    "Python environment (or on PYTHONPATH)"
                    if missing
                    else f"fix the error in {module_name!r} (`python -c 'import {module_name}'` "
                    "shows where it is)"
                ),
            ) from exc
        target: Any = module
        for part in attr.split("."):
            if not hasattr(target, part):
                names = [n for n in dir(target) if not n.startswith("_")]
                close = difflib.get_close_matches(part, names, n=1)
                raise DeviceClassError(
                    f"device {spec!r}: {module_name!r} has no {attr!r}",
                    fix=f"did you mean {module_name}:{close[0]}?"
                    if close and attr == part
                    else f"check the class name (write module:Class, e.g. {module_name}:Stage)",
                )
            target = getattr(target, part)
        if not callable(target):
            raise DeviceClassError(
                f"device {spec!r} is not a class", fix="name an Ophyd device class, module:Class"
            )
        return target  # type: ignore[no-any-return]
    return load_entry_point(
        ENTRY_POINT_GROUP,
        spec,
        what=f"device {spec!r}",
        forms="module:Class",
        install="write module:Class, or install the lab package that registers the name",
        error=DeviceClassError,
    )


def _check_device_form(spec: str) -> None:
    """Refuse a ``device:`` that is no ``module:Class``, saying how to write it: a file's
    path (``mylab.py:Stage``, ``./lab/stage.py:Stage``) was told to fix an import of
    ``mylab.py``, or given the raw regular expression (found in review).

    Raises:
        DeviceClassError: the form is wrong, with the module:Class to write.
    """
    if re.fullmatch(DEVICE_FORM, spec) and not spec.partition(":")[0].endswith(".py"):
        return
    module, colon, cls = spec.rpartition(":") if ":" in spec else (spec, "", "")
    path = Path(module)
    if module.endswith(".py") or "/" in module or "\\" in module:
        stem = path.with_suffix("").name if path.suffix == ".py" else path.name
        folder = str(path.parent) if str(path.parent) not in ("", ".") else "."
        raise DeviceClassError(
            f"device {spec!r}: a device class is named by its module, module:Class, not by "
            "its file",
            fix=f"write {stem}:{cls or 'Class'} and put its folder on PYTHONPATH "
            f"(`PYTHONPATH={folder} closedloop ...`), or install the lab package that has it",
        )
    raise DeviceClassError(
        f"device {spec!r} is not module:Class",
        fix="write the module and the class, e.g. mylab.stages:Stage (or an installed "
        "entry point's name)",
    )


def check_plugins(spec: InstrumentFile) -> None:
    """Import every plugin ``device:`` class of the file, constructing none of them, and
    check that its ``control_layer`` is installed.

    ``validate`` calls this (through the campaign loader), so a misspelt class or an
    uninstalled package is refused with the file's line before a campaign is created, as
    every other mistake in the file is, rather than when the devices are built (a missing
    pyepics was refused by `run` and `instruments check` alone, with no file or line, exit
    code 1; found in review).

    Raises:
        InstrumentFileError: at the line of ``inputs.<name>.device`` /
            ``outputs.<name>.device``, with the fix.
    """
    for section, decls in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        for name, decl in decls.items():
            if decl.device is not None:
                try:
                    _check_role(load_device_class(decl.device), decl.device, section)
                except DeviceClassError as exc:
                    raise _at_device(spec, section, name, exc) from exc
    if spec.control_layer != "caproto" and _uses_pvs(spec):
        import importlib.util

        if importlib.util.find_spec("epics") is None:  # pyepics, imported by ophyd.set_cl
            raise spec.error(
                f"control_layer {spec.control_layer!r} is not installed in this Python "
                "(no module 'epics')",
                ("control_layer",),
                fix=f"install it into this environment ({sys.executable} -m pip install "
                "pyepics), or write control_layer: caproto (pure Python, installed)",
            )


def _uses_pvs(spec: InstrumentFile) -> bool:
    """Whether building ``spec`` makes EPICS signals (and so needs its control layer)."""
    return any(d.setpoint or d.motor for d in spec.inputs.values()) or any(
        o.pv for o in spec.outputs.values()
    )


#: What a plugin device must offer for its role: an input is set and read back, an output
#: read (found in review: an input class without ``set`` passed validate, check and plan,
#: then failed every trial with ``TypeError: the first argument must be callable``).
_ROLE_METHODS = {"inputs": (("set",), ("read", "position")), "outputs": (("read",),)}


def _check_role(target: Any, device: str, section: str) -> None:
    """Refuse a plugin class (or instance) that lacks what its role calls: each group of
    :data:`_ROLE_METHODS` needs one of its names callable (``position`` may be a property).
    A class that answers attributes dynamically (``__getattr__``) is judged once built.

    Raises:
        DeviceClassError: naming what is missing, and what would do.
    """
    if isinstance(target, type) and "__getattr__" in dir(target):
        return
    for names in _ROLE_METHODS[section]:
        if any(_offers(target, n) for n in names):
            continue
        role = (
            "an input's device is moved and read back"
            if section == "inputs"
            else ("an output's device is read")
        )
        wanted = " or ".join(f"`{n}()`" if n != "position" else "`position`" for n in names)
        raise DeviceClassError(
            f"device {device!r} has no {wanted}: {role}",
            fix=(
                "name a class that has it (an ophyd Signal, positioner or Device; an "
                "ophyd-async Movable or StandardReadable)"
                + (", or declare the device under `outputs:`" if section == "inputs" else "")
            ),
        )


def _offers(target: Any, name: str) -> bool:
    """Whether ``target`` has ``name``: a method, or for ``position`` any attribute (looked
    up without running a property, which may read the device)."""
    if name == "position":
        try:
            return inspect.getattr_static(target, name) is not None
        except AttributeError:
            return False
    return callable(getattr(target, name, None))


def _at_device(
    spec: InstrumentFile, section: str, name: str, exc: DeviceClassError
) -> InstrumentConfigError:
    """``exc`` at the line of ``<section>.<name>.device`` in the file."""
    return spec.error(f"{section}.{name}: {exc.problem}", (section, name, "device"), fix=exc.fix)


def _make_plugin(
    device: str,
    args: Mapping[str, Any],
    name: str,
    *,
    spec: InstrumentFile | None = None,
    section: str = "inputs",
) -> Any:
    """``Class(name=name, **args)``; any failure at the line of its ``device:`` in ``spec``.

    Raises:
        InstrumentFileError: (with ``spec``) the class cannot be loaded or its constructor
            raised (a port already in use, an unknown keyword in ``args:``).
        DeviceClassError: the same, without ``spec``.
    """
    kwargs = dict(args)
    kwargs.setdefault("name", name)
    try:
        cls = load_device_class(device)
        try:
            device_obj = cls(**kwargs)
        except Exception as exc:
            call = f"{device}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
            # the `args:` are to blame only when the call does not bind to the signature:
            # a TypeError from inside a constructor that took them was blamed on them too
            # (found in review)
            fix = (
                f"give `args:` that {device}{_signature(cls)} accepts (it is called with "
                "name= and the `args:`)"
                if isinstance(exc, TypeError) and not _binds(cls, kwargs)
                else "check the device is free and powered, and its `args:`"
            )
            raise DeviceClassError(f"{call} failed: {type(exc).__name__}: {exc}", fix=fix) from exc
        _check_role(device_obj, device, section)
        return device_obj
    except DeviceClassError as exc:
        if spec is None:
            raise
        raise _at_device(spec, section, name, exc) from exc


def _binds(cls: Any, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``cls(**kwargs)`` fits its signature (``True`` when it has none to read)."""
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError:
        return False
    except ValueError:  # no signature: it cannot be told
        return True
    return True


def _signature(cls: Any) -> str:
    try:
        return str(inspect.signature(cls))
    except (TypeError, ValueError):
        return ""


def _label(device: Any) -> str:
    return repr(getattr(device, "name", None) or type(device).__name__)


def _setter(event: threading.Event) -> Callable[..., None]:
    """A put-completion callback that sets ``event``: pyepics calls it with keyword
    arguments (``pvname=...``), which ``Event.set`` refuses on a thread nobody watches, so
    the put never read as completed (found in review; caproto's layer calls it bare)."""

    def done(*args: Any, **kwargs: Any) -> None:
        event.set()

    return done


def _put_acknowledged(signal: Any, value: Any, timeout: float, *, what: str) -> None:
    """Write ``value`` to an EPICS ``signal`` and wait for the IOC's acknowledgement (a put
    with completion), ``timeout`` s for the connection and again for the answer: the safe
    state's writes, which must not end before the IOC has taken them.

    Raises:
        TimeoutError: no acknowledgement in time (``what``: the PV, for the message).
    """
    done = threading.Event()
    signal.put(
        value,
        force=True,
        use_complete=True,
        callback=_setter(done),
        connection_timeout=max(timeout, 0.1),
    )
    if not done.wait(timeout):
        raise TimeoutError(f"{what}: {_not_completed(signal, value, timeout)}")


def _setpoint_now(signal: Any, timeout: float) -> Any:
    """What the PV ``signal`` writes holds now, read from the IOC: an input's signal reads
    its readback PV with ``get()`` (which lags the setpoint), its setpoint PV with
    ``get_setpoint()``."""
    read = getattr(signal, "get_setpoint", None) or signal.get
    return read(use_monitor=False, timeout=timeout)


def _not_completed(signal: Any, value: Any, timeout: float) -> str:
    """Why a put with completion did not complete, with what the PV holds now: an IOC that
    refuses a write answers at once but never completes it, which "not acknowledged" made
    read as a slow network (found in review)."""
    holds = ""
    with contextlib.suppress(Exception):
        now = _setpoint_now(signal, timeout=1.0)
        holds = f"; the PV holds {now:g}" if isinstance(now, int | float) else ""
    return (
        f"the IOC did not complete the put of {float(value):g} within {timeout:g} s (it "
        f"refused the write, or its record is still processing){holds}"
    )


def _wait_status(
    status: Any, timeout: float, cancelled: threading.Event, *, what: str = "", method: str = "set"
) -> None:
    """Block until an ophyd/bluesky status finishes; raise its exception or on timeout.

    Raises:
        InstrumentError: ``status`` is not a status (``what``: the device, for the message).
    """
    if not callable(getattr(status, "add_callback", None)):
        raise InstrumentError(
            f"{what or 'device'}: {method}() returned {reprlib.repr(status)}, not a status "
            "(it must return one: an ophyd Status, an AsyncStatus)"
        )
    done = threading.Event()
    status.add_callback(lambda *_: done.set())
    deadline = time.monotonic() + timeout
    while not done.wait(_POLL):
        if cancelled.is_set():
            raise InstrumentError("stopped while moving")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout:g} s")
    exc = status.exception() if callable(getattr(status, "exception", None)) else None
    if exc is not None:
        raise exc
    if getattr(status, "success", True) is False:
        raise InstrumentError(f"{status!r} failed")


# ---------------------------------------------------------------------------- ophyd-async
_device_loop_lock = threading.Lock()
_device_loop_instance: asyncio.AbstractEventLoop | None = None


def device_loop() -> asyncio.AbstractEventLoop:
    """The event loop ophyd-async plugin devices live on: one per process, running on a
    daemon thread, made on first use (devices are connected on it and every later call to
    them runs on it, so their signals' subscriptions and statuses stay on one loop)."""
    global _device_loop_instance
    with _device_loop_lock:
        loop = _device_loop_instance
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="closedloop-async-devices", daemon=True
            ).start()
            _device_loop_instance = loop
        return loop


_ASYNC_METHODS = ("connect", "read", "set", "trigger", "stop", "describe")


def is_async_device(device: Any) -> bool:
    """Whether ``device`` is an ophyd-async style device: any of its protocol methods is an
    ``async def``, or wraps one (``@AsyncStatus.wrap async def set``, whose status must be
    made on a running loop, even when its ``read`` is a plain method)."""
    own = getattr(device, "__dict__", None)
    if own and any(m in own for m in _ASYNC_METHODS):
        return _has_async_method(device)
    cls = type(device)
    known = _ASYNC_CLASSES.get(cls)
    if known is None:  # asked on every call into a device, so cached per class
        known = _ASYNC_CLASSES[cls] = _has_async_method(cls)
    return known


_ASYNC_CLASSES: dict[type, bool] = {}


def _has_async_method(obj: Any) -> bool:
    for method in _ASYNC_METHODS:
        fn = inspect.getattr_static(obj, method, None)
        if isinstance(fn, staticmethod | classmethod):
            fn = fn.__func__
        if fn is not None and callable(fn):
            try:
                fn = inspect.unwrap(fn)
            except ValueError:  # a cycle of __wrapped__
                continue
            if inspect.iscoroutinefunction(fn):
                return True
    return False


# ---------------------------------------------------------------------------- sync calls
class DeviceBusy(DeviceTimeout):
    """A sync plugin device is still inside an earlier call that timed out.

    Python cannot interrupt a thread blocked in a device's own code, so such a call is left
    running on its (daemon) thread, and the device is not called again until it returns:
    each later call would block another thread for ever. A ``TimeoutError``, like the
    timeout it follows (the trial may be retried; the device may come back).
    """


class _DaemonPool:
    """Daemon threads for sync device calls, reused while busy, each retiring when idle.

    Not a ``ThreadPoolExecutor``: its threads are joined when the interpreter exits, so one
    stuck in a device call would keep the process from ever exiting. Calls run on as many
    threads as are busy at once (a camera's ``stop`` must not queue behind the ``trigger``
    it is meant to end); an idle thread takes the next call (starting a thread per call
    made each call ~30 times slower).
    """

    def __init__(self, idle_exit: float = 30.0) -> None:
        self._idle_exit = idle_exit
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # idle threads not yet counted on by a submit

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)
        if not self._idle.acquire(blocking=False):
            threading.Thread(target=self._work, name="closedloop-device-call", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                fn = self._queue.get(timeout=self._idle_exit)
            except queue.Empty:
                if self._idle.acquire(blocking=False):
                    return  # no submit counts on this thread: retire
                continue  # a submit counted on it: its call is on the queue
            fn()  # never raises: `work` in _run_sync catches everything
            self._idle.release()


_workers = _DaemonPool()


@dataclass
class _Abandoned:
    """A sync call given up on (timed out or stopped) that has not returned yet."""

    method: str
    why: str
    since: float  # time.monotonic() when it was given up
    future: concurrent.futures.Future[Any]


_abandoned_lock = threading.Lock()
# (id(device), is a stop) -> its abandoned call. The call's thread holds the device, so
# the id stays its own while the entry exists; the thread removes the entry on return.
# At most two per device: any call, and one `stop` (which may be what unblocks the other).
_abandoned: dict[tuple[int, bool], _Abandoned] = {}


def _refuse_if_stuck(device: Any, method: str) -> None:
    with _abandoned_lock:
        # a stuck stop refuses every call; any other stuck call, all but a stop
        for key in [(id(device), True)] + ([] if method == "stop" else [(id(device), False)]):
            stuck = _abandoned.get(key)
            if stuck is not None:
                raise DeviceBusy(
                    f"{method} of {_label(device)} refused: the device is still busy with a "
                    f"{stuck.method} that {stuck.why} {time.monotonic() - stuck.since:.3g} s "
                    "ago, and is not called again until that call returns (a sync device's "
                    "call cannot be interrupted; restart the device or its driver)"
                )


def _run_sync(
    device: Any,
    method: str,
    fn: Callable[[], Any],
    timeout: float | None,
    cancelled: threading.Event | None,
) -> Any:
    """``fn()`` (a sync device's call) on a daemon thread, waited for like an async call.

    A call that does not return in time is abandoned, not killed: it keeps its thread (a
    daemon, so the process can still exit), and :func:`_refuse_if_stuck` refuses the
    device's next calls until it returns, so a wedged device costs one blocked thread, not
    one per trial. Unbounded calls run on the caller's thread.
    """
    _refuse_if_stuck(device, method)
    if timeout is None and cancelled is None:
        return fn()
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    key = (id(device), method == "stop")

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return  # given up before it started: never called
        try:
            result = fn()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            with _abandoned_lock:
                stuck = _abandoned.get(key)
                if stuck is not None and stuck.future is future:
                    del _abandoned[key]
                    logger.warning(
                        "device %s: the %s given up on %.0f s ago has returned; calling it again",
                        _label(device),
                        method,
                        time.monotonic() - stuck.since,
                    )

    _workers.submit(work)
    try:
        return _wait(future, device, method, timeout, cancelled)
    except InstrumentError as exc:
        with _abandoned_lock:
            if not future.done():
                why = "timed out" if isinstance(exc, DeviceTimeout) else "was stopped"
                _abandoned[key] = _Abandoned(method, why, time.monotonic(), future)
        raise


def _wait(
    future: concurrent.futures.Future[Any],
    device: Any,
    method: str,
    timeout: float | None,
    cancelled: threading.Event | None,
) -> Any:
    """``future``'s result, giving up (and cancelling it) at ``timeout`` or ``cancelled``.

    Raises:
        DeviceTimeout: not done within ``timeout`` s.
        InstrumentError: ``cancelled`` was set meanwhile.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return future.result(timeout=_POLL)
        except TimeoutError:  # concurrent.futures.TimeoutError, or the device's own
            if future.done():
                raise
        if cancelled is not None and cancelled.is_set():
            future.cancel()
            raise InstrumentError(f"{method} of {_label(device)} stopped")
        if deadline is not None and time.monotonic() > deadline:
            future.cancel()
            raise DeviceTimeout(f"{method} of {_label(device)} not done within {timeout:.3g} s")


def _call(
    device: Any,
    method: str,
    fn: Callable[[], Any],
    timeout: float | None,
    cancelled: threading.Event | None = None,
) -> Any:
    """``fn()``, one call into ``device``: on :func:`device_loop` (awaited) for an
    ophyd-async device, else on a worker thread (:func:`_run_sync`); either way given up
    at ``timeout`` s or when ``cancelled`` is set."""
    if not is_async_device(device):
        return _run_sync(device, method, fn, timeout, cancelled)

    async def call() -> Any:
        outcome = fn()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return outcome

    future = asyncio.run_coroutine_threadsafe(call(), device_loop())
    return _wait(future, device, method, timeout, cancelled)


def call_device(
    device: Any,
    method: str,
    *args: Any,
    timeout: float | None = None,
    cancelled: threading.Event | None = None,
    **kwargs: Any,
) -> Any:
    """``device.method(*args, **kwargs)`` within ``timeout`` s (``None``: no limit).

    An ophyd-async device's call runs on :func:`device_loop` and is awaited (a coroutine,
    an ``AsyncStatus``), then cancelled if it is given up on. A sync device's call runs on
    a worker thread and its result (a status is not waited for: see :func:`_wait_status`)
    is returned; given up on, it is abandoned (see :func:`_run_sync`). ``timeout`` and
    ``cancelled`` are this function's: to give the device a ``timeout`` argument, use
    :func:`_call`. Must not be called on the device loop itself.

    Raises:
        DeviceTimeout: not done within ``timeout`` s.
        DeviceBusy: a sync device is still inside an earlier call that was given up on.
        InstrumentError: ``cancelled`` was set meanwhile.
    """
    fn = getattr(device, method)
    return _call(device, method, functools.partial(fn, *args, **kwargs), timeout, cancelled)


def _finish(
    device: Any,
    method: str,
    value: Any,
    deadline: float,
    cancelled: threading.Event,
    *,
    what: str = "",
) -> None:
    """``device.set(value)`` / ``device.trigger()`` and wait until its status is done, at
    most until ``deadline`` (a ``time.monotonic()``), the call itself included."""
    args = () if value is None else (value,)
    status = call_device(device, method, *args, timeout=_left(deadline), cancelled=cancelled)
    if not is_async_device(device):  # an async device's status was awaited on its loop
        _wait_status(status, _left(deadline), cancelled, what=what, method=method)


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (a ``time.monotonic()``), never negative."""
    return max(0.0, deadline - time.monotonic())


_READING = "read() must return {key: {'value': ..., 'timestamp': ...}}"


def _reading_value(
    device: Any, reading: Any, key: str, *, what: str = "input"
) -> tuple[Any, float]:
    """An input plugin's readback: the reading under the parameter name, else its hinted
    field (an ophyd-async device names its keys ``device-signal``), else its only key."""
    _check_reading(reading, what)
    chosen = _readback_key([str(k) for k in reading], key, hinted_fields(device))
    if chosen is None:
        raise InstrumentError(
            f"{what}: reading has no key {key!r} (keys: {_keys(reading)}); key it by the "
            "input's name, hint one field, give it one key or a `position`"
        )
    key = chosen
    return _first_value(reading, key, what=what)


def _check_reading(reading: Any, what: str) -> None:
    if not isinstance(reading, Mapping):
        raise InstrumentError(f"{what}: {_READING}, got {reprlib.repr(reading)}")
    if not reading:
        raise InstrumentError(f"{what}: read() returned no readings ({{}})")


def _keys(reading: Mapping[Any, Any]) -> list[str]:
    return sorted(str(k) for k in reading)


def _first_value(reading: Any, key: str, *, what: str = "device") -> tuple[Any, float]:
    """``(value, timestamp)`` of ``reading[key]``, checked against the bluesky reading's
    shape so a plugin that breaks it is named, not a ``TypeError``. (Its first key used to
    be the default: an output read the first field of a device whose hinted field was
    another; see :func:`_output_key`.)

    Raises:
        InstrumentError: ``what`` (the output or input and its device) and what is wrong.
    """
    _check_reading(reading, what)
    if key not in reading:
        raise InstrumentError(
            f"{what}: reading has no key {key!r} (keys: {_keys(reading)}); set `key:` to "
            "one of them"
        )
    item = reading[key]
    if not isinstance(item, Mapping) or "value" not in item:
        raise InstrumentError(f"{what}: {_READING}, got {reprlib.repr(reading)}")
    stamp = item.get("timestamp")
    if stamp is None:
        return item["value"], time.time()
    try:
        return item["value"], float(stamp)
    except (TypeError, ValueError):
        raise InstrumentError(
            f"{what}: timestamp {reprlib.repr(stamp)} is not a number (seconds since the epoch)"
        ) from None


# ---------------------------------------------------------------------------- device metadata
@dataclass(frozen=True)
class DeviceMeta:
    """What a plugin device says of the reading closedloop takes from it, read once when it
    connects (never during a run: the RunEngine asks the wrappers' ``describe()``, which
    must not call the device): that reading's ``describe()`` entry, and the unit and limits
    the device speaks, from that entry (``units``; ``limits.control`` as ophyd-async reports
    them, ``lower_ctrl_limit``/``upper_ctrl_limit`` as ophyd does), else from an ophyd
    positioner's own ``egu`` and ``limits`` (``low_limit``/``high_limit``). In the device's
    units, as it gives them.

    A plugin's unit and limits used to be ignored: a stage in um driven in mm, limits beyond
    the device's own accepted until its ``set()`` refused them mid-run, and the descriptor
    labelled its readings with the campaign's unit (found in review).

    Attributes:
        key: the ``describe()`` key of the reading (``None``: not known).
        entry: that key's ``describe()`` entry (empty: none).
        units: the unit it says it speaks (``None``: it says none).
        units_from: where ``units`` were read, for messages (``its `egu```).
        limits: its own limits, ``low < high`` (an open side infinite); ``None``: none.
        limits_from: where ``limits`` were read, for messages.
    """

    key: str | None = None
    entry: Mapping[str, Any] = field(default_factory=dict)
    units: str | None = None
    units_from: str = ""
    limits: tuple[float, float] | None = None
    limits_from: str = ""

    @property
    def limits_text(self) -> str:
        """``[-10, 10] um``: the limits as the device gives them."""
        if self.limits is None:
            return ""
        return f"[{self.limits[0]:g}, {self.limits[1]:g}]" + (
            f" {self.units}" if self.units else ""
        )


def _describe(device: Any, timeout: float, what: str) -> dict[str, dict[str, Any]] | None:
    """``device.describe()``, bounded like every call into a plugin, as ``{key: entry}``;
    ``None`` when it has none, it failed (logged: its units and limits are then not known,
    and the device is used as before), or it is not ``{key: {...}}``."""
    if not callable(getattr(device, "describe", None)):
        return None
    try:
        described = call_device(device, "describe", timeout=timeout)
    except Exception as exc:
        logger.warning(
            "%s: describe() failed (%s: %s); its units and limits are not checked",
            what,
            type(exc).__name__,
            exc,
        )
        return None
    if not isinstance(described, Mapping):
        return None
    return {str(k): dict(v) for k, v in described.items() if isinstance(v, Mapping)}


def _readback_key(fields: Sequence[str], name: str, hinted: Sequence[str]) -> str | None:
    """Which key of an input plugin's reading is its readback, as :func:`_reading_value`
    chooses it: the parameter's name, else its (first) hinted field, else its only key."""
    if name in fields:
        return name
    marked = [f for f in hinted if f in fields]
    if marked:
        return marked[0]
    return fields[0] if len(fields) == 1 else None


def _output_key(fields: Sequence[str], hinted: Sequence[str]) -> tuple[str | None, str]:
    """Which field of a plugin output's reading is the output (without ``key:``): its one
    hinted field, else its only field. ``(key, how it was chosen)``, or ``(None, why none
    can be)``: several fields and none hinted, or several hinted.

    Its first field used to be taken: a device that declares a normal field before its
    hinted one (``total`` before ``intensity``) was stored under the wrong value, and
    nothing said so (found in review)."""
    marked = [f for f in dict.fromkeys(hinted) if f in fields]
    if len(marked) == 1:
        return marked[0], "its hinted field"
    if len(fields) == 1:
        return fields[0], "its only field"
    listed = ", ".join(fields)
    if marked:
        return None, f"its reading has fields {listed}, and it hints several ({', '.join(marked)})"
    return None, f"its reading has fields {listed}, and it hints none of them"


def _range_of(low: Any, high: Any) -> tuple[float, float] | None:
    """Limits as a device gives them, as ``(low, high)``; an open side (``None``, NaN, as
    ophyd-async says it) infinite; ``None`` for none: both open, or ``low >= high``
    (``(0, 0)``, as ophyd and EPICS say "no limits")."""
    sides = []
    for value, open_side in ((low, -math.inf), (high, math.inf)):
        if value is None or isinstance(value, bool):
            sides.append(open_side)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        sides.append(number if math.isfinite(number) else open_side)
    a, b = sides
    if (math.isinf(a) and math.isinf(b)) or a >= b:
        return None
    return (a, b)


def _attribute(device: Any, name: str, timeout: float) -> Any:
    """A plain attribute of a plugin device (an ophyd positioner's ``egu``, ``limits``),
    read like any call into it (bounded); ``None`` if it has none or reading it failed."""
    if inspect.getattr_static(device, name, None) is None:
        return None
    try:
        return _call(device, name, lambda: getattr(device, name), timeout)
    except Exception as exc:
        logger.debug("%s of %s cannot be read: %s", name, _label(device), exc)
        return None


def _entry_units_limits(
    entry: Mapping[str, Any], key: str | None
) -> tuple[str | None, str, tuple[float, float] | None, str]:
    """``(units, where, limits, where)`` from one ``describe()`` entry (each ``None`` and
    ``""`` when it gives none)."""
    units, units_from = None, ""
    said = entry.get("units")
    if isinstance(said, str) and said.strip():
        units, units_from = said.strip(), f"the units of its reading {key!r}"
    limits, limits_from = None, ""
    block = entry.get("limits")
    control = block.get("control") if isinstance(block, Mapping) else None
    if isinstance(control, Mapping):
        limits = _range_of(control.get("low"), control.get("high"))
        limits_from = f"limits.control of its reading {key!r}"
    if limits is None and ("lower_ctrl_limit" in entry or "upper_ctrl_limit" in entry):
        limits = _range_of(entry.get("lower_ctrl_limit"), entry.get("upper_ctrl_limit"))
        limits_from = f"lower_ctrl_limit/upper_ctrl_limit of its reading {key!r}"
    return units, units_from, limits, limits_from if limits is not None else ""


def _said_by(decl: InputDecl, speaks: str) -> str:
    """Where the unit an input is said to speak comes from, for a message."""
    if decl.device_units:
        return f"the file says it speaks {speaks!r} (its device_units)"
    if decl.units:
        return f"the file says it speaks {speaks!r} (its units, no device_units)"
    return (
        f"it is given numbers in {speaks!r} (the campaign parameter's unit; the input has no "
        "device_units)"
    )


def _unknown_unit_problem(
    decl: InputDecl, units: str | None, name: str, egu: str, what: str, where: str
) -> str:
    """An input's unit (``units``) is none pint knows, its device's (``egu``) is: refused,
    saying where to write the unit as pint spells it (``device_units`` is parsed when the
    file is read, so it is the input's ``units:`` or its parameter's ``unit:``)."""
    if decl.units:
        key = f"`units:` of input {name!r} (and the campaign parameter's `unit:`)"
    else:
        key = f"the campaign parameter {name!r}'s `unit:`"
    verb = "moves" if what.startswith("motor ") else "is"
    return (
        f"{what} {verb} in {egu!r} ({where}), but {_said_by(decl, units or '')}, which is no "
        "unit pint knows, so nothing can check that a number means the same to both; write "
        f"{key} as pint spells it (e.g. {egu!r}, 'mm', 'degC', 'torr')"
    )


def input_device_meta(device: Any, name: str, timeout: float, *, what: str) -> DeviceMeta:
    """An input plugin's :class:`DeviceMeta`: its readback's ``describe()`` entry (the key
    :func:`_reading_value` reads), then an ophyd positioner's ``egu`` and ``limits`` (or
    ``low_limit``/``high_limit``) for what that entry does not say. Each call is bounded
    by ``timeout``; what cannot be read is not known (the input is used as before)."""
    described = _describe(device, timeout, what) or {}
    key = _readback_key(list(described), name, hinted_fields(device))
    entry = described.get(key, {}) if key is not None else {}
    units, units_from, limits, limits_from = _entry_units_limits(entry, key)
    if units is None:
        egu = _attribute(device, "egu", timeout)
        if isinstance(egu, str) and egu.strip():
            units, units_from = egu.strip(), "its `egu`"
    if limits is None:
        pair = _attribute(device, "limits", timeout)
        if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
            limits, limits_from = _range_of(*pair), "its `limits`"
    if limits is None and inspect.getattr_static(device, "low_limit", None) is not None:
        low = _attribute(device, "low_limit", timeout)
        high = _attribute(device, "high_limit", timeout)
        limits, limits_from = _range_of(low, high), "its `low_limit`/`high_limit`"
    return DeviceMeta(
        key, entry, units, units_from, limits, limits_from if limits is not None else ""
    )


_LIMIT_BLOCKS = ("control", "display", "warning", "alarm")


def _own_data_key(
    meta: DeviceMeta, units: str | None, convert: Callable[[Any], Any] | None
) -> dict[str, Any]:
    """The parts of a plugin's own ``describe()`` entry its wrapper's data key keeps:
    ``source``, ``shape``, ``dtype``, ``units``, ``precision``, ``limits`` (as event-model's schema
    has them). ``convert``: the reading is converted to ``units`` (the campaign's) on its
    way in, so its unit is that one, its limits are converted too, and its precision
    (digits in the device's unit) is dropped; ``None``: stored as the device gives it, so
    its own unit stands (``units``, the campaign's, only where it says none)."""
    entry = meta.entry
    out: dict[str, Any] = {}
    source = entry.get("source")
    if isinstance(source, str) and source:
        out["source"] = source
    shape = entry.get("shape")
    if isinstance(shape, list | tuple) and all(
        isinstance(n, int) and not isinstance(n, bool) for n in shape
    ):
        out["shape"] = [int(n) for n in shape]
    dtype = entry.get("dtype")
    if out.get("shape"):
        out["dtype"] = "array"  # a waveform, an image: not the number the key defaults to
    elif convert is None and dtype in ("string", "integer", "boolean"):
        # a choice input's device reads text: a catalog read a "number" column holding
        # 'b' (found in review); a converted reading is a number whatever the device's
        out["dtype"] = dtype
    if convert is None and meta.units:
        out["units"] = meta.units
    elif units:
        out["units"] = units
    precision = entry.get("precision")
    if convert is None and isinstance(precision, int) and not isinstance(precision, bool):
        out["precision"] = int(precision)
    limits: dict[str, Any] = {}
    block = entry.get("limits")
    for name in _LIMIT_BLOCKS:
        pair = block.get(name) if isinstance(block, Mapping) else None
        if isinstance(pair, Mapping):
            span = _converted_range(pair.get("low"), pair.get("high"), convert)
            if span is not None:
                limits[name] = span
    if "control" not in limits and meta.limits is not None:
        span = _converted_range(meta.limits[0], meta.limits[1], convert)
        if span is not None:
            limits["control"] = span
    if limits:
        out["limits"] = limits
    return out


def _converts(from_device: Callable[[Any], Any]) -> bool:
    """Whether a converter (:func:`~instruments._instrument_file.converter`) changes numbers:
    ``device_units`` another unit than the campaign's (not the identity it is without)."""
    try:
        return bool(from_device(0.0) != 0.0 or from_device(1.0) != 1.0)
    except Exception:
        return True


def _converted_range(
    low: Any, high: Any, convert: Callable[[Any], Any] | None
) -> dict[str, float | None] | None:
    """``{'low': ..., 'high': ...}`` (an open side ``None``), converted by ``convert``;
    ``None`` if not numbers or not convertible."""
    ends: list[float | None] = []
    for value in (low, high):
        if value is None or isinstance(value, bool):
            ends.append(None)
            continue
        try:
            number = float(value)
            if convert is not None and math.isfinite(number):
                number = float(convert(number))
        except Exception:
            return None
        ends.append(number if math.isfinite(number) else None)
    a, b = ends
    if a is not None and b is not None and a > b:  # a unit that counts the other way
        a, b = b, a
    return {"low": a, "high": b}


# ---------------------------------------------------------------------------- inputs
#: How many ulps past a device's own limit a converted setpoint may land by rounding and be
#: put at the limit instead (see ``InputDevice._target``).
_ROUNDING_ULPS = 64


class _ExplainedStatus(Status):
    """A ``Status`` whose text says which device failed and why.

    The RunEngine writes ``str(FailedStatus(status))`` into the stop document's ``reason``,
    and a plain ``Status`` says only ``Status(obj=<...OutputDetector object at 0x7f...>,
    done=True, success=False)``: every plugin or EPICS device failure stored that, and the
    trial's error named the class, not the input (found in review). The text is the
    exception first (``RuntimeError: HV trip (detector 'y')``), so the trial's error and its
    failure kind lead with it (:func:`instruments._dispatch.describe_exception`).
    """

    def __init__(self, obj: Any, role: str) -> None:
        super().__init__(obj=obj)
        self._role = role

    def __str__(self) -> str:
        exc = self.exception() if self.done else None
        if exc is None:
            return super().__str__()
        name = getattr(self.obj, "name", None) or type(self.obj).__name__
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return f"{what} ({self._role} {name!r})"

    __repr__ = __str__


class InputDevice:
    """One campaign parameter on the bench; see the module docstring.

    Args:
        name: the parameter name (the reading's data key).
        decl: its declaration.
        units: campaign units (the parameter's ``unit`` if the file gives none).
        prefix: prepended to PV names.
        gate: interlocks to pass before the first put of a trial.
        bounds: the campaign parameter's bounds, when known (``instruments check``).
        kind: the campaign parameter's kind (``float``, ``int``, ``choice``), when known.
    """

    parent = None

    def __init__(
        self,
        name: str,
        decl: InputDecl,
        *,
        units: str | None,
        prefix: str,
        gate: Gate | None,
        spec: InstrumentFile | None = None,
        bounds: tuple[float, float] | None = None,
        kind: str | None = None,
    ) -> None:
        self.name = name
        self.decl = decl
        self.units = units
        self.gate = gate
        self.bounds = bounds  # the campaign parameter's, when known
        self.kind = kind
        self._to_device, self._from_device = converter(units, decl.device_units)
        # The current move's stop flag: stop() sets it, each set() makes a new one, so a
        # move given up on (stopped, timed out) stays stopped when the next trial moves.
        self._cancel = threading.Event()
        # A move checks its flag and puts holding this lock, and close() sets the flags
        # before it waits for the lock: no put can reach the device after the safe state.
        self._put_lock = threading.Lock()
        self._closed = False
        # The last value written to the device (campaign units): where it was last told to go,
        # for max_step when the device cannot say (a plugin; see _commanded).
        self._last_written: float | None = None
        self._signal: Any = None
        self._positioner: Any = None
        # a plugin's own unit, limits and describe() entry, once read (read_device_metadata);
        # how long a read of them may take when check_value reads them (a dry run): what a
        # connection may (a describe() of an unreachable device must not hold a preview
        # for the input's whole move timeout)
        self._meta: DeviceMeta | None = None
        # the last check_value ran while the device was not connected: its own limits and
        # max_step were not checked (a dry run, which waits for no connection)
        self._unchecked = False
        self._meta_timeout = min(
            decl.timeout, spec.connection_timeout if spec is not None else decl.timeout
        )
        if decl.setpoint is not None:
            from ophyd import EpicsSignal

            self.write_pv = prefix + decl.setpoint
            self.read_pv = prefix + (decl.readback or decl.setpoint)
            self._signal = EpicsSignal(
                self.read_pv, write_pv=self.write_pv, name=f"{name}_raw", auto_monitor=False
            )
            self.source = f"PV:{self.read_pv}"
        elif decl.motor is not None:
            from ophyd import EpicsMotor

            self.write_pv = self.read_pv = prefix + decl.motor
            self._positioner = EpicsMotor(self.read_pv, name=f"{name}_raw")
            self.source = f"PV:{self.read_pv}.RBV"
        elif decl.device is not None:
            self._positioner = _make_plugin(decl.device, decl.args, name, spec=spec)
            self.write_pv = self.read_pv = ""
            self.source = f"device:{decl.device}"
        else:  # the schema requires exactly one; a declaration built around it has none
            raise InstrumentConfigError(
                f"input {name!r} has none of `setpoint:`, `motor:` or `device:`",
                field="inputs",
            )

    # --------------------------------------------------------------- bluesky protocols
    @property
    def limits(self) -> tuple[float, float]:
        """Declared hardware limits in campaign units (``(0, 0)``: none, as in ophyd)."""
        return self.decl.limits or (0.0, 0.0)

    @property
    def position(self) -> float:
        """The readback, in campaign units."""
        return self._readback()[0]

    def check_value(self, value: Any) -> None:
        """Raise :class:`~instruments._safety.SetpointRefused` for a value the hardware must
        not get, or whose ramp could not start (:meth:`_checked_step`); reads the current
        position only when ``max_step`` is declared.

        A device that is disconnected now cannot say where it is: its ``max_step`` is then
        checked by ``set`` instead, after the interlock gate has waited for the connection
        and just before the put (the trial pauses rather than failing on the read).
        """
        connected = self._connected()
        self._unchecked = not connected  # what the dry run's hardware note then says
        if connected and self.decl.device is not None and self._meta is None:
            # not connected through check()/connect() (a dry run): what it says of itself
            # now, so its own unit and limits refuse here as they would in a run
            self.read_device_metadata(self._meta_timeout)
        if connected:
            self._refuse_wrong_type()
        check_setpoint(  # the setpoint itself
            self.name,
            value,
            limits=self.decl.limits,
            max_step=self.decl.max_step if connected else None,
            current=None,
            device_limits=self.device_limits if connected else None,
            device_source=self._device_limits_source,
        )
        number = _number_or_none(value)
        if connected and self.decl.max_step is not None and number is not None:
            # the first step of its ramp (the move itself when within max_step)
            self._checked_step(number, self.position, self._commanded())

    def _commanded(self, deadline: float | None = None) -> float | None:
        """Where this process last told the device to go, in campaign units: its setpoint PV
        (a motor's VAL) as the IOC holds it now, so a write by another client since counts
        too; else the last value this process wrote; ``None``: not known (nothing written
        yet by this process, or the setpoint PV is also the readback, which ``max_step``
        measures from anyway).

        Nothing before this process's first write counts: a controller switched off with its
        setpoint left at 150 degC while reading 25 refused every trial and its safe state
        (found in review); the readback is what the device feels."""
        if self._last_written is None:
            return None
        raw: Any = None
        limit = None if deadline is None else max(_left(deadline), 0.5)
        try:
            if self._signal is not None and self.write_pv != self.read_pv:
                raw = self._signal.get_setpoint(**({} if limit is None else {"timeout": limit}))
            elif self.decl.motor is not None:
                setpoint = self._positioner.user_setpoint
                raw = setpoint.get(**({} if limit is None else {"timeout": limit}))
        except Exception as exc:  # unreadable now: what this process last wrote
            logger.debug("%s: cannot read its setpoint back: %s", self.name, exc)
            raw = None
        if raw is not None:
            try:
                value = float(self._from_device(raw))
            except (TypeError, ValueError):
                value = math.nan
            if math.isfinite(value):
                return value
        return self._last_written

    @property
    def device_limits(self) -> tuple[float, float] | None:
        """The device's own limits, in campaign units: a setpoint PV's control limits
        (DRVL/DRVH), a motor record's soft limits (LLM/HLM, which its VAL reports as its
        control limits, and which ``EpicsMotor`` enforces), as read when it connected and
        updated since, or a plugin's as it said when it connected (:class:`DeviceMeta`);
        ``None``: it has none (``(0, 0)``, as EPICS says so; a motor with HLM = LLM = 0
        has its soft limits off), or is not connected yet.

        A motor's used to be ``None`` ("a motor record refuses its own limits at once"):
        ophyd does refuse them, but only inside the trial's run, after its interlock pass,
        as ``LimitError: position_raw_user_setpoint: value 55.0 outside of range``, while
        ``instruments check`` neither showed them nor flagged limits or bounds beyond them.
        """
        raw = self._raw_device_limits()
        if raw is None:
            return None
        try:
            a, b = float(self._from_device(raw[0])), float(self._from_device(raw[1]))
        except Exception:
            return None
        return (min(a, b), max(a, b))

    def _raw_device_limits(self) -> tuple[float, float] | None:
        """:attr:`device_limits` in the device's own units, as it gives them."""
        if self.decl.device is not None:
            if self._meta is None or self._meta.limits is None:
                return None
            low, high = self._meta.limits  # an open side is infinite, and stays so
            return (float(low), float(high))
        source = self._signal if self._signal is not None else self._positioner
        try:
            low, high = source.limits
            low, high = float(low), float(high)
        except Exception:  # never connected (None), or not numbers
            return None
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            return None
        return (low, high)

    def _target(self, value: Any) -> Any:
        """``value`` (campaign units, checked against the limits) in the device's units.

        A value at a limit can land a few ulps past the device's own limit on the way
        (1.27082 mm is 1270.8200000000002 um against a DRVH of 1270.82), and the IOC then
        refuses the put: the trial failed as a readback not within tolerance, and was
        retried to the same end (found in review: 10-20 % of limits with mm/um, mbar/Pa,
        mL/min/uL/s; every one with bar/psi). Such a value is put at the limit itself.
        """
        target = self._to_device(value)
        raw = self._raw_device_limits()
        if raw is None or not isinstance(target, float):
            return target
        low, high = raw

        def near(limit: float) -> bool:
            return abs(target - limit) <= _ROUNDING_ULPS * math.ulp(limit)

        if high < target and near(high):
            return high
        if target < low and near(low):
            return low
        return target

    @property
    def _device_limits_source(self) -> str:
        if self._signal is not None:
            return f"control limits DRVL/DRVH of PV {self.write_pv}"
        if self.decl.motor is not None:
            return f"soft limits LLM/HLM of motor {self.write_pv}"
        meta = self._meta
        if meta is not None and meta.limits is not None:
            return f"limits of device {self.decl.device}, {meta.limits_from} = {meta.limits_text}"
        return ""

    @property
    def _whose(self) -> str:
        """Whose limits a fix widens: ``the IOC's``, ``the device's``."""
        return "the device's" if self.decl.device is not None else "the IOC's"

    def read_device_metadata(self, timeout: float) -> None:
        """Read what a plugin device says of itself (:class:`DeviceMeta`: its unit and
        limits, its readback's ``describe()`` entry), each call within ``timeout`` s; for
        :meth:`type_problem`, :attr:`device_limits` and :meth:`describe`. Called once it
        is connected (``check()``, so every run's ``connect()``), and by ``check_value``
        when it never was (a dry run). Nothing for an EPICS input (its PVs say it)."""
        if self.decl.device is not None:
            self._meta = input_device_meta(self._positioner, self.name, timeout, what=self.what)

    def reach_problem(self, here: float) -> str | None:
        """Why no trial could start from the reading ``here``: the device is further than
        ``max_step`` outside its limits (the file's ``limits`` and its own), so no step of a
        ramp (:meth:`_ramp`) stays within them and each trial would be refused; ``None`` if
        not (or no ``max_step``). The campaign's bounds do not matter: a ramp may pass
        outside them on its way in (a furnace at room temperature, bounds from 30 degC)."""
        step = self.decl.max_step
        spans = [s for s in (self.decl.limits, self.device_limits) if s is not None]
        if step is None or not spans:
            return None
        low = max(float(s[0]) for s in spans)
        high = min(float(s[1]) for s in spans)
        if low > high:
            return None  # the file's limits miss the device's: range_problem says so
        nearest = min(max(here, low), high)
        if abs(nearest - here) <= step:
            return None
        units = f" {self.units}" if self.units else ""
        return (
            f"it reads {here:g}{units}, {abs(nearest - here):g} from its limits "
            f"[{low:g}, {high:g}], more than max_step {step:g}: no step toward any setpoint "
            "stays within them, so every trial would be refused (bring the device within "
            "max_step of its limits first)"
        )

    def range_problem(self, bounds: tuple[float, float] | None = None) -> str | None:
        """Why setpoints the file allows (its ``limits``, else the campaign's ``bounds``)
        would not all reach the device: they reach outside its own limits; ``None`` if not.
        """
        ioc = self.device_limits
        if ioc is None:
            return None
        if self.decl.limits is not None:
            what, span = "limits", self.decl.limits
        elif bounds is not None:
            what, span = "campaign's bounds", bounds
        else:
            return None
        if ioc[0] <= span[0] and span[1] <= ioc[1]:
            return None
        units = f" {self.units}" if self.units else ""
        return (
            f"its {what} [{span[0]:g}, {span[1]:g}] reach outside [{ioc[0]:g}, {ioc[1]:g}]"
            f"{units}, the {self._device_limits_source}; setpoints beyond them are refused "
            f"(narrow the file's limits, or widen {self._whose})"
        )

    def type_problem(self) -> str | None:
        """Why this input's PVs cannot carry its numbers (an ENUM, a string, an array; a
        setpoint or readback PV, or a motor, whose EGU is another unit than the file says
        it speaks), or ``None``. Known once they are connected; unknown (``None``) before."""
        if self.decl.motor is not None:
            try:
                egu = self._positioner.motor_egu.get()
            except Exception:  # not connected yet: unknown
                return None
            return self._egu_problem(egu, f"motor {self.write_pv} (input {self.name!r})")
        if self.decl.device is not None:
            meta = self._meta  # None: not read yet, unknown
            if meta is None or meta.units is None:
                return None
            return self._egu_problem(
                meta.units,
                f"device {self.decl.device} (input {self.name!r})",
                where=meta.units_from,
                fix="fix the units the device reports",
            )
        if self._signal is None:
            return None
        seen: set[str] = set()
        pvs = []
        for role, pv, name in (
            ("setpoint", getattr(self._signal, "_write_pv", None), self.write_pv),
            ("readback", getattr(self._signal, "_read_pv", None), self.read_pv),
        ):
            if pv is None or name in seen:
                continue
            seen.add(name)
            roles = "setpoint and readback" if self.write_pv == self.read_pv else role
            pvs.append((pv, f"PV {name} (the {roles} of input {self.name!r})"))
        for pv, what in pvs:
            problem = _pv_type_problem(pv)
            if problem is not None:
                return (
                    f"{what} is {problem}; a numeric input needs a numeric PV (a float or an "
                    "integer)"
                )
        problems = [(what, p) for pv, what in pvs if (p := self._egu_problem(_pv_units(pv), what))]
        if len(pvs) == 2 and problems:
            disagree = _egu_disagreement([(what, _pv_units(pv)) for pv, what in pvs])
            if disagree is not None:
                return disagree
        return problems[0][1] if problems else None

    def _egu_problem(
        self, egu: Any, what: str, *, where: str = "its EGU", fix: str = "fix the record's EGU"
    ) -> str | None:
        """A motor record, and a numeric PV, say which unit they speak (EGU). If that is a
        unit (pint knows it) and not the one the file says the device speaks
        (``device_units``, else the campaign's unit), every setpoint would be sent in the
        wrong unit, and read back in it too, so nothing would look wrong (found in review:
        a temperature PV in K driven as degC, 30 degC sent as 30 K): refused like a PV of
        the wrong type. An empty or unknown EGU (``counts``), one of another dimension (pint
        reads ``MM``, an EGU in capitals, as megamolar, and ``C`` as coulomb: neither is
        judged), or an input without units, is not judged; but an input whose own unit pint
        does not know (``milimeter``, ``Torr``) is refused when its device names a unit with
        a dimension, since nothing could then catch a device in another unit. A plugin
        device's unit (its reading's ``describe()`` units, an ophyd positioner's ``egu``) is
        judged alike: ``where`` says where it was read, ``fix`` what to fix at the device."""
        from instruments._instrument_file import unit_of, unit_registry

        speaks = self.decl.device_units or self.units
        if not speaks or egu is None:
            return None
        egu = (egu.decode(errors="replace") if isinstance(egu, bytes) else str(egu)).strip()
        if not egu:
            return None
        if egu == speaks:
            return None
        ureg = unit_registry()
        try:
            said = unit_of(egu)
        except Exception:  # an EGU pint does not know (or would not be safe to read): not judged
            return None
        try:
            spoken = unit_of(speaks)
        except Exception:
            # the file's unit is no unit pint knows (a typo: `milimeter`; `Torr` for `torr`)
            # while the device names one with a dimension: nothing could tell whether a
            # number means the same to both (found in review: a stage in um driven with
            # `units: milimeter` passed every check, and its safe state wrote 4975 um)
            return (
                None
                if said.dimensionless
                else _unknown_unit_problem(self.decl, self.units, self.name, egu, what, where)
            )
        try:
            if said == spoken or said.dimensionality != spoken.dimensionality:
                return None
            # the same unit under another name (Hz and 1/s, hPa and mbar): a number means
            # the same in both, so nothing is sent wrong (found in review: refused)
            if all(
                math.isclose(ureg.Quantity(x, said).to(spoken).magnitude, x, rel_tol=1e-12)
                for x in (0.0, 1.0)
            ):
                return None
        except Exception:  # a conversion pint refuses: not judged
            return None
        verb = "moves" if what.startswith("motor ") else "is"
        return (
            f"{what} {verb} in {egu!r} ({where}), but {_said_by(self.decl, speaks)}; set "
            f"`device_units: {egu}` on the input (values are then converted), or {fix}"
        )

    def _refuse_wrong_type(self) -> None:
        problem = self.type_problem()
        if problem is not None:
            raise SetpointRefused(f"{self.name}: {problem}")

    @property
    def connected(self) -> bool:
        """Whether its PV, motor or plugin device is connected now, as an ophyd device says
        it (the dispatcher reads no disconnected input after a failed run)."""
        return self._connected()

    @property
    def abandonable_read(self) -> bool:
        """Whether a read of it may be left unfinished without harm: a PV's or a motor's.
        A plugin device's call that outlives its time limit has it refuse every later call
        until it returns (:func:`call_device`), so the dispatcher does not read a plugin
        input after a failed run: its bounded read locked a faulted controller, and every
        later trial and the safe state failed (found in review, session 38)."""
        return self.decl.device is None

    def _connected(self) -> bool:
        target = self._signal if self._signal is not None else self._positioner
        try:
            return bool(getattr(target, "connected", True))
        except Exception:
            return False

    def _pvs(self) -> list[str]:
        if not self.write_pv:
            return []
        return [self.write_pv] if self.read_pv == self.write_pv else [self.write_pv, self.read_pv]

    def _lost(self) -> list[str]:
        """This input's PVs, if it is disconnected now."""
        return [] if self._connected() else self._pvs()

    def set(self, value: Any) -> Status:
        """Pass the interlocks, check, put, wait until within tolerance, settle."""
        status = _ExplainedStatus(self, "input")
        cancel = self._cancel = threading.Event()  # this move's; stop() sets it
        if self._closed:  # after the safe state: refused at once, not after the gate
            cancel.set()
        thread = threading.Thread(
            target=self._move,
            args=(value, status, cancel),
            name=f"move-{self.name}",
            daemon=True,
        )
        thread.start()
        return status

    def stop(self, *, success: bool = False) -> None:
        """Stop a move in progress and end the trial's interlock pass.

        The RunEngine calls this on every input it moved when a run ends, however it ends,
        so it is where a trial ends for the gate (:meth:`~instruments._safety.Gate.end_trial`):
        the next trial checks the interlocks afresh.
        """
        self._cancel.set()
        if self.gate is not None:
            self.gate.end_trial()
        if self._positioner is not None and hasattr(self._positioner, "stop"):
            # on the RunEngine's thread: bounded, so a stop that never returns cannot hold it
            limit = min(self.decl.timeout, _STOP_TIMEOUT)
            try:
                call_device(self._positioner, "stop", success=success, timeout=limit)
            except Exception as exc:
                logger.warning("stopping %s failed: %s", self.name, exc)

    def read(self) -> dict[str, Any]:
        value, ts = self._readback()
        return {self.name: {"value": value, "timestamp": ts}}

    def describe(self) -> dict[str, Any]:
        """The reading's data key. A plugin's keeps its own ``describe()`` entry (source,
        shape, units, precision, limits: :func:`_own_data_key`), as read when it connected,
        so nothing here calls the device (the RunEngine calls this on its own thread)."""
        key: dict[str, Any] = {"source": self.source, "dtype": "number", "shape": []}
        if self.units:
            key["units"] = self.units
        if self._meta is not None:
            convert = self._from_device if _converts(self._from_device) else None
            key.update(_own_data_key(self._meta, self.units, convert))
        if self.kind == "float" and key.get("dtype") == "integer":
            # an ophyd positioner describes its position when it connects: SoftPositioner
            # at init_pos 0 said "integer" for a column of 0.2677, 0.51, ... (LiveTable
            # failed to format every row; found in review)
            key["dtype"] = "number"
        return {self.name: key}

    @property
    def hints(self) -> dict[str, list[str]]:
        """The reading is the one interesting field (bluesky's per-device hints, as the
        simulated devices give them: a viewer plots it)."""
        return {"fields": [self.name]}

    def read_configuration(self) -> dict[str, Any]:
        return {}

    def describe_configuration(self) -> dict[str, Any]:
        return {}

    def await_pv(self, deadline: float) -> None:
        """For a dry run: wait until ``deadline`` (``time.monotonic()``) at most for this
        input's PVs, which connect in the background once built, so that the preview
        checks the device's own limits and ``max_step`` whenever its IOC answers (review
        U: two runs of one ``plan --dry-run`` gave opposite verdicts, the check racing the
        connection). Nothing for a plugin device (a dry run does not connect to it), or
        one connected already; one that does not answer stays unchecked, and says so."""
        if self.decl.device is not None or self._connected():
            return
        left = deadline - time.monotonic()
        if left > 0:
            with contextlib.suppress(Exception):
                _connect(self._signal if self._signal is not None else self._positioner, left)

    # --------------------------------------------------------------- internals
    def wait_for_connection(self, timeout: float) -> None:
        _connect(self._signal if self._signal is not None else self._positioner, timeout)
        self.read_device_metadata(timeout)

    def hardware_note(self, value: Any = None) -> str:
        """What a ``set`` of this input (to ``value``, when given) does at the hardware, for
        ``plan --dry-run``: the PV (or motor, or plugin) written, then what is waited for
        and how long (found in review: the preview said ``set x 8.96`` and
        ``timeout=None``, never a PV), and the steps of its ramp from where the device reads
        now (:meth:`ramp_preview`)."""
        d = self.decl
        if d.setpoint is not None:
            done = (
                f"readback {self.read_pv} within {d.tolerance:g}"
                if d.tolerance is not None
                else f"the put's completion, then reads {self.write_pv} back"
            )
            target = f"writes PV {self.write_pv}, waits for {done}"
        elif d.motor is not None:
            target = f"moves motor {self.write_pv} (.VAL), waits for its DMOV"
        else:
            target = f"calls set() of device {d.device}, waits for its status"
        settle = f", then {d.settle_time:g} s to settle" if d.settle_time else ""
        step = (
            f"; a move further than max_step {d.max_step:g} goes in steps of at most that, "
            "each written and waited for like this"
            + ("" if d.motor is not None else " (and until its readback is there)")
            + f", within {d.timeout:g} s each"
            if d.max_step is not None
            else ""
        )
        if self._unchecked:
            # A preview must not show a reading the check did not have (review U: a ramp
            # "from its reading 25 degC now" to a setpoint beyond the PV's DRVH, exit 0).
            return (
                f"{target} (at most {d.timeout:g} s{settle}{step}); not connected when "
                "checked: the device's own limits"
                + (" and max_step were" if d.max_step is not None else " were")
                + " not checked here (the run checks them)"
            )
        steps = self.ramp_preview(value)
        units = f" {self.units}" if self.units else ""
        ramp = (
            f"; from its reading {steps[0]:g}{units} now: " + ", ".join(f"{v:g}" for v in steps[1:])
            if steps is not None
            else ""
        )
        return f"{target} (at most {d.timeout:g} s{settle}{step}){ramp}"

    def ramp_preview(self, value: Any) -> list[float] | None:
        """The device's reading now, then the setpoints a move to ``value`` would write
        (:meth:`_ramp`, each step taken as reached exactly), or ``None``: no ``max_step``,
        not a number, or the device not connected (the dry run waits for no connection)
        or unreadable. Only a preview: the run measures each step from where the device
        then reads."""
        step = self.decl.max_step
        number = _number_or_none(value)
        if step is None or number is None or not self._connected():
            return None
        try:
            here = float(self.position)
            told = self._commanded()
        except Exception:
            return None
        if not math.isfinite(here):
            return None
        whole = isinstance(value, int) and not isinstance(value, bool)
        steps = [here]
        last: float | None = told
        while len(steps) <= 2 * math.ceil(abs(number - here) / step) + 2:
            nxt = next_step(number, steps[-1], steps[-1] if last is None else last, step)
            if nxt is None:
                break
            if whole:  # as _checked_step writes an int's steps
                nxt = _whole(nxt, number, steps[-1])
            steps.append(nxt)
            last = None  # from the second step on, where it was told is where it is
            if nxt == number:
                break
        return steps

    def read_note(self) -> str:
        """What a ``read`` of this input reads (its readback), for ``plan --dry-run``."""
        return f"reads {self.source.replace('PV:', 'PV ').replace('device:', 'device ')}"

    @property
    def what(self) -> str:
        """How errors name this input: ``input 'x' (device mylab:Stage)``."""
        return f"input {self.name!r}" + (
            f" (device {self.decl.device})" if self.decl.device else ""
        )

    def _raw_readback(self, deadline: float | None = None) -> tuple[Any, float]:
        """The device's reading as it gives it; a plugin's read within ``timeout`` s, or
        until ``deadline`` (a ``time.monotonic()``) during a move."""
        if self._signal is not None:
            return self._signal.get(), time.time()
        if self.decl.motor is not None:
            return self._positioner.user_readback.get(), time.time()
        limit = self.decl.timeout if deadline is None else _left(deadline)
        dev = self._positioner
        # getattr_static: `hasattr` would run a `position` property, unbounded
        if not is_async_device(dev) and inspect.getattr_static(dev, "position", None) is not None:
            return _call(dev, "position", lambda: dev.position, limit), time.time()
        reading = call_device(dev, "read", timeout=limit)
        return _reading_value(dev, reading, self.name, what=self.what)

    def _readback(self, deadline: float | None = None) -> tuple[float, float]:
        raw, ts = self._raw_readback(deadline)
        return self._from_device(raw), ts

    @property
    def target(self) -> str:
        """What this input writes, for messages: its setpoint PV (not the readback), its
        motor record or its plugin device."""
        if self._signal is not None:
            return f"PV {self.write_pv}"
        if self.decl.motor is not None:
            return f"motor {self.write_pv}"
        return f"device {self.decl.device}"

    def safe_state_problem(self, value: float) -> str | None:
        """Why the safe state ``value`` would not reach the device: it lies outside the
        device's own limits (a setpoint PV's DRVL/DRVH, a motor's LLM/HLM), which would
        refuse or clamp it when the campaign stops; ``None``: within them, or none known."""
        ioc = self.device_limits
        if ioc is None or ioc[0] <= value <= ioc[1]:
            return None
        units = f" {self.units}" if self.units else ""
        return (
            f"its safe state (on_stop) {value:g}{units} is outside [{ioc[0]:g}, {ioc[1]:g}]"
            f"{units}, the {self._device_limits_source}, which would refuse or clamp it when "
            f"the campaign stops (change on_stop, or widen {self._whose} limits)"
        )

    def put_raw(self, value: float, *, timeout: float) -> None:
        """Write a campaign-unit value now, waiting for the write to be acknowledged (used
        for the safe state; no tolerance wait). ``timeout`` bounds the wait for the
        connection (a PV reconnecting after an IOC restart; ophyd's own default is 1 s)
        and then the acknowledgement."""
        target = self._target(value)
        self._last_written = float(value)
        if self._signal is not None:
            _put_acknowledged(self._signal, target, timeout, what=self.write_pv)
        else:
            # bounded like every call; an ophyd-async status is awaited, a sync one (a motor's
            # whole move) for `timeout` at most: one that fails by then is a safe state not
            # written (ophyd's Signal.set fails on its own thread, and that was lost: found in
            # review), one still moving was taken, and the move may outlast `timeout`
            status = call_device(self._positioner, "set", target, timeout=timeout)
            if not is_async_device(self._positioner):
                with contextlib.suppress(TimeoutError):
                    _wait_status(status, timeout, threading.Event(), what=self.name)

    def write_safe_state(self, value: float, *, timeout: float) -> None:
        """Write this input's safe state ``value`` (campaign units), keeping to ``max_step``.

        Without ``max_step``: one write (:meth:`put_raw`). With it, the device is never
        told to jump further than ``max_step`` on the way out either (a magnet's current, a
        furnace: found in review, a safe state of 100 written at once from 10): it is
        approached in steps, each at most ``max_step`` from the readback and from the last
        setpoint (as a trial's move is checked) and within the limits (a device found outside
        them gets no step outside them: found in review, 33 written to a stage at 38 with
        limits [0, 30]), each a move of its own, waited for within
        the input's ``timeout`` (the device's status, then the readback within
        ``tolerance``, or at or past the step without one; then ``settle_time``). The last
        step is written like a direct safe state (acknowledged, not waited for).

        Raises:
            InstrumentError: a step could not be written or was not reached in time, or no
                step can keep to ``max_step`` (the readback unreadable, or further than
                twice ``max_step`` from the last setpoint); nothing more is written, and the
                message says how far the approach got.
        """
        step = self.decl.max_step
        if step is None:
            self.put_raw(value, timeout=timeout)
            return
        written: list[float] = []
        waited = 0.0  # when the last step's wait for room to the next one ends (_room)
        try:
            while True:
                deadline = time.monotonic() + self.decl.timeout
                here = float(self._readback(deadline)[0])
                if not math.isfinite(here):
                    raise InstrumentError(f"its readback is {here}, not a finite number")
                told = self._commanded(deadline)
                told = here if told is None else told
                stepped = next_step(value, here, told, step)
                # none: readback and setpoint too far apart for one write near both; a
                # write within max_step of the readback moves the setpoint toward what the
                # device feels, never a jump it could feel (found in review)
                nxt = min(max(value, here - step), here + step) if stepped is None else stepped
                if nxt == value:
                    self.put_raw(value, timeout=timeout)
                    return
                if written and not _room(nxt, written[-1], value, step, here, waited):
                    time.sleep(_POLL)
                    continue
                try:  # a device found outside its limits: no step may leave them further
                    check_setpoint(
                        self.name,
                        nxt,
                        limits=self.decl.limits,
                        max_step=None,
                        current=None,
                        device_limits=self.device_limits,
                        device_source=self._device_limits_source,
                    )
                except SetpointRefused as exc:
                    raise InstrumentError(
                        f"it reads {here:g}, and no step within max_step of that stays within "
                        f"its limits ({exc}); bring it back within its limits by hand"
                    ) from None
                written.append(nxt)
                self._safe_step(nxt, deadline, start=here)
                waited = time.monotonic() + self.decl.timeout
        except Exception as exc:
            units = f" {self.units}" if self.units else ""
            done = (
                f"after {len(written)} step(s), the last to {written[-1]:g}{units}, "
                if written
                else "before its first step, "
            )
            raise InstrumentError(
                f"approaching it in steps of at most max_step {step:g}{units} stopped {done}"
                f"nothing more written: {type(exc).__name__}: {exc}"
            ) from exc

    def _safe_step(self, value: float, deadline: float, *, start: float) -> None:
        """One step of :meth:`write_safe_state` from the readback ``start``: written (the
        connection waited for until ``deadline``), then waited for as a trial's move is,
        until ``deadline``."""
        target = self._target(value)
        self._last_written = value
        never = threading.Event()  # the safe state is not stopped by a trial's stop
        if self._signal is not None:
            _put_acknowledged(self._signal, target, _left(deadline), what=self.write_pv)
        else:
            status = call_device(self._positioner, "set", target, timeout=_left(deadline))
            if not is_async_device(self._positioner):
                _wait_status(status, _left(deadline), never, what=self.what, method="set")
            if self.decl.motor is not None:
                self._motor_done(deadline, never)
        self._arrive(value, start, deadline, never)
        if self.decl.settle_time:
            time.sleep(self.decl.settle_time)

    def _arrive(
        self, value: float, start: float | None, deadline: float, cancel: threading.Event
    ) -> None:
        """Wait, until ``deadline``, until the device has arrived at ``value``: a move's
        (``start`` ``None``) when its readback is within ``tolerance``; a step of a ramp
        from the reading ``start`` also when it is at or past ``value``, and without a
        tolerance when it is within 1 % of ``max_step`` of it (a put completes, and many a
        plugin's status finishes, before the device gets there; the next step is measured
        from the readback). A motor without a tolerance has arrived when its record says
        its move is done (DMOV), wherever it stopped: a motor whose deadband is more than
        1 % of a small ``max_step`` timed out every step (found in review).

        The 1 %: a device that approaches smoothly (a furnace's first-order response) never
        reads at or past the step, and each step timed out. Arriving that close is safe: the
        next step is within ``max_step`` of wherever the device reads (:func:`next_step`).

        Raises:
            DeviceTimeout: not there at ``deadline``.
            InstrumentError: stopped meanwhile.
        """
        tolerance = self.decl.tolerance
        if tolerance is None and self.decl.motor is not None:
            return  # the motor record's DMOV: its own word that it is there, wherever it stopped
        near = tolerance if tolerance is not None else 0.01 * (self.decl.max_step or 0.0)
        while True:
            here = float(self._within(deadline, value, self._readback, deadline)[0])
            if abs(here - value) <= near:
                return
            if start is not None and (here - value) * (start - value) <= 0:
                return  # at or past a ramp's step
            if time.monotonic() > deadline:
                hint = (
                    "; a ramp's step without a tolerance waits for the readback at or past "
                    "it: declare the input's tolerance (how far from its setpoint it settles)"
                    if tolerance is None
                    else ""
                )
                raise DeviceTimeout(
                    f"{self.name}: readback {here:g} not within {near:g} of {value:g} after "
                    f"{self.decl.timeout:g} s{hint}"
                )
            if cancel.wait(_POLL):
                raise InstrumentError(f"{self.name}: stopped while moving")

    @contextlib.contextmanager
    def _fence(self, cancel: threading.Event) -> Iterator[None]:
        """Hold the put lock for a write to the device, refusing it if the move was stopped
        (its trial aborted, timed out, or the campaign stopping: see :meth:`close_moves`)."""
        with self._put_lock:
            if cancel.is_set() or self._closed:
                raise InstrumentError(f"{self.name}: stopped before the put")
            yield

    def close_moves(self, timeout: float) -> None:
        """Stop every move for good, and wait (at most ``timeout`` s) for a write in
        progress: called before the safe state is written, so no move's put lands after it.

        A plugin's or motor's ``set`` in progress is given up on as soon as its move is
        stopped (a sync call stuck in the device is abandoned on its daemon thread), so the
        wait is short; a write still not over after ``timeout`` (a CA put blocked on its
        socket) is logged, and the safe state is written all the same.
        """
        self._closed = True
        self._cancel.set()
        if self._put_lock.acquire(timeout=timeout):
            self._put_lock.release()
        else:
            logger.error(
                "%s: a write to the device was still in progress after %g s; writing the safe "
                "state anyway (that write may land after it)",
                self.name,
                timeout,
            )

    def _move(self, value: Any, status: Status, cancel: threading.Event) -> None:
        """Pass the gate, then move to ``value`` (:meth:`_ramp` it when ``max_step`` is
        declared, else one :meth:`_put_and_wait`), then settle.

        Time spent at the gate waiting for interlocks is not the move's. Each step of a
        ramp, and a move without ``max_step``, has its own deadline, ``timeout`` from its
        start: the device's ``set`` status, the position read for ``max_step`` and every
        readback of the tolerance wait get only the time left, so no part of a step can
        restart its clock (a plugin's read is bounded by ``timeout`` on its own, and used
        to let a move run for up to twice it).
        """
        try:
            if self.gate is not None:
                self.gate.wait(cancel, mover=self)
            # again, just before the put (with max_step: the gate waited for the connection):
            # nothing moved if it raises
            self._refuse_wrong_type()
            if self.decl.max_step is not None and _number_or_none(value) is not None:
                self._ramp(value, self.decl.max_step, cancel)
            else:
                deadline = time.monotonic() + self.decl.timeout
                check_setpoint(
                    self.name,
                    value,
                    limits=self.decl.limits,
                    max_step=self.decl.max_step,  # only says a choice cannot be checked
                    current=None,
                    device_limits=self.device_limits,
                    device_source=self._device_limits_source,
                )
                self._put_and_wait(value, deadline, cancel)
            if self.decl.settle_time and cancel.wait(self.decl.settle_time):
                raise InstrumentError(f"{self.name}: stopped while settling")
        except Exception as exc:
            status.set_exception(_named_loss(exc, self._lost(), self._pvs()))
        else:
            status.set_finished()

    def _ramp(self, value: Any, step: float, cancel: threading.Event) -> None:
        """Move to ``value`` in steps of at most ``max_step``, as the safe state is approached.

        A move further than ``max_step`` from where the device is used to be refused: a
        design that jumps across the space (a Sobol start, a planner exploring) had 10 of 13
        trials refused, and the campaign failed on ``max_failures`` (found in review). A
        technician who declares ``max_step`` means "never jump further than this", not
        "never go further": so each step goes to the point nearest ``value`` within
        ``max_step`` of the readback and of the last setpoint (:func:`next_step`; a whole
        number for an int's setpoint, rounded toward the device), is checked as any
        setpoint is (limits, the device's own limits), written and waited for within its own
        ``timeout`` (:meth:`_arrive`), and the next step starts from where the device then
        reads; the interlocks are read again before each step after the first. The last
        step writes ``value`` as given (an int stays an int), waited for as a move without
        ``max_step`` is; only then does the trial settle and measure.

        Raises:
            SetpointRefused: the first step is refused (the readback unreadable, the device
                more than twice ``max_step`` from its last setpoint, or so far outside the
                limits that no step stays within them): nothing was written.
            InstrumentError: a later step failed or the device did not follow the steps;
                the message says how far the ramp got, the error keeps its kind, and a
                refusal mid-ramp (a reading that glitched to NaN) is transient: it is about
                where the device was, not the point.
        """
        target = float(value)
        whole = isinstance(value, int) and not isinstance(value, bool)
        written: list[float] = []
        waited = 0.0  # when the last step's wait for room to the next one ends
        try:
            while True:
                if written and self.gate is not None:
                    check_during_ramp(self.gate)  # the gate passed it before the first
                deadline = time.monotonic() + self.decl.timeout
                here = self._within(deadline, value, self._readback, deadline)[0]
                nxt = self._checked_step(target, here, self._commanded(deadline), whole=whole)
                if nxt == target:
                    self._put_and_wait(value, deadline, cancel)
                    return
                if written and not _room(nxt, written[-1], target, step, here, waited):
                    if cancel.wait(_POLL):
                        raise InstrumentError(f"{self.name}: stopped while moving")
                    continue
                written.append(nxt)
                self._put_and_wait(int(nxt) if whole else nxt, deadline, cancel)
                self._arrive(nxt, here, deadline, cancel)
                waited = time.monotonic() + self.decl.timeout
        except Exception as exc:
            if not written:
                raise  # nothing written: said as a single move's failure is
            units = f" {self.units}" if self.units else ""
            raise _same_kind(
                exc,
                f"{self.name}: the ramp to {target:g}{units} in steps of at most max_step "
                f"{step:g} stopped after {len(written)} step(s), the last to "
                f"{written[-1]:g}{units}: {str(exc).removeprefix(f'{self.name}: ')}",
                transient=True if isinstance(exc, SetpointRefused) else None,
            ) from exc

    def _checked_step(
        self, value: float, here: float, told: float | None, *, whole: bool = False
    ) -> float:
        """The next setpoint of a ramp to ``value`` from the reading ``here`` and the last
        setpoint ``told`` (:func:`next_step`; with ``whole``, a whole number, rounded toward
        ``here``), checked by :func:`check_setpoint`; ``value`` itself when it is within
        ``max_step`` of both.

        Raises:
            SetpointRefused: the step may not be written: the reading not a number, no step
                within ``max_step`` of both the reading and the last setpoint (they are more
                than twice it apart: the device has not followed its last move), or the
                step outside the limits.
        """
        step = self.decl.max_step
        nxt = value
        if step is not None and math.isfinite(here) and (told is None or math.isfinite(told)):
            stepped = next_step(value, here, here if told is None else told, step)
            if stepped is None:
                raise SetpointRefused(
                    f"{self.name}: no step toward {value:g} is within max_step {step:g} of both "
                    f"its reading {here:g} and its last setpoint {told:g}: they are "
                    f"{abs(here - (told or 0.0)):g} apart, more than twice max_step (the device "
                    "has not followed its last move), so any step would be larger than "
                    f"max_step {step:g}; refused"
                )
            nxt = _whole(stepped, value, here) if whole else stepped
        try:
            check_setpoint(
                self.name,
                nxt,
                limits=self.decl.limits,
                max_step=step,
                current=lambda: here,
                device_limits=self.device_limits,
                device_source=self._device_limits_source,
                commanded=lambda: told,
            )
        except SetpointRefused as exc:
            if nxt == value:
                raise
            spans = [s for s in (self.decl.limits, self.device_limits) if s is not None]
            outside = any(not lo <= here <= hi for lo, hi in spans)
            raise SetpointRefused(
                f"{self.name}: it reads {here:g}, and the step toward {value:g} within "
                f"max_step {step:g} is refused: {str(exc).removeprefix(f'{self.name}: ')}"
                + (" (bring it back within its limits by hand)" if outside else "")
            ) from None
        return nxt

    def _put_and_wait(self, value: Any, deadline: float, cancel: threading.Event) -> None:
        """One move: put ``value`` (already checked) and wait, until ``deadline``, for what
        says it was taken (the put's completion and the setpoint read back, a motor's DMOV,
        a plugin's status) and for the readback within ``tolerance`` when one is declared."""
        target = self._target(value)
        if self._signal is not None:
            # Without a tolerance nothing else says the IOC took the value: the put
            # waits for its completion, then the setpoint PV is read back. A refused
            # write (access security, a disabled record, a device-support error) was
            # stored as a completed trial at the old value (found in review). With a
            # tolerance the readback is the test, as before: a record whose completion
            # comes late must not fail a move that is already there.
            taken = threading.Event() if self.decl.tolerance is None else None
            with self._fence(cancel):  # not after a stop, nor after the safe state
                if taken is None:
                    self._signal.put(target, force=True, use_complete=False)
                else:
                    self._signal.put(target, force=True, use_complete=True, callback=_setter(taken))
                self._last_written = _number_or_none(value)
            if taken is not None:
                self._wait_put(taken, value, target, deadline, cancel)
        else:

            def start() -> Any:
                # told to go there even if the call then fails or times out
                self._last_written = _number_or_none(value)
                return call_device(
                    self._positioner, "set", target, timeout=_left(deadline), cancelled=cancel
                )

            # the call that starts the move is fenced; waiting for its status is not
            with self._fence(cancel):
                moving = self._within(deadline, value, start)
            if not is_async_device(self._positioner):  # an async one's was awaited
                failed: Exception | None = None
                try:
                    self._within(
                        deadline,
                        value,
                        lambda: _wait_status(
                            moving, _left(deadline), cancel, what=self.what, method="set"
                        ),
                    )
                    if self.decl.motor is not None:
                        self._within(deadline, value, self._motor_done, deadline, cancel)
                except Exception as exc:
                    failed = self._motor_failure(exc, value, cancel)
                if failed is not None:  # raised here: no ophyd text as its context
                    raise failed
        if self.decl.tolerance is not None:
            self._arrive(float(value), None, deadline, cancel)

    def _wait_put(
        self,
        taken: threading.Event,
        value: Any,
        target: Any,
        deadline: float,
        cancel: threading.Event,
    ) -> None:
        """Wait for the IOC's put completion of ``value`` (``target`` at the device) until
        ``deadline``, then read the setpoint PV back: an IOC answers a refused put-notify
        with a failure status, which pyepics and caproto's client hand to the callback as a
        completion all the same. A stop ends the wait."""
        while not taken.wait(_POLL):
            if cancel.is_set():
                raise InstrumentError(f"{self.name}: stopped while moving")
            if time.monotonic() > deadline:
                raise DeviceTimeout(
                    f"{self.name} (PV {self.write_pv}): "
                    + _not_completed(self._signal, value, self.decl.timeout)
                )
        signal: Any = self._signal  # only a setpoint PV is put with completion
        held = _setpoint_now(signal, timeout=max(_left(deadline), 1.0))
        if isinstance(held, int | float) and isinstance(target, int | float):
            if not math.isclose(float(held), float(target), rel_tol=1e-6, abs_tol=1e-12):
                raise SetpointNotTaken(
                    f"{self.name} (PV {self.write_pv}): the IOC completed the put of "
                    f"{float(target):g} but holds {float(held):g}: it refused or clipped the "
                    "write (a disabled record, access security, its own drive limits)"
                )

    def _motor_failure(self, exc: Exception, value: Any, cancel: threading.Event) -> Exception:
        """A motor's failed move said with what the record says of itself: ``EpicsMotor``
        fails a move that ended on a limit switch or in alarm with a bare
        ``UnknownStatusFailure`` ("update the Device to use set_exception"), and a move that
        never ends (a stalled stage: DMOV stays 0) times out without saying where the stage
        is. ``exc`` as it is for any other input, a stopped move, or a lost connection."""
        if self.decl.motor is None or cancel.is_set() or self._lost():
            return exc
        state = self._motor_state()
        if isinstance(exc, TimeoutError):
            if not state:
                return exc
            err = DeviceTimeout(f"{exc} ({state})")
            err.__cause__ = exc.__cause__
            return err
        motor = self._positioner
        why = []
        for signal, switch in ((motor.high_limit_switch, "high"), (motor.low_limit_switch, "low")):
            with contextlib.suppress(Exception):
                if signal.get(use_monitor=False, timeout=1.0):
                    why.append(f"on its {switch} limit switch ({switch[0].upper()}LS)")
        with contextlib.suppress(Exception):
            severity = int(motor.user_readback.alarm_severity)
            if severity:
                names = {1: "MINOR", 2: "MAJOR", 3: "INVALID"}
                status = getattr(motor.user_readback.alarm_status, "name", "")
                why.append(
                    f"its readback in a {names.get(severity, severity)} alarm"
                    + (f" ({status})" if status else "")
                )
        if not why:
            return exc
        return MotorFault(
            f"{self.name}: the motor ended its move to {float(value):g} short of it, "
            f"{' and '.join(why)} ({state})"
        )

    def _motor_done(self, deadline: float, cancel: threading.Event) -> None:
        """Wait until the motor record itself says its move is done: DMOV 1, read from the
        IOC now (after this move's put, on the same connection, so about this move).

        ``EpicsMotor`` finishes a move's status at the first DMOV 0 -> 1 its monitor
        callbacks see. The 1 that ended the move before (a STOP after an aborted or failed
        trial), still waiting in ophyd's callback queue when the next move starts, finishes
        the new move's status at once: the trial then measured a stage still on its way
        (found over Channel Access: a readback of 14 for a move to 10, the stage moving
        down from 20, on a loaded machine).

        Raises:
            TimeoutError: still moving at ``deadline``.
            InstrumentError: the move was stopped meanwhile.
        """
        done = self._positioner.motor_done_move
        while True:
            wait = min(max(_left(deadline), 1.0), 5.0)  # a read's own time, even at the end
            if done.get(use_monitor=False, timeout=wait) == 1:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the motor still says it is moving (DMOV 0)")
            if cancel.wait(_POLL):
                raise InstrumentError(f"{self.name}: stopped while moving")

    def _motor_state(self) -> str:
        """``motor P at 20 mm (RBV), still moving (DMOV 0)``: for a failed move's message;
        best effort (empty if the record does not answer within a second)."""
        motor = self._positioner
        try:
            rbv = float(self._from_device(motor.user_readback.get(use_monitor=False, timeout=1.0)))
            done = motor.motor_done_move.get(use_monitor=False, timeout=1.0)
        except Exception:
            return ""
        units = f" {self.units}" if self.units else ""
        moving = "still moving (DMOV 0)" if not done else "not moving (DMOV 1)"
        return f"motor {self.write_pv} at {rbv:g}{units} (RBV), {moving}"

    def _within(self, deadline: float, value: Any, step: Callable[..., Any], *args: Any) -> Any:
        """``step(*args)`` (given the deadline, it waits no longer), its ``TimeoutError``
        at the deadline said as the move's: which input, where to, and its ``timeout``.
        A device's own timeout, raised before the deadline, keeps its words."""
        try:
            return step(*args)
        except TimeoutError as exc:
            if _left(deadline) > 0:
                raise
            raise DeviceTimeout(
                f"{self.name}: move to {value!r} not done within {self.decl.timeout:g} s"
            ) from exc


# ---------------------------------------------------------------------------- outputs
@dataclass
class _Output:
    """One declared output: how to read it, and its value as the engine stores it.

    ``timeout`` bounds a plugin's ``read``: it runs on the RunEngine's thread (and in
    interlock checks), so a device that never answers must not hold the run past it.
    """

    name: str
    decl: OutputDecl
    target: Any
    source: str
    from_device: Callable[[Any], Any]
    timeout: float
    # A plugin's: the field of its reading that is the output (its `key:`, else its hinted
    # field, else its only field) and how it was chosen, once connected (resolve_key);
    # why none can be chosen and how to choose; the field it used to read when another
    key: str | None = None
    key_how: str = ""
    key_problem: str | None = None
    key_fix: str = ""
    key_note: str | None = None
    meta: DeviceMeta | None = None  # that field's describe() entry, its unit and limits
    # A campaign stored before outputs followed hints (build_declared_instrument's
    # ``first_field_outputs``): without `key:`, its first field, as its stored trials were
    # read; switching field mid-campaign would mix two quantities in one objective.
    first_field: bool = False

    def resolve_key(self, timeout: float) -> None:
        """Choose which field of a plugin's reading is this output, once it is connected,
        from its ``describe()`` keys (else a ``read()``'s) and its hints, and keep that
        field's ``describe()`` entry for :meth:`OutputDetector.describe`.

        Sets :attr:`key_problem` (nothing raised: ``check()`` lists it, ``connect()``
        refuses it) when several fields are read and none, or several, are hinted; and
        :attr:`key_note` when the field chosen is not the first, which closedloop read
        before it followed hints: the file may have relied on that. With
        :attr:`first_field` (a campaign stored back then) the first field is read as its
        stored trials were, and :attr:`key_note` says what a new campaign reads instead.

        Raises:
            InstrumentError: a plugin without ``describe()`` whose ``read()`` fails (the
                check row says so).
        """
        if self.decl.device is None:
            return
        described = _describe(self.target, timeout, self.what)
        if described:
            fields = list(described)
        else:
            reading = call_device(self.target, "read", timeout=timeout)
            _check_reading(reading, self.what)
            fields = [str(k) for k in reading]
        self.key_problem = self.key_note = None
        key: str | None
        if self.decl.key is not None:
            key, how = self.decl.key, "its `key:`"
        elif self.first_field and fields:
            key, how = fields[0], "its first field, read so when this campaign was stored"
            self.key_note = self._stored_note(fields)
        else:
            key, how = _output_key(fields, hinted_fields(self.target))
            if key is None:
                self.key_problem, self.key_fix = self._ambiguous(how, fields)
            elif key != fields[0]:
                self.key_note = (
                    f"closedloop read its first field, {fields[0]}, before it followed "
                    f"hints; to keep reading that, set `key: {fields[0]}` under "
                    f"outputs.{self.name}"
                )
        if key is not None and key not in fields:
            # `instruments check` said so, and `run` moved the inputs and failed every
            # trial until max_failures (found in review)
            near = difflib.get_close_matches(key, fields, n=1)
            self.key_problem = f"{self.what}: its `key: {key}` is none of its fields ({fields})"
            self.key_fix = f"set `key:` under outputs.{self.name} to " + (
                f"{near[0]} (did you mean it?)" if near else "one of them"
            )
        self.key, self.key_how = key, how
        entry = (described or {}).get(key, {}) if key is not None else {}
        shape = entry.get("shape") if isinstance(entry, Mapping) else None
        if self.key_problem is None and isinstance(shape, list | tuple) and len(shape) > 0:
            self.key_problem = (
                f"{self.what}: field {key} reads an array (shape {list(shape)}), and an "
                "output is one number"
            )
            self.key_fix = (
                f"set `key:` under outputs.{self.name} to a field that reads one number, or "
                "reduce the array to one in the device (a sum, a peak)"
            )
        units, units_from, limits, limits_from = _entry_units_limits(entry, key)
        self.meta = DeviceMeta(key, entry, units, units_from, limits, limits_from)

    def _stored_note(self, fields: Sequence[str]) -> str | None:
        """What a new campaign would read instead of ``fields[0]`` (this stored campaign
        keeps reading it), and the ``key:`` that keeps it there; ``None``: the same field."""
        key, how = _output_key(fields, hinted_fields(self.target))
        if key == fields[0]:
            return None
        instead = f"reads {how}, {key}" if key is not None else f"is refused ({how})"
        return (
            f"a new campaign {instead}: set `key: {fields[0]}` under outputs.{self.name} "
            f"in its instrument file to keep reading {fields[0]}"
        )

    def _ambiguous(self, why: str, fields: Sequence[str]) -> tuple[str, str]:
        """``(problem, fix)``: why no field of the reading can be taken as the output, and
        how to choose one (``key:``; the first field is what closedloop used to read)."""
        return (
            f"{self.what}: {why}, so which one is the output is not known",
            f"set `key:` under outputs.{self.name} to one of them (`key: {fields[0]}` keeps "
            "what closedloop read before it followed hints: the first field)",
        )

    def _key_for(self, reading: Any) -> str:
        """The field of ``reading`` that is the output: the chosen :attr:`key`, else (not
        resolved: the instrument was built without connecting) chosen from it alike.

        Raises:
            InstrumentError: none can be chosen (naming the fields and ``key:``).
        """
        if self.decl.key is not None:
            return self.decl.key
        if self.key is not None:
            return self.key
        _check_reading(reading, self.what)
        fields = [str(k) for k in reading]
        if self.first_field and fields:
            return fields[0]
        key, how = _output_key(fields, hinted_fields(self.target))
        if key is None:
            raise InstrumentError("; ".join(self._ambiguous(how, fields)))
        return key

    def read_raw(self, timeout: float | None = None) -> tuple[Any, float]:
        """``(value as the device gives it, timestamp)``, within ``timeout`` s (default:
        the file's ``connection_timeout``) for a plugin device.

        Raises:
            DeviceTimeout: an ophyd-async plugin did not answer in time.
        """
        if self.decl.pv is not None:
            value = self.target.get()
            self._refuse_alarm()
            if isinstance(value, float) and not math.isfinite(value):
                # from a PV: a detector or beam glitch far more often than the point's own
                # value; retried, and learned as failing only if the retry reads one too
                # (found in review: learned at once, as a function's NaN is)
                raise OutputInAlarm(
                    f"output {self.name!r}: PV {self.target.pvname} read {value}, not a "
                    "reading (a transient failure)"
                )
            return value, time.time()
        limit = self.timeout if timeout is None else timeout
        try:
            reading = call_device(self.target, "read", timeout=limit)
        except DeviceBusy as exc:
            raise DeviceBusy(f"{self.what}: {exc}") from None
        except DeviceTimeout as exc:
            which = " (the file's connection_timeout)" if timeout is None else ""
            raise DeviceTimeout(
                f"output {self.name!r}: device {self.decl.device} did not answer a read within "
                f"{limit:g} s{which}"
            ) from exc
        return _first_value(reading, self._key_for(reading), what=self.what)

    def _refuse_alarm(self) -> None:
        """Raise :class:`OutputInAlarm` when the PV's alarm severity, as the read just
        fetched it (ophyd reads the value with its alarm), is worse than ``max_alarm``. An
        INVALID ``det:counts`` was stored and learned as a good reading (found in review)."""
        severity = int(getattr(self.target, "alarm_severity", 0) or 0)
        if severity <= _SEVERITIES.index(self.decl.max_alarm):
            return
        status = getattr(getattr(self.target, "alarm_status", None), "name", "")
        raise OutputInAlarm(
            f"output {self.name!r}: PV {self.target.pvname} is in {_SEVERITIES[severity].upper()}"
            f" alarm{f' ({status})' if status else ''}, worse than its max_alarm "
            f"{self.decl.max_alarm}: the reading is not taken"
        )

    @property
    def what(self) -> str:
        """How errors name this output: ``output 'y' (device mylab:Camera)``."""
        return f"output {self.name!r}" + (
            f" (device {self.decl.device})" if self.decl.device else ""
        )

    def value(self, timeout: float | None = None) -> Any:
        """The reading in the campaign's units (``units``), under ``key``: what a trial stores."""
        return self.from_device(self.read_raw(timeout)[0])


class OutputDetector:
    """All outputs of the instrument as one triggerable detector."""

    parent = None

    def __init__(
        self, name: str, spec: InstrumentFile, prefix: str, *, first_field: bool = False
    ) -> None:
        """``first_field``: plugin outputs without ``key:`` read their first field, as a
        campaign stored before outputs followed hints was read (:attr:`_Output.first_field`)."""
        from ophyd import EpicsSignal, EpicsSignalRO

        self.name = name
        self.acquire_decl = spec.acquire
        self._acquire: Any = None
        self._done: Any = None
        self._cancel = threading.Event()
        if spec.acquire is not None and spec.acquire.pv is not None:
            self._acquire = EpicsSignal(prefix + spec.acquire.pv, name=f"{name}_acquire")
            if spec.acquire.done is not None:
                self._done = EpicsSignalRO(prefix + spec.acquire.done.pv, name=f"{name}_done")
        self.outputs: list[_Output] = []
        self._plugins: list[_Output] = []
        for out_name, decl in spec.outputs.items():
            _, from_device = converter(decl.units, decl.device_units)
            target: Any
            if decl.pv is not None:
                target = EpicsSignalRO(prefix + decl.pv, name=out_name, auto_monitor=False)
                source = f"PV:{prefix + decl.pv}"
            elif decl.device is not None:
                target = _make_plugin(
                    decl.device, decl.args, out_name, spec=spec, section="outputs"
                )
                source = f"device:{decl.device}"
            else:  # the schema requires one of them
                raise InstrumentConfigError(f"output {out_name!r} has neither `pv:` nor `device:`")
            out = _Output(
                out_name,
                decl,
                target,
                source,
                from_device,
                spec.connection_timeout,
                first_field=first_field,
            )
            self.outputs.append(out)
            if decl.device is not None:
                self._plugins.append(out)

    def trigger_note(self) -> str:
        """What a ``trigger`` does at the hardware, for ``plan --dry-run``."""
        steps = [f"triggers device {o.decl.device}" for o in self._plugins]
        decl = self.acquire_decl
        if decl is not None and self._acquire is not None:
            how = " with put-completion" if decl.put_complete else ""
            steps.append(f"writes {decl.value!r} to PV {self._acquire.pvname}{how}")
            if decl.done is not None and self._done is not None:
                steps.append(f"waits until PV {self._done.pvname} reads {decl.done.value!r}")
        if not steps:
            return "starts nothing: the outputs are read as they are"
        return f"{', then '.join(steps)} (at most {self.timeout:g} s in all)"

    def read_note(self) -> str:
        """What a ``read`` reads at the hardware, for ``plan --dry-run``."""
        return "reads " + ", ".join(
            f"{o.name} from {o.source.replace('PV:', 'PV ').replace('device:', 'device ')}"
            for o in self.outputs
        )

    def pvs(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = [(o.name, o.target) for o in self.outputs]
        if self._acquire is not None:
            rows.append(("acquire", self._acquire))
        if self._done is not None:
            rows.append(("acquire.done", self._done))
        return rows

    def trigger(self) -> Status:
        status = _ExplainedStatus(self, "detector")
        cancel = self._cancel = threading.Event()  # this acquisition's; stop() sets it
        threading.Thread(
            target=self._acquire_now,
            args=(status, cancel),
            name=f"acquire-{self.name}",
            daemon=True,
        ).start()
        return status

    @property
    def timeout(self) -> float:
        """Seconds one acquisition may take: the file's ``acquire.timeout`` (given without a
        ``pv:`` by a file whose detectors are all plugins); else, with no ``acquire`` at
        all, an hour: a slow camera must not fail at a default its file never chose. The
        campaign's ``instrument.timeout`` still bounds the whole trial."""
        if self.acquire_decl is not None:
            return self.acquire_decl.timeout
        return _PLUGIN_ACQUIRE_TIMEOUT

    def _acquire_now(self, status: Status, cancel: threading.Event) -> None:
        """Trigger the plugin detectors, then the acquire PV, all within one ``timeout``
        from the start: the README promises a failed trial for an acquisition not done
        within its timeout, not for each step of it.

        Every wait (put-completion, the done PV) watches the connection of the acquisition's
        PVs and the stop flag as well as the deadline: an IOC lost mid-acquisition fails the
        trial at once, naming the PV (not as a timeout at ``acquire.timeout``, by when the PV
        may be back), and an aborted trial's acquisition ends with it."""
        timeout = self.timeout
        deadline = time.monotonic() + timeout
        try:
            for out in self._plugins:
                dev = out.target
                if hasattr(dev, "trigger"):
                    try:
                        _finish(dev, "trigger", None, deadline, cancel, what=out.what)
                    except TimeoutError as exc:
                        # given up on: stopped, or it refuses the next trial's trigger
                        self._stop_plugin(out)
                        if _left(deadline) > 0:  # the device's own timeout: its words
                            raise
                        raise DeviceTimeout(
                            f"acquisition not complete within {timeout:g} s (plugin detector "
                            f"{getattr(dev, 'name', dev)!r} still triggering)"
                        ) from exc
            decl = self.acquire_decl
            if decl is not None and self._acquire is not None:
                done = threading.Event()
                if cancel.is_set():  # stopped while the plugins triggered: start nothing
                    raise InstrumentError("stopped before the acquisition")
                if decl.put_complete:
                    self._acquire.put(decl.value, use_complete=True, callback=_setter(done))
                    late = (
                        f"acquisition not complete within {decl.timeout:g} s "
                        f"({self._acquire.pvname})"
                    )
                    while not done.wait(_POLL):
                        self._still_acquiring(cancel, deadline, late)
                else:
                    self._acquire.put(decl.value, use_complete=False)
                if decl.done is not None:
                    late = (
                        f"{self._done.pvname} did not reach {decl.done.value!r} within "
                        f"{decl.timeout:g} s"
                    )
                    while True:
                        self._still_acquiring(cancel, deadline, late)
                        if _equal(self._done.get(), decl.done.value):
                            break
                        cancel.wait(_POLL)
        except Exception as exc:
            status.set_exception(_named_loss(exc, self._lost(), self._pvs()))
        else:
            status.set_finished()

    def _still_acquiring(self, cancel: threading.Event, deadline: float, late: str) -> None:
        """One check while an acquisition is waited for.

        Raises:
            DeviceConnectionError: a PV of the acquisition (or an output PV) disconnected.
            InstrumentError: the acquisition was stopped (its trial aborted or timed out).
            TimeoutError: ``deadline`` passed (``late`` says what was not done).
        """
        lost = self._lost()
        if lost:
            # the acquisition's own PVs first: the one the trial was waiting on
            own = [t.pvname for t in (self._acquire, self._done) if t is not None]
            lost = [pv for pv in own if pv in lost] + [pv for pv in lost if pv not in own]
            raise DeviceConnectionError(
                f"lost the connection to PV {', '.join(lost)} during the trial"
            )
        if cancel.is_set():
            raise InstrumentError("stopped while acquiring")
        if time.monotonic() > deadline:
            raise TimeoutError(late)

    def stop(self, *, success: bool = False) -> None:
        """End an acquisition: the wait for it, and each plugin detector's own (``stop()``).

        The dispatcher calls this after an abort or a timeout; a plugin detector left
        acquiring (a camera mid-exposure) would refuse the next trial's trigger.
        """
        self._cancel.set()
        for out in self._plugins:
            self._stop_plugin(out, success=success)

    def _stop_plugin(self, out: _Output, *, success: bool = False) -> None:
        """``stop()`` one plugin detector, within ``_STOP_TIMEOUT``; errors logged (the
        trial's outcome is already decided)."""
        if not hasattr(out.target, "stop"):
            return
        try:
            call_device(out.target, "stop", success=success, timeout=_STOP_TIMEOUT)
        except Exception as exc:
            logger.warning("stopping %s failed: %s", out.what, exc)

    def _pvs(self) -> list[str]:
        return [pv for _, t in self.pvs() if (pv := getattr(t, "pvname", None))]

    def _lost(self) -> list[str]:
        """The PVs of the outputs and the acquisition that are disconnected now."""
        return [
            pv
            for _, t in self.pvs()
            if (pv := getattr(t, "pvname", None)) and not getattr(t, "connected", True)
        ]

    def read(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for o in self.outputs:
            raw, ts = o.read_raw()
            out[o.name] = {"value": o.from_device(raw), "timestamp": ts}
        return out

    def describe(self) -> dict[str, Any]:
        """Each output's data key; a plugin's keeps its own ``describe()`` entry of the
        field it is read from (:func:`_own_data_key`), as read when it connected."""
        keys: dict[str, Any] = {}
        for o in self.outputs:
            key: dict[str, Any] = {"source": o.source, "dtype": "number", "shape": []}
            if o.decl.units:
                key["units"] = o.decl.units
            if o.meta is not None:
                convert = o.from_device if _converts(o.from_device) else None
                key.update(_own_data_key(o.meta, o.decl.units, convert))
            keys[o.name] = key
        return keys

    @property
    def hints(self) -> dict[str, list[str]]:
        """Every output is an interesting field (bluesky's per-device hints)."""
        return {"fields": [o.name for o in self.outputs]}

    def read_configuration(self) -> dict[str, Any]:
        return {}

    def describe_configuration(self) -> dict[str, Any]:
        return {}


def _named_loss(exc: Exception, lost: Sequence[str], own: Sequence[str] = ()) -> Exception:
    """An error during a move or an acquisition, naming the PVs that dropped out meanwhile.

    A lost connection surfaces as whatever the client library raised at that moment (a
    ``BrokenPipeError``, a timeout); the operator needs the PV's name. The error is a
    :class:`DeviceConnectionError` (so a ``ConnectionError``: transient, worth a retry once
    the PV is back), caused by the original. ``lost``: the PVs seen disconnected now;
    ``own``: the device's PVs, named when the client has not yet noticed which dropped out.
    """
    if not lost and not isinstance(exc, ConnectionError):
        return exc
    if isinstance(exc, DeviceConnectionError):
        return exc
    what = ", ".join(lost or own) or "a PV"
    err = DeviceConnectionError(f"lost the connection to PV {what} during the trial")
    err.__cause__ = exc
    return err


def _connect(target: Any, timeout: float) -> None:
    """Wait until a PV or plugin device is connected (an ophyd-async one on the device loop).

    The device gets ``timeout`` itself (ophyd-async's ``connect`` otherwise waits its own
    default, 10 s, whatever ``connection_timeout`` says) and is given up on shortly after.
    """
    if is_async_device(target) and hasattr(target, "connect"):
        method = "connect"
    elif hasattr(target, "wait_for_connection"):
        method = "wait_for_connection"
    else:
        return
    fn = getattr(target, method)
    if _takes(fn, "timeout"):
        fn = functools.partial(fn, timeout=timeout)
    _call(target, method, fn, timeout + _CONNECT_GRACE)


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` accepts a keyword ``name`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == name and p.kind is not p.POSITIONAL_ONLY or p.kind is p.VAR_KEYWORD
        for p in params
    )


def _pv_row(name: str, role: str, signal: Any, timeout: float, deadline: float) -> CheckRow:
    """A check row for a PV read as it is (acquisition, safe state): connected and value."""
    row = CheckRow(name, role, f"PV:{signal.pvname}", False)
    if _connect_row(row, signal, timeout, deadline):
        try:
            row.value = signal.get()
        except Exception as exc:
            row.problem = f"{type(exc).__name__}: {exc}"
    return row


def _connect_row(row: CheckRow, target: Any, timeout: float, deadline: float) -> bool:
    """Connect ``target`` for ``row``; whether it can be read now.

    Channel Access searches for every PV from the moment its signal is made, all at once,
    so an EPICS target waits only until the check's shared ``deadline`` (``timeout`` from
    its start; at least :data:`_LAST_LOOK` s): six PVs of a missing IOC took 6 x 3 s, one
    after another (found in review). A plugin's ``connect`` does its own work, so it gets
    the whole ``timeout``.

    A device whose Channel Access channels all connected but which did not finish
    connecting in time (ophyd waits for each PV's first value and metadata too) is
    connected, slow: said so (``row.slow``), not "cannot connect" (found in review: an
    IOC that answered reads after 3 s had both inputs listed as not connected). One that
    did not connect names the PVs that did not (the client's error repeated "searching"
    for each).
    """
    channels = _channels(target)
    wait = max(deadline - time.monotonic(), _LAST_LOOK) if channels else timeout
    try:
        _connect(target, wait)
    except Exception as exc:
        row.problem = f"{type(exc).__name__}: {exc}"
        missing = [str(getattr(pv, "pvname", pv)) for pv in channels if not _up(pv)]
        if channels and not missing:
            row.connected = row.slow = True
            row.problem = (
                f"its PVs are connected but did not answer their first reads within "
                f"{timeout:g} s ({row.problem})"
            )
        elif missing:
            row.problem = (
                f"PV {', '.join(dict.fromkeys(missing))} did not connect within {timeout:g} s"
                + _NO_ANSWER_TEXT
            )
        return False
    row.connected = True
    return True


_NO_ANSWER_TEXT = (
    " (no IOC answered its search: check the name, that the IOC runs, and EPICS_CA_ADDR_LIST)"
)
_NO_ANSWER = re.compile(re.escape(_NO_ANSWER_TEXT) + "$")
"""The hint a PV that did not connect carries (``check`` shows it per PV; ``connect``,
naming several, once)."""

#: Seconds an EPICS target of ``instruments check`` is still given once the check's shared
#: connection deadline has passed (its PV may have connected meanwhile; ophyd then still
#: reads its first value).
_LAST_LOOK = 0.2


def _up(pv: Any) -> bool:
    return bool(getattr(pv, "connected", False))


def _channels(target: Any) -> list[Any]:
    """The Channel Access channels of an ophyd signal or device (none for a plugin)."""
    walk = getattr(target, "walk_signals", None)
    try:
        signals = [w.item for w in walk()] if callable(walk) else [target]
        return [
            pv
            for sig in signals
            for pv in (getattr(sig, "_read_pv", None), getattr(sig, "_write_pv", None))
            if pv is not None
        ]
    except Exception:
        return []


def _channels_connected(target: Any) -> bool:
    """Whether every Channel Access channel of an ophyd signal or device is connected
    (``False`` for a device without any, such as a plugin)."""
    pvs = _channels(target)
    return bool(pvs) and all(_up(pv) for pv in pvs)


def _pv_device_limits(signal: Any) -> tuple[float, float] | None:
    """A PV's control limits (DRVL/DRVH), or ``None`` (none: ``(0, 0)``, or not known)."""
    try:
        low, high = (float(x) for x in signal.limits)
    except Exception:
        return None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        return None
    return (low, high)


_NUMERIC_TYPES = frozenset({"short", "int", "float", "char", "long", "double"})


def _pv_type_problem(pv: Any) -> str | None:
    """What makes a connected control-layer PV unfit for a number (``an ENUM PV (states
    Off, Low, High)``, ``a STRING PV``, ``an array of 10``), or ``None``; ``None`` too when
    its type is not known (not connected yet, or a control layer that does not say)."""
    try:
        kind = getattr(pv, "type", None)
        count = getattr(pv, "count", None)
    except Exception:
        return None
    if kind is None:
        return None
    name = str(getattr(kind, "name", kind)).lower()  # caproto: ChannelType; pyepics: text
    for prefix in ("time_", "ctrl_", "sts_", "gr_"):
        name = name.removeprefix(prefix)
    if name not in _NUMERIC_TYPES:
        text = f"a{'n' if name[:1] in 'aeiou' else ''} {name.upper()} PV"
        if name == "enum":
            try:
                states = [str(x) for x in (getattr(pv, "enum_strs", None) or ())]
            except Exception:
                states = []
            if states:
                text += f" (states {', '.join(states)})"
        return text
    if isinstance(count, int) and count > 1:
        return f"an array of {count} {name.upper()} values"
    return None


def _pv_limits_problem(signal: Any, value: float) -> str | None:
    """Why ``value`` (a safe state) is outside an ``on_stop`` PV's control limits
    (DRVL/DRVH), which would refuse or clamp it; ``None``: within them, or none ((0, 0))."""
    limits = _pv_device_limits(signal)
    if limits is None or limits[0] <= value <= limits[1]:
        return None
    low, high = limits
    return (
        f"{value:g} is outside [{low:g}, {high:g}], the control limits DRVL/DRVH of PV "
        f"{signal.pvname}, which would refuse or clamp it when the campaign stops"
    )


def _whole(nxt: float, value: float, here: float) -> float:
    """An int's ramp step ``nxt`` toward ``value`` from the reading ``here`` as a whole
    number, rounded toward the device so that it is no further from it; ``value`` itself
    is left as it is."""
    if nxt == value:
        return nxt
    return float(math.floor(nxt) if value > here else math.ceil(nxt))


def _room(nxt: float, last: float, target: float, step: float, here: float, until: float) -> bool:
    """Whether a ramp writes its next step ``nxt`` now, after ``last``: when it gains at
    least a quarter of ``max_step`` toward ``target``. Less, and the ramp waits (until
    ``until``, a ``time.monotonic()``) for the device to make room: counted as arrived
    within a tolerance near ``max_step``, a device that had barely moved got a burst of
    steps a few thousandths apart (found in review), and a smaller arrival test failed one
    that settles that far off its setpoint (found in the next review).

    Raises:
        SetpointNotTaken: the device went back against the ramp (the next step would be
            further from ``target`` than the last), or made no room by ``until``:
            transient, the device's doing and not the point's.
    """
    gain = abs(target - last) - abs(target - nxt)
    if gain >= step / 4:
        return True
    if gain < 0 or time.monotonic() > until:
        raise SetpointNotTaken(f"its readback {here:g} has not followed the step to {last:g}")
    return False


def _same_kind(exc: Exception, message: str, *, transient: bool | None = None) -> Exception:
    """``exc``'s class with ``message`` (a ramp's failure said with how far it got), so the
    failure keeps its kind: wrapped in a plain ``InstrumentError``, a step that timed out
    was counted as "InstrumentError" rather than "timeout" (found in review). An
    ``InstrumentError`` when the class will not take a message alone. ``transient``, when
    given, is set on it (``instruments._dispatch.is_transient`` reads it first)."""
    again: Exception = InstrumentError(message)
    if isinstance(exc, InstrumentError | TimeoutError | ConnectionError):
        with contextlib.suppress(Exception):  # else a constructor of its own: the plain one
            again = type(exc)(message)
    if transient is not None:
        again.transient = transient  # type: ignore[attr-defined]
    return again


def _number_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (a choice's text, a bool, NaN)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _egu_disagreement(pvs: Sequence[tuple[str, Any]]) -> str | None:
    """An input's setpoint and readback PVs naming units pint tells apart (``mm`` and
    ``um``): no ``device_units`` fits both, and the advice for each alone sent the author
    back and forth (found in review: "set device_units: um", then "set device_units: mm")."""
    from instruments._instrument_file import unit_of, unit_registry

    ureg = unit_registry()
    units = []
    for what, egu in pvs:
        text = (egu.decode(errors="replace") if isinstance(egu, bytes) else str(egu or "")).strip()
        try:
            units.append((what, text, unit_of(text)))
        except Exception:
            return None  # an EGU pint does not know: not judged
    (a, a_text, a_unit), (b, b_text, b_unit) = units
    if a_unit.dimensionality != b_unit.dimensionality or math.isclose(
        ureg.Quantity(1.0, a_unit).to(b_unit).magnitude, 1.0, rel_tol=1e-12
    ):
        return None
    return (
        f"{a} is in {a_text!r} and {b} in {b_text!r} (their EGUs): no `device_units` fits "
        "both; make the records' EGU agree (or read back through a PV in the setpoint's unit)"
    )


def _pv_units(pv: Any) -> Any:
    """A connected control-layer PV's engineering unit (EGU), as its control metadata gave
    it when it connected; ``None`` when not connected or not known (never waits for one)."""
    try:
        if not getattr(pv, "connected", False):
            return None
        return getattr(pv, "units", None)
    except Exception:
        return None


def _equal(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


# ---------------------------------------------------------------------------- instrument
@dataclass
class CheckRow:
    """One line of ``closedloop instruments check``."""

    name: str
    role: str
    source: str
    connected: bool
    value: Any = None
    limits: tuple[float, float] | None = None
    units: str | None = None
    problem: str | None = None
    # an input's device's own limits in campaign units (a setpoint PV's DRVL/DRVH, a motor's
    # LLM/HLM), when it has any: the range the device itself takes, next to the file's
    device_limits: tuple[float, float] | None = None
    # worth knowing, not a problem (``instruments check`` still exits 0)
    note: str | None = None
    # connected, but its first reads did not answer in time (``problem`` says so)
    slow: bool = False
    # the input whose device this row reads too (an input's safe state): its connection is
    # that input's, reported with that input's row
    follows: str | None = None


@dataclass(frozen=True)
class SafeStateFailure:
    """One ``on_stop`` value that could not be written (or, approached in steps under
    ``max_step``, was not reached): see :meth:`DeclaredInstrument.safe_state`.

    Attributes:
        key: the ``on_stop`` key as the file writes it: an input's name, or a PV's name
            without the file's prefix.
        value: the value it was to get (campaign units for an input).
        target: what it was written to: ``PV LAB:R1:temp:SP`` (an input's setpoint PV,
            not its readback), ``motor LAB:R1:m1``, ``device mylab:Pump``, or the PV.
        error: why not, the exception's type first.
    """

    key: str
    value: float
    target: str
    error: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value:g} ({self.target}): {self.error}"


@dataclass
class DeclaredInstrument:
    """An instrument built from a file; satisfies :class:`instruments.Instrument`."""

    name: str
    spec: InstrumentFile
    inputs: dict[str, InputDevice]
    detector: OutputDetector
    gate: Gate
    safe_pvs: dict[str, Any] = field(default_factory=dict)
    # whether the inputs' ``bounds`` are the campaign's (``check`` then reports bounds that
    # reach outside a device's own limits); not for an instrument file checked on its own
    bounds_known: bool = False
    # what the last safe_state() (close()) could not write; empty: all written, or none yet
    safe_state_failures: tuple[SafeStateFailure, ...] = ()
    _closed: bool = False

    def plan_notes(self) -> tuple[list[str], list[str]]:
        """What ``plan --dry-run`` says happens around a trial's messages at the hardware:
        before the first write (the interlocks), at the end of every run (the RunEngine's
        stop of what it moved), and on any stop (the safe state)."""
        before = [
            f"before each write: interlock {c.interlock} is read (before the first, the trial "
            "waits while it does not hold; before a later step of a ramp, the trial fails)"
            for c in self.gate.checks
        ]
        # Bluesky stops every device a plan moved when it ends, a success too: harmless
        # for a motor that arrived, but a plugin pump's stop() may halt it (review U).
        after = [
            f"after the run, however it ends: the RunEngine stops what it moved: {key} "
            + (
                f"(writes 1 to {dev.write_pv}.STOP)"
                if dev.decl.motor
                else f"(calls stop(success=...) of device {dev.decl.device})"
            )
            for key, dev in self.inputs.items()
            if dev._positioner is not None and hasattr(dev._positioner, "stop")
        ]
        for key, value in self.spec.on_stop.items():
            dev = self.inputs.get(key)
            if dev is None:
                sig = self.safe_pvs.get(f"on_stop:{key}")
                where = f"PV {sig.pvname}" if sig is not None else key
                after.append(f"on any stop: writes {value!r} to {where}")
                continue
            where = (
                f"PV {dev.write_pv}"
                if dev.decl.setpoint
                else (f"motor {dev.write_pv}" if dev.decl.motor else f"device {dev.decl.device}")
            )
            steps = (
                f", in steps of at most max_step {dev.decl.max_step:g}"
                if dev.decl.max_step is not None
                else ""
            )
            unit = f" {dev.units}" if dev.units else ""
            after.append(f"on any stop: sets {key} = {value:g}{unit} through {where}{steps}")
        return before, after

    @property
    def detectors(self) -> tuple[OutputDetector, ...]:
        return (self.detector,)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.spec.outputs)

    def await_pvs(self, seconds: float) -> None:
        """For a dry run: give the inputs' PVs up to ``seconds`` in all to connect
        (:meth:`InputDevice.await_pv`); they connect side by side, so an IOC that answers
        costs milliseconds and one that does not ``seconds``."""
        deadline = time.monotonic() + seconds
        for device in self.inputs.values():
            device.await_pv(deadline)

    def connect(self, timeout: float | None = None) -> None:
        """Wait until every PV is connected, and check what the PVs say about themselves.

        An input whose setpoint or readback PV is not a number (an ENUM, a string) or speaks
        another unit (its EGU; a plugin's ``describe()`` units or ``egu``) than the file
        says is refused, and so is a safe state (``on_stop``) outside its device's own
        limits: the IOC would refuse or clamp it just when the campaign stops; and so is an
        input further than ``max_step`` from every setpoint a trial may ask for. Limits or
        bounds that reach outside a device's own limits are logged as a warning (setpoints
        outside them are refused before dispatch, each failing its trial). A plugin output
        whose reading has several fields, none (or several) hinted and no ``key:`` is
        refused; one read from its hinted field where it used to be read from its first is
        logged as a warning (a file may have relied on that), and so is one a stored
        campaign keeps reading from its first field (``first_field_outputs``) where a new
        campaign would not.

        Raises:
            DeviceConnectionError: naming every PV that did not connect, and, apart, every
                device whose PVs connected but did not answer its first reads in time.
            DeviceTypeError: naming every input PV (or plugin) of the wrong type or unit.
            InstrumentFileError: a plugin output that does not say which field it is, at the
                line of ``outputs.<name>``, naming its fields and the ``key:`` to add.
            DeviceLimitsError: naming every input no trial could move (``max_step``), else
                every safe state outside its device's limits.
        """
        rows = [r for r in self.check(timeout=timeout) if r.follows is None]
        missing = [r for r in rows if not r.connected]
        slow = [r for r in rows if r.connected and r.slow]
        if missing or slow:
            # each device's own reason; the EPICS hint only when a PV is among them
            epics = any(r.source.startswith("PV:") for r in missing)
            parts = []
            if missing:
                # Each PV's own words once, the search hint they share once: the same
                # parenthesis after every device made one line of ~2000 characters for an
                # IOC that was off (found in review).
                problems = [_NO_ANSWER.sub("", r.problem or "") for r in missing]
                searched = any(_NO_ANSWER.search(r.problem or "") for r in missing)
                parts.append(
                    "cannot connect "
                    + ", ".join(
                        f"{r.role} {r.name} ("
                        + (
                            problem
                            if problem.startswith("PV ")  # it names its PVs itself
                            else f"{r.source}" + (f": {problem}" if problem else "")
                        )
                        + ")"
                        for r, problem in zip(missing, problems, strict=True)
                    )
                    + (
                        "; no IOC answered their search: check the names, that the IOC runs, "
                        "and EPICS_CA_ADDR_LIST"
                        if searched
                        else "; check the IOC is running and EPICS_CA_ADDR_LIST"
                        if epics
                        else ""
                    )
                )
            if slow:
                parts.append(
                    "connected, but no answer in time from "
                    + ", ".join(f"{r.role} {r.name} ({r.source}: {r.problem})" for r in slow)
                    + "; check the IOC's load, or raise the file's connection_timeout"
                )
            raise DeviceConnectionError(f"instrument {self.name!r}: " + "; ".join(parts))
        # Found only now, but each is an input's declaration that does not fit its device:
        # named at that input's line, as a problem of the file is (it was the instrument:
        # line, or none; found in review).
        wrong = [(n, p) for n, dev in self.inputs.items() if (p := dev.type_problem()) is not None]
        if wrong:
            raise self.spec.error(
                f"instrument {self.name!r}: " + "; ".join(p for _, p in wrong),
                ("inputs", wrong[0][0]),
                kind=DeviceTypeError,
            )
        stuck = [
            (r.name, f"input {r.name!r}: {problem}")
            for r in rows
            if r.role == "input"
            and isinstance(r.value, int | float)
            and (problem := self.inputs[r.name].reach_problem(float(r.value))) is not None
        ]
        if stuck:
            raise self.spec.error(
                f"instrument {self.name!r}: " + "; ".join(p for _, p in stuck),
                ("inputs", stuck[0][0]),
                kind=DeviceLimitsError,
            )
        unkeyed = [o for o in self.detector.outputs if o.key_problem is not None]
        if unkeyed:
            first = unkeyed[0]
            others = "".join(f"; {o.key_problem}" for o in unkeyed[1:])
            raise self.spec.error(
                f"instrument {self.name!r}: {first.key_problem}{others}",
                ("outputs", first.name),
                fix=first.key_fix,
            )
        for out in self.detector.outputs:
            if out.key_note is not None:  # a file that relied on "the first field"
                logger.warning(
                    "%s: %s reads %s (%s); %s",
                    self.name,
                    out.what,
                    out.key,
                    out.key_how,
                    out.key_note,
                )
        unsafe = [
            (key, f"{'input' if key in self.inputs else 'on_stop PV'} {key!r}: {problem}")
            for key, value in self.spec.on_stop.items()
            if (problem := self._safe_state_problem(key, value)) is not None
        ]
        if unsafe:
            raise self.spec.error(
                f"instrument {self.name!r}: " + "; ".join(p for _, p in unsafe),
                ("on_stop", unsafe[0][0]),
                kind=DeviceLimitsError,
            )
        for name, dev in self.inputs.items():
            problem = dev.range_problem(dev.bounds if self.bounds_known else None)
            if problem is not None:
                logger.warning("%s: input %s: %s", self.name, name, problem)

    def _safe_state_problem(self, key: str, value: float) -> str | None:
        """Why ``on_stop`` ``key``'s ``value`` is outside its device's own limits."""
        dev = self.inputs.get(key)
        if dev is not None:
            return dev.safe_state_problem(value)
        sig = self.safe_pvs.get(f"on_stop:{key}")
        return None if sig is None else _pv_limits_problem(sig, value)

    def check(self, timeout: float | None = None) -> list[CheckRow]:
        """Connect every device and report name, PV, connected, value, limits, units and any
        problem (disconnected, outside its limits, an interlock that does not hold).

        Values are what a trial would see: inputs and outputs in the campaign's units (a
        plugin output's field as chosen, shown in its ``source`` with how: its ``key:``, its
        hinted field, its only field). Every ``on_stop`` value gets a row too, an input's named
        by the PV it is written to (its setpoint, not its readback): a safe state is only
        written when the campaign stops, so a misspelt PV, or a value the device's own
        limits would refuse, would otherwise go unnoticed until the moment it matters.
        Nothing is written or triggered.
        """
        timeout = self.spec.connection_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout  # every PV searches at once: one wait for all
        rows: list[CheckRow] = []
        for name, dev in self.inputs.items():
            row = CheckRow(
                name, "input", dev.source, False, limits=dev.decl.limits, units=dev.units
            )
            rows.append(row)
            if not _connect_row(
                row,
                dev._signal if dev._signal is not None else dev._positioner,
                timeout,
                deadline,
            ):
                continue
            try:
                dev.read_device_metadata(timeout)  # a plugin's own unit and limits
                row.problem = dev.type_problem()
                if row.problem is not None:  # its value is no number: shown as it is
                    row.value = dev._raw_readback(time.monotonic() + timeout)[0]
                    continue
                row.value = dev._readback(time.monotonic() + timeout)[0]
                if _number_or_none(row.value) is None:  # as a trial would say it
                    what = "finite" if isinstance(row.value, numbers.Real) else "a number"
                    row.problem = f"readback {name} = {row.value!r} is not {what}"
                    continue
                row.device_limits = dev.device_limits
                row.problem = dev.range_problem(dev.bounds if self.bounds_known else None)
                lim = dev.decl.limits
                if row.problem is None and lim is not None and not lim[0] <= row.value <= lim[1]:
                    row.problem = f"{row.value:g} is outside the limits [{lim[0]:g}, {lim[1]:g}]"
                bounds = dev.bounds if self.bounds_known else None
                if row.problem is None:
                    row.problem = dev.reach_problem(row.value)
                if lim is None and bounds is not None and not bounds[0] <= row.value <= bounds[1]:
                    # not a problem: a device at rest outside the range searched (a furnace
                    # at room temperature) is moved into it by the first trial; but a
                    # reading far outside may be a unit the file has wrong
                    row.note = (
                        f"{row.value:g} is outside the campaign's bounds "
                        f"[{bounds[0]:g}, {bounds[1]:g}] (the input declares no limits): "
                        "the first trial moves it into them; far outside, check its units"
                    )
            except Exception as exc:
                row.problem = f"{type(exc).__name__}: {exc}"
        for out in self.detector.outputs:
            # As a trial reads it: converted to `units`, the `key:` of a plugin's reading
            # (not triggered: a check starts no measurement).
            row = CheckRow(out.name, "output", out.source, False, units=out.decl.units)
            rows.append(row)
            if _connect_row(row, out.target, timeout, deadline):
                try:
                    out.resolve_key(timeout)
                    if out.key is not None:  # which field of its reading it is, and why
                        row.source = f"{out.source} key {out.key} ({out.key_how})"
                    row.note = out.key_note
                    if out.key_problem is not None:
                        row.problem = f"{out.key_problem}; {out.key_fix}"
                    else:
                        row.value = out.value(timeout)
                except OutputInAlarm as exc:
                    # at rest, before any acquisition, a detector may well hold NaN or an
                    # old alarm (the test motor IOC's seen:x starts as NaN): a note, since
                    # only a trial's reading, after its acquisition, is judged so
                    row.note = f"{exc}; only a trial's reading, after its acquisition, counts"
                except Exception as exc:
                    row.problem = f"{type(exc).__name__}: {exc}"
        for name, target in (
            ("acquire", self.detector._acquire),
            ("acquire.done", self.detector._done),
        ):
            if target is not None:
                rows.append(_pv_row(name, "acquire", target, timeout, deadline))
        for check in self.gate.checks:
            row = CheckRow(str(check.interlock), "interlock", "", False)
            rows.append(row)
            sig = self.safe_pvs.get(f"interlock:{check.interlock.name}")
            row.source = (
                f"PV:{sig.pvname}" if sig is not None else f"reading:{check.interlock.name}"
            )
            # an interlock on an input or an output: its device's row says if it connected
            if sig is not None and not _connect_row(row, sig, timeout, deadline):
                continue
            row.connected = True
            try:
                row.value = check.read()
                row.problem = check.problem()
            except Exception as exc:
                row.problem = f"{type(exc).__name__}: {exc}"
        for key, value in self.spec.on_stop.items():
            label = f"{key} = {value:g}"
            sig = self.safe_pvs.get(f"on_stop:{key}")
            if sig is not None:
                row = _pv_row(label, "on_stop", sig, timeout, deadline)
                if row.connected and not row.slow:
                    row.device_limits = _pv_device_limits(sig)
                    row.problem = row.problem or _pv_limits_problem(sig, value)
                rows.append(row)
                continue
            dev = self.inputs[key]
            own = next(r for r in rows if r.role == "input" and r.name == key)
            rows.append(self._safe_state_row(label, dev, value, timeout, own))
        for row in rows:
            self._locate(row)
        return rows

    def _locate(self, row: CheckRow) -> None:
        """Name the file and line that declares a PV that did not connect: a misspelt PV
        was named without its line, which every other problem in the file gets (found in
        review)."""
        problem = row.problem or ""
        if not _NO_ANSWER.search(problem) or not self.spec._data:
            return
        section = {"input": "inputs", "output": "outputs", "interlock": "interlocks"}.get(
            row.role, row.role
        )
        name = row.name.split(" = ")[0] if row.role == "on_stop" else row.name
        loc: tuple[str | int, ...] = (section,) if row.role == "acquire" else (section, name)
        if row.role == "interlock":  # a list: the interlock's place in it (review U: line 1)
            texts = [str(i) for i in self.spec.interlocks]
            loc = (section, texts.index(name)) if name in texts else (section,)
        line = line_of(self.spec._data, loc)
        if line:
            declared = f" (declared at {self.spec._path}:{line})"
            row.problem = _NO_ANSWER.sub("", problem) + declared + _NO_ANSWER_TEXT

    def _safe_state_row(
        self, label: str, dev: InputDevice, value: float, timeout: float, own: CheckRow
    ) -> CheckRow:
        """An input's ``on_stop`` row: the setpoint it writes (a motor's VAL, a plugin),
        its value there now, its device's own limits, and whether the safe state is
        within them; how many steps ``max_step`` makes of it, as a note. ``own``: the
        input's own row (its reading, whether it connected)."""
        if dev._signal is not None:
            source = f"PV:{dev.write_pv}"
        elif dev.decl.motor is not None:
            source = f"PV:{dev.write_pv}.VAL"
        else:
            source = dev.source
        row = CheckRow(
            label, "on_stop", source, own.connected, limits=dev.decl.limits, units=dev.units
        )
        here = own.value
        row.follows = own.name
        if not own.connected or own.slow or not isinstance(here, int | float):
            row.problem = f"not checked: input {dev.name!r} cannot be read (see its row)"
            return row
        try:
            told = dev._commanded(time.monotonic() + timeout)
            row.value = here if told is None else told
            row.device_limits = dev.device_limits
            row.problem = dev.safe_state_problem(value)
            step = dev.decl.max_step
            if row.problem is None and step is not None and abs(value - here) > step:
                steps = math.ceil(abs(value - here) / step)
                row.note = (
                    f"{abs(value - here):g} from the reading {here:g}, more than max_step "
                    f"{step:g}: approached in about {steps} steps when the campaign stops, "
                    f"each waited for (at most timeout {dev.decl.timeout:g} s)"
                )
        except Exception as exc:
            row.problem = f"{type(exc).__name__}: {exc}"
        return row

    def safe_state(self) -> list[SafeStateFailure]:
        """Write every ``on_stop`` value, in the file's order; return (and keep in
        :attr:`safe_state_failures`) those that could not be written, each logged as an
        error and never raised, so the others are still written.

        An input's goes through its unit conversion and its ``max_step``
        (:meth:`InputDevice.write_safe_state`: an input with ``max_step`` is approached in
        steps before the next entry is written); one outside the device's own limits is not
        written (the IOC would refuse or clamp it). Every put waits the file's
        ``connection_timeout`` for a PV to (re)connect and for the acknowledgement.
        """
        failures: list[SafeStateFailure] = []
        timeout = self.spec.connection_timeout
        for key, value in self.spec.on_stop.items():
            dev = self.inputs.get(key)
            sig = self.safe_pvs.get(f"on_stop:{key}")
            target = dev.target if dev is not None else f"PV {getattr(sig, 'pvname', key)}"
            try:
                if sig is None and dev is None:  # built around the file: nothing to write to
                    raise InstrumentError(f"no PV {key!r} was made for it")
                if dev is not None:
                    problem = dev.safe_state_problem(value)
                    if problem is not None:
                        raise SetpointRefused(f"not written: {problem}")
                    dev.write_safe_state(value, timeout=timeout)
                elif sig is not None:
                    problem = _pv_limits_problem(sig, value)
                    if problem is not None:
                        raise SetpointRefused(f"not written: {problem}")
                    _put_acknowledged(sig, value, timeout, what=sig.pvname)
                logger.info("%s: safe state %s = %g", self.name, key, value)
            except Exception as exc:
                failures.append(
                    SafeStateFailure(key, value, target, f"{type(exc).__name__}: {exc}")
                )
        for failure in failures:
            logger.error("%s: could not set the safe state %s", self.name, failure)
        self.safe_state_failures = tuple(failures)
        return failures

    def close(self, *, safe_state: bool = True) -> None:
        """Leave the hardware in the declared safe state (``on_stop``); idempotent.

        What could not be written is in :attr:`safe_state_failures` afterwards (empty: all
        written, or nothing to write), for the caller to report beyond the log.

        ``safe_state=False``: stop and disconnect, and write nothing. For the read-only
        commands (``instruments check``, ``plan --dry-run``), which moved nothing and must
        not move anything on the way out; they used to clear ``spec.on_stop`` from outside
        first, a trick a new caller could forget (found in review).
        """
        if self._closed:
            return
        self._closed = True
        for dev in self.inputs.values():  # every move stopped, none of their puts after this
            dev.close_moves(min(dev.decl.timeout, _STOP_TIMEOUT))
        self.detector.stop()
        if safe_state and self.spec.on_stop:
            self.safe_state()


# ---------------------------------------------------------------------------- build
_bounds_warned: set[tuple[str, str, str, tuple[float, float]]] = set()


def check_declared(
    spec: InstrumentFile, specs: Sequence[InputSpec], *, where: str, bounds_known: bool = True
) -> None:
    """The file must declare exactly the campaign's parameters, all numeric, and each
    input's safe state must be a value its parameter can take (:func:`check_safe_state`).

    Bounds wider than an input's ``limits`` are allowed (the README: limits "may be tighter
    than bounds"), but a proposal outside the limits is never sent and fails its trial, so
    they are logged as a warning (once per file, parameter and ranges: ``validate``, then
    ``run`` loading and building the same file, say it once). Neither is checked with
    ``bounds_known`` false (``specs`` whose bounds are placeholders, as ``instruments check
    FILE`` passes).

    Raises:
        InstrumentConfigError: naming the parameters missing or extra, or a choice parameter.
        InstrumentFileError: an ``on_stop`` value outside its parameter's domain, at its line.
    """
    names = [s.name for s in specs]
    missing = [n for n in names if n not in spec.inputs]
    extra = [n for n in spec.inputs if n not in names]
    if missing or extra:
        # a typo on either side (review U: `flw` against the file's `flow` had no fix line)
        near = {m: difflib.get_close_matches(m, extra, n=1, cutoff=0.6) for m in missing}
        # either side may hold the typo: name both, suggest neither (review V)
        typos = [
            f"parameter '{m}' and the file's input '{n[0]}' differ: a typo in one of them?"
            for m, n in near.items()
            if n
        ]
        fix = (
            " ".join(typos)
            + (" " if typos else "")
            + (
                "the file must declare one input per campaign parameter, named alike: rename "
                "the parameter or the file's input, or add or remove one"
            )
        )
        raise InstrumentConfigError(
            f"{where} declares inputs {sorted(spec.inputs)} but the campaign's parameters are "
            f"{names}: missing {missing}, not parameters {extra}",
            field="file",
            parameter=next((m for m, n in near.items() if n), None),
            fix=fix,
        )
    for s in specs:
        decl = spec.inputs[s.name]
        if s.kind == "choice" and decl.device is None:
            raise InstrumentConfigError(
                f"{where}: parameter {s.name!r} is a choice; an EPICS input takes numbers, so "
                "declare it with a plugin `device:`",
                field="file",
            )
        if s.kind == "int" and decl.max_step is not None and not decl.max_step.is_integer():
            # A ramp's steps are max_step apart: 2.5 sent a filter wheel or a counter to
            # position 2.5 on its way, and below 1 no whole step exists at all (found in
            # session 38's notes, session 39)
            raise spec.error(
                f"inputs.{s.name}.max_step {decl.max_step:g}: parameter {s.name!r} is an int, "
                "so the steps of a ramp toward its setpoints would not be whole numbers",
                ("inputs", s.name, "max_step"),
                fix=f"give a whole number, e.g. max_step: {max(1, math.floor(decl.max_step))}",
            )
    if bounds_known:
        check_safe_state(spec, specs)
    for s in specs if bounds_known else ():
        _warn_bounds_beyond_limits(spec, s, where)


def check_safe_state(spec: InstrumentFile, specs: Sequence[InputSpec]) -> None:
    """Refuse an input's ``on_stop`` value that its campaign parameter cannot take.

    The schema checks a safe state against the input's ``limits`` only, as it must for a
    file read on its own; once the campaign is known, the parameter's domain applies too
    (found in review: ``stages: 0.5`` on an int parameter, ``lvl: 3`` on a choice of 1, 2,
    5, ``p: 99`` on a parameter fixed to 1.5, ``flow: 400`` with bounds [0.2, 4] and no
    limits were all written to the devices at the end of the campaign). Like every number
    under an input, ``on_stop`` is in the campaign's units, so it is compared as written.

    A safe state outside the campaign's bounds is allowed when the input declares
    ``limits`` that hold it: the bounds are what is searched, the limits what the hardware
    may be set to, and a safe state (a furnace back at room temperature) is often outside
    the first and inside the second. Without ``limits`` the bounds are the only range the
    campaign declares for the device, so the safe state must lie within them.

    Raises:
        InstrumentFileError: at the line of ``on_stop.<name>``, with the fix.
    """
    params = {p.name: p for p in specs}
    for key, value in spec.on_stop.items():
        param = params.get(key)
        decl = spec.inputs.get(key)
        if param is None or decl is None:
            continue  # a PV, or a parameter check_declared already reported
        outside = _outside_domain(key, value, param, decl)
        if outside is not None:
            problem, fix = outside
            raise spec.error(f"on_stop.{key}: {problem}", ("on_stop", key), fix=fix)


def _outside_domain(
    key: str, value: float, param: InputSpec, decl: InputDecl
) -> tuple[str, str] | None:
    """``(problem, fix)`` when ``value`` is no value of ``param`` (see
    :func:`check_safe_state`), else ``None``."""
    drop = f"drop `{key}` from on_stop (the device then stays where the last trial left it)"
    held = decl.limits is not None and decl.limits[0] <= value <= decl.limits[1]
    if held and param.kind != "int":
        # within the hardware's declared limits: an "off" state (a laser fixed at 1.5 W for
        # the campaign, 0 W at its end; a filter wheel's park position), as for a range
        # (found in review: refusing it pointed the user at dropping the safe state)
        return None
    if param.kind == "choice":
        values = tuple(param.values or ())
        numbers = [v for v in values if isinstance(v, int | float)]
        if any(float(v) == value for v in numbers):
            return None
        listed = ", ".join(str(v) for v in values)
        if len(values) == 1:
            return (
                f"{value:g}, but parameter {key!r} is fixed to {values[0]!r}",
                f"set it to {values[0]!r}, or {drop}"
                if numbers
                else f"a safe state is a number, and {values[0]!r} is not: {drop}",
            )
        return (
            f"{value:g} is not one of the values of parameter {key!r} ({listed})",
            f"give one of them, or declare `limits:` on inputs.{key} that hold it (an off "
            f"state), or {drop}"
            if numbers
            else f"a safe state is a number, and none of its values is: {drop}",
        )
    if param.bounds is None:
        return None
    low, high = float(param.bounds[0]), float(param.bounds[1])
    if low == high:  # a fixed parameter: every trial sets this one value
        if value == low:
            return None
        return (
            f"{value:g}, but parameter {key!r} is fixed to {low:g}: every trial sets it to "
            f"{low:g}, and the safe state would move it away",
            f"set it to {low:g}, or declare `limits:` on inputs.{key} that hold it (an off "
            f"state), or {drop}",
        )
    if param.kind == "int" and not float(value).is_integer():
        return (
            f"{value:g} is not a whole number, but parameter {key!r} is an int",
            f"give a whole number within [{low:g}, {high:g}], or {drop}",
        )
    if decl.limits is None and not low <= value <= high:
        return (
            f"{value:g} is outside the bounds [{low:g}, {high:g}] of parameter {key!r}, and "
            f"inputs.{key} declares no `limits` (the range its hardware may be set to)",
            f"give a value within the bounds; or, if the hardware may go there, declare "
            f"`limits:` on inputs.{key} that hold it (a safe state may lie outside the bounds "
            "searched, within the hardware's limits)",
        )
    return None


def _warn_bounds_beyond_limits(spec: InstrumentFile, param: InputSpec, where: str) -> None:
    """Log a warning when ``param``'s bounds (or a numeric choice's values) reach outside
    its input's ``limits``; refuse, at the limits' line, a parameter none of whose values
    lies within them. Every trial's setpoint would be refused, and the campaign failed at
    ``max_failures`` (a fixed value of 250 on limits [0, 100]: found in review)."""
    limits = spec.inputs[param.name].limits
    if limits is None:
        return
    if param.kind == "choice":
        numbers = [
            float(v)
            for v in param.values or ()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        outside = [v for v in numbers if not limits[0] <= v <= limits[1]]
        span = f"values {', '.join(f'{v:g}' for v in outside)}"
        whole = bool(outside) and len(outside) == len(param.values or ())
    else:
        if param.bounds is None:
            return
        low, high = float(param.bounds[0]), float(param.bounds[1])
        outside = [] if limits[0] <= low and high <= limits[1] else [low, high]
        span = f"value {low:g}" if low == high else f"bounds [{low:g}, {high:g}]"
        whole = high < limits[0] or low > limits[1]
        if param.kind == "int":  # [1, 3] on limits [1.2, 1.8]: no whole number between
            whole = whole or math.ceil(max(low, limits[0])) > math.floor(min(high, limits[1]))
    if not outside:
        return
    loc = ("inputs", param.name, "limits")
    if whole:
        raise spec.error(
            f"{where}: parameter {param.name!r} has {span}, "
            f"{'all ' if span.startswith('values') else ''}outside its input's limits "
            f"[{limits[0]:g}, {limits[1]:g}]: no trial could be sent to the device",
            loc,
            fix="give the parameter values within the limits, or, if the hardware may go "
            "there, widen the limits",
            kind=DeviceLimitsError,
        )
    key = (str(spec._path), param.name, span, (limits[0], limits[1]))
    if key in _bounds_warned:
        return
    _bounds_warned.add(key)
    line = line_of(spec._data, loc) if spec._data else None
    at = f" ({spec._path}:{line})" if line else ""
    logger.warning(
        "%s: parameter %r has %s reaching outside its input's limits [%g, %g]%s; proposals "
        "outside the limits are not sent and their trials fail (narrow the %s to the limits)",
        where,
        param.name,
        span,
        limits[0],
        limits[1],
        at,
        "values" if param.kind == "choice" else "bounds",
    )


def build_declared_instrument(
    spec: InstrumentFile,
    parameters: Sequence[InputSpec],
    *,
    units: Mapping[str, str | None] | None = None,
    connect: bool = True,
    bounds_known: bool | None = None,
    first_field_outputs: bool = False,
) -> DeclaredInstrument:
    """Create the devices of an instrument file and (by default) connect them.

    Args:
        spec: the validated file.
        parameters: the campaign's parameters (names and domains).
        units: parameter name -> the campaign's ``unit``, used when an input gives none.
        connect: wait for every PV (raise :class:`DeviceConnectionError` naming the missing,
            :class:`DeviceTypeError` for an input PV that is not a number).
        bounds_known: whether ``parameters`` carry the campaign's real bounds, so that
            ``check()`` (and ``connect()``'s warnings) compare them with the devices' own
            limits; default: ``connect`` (a run connects; ``instruments check`` on an
            instrument file alone passes placeholder bounds and connects later).
        first_field_outputs: a stored campaign whose runs were measured before plugin
            outputs followed hints: those without ``key:`` keep reading their first field
            (with a warning where a new campaign would read another), so its objective
            does not switch quantity mid-campaign.
    """
    if bounds_known is None:
        bounds_known = connect
    check_declared(spec, parameters, where=f"instrument {spec.name!r}", bounds_known=bounds_known)
    # Every path that builds devices (a run, `instruments check`, `plan --dry-run`) refuses
    # a `device_units` it could not convert, before any EPICS object exists, and a stored
    # campaign whose safety settings conflict with the file on disk.
    campaign_units = input_units(spec, units or {})
    refuse_unsafe_merge(spec, campaign_units)
    check_plugins(spec)  # every class importable before any device is made
    if _uses_pvs(spec):
        set_control_layer(spec.control_layer)
    from ophyd import EpicsSignal, EpicsSignalRO

    gate = Gate([], poll=spec.interlock_poll, name=spec.name)
    inputs: dict[str, InputDevice] = {}
    for s in parameters:
        decl = spec.inputs[s.name]
        inputs[s.name] = InputDevice(
            s.name,
            decl,
            units=campaign_units[s.name],
            prefix=spec.prefix,
            gate=gate,
            spec=spec,
            bounds=(float(s.bounds[0]), float(s.bounds[1])) if s.bounds is not None else None,
            kind=s.kind,
        )
    detector = OutputDetector(
        f"{spec.name}_outputs", spec, spec.prefix, first_field=first_field_outputs
    )
    safe_pvs: dict[str, Any] = {}
    checks: list[InterlockCheck] = []
    for rule in spec.interlocks:
        if rule.name in inputs:
            dev = inputs[rule.name]
            checks.append(InterlockCheck(rule, functools.partial(getattr, dev, "position")))
        elif rule.name in spec.outputs:
            out = next(o for o in detector.outputs if o.name == rule.name)
            checks.append(InterlockCheck(rule, out.value))
        else:
            sig = EpicsSignalRO(spec.prefix + rule.name, name=f"interlock_{rule.name}")
            safe_pvs[f"interlock:{rule.name}"] = sig
            checks.append(InterlockCheck(rule, sig.get))
    gate.checks = tuple(checks)
    gate.connections = tuple(_connection_checks(inputs, detector, safe_pvs))
    for key in spec.on_stop:
        if key not in inputs:
            safe_pvs[f"on_stop:{key}"] = EpicsSignal(spec.prefix + key, name=f"on_stop_{key}")
    instrument = DeclaredInstrument(
        spec.name,
        spec,
        inputs,
        detector,
        gate,
        safe_pvs,
        bounds_known=bounds_known,
    )
    if connect:
        instrument.connect()
    return instrument


def _connection_checks(
    inputs: Mapping[str, InputDevice], detector: OutputDetector, safe_pvs: Mapping[str, Any]
) -> list[ConnectionCheck]:
    """Every EPICS device a trial uses: each must be connected before a trial starts."""
    checks: list[ConnectionCheck] = []

    def add(target: Any, source: str, role: str) -> None:
        if target is not None and hasattr(target, "connected"):
            checks.append(
                ConnectionCheck(source, role, functools.partial(getattr, target, "connected"))
            )

    for name, dev in inputs.items():
        target = dev._signal if dev._signal is not None else dev._positioner
        if dev.write_pv:
            pvs = dev.read_pv if dev.read_pv == dev.write_pv else f"{dev.write_pv}/{dev.read_pv}"
            add(target, f"PV {pvs}", f"input {name}")
    for name, target in detector.pvs():
        pv = getattr(target, "pvname", None)
        if pv:
            add(target, f"PV {pv}", f"output {name}" if name in detector.describe() else name)
    for key, sig in safe_pvs.items():
        if key.startswith("interlock:"):
            add(sig, f"PV {sig.pvname}", "interlock")
    return checks


# ---------------------------------------------------------------------------- from a campaign
def declared_spec(config: Any, base_dir: Path) -> InstrumentFile:
    """The :class:`InstrumentFile` of a campaign's ``instrument: {file: ...}`` or
    ``instrument: {devices: {...}}`` (a file path is relative to the campaign's folder).

    The one place a campaign's instrument is read (``run``, ``resume``, ``plan``,
    ``instruments check``, ``status``): the devices as the campaign has them (a stored
    campaign's stored text), with the stricter of their safety settings and those of the
    file on disk (:func:`~instruments._instrument_file.stricter_of_disk`).
    """
    from instruments._instrument_file import (
        INLINE_DEVICES,
        load_instrument_file,
        parse_instrument,
        read_yaml,
        stricter_of_disk,
    )

    if config.file is not None:
        path = resolve_file(config.file, base_dir)
        text = getattr(config, "_file_text", None)  # pinned by pin_instrument_text
        as_stored = bool(getattr(config, "_as_stored", False))
        if text is None:
            return load_instrument_file(path, as_stored=as_stored)
        spec = parse_instrument(read_yaml(text, path), path=path, as_stored=as_stored)
    else:
        spec = parse_instrument(config.devices, path=INLINE_DEVICES)
        campaign_path = getattr(config, "_campaign_path", None)
        if campaign_path is not None:  # later errors name the campaign file's line
            spec._path = campaign_path
    return stricter_of_disk(config, spec, base_dir)


def refused_by_limits(spec: InstrumentFile, point: Mapping[str, Any]) -> SetpointRefused | None:
    """The refusal a trial at ``point`` meets before any device moves, as far as the
    instrument file alone decides it: the first input whose ``limits`` (the effective ones,
    :func:`declared_spec`) do not hold its value; ``None`` if every one does.

    The check an input makes when it is not connected (:meth:`InputDevice.check_value`):
    ``closedloop suggest`` hands a point to people or a robot, with no device in reach, and
    a point the file forbids must not be handed out (found in review) any more than ``run``
    sends it. ``max_step`` and a device's own limits need where the device is and what it
    says of itself, which only the run that moves it can read.
    """
    for name, value in point.items():
        decl = spec.inputs.get(name)
        if decl is None or decl.limits is None:
            continue
        try:
            check_setpoint(name, value, limits=decl.limits, max_step=None, current=None)
        except SetpointRefused as exc:
            return exc
    return None


def parameter_units(parameters: Sequence[Any]) -> dict[str, str | None]:
    """Parameter name -> its ``unit`` (models or mappings), for inputs that give none."""
    out: dict[str, str | None] = {}
    for p in parameters:
        get = p.get if isinstance(p, Mapping) else lambda k, p=p: getattr(p, k, None)
        name = get("name")
        if isinstance(name, str):
            unit = get("unit")
            out[name] = unit if isinstance(unit, str) and unit else None
    return out
