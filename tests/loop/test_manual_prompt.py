"""The ``instrument: manual`` prompt, driven in this process: a real Runner, RunEngine, soft
Ophyd devices and SQLite store; the operator's typing is ``sys.stdin``, and Ctrl-C is a real
SIGINT handled by the CLI's own signal handler (``loop.cli._stop_on_signals``).

(``tests/loop/test_asktell.py`` runs the prompt through ``closedloop run`` subprocesses.)
"""

from __future__ import annotations

import io
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from loop.asktell import TerminalOperator
from loop.cli import _stop_on_signals
from loop.config import load_campaign
from loop.runner import CampaignSummary, Runner
from loop.store import Store, export_records

BENCH = """\
name: bench
parameters:
  - {name: temperature, type: float, bounds: [30, 110], unit: degC}
  - {name: residence_time, type: float, bounds: [0.5, 30]}
  - {name: stages, type: int, bounds: [1, 4]}
  - {name: catalyst, type: choice, values: [Pd-A, Pd B, Ni-C]}
constraints:
  - "temperature + 2 * residence_time <= 150"
objectives:
  - {name: yield, goal: maximize}
instrument: manual
planner: {kind: sobol}
budget: {max_trials: %d}
seed: 1
"""

CTRL_C = object()  # a line of the operator's input that is a Ctrl-C instead


class Typing:
    """What the operator types, line by line; then the end of input (``sys.stdin``:
    ``input()`` reads a non-terminal stdin with ``readline``).

    A ``CTRL_C`` entry sends SIGINT to this process while ``input()`` waits, as a Ctrl-C
    at the terminal does.
    """

    def __init__(self, lines: list[Any]) -> None:
        self.lines = list(lines)

    def readline(self, size: int = -1) -> str:
        if not self.lines:
            return ""  # the end of input
        line = self.lines.pop(0)
        if line is CTRL_C:
            signal.raise_signal(signal.SIGINT)  # its handler runs before this returns
            raise AssertionError("SIGINT did not interrupt the prompt")
        return f"{line}\n"


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """The CLI keeps its handler after a first signal (the process is exiting); a test
    process goes on, so the previous handlers come back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[Any], max_trials: int = 1
) -> tuple[CampaignSummary, list[dict[str, Any]], str]:
    file = tmp_path / "bench.yaml"
    file.write_text(BENCH % max_trials)
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    out = io.StringIO()
    try:
        runner = Runner(load_campaign(file), store)
        runner.operator = TerminalOperator(runner, Console(file=out, width=200))
        monkeypatch.setattr(sys, "stdin", Typing(lines))
        with _stop_on_signals(runner):
            summary = runner.run()
        return summary, export_records(store, summary.campaign_id), out.getvalue()
    finally:
        store.close()


def test_values_entered_before_the_input_ends_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input ends at the parameters prompt: the value typed is recorded (as set), then the
    campaign stops; nothing typed is thrown away."""
    summary, trials, shown = _run(tmp_path, monkeypatch, ["0.5"], max_trials=3)
    assert (summary.status, summary.reason) == ("stopped", "the operator's input ended")
    (trial,) = trials
    assert trial["status"] == "completed" and trial["outputs"] == {"yield": 0.5}
    assert trial["readbacks"] == trial["parameters"]  # as set
    assert trial["run_uid"]  # a Bluesky run like any other
    assert "yield = 0.5 kept, with the parameters as set; stopping" in shown


def test_ctrl_c_after_the_values_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_signals: None
) -> None:
    summary, trials, _ = _run(tmp_path, monkeypatch, ["0.5", CTRL_C], max_trials=3)
    assert (summary.status, summary.reason) == ("stopped", "stopped by Ctrl-C")
    (trial,) = trials
    assert trial["status"] == "completed" and trial["outputs"] == {"yield": 0.5}


def test_ctrl_c_before_the_values_abandons_the_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_signals: None
) -> None:
    """Nothing was entered: the trial is abandoned, as before."""
    summary, trials, _ = _run(tmp_path, monkeypatch, [CTRL_C], max_trials=3)
    assert summary.status == "stopped"
    assert [t["status"] for t in trials] == ["abandoned"]


def test_actual_parameters_are_checked_against_the_whole_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each value within its bounds, but together breaking a constraint: asked again (the
    model would otherwise learn the commanded point). A choice value with a space is typed
    as is, or quoted."""
    lines = [
        "0.5",
        "temperature=100 residence_time=30",  # 100 + 2 * 30 > 150
        "catalyst=Pd B stages=2",
        "0.6",
        "catalyst='Pd B'",
    ]
    summary, trials, shown = _run(tmp_path, monkeypatch, lines, max_trials=2)
    assert summary.status == "completed", summary.reason
    assert "violates constraints[0] ('temperature + 2 * residence_time <= 150')" in shown
    assert "record it as failed with `fail REASON`" in shown
    assert [t["status"] for t in trials] == ["completed", "completed"]
    assert trials[0]["readbacks"]["catalyst"] == "Pd B" and trials[0]["readbacks"]["stages"] == 2
    assert trials[0]["readbacks"]["temperature"] == trials[0]["parameters"]["temperature"]
    assert trials[1]["readbacks"]["catalyst"] == "Pd B"


def test_the_prompt_shows_the_point_it_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator sets what the prompt shows; the trial is stored (and learnt) at the
    commanded point, so the two agree to 1e-6 of each range (at .4g: "temperature = 61.23")."""
    _, trials, shown = _run(tmp_path, monkeypatch, ["0.5", ""], max_trials=1)
    (trial,) = trials
    said = re.search(r"set temperature = (\S+) degC, residence_time = (\S+), stages = (\d+)", shown)
    assert said is not None, shown
    stored = trial["parameters"]
    assert abs(float(said.group(1)) - stored["temperature"]) <= 1e-6 * 80
    assert abs(float(said.group(2)) - stored["residence_time"]) <= 1e-6 * 29.5
    assert int(said.group(3)) == stored["stages"]
