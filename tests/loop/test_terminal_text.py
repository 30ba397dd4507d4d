"""Text from a campaign file or a store reaches the terminal as text, never as commands.

A choice value, a function's error, a stop reason are data: a shared campaign file or store
must not set the terminal's title or clear its screen (control characters are printed as
visible escapes, ``loop.fmt.visible``), nor be read as rich markup (a stop reason with
``[/x]`` ended ``status`` with a MarkupError). A number YAML cannot build (an integer of
5000 digits, the 30th of February) is a file/line error, not a bug to report.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rich.logging import RichHandler
from rich.text import Text

from loop.fmt import Output, WholeTable, visible
from tests.cli_process import run_cli

# Written with YAML's own escapes: \e is ESC, \a is BEL. The OSC sets the window title,
# the SGR turns the background red.
_CAMPAIGN = r"""name: esc
description: "desc \e[5mBLINK\e[0m"
parameters:
  - {name: x, type: float, bounds: [0, 1]}
  - {name: c, type: choice, values: ["a\e]0;TITLE\a\e[41mRED-BG", "plain"]}
objectives:
  - {name: y, goal: minimize}
instrument: {function: "f.py:f", outputs: [y]}
planner: {kind: random}
budget: {max_trials: 4, max_failures: 3}
seed: 3
"""

# Fails for x > 0.5, with a message that would clear the screen and turn the text red.
_FUNCTION = """def f(inputs):
    if inputs["x"] > 0.5:
        raise RuntimeError("boom \\x1b[2J\\x1b[31mRED \\x9b1m C1")
    return {"y": inputs["x"]}
"""

# What the terminal must never receive from the campaign's text: an OSC (the title), an
# erase of the screen, the red background, a BEL, a C1 CSI.
_RAW = ("\x1b]", "\x1b[2J", "\x1b[41m", "\x07", "\x9b")


def _closedloop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` as on a terminal: rich's FORCE_COLOR makes it style its output
    and draw the progress bar, as under ``script``; 200 columns so table cells do not fold."""
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    return run_cli(args, cwd=cwd, env=env)


def _plain(text: str) -> str:
    """``text`` without rich's own SGR styling and cursor codes (the escapes rich writes
    around text), so a test reads what a person sees."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def _assert_nothing_raw(output: str) -> None:
    # rich's own codes are CSI sequences of its styles and cursor moves; none of the
    # campaign's survives
    leftover = _plain(output)
    for raw in _RAW:
        assert raw not in leftover, (raw, output)
    assert "\x1b" not in leftover, output


@pytest.fixture(scope="module")
def failed_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A campaign run to its failure (three failed trials), and the output of its run."""
    folder = tmp_path_factory.mktemp("terminal")
    (folder / "esc.yaml").write_text(_CAMPAIGN)
    (folder / "f.py").write_text(_FUNCTION)
    run = _closedloop("run", "esc.yaml", "--store", "sqlite:///esc.db", cwd=folder)
    assert run.returncode == 1, run.stdout + run.stderr  # max_failures reached
    return folder, run.stdout + run.stderr


def test_run_lines_and_failures_show_control_characters_as_escapes(
    failed_store: tuple[Path, str],
) -> None:
    _, output = failed_store
    _assert_nothing_raw(output)
    shown = _plain(output)
    # each failed trial's line, and the failure list of the failed campaign
    assert shown.count(r"boom \x1b[2J\x1b[31mRED \x9b1m C1") >= 3 * 2, shown
    assert "error:" not in shown and "please report it" not in shown


def test_export_to_a_terminal_shows_control_characters_and_a_pipe_gets_the_data(
    failed_store: tuple[Path, str],
) -> None:
    """``export`` without ``-o`` wrote the CSV as stored to a terminal too, so a shared
    store's value cleared the screen of whoever exported it (found in review). On a
    terminal (a real pty here: ``isatty`` decides) it is shown as escapes; to a pipe the
    data goes byte for byte."""
    import pty

    folder, _ = failed_store
    args = [sys.executable, "-m", "loop.cli", "export", "--store", "sqlite:///esc.db"]
    master, slave = pty.openpty()
    process = subprocess.Popen(args, cwd=folder, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    seen = b""
    while True:  # read as it writes: a pty's buffer is small
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors
    shown = seen.decode()
    _assert_nothing_raw(shown)
    assert r"boom \x1b[2J\x1b[31mRED" in shown, shown
    piped = _closedloop("export", "--store", "sqlite:///esc.db", cwd=folder)
    assert piped.returncode == 0, piped.stderr
    assert "boom \x1b[2J\x1b[31mRED" in piped.stdout  # the stored value itself


def test_status_shows_choice_values_and_stored_errors_as_escapes(
    failed_store: tuple[Path, str],
) -> None:
    folder, _ = failed_store
    status = _closedloop("status", "--store", "sqlite:///esc.db", cwd=folder)
    assert status.returncode == 0, status.stderr
    _assert_nothing_raw(status.stdout + status.stderr)
    shown = _plain(status.stdout)
    assert r"a\x1b]0;TITLE\x07\x1b[41mRED-BG" in shown  # the choice, BEL included
    # the failure list of a failed campaign, whole
    assert r"boom \x1b[2J\x1b[31mRED \x9b1m C1" in shown
    # `status --json` was and stays JSON's own escapes
    as_json = _closedloop("status", "--json", "--store", "sqlite:///esc.db", cwd=folder)
    assert "\x1b" not in as_json.stdout and "\\u001b" in as_json.stdout


def _status_headline(folder: Path, name: str, reason: str) -> str:
    """The first line ``status`` prints of a copy of the failed campaign's store whose
    campaign name and stop reason were edited to ``name`` and ``reason``."""
    db = folder / "edited.db"
    db.write_bytes((folder / "esc.db").read_bytes())
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE campaign SET name = ?, stop_reason = ?", (name, reason))
    status = _closedloop("status", "--store", "sqlite:///edited.db", cwd=folder)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "MarkupError" not in status.stderr and "please report it" not in status.stderr
    return _plain(status.stdout).splitlines()[0]


def test_a_stop_reason_is_text_not_markup(failed_store: tuple[Path, str]) -> None:
    folder, _ = failed_store
    line = _status_headline(
        folder, "esc", "the runner failed: pip install 'closedloop[ax]' [/x] \x1b]0;T\x07"
    )
    assert r"pip install 'closedloop[ax]' [/x] \x1b]0;T\x07" in line, line


def test_a_stored_name_and_reason_keep_to_their_line(failed_store: tuple[Path, str]) -> None:
    """A line break in a stored name or reason printed a second line that looked like the
    tool's own (found in review): written as ``\\n``."""
    folder, _ = failed_store
    first = _status_headline(folder, "esc\r\nFAKE LINE", "done\ncampaign 'x' (id 9): completed")
    assert first.startswith("esc\\nFAKE LINE (id 1)"), first
    assert first.endswith("done\\ncampaign 'x' (id 9): completed"), first


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("9" * 5000, "has an integer of 5000 digits"),
        ("2026-02-30", "has a date that cannot be read: 2026-02-30"),
    ],
)
def test_a_number_python_cannot_build_is_a_file_and_line_error(
    tmp_path: Path, value: str, said: str
) -> None:
    text = (
        "name: big\nparameters:\n  - {name: x, type: float, bounds: [0, 1]}\n"
        "objectives: [{name: y, goal: minimize}]\ninstrument: {simulator: branin}\n"
        f"seed: {value}\n"
    )
    (tmp_path / "big.yaml").write_text(text)
    result = _closedloop("validate", "big.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"big.yaml:6: {said}" in result.stderr, result.stderr
    assert "fix:" in result.stderr
    assert "Traceback" not in result.stderr and "please report it" not in result.stderr


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!python/object/apply:os.system [0, 1]", "!!python/object/apply:os.system"),
        ("!!python/tuple [0, 1]", "!!python/tuple"),
        ("!bounds [0, 1]", "!bounds"),
        ("!!set {0, 1}", "!!set"),
    ],
)
def test_a_yaml_tag_is_refused_with_its_line(tmp_path: Path, value: str, tag: str) -> None:
    """The round-trip reader built nothing from a tag but dropped it without a word, so a
    file with ``!!python/...`` validated while the README promises it is refused (found in
    review)."""
    text = (
        "name: tagged\nparameters:\n"
        f"  - {{name: x, type: float, bounds: {value}}}\n"
        "objectives: [{name: y, goal: minimize}]\ninstrument: {simulator: branin}\n"
    )
    (tmp_path / "tagged.yaml").write_text(text)
    result = _closedloop("validate", "tagged.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"tagged.yaml:3: has the YAML tag {tag}" in result.stderr, result.stderr
    assert f"fix: remove {tag} and write the value itself" in result.stderr


def test_plain_data_tags_read_as_their_value(tmp_path: Path) -> None:
    """``!!str``, ``!!int`` and merge keys are plain YAML: they keep working (``!!str`` was
    refused as "not a valid string" before, round-trip keeping the tag on a wrapper)."""
    from loop.config import load_campaign

    (tmp_path / "plain.yaml").write_text(
        "name: plain\ndescription: !!str 0123\nseed: !!int 7\nparameters:\n"
        "  - &x {name: x1, type: float, bounds: [-5, 10]}\n"
        "  - {<<: *x, name: x2, bounds: [0, 15]}\n"
        "objectives: [{name: y, goal: minimize}]\ninstrument: {simulator: branin}\n"
        "budget: {max_trials: !!int 3}\n"
    )
    campaign = load_campaign(tmp_path / "plain.yaml").campaign
    assert campaign.description == "0123"
    assert campaign.seed == 7
    assert [p.name for p in campaign.parameters] == ["x1", "x2"]
    assert campaign.budget.max_trials == 3


# ------------------------------------------------------------------ the console itself
def test_the_operators_prompt_shows_an_output_name_as_text(tmp_path: Path) -> None:
    """The manual instrument writes its prompt past rich (so Ctrl-C does not print it
    twice): an output named with an ESC sequence cleared the operator's screen."""
    (tmp_path / "m.yaml").write_text(
        "name: m\nparameters:\n  - {name: x, type: float, bounds: [0, 1]}\n"
        'objectives: [{name: "y\\e[2J", goal: minimize}]\n'
        'instrument: {manual: true, outputs: ["y\\e[2J"]}\nbudget: {max_trials: 2}\n'
    )
    done = run_cli(["run", "m.yaml", "--store", "sqlite:///m.db"], cwd=tmp_path, input="stop\n")
    assert "y\\x1b[2J = " in done.stdout, done.stdout
    _assert_nothing_raw(done.stdout)


def test_visible_keeps_newline_and_tab_and_escapes_the_rest() -> None:
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible("line\r\nnext\rover") == "line\nnext\\x0dover"
    assert visible("\x00\x1b\x7f\x85\x9b") == "\\x00\\x1b\\x7f\\x85\\x9b"
    assert visible("µ é ✓ 😀") == "µ é ✓ 😀"  # printable text beyond ASCII is text


def _console() -> tuple[Output, io.StringIO]:
    out = io.StringIO()
    return Output(file=out, force_terminal=True, color_system="truecolor", width=120), out


def test_text_rich_builds_without_render_str_is_made_visible_too() -> None:
    # a Text printed as it is, a log record (RichHandler builds its own Text), a table
    console, out = _console()
    console.print(Text("text \x1b]0;T\x07 end", style="bold red"))
    handler = RichHandler(console=console, show_path=False)
    handler.emit(logging.LogRecord("x", logging.WARNING, "", 0, "rec \x1b[2J", None, None))
    console.print(WholeTable("t\x1b[41m", ["h\x1b]0;H"], [["cell \x9b2J"]], numeric=()))
    written = out.getvalue()
    _assert_nothing_raw(written)
    shown = _plain(written)
    for part in (r"text \x1b]0;T", r"rec \x1b[2J", r"t\x1b[41m", r"h\x1b]0;H", r"cell \x9b2J"):
        assert part in shown, (part, shown)
    assert "\x1b[1;31m" in written  # rich's own style is written as it is


def test_markup_and_rich_control_codes_are_untouched() -> None:
    console, out = _console()
    console.print("[bold]bold[/] plain")
    console.show_cursor(False)  # a control segment rich writes itself
    written = out.getvalue()
    assert "\x1b[1mbold\x1b[0m plain" in written
    assert "\x1b[?25l" in written
