"""The cap on the unordered choice values a model takes (``planners._space.MAX_CATEGORIES``).

A model sees each value of an unordered choice as an input of its own (one-hot), so its
width is the number of those values summed over the space. A campaign file with one choice
of 99 000 values passed ``validate``, and a BoTorch suggest then took 30-40 s and 5.6 GB
before it gave up for a design point (found in review; ``benchmarks/README.md`` has the
figures the cap was chosen from). A campaign file over the cap is refused with its line and
the fix; one stored before the cap goes on, warned, as it was accepted.
"""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
from pathlib import Path

import pytest

from loop import CampaignConfigError, Runner, Store, load_campaign, parse_campaign
from loop.config import StoredCopy
from planners import ChoiceParameter, FloatParameter
from planners._space import MAX_CATEGORIES, TooManyCategories, check_categories
from tests.cli_process import closedloop

MODEL = """\
def measure(p):
    return {"y": (p["x"] - 0.3) ** 2 + int(p["c"][1:]) % 7}
"""


def _values(k: int) -> str:
    return "[" + ", ".join(f"v{i}" for i in range(k)) + "]"


def _campaign(k: int, *, kind: str = "botorch", ordered: bool = False, extra: str = "") -> str:
    """A campaign with a choice of ``k`` values; ``extra``: more parameters."""
    order = ", ordered: true" if ordered else ""
    return f"""\
name: many-values
parameters:
  - {{name: x, type: float, bounds: [0, 1]}}
  - {{name: c, type: choice{order},
     values: {_values(k)}}}
{extra}objectives:
  - {{name: y, goal: minimize}}
instrument: {{function: "model.py:measure", outputs: [y], latency: 0}}
planner: {{kind: {kind}, initial: {{n: 2}}}}
budget: {{max_trials: 2}}
seed: 1
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "model.py").write_text(MODEL)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_validate_refuses_a_choice_over_the_cap_at_its_values_with_the_fix(
    tmp_path: Path,
) -> None:
    _write(tmp_path, _campaign(MAX_CATEGORIES + 1))
    proc = closedloop("validate", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert f"c.yaml:5: choice 'c' has {MAX_CATEGORIES + 1} values" in message  # `values:`
    assert f"at most {MAX_CATEGORIES} in all" in message
    fix = message.split("fix: ", 1)[1]
    assert "`ordered: true`" in fix and "`int` parameter" in fix
    assert "instrument: {dataset: table.csv, spec: table.yaml}" in fix
    assert "Simulated labs from real measurements" in fix


def test_the_cap_itself_and_ordered_choices_of_any_size_pass(tmp_path: Path) -> None:
    load_campaign(_write(tmp_path, _campaign(MAX_CATEGORIES)))
    # Ordered levels are one input whatever their number (99 000 levels: a 0.6 s suggest).
    load_campaign(_write(tmp_path, _campaign(5000, ordered=True)))


_AX = pytest.param(
    "ax",
    True,
    marks=pytest.mark.skipif(
        importlib.util.find_spec("ax") is None, reason="Ax (closedloop[ax]) not installed"
    ),
)


@pytest.mark.parametrize(("kind", "refused"), [_AX, ("sobol", False), ("random", False)])
def test_kinds_that_fit_a_model_are_capped_and_designs_are_not(
    kind: str, refused: bool, tmp_path: Path
) -> None:
    path = _write(tmp_path, _campaign(1000, kind=kind))
    if not refused:
        load_campaign(path)  # no model: a design over any number of values is cheap
        return
    with pytest.raises(CampaignConfigError, match=f"planner kind {kind} takes each value"):
        load_campaign(path)


def test_the_cap_counts_every_unordered_choice_and_points_at_the_largest(
    tmp_path: Path,
) -> None:
    text = _campaign(150, extra=f"  - {{name: d, type: choice, values: {_values(60)}}}\n")
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(_write(tmp_path, text))
    assert info.value.line == 5  # c's values: the larger choice
    assert "the unordered choices have 210 values in all (c: 150, d: 60)" in str(info.value)
    assert "the values of 'c'" in (info.value.fix or "")


def test_check_categories_without_a_campaign() -> None:
    x = FloatParameter(name="x", bounds=(0.0, 1.0))
    big = ChoiceParameter(name="c", values=tuple(range(MAX_CATEGORIES + 1)))
    with pytest.raises(TooManyCategories) as info:
        check_categories([x, big])
    assert info.value.index == 1
    check_categories([x, big], "sobol")
    check_categories([x, big.model_copy(update={"ordered": True})])


def test_a_dataset_whose_choice_is_over_the_cap_is_refused_at_its_instrument_line(
    tmp_path: Path,
) -> None:
    k = MAX_CATEGORIES + 1
    (tmp_path / "table.csv").write_text("c,y\n" + "".join(f"v{i},{i % 7}\n" for i in range(k)))
    (tmp_path / "table.yaml").write_text(
        f"parameters:\n  - {{name: c, type: choice, values: {_values(k)}}}\n"
        "outputs: [y]\ngoal: {y: maximize}\nenumerated: true\n"
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: screen\n"
        "instrument: {dataset: table.csv, spec: table.yaml}\n"
        "budget: {max_trials: 5}\n"
    )
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    assert info.value.line == 2  # the dataset's parameters come from its spec
    assert f"choice 'c' has {k} values" in str(info.value)


def _stored(cid: int = 1) -> StoredCopy:
    return StoredCopy("sqlite:///s.db", cid, "many-values")


def test_a_stored_campaign_over_the_cap_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path, _campaign(MAX_CATEGORIES + 1))
    text = path.read_text()
    with caplog.at_level(logging.WARNING):
        parse_campaign(text, path=path, base_dir=tmp_path, cross_check=False)
        assert caplog.text == ""  # status, export, report: as accepted, without a word
        tell = StoredCopy("sqlite:///s.db", 1, "many-values", proposes=False)
        parse_campaign(text, path=path, base_dir=tmp_path, stored=tell)
        assert caplog.text == ""  # tell proposes nothing: the cap is no concern of its
        loaded = parse_campaign(text, path=path, base_dir=tmp_path, stored=_stored())
    assert len(loaded.campaign.parameters[1].values) == MAX_CATEGORIES + 1  # type: ignore[union-attr]
    warning = " ".join(caplog.text.split())
    assert "campaign 'many-values' (id 1) as stored (c.yaml, line 5)" in warning
    assert f"choice 'c' has {MAX_CATEGORIES + 1} values" in warning
    assert "its planner's model takes every value, as it did" in warning
    assert "a new campaign file is refused for it" in warning


def test_a_campaign_stored_over_the_cap_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Stored by a version without the cap: a run within it, whose stored text then gains a
    # value (its trials' values are values of both).
    path = _write(tmp_path, _campaign(MAX_CATEGORIES))
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    cid = Runner(load_campaign(path), store).run().campaign_id or 0
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("UPDATE campaign SET config_text = ?", (_campaign(MAX_CATEGORIES + 1),))
    with caplog.at_level(logging.WARNING):
        summary = Runner.from_store(store, cid, max_trials=3).resume()
    assert (summary.completed, summary.status) == (3, "completed")  # the third from the model
    assert "its planner's model takes every value" in caplog.text
