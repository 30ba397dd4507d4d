"""YAML at the edges of what a campaign or instrument file may hold (found in a fuzz review).

Each refusal names the file, the line and a fix, never a traceback: merge keys (``<<:``) are
data like anchors and aliases, each merged key with a line; a character YAML forbids is named
with its line and column; a key that is not text is refused at its own line; and a generic
pydantic error (a bad integer, text, mapping) still gets a fix worded for a YAML author.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml.comments import CommentedMap

from instruments._instrument_file import InstrumentFileError, load_instrument_file
from instruments._yamlfile import line_of
from loop import CampaignConfigError, load_campaign
from tests.cli_process import closedloop

ROOT = Path(__file__).parents[2]
BRANIN = """\
name: branin
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument:
  simulator: branin
  noise: 0.0
planner:
  kind: botorch
  initial: {kind: sobol, n: 5}
budget:
  max_trials: 30
seed: 1
"""
INITIAL = "  initial: {kind: sobol, n: 5}"
INSTRUMENT = (ROOT / "campaigns" / "instruments" / "epics_reactor.yaml").read_text()


def _write(tmp_path: Path, text: str | bytes, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _refusal(path: Path) -> CampaignConfigError:
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    return info.value


def _instrument_refusal(path: Path) -> InstrumentFileError:
    with pytest.raises(InstrumentFileError) as info:
        load_instrument_file(path)
    return info.value


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _line_of_text(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


# ---------------------------------------------------------------------------- merge keys
def test_merged_keys_are_data_like_anchors(tmp_path: Path) -> None:
    text = _replace(
        BRANIN,
        "  - {name: x2, type: float, bounds: [0, 15]}\n",
        "  - <<: {name: x2, type: float}\n    bounds: [0, 15]\n",
    )
    text = _replace(text, "budget:\n  max_trials: 30\n", "budget:\n  <<: {max_trials: 7}\n")
    loaded = load_campaign(_write(tmp_path, text))
    assert [p.name for p in loaded.campaign.parameters] == ["x1", "x2"]
    assert loaded.campaign.budget.max_trials == 7


def test_a_mapping_of_merged_keys_only_is_refused_at_the_merged_key(tmp_path: Path) -> None:
    """It ended in ``TypeError: 'NoneType' object is not subscriptable`` (ruamel keeps no
    line data for a mapping holding only merged keys)."""
    text = _replace(
        BRANIN, "budget:\n  max_trials: 30\n", "budget:\n  <<: {max_trials: 5, max_duraton: 10m}\n"
    )
    exc = _refusal(_write(tmp_path, text))
    assert exc.line == _line_of_text(text, "<<:"), str(exc)
    assert exc.problem == "unknown key 'max_duraton' in budget"
    assert "did you mean 'max_duration'?" in exc.fix


def test_a_file_of_merged_keys_only_is_refused_at_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "<<: {name: merged, type: float}\n")
    exc = _refusal(path)
    assert exc.line == 1 and exc.problem == "unknown key 'type' in the top level", str(exc)
    assert "allowed keys: budget" in exc.fix
    exc_i = _instrument_refusal(path)
    assert exc_i.line == 1 and "unknown key 'type' in the top level" in exc_i.problem
    assert "allowed keys: acquire" in exc_i.fix


def test_an_unknown_merged_key_has_the_merge_line(tmp_path: Path) -> None:
    text = _replace(BRANIN, "seed: 1\n", "<<: {nope: 1}\nseed: 1\n")
    exc = _refusal(_write(tmp_path, text))
    assert exc.line == _line_of_text(text, "<<:"), str(exc)
    assert exc.problem == "unknown key 'nope' in the top level"


def test_a_key_merged_from_a_block_has_its_own_line(tmp_path: Path) -> None:
    text = _replace(
        BRANIN,
        "budget:\n  max_trials: 30\n",
        "budget:\n  <<:\n    max_trials: 5\n    max_duraton: 10m\n",
    )
    exc = _refusal(_write(tmp_path, text))
    assert exc.line == _line_of_text(text, "max_duraton"), str(exc)


def test_a_key_merged_through_an_alias_has_the_merge_line(tmp_path: Path) -> None:
    """The anchor's line would name the mapping it was written in, which is valid; the
    mapping that took it is the one at fault."""
    text = _replace(
        BRANIN,
        "  - {name: x1, type: float, bounds: [-5, 10]}\n"
        "  - {name: x2, type: float, bounds: [0, 15]}\n",
        "  - &x1 {name: x1, type: float, bounds: [-5, 10]}\n"
        "  - name: x2\n"
        "    type: choice\n"
        "    values: [a, b]\n"
        "    <<: *x1\n",
    )
    exc = _refusal(_write(tmp_path, text))
    assert exc.line == _line_of_text(text, "<<: *x1"), str(exc)
    assert "parameters[1]" in exc.problem and "bounds" in exc.problem, str(exc)


def test_merged_keys_in_an_instrument_file_via_the_cli(tmp_path: Path) -> None:
    path = _write(tmp_path, "<<: {name: merged, type: float}\n", "inst.yaml")
    proc = closedloop("instruments", "check", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "please report it" not in proc.stderr
    assert f"{path}:1: unknown key 'type' in the top level" in proc.stderr
    assert "fix: allowed keys: acquire" in proc.stderr


def test_line_of_a_mapping_without_line_data_is_no_traceback() -> None:
    built = CommentedMap()  # built in code: ruamel's line data is None
    built["a"] = CommentedMap()
    assert line_of(built, ("a", "b")) is None


# ---------------------------------------------------------------------------- characters
def test_a_control_character_is_named_with_its_line_and_column(tmp_path: Path) -> None:
    text = _replace(BRANIN, "name: branin", "name: bra\x0bnin")
    exc = _refusal(_write(tmp_path, text))
    assert exc.line == 1, str(exc)
    assert "U+000B (vertical tab) at column 10" in exc.problem
    assert "unicode string" not in exc.problem and "position" not in exc.problem
    assert exc.fix.startswith("delete it (or retype the line)")


def test_a_control_character_in_a_file_with_old_mac_line_ends_has_its_line(
    tmp_path: Path,
) -> None:
    """Lines counted by ``\n`` alone put a character of line 9 of a CR-only file at line 1
    (found in review); the reader counts every line end YAML does."""
    text = _replace(BRANIN, "seed: 1\n", "seed: 1 # a\x07b\n")
    want = _line_of_text(text, "seed:")
    exc = _refusal(_write(tmp_path, text.replace("\n", "\r")))
    assert exc.line == want, str(exc)
    assert "U+0007 (bell) at column 12" in exc.problem


def test_a_nul_character_is_named_with_its_line(tmp_path: Path) -> None:
    text = _replace(BRANIN, "seed: 1\n", "seed: 1\x00\n")
    exc = _refusal(_write(tmp_path, text))
    assert exc.line == _line_of_text(text, "seed:"), str(exc)
    assert "U+0000 (NUL) at column 8" in exc.problem
    assert exc.fix.startswith("delete it")


def test_utf16_without_a_byte_order_mark_is_said_as_such(tmp_path: Path) -> None:
    exc = _refusal(_write(tmp_path, BRANIN.encode("utf-16-le")))
    assert "is not UTF-8 text" in exc.problem and "UTF-16" in exc.problem, str(exc)
    assert exc.fix == "save the file as UTF-8"
    exc_i = _instrument_refusal(_write(tmp_path, INSTRUMENT.encode("utf-16-le"), "i.yaml"))
    assert exc_i.fix == "save the file as UTF-8"


def test_a_control_character_in_an_instrument_file(tmp_path: Path) -> None:
    text = _replace(INSTRUMENT, "tolerance: 0.5", "tolerance: 0.5\x1b")
    exc = _instrument_refusal(_write(tmp_path, text, "i.yaml"))
    assert exc.line == _line_of_text(text, "tolerance: 0.5"), str(exc)
    assert "U+001B (escape)" in exc.problem and exc.fix.startswith("delete it")


# ---------------------------------------------------------------------------- keys
@pytest.mark.parametrize(
    ("key", "problem", "fix"),
    [
        ("~", "key ~ (null) is not a name", "quote it ('~') or remove it"),
        ("null", "key null (null) is not a name", "quote it ('null') or remove it"),
    ],
)
def test_a_key_that_is_not_text_is_refused_at_its_line(
    tmp_path: Path, key: str, problem: str, fix: str
) -> None:
    """``instrument: {~: 0.0}`` said ``instrument.None: Keys should be strings`` at the
    ``instrument:`` line, with the fix for writing an instrument."""
    text = _replace(BRANIN, "  noise: 0.0\n", f"  {key}: 0.0\n")
    exc = _refusal(_write(tmp_path, text))
    assert exc.line == _line_of_text(text, f"  {key}: 0.0"), str(exc)
    assert exc.problem == problem and exc.fix == fix


@pytest.mark.parametrize("key", ["1", "true", "2026-12-05"])
def test_a_key_that_is_a_number_or_date_is_refused_by_the_schema_at_its_line(
    tmp_path: Path, key: str
) -> None:
    """Numbers, true/false and dates are keys a plugin's free-form ``args:`` may hold (a
    channel map ``{1: temp}``; found in review), so the reader takes them and the schema
    refuses them where it names its keys, at the key's own line (a date's too: pydantic
    names it by its repr)."""
    for old, new in (("  noise: 0.0\n", f"  {key}: 0.0\n"), ("seed: 1\n", f"{key}: 1\n")):
        text = _replace(BRANIN, old, new) if old.startswith(" ") else BRANIN.replace(old, new)
        exc = _refusal(_write(tmp_path, text))
        assert exc.line == _line_of_text(text, new.rstrip("\n")), str(exc)
        assert "Keys should be strings" in exc.problem and "quote it" in exc.fix, str(exc)


@pytest.mark.parametrize("entry", ["[a]: 1", "? seed: 4", "{a: 1}: 2"])
def test_a_list_or_mapping_as_a_key_is_refused_at_its_line(tmp_path: Path, entry: str) -> None:
    text = BRANIN.replace("seed: 1\n", f"{entry}\n")
    exc = _refusal(_write(tmp_path, text))
    assert exc.line == _line_of_text(text, entry), str(exc)
    assert "a list or mapping is used as a key" in exc.problem
    assert "remove the ':'" in exc.fix and "'?'" in exc.fix


def test_a_key_that_is_not_text_in_an_instrument_file(tmp_path: Path) -> None:
    text = _replace(INSTRUMENT, "  flow:\n", "  ~:\n")
    exc = _instrument_refusal(_write(tmp_path, text, "i.yaml"))
    assert exc.line == _line_of_text(text, "  ~:"), str(exc)
    assert exc.problem == "key ~ (null) is not a name" and exc.fix == "quote it ('~') or remove it"


# ---------------------------------------------------------------------------- generic fixes
@pytest.mark.parametrize(
    ("old", "new", "problem", "fix"),
    [
        ("seed: 1", 'seed: "7a"', "seed: Input should be a valid integer", "e.g. seed: 7"),
        ("seed: 1", "seed: 1e+308", "seed: Unable to parse", "write a whole number in digits"),
        (
            "seed: 1",
            "seed: 2.5",
            "is not a whole number",
            "write a whole number, without a fraction",
        ),
        ("name: branin", "name: [a, b]", "name: Input should be a valid str", "write one text"),
        ("name: branin", "name: 0123", "name: Input should be a valid str", "quote it, so YAML"),
        ("  noise: 0.0", "  noise: abc", "instrument.noise: Input should", "e.g. noise: 0.5"),
        (INITIAL, "  initial: 5", "planner.initial: Input should", "under initial:, of its keys"),
        (INITIAL, "  initial: {kind: sobol, n: five}", "planner.initial.n: Input", "e.g. n: 10"),
        ("seed: 1", "seed: -1", "seed: Input should be greater than", "write a number >= 0"),
        # "no fixed seed" is no key or null, not a word
        ("seed: 1", "seed: none", "seed: Input should be a valid integer", "leave seed out"),
        ("seed: 1", "seed: Random", "seed: Input should be a valid integer", "or write seed: null"),
    ],
)
def test_a_generic_type_error_gets_a_fix_for_its_type(
    tmp_path: Path, old: str, new: str, problem: str, fix: str
) -> None:
    text = _replace(BRANIN, old, new)
    exc = _refusal(_write(tmp_path, text))
    assert exc.line == _line_of_text(text, new), str(exc)
    assert problem in exc.problem and "instance of" not in exc.problem, str(exc)
    assert fix in exc.fix and "more problem" not in exc.fix.split(";")[0], str(exc)


def test_a_missing_key_without_a_hint_says_where_to_add_it(tmp_path: Path) -> None:
    text = "description: d\n<<: {seed: 1}\n"
    exc = _refusal(_write(tmp_path, text))
    assert exc.problem == "missing required key 'name' in the top level", str(exc)
    assert exc.fix.startswith("add `name:` at the top level")


@pytest.mark.parametrize(
    ("old", "new", "fix"),
    [
        ("tolerance: 0.5", "tolerance: abc", "write a number, e.g. tolerance: 0.5"),
        ("max_step: 80 ", "max_step: [80]", "write a number, e.g. max_step: 0.5"),
        ("control_layer: caproto", "control_layer: capr", "write one of 'caproto' or 'pyepics'"),
        ("connection_timeout: 5 ", "connection_timeout: -5", "write a number > 0"),
        ("name: epics-reactor", "name: [a]", "write one text value, not a list"),
    ],
)
def test_a_generic_type_error_in_an_instrument_file_gets_a_fix(
    tmp_path: Path, old: str, new: str, fix: str
) -> None:
    text = _replace(INSTRUMENT, old, new)
    exc = _instrument_refusal(_write(tmp_path, text, "i.yaml"))
    assert exc.line == _line_of_text(text, new), str(exc)
    assert exc.fix.startswith(fix), str(exc)
