"""A scientist's own function file (``instrument: {function: file.py:measure}``) doing what
scripts do: exiting at import, returning numpy arrays or text, naming outputs otherwise,
written as a module name. Each is one message naming the file and the fix, and a wrong
output fails the trial as the function's fault (a point failure), never the instrument's.

Found by a reviewer playing a scientist: ``validate`` exited 0 with no output for a file
calling ``sys.exit(0)``; argparse took over the exit code; ``TypeError: only 0-dimensional
arrays ...`` named neither output nor function, and three of them retired the instrument.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from loop import CampaignConfigError, Runner, Store, load_campaign
from loop.failures import failure_kind, is_point_failure
from tests.cli_process import closedloop

CAMPAIGN = """\
name: fn
parameters:
  - {name: t, type: float, bounds: [0, 1]}
objectives:
  - {name: yield_pct, goal: maximize}
instrument: {function: "FUNCTION", outputs: [yield_pct, cost], count: COUNT}
planner: {kind: random}
budget: BUDGET
seed: 3
"""


def _campaign(
    tmp_path: Path,
    source: str,
    *,
    function: str = "model.py:measure",
    count: int = 1,
    budget: str = "{max_trials: 6, max_failures: 4}",
) -> Path:
    (tmp_path / "model.py").write_text(source)
    path = tmp_path / "c.yaml"
    text = CAMPAIGN.replace("FUNCTION", function).replace("COUNT", str(count))
    path.write_text(text.replace("BUDGET", budget))
    return path


EXITS = {
    "sys-exit-0": ("import sys\ndef measure(x):\n    return {}\nsys.exit(0)\n", "SystemExit(0)"),
    # os._exit skips every handler: validate ended with exit 0 and no word (found in review)
    "os-exit-0": ("import os\ndef measure(x):\n    return {}\nos._exit(0)\n", "SystemExit(0)"),
    "argparse": (
        "import argparse\n"
        "p = argparse.ArgumentParser()\n"
        "p.add_argument('--plot', action='store_true')\n"
        "args = p.parse_args()\n"
        "def measure(x):\n    return {}\n",
        "SystemExit(2)",
    ),
}


@pytest.mark.parametrize("case", list(EXITS), ids=list(EXITS))
def test_a_function_file_that_exits_at_import_is_a_located_error(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, code = EXITS[case]
    monkeypatch.setattr("sys.argv", ["closedloop", "validate", "c.yaml"])  # as the CLI has it
    path = _campaign(tmp_path, source)
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert info.value.line == 6, message
    assert f"function file 'model.py' exited while being imported ({code}" in message
    assert 'put that code under `if __name__ == "__main__":`' in message
    # the command line: exit 2 and the message, not the script's exit code and silence
    proc = closedloop("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "exited while being imported" in proc.stderr and "Traceback" not in proc.stderr


def test_a_module_name_for_a_file_beside_the_campaign_suggests_the_path(tmp_path: Path) -> None:
    path = _campaign(tmp_path, "def measure(x):\n    return {}\n", function="model:measure")
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert "model.py is in the campaign file's folder; write function: model.py:measure" in message
    # no such file: the general advice
    (tmp_path / "model.py").unlink()
    with pytest.raises(CampaignConfigError, match="give an importable module or a path ending"):
        load_campaign(path)


def test_a_function_file_imports_the_modules_beside_it(tmp_path: Path) -> None:
    """``import helpers`` of a ``helpers.py`` beside the function's file failed with
    ``ModuleNotFoundError`` and no line, as did a relative import, with a fix that did not
    work (found in review). Run from another folder, as a campaign is."""
    (tmp_path / "cl_sibling_helpers.py").write_text("def double(x):\n    return 2 * x\n")
    path = _campaign(
        tmp_path,
        "import cl_sibling_helpers\n"
        "def measure(x):\n"
        "    return {'yield_pct': cl_sibling_helpers.double(x['t']), 'cost': 1.0}\n",
        budget="{max_trials: 2}",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = closedloop("run", str(path), "--store", f"sqlite:///{tmp_path / 's.db'}", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "2 completed, 0 failed" in proc.stdout
    (tmp_path / "model.py").write_text(
        "\n\nfrom . import helpers\ndef measure(x):\n    return {}\n"
    )
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert "running 'model.py' failed at line 3: ImportError: attempted relative import" in message
    assert "import the modules beside it by name" in message
    (tmp_path / "model.py").write_text("import cl_no_such_module\n")
    with pytest.raises(CampaignConfigError, match="install any other .pip install. or put"):
        load_campaign(path)


def _run(tmp_path: Path, source: str, **options: Any) -> tuple[list[str], int]:
    """The stored errors of a campaign measured by ``source``'s ``measure``, and how many
    trials completed."""
    loaded = load_campaign(_campaign(tmp_path, source, **options))
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    summary = Runner(loaded, store).run()
    trials = store.trials(summary.campaign_id)
    errors = [t.error or "" for t in trials if t.status == "failed"]
    return errors, sum(t.status == "completed" for t in trials)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("np.array([2.0])", "cost = array([2.]) is a ndarray, not a number (return a plain"),
        ("'timed out after 5 s'", "cost = 'timed out after 5 s' is a str, not a number"),
        ("None", "cost = None is None, not a number"),
    ],
    ids=["array", "text", "none"],
)
def test_a_non_numeric_output_names_output_function_and_value(
    tmp_path: Path, value: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: ``TypeError: only 0-dimensional arrays can be converted to Python scalars``, a
    failure of the instrument: three in a row retired its slot. The wording is the one
    ``loop.failures`` reads as wrong outputs, whatever text the value quotes."""
    source = (
        "import numpy as np\n"
        "def measure(x):\n"
        f"    cost = {value} if x['t'] > 0.3 else 1.0\n"
        "    return {'yield_pct': x['t'], 'cost': cost}\n"
    )
    budget = "{max_trials: 10, max_failures: 14}"
    with caplog.at_level(logging.WARNING):
        errors, completed = _run(tmp_path, source, count=2, budget=budget)
    # failing at some points only, on two slots: the instrument fault three in a row on one
    # slot while the other measured retired that slot (as in the review's repro)
    assert len(errors) >= 3 and completed >= 1
    for error in errors:
        assert error.startswith(
            f"function measure (model.py) returned a non-numeric output: {said}"
        ), error
        assert failure_kind(error) == "wrong outputs" and is_point_failure(error)
    assert "retired" not in caplog.text


def test_a_misnamed_output_says_which_key_looks_like_it(tmp_path: Path) -> None:
    source = "def measure(x):\n    return {'yield': 50.0, 'cost': 2.0}\n"
    errors, _ = _run(tmp_path, source)
    assert errors[0] == (
        "function measure (model.py) did not return ['yield_pct'] (it returned {'cost': 2.0, "
        "'yield': 50.0}); is 'yield' meant to be 'yield_pct'? the dict's keys must be the "
        "campaign's outputs: rename the key in the function, then resume this campaign "
        "(renaming the output in the campaign file instead needs a new campaign: a stored "
        "one keeps its file)"
    )
    assert failure_kind(errors[0]) == "wrong outputs"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            "return {'Yield_pct': 50.5, 'cost': 2.0}",
            "(it returned {'Yield_pct': 50.5, 'cost': 2.0}); is 'Yield_pct' meant to be "
            "'yield_pct'? the dict's keys must be the campaign's outputs: rename the key in "
            "the function, then resume this campaign",
        ),
        (
            "return {'yield_pct': x['tt'], 'cost': 2.0}",
            "KeyError: 'tt'; raised by function measure (model.py, line 2) at t=",
        ),
        (
            "return {'YIELD_PCT': 50.5, 'cost': 2.0}",
            "is 'YIELD_PCT' meant to be 'yield_pct'?",  # another case: no match for difflib
        ),
    ],
    ids=["output", "input", "case"],
)
def test_a_misnamed_key_stops_a_campaign_that_measured_nothing_yet(
    tmp_path: Path, body: str, said: str
) -> None:
    """A key one letter off a campaign name is a typo: every trial failed alike until
    max_failures, each losing the value under the misspelt key (found in review). The first
    such trial stops the campaign (resumable), its value kept in its error; fixed, the
    campaign goes on where it stopped."""
    path = _campaign(tmp_path, f"def measure(x):\n    {body}\n")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    summary = Runner(load_campaign(path), store).run()
    assert summary.status == "stopped" and summary.failed == 1 and summary.completed == 0
    assert "function used a misnamed key" in summary.reason
    resume = f"`closedloop resume --store sqlite:///{tmp_path / 'store.db'} -c 1` goes on"
    assert resume in summary.reason  # pasted anywhere, it resumes this campaign
    (error,) = [t.error or "" for t in store.trials(summary.campaign_id)]
    assert said in error
    if "KeyError" in said:
        assert error.endswith(
            "; is 'tt' meant to be 't'? the inputs dict's keys are the campaign's parameters: "
            "rename the key in the function, then resume this campaign (renaming the "
            "parameter in the campaign file instead needs a new campaign: a stored one keeps "
            "its file)"
        ), error
    (tmp_path / "model.py").write_text(
        "def measure(x):\n    return {'yield_pct': 1.0, 'cost': 2.0}\n"
    )
    runner = Runner.from_store(store, summary.campaign_id)
    history = store.trials(summary.campaign_id)
    # a typo says nothing about the point: not learned as a failing region
    assert runner._stored_observation(history[0], {}).outcome == "abandoned"
    resumed = runner.resume()
    assert resumed.status == "completed" and resumed.completed == 6 and resumed.failed == 1


def test_a_misnamed_key_after_a_measured_trial_fails_that_trial_only(tmp_path: Path) -> None:
    """A typo on a branch the campaign had measured around: the other branch measures, so
    the campaign goes on (stopping would idle the instrument for one branch's trials)."""
    source = (
        "import itertools\n"
        "calls = itertools.count()\n"
        "def measure(x):\n"
        "    if next(calls) % 2:  # every other call: the first one measures\n"
        "        return {'Yield_pct': 1.0, 'cost': 2.0}\n"
        "    return {'yield_pct': 1.0, 'cost': 2.0}\n"
    )
    errors, completed = _run(tmp_path, source, budget="{max_trials: 6, max_failures: 20}")
    assert completed == 6 and errors and all("meant to be 'yield_pct'" in e for e in errors)


@pytest.mark.parametrize(
    ("returned", "kept"),
    [
        ("{'yield_pct': 50.0}", "a listed output missing"),
        ("{'yield_pct': 50.0, 'cost': '2.0'}", "a listed output as text"),
    ],
)
def test_what_a_function_did_return_is_stored_with_its_failure(
    tmp_path: Path, returned: str, kept: str
) -> None:
    """A function that returned `yield_pct` but not `cost` (or `cost` as text) failed its
    trial, and the measured `yield_pct` was lost with it (found in review). The trial still
    fails as wrong outputs, and the number it did return is stored with it."""
    loaded = load_campaign(_campaign(tmp_path, f"def measure(x):\n    return {returned}\n"))
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        summary = Runner(loaded, store).run()
        trials = store.trials(summary.campaign_id)
        stored = store.observations(summary.campaign_id)
    finally:
        store.close()
    assert trials and all(t.status == "failed" for t in trials), kept
    assert all(failure_kind(t.error or "") == "wrong outputs" for t in trials)
    assert all(stored[t.id or 0] == {"yield_pct": 50.0} for t in trials), stored


@pytest.mark.parametrize("count", [1, 2])
def test_keys_outputs_does_not_list_are_warned_of_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, count: int
) -> None:
    """Keys beyond the campaign's `outputs:` were dropped in silence (found in review); with
    two slots the warning came twice, once per slot's detector (found in review)."""
    source = "def measure(x):\n    return {'yield_pct': 50.0, 'cost': 1.0, 'purity': 0.9}\n"
    with caplog.at_level(logging.WARNING):
        errors, completed = _run(tmp_path, source, count=count)
    assert errors == [] and completed == 6
    said = [r.getMessage() for r in caplog.records if "does not list" in r.getMessage()]
    assert said == [
        "function measure (model.py) returns ['purity'], which the campaign's `outputs:` does "
        "not list: not stored (add them to `outputs:` to keep them)"
    ]


def test_a_key_first_returned_on_a_later_trial_is_named_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning was once per detector, so a key returned only from some trial on was
    never named (found in review)."""
    source = (
        "import itertools\n_n = itertools.count()\n"
        "def measure(x):\n    extra = 'late' if next(_n) >= 2 else 'early'\n"
        "    return {'yield_pct': 50.0, 'cost': 1.0, extra: 0.9}\n"
    )
    with caplog.at_level(logging.WARNING):
        errors, completed = _run(tmp_path, source)
    assert errors == [] and completed == 6
    said = [r.getMessage() for r in caplog.records if "does not list" in r.getMessage()]
    assert [m.split(" returns ")[1].split(",")[0] for m in said] == ["['early']", "['late']"]


@pytest.mark.parametrize(
    "error",
    [
        "function measure (m.py) did not return ['y'] (it returned [])",
        "function measure (my model.py) did not return ['y'] (it returned ['x']); is 'x' ...",
        "function f (m.py) returned list, expected a dict of outputs",
        "simulator branin returned NoneType, expected a dict of outputs",
        "function f (m.py) returned a non-numeric output: y = 'lost the connection to PV x' is "
        "a str, not a number",
        "function f (m.py) returned a non-numeric output: y = 'limit check failed' is a str",
    ],
)
def test_every_wording_of_a_wrong_output_is_a_point_failure(error: str) -> None:
    """The function's fault, whatever the value it returned says (a quoted 'timed out
    after' or 'lost the connection' read as an instrument fault)."""
    assert failure_kind(error) == "wrong outputs"
    assert is_point_failure(error)


def test_a_function_file_that_is_a_folder_or_a_pipe_is_said_to_be(tmp_path: Path) -> None:
    """Both were "not found" (found in review), which sent the user looking for a typo."""
    import os

    (tmp_path / "d.py").mkdir()
    os.mkfifo(tmp_path / "p.py")
    for name, said in (("d.py", "is a folder"), ("p.py", "is not a file (a device or a pipe)")):
        path = _campaign(tmp_path, "", function=f"{name}:measure")
        with pytest.raises(CampaignConfigError) as refused:
            load_campaign(path)
        assert f"function file '{name}' {said}" in str(refused.value), str(refused.value)
        assert "name the .py file that defines the function" in str(refused.value)


def test_a_key_that_is_an_inputs_value_is_no_typo(tmp_path: Path) -> None:
    """A table indexed by a choice (``gains[x['mode']]``) raised ``KeyError: 'mode2'`` for
    a value it lacks: that was called a misspelt 'mode' and stopped the campaign, though the
    other values measured (found in review). It fails that trial only."""
    text = CAMPAIGN.replace(
        "  - {name: t, type: float, bounds: [0, 1]}\n",
        "  - {name: t, type: float, bounds: [0, 1]}\n"
        "  - {name: mode, type: choice, values: [mode1, mode2, mode3]}\n",
    )
    (tmp_path / "model.py").write_text(
        "GAIN = {'mode1': 1.0}\n"
        "def measure(x):\n    return {'yield_pct': GAIN[x['mode']] * x['t'], 'cost': 1.0}\n"
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        text.replace("FUNCTION", "model.py:measure")
        .replace("COUNT", "1")
        .replace("BUDGET", "{max_trials: 6, max_failures: 20}")
    )
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    summary = Runner(load_campaign(path), store).run()
    errors = [t.error or "" for t in store.trials(summary.campaign_id) if t.status == "failed"]
    assert summary.status == "completed" and summary.completed == 6
    assert errors and all(e.startswith("KeyError: 'mode") for e in errors), errors
    assert not any("meant to be" in e for e in errors)


def test_a_child_the_function_file_forks_at_import_exits_as_usual(tmp_path: Path) -> None:
    """A multiprocessing child ends with os._exit: the refusal of os._exit during the import
    is the importing thread's only (the child's exit read as the file exiting; found in
    review)."""
    source = (
        "import multiprocessing as mp\n"
        "def _child():\n    pass\n"
        "p = mp.get_context('fork').Process(target=_child)\n"
        "p.start()\np.join()\n"
        "assert p.exitcode == 0, p.exitcode\n"
        "def measure(x):\n    return {'yield_pct': 1.0, 'cost': 1.0}\n"
    )
    load_campaign(_campaign(tmp_path, source))  # no "exited while being imported"


@pytest.mark.parametrize(
    ("own", "source", "line"),
    [
        (
            "instruments",
            "from instruments import pump_model\n"
            "def measure(x):\n    return {'yield_pct': pump_model(1.0), 'cost': 1.0}\n",
            1,
        ),
        (
            "instruments",
            "import math\nimport instruments\n"
            "def measure(x):\n    return {'yield_pct': instruments.pump_model(1.0), 'cost': 1.0}\n",
            2,
        ),
        (
            "simulators",
            "def measure(x):\n    import simulators.pump as p\n"
            "    return {'yield_pct': p.pump_model(1.0), 'cost': 1.0}\n",
            2,
        ),
    ],
    ids=["from-import", "import", "import-in-the-function"],
)
def test_a_module_named_as_closedloops_own_package_is_said_to_be_hidden(
    tmp_path: Path, own: str, source: str, line: int
) -> None:
    """`from instruments import pump_model` of an instruments.py beside the function's file
    got closedloop's own package, and the error gave no hint (found in review); `import
    instruments` (at the top, or in the function) passed `validate`, and every trial then
    failed as "No instruments attribute pump_model" (review Y, session 39)."""
    if own == "simulators":
        (tmp_path / own).mkdir()
        (tmp_path / own / "__init__.py").write_text("")
        (tmp_path / own / "pump.py").write_text("def pump_model(x):\n    return 2 * x\n")
    else:
        (tmp_path / f"{own}.py").write_text("def pump_model(x):\n    return 2 * x\n")
    path = _campaign(tmp_path, source)
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert f"imports '{own}' at line {line}; '{own}' is the name of one of closedloop's own " in (
        message
    )
    assert f"rename it (e.g. lab_{own}) and its imports" in message


def test_a_function_may_import_closedloops_own_packages_when_nothing_beside_it_hides_them(
    tmp_path: Path,
) -> None:
    """Only a Python module of that name beside the function's file is a clash: a folder
    of instrument files (``closedloop examples --copy`` makes ``instruments/``) is not one
    (found in review, session 39)."""
    (tmp_path / "instruments").mkdir()
    (tmp_path / "instruments" / "bench.yaml").write_text("name: bench\n")
    load_campaign(
        _campaign(
            tmp_path,
            "import instruments\ndef measure(x):\n    return {'yield_pct': 1.0, 'cost': 1.0}\n",
        )
    )


def test_a_failure_is_learnt_at_its_commanded_point(tmp_path: Path) -> None:
    """A failed trial's readbacks say where the devices were when it failed (a stage that
    stalled on its way); the planner learns that the point it asked for fails. Only an
    operator's word on where a trial ran (``tell --actual``: ``told``) moves a failure."""
    path = _campaign(tmp_path, "def measure(t):\n    raise RuntimeError('too hot')\n")
    runner = Runner(load_campaign(path), Store(f"sqlite:///{tmp_path / 'store.db'}"))
    failed = runner._observation({"t": 0.8}, {"t": 0.4}, {}, "failed")
    assert (failed.outcome, failed.parameters) == ("failed", {"t": 0.8})
    told = runner._observation({"t": 0.8}, {"t": 0.4}, {}, "failed", told=True)
    assert told.parameters == {"t": 0.4}
    measured = runner._observation({"t": 0.8}, {"t": 0.79}, {"yield_pct": 1.0}, "completed")
    assert measured.parameters == {"t": 0.79}  # a measurement is learnt where it was made
    # live, the function's trials fail with their inputs read back once more, and stored
    summary = runner.run()
    (first, *_) = runner.store.trials(summary.campaign_id)
    assert first.status == "failed" and first.readbacks == {"t": first.parameters["t"]}


def test_a_misnamed_key_stored_by_an_earlier_version_is_still_known() -> None:
    """Errors stored before session 39 end "then `closedloop resume` (...)": resumed, such
    a trial is still a typo, not a failure of its point."""
    from simulators._keys import misnamed

    old = (
        "function measure (model.py) did not return ['y']; is 'Y' meant to be 'y'? the "
        "dict's keys must be the campaign's outputs: rename the key in the function, then "
        "`closedloop resume` (renaming the output in the campaign file instead needs a new "
        "campaign: a stored one keeps its file)"
    )
    assert misnamed(old) and misnamed(old.replace("`closedloop resume`", "resume this campaign"))
    assert not misnamed("function measure (model.py) raised KeyError: 'tt'")


def test_a_helper_module_importing_a_hidden_package_is_refused_too(tmp_path: Path) -> None:
    """The function file's own imports were checked, not those of the modules it imports
    from its folder (found in review, session 39)."""
    (tmp_path / "instruments.py").write_text("def pump_model(x):\n    return 2 * x\n")
    (tmp_path / "pumps.py").write_text(
        "import instruments\n\n\ndef flow(x):\n    return instruments.pump_model(x)\n"
    )
    path = _campaign(
        tmp_path,
        "import pumps\ndef measure(x):\n    return {'yield_pct': pumps.flow(1.0), 'cost': 1.0}\n",
    )
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert "imports pumps.py, which imports 'instruments' at line 1" in message, message
    assert "rename it (e.g. lab_instruments) and its imports" in message
