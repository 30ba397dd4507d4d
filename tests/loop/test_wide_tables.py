"""Tables of a campaign with many parameters, as ``status``, ``suggest`` and ``run`` print
them: within the console's width, the goals first, a note for the parameters left out.

Found in review: on a 120-column terminal ``status`` of a 31-parameter campaign printed rows
of ~300 characters (three screen lines each), a header twelve lines tall (``anneal_steps``
folded one letter per line), the objectives after every parameter, a ``best:`` line of 441
characters; a 100-parameter campaign printed 2187-character lines into a pipe, although
tables take at most ``LOG_WIDTH`` columns there. Real runs: the CLI on a real store.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from loop.fmt import LOG_WIDTH, WholeTable
from tests.cli_process import run_cli

FUNCTION = """
def measure(inputs):
    xs = [v for k, v in inputs.items() if k.startswith("x")]
    return {"y": sum((x - 0.5) ** 2 for x in xs), "cost": sum(xs)}
"""

#: 38 float parameters and two integers with long names and one-digit values.
PARAMETERS = "\n".join(
    [f"  - {{name: x{i}, type: float, bounds: [0, 1]}}" for i in range(1, 39)]
    + [
        "  - {name: anneal_steps, type: int, bounds: [1, 9]}",
        "  - {name: n_cycles, type: int, bounds: [1, 5]}",
    ]
)
NAMES = [f"x{i}" for i in range(1, 39)] + ["anneal_steps", "n_cycles"]


def campaign(name: str, objectives: str, outputs: str = "[y, cost]") -> str:
    return f"""name: {name}
parameters:
{PARAMETERS}
objectives:
{objectives}
instrument: {{function: "f.py:measure", outputs: {outputs}}}
planner: {{kind: sobol}}
budget: {{max_trials: 4}}
seed: 1
"""


ONE = campaign("wide_one", "  - {name: y, goal: minimize}")
TWO = campaign("wide_two", "  - {name: y, goal: minimize}\n  - {name: cost, goal: maximize}")
SMALL = """name: small
parameters:
  - {name: x1, type: float, bounds: [0, 1]}
  - {name: x2, type: float, bounds: [0, 1]}
objectives:
  - {name: y, goal: minimize}
instrument: {function: "f.py:measure", outputs: [y, cost]}
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 1
"""

TABLE = "┏┃┡│└"


def closedloop(folder: Path, *args: str, columns: int | None) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` in a fresh interpreter: on a ``columns``-wide terminal, or with
    ``None`` as in a pipe or a log (no terminal, no ``COLUMNS``)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    done = run_cli(args, cwd=folder, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two 40-parameter campaigns run to their end on a 120-column terminal: ``folder``,
    the stores ``one`` and ``two``, and the output of each run (``run_one``, ``run_two``)."""
    folder = tmp_path_factory.mktemp("wide")
    (folder / "f.py").write_text(FUNCTION)
    found = {"folder": str(folder)}
    for name, text in (("one", ONE), ("two", TWO), ("small", SMALL)):
        (folder / f"{name}.yaml").write_text(text)
        found[name] = f"sqlite:///{folder / name}.db"
        run = closedloop(folder, "run", f"{name}.yaml", "--store", found[name], columns=120)
        found[f"run_{name}"] = run.stdout
    return found


def status(store: str, columns: int) -> str:
    """``closedloop status`` on a ``columns``-wide terminal, in its own interpreter: the
    width is the process's, as for a user (in-process, a console made by an earlier test
    kept another width; the suite once printed 400 columns here)."""
    return closedloop(Path.cwd(), "status", "--store", store, columns=columns).stdout


def widest(text: str) -> int:
    return max(cell_len(line) for line in text.splitlines())


def tables(text: str) -> list[list[str]]:
    """Each table's lines, in order."""
    found: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("┏"):
            found.append([])
        if found and line[:1] in TABLE and (not found[-1] or found[-1][-1][:1] != "└"):
            found[-1].append(line)
    return found


def header(table: list[str]) -> tuple[list[str], int]:
    """A table's column names (folded headers joined) and how many lines they take."""
    lines = table[1 : next(i for i, line in enumerate(table) if line.startswith("┡"))]
    columns = lines[0].split("┃")[1:-1]
    names = [
        "".join(line.split("┃")[1:-1][i].strip() for line in lines) for i in range(len(columns))
    ]
    return names, len(lines)


def left_out(text: str) -> tuple[int, int]:
    """``(count, total)`` of the note under a table too wide for all its parameters."""
    flat = " ".join(text.split())  # the note wraps on a narrow console
    match = re.search(r"(\d+) of (\d+) parameters not shown \([^)]*\); `closedloop export`", flat)
    assert match, text
    return int(match[1]), int(match[2])


def test_status_of_forty_parameters_fits_the_terminal_goals_first(wide: dict[str, str]) -> None:
    out = status(wide["one"], 120)
    assert widest(out) <= 120, out
    (table,) = tables(out)
    names, height = header(table)
    assert names[:4] == ["#", "kind", "status", "y"]  # the trial and its result first
    shown = names[4:]
    assert shown == NAMES[: len(shown)] and 5 <= len(shown) < 40  # then the parameters that fit
    assert left_out(out) == (40 - len(shown), 40)
    assert height <= 2  # no header folded one letter per line
    assert "x40" not in out  # the note names the first and last left out
    # the best trial's point: every parameter, wrapped to the width, not one long line
    best = out.split("best: trial #", 1)[1].split("last trials", 1)[0].splitlines()
    assert best[0].endswith(" at") and all(line.startswith("  ") for line in best[1:])
    point = ",".join(best[1:])
    assert [part.split("=")[0].strip() for part in point.split(",") if part.strip()] == NAMES


def test_a_narrow_terminal_still_shows_the_result(wide: dict[str, str]) -> None:
    out = status(wide["one"], 60)
    shown = out.split("best: trial #", 1)[1]  # the best point, the table and the note
    assert widest(shown) <= 60, out
    names, _ = header(tables(out)[0])
    assert names[:4] == ["#", "kind", "status", "y"]
    assert left_out(out)[1] == 40


def test_a_two_objective_front_lists_the_objectives_first(wide: dict[str, str]) -> None:
    out = status(wide["two"], 120)
    assert widest(out) <= 120, out
    front, last = tables(out)
    for table in (front, last):
        names, height = header(table)
        assert names[:5] == ["#", "kind", "status", "y", "cost"] and height <= 2
        assert names[5:] == NAMES[: len(names) - 5]
    assert out.count("parameters not shown") == 2
    # run's summary prints the front as status does: the objectives, then what fits
    summary = wide["run_two"].split("Pareto front (feasible, non-dominated)", 1)[1]
    assert widest(summary) <= 120, summary
    names, _ = header(tables(summary)[0])
    assert names[:5] == ["#", "kind", "status", "y", "cost"]
    assert names[5:] == NAMES[: len(names) - 5]
    assert left_out(summary)[1] == 40


def test_run_keeps_a_line_per_trial_and_wraps_the_best_point(wide: dict[str, str]) -> None:
    out = wide["run_one"]
    trials = [line for line in out.splitlines() if line.startswith("trial ")]
    assert len(trials) == 4 and all(" y = " in line and "best = " in line for line in trials)
    best = out.split("best trial #", 1)[1].splitlines()
    assert widest("\n".join(trials + best)) <= 120, out
    assert best[0].endswith(" at") and best[1].startswith("  x1=")
    assert "n_cycles=" in "".join(best[1:6])


def test_piped_status_takes_at_most_log_width(wide: dict[str, str], tmp_path: Path) -> None:
    """No terminal (a log, a pipe): one line per row, never wider than LOG_WIDTH; forty
    parameters fit there, in the order a small campaign's table has."""
    out = closedloop(tmp_path, "status", "--store", wide["two"], columns=None).stdout
    assert widest(out) <= LOG_WIDTH, out
    assert "not shown" not in out
    for table in tables(out):
        names, height = header(table)
        assert names == ["#", "kind", "status", *NAMES, "y", "cost"] and height == 1
        rows = [line for line in table if line.startswith("│")]
        assert rows and all(line.count("│") == len(names) + 1 for line in rows)


def test_a_hundred_parameters_piped_keep_to_log_width(tmp_path: Path) -> None:
    """A 100-parameter table printed 2187-character lines into a pipe."""
    rows = [[str(i), "sobol", "completed", *["0.1234"] * 100, "1.5"] for i in range(3)]
    headers = ["#", "kind", "status", *[f"x{i}" for i in range(1, 101)], "y"]
    table = WholeTable("t", headers, rows, {0, *range(3, 104)}, optional=range(3, 103),
                       left_out="{count} of {total} left out ({names})")  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=LOG_WIDTH, soft_wrap=True).print(table)
    text = out.getvalue()
    assert widest(text) <= LOG_WIDTH
    names, _ = header(tables(text)[0])
    kept = len(names) - 4
    assert names[:4] == ["#", "kind", "status", "y"] and names[4:] == headers[3 : 3 + kept]
    assert f"{100 - kept} of 100 left out (x{kept + 1} … x100)" in text


def test_suggest_turns_a_table_too_wide_a_row_per_parameter(tmp_path: Path) -> None:
    """Every value is to be set by hand: none is left out; a row per parameter instead."""
    (tmp_path / "f.py").write_text(FUNCTION)
    (tmp_path / "one.yaml").write_text(ONE)
    store = f"sqlite:///{tmp_path / 'ask.db'}"
    done = closedloop(tmp_path, "suggest", "one.yaml", "--store", store, "-n", "3", columns=120)
    table = tables(done.stdout)
    assert len(table) == 1
    names, _ = header(table[0])
    assert names == ["trial_id", "1", "2", "3"]
    rows = {
        cells[0]: cells[1:]
        for line in table[0]
        if line.startswith("│")
        for cells in [[c.strip() for c in line.split("│")[1:-1]]]
    }
    assert list(rows) == ["#", "kind", *NAMES]
    assert all(len(v) == 3 and all(v) for v in rows.values())
    assert widest("\n".join(table[0])) <= 120
    # the values are the stored points, to setpoint precision
    stored = closedloop(tmp_path, "export", "--store", store, "--format", "json", columns=None)
    first = json.loads(stored.stdout)[0]
    assert first["number"] == 1
    assert abs(float(rows["x7"][0]) - first["parameters"]["x7"]) < 1e-6
    # more trials than fit side by side: as many turned tables as it takes
    done = closedloop(
        tmp_path, "suggest", "--store", store, "-n", "20", "--max-trials", "30", columns=80
    )
    parts = tables(done.stdout)
    assert len(parts) > 1 and all(widest("\n".join(part)) <= 80 for part in parts)
    ids = [n for part in parts for n in header(part)[0][1:]]
    assert ids == [str(i) for i in range(4, 24)]


def test_a_small_campaign_keeps_its_table(wide: dict[str, str]) -> None:
    """Everything fits: the parameters before the outputs, as always, and no note."""
    out = status(wide["small"], 120)
    (table,) = tables(out)
    names, height = header(table)
    assert names == ["#", "kind", "status", "x1", "x2", "y"] and height == 1
    assert "not shown" not in out
    assert re.search(r"^best: trial #\d+ y = \S+ \(minimize\) at x1=\S+, x2=\S+$", out, re.M)


def test_a_header_folds_by_words_not_by_letters() -> None:
    """One-digit integers under ``anneal_steps``: the header keeps six letters a line."""
    rows = [[str(i), "3", "2", "0.125"] for i in range(3)]
    table = WholeTable(
        "t", ["#", "anneal_steps", "n_cycles", "a_rather_long_name"], rows, {0, 1, 2, 3}
    )
    out = io.StringIO()
    Console(file=out, width=24, soft_wrap=True).print(table)
    _, height = header(tables(out.getvalue())[0])
    assert height <= 3, out.getvalue()
