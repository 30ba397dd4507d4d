"""Bad input end to end: the CLI's exit code and message, and a fuzzed loader.

``test_config.py`` checks each file of ``bad_campaigns/`` against its expected message; this
module checks what the user sees from the command line (exit code 2, one located message,
no traceback, no store created by ``run``) and fuzzes ``parse_campaign`` with hypothesis:
whatever the text, the loader returns a campaign or raises ``CampaignConfigError``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loop import CampaignConfigError, parse_campaign
from tests.cli_process import closedloop

HERE = Path(__file__).parent
BAD = HERE / "bad_campaigns"
EXAMPLES = sorted((HERE.parents[1] / "campaigns").glob("*.yaml"))
EXAMPLE_TEXTS = [p.read_text() for p in EXAMPLES]

# One of each family: encoding, anchors, injection, emptiness, YAML syntax, shape, rules.
SAMPLE = [
    ("not_utf8.yaml", 2),
    ("anchor_bomb.yaml", None),
    ("region_import.yaml", 9),
    ("empty.yaml", None),
    ("tabs.yaml", 4),
    ("top_level_scalar.yaml", 1),
    ("hang_without_timeout.yaml", 7),
    ("huge_bound.yaml", 4),
]


def _check_one_message(
    proc: subprocess.CompletedProcess[str], path: Path, line: int | None
) -> None:
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    text = proc.stderr.replace("\n", "")
    assert str(path) in text
    if line is not None:
        assert f"{path}:{line}:" in text
    assert proc.stderr.count("error:") == 1, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("name", "line"), SAMPLE, ids=[n for n, _ in SAMPLE])
def test_validate_and_run_refuse_bad_files(name: str, line: int | None, tmp_path: Path) -> None:
    path = BAD / name
    _check_one_message(closedloop("validate", str(path), cwd=tmp_path), path, line)
    db = tmp_path / "store.db"
    proc = closedloop("run", str(path), "--store", f"sqlite:///{db}", cwd=tmp_path)
    _check_one_message(proc, path, line)
    assert not db.exists(), "run created a store for a file it refused"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["validate", "run"])
def test_directory_and_missing_file_exit_2(command: str, tmp_path: Path) -> None:
    for target in (tmp_path, tmp_path / "missing.yaml"):
        args = [command, str(target)]
        if command == "run":
            args += ["--store", f"sqlite:///{tmp_path / 'store.db'}"]
        proc = closedloop(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        assert str(target) in proc.stderr.replace("\n", "")
    assert not (tmp_path / "store.db").exists()


IMPOSSIBLE = """\
name: impossible
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
constraints:
  - "x1 >= -5"
  - %s
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin}
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 1
"""


def test_constraint_that_can_never_hold_fails_validate(tmp_path: Path) -> None:
    """Not `ok` at validate and then "please report it" at run: one located message."""
    path = tmp_path / "impossible.yaml"
    path.write_text(IMPOSSIBLE % '"x1 + 2 * x2 >= 41"')
    proc = closedloop("validate", str(path), cwd=tmp_path)
    _check_one_message(proc, path, 7)
    assert "can never hold" in proc.stderr and "misses by 1" in proc.stderr
    db = tmp_path / "store.db"
    proc = closedloop("run", str(path), "--store", f"sqlite:///{db}", cwd=tmp_path)
    _check_one_message(proc, path, 7)
    assert not db.exists()
    # met at one corner only, (10, 15): no room to sample, refused with its own message
    path.write_text(IMPOSSIBLE % '"x1 + 2 * x2 >= 40"')
    proc = closedloop("validate", str(path), cwd=tmp_path)
    _check_one_message(proc, path, 7)
    assert "leaves the float parameters no room" in proc.stderr
    # within the float tolerance of that corner's slack is still a region: accepted
    path.write_text(IMPOSSIBLE % '"x1 + 2 * x2 >= 39.9"')
    assert closedloop("validate", str(path), cwd=tmp_path).returncode == 0


def test_a_nonlinear_constraint_that_never_holds_fails_validate(tmp_path: Path) -> None:
    """Was `ok` at validate; `run` then stored the campaign and stopped it at its first
    proposal, saying `resume` would continue it. Now refused at its line by both, with the
    designs' own test (not one feasible point in 2^16 Sobol points), nothing stored."""
    path = tmp_path / "nonlinear.yaml"
    path.write_text(IMPOSSIBLE % '"x1 + x2 <= 20"\n  - "x1**2 + x2**2 <= -1"')
    proc = closedloop("validate", str(path), cwd=tmp_path)
    _check_one_message(proc, path, 8)
    assert "constraint 2 ('x1**2 + x2**2 <= -1', alone satisfied by 0" in proc.stderr
    db = tmp_path / "store.db"
    proc = closedloop("run", str(path), "--store", f"sqlite:///{db}", cwd=tmp_path)
    _check_one_message(proc, path, 8)
    assert not db.exists()
    # a number too large for a float in one: refused at its line with the fix
    path.write_text(IMPOSSIBLE % '"x1 + x2 >= 2**2000"')
    proc = closedloop("validate", str(path), cwd=tmp_path)
    _check_one_message(proc, path, 7)
    assert "fix: write a number within ±1e308" in proc.stderr


def test_constraints_in_conflict_together_fail_validate(tmp_path: Path) -> None:
    """Two constraints that only conflict together: was `ok` at validate, then 49 s of
    sampling at run and a campaign left behind; now one located message at load."""
    path = tmp_path / "conflict.yaml"
    path.write_text(IMPOSSIBLE % '"x1 + x2 <= 1"\n  - "x1 + x2 >= 20"')
    proc = closedloop("validate", str(path), cwd=tmp_path)
    _check_one_message(proc, path, 8)
    assert (
        "constraints[1] 'x1 + x2 <= 1' and constraints[2] 'x1 + x2 >= 20' can never hold "
        "together" in proc.stderr.replace("\n", " ")
    )
    db = tmp_path / "store.db"
    proc = closedloop("run", str(path), "--store", f"sqlite:///{db}", cwd=tmp_path)
    _check_one_message(proc, path, 8)
    assert not db.exists()


@pytest.mark.parametrize(
    ("constraints", "refused"),
    [
        # an equality written as two inequalities: a surface, which no design can sample
        ('"x1 + x2 <= 3"\n  - "x1 + x2 >= 3"', True),
        # the same with room to spare is fine, and so is a third constraint that fits
        ('"x1 + x2 <= 3.5"\n  - "x1 + x2 >= 3"\n  - "x1 <= 2"', False),
        # three that each pair allows, but not all together
        ('"x1 >= 5"\n  - "x2 >= 10"\n  - "x1 + x2 <= 14"', True),
    ],
)
def test_constraints_that_leave_no_room_together_fail_validate(
    constraints: str, refused: bool, tmp_path: Path
) -> None:
    from loop.config import load_campaign

    path = tmp_path / "room.yaml"
    path.write_text(IMPOSSIBLE % constraints)
    if not refused:
        load_campaign(path)
        return
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    assert "please report" not in str(info.value)
    assert info.value.line is not None and info.value.fix


# A fix each (deep nesting, booleans in numeric fields, a parameter without a type): what
# `validate` prints, as the user sees it.
LOCATED = [
    ("deep_nesting.yaml", 9, "nests lists/mappings more than 100 levels deep"),
    ("bool_failure_rate.yaml", 9, "instrument.failure_rate: true/false is not a number"),
    ("bool_max_trials.yaml", 9, "budget.max_trials: true/false is not a number"),
    ("bool_initial_n.yaml", 10, "planner.initial.n: true/false is not a number"),
    ("param_without_type.yaml", 4, "add `type:` (one of float, int, choice, fixed)"),
]


@pytest.mark.parametrize(("name", "line", "message"), LOCATED, ids=[n for n, _, _ in LOCATED])
def test_validate_locates_the_problem(name: str, line: int, message: str, tmp_path: Path) -> None:
    path = BAD / name
    proc = closedloop("validate", str(path), cwd=tmp_path)
    _check_one_message(proc, path, line)
    assert message in proc.stderr.replace("\n", ""), proc.stderr
    assert "please report" not in proc.stderr


def test_deep_nesting_in_an_instrument_file_exits_2(tmp_path: Path) -> None:
    """The same guard for `closedloop instruments check` (an instrument file)."""
    path = tmp_path / "bench.yaml"
    path.write_text(
        "inputs:\n  a: {setpoint: A}\noutputs: {y: {pv: Y}}\n"
        "description: " + "[" * 300 + "]" * 300 + "\n"
    )
    proc = closedloop("instruments", "check", str(path), cwd=tmp_path)
    _check_one_message(proc, path, 4)
    assert "more than 100 levels deep" in proc.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.yaml", "missing.yaml: no such file"),
        ("adir", "adir: is a directory"),
        ("latin1.yaml", "latin1.yaml:2: is not UTF-8 text"),
    ],
)
def test_instruments_check_of_an_unreadable_file(name: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "latin1.yaml").write_bytes(b"name: bench\nunit: \xb5m\n")
    proc = closedloop("instruments", "check", name, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.count("error:") == 1
    assert "Traceback" not in proc.stderr and "please report" not in proc.stderr


# ---------------------------------------------------------------------------- fuzzing
def _loads_or_refuses(text: str, tmp_path: Path) -> None:
    try:
        loaded = parse_campaign(text, path=tmp_path / "fuzz.yaml", base_dir=tmp_path)
    except CampaignConfigError as exc:
        assert str(exc).startswith(str(tmp_path / "fuzz.yaml"))
        assert exc.problem
    else:
        assert loaded.campaign.name


_TOKENS = [
    "name",
    "parameters",
    "objectives",
    "instrument",
    "budget",
    "planner",
    "seed",
    "bounds",
    "values",
    "type",
    "float",
    "int",
    "choice",
    "log",
    "goal",
    "minimize",
    "simulator",
    "branin",
    "failing_region",
    "timeout",
    "max_retries",
    "max_trials",
    "max_duration",
    "kind",
    "sobol",
    "x1",
    "x2",
    "y",
    ":",
    ": ",
    "- ",
    "-",
    "\n",
    "\n  ",
    "  ",
    "\t",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "<<: ",
    "!!python/object:os.system ",
    "!!binary ",
    "!tag ",
    "'",
    '"',
    "#",
    "|",
    ">",
    "?",
    "---",
    "...",
    "%YAML 1.2\n",
    "~",
    "null",
    "true",
    "0",
    "1",
    "-5",
    "1e400",
    "-1e400",
    ".nan",
    ".inf",
    "0x1F",
    "1_000",
    "2h",
    "30m",
    "__import__('os')",
    "x1 + x2 > 1.5",
    "lambda: 1",
    "\x00",
    "\ufeff",
    "é",
]


@st.composite
def yamlish(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(st.sampled_from(_TOKENS), max_size=60))
    return "".join(tokens)


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(EXAMPLE_TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "replace", "insert", "indent", "cut"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "replace":
            line = lines[i]
            a = draw(st.integers(0, len(line)))
            b = draw(st.integers(a, len(line)))
            lines[i] = line[:a] + draw(st.sampled_from(_TOKENS)) + line[b:]
        elif op == "insert":
            lines.insert(i, draw(yamlish()))
        elif op == "indent":
            lines[i] = draw(st.sampled_from(["  ", "\t", " "])) + lines[i]
        else:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    return "\n".join(lines) + "\n"


_FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,  # correctness, not speed: never a timed assertion
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ
@given(text=st.one_of(yamlish(), st.text(max_size=300)))
def test_fuzz_yamlish_text(text: str, tmp_path: Path) -> None:
    _loads_or_refuses(text, tmp_path)


@_FUZZ
@given(text=mutated_example())
def test_fuzz_mutated_examples(text: str, tmp_path: Path) -> None:
    _loads_or_refuses(text, tmp_path)


_WEIRD = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(_TOKENS)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_TOKENS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def example_with_weird_value(draw: st.DrawFn) -> str:
    """An example campaign with one value anywhere in its tree replaced by something odd."""
    from io import StringIO

    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    data = yaml.load(draw(st.sampled_from(EXAMPLE_TEXTS)))
    node = data
    while True:
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and draw(st.booleans()):
            node = child
            continue
        if draw(st.integers(0, 4)) == 0 and isinstance(node, dict):
            del node[key]
        else:
            node[key] = draw(_WEIRD)
        break
    out = StringIO()
    yaml.dump(data, out)
    return out.getvalue()


@_FUZZ
@given(text=example_with_weird_value())
def test_fuzz_examples_with_odd_values(text: str, tmp_path: Path) -> None:
    _loads_or_refuses(text, tmp_path)


# Data keys that would clash in the devices: found when the campaign loads, never mid-run.
CLASH_HEAD = """\
name: clash
objectives: [{name: %s, goal: maximize}]
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 1
"""
RAMP = "def %s(inputs):\n    return {'%s': inputs['%s']}\n"
CLASHES = {
    # parameter `x` records its setpoint as `x_setpoint`: the user must rename one
    "setpoint": (
        "error",
        "parameters:\n  - {name: x_setpoint, type: float, bounds: [0, 1]}\n"
        "  - {name: x, type: float, bounds: [0, 1]}\n"
        "instrument: {function: 'fns.py:f', outputs: [error], latency: 0.01}\n",
        RAMP % ("f", "error", "x"),
    ),
    # the instrument is named after its function, which is named like its output
    "function_name": (
        "y",
        "parameters: [{name: x, type: float, bounds: [0, 1]}]\n"
        "instrument: {function: 'fns.py:y', outputs: [y], latency: 0.01}\n",
        RAMP % ("y", "y", "x"),
    ),
    # the instrument is named after its dataset, conv.csv, which measures `conv`
    "dataset_name": (
        "conv",
        "instrument: {dataset: conv.csv, spec: conv_spec.yaml, latency: 0.01}\n",
        None,
    ),
}


@pytest.mark.parametrize("kind", list(CLASHES))
def test_data_key_clashes_fail_validate_or_run_cleanly(kind: str, tmp_path: Path) -> None:
    """Was: `validate` said ok, then `run` stopped before trial 1 with "please report it"."""
    objective, body, code = CLASHES[kind]
    if code is not None:
        (tmp_path / "fns.py").write_text(code)
    rows = "\n".join(f"{t},{t / 100}" for t in range(20, 121, 10))
    (tmp_path / "conv.csv").write_text(f"temperature,conv\n{rows}\n")
    (tmp_path / "conv_spec.yaml").write_text(
        "parameters: [{name: temperature, type: float, bounds: [20, 120]}]\noutputs: [conv]\n"
    )
    path = tmp_path / "clash.yaml"
    path.write_text(CLASH_HEAD % objective + body)
    db = tmp_path / "store.db"
    validate = closedloop("validate", str(path), cwd=tmp_path)
    run = closedloop("run", str(path), "--store", f"sqlite:///{db}", cwd=tmp_path)
    if kind == "setpoint":
        for proc in (validate, run):
            _check_one_message(proc, path, 9)
            text = proc.stderr.replace("\n", "")
            assert "'x_setpoint' is both the setpoint of parameter 'x' and a parameter" in text
            assert "fix: rename 'x_setpoint'" in text and "please report" not in text
        assert not db.exists()
        return
    assert validate.returncode == 0, validate.stderr
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 completed, 0 failed" in run.stdout, run.stdout


def test_a_design_that_takes_the_whole_budget_is_warned_about(tmp_path: Path) -> None:
    """A 12-parameter campaign of 10 trials: the default design (13 points) left no model
    trial, silently (found in review). Warned at the line to change, with a size to write;
    a design that leaves room, or a design-only planner, is not warned about."""
    params = "".join(f"  - {{name: x{i}, type: float, bounds: [0, 1]}}\n" for i in range(12))
    text = (
        f"name: wide\nparameters:\n{params}objectives: [{{name: y, goal: minimize}}]\n"
        "instrument: {function: f.py:f, outputs: [y]}\nplanner: {kind: botorch}\n"
        "budget: {max_trials: 10}\n"
    )
    (tmp_path / "f.py").write_text("def f(inputs):\n    return {'y': sum(inputs.values())}\n")
    path = tmp_path / "wide.yaml"
    path.write_text(text)
    proc = closedloop("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "wide.yaml, line 18: the initial design of 13 points (by default max(5, d + 1) for "
        "d = 12) takes all 10 trials of budget.max_trials: no trial is chosen by the botorch "
        "model; set planner.initial: {n: 5} or raise max_trials" in proc.stderr
    )
    for other in ("budget: {max_trials: 14}", "planner: {kind: sobol}"):
        key = other.split(":")[0]
        path.write_text("\n".join(o if not o.startswith(key) else other for o in text.split("\n")))
        proc = closedloop("validate", str(path), cwd=tmp_path)
        assert proc.returncode == 0 and "initial design" not in proc.stderr, proc.stderr


def test_too_many_parameters_says_the_limit_why_and_what_to_do(tmp_path: Path) -> None:
    """pydantic's "List should have at most 100 items" with an example of one parameter
    as its fix (found in review): now the limit, the count, why, and the ways on."""
    params = "".join(f"  - {{name: x{i}, type: float, bounds: [0, 1]}}\n" for i in range(101))
    path = tmp_path / "flat.yaml"
    path.write_text(
        f"name: flat\nparameters:\n{params}objectives: [{{name: y, goal: minimize}}]\n"
        "instrument: {simulator: branin}\nbudget: {max_trials: 3}\n"
    )
    proc = closedloop("validate", str(path), cwd=tmp_path)
    _check_one_message(proc, path, 2)
    assert "parameters: a campaign takes at most 100 parameters (this file has 101)" in (
        proc.stderr
    )
    assert "split the campaign into stages" in proc.stderr
