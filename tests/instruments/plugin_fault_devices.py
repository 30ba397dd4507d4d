"""Lab devices that break the plugin contract the way real drivers do: a sync call that never
returns (a wedged serial line), a camera that refuses a trigger while an exposure runs,
``AsyncStatus`` methods on a class whose ``read`` is plain, readings of the wrong shape.

A call that "never returns" waits on the class's ``release`` event instead, so a test can
let the abandoned thread go when it is done.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ophyd.status import Status
from ophyd_async.core import AsyncStatus, StandardReadable, StandardReadableFormat, soft_signal_rw


class SyncBase:
    """A sync device reading ``value`` under its name; records the threads that call it."""

    parent = None
    release = threading.Event()  # set by a test: every wedged call returns

    def __init__(self, name: str = "", value: Any = 0.5) -> None:
        self.name = name
        self.value = value
        self.calls: list[str] = []
        self.threads: list[threading.Thread] = []

    def _called(self, method: str) -> None:
        self.calls.append(method)
        self.threads.append(threading.current_thread())

    def read(self) -> dict[str, Any]:
        self._called("read")
        return {self.name: {"value": self.value, "timestamp": time.time()}}

    def describe(self) -> dict[str, Any]:
        return {self.name: {"source": "test", "dtype": "number", "shape": []}}

    def read_configuration(self) -> dict[str, Any]:
        return {}

    def describe_configuration(self) -> dict[str, Any]:
        return {}


class SyncMover(SyncBase):
    """Moves at once: ``set`` returns a finished status."""

    def set(self, value: float) -> Status:
        self._called("set")
        self.value = value
        status = Status(obj=self)
        status.set_finished()
        return status

    def stop(self, *, success: bool = False) -> None:
        self._called("stop")


class WedgedRead(SyncBase):
    """``read`` blocks (until ``release``) once ``wedge`` is set: a serial line gone quiet."""

    def __init__(self, name: str = "", value: Any = 0.5) -> None:
        super().__init__(name, value)
        self.wedge = False

    def read(self) -> dict[str, Any]:
        if self.wedge:
            self._called("read (wedged)")
            self.release.wait()
        return super().read()


class WedgedSet(SyncMover):
    """``set`` blocks (until ``release``): a driver waiting for an answer that never comes."""

    def set(self, value: float) -> Status:
        self._called("set (wedged)")
        self.release.wait()
        return super().set(value)


class WedgedStop(SyncMover):
    """``stop`` blocks (until ``release``)."""

    def stop(self, *, success: bool = False) -> None:
        self._called("stop (wedged)")
        self.release.wait()


class WedgedPosition(SyncMover):
    """Its ``position`` property blocks (until ``release``)."""

    @property
    def position(self) -> float:
        self.release.wait()
        return float(self.value)


class BusyCamera(SyncBase):
    """A sync camera: ``trigger`` starts an exposure that ends on its own after the first
    one (which is wedged) or on ``stop()``; a trigger while one runs is refused, as many
    camera drivers do."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.exposure: Status | None = None
        self.stops = 0

    def trigger(self) -> Status:
        self._called("trigger")
        if self.exposure is not None and not self.exposure.done:
            raise RuntimeError("camera busy: previous acquisition still running (call stop())")
        self.exposure = Status(obj=self)
        if self.calls.count("trigger") > 1:
            self.exposure.set_finished()
        return self.exposure

    def stop(self, *, success: bool = False) -> None:
        self.stops += 1
        if self.exposure is not None and not self.exposure.done:
            self.exposure.set_exception(RuntimeError("exposure stopped"))


class HybridStirrer(SyncBase):
    """A plain ``read``, an ``AsyncStatus`` ``set`` (bluesky's ``Movable`` allows any status)."""

    @AsyncStatus.wrap
    async def set(self, value: float) -> None:
        await asyncio.sleep(0)
        self.calls.append("set")
        self.value = value


class HybridDetector(SyncBase):
    """A plain ``read``, an ``AsyncStatus`` ``trigger``."""

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        await asyncio.sleep(0)
        self.calls.append("trigger")
        self.value = 0.75


class Readings(SyncBase):
    """An output whose ``read`` returns ``reading`` as given, right or wrong."""

    def __init__(self, name: str = "", reading: Any = None) -> None:
        super().__init__(name)
        self.reading = reading

    def read(self) -> Any:
        return self.reading


class SetReturnsNone(SyncMover):
    def set(self, value: float) -> Any:
        self.value = value
        return None


class NoSuchPort(SyncMover):
    """Cannot connect: the serial port it was given does not exist."""

    def wait_for_connection(self, timeout: float | None = None) -> None:
        raise RuntimeError("no such serial port /dev/ttyUSB9")


class PortBusy(SyncMover):
    """Its constructor fails, as a driver opening a port another program holds does."""

    def __init__(self, name: str = "", port: str = "/dev/ttyUSB0") -> None:
        raise OSError(f"{port} is busy")


class BrokenDriver(SyncMover):
    """Its constructor takes its arguments, then fails with a TypeError of its own."""

    def __init__(self, name: str = "", port: str = "/dev/ttyUSB0") -> None:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")


class ConnectTimeoutStage(StandardReadable):
    """An ophyd-async stage recording the ``timeout`` its ``connect`` was given."""

    seen: list[float] = []

    def __init__(self, name: str = "") -> None:
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.setpoint = soft_signal_rw(float, 0.5)
        super().__init__(name=name)

    async def connect(  # type: ignore[override]  # a device records the timeout it got
        self, mock: Any = False, timeout: float = 10.0, **kwargs: Any
    ) -> None:
        type(self).seen.append(timeout)
        await super().connect(mock=mock, timeout=timeout, **kwargs)

    @AsyncStatus.wrap
    async def set(self, value: float) -> None:
        await self.setpoint.set(value)


class ReadOnly(SyncBase):
    """Reads, but has no ``set``: an input's device must be moved."""


class SetIsNone(SyncMover):
    """``set`` overridden as ``None`` (a subclass switching a method off)."""

    set = None  # type: ignore[assignment]
