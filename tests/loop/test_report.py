"""The report, export files and hypervolumes shown by ``status``: every failed trial is
marked, an output file never overwrites a store, and the hypervolume costs what it shows.

Trials are written through the real store's API (SQLite), as the runner writes them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from loop import Store, parse_campaign
from loop.cli import app
from loop.report import (
    CATEGORY_LABEL_CHARS,
    OutputError,
    annotate,
    category_ticks,
    final_hypervolume,
    hypervolume_trace,
    plot_report,
    report_figure,
    short_label,
    stored_campaign,
    write_output,
)
from loop.store import TrialStatus, export_records
from planners import Objective
from planners import hypervolume_trace as planners_trace

SOME_FAIL = """
name: somefail
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: y, goal: minimize}]
instrument: {function: "fn.py:measure", outputs: [y, z]}  # not run: trials stored below
planner: {kind: sobol}
budget: {max_trials: 4, max_failures: 20}
seed: 1
"""

ALL_FAIL = """
name: allfail
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: a, goal: maximize}, {name: b, goal: minimize}]
outcome_constraints: ["c <= 1"]
instrument: {function: "fn.py:broken", outputs: [a, b, c]}
planner: {kind: sobol}
budget: {max_trials: 4, max_failures: 3}
seed: 1
"""


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def _panels(fig: Any) -> dict[str, Any]:
    return {ax.get_ylabel(): ax for ax in fig.axes}


def _points(ax: Any) -> dict[str, list[float]]:
    """Trial numbers drawn in a panel, by legend label."""
    out: dict[str, list[float]] = {}
    for collection in ax.collections:
        xs = [float(x) for x, _ in collection.get_offsets()]
        out.setdefault(collection.get_label(), []).extend(xs)
    return out


def _notes(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_points_a_person_chose_are_marked_apart(tmp_path: Path) -> None:
    """A control or a replicate (``suggest --at``, kind manual) is not the planner's: the
    per-trial panel draws it in a group of its own (found in review: it looked like one)."""
    store = _store(tmp_path)
    cid = store.create_campaign("somefail", SOME_FAIL, str(tmp_path / "campaign.yaml"), 1)
    for kind, y in (("initial", 0.3), ("manual", 0.5), ("model", 0.2), ("manual", 0.45)):
        trial = store.add_trial(cid, {"x": 0.5}, kind)
        store.finish_trial(
            trial.id or 0,
            status="completed",
            outputs={"y": y, "z": 1.0},
            readbacks={},
            run_uid=None,
            error=None,
        )
    points = _points(_panels(report_figure(store, store.campaign(cid)))["y"])
    assert sorted(points["chosen (suggest --at, --repeat)"]) == [2, 4]
    assert sorted(points["completed"]) == [1, 3]


# ---------------------------------------------------------------------------- failed trials
def test_every_failed_trial_is_marked_in_every_output_panel(tmp_path: Path) -> None:
    """A failed trial without a finite value of an output (an exception, a NaN reading) is
    marked at the panel's bottom edge, one with a value at its value (found in review: most
    failed trials were invisible)."""
    store = _store(tmp_path)
    cid = store.create_campaign("somefail", SOME_FAIL, str(tmp_path / "campaign.yaml"), 1)
    # what the runner stores: an exception leaves no outputs, a NaN reading is stored null
    outcomes: list[tuple[TrialStatus, dict[str, float]]] = [
        ("completed", {"y": 0.25, "z": 2.0}),
        ("failed", {}),
        ("failed", {"y": math.nan, "z": 1.0}),
        ("completed", {"y": 0.16, "z": 2.0}),
        ("failed", {}),
    ]
    for status, outputs in outcomes:
        trial = store.add_trial(cid, {"x": 0.5}, "sobol")
        store.finish_trial(
            trial.id or 0, status=status, outputs=outputs, readbacks={}, run_uid=None, error=None
        )
    row = store.campaign(cid)
    raised, nan_y = [2, 5], [3]
    panels = _panels(report_figure(store, row))
    y, z = _points(panels["y"]), _points(panels["z"])
    assert sorted(y["failed (no value)"]) == sorted(raised + nan_y)
    assert "failed" not in y  # no failed trial has a finite y
    assert sorted(z["failed (no value)"]) == raised
    assert sorted(z["failed"]) == nan_y  # its z was read: drawn at its value
    # one legend for the output panels, naming both marks
    legend = panels["y"].get_legend()
    assert legend is not None
    assert {"failed", "failed (no value)"} <= {t.get_text() for t in legend.get_texts()}


def test_a_measured_trial_whose_side_output_read_nan_is_marked(tmp_path: Path) -> None:
    """A completed trial whose side output read NaN (stored null) left a gap in that
    output's panel, as if it had not run (found in review, session 37): it is marked on
    the bottom edge, hollow, and the legend says what the mark means."""
    store = _store(tmp_path)
    cid = store.create_campaign("somefail", SOME_FAIL, str(tmp_path / "campaign.yaml"), 1)
    for z in (2.0, math.nan, 1.5, math.nan):
        trial = store.add_trial(cid, {"x": 0.5}, "sobol")
        store.finish_trial(
            trial.id or 0,
            status="completed",
            outputs={"y": 0.2, "z": z},
            readbacks={},
            run_uid=None,
            error=None,
        )
    panels = _panels(report_figure(store, store.campaign(cid)))
    assert _points(panels["z"]) == {"completed": [1.0, 3.0], "measured, no value (NaN)": [2.0, 4.0]}
    assert _points(panels["y"]) == {"completed": [1.0, 2.0, 3.0, 4.0]}
    legend = panels["y"].get_legend()  # the output panels' one legend, on the first
    assert legend is not None
    assert "measured, no value (NaN)" in {t.get_text() for t in legend.get_texts()}


def test_a_campaign_whose_trials_all_failed_shows_each_objective(tmp_path: Path) -> None:
    """Every objective and constrained output gets a panel (from the campaign, not from the
    outputs measured), saying so and marking each failure; matplotlib warns about nothing
    (the suite turns warnings into errors)."""
    store = _store(tmp_path)
    cid = store.create_campaign("allfail", ALL_FAIL, str(tmp_path / "campaign.yaml"), 1)
    for _ in range(3):  # what the runner stores for a function that raised
        trial = store.add_trial(cid, {"x": 0.5}, "sobol")
        store.finish_trial(
            trial.id or 0, status="failed", outputs={}, readbacks={}, run_uid=None, error="boom"
        )
    fig = report_figure(store, store.campaign(cid))
    panels = _panels(fig)
    for name in ("a", "b", "c"):
        assert _points(panels[name]) == {"failed (no value)": [1.0, 2.0, 3.0]}, name
        assert _notes(panels[name]) == ["no completed trial"]
    assert _notes(panels["hypervolume"]) == ["no completed trial"]
    assert _notes(fig.axes[1]) == ["no completed trial"]  # the Pareto front of a and b


def test_a_campaign_without_trials_reports_without_warnings(tmp_path: Path) -> None:
    store = _store(tmp_path)
    cid = store.create_campaign("allfail", ALL_FAIL, str(tmp_path / "campaign.yaml"), 1)
    out = tmp_path / "empty.png"
    result = CliRunner().invoke(app, ["report", "--store", store.url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    panels = _panels(report_figure(store, store.campaign(cid)))
    assert {"a", "b", "c", "hypervolume"} <= set(panels)


# ---------------------------------------------------------------------------- output files
def _stored(tmp_path: Path) -> tuple[Store, Path]:
    db = tmp_path / "store.db"
    store = Store(f"sqlite:///{db}")
    store.create_campaign("kept", SOME_FAIL, str(tmp_path / "kept.yaml"), 0)
    return store, db


def test_export_onto_the_store_is_refused_and_the_store_kept(tmp_path: Path) -> None:
    """``export -o`` naming the store's file was written over it (found in review).

    ``--format csv``: a ``.db`` suffix alone is refused as no export format, before the
    file is looked at; with the format given, the database check must hold by itself."""
    store, db = _stored(tmp_path)
    cli = CliRunner()
    for target in (db, tmp_path / "other.db"):
        if target != db:
            Store(f"sqlite:///{target}").close()  # another store: refused as well
        for given in ([], ["--format", "csv"]):
            args = ["export", "--store", store.url, "-o", str(target), *given]
            result = cli.invoke(app, args)
            assert result.exit_code == 2, result.output
            said = "it is the store's database" if target == db else "is a SQLite database"
            if not given:
                said = "export writes CSV or JSON, not .db"
            assert said in result.output and "Traceback" not in result.output
    assert Store(store.url, create=False).campaign("kept").seed == 0


def test_the_stores_own_files_are_refused_however_they_are_named(tmp_path: Path) -> None:
    store, db = _stored(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.db").symlink_to(db)
    spellings = [
        tmp_path / "sub" / ".." / "store.db",
        tmp_path / "link.db",
        tmp_path / "store.db-wal",
        tmp_path / "store.db-shm",
        tmp_path / "store.db-journal",
    ]
    for path in spellings:
        with pytest.raises(OutputError, match="it is the store's database"):
            write_output(path, "x\n", store_url=store.url)
    assert Store(store.url, create=False).campaign("kept").seed == 0


def test_report_and_export_into_a_missing_folder_are_refused_alike(tmp_path: Path) -> None:
    """``report -o`` created every missing folder (as root: ``/nonexistent/``) while
    ``export -o`` refused; both refuse now, with exit 2, and create nothing (found in
    review)."""
    store, _ = _stored(tmp_path)
    cli = CliRunner()
    for command, name in (("report", "r.png"), ("export", "t.csv")):
        target = tmp_path / "missing" / "deeper" / name
        result = cli.invoke(app, [command, "--store", store.url, "-o", str(target)])
        assert result.exit_code == 2, (command, result.output)
        said = " ".join(result.output.split())
        assert f"cannot write to {target}: the folder {target.parent} does not exist" in said
        assert "Traceback" not in result.output
        assert not (tmp_path / "missing").exists(), command


def test_an_output_file_is_replaced_whole_and_a_link_written_through(tmp_path: Path) -> None:
    out = tmp_path / "trials.csv"
    out.write_text("old\n" * 1000)
    write_output(out, "new\n")
    assert out.read_text() == "new\n"
    target = tmp_path / "real.csv"
    (tmp_path / "link.csv").symlink_to(target)
    write_output(tmp_path / "link.csv", "through\n")
    assert (tmp_path / "link.csv").is_symlink() and target.read_text() == "through\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv", "trials.csv"]


# ---------------------------------------------------------------------------- hypervolume
def _records(Y: np.ndarray) -> list[dict[str, Any]]:
    return [
        {
            "number": i + 1,
            "kind": "sobol",
            "status": "completed",
            "outputs": {f"y{j}": float(v) for j, v in enumerate(row)},
        }
        for i, row in enumerate(Y)
    ]


def test_status_hypervolume_is_the_traces_last_value(tmp_path: Path) -> None:
    """``final_hypervolume`` computes one volume, not the whole trace (found in review:
    seconds per thousand trials for ``status``), with the same value."""
    text = ALL_FAIL.replace('outcome_constraints: ["c <= 1"]\n', "")
    text = text.replace("name: a,", "name: y0,").replace("name: b,", "name: y1,")
    text = text.replace("[a, b, c]", "[y0, y1]")
    path = tmp_path / "c.yaml"
    campaign = parse_campaign(text, path=path, base_dir=tmp_path, cross_check=False).campaign
    records = _records(np.random.default_rng(3).random((60, 2)))
    records[5]["status"] = "failed"
    trace = hypervolume_trace(records, campaign)
    assert final_hypervolume(records, campaign) == pytest.approx(trace[-1], rel=1e-12)
    assert final_hypervolume([], campaign) is None
    failed = [dict(r, status="failed", outputs={}) for r in records[:3]]
    assert final_hypervolume(failed, campaign) == 0.0 == hypervolume_trace(failed, campaign)[-1]


def test_a_bounded_trace_keeps_exact_steps_and_the_exact_end() -> None:
    """The report computes at most ``max_evaluations`` volumes: its steps are exact values
    at real changes of the front, never above the exact trace, and the last is exact."""
    objectives = [Objective(name=f"y{j}") for j in range(3)]
    Y = np.random.default_rng(1).random((300, 3))
    exact = planners_trace(Y, objectives)
    bounded = planners_trace(Y, objectives, max_evaluations=10)
    assert len(bounded) == len(exact) and bounded[-1] == exact[-1]
    assert len(set(exact)) > 11 and len(set(bounded)) <= 11
    for i, value in enumerate(bounded):
        assert value <= exact[i] + 1e-12
        if i == 0 or value != bounded[i - 1]:
            assert value == exact[i]
    assert all(b >= a for a, b in zip(bounded, bounded[1:], strict=False))
    with pytest.raises(ValueError, match="at least 1"):
        planners_trace(Y, objectives, max_evaluations=0)


def test_report_trace_matches_the_exact_one_for_a_short_campaign(tmp_path: Path) -> None:
    """Below the bound the report's hypervolume curve is the exact trace."""
    store = _store(tmp_path)
    cid = store.create_campaign("pairs", ALL_FAIL, str(tmp_path / "campaign.yaml"), 1)
    for x in np.random.default_rng(2).random(12):
        trial = store.add_trial(cid, {"x": float(x)}, "sobol")
        outputs = {"a": float(x), "b": float((x - 0.5) ** 2), "c": 0.0}
        store.finish_trial(
            trial.id or 0,
            status="completed",
            outputs=outputs,
            readbacks={},
            run_uid=None,
            error=None,
        )
    row = store.campaign(cid)
    records = annotate(export_records(store, cid), stored_campaign(row))
    line = _panels(report_figure(store, row))["hypervolume"].get_lines()[0]
    drawn = [float(v) for v in line.get_ydata()]
    assert drawn == hypervolume_trace(records, stored_campaign(row))
    assert not any(math.isnan(v) for v in drawn)


# ---------------------------------------------------------------------------- front panel
def _completed(store: Store, cid: int, kind: str, a: float, b: float, c: float) -> None:
    """A completed trial of the ``ALL_FAIL`` campaign at x = a with outputs a, b, c."""
    trial = store.add_trial(cid, {"x": a}, kind)
    store.finish_trial(
        trial.id or 0,
        status="completed",
        outputs={"a": a, "b": b, "c": c},
        readbacks={},
        run_uid=None,
        error=None,
    )


def test_infeasible_trials_are_drawn_apart_and_over_the_front_panels_dots(
    tmp_path: Path,
) -> None:
    """Infeasible trials' rings were drawn under the grey dots of the same trials: one that
    beat the front read as a plain dominated trial (found in review). They are their own
    group, above the grey one, and not in it."""
    store = _store(tmp_path)
    cid = store.create_campaign("pairs", ALL_FAIL, str(tmp_path / "campaign.yaml"), 1)
    # a maximised, b minimised, c <= 1 feasible; (0.9, 0.1) beats the front, infeasible
    points = [(0.5, 0.5, 0.0), (0.6, 0.7, 0.0), (0.3, 0.6, 0.0), (0.9, 0.1, 2.0)]
    for a, b, c in points:
        _completed(store, cid, "sobol", a, b, c)
    fig = report_figure(store, store.campaign(cid))
    front = next(ax for ax in fig.axes if ax.get_xlabel() == "a")
    groups = {c.get_label(): c for c in front.collections}
    offsets = {
        k: [(float(x), float(y)) for x, y in np.asarray(c.get_offsets())] for k, c in groups.items()
    }
    assert offsets["infeasible"] == [(0.9, 0.1)]
    assert offsets["trials"] == [(0.3, 0.6)]  # feasible and dominated only
    assert sorted(offsets["Pareto front"]) == [(0.5, 0.5), (0.6, 0.7)]
    assert groups["infeasible"].get_zorder() > groups["trials"].get_zorder()
    legend = front.get_legend()
    assert legend is not None and "infeasible" in {t.get_text() for t in legend.get_texts()}


def test_a_failed_trials_finite_outputs_leave_the_hypervolume_alone(tmp_path: Path) -> None:
    """A failed trial keeps the outputs it had (a readback out of range after the
    measurement): they count nowhere, as in the runner (``loop.report.objective_matrix``)."""
    text = ALL_FAIL.replace('outcome_constraints: ["c <= 1"]\n', "")
    text = text.replace("name: a,", "name: y0,").replace("name: b,", "name: y1,")
    path = tmp_path / "c.yaml"
    campaign = parse_campaign(text, path=path, base_dir=tmp_path, cross_check=False).campaign
    records = _records(np.random.default_rng(4).random((20, 2)))
    alone = final_hypervolume(records, campaign)
    worse = _records(np.array([[-5.0, -5.0]]))  # far below every y0 measured
    failed = [dict(r, status="failed") for r in worse]
    assert final_hypervolume(records + failed, campaign) == alone
    assert hypervolume_trace(records + failed, campaign)[-1] == pytest.approx(alone, rel=1e-12)
    # completed, the same trial would set a new worst y0 and move the reference
    assert final_hypervolume(records + worse, campaign) != pytest.approx(alone, rel=1e-3)


# ---------------------------------------------------------------------------- legibility
LEGIBLE = """
name: perovskite film with a rather long campaign name
parameters:
  - {name: t, type: float, bounds: [LOW, HIGH], log: true, unit: min}
  - {name: a, type: float, bounds: [0, 1]}
  - {name: b, type: choice, values: [none, MACl, PbI2]}
objectives:
  - {name: pce, goal: maximize}
  - {name: hysteresis, goal: minimize}
  - {name: stability_index, goal: maximize}
outcome_constraints: ["cost <= 40"]
instrument: {function: "fn.py:measure", outputs: [pce, hysteresis, stability_index, cost]}
planner: {kind: sobol}
budget: {max_trials: 8}
seed: 1
"""


def _legible_figure(tmp_path: Path, xs: list[float]) -> tuple[Any, Any]:
    """The report of a three-objective campaign measured at ``xs`` of a log parameter, drawn
    (so that text has its size), and the renderer. Three parameters: each scan panel is a
    third of the figure wide, as in the review's report."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    low, high = min(xs), max(xs)
    text = LEGIBLE.replace("LOW", repr(low)).replace("HIGH", repr(high))
    store = _store(tmp_path)
    cid = store.create_campaign("legible", text, str(tmp_path / "campaign.yaml"), 1)
    for k, x in enumerate(xs):
        trial = store.add_trial(cid, {"t": x, "a": k / 10, "b": "none"}, "sobol")
        outputs = {"pce": 10.0 + k, "hysteresis": 0.3 - 0.02 * k, "stability_index": 0.8, "cost": 5}
        store.finish_trial(
            trial.id or 0,
            status="completed",
            outputs=outputs,
            readbacks={},
            run_uid=None,
            error=None,
        )
    fig = report_figure(store, store.campaign(cid))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return fig, canvas.get_renderer()


def test_the_title_fits_the_figure_with_several_objectives(tmp_path: Path) -> None:
    """Was one line running off the right edge (found in review)."""
    fig, renderer = _legible_figure(tmp_path, [1.7, 3.0, 8.0, 20.0, 48.0])
    title = fig.axes[0].title
    box = title.get_window_extent(renderer)
    width = fig.get_figwidth() * fig.dpi
    assert 0 <= box.x0 and box.x1 <= width, (box, width)
    assert "stability_index maximize" in title.get_text()
    assert "\n" in title.get_text()


@pytest.mark.parametrize(
    "xs",
    [
        [1.7, 3.0, 8.0, 20.0, 48.0],  # under two decades: the review's anneal_time
        [2.0, 2.4, 2.9, 3.5],  # under half a decade
        [0.001, 0.05, 3.0, 80.0],  # several decades
    ],
    ids=["1.5-decades", "0.2-decades", "5-decades"],
)
def test_log_axis_tick_labels_do_not_print_over_each_other(tmp_path: Path, xs: list[float]) -> None:
    """On a short log range matplotlib labelled minor ticks ``2×10^0 3×10^0 ...`` and on a
    panel a third of the figure wide they overprinted (found in review)."""
    fig, renderer = _legible_figure(tmp_path, xs)
    scans = [ax for ax in fig.axes if ax.get_xlabel() == "t [min]"]
    assert len(scans) == 3  # one per objective
    for ax in scans:
        labels = [
            t
            for t in ax.get_xticklabels(which="both")
            if t.get_visible() and t.get_text() and _inside(ax, t.get_position()[0])
        ]
        assert len(labels) >= 2, [t.get_text() for t in labels]
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        for left, right in zip(boxes, boxes[1:], strict=False):
            assert left.x1 <= right.x0, [t.get_text() for t in labels]


def _inside(ax: Any, x: float) -> bool:
    low, high = ax.get_xlim()
    return bool(low <= x <= high)


# The bundled dataset_suzuki campaign's longest values (SMILES): its report's labels ran
# over one another and into the panels beside and below, and stderr showed "UserWarning:
# Tight layout not applied" (found in review). Nucleophiles share a 30-character start.
NUCLEOPHILES = [
    "CC1=CC=C(N(C2CCCCO2)N=C3)C3=C1B(O)O",
    "CC1=CC=C(N(C2CCCCO2)N=C3)C3=C1B4OC(C)(C)C(C)(C)O4",
    "CC1=CC=C(N(C2CCCCO2)N=C3)C3=C1[B-](F)(F)F",
]
LIGANDS = [
    "CC(P(C(C)(C)C)C(C)(C)C)(C)C",
    "P(C1=CC=CC=C1)(C2=CC=CC=C2)C3=CC=CC=C3",
    "CC(C)(C)P(C(C)(C)C)C1=CC=C(N(C)C)C=C1",
    "P(C1CCCCC1)(C2CCCCC2)C3CCCCC3",
    "CC1=CC=CC=C1P(C2=CC=CC=C2C)C3=CC=CC=C3C",
    "CCCCP(C12C[C@@H]3C[C@@H](C[C@H](C2)C3)C1)C45C[C@H]6C[C@@H](C5)C[C@@H](C4)C6",
    "COC1=CC=CC(OC)=C1C2=C(P(C3CCCCC3)C4CCCCC4)C=CC=C2",
    "CC(C)(P(C(C)(C)C)[c-]1cccc1)C.CC(C)(P(C(C)(C)C)[c-]2cccc2)C.[Fe+2]",
    "CC(C1=C(C2=CC=CC=C2P(C3CCCCC3)C4CCCCC4)C(C(C)C)=CC(C(C)C)=C1)C",
    "[c-]1(P(C2=CC=CC=C2)C3=CC=CC=C3)cccc1.[c-]4(P(C5=CC=CC=C5)C6=CC=CC=C6)cccc4.[Fe+2]",
    "CC1(C)C2=C(OC3=C1C=CC=C3P(C4=CC=CC=C4)C5=CC=CC=C5)C(P(C6=CC=CC=C6)C7=CC=CC=C7)=CC=C2",
]
SOLVENTS = ["N#CC", "C1COCC1", "O=CN(C)C", "CO"]


def _suzuki_like(tmp_path: Path, name: str = "suzuki-like") -> tuple[Store, Any]:
    """A campaign over the dataset's long choices (and a long output name), 8 trials."""
    import json

    choices = {"nucleophile": NUCLEOPHILES, "ligand": LIGANDS, "solvent": SOLVENTS}
    params = "\n".join(
        f"  - {{name: {k}, type: choice, values: {json.dumps(v)}}}" for k, v in choices.items()
    )
    output = "isolated_yield_of_the_coupled_product_by_hplc_in_percent"
    text = f"""
name: {name}
parameters:
{params}
  - {{name: temperature_of_the_heated_reactor_block, type: float, bounds: [30, 110]}}
objectives: [{{name: {output}, goal: maximize}}]
instrument: {{function: "fn.py:measure", outputs: [{output}]}}
planner: {{kind: sobol}}
budget: {{max_trials: 8}}
seed: 1
"""
    store = _store(tmp_path)
    cid = store.create_campaign(name, text, str(tmp_path / "campaign.yaml"), 1)
    for k in range(8):
        point = {
            "nucleophile": NUCLEOPHILES[k % 3],
            "ligand": LIGANDS[(3 * k) % 11],
            "solvent": SOLVENTS[k % 4],
            "temperature_of_the_heated_reactor_block": 30.0 + 10 * k,
        }
        trial = store.add_trial(cid, point, "sobol")
        store.finish_trial(
            trial.id or 0,
            status="completed",
            outputs={output: 10.0 * k},
            readbacks={},
            run_uid=None,
            error=None,
        )
    return store, store.campaign(cid)


def test_long_category_labels_are_bounded_and_the_layout_fits(tmp_path: Path) -> None:
    """Every category label is at most CATEGORY_LABEL_CHARS characters, the values stay
    told apart, and no label touches another label, another panel or the figure's edge;
    drawing and writing the PNG warn about nothing (warnings are errors here)."""
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    store, row = _suzuki_like(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plot_report(store, row, tmp_path / "report.png")
        fig = report_figure(store, row)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    assert out.stat().st_size > 0
    renderer = canvas.get_renderer()
    page = fig.bbox
    scans = {ax.get_xlabel(): ax for ax in fig.axes if ax.get_xlabel() in CHOICE_LABELS}
    assert set(scans) == set(CHOICE_LABELS)
    for name, ax in scans.items():
        texts = [t.get_text() for t in ax.get_xticklabels()]
        assert all(len(t) <= CATEGORY_LABEL_CHARS for t in texts), texts
        shown = [t for t in texts if t]
        assert len(set(shown)) == len(shown) == CHOICE_LABELS[name], texts
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        for box in boxes:
            assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0, (name, box)
            for other in fig.axes:
                assert not box.overlaps(other.get_window_extent(renderer)), (name, box)
        ordered = sorted(boxes, key=lambda b: b.x0)
        for left, right in zip(ordered, ordered[1:], strict=False):
            assert left.x1 <= right.x0, texts
    # the three nucleophiles keep their distinct ends, no numbers needed
    assert [t.get_text() for t in scans["nucleophile"].get_xticklabels()] == [
        "CC1=CC\u2026B(O)O",
        "CC1=CC\u2026(C)O4",
        "CC1=CC\u2026)(F)F",
    ]
    # long names are cut to their panel too (the axis's own label)
    panel = fig.axes[1]
    assert "\u2026" in panel.get_ylabel() and panel.get_ylabel().startswith("isolated_yield")


CHOICE_LABELS = {"nucleophile": 3, "ligand": 11, "solvent": 4}


def test_category_labels_shorten_number_and_escape() -> None:
    assert short_label("N#CC") == "N#CC"
    assert short_label("P(C1=CC=CC=C1)(C2=CC=CC=C2)C3=CC=CC=C3") == "P(C1=C\u2026CC=C3"
    assert short_label("a  b\nc") == "a b c"
    assert short_label("$5 per $g") == r"\$5 per \$g"  # not read as mathematics
    # values that read the same once shortened are numbered in the file's order
    same = [f"CC1=CC=C(N(C2CCCCO2)N=C3)C3=C1{k}B(O)O" for k in range(3)]
    labels = category_ticks(same, 8 / 3).labels
    assert [t.split(":")[0] for t in labels] == ["1", "2", "3"]
    assert all(len(t) <= CATEGORY_LABEL_CHARS for t in labels)
    # short labels that fit stand across; more than a narrow panel holds stand upright,
    # every other one labelled when even that is too many
    assert category_ticks(["none", "MACl", "PbI2"], 8 / 3).rotation == 0
    upright = category_ticks(LIGANDS, 8 / 3)
    assert upright.rotation == 90 and all(upright.labels) and upright.height > 0
    crowded = category_ticks([f"v{k}" for k in range(60)], 8 / 3).labels
    assert 0 < sum(bool(t) for t in crowded) < 60


def test_an_infeasible_prior_row_is_marked_in_the_output_panels(tmp_path: Path) -> None:
    """It was drawn as a plain grey "prior" square there, while the front panel marked it
    infeasible (found in review)."""
    store = _store(tmp_path)
    cid = store.create_campaign("pairs", ALL_FAIL, str(tmp_path / "campaign.yaml"), 1)
    _completed(store, cid, "prior", 0.9, 0.1, 2.0)  # infeasible: c <= 1 fails
    _completed(store, cid, "prior", 0.5, 0.5, 0.0)
    _completed(store, cid, "sobol", 0.6, 0.7, 0.0)
    fig = report_figure(store, store.campaign(cid))
    drawn = _points(_panels(fig)["c"])
    assert drawn["prior, infeasible"] == [1.0]
    assert drawn["prior"] == [2.0]


def test_a_runners_failed_trial_is_plotted_where_the_model_learnt_it() -> None:
    """A failed trial's readbacks say where a stalled stage stopped; the model learns the
    failure at the commanded point, and the report plotted it at the readback, between good
    measurements (found in review, session 38). A told failure keeps the told values."""
    from types import SimpleNamespace

    from loop.report import _achieved

    x = SimpleNamespace(name="x", type="float")
    ran = {"status": "failed", "run_uid": "u1", "parameters": {"x": 1.6}, "readbacks": {"x": 0.8}}
    assert _achieved(ran, x) == 1.6
    told = {**ran, "run_uid": None}
    assert _achieved(told, x) == 0.8
    measured = {**ran, "status": "completed"}
    assert _achieved(measured, x) == 0.8  # a measurement, where it was made


UNITS = """\
name: with-units
parameters:
  - {name: x, type: float, bounds: [0, 2]}
objectives:
  - {name: y, goal: minimize}
instrument:
  devices:
    name: bench
    inputs:
      x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2], units: mm}
    outputs:
      y: {device: "ophyd:Signal", args: {value: 0.5}, units: mV}
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 1
"""


def test_status_and_the_report_show_the_units_an_instrument_declares(tmp_path: Path) -> None:
    """The README said an output's ``units:`` is shown by ``status`` and the report; only
    ``status --json`` had it (found in session 39). An input's ``units:`` labels its
    parameter where the parameter names none."""
    from loop import Runner, load_campaign

    path = tmp_path / "units.yaml"
    path.write_text(UNITS)
    store = _store(tmp_path)
    summary = Runner(load_campaign(path), store).run()
    assert summary.completed == 2
    panels = _panels(report_figure(store, store.campaign(summary.campaign_id)))
    assert {"best y [mV]", "y [mV]"} <= set(panels), set(panels)
    assert any(ax.get_xlabel() == "x [mm]" for ax in panels.values())
    url = f"sqlite:///{tmp_path / 'store.db'}"
    shown = CliRunner().invoke(app, ["status", "--store", url], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "x [mm]" in shown.output and "y [mV]" in shown.output, shown.output
