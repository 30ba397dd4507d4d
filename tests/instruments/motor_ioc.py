"""A caproto IOC with EPICS motor records, and the ``motor_ioc`` fixture that runs it.

The IOC (``python motor_ioc.py --prefix P: --put-log FILE``) serves two stages as motor
records (caproto's ``record="motor"`` fields, so every field ophyd's ``EpicsMotor`` connects
to exists), moved by a small simulation of what the real record does with them:

* ``m1``: a stage in **mm**, soft limits HLM/LLM [0, 50], limit switches at -5 and 55 mm,
  ``VELO`` 100 mm/s; ``m2``: the same stage in **um** (EGU ``um``, limits [0, 30000] um,
  ``VELO`` 100000 um/s), for ``device_units``.
* A put to VAL starts a move: DMOV 0 and MOVN 1, then RBV (and DRBV) step towards VAL at
  VELO every 20 ms, TDIR the direction; at the target MOVN 0 and DMOV 1. A move of zero
  length still takes DMOV 1 -> 0 -> 1, as the motor record does, so a client waiting for
  the transition is not left waiting. A put to VAL during a move retargets it.
* VAL's control limits (what a client reads as DRVL/DRVH) follow LLM/HLM, as the record's
  do, and change with a put to either. A put to VAL outside them is **taken** over Channel
  Access, as a real record takes it (CA does not refuse it): the record sets LVIO, restores
  VAL and does not move, DMOV 1 -> 0 -> 1. Soft limits are off when HLM == LLM == 0.
* STOP 1 stops a move where it is: VAL is set to RBV, DMOV 1; STOP reads 0 again. A put
  to VAL after the STOP (before the stage has stopped) is a new move the record makes
  once stopped (VAL != LVAL), as the real record does: a safe state written right after
  a STOP is not lost.
* A limit switch (HLS/LLS) trips when RBV reaches its position: the move ends there, the
  switch reads 1, RBV is in a MAJOR ``HWLIMIT`` alarm (so ``EpicsMotor`` marks the move
  failed), VAL = RBV. A move away from the switch clears it; a move further into it ends
  at once, failed. ``m1:hls_at`` / ``m1:lls_at`` set the switches' positions.
* ``m1:stall_at`` (NaN: none): an obstruction there stops the stage moving up through it;
  RBV stops but the controller keeps reporting a move (DMOV 0, MOVN 1) until STOP, like a
  stepper driven into something in its way (it moves down, away from it, freely).
* ``m1:miss``: every move ends this far past its target (a stage that settles short or
  long, within the record's retry deadband), for ``tolerance``.
* ``acquire`` (put 1, CA put-completion when done, ``busy`` 1 meanwhile) measures
  ``intensity`` = ``exp(-((x - 20) / 10) ** 2)`` with x = m1's RBV in mm, and records what
  it saw: ``seen:x`` (m1's RBV) and ``seen:done`` (m1's DMOV) at that moment.

Every put that reaches the IOC, to any PV or field, from any client, is appended to
``--put-log`` as a JSON line ``{"pv": ..., "value": ...}`` before the IOC acts on it (VAL
as ``<motor>.VAL``): the evidence of what a client sent, and of what it never sent.

The ``motor_ioc`` fixture runs it once per test session on 127.0.0.1 and a free port of its
own, next to the ``epics_ioc`` reactor IOC (whose fixture sets this process's EPICS client
environment first): it adds its port to ``EPICS_CA_ADDR_LIST``, which the caproto client
reads at every search, so one client (Ophyd's, a ``closedloop`` subprocess) sees both IOCs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from caproto import AlarmSeverity, AlarmStatus
from caproto.server import PVGroup, PvpropertyDouble, SubGroup, pvproperty, run
from epics_ioc import _free_port

MOTOR_PREFIX = "closedloop:mtr:"
TICK = 0.02  # s between RBV updates during a move


class RecordValue(PvpropertyDouble):
    """A motor record's VAL: every put reaches the record (its putter), which judges it
    against HLM/LLM itself. Channel Access does not refuse a put beyond a real record's
    control limits; caproto's plain double would, before any putter saw it."""

    async def verify_value(self, value: Any) -> Any:
        if self.putter is None:
            return value
        return await self.putter(self, value)


class StageMotor(PVGroup):
    """One motor record and its fault knobs; see the module docstring.

    The record's fields share one alarm (the record's, as in EPICS), and a verified write of
    any of them recomputes it from that field's alarm limits: every write the simulation
    makes is unverified, or the first one after a limit switch would clear its alarm; and a
    client's put to a field (STOP, HLM, LLM) is followed by the record's own alarm again
    (:meth:`_processed`), as a real record's processing sets it while a switch is on.
    """

    motor = pvproperty(name="", value=0.0, record="motor", dtype=RecordValue, precision=4)
    stall_at = pvproperty(name=":stall_at", value=math.nan, dtype=float)
    hls_at = pvproperty(name=":hls_at", value=0.0, dtype=float)
    lls_at = pvproperty(name=":lls_at", value=0.0, dtype=float)
    miss = pvproperty(name=":miss", value=0.0, dtype=float)

    def __init__(
        self,
        *args: Any,
        egu: str,
        velocity: float,
        limits: tuple[float, float],
        switches: tuple[float, float],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._egu = egu
        self._velocity = velocity
        self._limits = limits
        self._switches = switches
        self._target = 0.0
        self._moves = 0  # VAL puts taken so far
        self._stop_after: int | None = None  # STOP came after this many VAL puts
        self._task: asyncio.Task[None] | None = None
        self._later: set[asyncio.Task[None]] = set()

    @property
    def fields(self) -> Any:
        return self.motor.field_inst

    @motor.startup  # type: ignore[misc, no-redef]
    async def motor(self, instance: Any, async_lib: Any) -> None:
        f = self.fields
        await f.engineering_units.write(self._egu, verify_value=False)
        await instance.write_metadata(units=self._egu)
        await f.user_readback_value.write_metadata(units=self._egu)
        await f.velocity.write(self._velocity, verify_value=False)
        await f.limit_violation.write(0, verify_value=False)
        await f.done_moving_to_value.write(1, verify_value=False)
        await f.motor_is_moving.write(0, verify_value=False)
        await self.lls_at.write(self._switches[0], verify_value=False)
        await self.hls_at.write(self._switches[1], verify_value=False)
        await self._set_limits(*self._limits)
        await self._arrive(0.0)

    async def _set_limits(self, low: float, high: float) -> None:
        """LLM/HLM, and VAL's control limits with them (the record's DRVL/DRVH)."""
        f = self.fields
        await f.user_low_limit.write(low, verify_value=False)
        await f.user_high_limit.write(high, verify_value=False)
        await self.motor.write_metadata(lower_ctrl_limit=low, upper_ctrl_limit=high)

    @motor.putter  # type: ignore[no-redef]
    async def motor(self, instance: Any, value: float) -> float:
        f = self.fields
        low, high = float(f.user_low_limit.value), float(f.user_high_limit.value)
        limited = not (low == high == 0.0)
        if limited and not low <= value <= high:
            await f.limit_violation.write(1, verify_value=False)
            await self._pulse_done()
            return float(instance.value)  # VAL restored, nothing moves
        await f.limit_violation.write(0, verify_value=False)
        self._target = float(value)
        self._moves += 1
        if self._task is None or self._task.done():
            await f.done_moving_to_value.write(0, verify_value=False)
            self._task = asyncio.get_running_loop().create_task(self._move())
        return float(value)

    async def _pulse_done(self) -> None:
        f = self.fields
        if f.done_moving_to_value.value == 1:
            await f.done_moving_to_value.write(0, verify_value=False)
            await f.done_moving_to_value.write(1, verify_value=False)

    def _processed(self) -> None:
        """After a client's put to a field has been written (and the shared alarm recomputed
        by it), the record's alarm as its processing would leave it: HWLIMIT while a limit
        switch is on."""

        async def alarm() -> None:
            f = self.fields
            on = bool(f.user_high_limit_switch.value or f.user_low_limit_switch.value)
            await f.user_readback_value.alarm.write(
                status=AlarmStatus.HWLIMIT if on else AlarmStatus.NO_ALARM,
                severity=AlarmSeverity.MAJOR_ALARM if on else AlarmSeverity.NO_ALARM,
            )

        task = asyncio.get_running_loop().create_task(alarm())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    @motor.fields.stop.putter  # type: ignore[misc]
    async def _stop_put(fields: Any, instance: Any, value: int) -> int:
        group = fields.parent.group
        if value:
            group._stop_after = group._moves
        group._processed()
        return 0

    @motor.fields.user_high_limit.putter  # type: ignore[misc]
    async def _hlm_put(fields: Any, instance: Any, value: float) -> float:
        await fields.parent.write_metadata(upper_ctrl_limit=value)
        fields.parent.group._processed()
        return value

    @motor.fields.user_low_limit.putter  # type: ignore[misc]
    async def _llm_put(fields: Any, instance: Any, value: float) -> float:
        await fields.parent.write_metadata(lower_ctrl_limit=value)
        fields.parent.group._processed()
        return value

    async def _arrive(self, position: float, alarm: bool = False) -> None:
        """RBV (and DRBV) at ``position``; RBV in a MAJOR HWLIMIT alarm on a limit switch,
        out of it otherwise (set on the channel's alarm, the value written unverified: a
        verified write recomputes the alarm from the alarm limits, and drops it)."""
        f = self.fields
        severity = AlarmSeverity.MAJOR_ALARM if alarm else AlarmSeverity.NO_ALARM
        status = AlarmStatus.HWLIMIT if alarm else AlarmStatus.NO_ALARM
        await f.user_readback_value.alarm.write(status=status, severity=severity, publish=False)
        await f.user_readback_value.write(position, verify_value=False)
        await f.dial_readback_value.write(position, verify_value=False)

    async def _move(self) -> None:
        """One move, until the target (which a put may change meanwhile), a STOP or a
        limit switch; the stage may stall on the way."""
        f = self.fields
        self._stop_after = None
        await f.motor_is_moving.write(1, verify_value=False)
        position = float(f.user_readback_value.value)
        short = True  # stopped, or on a switch: VAL is set to where the stage is
        try:
            while True:
                target = self._target + float(self.miss.value)
                up = target >= position
                await f.direction_of_travel.write(1 if up else 0, verify_value=False)
                switch_at = float(self.hls_at.value if up else self.lls_at.value)
                switch = f.user_high_limit_switch if up else f.user_low_limit_switch
                other = f.user_low_limit_switch if up else f.user_high_limit_switch
                if other.value:  # moving away from a switch clears it
                    await other.write(0, verify_value=False)
                    await self._arrive(position)
                into = position >= switch_at if up else position <= switch_at
                if switch.value and into:
                    return  # already on the switch in this direction: no move, failed
                if self._stop_after is not None:
                    if self._stop_after == self._moves:
                        return  # stopped
                    self._stop_after = None  # a new VAL after the STOP: go there
                if position == target:
                    short = False
                    return
                stall = float(self.stall_at.value)
                step = float(f.velocity.value) * TICK
                nxt = min(target, position + step) if up else max(target, position - step)
                if up and position <= stall <= nxt:  # NaN compares False: no obstruction
                    if position != stall:
                        position = stall
                        await self._arrive(position)
                    await asyncio.sleep(TICK)  # seized: still "moving", until STOP
                    continue
                hit = nxt >= switch_at if up else nxt <= switch_at
                position = switch_at if hit else nxt
                await self._arrive(position, alarm=hit)
                if hit:
                    await switch.write(1, verify_value=False)
                    return
                await asyncio.sleep(TICK)
        finally:
            self._stop_after = None
            if short:
                await self.motor.write(position, verify_value=False)
            await f.motor_is_moving.write(0, verify_value=False)
            await f.done_moving_to_value.write(1, verify_value=False)


class MotorIOC(PVGroup):
    """Two stages and a detector; see the module docstring."""

    m1 = SubGroup(
        StageMotor, prefix="m1", egu="mm", velocity=100.0, limits=(0.0, 50.0), switches=(-5, 55)
    )
    m2 = SubGroup(
        StageMotor,
        prefix="m2",
        egu="um",
        velocity=100_000.0,
        limits=(0.0, 30_000.0),
        switches=(-5000, 35_000),
    )
    acquire = pvproperty(name="acquire", value=0, dtype=int)
    busy = pvproperty(name="busy", value=0, dtype=int, read_only=True)
    intensity = pvproperty(name="intensity", value=0.0, dtype=float, precision=6, read_only=True)
    seen_x = pvproperty(name="seen:x", value=math.nan, dtype=float, precision=6, read_only=True)
    seen_done = pvproperty(name="seen:done", value=-1, dtype=int, read_only=True)

    def __init__(self, *args: Any, put_log: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._put_log = put_log
        for name, channel in list(self.pvdb.items()):
            self._log_puts(name + (".VAL" if channel.field_inst is not None else ""), channel)
            for key, sub in (channel.fields or {}).items():
                self._log_puts(f"{name}.{key}", sub)

    def _log_puts(self, pv: str, channel: Any) -> None:
        """Log every client put to ``channel`` before the IOC sees it (internal writes
        do not go through ``auth_write``)."""
        original: Callable[..., Awaitable[Any]] = channel.auth_write

        async def auth_write(*args: Any, **kwargs: Any) -> Any:
            data = args[2] if len(args) > 2 else kwargs.get("data")
            self._record(pv, data)
            return await original(*args, **kwargs)

        channel.auth_write = auth_write

    def _record(self, pv: str, data: Any) -> None:
        value = data.tolist() if hasattr(data, "tolist") else data
        if isinstance(value, list | tuple) and len(value) == 1:
            value = value[0]
        if isinstance(value, bytes):
            value = value.rstrip(b"\0").decode("latin-1")
        with self._put_log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"pv": pv, "value": value}) + "\n")

    @acquire.putter  # type: ignore[misc, no-redef]
    async def acquire(self, instance: Any, value: int) -> int:
        if not value:
            return 0
        await self.busy.write(1)
        await asyncio.sleep(0.02)
        f = self.m1.motor.field_inst
        x = float(f.user_readback_value.value)
        await self.seen_x.write(x)
        await self.seen_done.write(int(f.done_moving_to_value.value))
        await self.intensity.write(math.exp(-(((x - 20.0) / 10.0) ** 2)))
        await self.busy.write(0)
        return 0


# ---------------------------------------------------------------------------- the fixture
@dataclass
class MotorIOCProcess:
    """The running motor IOC: its prefix, put log, and helpers to read and write its PVs
    (``get("m1.RBV")``, ``put("m1:stall_at", 12)``)."""

    prefix: str
    put_log: Path
    env: dict[str, str]
    out: Path
    process: subprocess.Popen[bytes] | None = None
    signals: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        with self.out.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--prefix", self.prefix, "--put-log", str(self.put_log)],
                env={**os.environ, **self.env},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:  # a start-up wait, not an assertion on speed
            if self.process.poll() is not None:
                pytest.fail(f"the motor IOC exited: {self._output()}")
            try:
                self._signal("m1.DMOV", timeout=0.5).get()
                return
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(f"the motor IOC did not answer: {self._output()}")
                time.sleep(0.2)

    def _output(self) -> str:
        return self.out.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def puts(self) -> list[dict[str, Any]]:
        """Every put the IOC received so far, oldest first."""
        lines = self.put_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _signal(self, pv: str, timeout: float = 5.0) -> Any:
        """An ``EpicsSignal`` for ``pv`` (one per PV, kept: a reset of the IOC takes a dozen
        puts, each of which would otherwise wait for a new signal's connection)."""
        import ophyd

        if getattr(ophyd.cl, "name", None) != "caproto":
            ophyd.set_cl("caproto")
        signal = self.signals.get(pv)
        if signal is None:
            name = pv.replace(":", "_").replace(".", "_")
            signal = ophyd.EpicsSignal(self.prefix + pv, name=name, string=pv.endswith(".EGU"))
        signal.wait_for_connection(timeout=timeout)
        self.signals[pv] = signal
        return signal

    def get(self, pv: str) -> Any:
        return self._signal(pv).get(use_monitor=False)

    def put(self, pv: str, value: Any) -> None:
        """Write ``pv`` and wait for the IOC to acknowledge it (put-completion)."""
        import threading

        done = threading.Event()
        self._signal(pv).put(value, use_complete=True, callback=done.set)
        if not done.wait(10):
            raise TimeoutError(f"put to {pv} not acknowledged")


@pytest.fixture(scope="session")
def motor_ioc(epics_ioc: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The motor IOC, running for the session next to the reactor IOC (``epics_ioc``)."""
    port = _free_port()
    env = {
        **epics_ioc.env,
        "EPICS_CAS_SERVER_PORT": str(port),
        "EPICS_CA_SERVER_PORT": str(port),
    }
    log = tmp_path_factory.mktemp("motor_ioc") / "puts.jsonl"
    log.touch()
    ioc = MotorIOCProcess(MOTOR_PREFIX, log, env, log.with_name("ioc.out"))
    saved = os.environ.get("EPICS_CA_ADDR_LIST")
    os.environ["EPICS_CA_ADDR_LIST"] = f"{saved or '127.0.0.1'} 127.0.0.1:{port}"
    try:
        ioc.start()
        yield ioc
    finally:
        ioc.stop()
        if saved is None:
            os.environ.pop("EPICS_CA_ADDR_LIST", None)
        else:
            os.environ["EPICS_CA_ADDR_LIST"] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prefix", default=MOTOR_PREFIX)
    parser.add_argument("--put-log", type=Path, required=True)
    args = parser.parse_args()
    args.put_log.touch()
    ioc = MotorIOC(prefix=args.prefix, put_log=args.put_log)
    run(ioc.pvdb, interfaces=["127.0.0.1"])


if __name__ == "__main__":
    main()
