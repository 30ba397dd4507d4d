"""What the CLI prints is what a scientist needs (session 11 README review): whole simulator
descriptions with their domains, a progress line without a feasible trial, one refusal with a
command that works, and the best trial at the point it actually ran at."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import loop.cli as cli
from loop import Runner, Store, parse_campaign
from loop.cli import app
from loop.runner import TrialReport, TrialTiming

BRANIN = """\
name: b
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin}
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 1
"""


def _wide(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=250))
    return out


def test_simulators_shows_whole_first_sentences_and_each_inputs_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = _wide(monkeypatch)
    cli.simulators()
    text = out.getvalue()
    assert "three global minima with y = 0.397887." in text  # was cut to "y = 0."
    assert "6 local minima, global -3.32237." in text
    assert "x1 in [-5, 10]" in text and "x2 in [0, 15]" in text
    assert "residence_time in [0.5, 30] min (log)" in text
    assert "catalyst in {Pd(OAc)2, Pd(PPh3)4, XPhos-Pd-G3}" in text


def test_progress_line_without_a_feasible_trial_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _wide(monkeypatch)
    listener = cli._ProgressListener(["y"], 3, quiet=False, bar=False)
    report = TrialReport(
        number=1,
        trial_id=1,
        status="completed",
        parameters={"x": 1.0},
        outputs={"y": 14.1},
        objective=14.1,
        best=None,
        error=None,
        timing=TrialTiming(suggest=0.0, dispatch=0.1, total=0.1, instrument_busy=0.1),
    )
    listener.trial_finished(report)
    assert "best: none feasible yet" in out.getvalue()
    assert "best =  " not in out.getvalue()


def test_resume_of_a_finished_campaign_refuses_once_with_a_command_that_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(BRANIN)
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    try:
        Runner(parse_campaign(BRANIN, path=path, base_dir=tmp_path), store).run()
    finally:
        store.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CLOSEDLOOP_STORE", raising=False)
    refused = CliRunner().invoke(app, ["resume", "--store", url, "-c", "b"])
    message = str(refused.exception)
    assert "resuming" not in refused.output  # no banner before the refusal
    assert message.count("max_trials reached (2 completed trials)") == 1, message
    (hint,) = re.findall(r"`(closedloop resume [^`]*)`", message)
    assert hint == f"closedloop resume --store {url} -c 1 --max-trials 12"
    extended = CliRunner().invoke(app, [*shlex.split(hint)[1:-1], "3", "-q"])
    assert extended.exit_code == 0, extended.output
    assert not (elsewhere / "closedloop.db").exists()


MANUAL = """\
name: m
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: maximize}]
instrument: manual
planner: {kind: sobol}
budget: {max_trials: 4}
seed: 1
"""


def test_status_shows_the_best_trial_at_the_parameters_actually_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tell --actual` values are what the model learns; `status` printed the setpoint, so a
    scientist repeating the best trial would run the wrong experiment."""
    path = tmp_path / "m.yaml"
    path.write_text(MANUAL)
    url = f"sqlite:///{tmp_path / 's.db'}"
    runner = CliRunner()
    assert runner.invoke(app, ["suggest", str(path), "--store", url]).exit_code == 0
    told = runner.invoke(app, ["tell", "--store", url, "1", "y=0.7", "--actual", "x1=1.5"])
    assert told.exit_code == 0, told.output
    out = _wide(monkeypatch)
    cli.status(store=url, campaign=None)
    best = next(line for line in out.getvalue().splitlines() if line.startswith("best"))
    assert "x1=1.5 (set -0.984)" in best and "x2=5.426" in best and "(set 5.426)" not in best


def test_the_point_shown_is_the_readback_where_it_differs_from_the_setpoint() -> None:
    assert cli._where({"t": 80.0, "c": "Pd"}, {"t": 80.3, "c": "Pd"}) == "t=80.3 (set 80), c=Pd"
    assert cli._where({"t": 80.0}, {"t": 80.000001}) == "t=80"  # the same to 4 digits
    assert cli._where({"t": 80.0}, None, lambda k: f"{k} [degC]") == "t [degC]=80"
