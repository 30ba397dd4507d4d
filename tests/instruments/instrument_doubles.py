"""Tiny real ophyd devices standing in for a simulated instrument in tests.

They mirror the simulators' contract (readback key == parameter name, setpoint key
``{name}_setpoint``, detector data keys == output names) without depending on it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, Signal
from ophyd.utils import LimitError


class UncheckedActuator(Device):
    """A settable input whose limits only ``set`` enforces (no ``check_value``)."""

    readback = Cpt(Signal, value=0.0, kind="hinted")
    setpoint = Cpt(Signal, value=0.0, kind="normal")
    abandonable_read = True  # soft signals, as a simulator's: read after a failed run

    def __init__(
        self,
        name: str,
        limits: tuple[float, float] = (-10.0, 10.0),
        quantum: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.readback.name = name
        self.limits = limits
        self.quantum = quantum
        self.moves: list[float] = []

    def _check(self, value: float) -> None:
        lo, hi = self.limits
        if not lo <= value <= hi:
            raise LimitError(f"{self.name}={value} not within limits ({lo}, {hi})")

    def set(self, value: float) -> DeviceStatus:  # type: ignore[override]
        self._check(value)
        self.moves.append(value)
        self.setpoint.put(value)
        q = self.quantum
        self.readback.put(round(value / q) * q if q else value)
        status = DeviceStatus(self)
        status.set_finished()
        return status


class Actuator(UncheckedActuator):
    """A settable input with limits; ``quantum`` makes the readback differ from the command."""

    def check_value(self, value: float) -> None:
        self._check(value)


class Detector(Device):
    """Computes outputs from the actuators' readbacks when triggered.

    ``mode``: ``ok``; ``fail_status`` (the status fails); ``raise`` (``trigger`` raises);
    ``slow`` (status finishes after ``delay`` s on a timer thread).
    """

    y = Cpt(Signal, value=0.0, kind="hinted")

    def __init__(
        self,
        name: str,
        model: Callable[[], Mapping[str, Any]],
        mode: str = "ok",
        delay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.y.name = "y"
        self.model = model
        self.mode = mode
        self.delay = delay
        self.timers: list[threading.Timer] = []

    def trigger(self) -> DeviceStatus:
        status = DeviceStatus(self)
        if self.mode == "raise":
            raise RuntimeError("detector exploded in trigger()")
        if self.mode == "fail_status":
            status.set_exception(RuntimeError("detector on fire"))
            return status
        self.y.put(self.model()["y"])
        if self.mode == "slow":
            timer = threading.Timer(self.delay, status.set_finished)
            self.timers.append(timer)
            timer.start()
        else:
            status.set_finished()
        return status


@dataclass
class FakeInstrument:
    """Satisfies ``instruments.Instrument`` with plain attributes."""

    name: str
    inputs: dict[str, Any]
    detectors: Sequence[Any]
    outputs: tuple[str, ...] = ("y",)
    closed: bool = field(default=False)

    def close(self) -> None:
        self.closed = True


def make_instrument(
    mode: str = "ok", delay: float = 0.0, quantum: float | None = None
) -> FakeInstrument:
    x = Actuator("x", limits=(-5.0, 5.0), quantum=quantum)
    z = Actuator("z", limits=(0.0, 1.0))

    def model() -> dict[str, float]:
        return {"y": -((x.readback.get() - 1.0) ** 2) + math.sin(z.readback.get())}

    det = Detector("det", model, mode=mode, delay=delay)
    return FakeInstrument("fake", {"x": x, "z": z}, [det])
