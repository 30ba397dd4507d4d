"""Who ran a campaign, where, from which trial on, and with which code: its sessions.

A store's trials alone read as one unbroken run, but a campaign that was stopped and resumed,
or extended with a larger ``--max-trials``, is several: the planner of a resumed session is
rebuilt from the store and fits from cold, and the simulated noise restarts its stream from
the number of trials stored (``Runner._instrument_seed``), so the proposals after a resume
differ from those an uninterrupted run would have made, deterministically given where the
boundary was. An auditor needs the boundaries, and who drove each session with which
versions of the planner stack. So every ``run`` and ``resume``, and every ``suggest`` that
stores proposals (ask/tell and prior-only campaigns have no run documents to say it),
records one ``session`` event in the store's ``campaign_event`` table
(:meth:`loop.store.Store.sessions` reads them back; ``closedloop status`` shows them). A
campaign's first session is written in the transaction that creates it, a ``suggest``'s in
the one that stores its proposals (:func:`new_campaign_session`, :func:`suggest_session`):
the record exists exactly when what it records does.

Each ``suggest`` is a session, not only the one that creates the campaign
(:func:`suggest_session`): it is a process of its own (its user, host, command line,
versions, budget override), and it rebuilds the planner from the store and fits it from
cold, as a ``resume`` does, so it is a boundary of the same kind. An auditor asking who
proposed trial 57 of an ask/tell campaign found only the creating ``suggest`` (found in
review). A ``suggest`` that stores nothing (refused, budget spent) proposed nothing and
records nothing, as it writes nothing else. ``status`` stays one line however many there
are: consecutive ``suggest`` sessions of one person on one host are shown as one part
(:func:`session_line`).

A ``function:`` instrument, and a ``planner: {plugin: ...}``, is imported as its code is
now: a file edited (a package upgraded) between sessions measures or proposes the later
trials with other code. The session records the code's origin (a file's sha256; an
installed plugin's distribution and version), a change is recorded as a
``function_changed`` or ``planner_changed`` event naming the first trial the new code
measures or proposes, and every run's start document names the code (``function``,
``planner``). One mechanism for both (:data:`CODE`): a ``suggest`` of a stored campaign
records a changed plugin too, with its session (a function file's change is recorded by the
``run`` or ``resume`` that measures with it: a ``suggest`` measures nothing).

Versions are read from the installed distributions' metadata: nothing is imported for them
(``closedloop status`` and ``suggest`` stay light; instruments never load torch).
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loop.store import Event, shown_url
from simulators._text import file_sha256

if TYPE_CHECKING:
    from loop.prior import PriorRow
    from loop.runner import Runner
    from loop.store import Store

#: The distributions a session names beside the planner stack (``instruments._dispatch.
#: PLANNER_STACK``; {key: distribution}); one not installed is left out (Ax is optional).
SESSION_VERSIONS = {
    "numpy": "numpy",
    "scipy": "scipy",
    "bluesky": "bluesky",
    "ophyd": "ophyd",
    "ophyd_async": "ophyd-async",
    "ax": "ax-platform",
}

#: The user code a campaign's trials depend on, by the key sessions and start documents
#: name it under (``loop.config.code_pins``): what its change is said to have made the
#: trials from then on with, and what ``status`` calls it.
CODE = {"function": ("measured", "function file"), "planner": ("proposed", "planner plugin")}

#: An origin's fields a change is shown by (``status``), in this order.
_ORIGIN_FIELDS = ("file", "sha256", "entry_point", "distribution", "version")

#: A URL in a command line (a ``--store`` with a password): written as messages show it.
_URL = re.compile(r"[A-Za-z][\w+.-]*://\S+")

#: A seed given to the runner (``Runner(seed=...)``, ``run --seed``): ``Runner.seed_source``.
_GIVEN = "argument"


def seed_source(given: int | None, in_file: int | None) -> str:
    """Where a new runner's seed comes from: ``argument``, ``file`` or ``drawn`` (neither:
    the runner draws one, which the store keeps)."""
    if given is not None:
        return _GIVEN
    return "file" if in_file is not None else "drawn"


def user_at_host() -> str:
    """``user@host`` of this process, as ``closedloop release`` records its operator."""
    return f"{_user()}@{socket.gethostname()}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry and no $USER
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def versions() -> dict[str, str]:
    """Python, closedloop and the libraries that decide what a session proposes and runs."""
    # here, not at the top: `closedloop status` reads sessions without loading bluesky
    from instruments._versions import PLANNER_STACK, closedloop_version, installed_versions

    return {
        "python": platform.python_version(),
        "closedloop": closedloop_version(),
        **installed_versions({**PLANNER_STACK, **SESSION_VERSIONS}),
    }


def command_line() -> list[str]:
    """``sys.argv`` as recorded: the program's name without its folder, any URL's password
    as ``***`` (the store keeps the command; a shared store is read by many)."""
    argv = [Path(sys.argv[0]).name if sys.argv else "", *sys.argv[1:]]
    return [_URL.sub(lambda m: shown_url(m.group()), arg) for arg in argv]


def _seed_from(runner: Runner, command: str, argv: Sequence[str], *, stored: bool) -> str:
    """Where the session's seed came from; ``stored``: the campaign was stored before it
    (a ``resume``, a ``suggest`` of a stored campaign), so its seed is the stored one."""
    if stored:
        return "stored"
    source: str = getattr(runner, "seed_source", "unknown")
    if source == _GIVEN and any(a == "--seed" or a.startswith("--seed=") for a in argv):
        return "--seed"
    return source


def _override(before: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, Any]:
    """The budget fields ``now`` sets to another value than ``before``."""
    return {k: v for k, v in now.items() if v is not None and before.get(k) != v}


def _prior_files(prior: Sequence[PriorRow]) -> list[dict[str, Any]]:
    files = dict.fromkeys(Path(row.source) for row in prior)
    return [
        {
            "file": str(f.resolve()),
            "rows": sum(Path(r.source) == f for r in prior),
            "sha256": file_sha256(f),
        }
        for f in files
    ]


@dataclass(frozen=True)
class SessionStart:
    """A session as it begins: the events that record it, for the store to write in the
    transaction of what the session first writes, and what its runs' start documents say."""

    #: ``(kind, by, detail)``: the ``session``, then a ``{what}_changed`` per code changed.
    events: list[Event]
    #: The code the session runs with (``function``: the file and its hash; ``planner``: the
    #: plugin's origin), for every run's start document.
    code: dict[str, dict[str, Any]]


def start_session(
    runner: Runner, command: str, *, prior: Sequence[PriorRow] = ()
) -> dict[str, Any]:
    """Record that ``command`` (``run``, ``resume``, ``suggest``) begins a session of the
    runner's stored campaign, under its lease; record a ``function_changed`` or
    ``planner_changed`` event when the campaign's function file or planner plugin differs
    from the code that made the trials before.

    Called by ``resume`` once every refusal is behind it, before anything is measured. A
    campaign being created records its first session in its own transaction instead
    (:func:`new_campaign_session`). Returns the metadata this session's runs carry in
    their start documents (``function``: the file and its hash; ``planner``: the plugin's
    origin).

    Args:
        runner: the runner, holding the campaign's lease (``campaign_id`` set).
        command: what began the session.
        prior: the prior-data rows a new campaign was stored with (their files are named
            with their sha256).
    """
    store, cid = runner.store, runner.campaign_id
    if cid is None:
        raise ValueError("start_session needs a stored campaign")
    row = store.campaign(cid)
    if command == "resume":
        before = row.budget or runner.campaign.budget.model_dump(mode="json")
    else:
        before = runner.campaign.budget.model_dump(mode="json")
    trials_so_far = len(store.trials(cid))
    start = _session(
        runner,
        command,
        cid=cid,
        stored=command == "resume",
        trials_so_far=trials_so_far,
        before=before,
        prior=prior,
    )
    for kind, by, detail in start.events:
        store.add_event(cid, kind, by=by, detail=detail, token=runner.lease.token)
    if command == "suggest":  # a campaign created by `suggest FILE`, recorded after it
        runner.session_unproposed = trials_so_far
    return start.code


def new_campaign_session(
    runner: Runner, command: str, *, prior: Sequence[PriorRow] = ()
) -> SessionStart:
    """The first session of the campaign ``runner`` is about to create (``command``:
    ``run``, or the ``suggest FILE`` that creates it), for ``Store.create_campaign(events=
    ...)`` to write in the campaign's own transaction: a crash between the two commits left
    a campaign with no record of who created it (found in review).

    Its trials so far are its ``prior`` rows (stored with it as trials), the budget it
    overrides the file's, and its code is the code it starts with (no change to record).
    A ``suggest`` by this runner that then stores proposals is this session
    (:func:`suggest_session`).
    """
    start = _session(
        runner,
        command,
        cid=None,
        stored=False,
        trials_so_far=len(prior),
        before=runner.campaign.budget.model_dump(mode="json"),
        prior=prior,
    )
    if command == "suggest":  # its proposals are this session's (a run's are measured)
        runner.session_unproposed = len(prior)
    return start


def suggest_session(runner: Runner, trials_so_far: int) -> list[Event]:
    """The events a ``suggest`` of the runner's stored campaign writes with its proposals
    (``Store.add_trials(events=...)``): its ``session``, and a ``planner_changed`` when a
    planner plugin's code differs from the one that proposed the trials before;
    ``trials_so_far``: the campaign's trials before this ``suggest``'s (its first proposal
    is the first of this session, and of any new code).

    Every ``suggest`` that stores proposals is a session (the module's docstring says why);
    the one exception is the first ``suggest`` of the runner that has just created the
    campaign, no trial stored since: the creating session (:func:`new_campaign_session`)
    says all of it already, and a second record of the same process would read as two.
    Its session names the planner's code but no ``function:`` file: a ``suggest`` measures
    nothing, and a file pinned here would hide its change from the ``resume`` that
    measures with it.
    """
    unproposed, runner.session_unproposed = runner.session_unproposed, None
    if unproposed == trials_so_far:  # nobody proposed since it began
        return []
    store, cid = runner.store, runner._cid()
    row = store.campaign(cid)
    before = row.budget or runner.campaign.budget.model_dump(mode="json")
    start = _session(
        runner,
        "suggest",
        cid=cid,
        stored=True,
        trials_so_far=trials_so_far,
        before=before,
        only="planner",
    )
    return start.events


def _session(
    runner: Runner,
    command: str,
    *,
    cid: int | None,
    stored: bool,
    trials_so_far: int,
    before: Mapping[str, Any],
    prior: Sequence[PriorRow] = (),
    only: str | None = None,
) -> SessionStart:
    """The events that record a session of ``runner``'s campaign (``cid``; ``None``: being
    created, so the code it starts with made no trials before), beginning with
    ``trials_so_far`` trials stored and with the budget ``before`` it; ``stored``: it
    continues a stored campaign (its seed is the stored one); ``only``: the one code it
    pins (a ``suggest``'s ``planner``)."""
    from loop.config import code_pins

    pins = {k: v for k, v in code_pins(runner.loaded).items() if only in (None, k)}
    # the code that made the trials before, read before this session is recorded with its own
    last = {
        what: started if cid is None else _last_pin(runner.store, cid, what, started)
        for what, (started, _) in pins.items()
    }
    now = {what: pin for what, (_, pin) in pins.items() if pin is not None}
    budget = runner.budget.model_dump(mode="json")
    argv = command_line()
    detail: dict[str, Any] = {
        "command": command,
        "argv": argv,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": _user(),
        "trials_so_far": trials_so_far,
        "seed": runner.seed,
        "seed_from": _seed_from(runner, command, argv, stored=stored),
        "budget": budget,
        "override": _override(before, budget),
        "prior": _prior_files(prior),
        "versions": versions(),
        "platform": platform.platform(),
        **now,
    }
    session: Event = (
        "session",
        user_at_host(),
        json.dumps(detail, sort_keys=False, separators=(",", ":")),
    )
    events = [session, *_changes(last, now, trials_so_far)]
    return SessionStart(events, {what: dict(pin) for what, pin in now.items()})


def _last_pin(
    store: Store, cid: int, what: str, started: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The origin of the code ``what`` that made the campaign's latest trials: the latest
    session's or change's, else the one the campaign started with (a campaign stored before
    sessions were recorded)."""
    pins = store.code_history(cid, what)
    return pins[-1] if pins else started


def _changes(
    last: Mapping[str, dict[str, Any] | None], now: Mapping[str, dict[str, Any]], trials_so_far: int
) -> list[Event]:
    """A ``{what}_changed`` event for each code whose origin ``now`` differs from the
    ``last`` one recorded (:meth:`loop.store.Store.code_changes` reads them)."""
    events: list[Event] = []
    for what, new in now.items():
        old = last.get(what)
        if old is None or all(old.get(k) == new.get(k) for k in _ORIGIN_FIELDS):
            continue
        change: dict[str, Any] = {"what": what}
        if what == "function":  # the form function changes were first recorded in
            change |= {
                "file": new.get("file"),
                "old_sha256": old.get("sha256"),
                "new_sha256": new.get("sha256"),
            }
        change |= {
            "old": old,
            "new": new,
            "trials_so_far": trials_so_far,
            "first_trial": trials_so_far + 1,
        }
        detail = json.dumps(change, separators=(",", ":"))
        events.append((f"{what}_changed", user_at_host(), detail))
    return events


def session_line(sessions: Sequence[Mapping[str, Any]], *, shown: int = 4) -> str | None:
    """``closedloop status``'s one line: how many sessions, then the first and the latest
    few, each with its command, when, who and where, and from which trial on; ``None``
    for a campaign stored before sessions were recorded.

    Consecutive ``suggest`` sessions of a stored campaign by one user@host and with no
    budget override are one part (``37 suggests 2026-12-01 09:05 to 2026-12-05 17:00 UTC
    by ada@lab``): an ask/tell campaign records a session per ``suggest``, and with one
    part each, the latest few of a long one were all "suggest" and said nothing of a
    ``resume`` or another person's work before them.
    """
    if not sessions:
        return None
    parts = [_group_part(group) for group in _suggest_runs(sessions)]
    if len(parts) > shown:
        parts = [parts[0], f"... {len(parts) - shown} more", *parts[-(shown - 1) :]]
    return f"sessions: {len(sessions)} (" + "; ".join(parts) + ")"


def _suggest_runs(sessions: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """``sessions`` in order, consecutive ``suggest``s of a stored campaign by one
    user@host and with no override together (:func:`session_line`), any other alone."""
    groups: list[list[Mapping[str, Any]]] = []
    for s in sessions:
        if _plain_suggest(s) and groups and _plain_suggest(groups[-1][-1]):
            if groups[-1][-1].get("by") == s.get("by"):
                groups[-1].append(s)
                continue
        groups.append([s])
    return groups


def _plain_suggest(s: Mapping[str, Any]) -> bool:
    """A ``suggest`` of a stored campaign (not the one that created it) with no override."""
    stored = s.get("seed_from") == "stored"
    return s.get("command") == "suggest" and stored and not s.get("override")


def _group_part(group: Sequence[Mapping[str, Any]]) -> str:
    if len(group) == 1:
        return _session_part(group[0])
    first, last = (str(s.get("at", ""))[:16].replace("T", " ") for s in (group[0], group[-1]))
    return f"{len(group)} suggests {first} to {last} UTC by {group[0].get('by') or '?'}"


def _session_part(s: Mapping[str, Any]) -> str:
    command = str(s.get("command", "?"))
    n = s.get("trials_so_far")
    # a resume, or a suggest of a stored campaign (not the creating one, which names its
    # prior rows by their files): a boundary within the campaign's trials
    boundary = command == "resume" or s.get("seed_from") == "stored"
    where = f" after {n} trials" if boundary and isinstance(n, int) else ""
    at = str(s.get("at", ""))[:16].replace("T", " ")
    part = f"{command}{where} {at} UTC by {s.get('by') or '?'}"
    override = s.get("override")
    if isinstance(override, dict) and override:
        part += " (" + ", ".join(_override_part(k, v) for k, v in override.items()) + ")"
    return part


#: The budget fields that are durations: stored exact (``259200s``, ``loop.config.Duration``).
_DURATION_FIELDS = frozenset({"max_duration"})


def _override_part(key: str, value: Any) -> str:
    """One budget override of a session line: ``max_trials 12``, ``max_duration 3 d``.

    A duration is shown as every message shows one (``loop.fmt.span``), not as the store
    keeps it: ``max_duration 259200s`` beside "running 2.9 d" had to be divided by 86400 to
    compare (found in review). A stored value that is no duration is shown as it is.
    """
    if key in _DURATION_FIELDS:
        from loop.config import parse_duration
        from loop.fmt import span

        try:
            return f"{key} {span(parse_duration(value))}"
        except ValueError:
            pass
    return f"{key} {value}"


def tell_line(tells: Sequence[Mapping[str, Any]]) -> str | None:
    """``closedloop status``'s line of the results recorded with ``tell``: how many times,
    then the latest, when and by whom, which trials and from which file; ``None`` when
    nothing was told (:meth:`loop.store.Store.tells`)."""
    if not tells:
        return None
    last = tells[-1]
    at = str(last.get("at", ""))[:16].replace("T", " ")
    numbers = [n for n in last.get("trials") or () if isinstance(n, int)]
    which = f"#{numbers[0]}" if len(numbers) == 1 else f"{len(numbers)} trials"
    if len(numbers) > 1:
        which += f" (#{min(numbers)}–#{max(numbers)})"
    csv = last.get("csv")
    source = f" from {Path(str(csv.get('file'))).name}" if isinstance(csv, dict) else ""
    times = "once" if len(tells) == 1 else f"{len(tells)} times"
    return f"results told: {times}; latest {at} UTC by {last.get('by') or '?'}: {which}{source}"


def amend_line(amends: Sequence[Mapping[str, Any]]) -> str | None:
    """``closedloop status``'s line of the results corrected with ``tell --amend``: how
    many, then the latest, what it changed and why; ``None`` when none was. A correction
    was seen only through the store's events in Python (found in review)."""
    if not amends:
        return None
    last = amends[-1]
    at = str(last.get("at", ""))[:16].replace("T", " ")
    old, new = last.get("old"), last.get("new")
    old, new = (old, new) if isinstance(old, dict) and isinstance(new, dict) else ({}, {})
    if old.get("status") != new.get("status"):
        change = f"{old.get('status')} -> {new.get('status')}"
    else:  # which values, from what to what: "outputs corrected" said neither (review)
        values = _changed_values(old, new)
        change = ", ".join(values[:3]) + (f" and {len(values) - 3} more" if values[3:] else "")
        change = change or "nothing changed"
    times = "once" if len(amends) == 1 else f"{len(amends)} times"
    return (
        f"results amended: {times}; latest {at} UTC by {last.get('by') or '?'}: "
        f"#{last.get('trial')} {change} ({last.get('reason')})"
    )


def _changed_values(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Each output and actual parameter an amend changed: ``yield 0.81 -> 0.18``, ``actual
    temperature 88 -> 62.5`` (``–`` where there was none)."""
    from loop.fmt import number

    changed = []
    for label, key in (("", "outputs"), ("actual ", "readbacks")):
        before, after = old.get(key), new.get(key)
        before = before if isinstance(before, dict) else {}
        after = after if isinstance(after, dict) else {}
        for name in [*before, *(k for k in after if k not in before)]:
            if before.get(name) != after.get(name):
                was, now = number(before.get(name), none="–"), number(after.get(name), none="–")
                changed.append(f"{label}{name} {was} -> {now}")
    if old.get("error") != new.get("error"):  # a failure's reason reworded
        changed.append(f"reason {old.get('error')!r} -> {new.get('error')!r}")
    if old.get("transient") != new.get("transient"):
        changed.append(f"transient {old.get('transient')} -> {new.get('transient')}")
    return changed


def code_change_lines(changes: Sequence[Mapping[str, Any]]) -> list[str]:
    """``closedloop status``'s line per ``function_changed`` or ``planner_changed`` event
    (:meth:`loop.store.Store.code_changes`)."""
    lines = []
    for c in changes:
        what = str(c.get("what", "function"))
        made, called = CODE.get(what, ("made", what))
        old, new = c.get("old"), c.get("new")
        old, new = (old, new) if isinstance(old, dict) and isinstance(new, dict) else ({}, {})
        name = new.get("plugin") or new.get("file") or c.get("file")
        shown = [
            f"{key} {_shown(key, old.get(key))} -> {_shown(key, new.get(key))}"
            for key in _ORIGIN_FIELDS
            if old.get(key) != new.get(key)
        ]
        at = str(c.get("at", ""))[:16].replace("T", " ")
        if [k for k in _ORIGIN_FIELDS if old.get(k) != new.get(k)] == ["file"] and old.get(
            "sha256"
        ):
            # the project folder moved: the same code from another path, which had read as
            # "measured by other code" (found in review)
            lines.append(
                f"{called} {name} moved, same code (sha256 {_shown('sha256', new.get('sha256'))}"
                f"): trials from {c.get('first_trial')} on ran it from there (was "
                f"{old.get('file')}, {at} UTC)"
            )
            continue
        lines.append(
            f"{called} {name} changed: trials from {c.get('first_trial')} on were {made} by "
            f"other code ({', '.join([*shown, f'{at} UTC'])})"
        )
    return lines


def _shown(key: str, value: Any) -> str:
    return str(value)[:12] if key == "sha256" and value is not None else str(value)


def campaign_file(store: Store, campaign: str | int | None = None) -> str:
    """The stored campaign's YAML text with the seed and budget it ran with written in, so
    that running it again reproduces the campaign (``closedloop export --format yaml``).

    The store keeps the file's exact text; the seed may have been drawn or given with
    ``--seed``, and the budget extended by ``--max-trials`` and the like: those values
    replace the file's, or are added, by a round trip through ruamel that keeps the
    user's comments, order and quoting. A header comment names the store, the campaign and
    the closedloop that wrote it, where the original file was (its relative paths resolve
    against the folder the exported file is put in), a planner plugin's code as the campaign
    started with it (its file and sha256, or its distribution and version) and the
    prior-data files its first session read, with their sha256. A text that needs no change
    is kept as it is.
    """
    from io import StringIO

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.util import load_yaml_guess_indent

    from instruments._versions import closedloop_version
    from loop.config import json_record
    from loop.report import stored_campaign
    from loop.store import known_budget

    row = store.campaign(campaign)
    c = stored_campaign(row)
    text = row.config_text
    in_file = c.budget.model_dump(mode="json")
    budget = {k: v for k, v in known_budget(row).items() if v is not None and in_file.get(k) != v}
    written = ([f"seed: {row.seed}"] if c.seed != row.seed else []) + [
        f"budget.{k}: {v}" for k, v in budget.items()
    ]
    if written:
        data, indent, offset = load_yaml_guess_indent(text)
        if isinstance(data, CommentedMap):  # a campaign file is a mapping (checked when run)
            if budget:
                block = data.get("budget")
                if not isinstance(block, CommentedMap):
                    block = data["budget"] = CommentedMap()
                block.update(budget)
            data["seed"] = row.seed
            yaml = YAML()  # round trip
            yaml.preserve_quotes = True
            yaml.width = 4096  # never refold the user's lines
            offset = offset or 0
            yaml.indent(mapping=_mapping_indent(text), sequence=indent or offset + 2, offset=offset)
            out = StringIO()
            yaml.dump(data, out)
            text = out.getvalue().rstrip("\n") + "\n"
    sessions = store.sessions(row.id or 0)
    prior = sessions[0].get("prior") if sessions else None
    lines = [
        f"Exported by closedloop {closedloop_version()} from {store.url}, campaign "
        f"'{row.name}' (id {row.id}), stored {row.created_at:%Y-%m-%d %H:%M} UTC from "
        f"{row.config_path}.",
        "The seed and budget it ran with are written in"
        + (f" ({', '.join(written)})" if written else " (the file's own)")
        + "; relative paths (an instrument, function or planner plugin file, prior_data) "
        "resolve against the folder this file is in.",
    ]
    plugin = json_record(row.planner_origin)
    if plugin is not None:
        if plugin.get("file") is not None:
            source = f"file {plugin.get('file')} (sha256 {plugin.get('sha256')})"
        else:
            source = ", ".join(
                f"{key} {plugin[key]}"
                for key in ("entry_point", "distribution", "version")
                if plugin.get(key) is not None
            )
        lines.append(
            f"Planner plugin {plugin.get('plugin')} at its start: {source}; it is imported "
            "as it is where this file is run."
        )
    named = None if c.prior_data is None else _resolved(Path(row.config_path).parent, c.prior_data)
    for f in prior if isinstance(prior, list) else []:
        if isinstance(f, dict):
            given = (
                "named by the file's prior_data"
                if named is not None and _resolved(Path(), str(f.get("file"))) == named
                else "given with --prior: give it again so, or name it in prior_data"
            )
            lines.append(
                f"Prior data read at its start: {f.get('file')} ({f.get('rows')} rows, sha256 "
                f"{f.get('sha256')}); {given}."
            )
    # a path or name with a line break would end the comment and write YAML of its own
    lines = [_CONTROL.sub("?", line) for line in lines]
    return "".join(f"# {line}\n" for line in lines) + "#\n" + text


def _resolved(base: Path, path: str) -> str:
    """``path`` (relative to ``base``) as an absolute path, for comparing two namings."""
    try:
        return str((base / path).resolve())
    except (OSError, RuntimeError, ValueError):
        return str(base / path)


def _mapping_indent(text: str) -> int:
    """How far the file indents a nested mapping's keys (ruamel guesses a sequence's only);
    2 when it nests none."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for parent, child in zip(lines, lines[1:], strict=False):
        if re.fullmatch(r"\s*[^\s#-][^#]*:\s*(#.*)?", parent):
            step = (len(child) - len(child.lstrip())) - (len(parent) - len(parent.lstrip()))
            if step > 0 and not child.lstrip().startswith("- "):
                return step
    return 2


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
