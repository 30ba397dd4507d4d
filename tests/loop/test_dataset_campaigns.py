"""Campaigns whose instrument is a dataset: parameters from the spec, candidate tables, errors
with file and line, and whole campaigns through the real Runner, RunEngine and SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loop import CampaignConfigError, Runner, Store, load_campaign, parse_campaign
from simulators import dataset_simulator

ROOT = Path(__file__).parents[2]


def _parse(text: str, tmp_path: Path) -> object:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def test_parameters_are_filled_in_from_the_dataset() -> None:
    loaded = load_campaign(ROOT / "campaigns" / "dataset_hplc.yaml")
    c = loaded.campaign
    spec = dataset_simulator("hplc").spec
    assert [p.name for p in c.parameters] == list(spec.parameter_names)
    assert [tuple(p.bounds) for p in c.parameters] == [  # type: ignore[union-attr]
        p.bounds for p in spec.parameters
    ]
    assert c.space.candidates is None


def test_an_enumerated_dataset_gives_the_planner_its_rows() -> None:
    c = load_campaign(ROOT / "campaigns" / "dataset_suzuki.yaml").campaign
    assert c.space.candidates is not None and len(c.space.candidates) == 3696


def test_a_campaign_may_narrow_the_dataset_but_not_leave_it(tmp_path: Path) -> None:
    spec = dataset_simulator("buchwald_a").spec
    values = {p.name: list(p.values or ()) for p in spec.parameters}
    params = "\n".join(
        f"  - {{name: {n}, type: choice, values: {json.dumps(v[:2] if n == 'additive' else v)}}}"
        for n, v in values.items()
    )
    text = f"""name: narrowed
parameters:
{params}
objectives: [{{name: yield, goal: maximize}}]
instrument: {{dataset: buchwald_a}}
budget: {{max_trials: 3}}
"""
    c = _parse(text, tmp_path).campaign  # type: ignore[attr-defined]
    assert len(c.space.candidates) == 3 * 2 * 3 * 4
    bad = """name: wrong
parameters:
  - {name: sample_loop, type: float, bounds: [0, 0.08]}
  - {name: flow, type: float, bounds: [0, 1]}
objectives: [{name: peak_area, goal: maximize}]
instrument:
  dataset: hplc
budget: {max_trials: 3}
"""
    # The error points at the parameter to fix, not at `dataset:`.
    with pytest.raises(CampaignConfigError, match=r"campaign.yaml:4: instrument: dataset 'hplc'"):
        _parse(bad, tmp_path)
    wide = bad.replace("  - {name: flow, type: float, bounds: [0, 1]}\n", "").replace(
        "[0, 0.08]", "[0, 0.5]"
    )
    with pytest.raises(CampaignConfigError, match="needs a value for"):
        _parse(wide, tmp_path)


def test_an_int_dataset_parameter_must_be_an_int_in_the_campaign(tmp_path: Path) -> None:
    # crossed_barrel's strut count n is a whole number: `type: float` passed the bounds
    # check, then every trial failed on n=9.22.
    text = """name: struts
parameters:
  - {name: n, type: float, bounds: [6, 12]}
  - {name: theta, type: float, bounds: [0, 200]}
  - {name: r, type: float, bounds: [1.5, 2.5]}
  - {name: t, type: float, bounds: [0.7, 1.4]}
objectives: [{name: toughness, goal: maximize}]
instrument: {dataset: crossed_barrel}
budget: {max_trials: 3}
"""
    with pytest.raises(CampaignConfigError) as info:
        _parse(text, tmp_path)
    message = str(info.value)
    assert "campaign.yaml:3: instrument: parameter 'n' is declared float" in message
    assert "whole numbers only (int in [6, 12])" in message
    assert "fix: in the campaign's `parameters:`, write `type: int` for 'n'" in message
    c = _parse(text.replace("name: n, type: float", "name: n, type: int"), tmp_path)
    assert c.campaign.parameters[0].name == "n"  # type: ignore[attr-defined]
    fixed = text.replace(
        "{name: n, type: float, bounds: [6, 12]}", "{name: n, type: fixed, value: 9}"
    )
    _parse(fixed, tmp_path)  # one whole number is fine


def test_a_partial_noise_overrides_only_the_outputs_it_names(tmp_path: Path) -> None:
    from instruments import build_instrument

    text = """name: noisy
objectives: [{name: yield, goal: maximize}]
instrument: {dataset: suzuki_i, noise: {yield: 1.0}}
budget: {max_trials: 3}
"""
    fitted = dataset_simulator("suzuki_i").noise
    assert fitted["turnover"] > 0
    for noise, expected in [
        ("{yield: 1.0}", [1.0, fitted["turnover"]]),  # turnover keeps its fitted noise
        ("0.5", [0.5, 0.5]),  # one number sets every output
    ]:
        c = _parse(text.replace("{yield: 1.0}", noise), tmp_path).campaign  # type: ignore[attr-defined]
        inst = build_instrument(c.instrument, c.parameters, base_dir=tmp_path, seed=1)
        try:
            detector = inst.detectors[0]
            assert detector._sim_outputs == ("yield", "turnover")
            assert detector._sim_noise_sd == pytest.approx(expected)
        finally:
            inst.close()


def test_unknown_dataset_is_located(tmp_path: Path) -> None:
    text = """name: typo
objectives: [{name: y, goal: maximize}]
instrument:
  dataset: suzuki
budget: {max_trials: 3}
"""
    with pytest.raises(CampaignConfigError, match=r"campaign.yaml:4: .*unknown dataset 'suzuki'"):
        _parse(text, tmp_path)


def test_a_bad_spec_names_both_files_and_lines(tmp_path: Path) -> None:
    (tmp_path / "runs.csv").write_text("t,y\n1,2\n3,4\n")
    (tmp_path / "runs.yaml").write_text(
        "parameters:\n  - {name: t, type: float, bounds: [0, 10]}\noutputs: [y]\ngoal: maximise\n"
    )
    text = """name: mine
objectives: [{name: y, goal: maximize}]
instrument:
  dataset: runs.csv
  spec: runs.yaml
budget: {max_trials: 3}
"""
    with pytest.raises(CampaignConfigError) as info:
        _parse(text, tmp_path)
    message = str(info.value)
    assert "campaign.yaml:5: instrument.spec:" in message
    assert f"{tmp_path / 'runs.yaml'}:4: goal 'maximise'" in message
    assert "maximize or minimize" in message


def _run(text: str, tmp_path: Path) -> tuple[Store, int, object]:
    loaded = _parse(text, tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    summary = Runner(loaded, store).run()  # type: ignore[arg-type]
    assert summary.status == "completed", summary.reason
    return store, summary.campaign_id, loaded


@pytest.mark.slow
def test_an_emulated_dataset_campaign_runs_end_to_end(tmp_path: Path) -> None:
    text = """name: fullerenes-dry-run
objectives: [{name: product, goal: maximize}]
instrument: {dataset: fullerenes, latency: 0.01}
planner: {kind: botorch, initial: {kind: sobol, n: 4}}
budget: {max_trials: 6}
seed: 3
"""
    store, cid, _ = _run(text, tmp_path)
    sim = dataset_simulator("fullerenes")
    sd = sim.noise["product"]
    trials = [t for t in store.trials(cid) if t.status == "completed"]
    assert len(trials) == 6 and trials[-1].kind == "model"
    obs = store.observations(cid)
    residuals = [
        obs[t.id or 0]["product"] - sim.problem.evaluate(t.parameters)["product"] for t in trials
    ]
    # The fitted noise is applied by default: measurements scatter around the emulator.
    assert any(abs(r) > 1e-9 for r in residuals)
    assert all(abs(r) < 5 * sd for r in residuals)


@pytest.mark.slow
def test_a_user_table_campaign_measures_only_its_rows(tmp_path: Path) -> None:
    rows = [("a", "p", 10.0), ("a", "q", 20.0), ("b", "p", 30.0), ("b", "q", 5.0), ("c", "p", 1)]
    (tmp_path / "screen.csv").write_text(
        "ligand,base,yield\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows)
    )
    (tmp_path / "screen.yaml").write_text(
        "parameters:\n  - {name: ligand, type: choice, values: [a, b, c]}\n"
        "  - {name: base, type: choice, values: [p, q]}\n"
        "outputs: [yield]\ngoal: maximize\nenumerated: true\n"
    )
    text = """name: screen
objectives: [{name: yield, goal: maximize}]
instrument: {dataset: screen.csv, spec: screen.yaml}
planner: {kind: botorch, initial: {kind: sobol, n: 2}}
budget: {max_trials: 4}
seed: 0
"""
    store, cid, loaded = _run(text, tmp_path)
    assert len(loaded.campaign.space.candidates) == 5  # type: ignore[attr-defined]
    table = {(a, b): y for a, b, y in rows}
    obs = store.observations(cid)
    for t in store.trials(cid):
        key = (t.parameters["ligand"], t.parameters["base"])
        assert key in table  # ("c", "q") was never measured and is never proposed
        assert obs[t.id or 0]["yield"] == table[key]  # exact lookup, no noise


def _closedloop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loop.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.slow
def test_closedloop_datasets_lists_spaces_kinds_and_citations(tmp_path: Path) -> None:
    result = _closedloop("datasets", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("hplc", "suzuki_edbo", "buchwald_a", "photo_pce10", "crossed_barrel"):
        assert name in out
    assert "4 choice (3x22x3x4 = 792)" in out and "6 float" in out
    assert "lookup" in out and "emulator" in out
    assert "Ahneman" in out and "Olympus" in out  # citations
    (tmp_path / "runs.csv").write_text("t,y\n1,2\n3,4\n")
    (tmp_path / "runs.yaml").write_text("parameters: [{name: t, bounds: [0, 10]}]\noutputz: [y]\n")
    bad = _closedloop("datasets", "--data", "runs.csv", "--spec", "runs.yaml", cwd=tmp_path)
    assert bad.returncode == 2
    assert "runs.yaml:2: unknown key 'outputz'" in bad.stdout
