"""The ``closedloop`` command as a user runs it: a subprocess per command, real files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.cli_process import closedloop

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_run_status_export_report(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    campaign = str(ROOT / "campaigns" / "branin.yaml")
    run = closedloop(
        "run", campaign, "--store", store, "--max-trials", "7", "--seed", "3", cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "trial    7" in run.stdout and "best trial #" in run.stdout
    assert "max_trials reached (7 completed trials)" in run.stdout

    status = closedloop("status", "--store", store, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "branin" in status.stdout and "7 completed" in status.stdout
    assert "best: trial #" in status.stdout

    exported = closedloop("export", "--store", store, "--format", "csv", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 7
    assert {"trial_id", "status", "x1", "x2", "readback.x1", "readback.x2", "y", "run_uid"} <= set(
        rows[0]
    )
    assert all(r["status"] == "completed" and r["run_uid"] for r in rows)

    as_json = closedloop("export", "--store", store, "-f", "json", cwd=tmp_path)
    records = json.loads(as_json.stdout)
    assert [r["number"] for r in records] == list(range(1, 8))
    assert all(set(r["outputs"]) == {"y"} for r in records)

    png = tmp_path / "report.png"
    report = closedloop("report", "--store", store, "-o", str(png), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_without_store_is_a_clear_error(tmp_path: Path) -> None:
    proc = closedloop("status", "--store", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no store at" in proc.stderr and "Traceback" not in proc.stderr


def test_run_of_invalid_file_runs_nothing(tmp_path: Path) -> None:
    bad = ROOT / "tests" / "loop" / "bad_campaigns" / "bounds_reversed.yaml"
    db = tmp_path / "store.db"
    proc = closedloop("run", str(bad), "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{bad}:4" in proc.stderr and "Traceback" not in proc.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "campaigns/branin.yaml", "--max-trials", "abc"],
            "Invalid value for '--max-trials'",
        ),
        (["resume", "--bogus"], "No such option: --bogus"),
        (["status", "--store"], "Option '--store' requires an argument"),
        # out of the campaign model's range: refused before any campaign is created
        (["run", "campaigns/branin.yaml", "--seed", "-1"], "Invalid value for '--seed'"),
        (["run", "campaigns/branin.yaml", "--seed", str(2**32)], "Invalid value for '--seed'"),
        (["plan", "campaigns/branin.yaml", "--dry-run", "--seed", "-1"], "'--seed'"),
        (
            ["run", "campaigns/branin.yaml", "--max-trials", "1000001"],
            "Invalid value for '--max-trials'",
        ),
        (["resume", "--max-trials", "1000001"], "Invalid value for '--max-trials'"),
        (["resume", "--max-failures", "1000001"], "Invalid value for '--max-failures'"),
    ],
)
def test_usage_errors_are_click_messages_with_exit_2(args: list[str], message: str) -> None:
    """Not "please report it": a mistyped option is the user's to fix, and says how."""
    proc = closedloop(*args, cwd=Path(__file__).parents[2])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Error:" in proc.stderr
    assert "please report" not in proc.stderr and "Traceback" not in proc.stderr


def test_cli_limits_are_the_campaign_models() -> None:
    """The options' ranges repeat the config model's; they must not drift apart."""
    from loop.cli import MAX_BUDGET_COUNT, MAX_SEED
    from loop.config import Budget, Campaign

    def upper(field: object) -> int:
        for m in getattr(field, "metadata", []):
            if getattr(m, "le", None) is not None:
                return int(m.le)
            if getattr(m, "lt", None) is not None:
                return int(m.lt) - 1
        raise AssertionError(f"no upper bound on {field}")

    assert upper(Budget.model_fields["max_trials"]) == MAX_BUDGET_COUNT
    assert upper(Budget.model_fields["max_failures"]) == MAX_BUDGET_COUNT
    assert upper(Campaign.model_fields["seed"]) == MAX_SEED


def test_negative_seed_leaves_no_campaign_behind(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    campaign = str(ROOT / "campaigns" / "branin.yaml")
    proc = closedloop("run", campaign, "--store", f"sqlite:///{db}", "--seed", "-1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and not db.exists()


def test_resume_max_duration_in_seconds(tmp_path: Path) -> None:
    """``--max-duration 3600`` is seconds, as its help says (the missing store is next)."""
    store = f"sqlite:///{tmp_path / 'none.db'}"
    proc = closedloop("resume", "--store", store, "--max-duration", "3600", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "--max-duration" not in proc.stderr and "no store at" in proc.stderr


# ---------------------------------------------------------------------------- one small run
BRACKETS = """\
name: brackets
parameters:
  - {name: x1, type: float, bounds: [0, 1]}
  - {name: solvent, type: choice, values: ["[/b]", "[BMIM][BF4]", water]}
objectives:
  - {name: y, goal: maximize}
instrument: {function: "measure.py:measure", outputs: [y]}
planner: {kind: sobol}
budget: {max_trials: 4}
seed: 1
"""
MEASURE = """\
import math


def measure(inputs):
    if inputs["x1"] > 0.7:
        return {"y": math.nan}  # a failed trial whose NaN output is stored
    return {"y": 1.0 + inputs["x1"] if inputs["solvent"] == "[/b]" else inputs["x1"]}
"""


@pytest.fixture(scope="module")
def brackets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One quick campaign (function instrument, Sobol): choice values that look like rich
    markup, a failed trial with a NaN output. Returns its folder, store URL and run output."""
    folder = tmp_path_factory.mktemp("brackets")
    (folder / "c.yaml").write_text(BRACKETS)
    (folder / "measure.py").write_text(MEASURE)
    store = f"sqlite:///{folder / 's.db'}"
    proc = closedloop("run", "c.yaml", "--store", store, cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder, store, proc.stdout


def test_choice_values_like_markup_are_printed_as_text(brackets: tuple[Path, str, str]) -> None:
    folder, store, run_out = brackets
    assert "best trial #3: y = 1.64993 at x1=0.6499, solvent=[/b]" in run_out
    status = closedloop("status", "--store", store, cwd=folder)
    assert status.returncode == 0, status.stderr
    assert "│ [/b]" in status.stdout and "│ [BMIM][BF4]" in status.stdout
    asked = f"sqlite:///{folder / 'ask.db'}"  # not `store`: the other tests read its campaign
    suggested = closedloop("suggest", "c.yaml", "--store", asked, "-n", "3", cwd=folder)
    assert suggested.returncode == 0, suggested.stderr
    assert "[/b]" in suggested.stdout
    plan = closedloop("plan", "c.yaml", "--dry-run", "--at", "solvent=[/b]", cwd=folder)
    assert plan.returncode == 0, plan.stderr
    assert "next trial at x1=" in plan.stdout and "solvent=[/b]" in plan.stdout


def test_json_export_is_strict_json(brackets: tuple[Path, str, str]) -> None:
    folder, store, _ = brackets
    proc = closedloop("export", "--store", store, "-f", "json", cwd=folder)
    assert proc.returncode == 0, proc.stderr

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    records = json.loads(proc.stdout, parse_constant=refuse)
    failed = [r for r in records if r["status"] == "failed"]
    assert failed and failed[0]["outputs"] == {"y": None}


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["-o", "t.json"], "json"),
        (["-o", "t.CSV"], "csv"),
        (["-o", "trials"], "csv"),
        (["-f", "csv", "-o", "t.txt"], "csv"),
        (["-f", "json", "-o", "t.csv"], "--format json but -o t.csv names a .csv file"),
        (["-o", "t.xlsx"], "export writes CSV or JSON, not .xlsx"),
    ],
)
def test_export_takes_its_format_from_the_suffix(
    brackets: tuple[Path, str, str], args: list[str], expect: str
) -> None:
    """`export -o out.json` wrote CSV, which pandas.read_json then failed on; `report` has
    always taken its format from the suffix (found in review)."""
    folder, store, _ = brackets
    proc = closedloop("export", "--store", store, *args, cwd=folder)
    target = folder / args[-1]
    if expect in ("csv", "json"):
        assert proc.returncode == 0, proc.stderr
        text = target.read_text()
        if expect == "json":
            assert isinstance(json.loads(text), list)
        else:
            assert text.startswith("trial_id,")
        target.unlink()
    else:
        assert proc.returncode == 2 and expect in proc.stderr, proc.stderr
        assert not target.exists()


@pytest.mark.parametrize(
    ("command", "output", "message"),
    [
        ("export", "/proc/x.csv", "cannot write to /proc/x.csv"),
        ("export", "{dir}", "is a directory; give a file name, e.g. -o {dir}/trials.csv"),
        ("report", "/proc/x.png", "cannot write to /proc/x.png"),
        ("report", "{dir}", "is a directory"),
        ("report", "x.txt", "'.txt' is not an image format matplotlib writes"),
    ],
)
def test_unwritable_outputs_are_clear_errors(
    brackets: tuple[Path, str, str], command: str, output: str, message: str
) -> None:
    folder, store, _ = brackets
    where = folder / "adir"
    where.mkdir(exist_ok=True)
    target = output.format(dir=where)
    proc = closedloop(command, "--store", store, "-o", target, cwd=folder)
    assert proc.returncode == 2, proc.stderr
    assert message.format(dir=where) in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr and "please report" not in proc.stderr
    assert not (folder / "x.txt").exists()


def test_report_names_the_file_it_writes(brackets: tuple[Path, str, str]) -> None:
    folder, store, _ = brackets
    proc = closedloop("report", "--store", store, "-o", "noext", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "wrote noext.png" in proc.stdout
    assert (folder / "noext.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (folder / "noext").exists()
    pdf = closedloop("report", "--store", store, "-o", "r.pdf", cwd=folder)
    assert pdf.returncode == 0 and (folder / "r.pdf").read_bytes()[:4] == b"%PDF"


def test_run_overrides_the_files_failure_and_time_budgets(tmp_path: Path) -> None:
    """`run` took --max-trials only, where `resume` and `suggest` take every limit (found in
    review): each overrides the file's budget and is stored as the budget it ran with."""
    text = (ROOT / "campaigns" / "branin.yaml").read_text()
    (tmp_path / "b.yaml").write_text(text.replace("name: branin", "name: b"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    # two trials (Sobol's): the budget is what is checked, not the search
    proc = closedloop(
        "run", "b.yaml", "--store", url, "--max-trials", "2", "--max-failures", "3",
        "--max-duration", "1h", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    status = closedloop("status", "--store", url, "--json", cwd=tmp_path)
    budget = json.loads(status.stdout)["budget"]
    assert budget["max_failures"] == 3 and budget["max_duration"] == "1h"
    assert budget["max_trials"] == 2
    bad = closedloop("run", "b.yaml", "--store", url, "--max-duration", "2x", cwd=tmp_path)
    assert bad.returncode == 2 and "'2x' is not a duration" in bad.stderr


def test_csv_export_has_the_goal_columns_before_any_result(tmp_path: Path) -> None:
    """Trials proposed and not yet measured: the header still has the objective's column
    (it had only the parameters, so a script reading `df["y"]` broke; found in review)."""
    store = f"sqlite:///{tmp_path / 'asked.db'}"
    campaign = str(ROOT / "campaigns" / "branin.yaml")
    asked = closedloop("suggest", campaign, "--store", store, "-n", "2", cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr
    exported = closedloop("export", "--store", store, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["status"] for r in rows] == ["running", "running"]
    assert [r["y"] for r in rows] == ["", ""]
    header = exported.stdout.splitlines()[0].split(",")
    assert header.index("x2") < header.index("y") < header.index("run_uid")
