"""A pure-Python caproto IOC that behaves like a small flow reactor on the bench.

The EPICS example campaigns (``campaigns/epics``, ``campaigns/instruments``) drive it, so
anyone can try an instrument file over real Channel Access without hardware, from an
installed closedloop (it lived among the tests, which a wheel does not ship: found in
review)::

    export EPICS_CA_AUTO_ADDR_LIST=NO EPICS_CA_ADDR_LIST=127.0.0.1
    export EPICS_CAS_INTF_ADDR_LIST=127.0.0.1
    python -m simulators.reactor_ioc --put-log puts.jsonl &

It serves on 127.0.0.1 only; every other EPICS setting comes from the environment. The
tests' ``epics_ioc`` fixture runs it the same way, with a prefix and a port of its own.

PVs (all under the prefix):

* ``temp:SP`` / ``temp:RBV``: reactor temperature in **kelvin**; the readback follows a put
  to the setpoint after ``lag`` seconds (so tolerance and settle time are exercised).
* ``lag``: those seconds (default ``--lag``); writable, so a test can make the readbacks
  lag far behind their setpoints (``max_step`` measured from both, the safe state's steps).
* ``flow:SP`` / ``flow:RBV``: pump flow in mL/min, same behaviour.
* ``acquire``: put 1 to measure; the put completes (CA put-completion) when the measurement
  is done, ``busy`` is 1 meanwhile and ``acquire`` returns to 0.
* ``yield``: the computed output, ``exp(-((T - 353.15) / 25) ** 2) * flow / (flow + 1)``
  from the *readbacks* at acquisition time; its maximum is at 80 degC and the largest flow.
* ``door_closed`` (1 = closed) and ``pressure`` (bar): interlock readings.
* ``heater:enable``: the heater; a safe state sets it to 0.

PVs for the fault tests (``test_epics_faults2.py``), unused by the example instrument file:

* ``acquire_time``: seconds an acquisition takes (default ``--acquire-time``); writable, so a
  test can make one acquisition long enough to lose the IOC during it.
* ``rbv_delay``: seconds every read of ``temp:RBV`` takes (default 0); while it is not 0,
  each read is logged too, as ``{"pv": ".../temp:RBV", "value": null, "read": true}``, so a
  test knows a client is inside one.
* ``drv:SP`` / ``drv:RBV``: like ``temp:SP``/``temp:RBV`` (kelvin), but the setpoint has
  control limits (DRVL/DRVH) [0, 340] K: a put outside them is refused by the IOC.
* ``yield_nan``: while it is not 0, an acquisition writes NaN to ``yield`` (a glitch).
* ``yield_severity``: the alarm severity of ``yield`` (0 none ... 3 INVALID, status HIHI),
  as a detector's IOC flags a reading not to be trusted.
* ``refuse_puts``: while it is not 0, every put to ``flow:SP`` is answered ``ECA_PUTFAIL``
  and its value kept, as a real IOC answers a put-notify to a disabled record.
* ``mode:SP`` / ``mode:RBV``: ENUM PVs (``Off``, ``Low``, ``High``), the readback following;
  ``label``: a string PV. Neither kind is a number.

With ``--put-log FILE``, every put that reaches the IOC, from any client, is appended to it
as a JSON line ``{"pv": ..., "value": ...}`` before it takes effect: the evidence that a
refused setpoint never got here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from pathlib import Path
from typing import Any

from caproto import AlarmSeverity, AlarmStatus, CAStatus, ChannelType
from caproto.server import PVGroup, pvproperty, run


class ReactorIOC(PVGroup):
    """The simulated reactor; see the module docstring for its PVs."""

    def __init__(
        self, *args: Any, put_log: Path | None, lag: float, acquire_time: float, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self._put_log = put_log
        self._lag = lag
        self._acquire_time = acquire_time
        self._tasks: set[asyncio.Task[None]] = set()
        # refuse_puts: flow:SP answers a put with ECA_PUTFAIL and keeps its value, as a
        # real IOC answers a put-notify to a disabled record (a client still hands the
        # answer to its completion callback)
        taken = self.flow_sp.auth_write

        async def refusing(*args: Any, **kwargs: Any) -> Any:
            if self.refuse_puts.value:
                return CAStatus.ECA_PUTFAIL
            return await taken(*args, **kwargs)

        self.flow_sp.auth_write = refusing

    def _record(self, pv: str, value: Any) -> None:
        plain = value.item() if hasattr(value, "item") else value
        self._log({"pv": self.prefix + pv, "value": plain})

    def _log(self, line: dict[str, Any]) -> None:
        if self._put_log is not None:
            with self._put_log.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    def _follow(self, readback: Any, value: float) -> None:
        async def later() -> None:
            await asyncio.sleep(float(self.lag.value))
            await readback.write(value)

        task = asyncio.get_running_loop().create_task(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    temp_sp = pvproperty(name="temp:SP", value=298.15, dtype=float, precision=3, units="K")
    temp_rbv = pvproperty(
        name="temp:RBV", value=298.15, dtype=float, precision=3, units="K", read_only=True
    )
    flow_sp = pvproperty(name="flow:SP", value=1.0, dtype=float, precision=3, units="mL/min")
    flow_rbv = pvproperty(
        name="flow:RBV", value=1.0, dtype=float, precision=3, units="mL/min", read_only=True
    )
    acquire = pvproperty(name="acquire", value=0, dtype=int)
    busy = pvproperty(name="busy", value=0, dtype=int, read_only=True)
    yield_ = pvproperty(
        name="yield", value=0.0, dtype=float, precision=6, read_only=True, alarm_group="yield"
    )  # its own alarm: caproto's PVs share one by default (yield_severity)
    door_closed = pvproperty(name="door_closed", value=1, dtype=int)
    pressure = pvproperty(name="pressure", value=1.0, dtype=float, units="bar")
    heater_enable = pvproperty(name="heater:enable", value=1, dtype=int)
    put_count = pvproperty(name="put_count", value=0, dtype=ChannelType.LONG, read_only=True)
    acquire_time = pvproperty(name="acquire_time", value=0.05, dtype=float)
    rbv_delay = pvproperty(name="rbv_delay", value=0.0, dtype=float)
    lag = pvproperty(name="lag", value=0.0, dtype=float)
    refuse_puts = pvproperty(name="refuse_puts", value=0, dtype=int)
    yield_severity = pvproperty(name="yield_severity", value=0, dtype=int)
    yield_nan = pvproperty(name="yield_nan", value=0, dtype=int)
    drv_sp = pvproperty(
        name="drv:SP",
        value=298.15,
        dtype=float,
        precision=3,
        units="K",
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=340.0,
    )
    drv_rbv = pvproperty(
        name="drv:RBV", value=298.15, dtype=float, precision=3, units="K", read_only=True
    )
    mode_sp = pvproperty(
        name="mode:SP", value="Off", dtype=ChannelType.ENUM, enum_strings=["Off", "Low", "High"]
    )
    mode_rbv = pvproperty(
        name="mode:RBV",
        value="Off",
        dtype=ChannelType.ENUM,
        enum_strings=["Off", "Low", "High"],
        read_only=True,
    )
    label = pvproperty(name="label", value="ready", dtype=ChannelType.STRING, read_only=True)

    @temp_rbv.getter  # type: ignore[no-redef]
    async def temp_rbv(self, instance: Any) -> Any:
        delay = float(self.rbv_delay.value)
        if delay > 0:
            self._log({"pv": self.prefix + "temp:RBV", "value": None, "read": True})
            await asyncio.sleep(delay)
        return instance.value

    async def _count(self, pv: str, value: Any) -> None:
        self._record(pv, value)
        await self.put_count.write(self.put_count.value + 1)

    @temp_sp.putter  # type: ignore[no-redef]
    async def temp_sp(self, instance: Any, value: float) -> float:
        await self._count("temp:SP", value)
        self._follow(self.temp_rbv, value)
        return value

    @flow_sp.putter  # type: ignore[no-redef]
    async def flow_sp(self, instance: Any, value: float) -> float:
        await self._count("flow:SP", value)
        self._follow(self.flow_rbv, value)
        return value

    @drv_sp.putter  # type: ignore[no-redef]
    async def drv_sp(self, instance: Any, value: float) -> float:
        await self._count("drv:SP", value)
        self._follow(self.drv_rbv, value)
        return value

    @mode_sp.putter  # type: ignore[no-redef]
    async def mode_sp(self, instance: Any, value: Any) -> Any:
        await self._count("mode:SP", value)
        self._follow(self.mode_rbv, value)
        return value

    @acquire_time.startup  # type: ignore[no-redef]
    async def acquire_time(self, instance: Any, async_lib: Any) -> None:
        await instance.write(self._acquire_time, verify_value=False)  # not a put: unlogged

    @acquire_time.putter  # type: ignore[no-redef]
    async def acquire_time(self, instance: Any, value: float) -> float:
        await self._count("acquire_time", value)
        return value

    @lag.startup  # type: ignore[no-redef]
    async def lag(self, instance: Any, async_lib: Any) -> None:
        await instance.write(self._lag, verify_value=False)  # not a put: unlogged

    @lag.putter  # type: ignore[no-redef]
    async def lag(self, instance: Any, value: float) -> float:
        await self._count("lag", value)
        return value

    async def _yield_alarm(self, severity: int) -> None:
        """Put ``yield`` in alarm at ``severity`` (``yield_severity``); a write of its value
        clears the alarm (caproto checks the value against its limits), so each is followed
        by this."""
        level = AlarmSeverity(int(severity))
        status = AlarmStatus.HIHI if level else AlarmStatus.NO_ALARM
        await self.yield_.alarm.write(status=status, severity=level)

    @yield_severity.putter  # type: ignore[no-redef]
    async def yield_severity(self, instance: Any, value: int) -> int:
        await self._yield_alarm(value)
        return value

    @rbv_delay.putter  # type: ignore[no-redef]
    async def rbv_delay(self, instance: Any, value: float) -> float:
        await self._count("rbv_delay", value)
        return value

    @acquire.putter  # type: ignore[no-redef]
    async def acquire(self, instance: Any, value: int) -> int:
        await self._count("acquire", value)
        if not value:
            return 0
        await self.busy.write(1)
        await asyncio.sleep(float(self.acquire_time.value))
        temp = float(self.temp_rbv.value)
        flow = float(self.flow_rbv.value)
        result = math.exp(-(((temp - 353.15) / 25.0) ** 2)) * flow / (flow + 1.0)
        await self.yield_.write(math.nan if self.yield_nan.value else result)
        await self._yield_alarm(self.yield_severity.value)
        await self.busy.write(0)
        return 0

    @door_closed.putter  # type: ignore[no-redef]
    async def door_closed(self, instance: Any, value: int) -> int:
        await self._count("door_closed", value)
        return value

    @pressure.putter  # type: ignore[no-redef]
    async def pressure(self, instance: Any, value: float) -> float:
        await self._count("pressure", value)
        return value

    @heater_enable.putter  # type: ignore[no-redef]
    async def heater_enable(self, instance: Any, value: int) -> int:
        await self._count("heater:enable", value)
        return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="closedloop:sim:")
    parser.add_argument("--put-log", type=Path, help="a file every put is appended to")
    parser.add_argument("--lag", type=float, default=0.05)
    parser.add_argument("--acquire-time", type=float, default=0.05)
    args = parser.parse_args()
    if args.put_log is not None:
        args.put_log.touch()
    ioc = ReactorIOC(
        prefix=args.prefix, put_log=args.put_log, lag=args.lag, acquire_time=args.acquire_time
    )
    run(ioc.pvdb, interfaces=["127.0.0.1"])


if __name__ == "__main__":
    main()
