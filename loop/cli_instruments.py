"""Technician tools: ``closedloop instruments check FILE`` and ``closedloop plan FILE --dry-run``.

``instruments check`` connects every device of an instrument file and prints what it sees;
``plan --dry-run`` prints the exact Bluesky messages the engine would send for the next
proposal (or a given point), from bluesky's ``RunEngineSimulator``: no RunEngine runs and no
message reaches a device.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loop.errors import CampaignConfigError

instruments_app = typer.Typer(
    name="instruments",
    help="Check the instruments declared in an instrument file.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if hasattr(value, "item"):
        return _fmt(value.item())
    return str(value)


@instruments_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Instrument YAML file (or a campaign using one).")],
    timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Seconds to wait for each connection.")
    ] = None,
) -> None:
    """Connect every device; print name, PV, connected, value, limits, units.

    Exits 1 if anything is missing, outside its limits or an interlock does not hold.
    """
    from instruments._epics import build_declared_instrument

    spec, params, units = _declared(file)
    inst = build_declared_instrument(spec, params, units=units, connect=False)
    try:
        rows = inst.check(timeout=timeout)
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})  # a check sets nothing
        inst.close()
    table = Table(title=f"{spec.name} ({file})")
    for column in ("name", "role", "source", "connected", "value", "limits", "units", "problem"):
        table.add_column(column)
    bad = 0
    for r in rows:
        ok = r.connected and r.problem is None
        bad += not ok
        table.add_row(
            escape(r.name),
            r.role,
            escape(r.source),
            "[green]yes[/]" if r.connected else "[red]no[/]",
            _fmt(r.value),
            "" if r.limits is None else f"[{r.limits[0]:g}, {r.limits[1]:g}]",
            escape(r.units or ""),
            f"[red]{escape(r.problem)}[/]" if r.problem else "",
        )
    console.print(table)
    if bad:
        console.print(f"[red]{bad} problem(s)[/]")
        for r in rows:
            if not (r.connected and r.problem is None):
                what = r.problem if r.connected else f"not connected ({r.problem})"
                console.print(f"  {r.name} {r.source}: {what}", markup=False, highlight=False)
        raise typer.Exit(1)
    console.print("[green]all devices connected, within limits, interlocks hold[/]")


def _declared(file: Path) -> tuple[Any, Any, dict[str, str | None]]:
    """The instrument file's spec, its inputs and their campaign units, from an instrument
    file or from a campaign whose ``instrument:`` is a ``file:`` or inline ``devices:``
    (then the parameters' ``unit`` fills in inputs that declare none)."""
    from instruments import input_specs
    from instruments._epics import declared_spec, parameter_units
    from instruments._instrument_file import (
        InstrumentFileError,
        load_instrument_file,
        read_yaml,
    )

    try:
        try:
            spec = load_instrument_file(file)
        except InstrumentFileError:
            data = read_yaml(file.read_text(encoding="utf-8"), file)
            if not ("parameters" in data and "instrument" in data):
                raise
        else:
            return spec, input_specs([(n, (0.0, 1.0)) for n in spec.inputs]), {}
        from loop.config import load_campaign

        loaded = load_campaign(file)
        c = loaded.campaign
        if c.instrument.file is None and c.instrument.devices is None:
            raise CampaignConfigError(
                file,
                "the campaign's instrument is not an instrument file",
                fix="give `instrument: {file: instrument.yaml}` (or check the instrument file)",
            )
        spec = declared_spec(c.instrument, loaded.base_dir)
        return spec, input_specs(c.parameters), parameter_units(c.parameters)
    except InstrumentFileError as exc:
        raise CampaignConfigError(exc.path, exc.problem, line=exc.line, fix=exc.fix) from None


def plan(
    file: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the messages; touch no hardware.")
    ] = False,
    at: Annotated[
        list[str] | None,
        typer.Option("--at", help="A parameter value, name=value (repeat); default: proposal."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the file's seed.")] = None,
) -> None:
    """Print the exact Bluesky messages of the next trial (the planner's first proposal, or
    the point given with --at), without touching hardware."""
    from bluesky.simulators import RunEngineSimulator

    from instruments import build_instrument, trial_plan
    from instruments._epics import DeclaredInstrument
    from loop.config import load_campaign

    if not dry_run:
        raise typer.BadParameter("only --dry-run is supported: `closedloop run` runs trials")
    loaded = load_campaign(file)
    c = loaded.campaign
    point = _point(loaded, at or [], seed)
    instrument_seed = seed if seed is not None else (c.seed or 0)
    if c.instrument.file is not None or c.instrument.devices is not None:
        from instruments import _epics

        spec = _epics.declared_spec(c.instrument, loaded.base_dir)
        from instruments import input_specs

        instrument: Any = _epics.build_declared_instrument(
            spec,
            input_specs(c.parameters),
            units=_epics.parameter_units(c.parameters),
            connect=False,
        )
    else:
        instrument = build_instrument(
            c.instrument, c.parameters, base_dir=loaded.base_dir, seed=instrument_seed
        )
    try:
        refused = _refusals(instrument, point)
        sim = RunEngineSimulator()
        sim.add_handler("read", lambda msg: _placeholder(msg.obj))
        messages = sim.simulate_plan(trial_plan(instrument, point, campaign=c.name, trial_id=0))
    finally:
        if isinstance(instrument, DeclaredInstrument):
            instrument.spec = instrument.spec.model_copy(update={"on_stop": {}})
        instrument.close()
    console.print(
        f"[bold]{c.name}[/]: next trial at "
        + ", ".join(f"{k}={_fmt(v)}" for k, v in point.items()),
        highlight=False,
    )
    if refused:
        for reason in refused:
            console.print(f"[red]refused before dispatch:[/] {escape(reason)}", highlight=False)
        console.print("no message would be sent; the trial would fail with that reason")
        raise typer.Exit(1)
    for i, msg in enumerate(messages, 1):
        obj = getattr(msg.obj, "name", None) if msg.obj is not None else None
        args = ", ".join(_fmt(a) for a in msg.args)
        kwargs = ", ".join(f"{k}={'None' if v is None else _fmt(v)}" for k, v in msg.kwargs.items())
        parts = [p for p in (obj, args, kwargs) if p]
        console.print(f"{i:>3}  {msg.command:<12} {escape(' '.join(parts))}", highlight=False)


def _point(loaded: Any, at: list[str], seed: int | None) -> dict[str, Any]:
    c = loaded.campaign
    given: dict[str, Any] = {}
    for item in at:
        name, sep, text = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--at {item!r}: write name=value")
        try:
            given[name] = float(text) if "." in text or "e" in text.lower() else int(text)
        except ValueError:
            given[name] = text
    names = [p.name for p in c.parameters]
    unknown = [n for n in given if n not in names]
    if unknown:
        raise typer.BadParameter(f"--at: {unknown} are not parameters; parameters: {names}")
    if len(given) == len(names):
        return {n: given[n] for n in names}
    from planners import make_planner

    planner = make_planner(
        c.space, list(c.objectives), c.planner, seed if seed is not None else (c.seed or 0)
    )
    proposal = dict(planner.suggest(1, [])[0])
    proposal.update(given)
    return {n: proposal[n] for n in names}


def _refusals(instrument: Any, point: dict[str, Any]) -> list[str]:
    """What the dispatcher's pre-check would refuse (limits only: max_step needs a reading)."""
    from instruments._epics import InputDevice
    from instruments._safety import check_setpoint

    out: list[str] = []
    for name, device in instrument.inputs.items():
        try:
            if isinstance(device, InputDevice):
                check_setpoint(
                    name, point[name], limits=device.decl.limits, max_step=None, current=None
                )
            elif hasattr(device, "check_value"):
                device.check_value(point[name])
        except Exception as exc:
            out.append(str(exc))
    return out


def _placeholder(obj: Any) -> dict[str, Any]:
    keys = obj.describe() if hasattr(obj, "describe") else {}
    return {k: {"value": math.nan, "timestamp": 0.0} for k in keys}
