"""Campaigns whose instrument is a dataset: parameters from the spec, candidate tables, errors
with file and line, and whole campaigns through the real Runner, RunEngine and SQLite."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loop import CampaignConfigError, Runner, Store, load_campaign, parse_campaign
from simulators import dataset_simulator
from tests.cli_process import closedloop

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
    with pytest.raises(CampaignConfigError, match="needs a value for") as left_out:
        _parse(wide, tmp_path)
    assert "list them all under parameters:, or omit parameters:" in str(left_out.value)


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
            detector: Any = inst.detectors[0]
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
    return closedloop(*args, cwd=cwd, wide=True)


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
    # the bundled emulators ship fitted: their figures are shown, and no `--fit` hint beside
    assert "--fit" not in out, out
    (tmp_path / "runs.csv").write_text("t,y\n1,2\n3,4\n")
    (tmp_path / "runs.yaml").write_text("parameters: [{name: t, bounds: [0, 10]}]\noutputz: [y]\n")
    bad = _closedloop("datasets", "--data", "runs.csv", "--spec", "runs.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""  # an error goes to stderr
    assert "runs.yaml:2: unknown key 'outputz'" in bad.stderr


# ---------------------------------------------------------------------------- review fixes
def _screen(folder: Path, *, enumerated: bool = True) -> None:
    """A small lookup table of one's own: ligand x base, one combination never measured."""
    folder.mkdir(exist_ok=True)
    rows = [("a", "p", 10.0), ("a", "q", 20.0), ("b", "p", 30.0), ("b", "q", 5.0), ("c", "p", 1)]
    (folder / "screen.csv").write_text(
        "ligand,base,yield\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows)
    )
    (folder / "screen.yaml").write_text(
        "parameters:\n  - {name: ligand, type: choice, values: [a, b, c]}\n"
        "  - {name: base, type: choice, values: [p, q]}\n"
        f"outputs: [yield]\ngoal: {{yield: maximize}}\nenumerated: {str(enumerated).lower()}\n"
    )


_SCREEN = """name: screen
objectives: [{name: yield, goal: maximize}]
instrument: {dataset: data/screen.csv, spec: data/screen.yaml, latency: 0}
planner: {kind: random}
budget: {max_trials: 3}
seed: 0
"""


def test_a_stored_dataset_campaign_is_shown_and_exported_without_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # status/export/report rebuild the campaign from the store alone: they used to re-read
    # the CSV (error once it moved) and, for an emulator, fit it (40 s) just to show it.
    from loop.report import annotate, stored_campaign, to_csv
    from loop.store import export_records

    monkeypatch.setenv("CLOSEDLOOP_CACHE_DIR", str(tmp_path / "cache"))
    _screen(tmp_path / "data")
    store, cid, _ = _run(_SCREEN, tmp_path)
    (tmp_path / "data").rename(tmp_path / "moved")  # the CSV and its spec both
    row = store.campaign(cid)
    c = stored_campaign(row)
    assert [p.name for p in c.parameters] == ["ligand", "base"]  # as the campaign started
    assert [(o.name, o.goal) for o in c.objectives] == [("yield", "maximize")]
    csv_text = to_csv(annotate(export_records(store, cid), c))
    header, *lines = csv_text.splitlines()
    assert ",ligand,base," in header and len(lines) == 3
    assert not (tmp_path / "cache").exists()


def test_resuming_on_changed_data_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CLOSEDLOOP_CACHE_DIR", str(tmp_path / "cache"))
    _screen(tmp_path / "data")
    store, cid, _ = _run(_SCREEN, tmp_path)
    Runner.from_store(store, cid)
    assert "has changed since the campaign started" not in caplog.text
    csv_path = tmp_path / "data" / "screen.csv"
    csv_path.write_text(csv_path.read_text().replace("a,p,10.0", "a,p,11.0"))
    Runner.from_store(store, cid)
    assert f"dataset {csv_path} has changed since the campaign started" in caplog.text


def test_an_old_stored_campaign_is_shown_from_the_spec_without_reading_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stored before the dataset's record was kept (instrument_text None): the spec fills in
    # the parameters and objectives; the CSV is never opened, and no emulator is fitted.
    monkeypatch.setenv("CLOSEDLOOP_CACHE_DIR", str(tmp_path / "cache"))
    _screen(tmp_path / "data", enumerated=False)
    (tmp_path / "data" / "screen.csv").unlink()
    path = tmp_path / "campaign.yaml"
    text = _SCREEN.replace("objectives: [{name: yield, goal: maximize}]\n", "")
    c = parse_campaign(text, path=path, base_dir=tmp_path, cross_check=False).campaign
    assert [p.name for p in c.parameters] == ["ligand", "base"]
    assert [o.name for o in c.objectives] == ["yield"]
    assert not (tmp_path / "cache").exists()
    with pytest.raises(
        CampaignConfigError, match=r"campaign.yaml:2: instrument.dataset: .*not found"
    ):
        parse_campaign(text, path=path, base_dir=tmp_path)  # a new campaign needs its data


def test_a_fixed_parameter_keeps_the_rows_with_its_value(tmp_path: Path) -> None:
    # It used to crash: the row filter took every parameter without values for a bounded one.
    _screen(tmp_path / "data")
    text = _SCREEN.replace(
        "name: screen\n",
        "name: screen\nparameters:\n  - {name: ligand, type: choice, values: [a, b]}\n"
        "  - {name: base, type: fixed, value: p}\n",
    )
    c = _parse(text, tmp_path).campaign  # type: ignore[attr-defined]
    assert sorted((r["ligand"], r["base"]) for r in c.space.candidates) == [("a", "p"), ("b", "p")]


def test_a_campaign_that_leaves_out_every_row_is_told_which_parameter_does(
    tmp_path: Path,
) -> None:
    # It was told "constraints: the candidate table is empty" with a constraint example,
    # in a campaign without constraints.
    rows = [(1, "a"), (2, "a"), (3, "b"), (4, "b")]  # 'c' is declared but never measured
    (tmp_path / "enum.csv").write_text("n,cat,y\n" + "".join(f"{n},{c},{n}\n" for n, c in rows))
    (tmp_path / "enum.yaml").write_text(
        "parameters:\n  - {name: n, type: int, bounds: [1, 10]}\n"
        "  - {name: cat, values: [a, b, c]}\noutputs: [y]\nenumerated: true\n"
    )
    text = """name: en
parameters:
  - {name: cat, type: choice, values: [a, b]}
  - {name: n, type: int, bounds: [5, 10]}
objectives: [{name: y, goal: maximize}]
instrument: {dataset: enum.csv, spec: enum.yaml}
budget: {max_trials: 3}
"""
    with pytest.raises(CampaignConfigError) as info:
        _parse(text, tmp_path)
    message = str(info.value)
    assert "campaign.yaml:4: parameters: no row of dataset 'enum' has n in [5, 10]" in message
    assert "(the data has n in [1, 4])" in message and "constraint" not in message
    assert "widen the parameter's bounds or values" in message
    fixed = text.replace("[5, 10]", "[1, 10]").replace(
        "type: choice, values: [a, b]", "type: fixed, value: c"
    )
    with pytest.raises(
        CampaignConfigError,
        match=r"campaign.yaml:3: parameters: .* has cat = 'c' \(the data has cat in \['a', 'b'\]\)",
    ):
        _parse(fixed, tmp_path)
    together = fixed.replace("[1, 10]", "[1, 2]").replace("value: c", "value: b")
    with pytest.raises(
        CampaignConfigError, match=r"campaign.yaml:2: parameters: .* all of these .* together"
    ):
        _parse(together, tmp_path)


def test_omitted_objectives_are_the_specs_goals(tmp_path: Path) -> None:
    # The README called the spec's goal the default objective; it never was.
    _screen(tmp_path / "data")
    text = _SCREEN.replace("objectives: [{name: yield, goal: maximize}]\n", "")
    c = _parse(text, tmp_path).campaign  # type: ignore[attr-defined]
    assert [(o.name, o.goal) for o in c.objectives] == [("yield", "maximize")]
    two = _parse(
        "name: s\ninstrument: {dataset: suzuki_i, outputs: [yield]}\nbudget: {max_trials: 3}\n",
        tmp_path,
    ).campaign  # type: ignore[attr-defined]
    assert [o.name for o in two.objectives] == ["yield"]  # narrowed to the measured outputs


def test_closedloop_datasets_options_and_a_damaged_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from loop.cli import app
    from simulators import load_dataset
    from simulators._emulator import cache_path

    monkeypatch.setenv("CLOSEDLOOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    twice = cli.invoke(app, ["datasets", "--name", "hplc", "--name", "hplc"])
    assert twice.exit_code == 0, twice.output
    assert twice.output.count("hplc") == 3  # one row, one inputs table, one citation
    # the inputs a campaign lists, with their bounds (the README said `datasets` shows them)
    assert "hplc: inputs" in twice.output and "sample_loop" in twice.output
    assert "[0, 0.08]" in twice.output, twice.output
    _screen(tmp_path / "data", enumerated=False)
    own = ["--data", "data/screen.csv", "--spec", "data/screen.yaml"]
    both = cli.invoke(app, ["datasets", "--name", "hplc", *own])
    assert both.exit_code == 2 and "give one or the other" in both.output
    missing = cli.invoke(app, ["datasets", "--data", "nope.csv", "--spec", "data/screen.yaml"])
    assert missing.exit_code == 2 and "relative to the current directory" in missing.output
    # An emptied cache file: np.load's EOFError was taken for Ctrl-D (silent exit 130).
    cached = cache_path(load_dataset("data/screen.csv", "data/screen.yaml"))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    listed = cli.invoke(app, ["datasets", *own])
    assert listed.exit_code == 0, listed.output
    assert "screen" in listed.output and "emulator" in listed.output
    # the hint fits these data: a bare `datasets --fit` fitted the bundled ones (review)
    hint = "`closedloop datasets --data data/screen.csv --spec data/screen.yaml --fit`"
    assert hint in " ".join(listed.output.split()), listed.output
