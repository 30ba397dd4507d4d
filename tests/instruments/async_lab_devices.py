"""A lab's own ophyd-async devices, as a lab would write them: a stage whose ``set`` writes a
soft setpoint signal, and a sensor that computes its reading from the stage on ``trigger``.
Nothing here knows about closedloop.
"""

from __future__ import annotations

from bluesky.protocols import Movable, Triggerable
from ophyd_async.core import (
    AsyncStatus,
    StandardReadable,
    StandardReadableFormat,
    soft_signal_r_and_setter,
    soft_signal_rw,
)

STAGES: dict[str, AsyncStage] = {}
"""Every stage built, by name: the sensor reads the one named ``x``."""


class AsyncStage(StandardReadable, Movable[float]):
    """Moves at once: ``set`` writes ``setpoint``, which is also the (hinted) reading."""

    def __init__(self, name: str = "", start: float = 0.0) -> None:
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.setpoint = soft_signal_rw(float, start)
        self.moves: list[float] = []
        super().__init__(name=name)
        STAGES[name] = self

    @AsyncStatus.wrap
    async def set(self, value: float) -> None:
        self.moves.append(value)
        await self.setpoint.set(value)


class AsyncSensor(StandardReadable, Triggerable):
    """``trigger`` computes ``-(x - peak)**2`` from the setpoint of stage ``x``."""

    def __init__(self, name: str = "", peak: float = 1.0) -> None:
        self.peak = peak
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.value, self._set_value = soft_signal_r_and_setter(float, 0.0)
        self.triggers = 0
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        self.triggers += 1
        x = await STAGES["x"].setpoint.get_value()
        self._set_value(-((x - self.peak) ** 2))
