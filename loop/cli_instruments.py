"""Technician tools: ``closedloop instruments check FILE`` and ``closedloop plan FILE --dry-run``.

``instruments check`` connects every device of an instrument file and prints what it sees;
``plan --dry-run`` prints the exact Bluesky messages the engine would send for the next
proposal (or a given point), from bluesky's ``RunEngineSimulator``: no RunEngine runs and no
message reaches a device.
"""

from __future__ import annotations

import math
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from loop.config import read_number
from loop.errors import STORE_ENV, CampaignConfigError, cli_command, shell_word
from loop.fmt import Output, WholeTable, number, parameter, specs

instruments_app = typer.Typer(
    name="instruments",
    help="Check the instruments declared in an instrument file.",
    no_args_is_help=True,
    add_completion=False,
)
console = Output(soft_wrap=True)
err_console = Output(stderr=True, soft_wrap=True)  # refusals: a script reads stdout as results


@instruments_app.command("check")
def check(
    file: Annotated[
        Path | None,
        typer.Argument(help="Instrument YAML file (or a campaign using one); not with --store."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Seconds to wait for each connection.")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Check the devices of a campaign stored here as `closedloop resume` builds "
            "them: its stored instrument, with the stricter of its and the file's safety "
            "settings.",
        ),
    ] = None,
    campaign: Annotated[
        str | None,
        typer.Option(
            "--campaign",
            "-c",
            help="With --store: campaign name or id (default: the latest unfinished one).",
        ),
    ] = None,
) -> None:
    """Connect every device; print name, PV, connected, value, limits, device limits, units.

    Exits 1 if anything is missing (or connected but not answering), outside its limits, an
    input's limits (or a campaign's bounds) reach outside its device's own limits (a
    setpoint PV's DRVL/DRVH, a motor's LLM/HLM), a safe state (on_stop) lies outside them,
    an input's PV is not a number or its EGU (a motor's too) is not the file's unit, no
    trial could start within max_step of where a device is, or an interlock does not hold.
    Notes (a reading outside the campaign's bounds, a safe state approached in steps) are
    shown but do not fail the check.
    """
    from instruments._build import subscription_factories
    from instruments._epics import build_declared_instrument
    from instruments._instrument_file import InstrumentFileError

    if file is not None and store is not None:
        raise typer.BadParameter("give an instrument or campaign FILE, or --store URL: not both")
    if campaign is not None and store is None:
        raise typer.BadParameter("-c/--campaign picks a stored campaign: give --store too")
    if store is not None:
        spec, params, units, from_campaign, where = _stored_declared(store, campaign)
    elif file is not None:
        spec, params, units, from_campaign = _declared(file)
        where = str(file)
    else:
        raise typer.BadParameter("give an instrument or campaign FILE, or --store URL")
    try:
        inst = build_declared_instrument(
            spec, params, units=units, connect=False, bounds_known=from_campaign
        )
    except InstrumentFileError as exc:  # a device class or its constructor: exit 2, its line
        raise CampaignConfigError(exc.path, exc.problem, line=exc.line, fix=exc.fix) from None
    try:
        # imported, not called: a factory may connect to a server a check must not need
        consumers = [ref for ref, _ in subscription_factories(spec)]
        rows = inst.check(timeout=timeout)
    except InstrumentFileError as exc:
        raise CampaignConfigError(exc.path, exc.problem, line=exc.line, fix=exc.fix) from None
    finally:
        inst.close(safe_state=False)  # a check sets nothing
    bad = 0
    cells = []
    for r in rows:
        ok = r.connected and r.problem is None
        bad += not ok
        if r.problem:
            said = f"[red]{escape(r.problem)}[/]"
        else:
            said = f"[yellow]note: {escape(r.note)}[/]" if r.note else ""
        cells.append(
            [
                escape(r.name),
                r.role,
                escape(r.source),
                "[green]yes[/]" if r.connected else "[red]no[/]",
                escape(number(r.value)),
                _range(r.limits),
                _range(r.device_limits),
                escape(r.units or ""),
                said,
            ]
        )
    headers = ["name", "role", "source", "connected", "value", "limits", "device limits"]
    headers += ["units", "problem"]
    title = f"{escape(spec.name)} ({escape(where)})"
    console.print(WholeTable(title, headers, cells, {4, 5, 6}))
    for r in rows:
        if r.note and not r.problem:
            console.print(
                f"[yellow]note:[/] {escape(f'{r.name} {r.source}: {r.note}')}", highlight=False
            )
    if consumers:
        console.print(
            f"every run's documents also go to: {', '.join(consumers)} (imported; each "
            "factory is called when a campaign starts)",
            markup=False,
            highlight=False,
        )
    if bad:
        console.print(f"[red]{bad} problem(s)[/]")
        for r in rows:
            if not (r.connected and r.problem is None):
                what = r.problem if r.connected else f"not connected ({r.problem})"
                console.print(f"  {r.name} {r.source}: {what}", markup=False, highlight=False)
        raise typer.Exit(1)
    console.print("[green]all devices connected, within limits, interlocks hold[/]")


def _range(limits: tuple[float, float] | None) -> str:
    """``[low, high]`` for a table cell (escaped: rich would read it as markup)."""
    return "" if limits is None else escape(f"[{limits[0]:g}, {limits[1]:g}]")


def _stored_declared(
    url: str, campaign: str | None
) -> tuple[Any, Any, dict[str, str | None], bool, str]:
    """As :func:`_declared`, for a stored campaign: the instrument ``resume`` builds (its
    stored text, with the stricter of its and the file's safety settings on disk), and the
    campaign as the table's title names it."""
    from instruments import input_specs
    from instruments._epics import declared_spec, parameter_units
    from instruments._instrument_file import InstrumentFileError, input_units
    from loop.runner import Runner
    from loop.store import Store

    db = Store(url, read_only=True)
    try:
        row = db.campaign(campaign) if campaign is not None else db.latest_to_preview()
        loaded = Runner.from_store(db, row.id or 0).loaded
    finally:
        db.close()
    c = loaded.campaign
    if c.instrument.file is None and c.instrument.devices is None:
        raise CampaignConfigError(
            loaded.path,
            f"campaign '{c.name}' in {db.url} has no instrument file or inline devices",
            fix="`closedloop instruments check` checks EPICS and plugin devices only",
        )
    try:
        spec = declared_spec(c.instrument, loaded.base_dir)
        units = parameter_units(c.parameters)
        input_units(spec, units)
    except InstrumentFileError as exc:
        raise CampaignConfigError(exc.path, exc.problem, line=exc.line, fix=exc.fix) from None
    where = f"campaign '{c.name}' (id {row.id}) in {db.url}"
    return spec, input_specs(c.parameters), units, True, where


def _declared(file: Path) -> tuple[Any, Any, dict[str, str | None], bool]:
    """The instrument file's spec, its inputs, their campaign units and whether the inputs
    carry a campaign's bounds, from an instrument file (placeholder bounds) or from a
    campaign whose ``instrument:`` is a ``file:`` or inline ``devices:`` (then the
    parameters' ``unit`` fills in inputs that declare none, and ``check`` compares the
    bounds with each setpoint PV's own limits)."""
    from instruments import input_specs
    from instruments._epics import declared_spec, parameter_units
    from instruments._instrument_file import (
        InstrumentFileError,
        input_units,
        load_instrument_file,
        read_yaml,
    )

    try:
        try:
            spec = load_instrument_file(file)
        except InstrumentFileError as first:
            # Perhaps a campaign using an instrument file. A file that cannot be read at
            # all (missing, a directory, a pipe or device, too large, not UTF-8) is
            # neither: the first error says why. Read as every user file is: an unbounded
            # read_text read a link to /dev/zero until MemoryError (found in review).
            try:
                text = _campaign_text(file)
            except CampaignConfigError:
                raise first from None
            data = read_yaml(text, file)
            if not ("parameters" in data and "instrument" in data):
                raise
        else:
            # On its own the file is its only source of units: an input's `device_units`
            # without `units:` is refused here as `validate` refuses it for a campaign.
            input_units(spec, {})
            return spec, input_specs([(n, (0.0, 1.0)) for n in spec.inputs]), {}, False
        from loop.config import load_campaign

        loaded = load_campaign(file, import_plugin=False)  # it proposes nothing: no plugin code
        c = loaded.campaign
        if c.instrument.file is None and c.instrument.devices is None:
            raise CampaignConfigError(
                file,
                "the campaign's instrument is not an instrument file",
                fix="give `instrument: {file: instrument.yaml}` (or check the instrument file)",
            )
        spec = declared_spec(c.instrument, loaded.base_dir)
        units = parameter_units(c.parameters)
        input_units(spec, units)
        return spec, input_specs(c.parameters), units, True
    except InstrumentFileError as exc:
        raise CampaignConfigError(exc.path, exc.problem, line=exc.line, fix=exc.fix) from None


def plan(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Campaign YAML file (with --store: names the stored campaign to plan for)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the messages; touch no hardware.")
    ] = False,
    at: Annotated[
        list[str] | None,
        typer.Option("--at", help="A parameter value, name=value (repeat); default: proposal."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(min=0, max=2**32 - 1, help="Override the file's seed (0 to 2**32-1)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Plan the next trial of a campaign stored here (its planner rebuilt from "
            "every stored trial), as `closedloop resume` would run it.",
        ),
    ] = None,
    campaign: Annotated[
        str | None,
        typer.Option(
            "--campaign",
            "-c",
            help="With --store: campaign name or id (default: the latest unfinished one of "
            "FILE's name, or the latest unfinished one).",
        ),
    ] = None,
) -> None:
    """Print the exact Bluesky messages of the next trial (the planner's next proposal, or
    the point given with --at), without touching hardware.

    The proposal is the one `closedloop run` makes first (after the file's prior_data). With
    --store it is the one a resumed campaign would make next: the stored campaign (its stored
    file and instrument text) with its planner rebuilt from the store's trials, trials left
    running by a crash reconciled as resume would; nothing is written to the store.
    """
    from bluesky.simulators import RunEngineSimulator

    from instruments import trial_plan
    from instruments._epics import DeclaredInstrument
    from loop.config import load_campaign
    from loop.store import Store

    if not dry_run:
        raise typer.BadParameter("only --dry-run is supported: `closedloop run` runs trials")
    if store is not None:
        if seed is not None:
            raise typer.BadParameter(
                "a stored campaign is planned with its stored seed (as `closedloop resume` "
                "runs it); drop --seed with --store",
                param_hint="'--seed'",
            )
        db = Store(store, read_only=True)  # a preview: the store is not written
        store = db.url  # what messages show: a password in the URL as ***
    elif file is None:
        raise typer.BadParameter("give a campaign FILE, or --store URL for a stored campaign")
    else:
        if campaign is not None:
            raise typer.BadParameter("-c/--campaign picks a stored campaign: give --store too")
        loaded = load_campaign(file)
        # The campaign as `run` starts it, in a store of its own that lives in memory only.
        db = Store("sqlite://", scratch=True)
    try:
        if store is not None:
            runner, point, header, notes, found = _stored_point(db, store, file, campaign, at or [])
        else:
            runner, point, header, notes, found = _file_point(db, loaded, at or [], seed)
        c = runner.campaign
        stop = _would_stop(runner, db, *found)
        if stop is not None:
            # The runner's own stop rule holds already (a target the prior data meet, a
            # budget spent): say so first, or the preview reads as what `run` will do next.
            # The point is still shown: it is what a larger budget or goal would measure.
            command = "resume" if store is not None else "run"
            # Only a budget can be extended: a target met or patience run out holds whatever
            # the budget (`resume` refuses; this note once told to extend it, found in review).
            extend = (
                f" (`{cli_command('resume', store, runner.campaign_id, stop.option)}` extends it)"
                if store is not None and stop.option is not None
                else ""
            )
            notes.insert(
                0,
                f"`closedloop {command}` would stop at once and measure no trial ({stop.reason})"
                "; the trial below is what it would measure once that no longer holds" + extend,
            )
        instrument = _dry_instrument(runner.loaded, runner.seed)
        try:
            refused = _refusals(runner, instrument, point)
            sim = RunEngineSimulator()
            sim.add_handler("read", lambda msg: _placeholder(msg.obj))
            # The campaign's run metadata too, so the preview's open_run shows what `run`
            # records (campaign_uid and the trial's number and id come when it runs).
            plan = trial_plan(
                instrument, point, campaign=c.name, trial_id=0, md=dict(runner.loaded.metadata)
            )
            messages = sim.simulate_plan(plan)
        finally:
            if isinstance(instrument, DeclaredInstrument):
                instrument.close(safe_state=False)  # a preview sets nothing
            else:
                instrument.close()
    finally:
        db.close()
    # what will be set, as `suggest` shows it: to 1e-6 of each parameter's range
    spec = specs(c.parameters)
    console.print(
        header
        + escape(
            ", ".join(f"{k}={parameter(v, spec.get(k), setpoint=True)}" for k, v in point.items())
        ),
        highlight=False,
    )
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for name, outside in _outside_space(c, point):
        if name in refused:  # said below, as the refusal
            continue
        console.print(
            f"[yellow]note:[/] {escape(outside)}: the planner never proposes such a point",
            highlight=False,
        )
    if refused:
        for reason in refused.values():
            console.print(f"[red]refused before dispatch:[/] {escape(reason)}", highlight=False)
        console.print(
            "no message would be sent; the trial would fail with "
            + ("that reason" if len(refused) == 1 else "the first of these reasons")
        )
        raise typer.Exit(1)
    before, after = (
        instrument.plan_notes() if callable(getattr(instrument, "plan_notes", None)) else ([], [])
    )
    for line in before:
        console.print(f"     {escape(line)}", highlight=False)
    for i, msg in enumerate(messages, 1):
        obj = getattr(msg.obj, "name", None) if msg.obj is not None else None
        # a set of a parameter's device is written as the point above, the rest as readings
        p = spec.get(obj) if msg.command == "set" and obj is not None else None
        args = ", ".join(parameter(a, p, setpoint=True) if p else number(a) for a in msg.args)
        if msg.command == "set":
            args += _at_the_device(msg.obj, msg.args)
        kwargs = ", ".join(f"{k}={number(v, none='None')}" for k, v in msg.kwargs.items())
        parts = [p for p in (obj, args, kwargs) if p]
        console.print(f"{i:>3}  {msg.command:<12} {escape(' '.join(parts))}", highlight=False)
        hardware = _hardware_note(msg)
        if hardware:
            console.print(f"{'':>17} {escape(hardware)}", highlight=False, style="dim")
    for line in after:
        console.print(f"     {escape(line)}", highlight=False)


def _hardware_note(msg: Any) -> str:
    """What a message does at a declared instrument's hardware (its PVs, what is waited
    for, for how long), or ``""``: a simulator's devices are the messages themselves."""
    how = {"set": "hardware_note", "trigger": "trigger_note", "read": "read_note"}
    method = getattr(msg.obj, how.get(msg.command, ""), None) if msg.obj is not None else None
    if not callable(method):
        return ""
    if msg.command == "set" and msg.args:  # where to: a ramp's steps from where it is now
        return f"-> {method(msg.args[0])}"
    return f"-> {method()}"


def _would_stop(
    runner: Any, db: Any, history: list[Any], observations: dict[int, dict[str, float]]
) -> Any:
    """Why ``run`` (``resume`` for a stored campaign) would stop before its first trial, by
    the runner's own rule (``Runner.spent``: a target the prior data already meet,
    patience, a budget already spent, with the option that extends it, if one does), or
    ``None``. ``history`` and ``observations``: the trials and outputs as that first trial
    finds them, those a crash left running reconciled (the last trial of a budget, or one
    that met the target: weighed on the stored rows, the preview said the campaign would
    go on; found in review)."""
    elapsed = db.campaign(runner.campaign_id).elapsed_seconds or 0.0
    return runner.spent(history, elapsed, observations)


def _at_the_device(device: Any, args: tuple[Any, ...]) -> str:
    """For a ``set`` of an input with ``device_units``: its campaign unit and the value the
    device is given, converted by the input's own converter (nothing connects)."""
    from instruments._epics import InputDevice

    if not isinstance(device, InputDevice) or not args:
        return ""
    device_units = device.decl.device_units
    if device_units is None or device_units == device.units:
        return ""
    try:
        converted = device._to_device(args[0])
    except Exception:  # not a number: the dispatcher's check refuses it before this
        return ""
    return f" {device.units} ({number(converted)} {device_units} at the device)"


#: How long ``plan --dry-run`` waits at most for the inputs' PVs to connect (an IOC that
#: answers takes milliseconds; one that is down costs this, and its inputs say unchecked).
DRY_RUN_CONNECT_SECONDS = 2.0


def _dry_instrument(loaded: Any, seed: int) -> Any:
    """The campaign's instrument, built without connecting to any device."""
    from instruments import _epics, build_instrument, input_specs
    from instruments._instrument_file import InstrumentFileError

    c = loaded.campaign
    if c.instrument.file is not None or c.instrument.devices is not None:
        spec = _epics.declared_spec(c.instrument, loaded.base_dir)
        try:
            instrument = _epics.build_declared_instrument(
                spec,
                input_specs(c.parameters),
                units=_epics.parameter_units(c.parameters),
                connect=False,
            )
        except InstrumentFileError as exc:  # the file's line, exit 2 (as `instruments check`)
            raise CampaignConfigError(exc.path, exc.problem, line=exc.line, fix=exc.fix) from None
        # PVs whose IOC answers get checked against their own limits, every time
        instrument.await_pvs(min(spec.connection_timeout, DRY_RUN_CONNECT_SECONDS))
        return instrument
    return build_instrument(c.instrument, c.parameters, base_dir=loaded.base_dir, seed=seed)


def _proposal(
    runner: Any,
    history: list[Any],
    observations: dict[int, dict[str, float]],
    given: dict[str, Any],
    pending: list[Any],
) -> dict[str, Any]:
    """The point to preview: every ``--at`` value, the rest from the proposal of the
    planner the runner rebuilds from ``history`` (built only when a value is missing)."""
    names = [p.name for p in runner.campaign.parameters]
    if len(given) == len(names):
        return {n: given[n] for n in names}
    from loop.scheduler import call_planner, check_proposals

    planner = runner.rebuild_planner(history, observations)
    # checked as `run` checks it: a preview of a point `run` refuses would be no preview; a
    # plugin that raises is refused in `run`'s words (its PluginRaised)
    ((proposal, _),) = check_proposals(
        planner, 1, call_planner(planner, "suggest", 1, pending=pending), runner.space
    )
    proposal.update(given)
    return {n: proposal[n] for n in names}


def _file_point(
    db: Any, loaded: Any, at: list[str], seed: int | None
) -> tuple[Any, dict[str, Any], str, list[str], tuple[list[Any], dict[int, dict[str, float]]]]:
    """The first trial ``closedloop run`` would measure: the campaign created as ``run``
    creates it (its prior data stored first) in ``db``, a throwaway in-memory store, and its
    planner rebuilt from those trials as ``run`` rebuilds it."""
    from loop.runner import Runner

    c = loaded.campaign
    given = _given(loaded, at)
    runner = Runner(loaded, db, seed=seed if seed is not None else (c.seed or 0))
    cid = runner.create()  # reads and checks the prior data as `run` does
    history = db.trials(cid)
    observations = db.observations(cid)
    point = _proposal(runner, history, observations, given, [])
    notes: list[str] = []
    if seed is None and c.seed is None and len(given) < len(point):
        notes.append(
            "the file has no `seed:`: this preview uses seed 0, while `closedloop run` draws "
            "a random seed, so its first point will differ; give the same --seed N to both "
            "plan and run"
        )
    prior = f" (after {len(history)} prior-data rows)" if history else ""
    header = f"[bold]{escape(c.name)}[/]{prior}: next trial at "
    return runner, point, header, notes, (history, observations)


def _stored_point(
    db: Any, url: str, file: Path | None, campaign: str | None, at: list[str]
) -> tuple[Any, dict[str, Any], str, list[str], tuple[list[Any], dict[int, dict[str, float]]]]:
    """The next proposal of a stored campaign, the one ``closedloop resume`` measures next:
    its planner rebuilt from the stored trials, those a crash left running given the outcome
    resume's reconciliation would give them (only ask/tell suggestions awaiting ``tell`` stay
    pending); the store is not written."""
    from loop.asktell import awaiting_tell
    from loop.lock import live_lease
    from loop.retries import announced_retries
    from loop.runner import Runner
    from loop.store import UNFINISHED

    text = _campaign_text(file) if file is not None else None
    if campaign is not None:
        row = db.campaign(campaign)
    elif file is not None and text is not None:
        name = _campaign_name(file, text)
        rows = [r for r in db.campaigns() if r.name == name]
        unfinished = [r for r in rows if r.status in UNFINISHED]
        if not rows:
            # the store named: pasted bare, `run` started the campaign in the default store
            # (review U)
            run = f"closedloop run {shell_word(str(file))} --store {shell_word(url)}"
            raise typer.BadParameter(
                f"no campaign named '{name}' in store {url}; `{run}` starts it, or plan "
                "without --store"
            )
        row = (unfinished or rows)[-1]
    else:
        row = db.latest_to_preview()
    cid = row.id or 0
    runner = Runner.from_store(db, cid)
    notes: list[str] = []
    if file is not None and text != row.config_text:
        notes.append(
            f"{file} differs from the text stored with campaign {cid}; planning the stored campaign"
        )
    history = db.trials(cid)
    observations = db.observations(cid)
    waiting = awaiting_tell(db, history)
    if live_lease(db, cid) is not None:
        # A runner is measuring them right now: in flight (pending), not left by a crash.
        waiting = [t for t in history if t.status == "running"]
        notes.append(
            f"campaign {cid} is being run right now: its {len(waiting)} trial(s) in flight "
            "count as pending; the point shown is not what that runner measures next"
        )
    told = {t.id for t in waiting}
    left = [t for t in history if t.status == "running" and t.id not in told]
    outcomes = _as_resume_reconciles(runner, left)
    history = [outcomes[t.id][0] if t.id in outcomes else t for t in history]
    observations.update({tid: outputs for tid, (_, outputs) in outcomes.items()})
    given = _given(runner.loaded, at)
    # a retry the last session owed is what `resume` measures first (Runner.owed_retries),
    # named as resume names it: its point's first trial
    owed = announced_retries(history, runner.owed_retries(history)) if not at else []
    if owed:
        first = next(t for t in history if t.number == owed[0].number)
        point = {p.name: first.parameters[p.name] for p in runner.campaign.parameters}
    else:
        pending = [dict(t.parameters) for t in waiting]
        point = _proposal(runner, history, observations, given, pending)
    done = sum(t.status != "running" for t in history)
    extra = ""
    if left:
        how = ", ".join(f"#{outcomes[t.id][0].number} {outcomes[t.id][0].status}" for t in left)
        extra += f", {len(left)} left running, reconciled as resume would: {how}"
    if waiting:
        extra += f", {len(waiting)} pending"
    header = (
        f"[bold]{escape(row.name)}[/] (id {cid}, {escape(row.status)}, {done} stored trials"
        f"{escape(extra)}) in {escape(url)}: next trial #{len(history) + 1}"
        f"{f' (a retry of trial #{owed[0].first})' if owed else ''} at "
    )
    return runner, point, header, notes, (history, observations)


def _as_resume_reconciles(
    runner: Any, running: list[Any]
) -> dict[Any, tuple[Any, dict[str, float]]]:
    """Trial id -> (the trial, outputs) as ``resume`` records a trial a crash left running
    (``Runner.reconciliations``: the same decision from its stored documents), nothing
    written."""
    out: dict[Any, tuple[Any, dict[str, float]]] = {}
    for trial, outcome in runner.reconciliations(running):
        row = trial.model_copy(
            update={
                "status": outcome.status,
                "readbacks": outcome.readbacks,
                "run_uid": outcome.run_uid,
                "error": outcome.error,
                "transient": outcome.transient,
            }
        )
        out[trial.id] = (row, dict(outcome.outputs))
    return out


def _campaign_text(file: Path) -> str:
    """A campaign file's text, or a one-line error naming it (a missing file was a
    traceback when the campaign was also named with ``-c``)."""
    from loop.config import MAX_FILE_BYTES
    from simulators._text import TextFileError, read_text

    try:
        return read_text(file, kind="campaign file", max_bytes=MAX_FILE_BYTES)
    except TextFileError as exc:
        raise CampaignConfigError(file, exc.problem, line=exc.line, fix=exc.fix) from None


def _campaign_name(file: Path, text: str) -> str:
    """A campaign file's ``name:`` (the stored campaign, not the file, is then validated: its
    instrument file may be gone)."""
    from instruments._yamlfile import read_yaml_mapping

    data = read_yaml_mapping(text, file, error=CampaignConfigError, example="branin.yaml")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise CampaignConfigError(file, "has no `name:` to find its stored campaign by")
    return name


def _given(loaded: Any, at: list[str]) -> dict[str, Any]:
    """``--at name=value`` pairs, each read as its parameter's value as ``tell --actual``
    reads it (:func:`loop.config.parameter_value`).

    A value the parameter cannot take is kept as written (a number for a numeric
    parameter), not refused: the preview then shows what the dispatcher's own check and the
    space say of it (a choice it does not have, a setpoint outside the hardware limits, a
    fraction for an int), as for any point.
    """
    from loop.asktell import InvalidInput, parse_assignments
    from loop.config import parameter_value

    params = {p.name: p for p in loaded.campaign.parameters}
    try:
        texts = parse_assignments(at, "--at")
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc)) from None
    unknown = [n for n in texts if n not in params]
    if unknown:
        raise typer.BadParameter(f"--at: {unknown} are not parameters; parameters: {list(params)}")
    given: dict[str, Any] = {}
    for name, text in texts.items():
        try:
            given[name] = parameter_value(params[name], text)
        except ValueError:
            given[name] = text.strip()
            param = params[name]
            # a number for a numeric parameter, or one fixed to a number: the space then says
            # "fixed to 1.5" (as text, `p=99` was refused as "not a number")
            fixed = getattr(param, "value", None) if param.type == "fixed" else None
            if param.type in ("int", "float") or (
                isinstance(fixed, int | float) and not isinstance(fixed, bool)
            ):
                with suppress(ValueError):
                    given[name] = read_number(text)  # not float(): it read 5_0 as 50
    return given


def _outside_space(c: Any, point: dict[str, Any]) -> list[tuple[str | None, str]]:
    """Why a ``--at`` point is no member of the campaign's space, as ``(parameter, why)``:
    each parameter whose value it cannot take (outside its bounds, not an integer, not one
    of its values, not a fixed parameter's value), one each (the first alone used to be
    noted); else a parameter constraint or a lookup dataset's rows (``None``: no one
    parameter's); empty if it is a member."""
    from planners import InvalidPoint

    try:
        space = c.space
    except Exception:  # a stored dataset campaign whose data has moved: nothing to check
        return []
    # each parameter on its own: the others at a value they can take
    anywhere = {p.name: _a_value(p) for p in space.parameters}
    notes: list[tuple[str | None, str]] = []
    for name, value in point.items():
        if name not in anywhere:
            continue
        try:
            space.coerce({**anywhere, name: value})
        except InvalidPoint as exc:
            notes.append((name, str(exc)))
        except Exception:  # a parameter with no value to stand in for it: not judged alone
            continue
    if notes:
        return notes
    try:
        space.validate(point)
    except InvalidPoint as exc:
        return [(None, str(exc))]
    return []


def _a_value(param: Any) -> Any:
    """A value ``param`` can take (its fixed value, a choice, its lower bound)."""
    if hasattr(param, "value"):
        return param.value
    values = getattr(param, "values", None)
    if values:
        return values[0]
    return param.bounds[0]


def _refusals(runner: Any, instrument: Any, point: dict[str, Any]) -> dict[str, str]:
    """What the dispatcher's own pre-check refuses, each parameter's (a trial fails at the
    first): a ``Dispatcher`` built with the runner's arguments checks the point (choices,
    numbers, each input's ``check_value``: limits, and ``max_step`` only for an input
    already connected, as the dry run waits for none)."""
    from instruments._dispatch import Dispatcher

    dispatcher = Dispatcher(instrument, **runner._dispatcher_kwargs())
    try:
        return dispatcher.refusals(point)
    finally:
        dispatcher.close()


def _placeholder(obj: Any) -> dict[str, Any]:
    keys = obj.describe() if hasattr(obj, "describe") else {}
    return {k: {"value": math.nan, "timestamp": 0.0} for k in keys}


# ---------------------------------------------------------------------------- paused campaigns
def release(
    store: Annotated[
        str,
        typer.Option(
            "--store",
            envvar=STORE_ENV,
            help="SQLAlchemy URL of the store, e.g. sqlite:///runs/lab.db.",
        ),
    ] = "sqlite:///closedloop.db",
    campaign: Annotated[
        str | None,
        typer.Option("--campaign", "-c", help="Campaign name or id (default: the latest paused)."),
    ] = None,
    confirm: Annotated[
        bool,
        typer.Option(
            "--confirm",
            help="I have checked the hardware: let the waiting trial proceed DESPITE the "
            "interlocks that do not hold.",
        ),
    ] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Who releases it (recorded; default user@host).")
    ] = None,
    note: Annotated[str, typer.Option("--note", help="Why (recorded with the release).")] = "",
    wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait for the runner to act on the release."),
    ] = 0.0,
) -> None:
    """Let a campaign paused by its interlocks proceed despite them (one trial; recorded).

    The campaign's runner (another process) waits at the start of a trial while an interlock
    does not hold, and goes on by itself once they all hold. This command overrides that for
    the trial waiting now: it records the release in the store (who, when, what was
    overridden) and the runner picks it up at its next interlock check. The next trial checks
    the interlocks again. Without --confirm it only shows what would be overridden.
    """
    import getpass
    import socket

    from loop.lock import live_lease
    from loop.store import Store

    db = Store(store, create=False)
    store = db.url  # what messages show: a password in the URL as ***
    try:
        row = _paused_campaign(db, campaign)
        cid = row.id or 0
        reason = row.stop_reason or "interlocks do not hold"
        if live_lease(db, cid) is None:
            err_console.print(
                f"campaign '{row.name}' (id {cid}) was paused ({reason}) but no runner is "
                f"driving it now, so there is nothing to release; "
                f"`{cli_command('resume', store, cid)}` checks the interlocks again",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(2)  # refused as given, as `resume` with nothing to resume
        if not confirm:
            err_console.print(
                f"campaign '{row.name}' (id {cid}) is paused: {reason}\n"
                "It goes on by itself once the interlocks hold. To let the waiting trial "
                "proceed DESPITE them, check the hardware and repeat with --confirm (the "
                "release is recorded with your name).",
                markup=False,
                highlight=False,
            )
            # Refused as given (`--confirm` missing), as other refused input: 2. Not 0, or
            # `closedloop release -c 3 && echo released` would report an override that
            # never happened.
            raise typer.Exit(2)
        who = by or f"{getpass.getuser()}@{socket.gethostname()}"
        detail = reason + (f" (note: {note})" if note else "")
        event = db.request_release(cid, by=who, detail=detail)
        console.print(
            f"release of campaign '{row.name}' (id {cid}) recorded by {who} at "
            f"{event.at:%Y-%m-%d %H:%M:%S} UTC; the runner proceeds at its next interlock check "
            f"despite: {reason}",
            markup=False,
            highlight=False,
        )
        if wait > 0:
            _await_release(db, cid, event.id or 0, wait)
    finally:
        db.close()


def stop(
    store: Annotated[
        str,
        typer.Option(
            "--store",
            envvar=STORE_ENV,
            help="SQLAlchemy URL of the store, e.g. sqlite:///runs/lab.db.",
        ),
    ] = "sqlite:///closedloop.db",
    campaign: Annotated[
        str | None,
        typer.Option(
            "--campaign", "-c", help="Campaign name or id (default: the one a runner drives)."
        ),
    ] = None,
    abort: Annotated[
        bool,
        typer.Option(
            "--abort",
            help="Abort the trials being measured (stored as abandoned), as Ctrl-C in the "
            "runner's terminal does, instead of letting them finish.",
        ),
    ] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Who stops it (recorded; default user@host).")
    ] = None,
    note: Annotated[str, typer.Option("--note", help="Why (recorded with the stop).")] = "",
    wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait for the runner to stop (0: do not wait)."),
    ] = 0.0,
) -> None:
    """Stop a running campaign from another terminal, once its trials in flight are stored.

    The campaign's runner (another process, perhaps under nohup or on another machine that
    shares the store) starts no new trial and stops once the trials being measured are
    measured and stored: a trial of hours is not thrown away, as the first Ctrl-C in its
    terminal throws it away. It takes the request before it starts a trial, and at its
    heartbeats (every 6 s) between. The campaign is then `stopped`, and `closedloop resume`
    continues it. --abort aborts the
    trials in flight instead. The request is recorded (who, when, why).
    """
    import getpass
    import socket
    import time

    from loop.lock import LEASE_TTL, live_lease
    from loop.store import ACTIVE, Store

    db = Store(store, create=False)
    store = db.url  # what messages show: a password in the URL as ***
    try:
        if campaign is not None:
            row = db.campaign(campaign)
        else:
            driven = [r for r in db.campaigns() if r.status in ACTIVE and live_lease(db, r.id or 0)]
            if not driven:
                err_console.print(
                    f"no campaign in store {store} has a runner driving it: there is nothing "
                    "to stop",
                    markup=False,
                    highlight=False,
                )
                raise typer.Exit(2)
            if len(driven) > 1:
                names = ", ".join(f"'{r.name}' (id {r.id})" for r in driven)
                err_console.print(
                    f"{len(driven)} campaigns in store {store} have a runner driving them "
                    f"({names}); name the one to stop with -c NAME|ID",
                    markup=False,
                    highlight=False,
                )
                raise typer.Exit(2)
            row = driven[0]
        cid = row.id or 0
        if row.status not in ACTIVE or live_lease(db, cid) is None:
            err_console.print(
                f"campaign '{row.name}' (id {cid}) is {row.status} and no runner is driving "
                "it now, so there is nothing to stop"
                + (f"; `{cli_command('status', store, cid)}` shows what it holds"),
                markup=False,
                highlight=False,
            )
            raise typer.Exit(2)  # refused as given, as `release` with nothing to release
        lease = live_lease(db, cid)
        if lease is not None and lease.heartbeat < time.time() - 2 * LEASE_TTL / 5:
            err_console.print(
                f"note: its runner's last heartbeat was {time.time() - lease.heartbeat:.0f} s "
                "ago: it may be hung or stopped (Ctrl-Z), and takes the request only once it "
                f"runs again; `{cli_command('status', db.url, cid)}` says more",
                markup=False,
                highlight=False,
            )
        who = by or f"{getpass.getuser()}@{socket.gethostname()}"
        event = db.request_stop(cid, by=who, detail=note.strip(), abort=abort)
        beat = LEASE_TTL / 5
        what = (
            "aborts the trials in flight (stored as abandoned) and stops"
            if abort
            else "starts no new trial and stops once the trials in flight are measured and "
            "stored (`closedloop stop --abort` aborts them instead)"
        )
        console.print(
            f"stop of campaign '{row.name}' (id {cid}) recorded by {who} at "
            f"{event.at:%Y-%m-%d %H:%M:%S} UTC; before its next trial, or at its next "
            f"heartbeat (within {beat:g} s), the runner {what}",
            markup=False,
            highlight=False,
        )
        if row.status == "paused" and not abort:
            console.print(
                "note: the campaign is paused on its interlocks; the trial waiting there "
                "runs once they hold, then the campaign stops (with --abort it stops now: "
                "that trial has measured nothing yet)",
                markup=False,
                highlight=False,
            )
        if wait > 0:
            _await_stop(db, cid, wait)
    finally:
        db.close()


def _await_stop(db: Any, campaign_id: int, wait: float) -> None:
    """Wait (at most ``wait`` s) until the runner has let go of the campaign; say how the
    campaign ended (by this stop, or by its budget if that came first)."""
    import time

    from loop.lock import live_lease
    from loop.store import ACTIVE

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if live_lease(db, campaign_id) is None:
            row = db.campaign(campaign_id)
            if row.status in ACTIVE:  # no runner let go of it: its heartbeats stopped
                err_console.print(
                    f"the runner did not take the stop: it stopped heartbeating (it died or "
                    f"hung) and the campaign is still {row.status}; "
                    f"`{cli_command('resume', db.url, campaign_id)}` reconciles its trials",
                    markup=False,
                    highlight=False,
                )
                raise typer.Exit(1)
            reason = f": {row.stop_reason}" if row.stop_reason else ""
            console.print(
                f"the runner ended: the campaign is {row.status}{reason}",
                markup=False,
                highlight=False,
            )
            return
        time.sleep(0.2)
    err_console.print(
        f"the runner has not stopped within {wait:g} s (it takes the request at its next "
        "heartbeat, then waits for the trials in flight); "
        f"`{cli_command('status', db.url, campaign_id)}` shows where it is",
        markup=False,
        highlight=False,
    )
    raise typer.Exit(1)


def _paused_campaign(db: Any, campaign: str | None) -> Any:
    if campaign is not None:
        row = db.campaign(campaign)
        if row.status != "paused":
            err_console.print(
                f"campaign '{row.name}' (id {row.id}) is {row.status}, not paused: there is "
                "nothing to release",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(2)  # refused as given, as `resume` with nothing to resume
        return row
    paused = [r for r in db.campaigns() if r.status == "paused"]
    if not paused:
        err_console.print(
            f"no paused campaign in store {db.url}: there is nothing to release",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)
    return paused[-1]


def _await_release(db: Any, campaign_id: int, event_id: int, wait: float) -> None:
    import time

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        event = next((e for e in db.events(campaign_id) if e.id == event_id), None)
        if event is not None and event.handled_at is not None:
            console.print(f"the runner: {event.outcome}", markup=False, highlight=False)
            return
        time.sleep(0.2)
    err_console.print(
        f"the runner has not acted on it within {wait:g} s (it checks every interlock_poll "
        f"seconds); `{cli_command('status', db.url, campaign_id)}` shows whether the "
        "campaign is still paused",
        markup=False,
        highlight=False,
    )
    raise typer.Exit(1)


def paused_lines(db: Any, row: Any, url: str) -> list[str]:
    """For ``closedloop status``: a paused campaign's reason and what the operator can do,
    the last operator release, and a stop asked of the running campaign (plain text)."""
    from loop.lock import live_lease
    from loop.store import ACTIVE, STOP_REQUESTS, as_utc

    lines: list[str] = []
    if row.status == "paused":
        lines.append(f"PAUSED: waiting for interlocks: {row.stop_reason or 'reason not recorded'}")
        if live_lease(db, row.id or 0) is None:
            lines.append(
                f"  the runner that waited is gone; `{cli_command('resume', db.url, row.id)}` "
                "continues the campaign (checking the interlocks again)"
            )
        else:
            lines.append(
                "  it goes on by itself once they hold; to proceed despite them: "
                f"`{cli_command('release', url, row.id, '--confirm')}`"
            )
    releases = [e for e in db.events(row.id or 0) if e.kind == "release"]
    if releases:
        last = releases[-1]
        state = last.outcome if last.handled_at is not None else "waiting for the runner"
        lines.append(f"last release: by {last.by} at {last.at:%Y-%m-%d %H:%M:%S} UTC: {state}")
    lease = live_lease(db, row.id or 0) if row.status in ACTIVE else None
    stops = list(db.events(row.id or 0, STOP_REQUESTS)) if lease is not None else []
    last = stops[-1] if stops else None
    # a stop this runner's session was given (one taken by an earlier session is history)
    if last is not None and lease is not None and as_utc(last.at).timestamp() >= lease.acquired_at:
        how = "abort the trials in flight" if last.kind == "abort" else "after the trials in flight"
        state = "waiting for the runner" if last.handled_at is None else "the runner is stopping"
        lines.append(f"STOP asked by {last.by} at {last.at:%Y-%m-%d %H:%M:%S} UTC ({how}): {state}")
    return lines
