"""Planners on real response surfaces: BoTorch vs Ax vs random search on laboratory datasets.

Planner-only harness: the planner's proposals go straight to the dataset's simulator (the GP
emulator's mean plus its fitted noise, or the exact lookup), with no RunEngine, so the
minutes go to the planners. The planner sees noisy measurements; every score uses the
noiseless value at the points it tried (the emulator's mean, the table's value).

Metrics (Liang et al., npj Comput. Mater. 7, 188 (2021)), per dataset, from the median
best-so-far curves over seeds:

* **acceleration factor** AF = n_random / n_planner: trials random search needs to reach the
  value the planner has at its budget, divided by the trials the planner needed for it.
  Random search is cheap to simulate, so its curve is the median of ``RANDOM_RUNS`` runs of
  ``RANDOM_FACTOR`` x budget uniform draws; if it never gets there, AF is a lower bound
  (``>=``).
* **enhancement factor** EF: planner best / random best at the same number of trials (the
  budget); for a minimised objective random / planner, so EF > 1 always means "better".
* enumerated datasets: share of runs that tried a top-1 % row, and the median trial it took.
* the multi-objective dataset is scored by the hypervolume of the noiseless outputs tried
  (reference point: the worst measured value of each objective).

Usage::

    python benchmarks/datasets.py                       # everything (long: see README)
    python benchmarks/datasets.py --seeds 3 --datasets hplc suzuki_edbo
    python benchmarks/datasets.py --resume benchmarks/results/datasets-20261203-120000.json
    python benchmarks/datasets.py --summarise           # tables of results/datasets.json
    python benchmarks/datasets.py --summarise FILE --datasets hplc

Single process, sequential. Every run is measured unless asked otherwise: results go to a
new dated file (``results/datasets-YYYYMMDD-HHMMSS.json``, or ``--out FILE``), rewritten
after every run, never to the tracked ``results/datasets.json``. Each run records the git
revision it was measured with (``git rev-parse --short HEAD``, ``-dirty`` if a tracked file
differs) and its settings (budget, initial design). ``--resume FILE`` continues a file: a
stored run is reused only if its revision and settings match this run's (printed as "reused
N stored runs"); the file's other runs are kept in it but not used. The tables cover the
``--datasets``, ``--planners`` and seeds asked for, nothing else from the file.
``--summarise [FILE]`` measures nothing and prints the tables of a stored file (default:
the tracked one, whatever its runs' revisions), limited to ``--datasets``/``--planners``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "datasets.json"  # tracked: the README's figures
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # _trees, when run from elsewhere

from _trees import dated_results, revision  # noqa: E402

RANDOM_RUNS = 200
RANDOM_FACTOR = 20
TOP_FRACTION = 0.01


@dataclass(frozen=True)
class Case:
    dataset: str
    budget: int
    initial: int
    note: str = ""


CASES = {
    "hplc": Case("hplc", 30, 8),
    "photo_pce10": Case("photo_pce10", 30, 8),
    "crossed_barrel": Case("crossed_barrel", 30, 8),
    "suzuki_edbo": Case("suzuki_edbo", 40, 8, "1.1 % of 3696 rows"),
    "buchwald_a": Case("buchwald_a", 40, 8, "5 % of 792 rows"),
    "suzuki_i": Case("suzuki_i", 25, 8, "two objectives: hypervolume"),
    "fullerenes": Case("fullerenes", 30, 6),
    "snar": Case("snar", 30, 6),
}
PLANNERS = ("botorch", "ax")


def settings(case: Case) -> dict[str, int]:
    """What a stored run must match, besides the revision, to be reused."""
    return {"budget": case.budget, "initial": case.initial}


# ---------------------------------------------------------------------------- set-up
def _problem(name: str) -> tuple[Any, Any, list[Any], Any]:
    from pydantic import TypeAdapter

    from planners import Objective, Parameter, Space
    from simulators import dataset_simulator

    sim = dataset_simulator(name)
    params = TypeAdapter(list[Parameter]).validate_python(sim.spec.campaign_parameters())
    objectives = [Objective(name=o, goal=g) for o, g in sim.spec.goal.items()]
    space = Space(params, candidates=sim.candidates)
    return sim, params, objectives, space


def _score(values: np.ndarray, objectives: Sequence[Any], ref: np.ndarray | None) -> list[float]:
    """Best-so-far (single objective, in output units) or hypervolume trace."""
    if len(objectives) == 1:
        v = values[:, 0]
        acc = np.maximum.accumulate if objectives[0].goal == "maximize" else np.minimum.accumulate
        return [float(x) for x in acc(v)]
    from planners import hypervolume_trace

    return [float(x) for x in hypervolume_trace(values, objectives, ref=ref)]


def _reference(sim: Any, objectives: Sequence[Any]) -> np.ndarray | None:
    if len(objectives) == 1:
        return None
    cols = [sim.spec.outputs.index(o.name) for o in objectives]
    Y = sim.dataset.Y[:, cols]
    return np.array(
        [Y[:, j].min() if o.goal == "maximize" else Y[:, j].max() for j, o in enumerate(objectives)]
    )


def run_planner(case: Case, kind: str, seed: int) -> dict[str, Any]:
    import torch

    from planners import Observation, PlannerConfig, Space, make_planner

    torch.set_num_threads(1)
    sim, params, objectives, space = _problem(case.dataset)
    if kind == "ax" and space.candidates is not None:
        # Ax cannot take a candidate table; these enumerated datasets are full factorials,
        # so its categorical space holds exactly the table's rows.
        space = Space(params)
    config = PlannerConfig(kind=kind, initial={"kind": "sobol", "n": case.initial})  # type: ignore[arg-type]
    planner = make_planner(space, objectives, config, seed)
    rng = np.random.default_rng(10_000 + seed)
    names = [o.name for o in objectives]
    clean: list[list[float]] = []
    points: list[dict[str, Any]] = []
    suggest_s: list[float] = []
    started = time.perf_counter()
    for _ in range(case.budget):
        t0 = time.perf_counter()
        [point] = planner.suggest(1)
        suggest_s.append(time.perf_counter() - t0)
        truth = sim.problem.evaluate(point)
        noisy = {
            k: v + sim.noise.get(k, 0.0) * float(rng.standard_normal()) for k, v in truth.items()
        }
        planner.ingest([Observation(parameters=point, outputs=noisy)])
        clean.append([truth[n] for n in names])
        points.append({k: (v if isinstance(v, str) else float(v)) for k, v in point.items()})
    values = np.asarray(clean)
    return {
        "dataset": case.dataset,
        "planner": kind,
        "seed": seed,
        "budget": case.budget,
        "trace": _score(values, objectives, _reference(sim, objectives)),
        "values": values.tolist(),
        "suggest_median_s": float(np.median(suggest_s)),
        "wall_s": time.perf_counter() - started,
    }


def random_traces(case: Case, runs: int = RANDOM_RUNS, factor: int = RANDOM_FACTOR) -> np.ndarray:
    """``runs x (factor * budget)`` best-so-far (or hypervolume) traces of uniform random search."""
    sim, params, objectives, space = _problem(case.dataset)
    rng = np.random.default_rng(12345)
    length = factor * case.budget
    names = [o.name for o in objectives]
    ref = _reference(sim, objectives)
    if len(objectives) > 1:
        runs = min(runs, 50)
    out = []
    for _ in range(runs):
        if space.candidates is not None:
            idx = rng.integers(len(space.candidates), size=length)
            pts = [space.candidates[i] for i in idx]
        else:
            pts = []
            for _i in range(length):
                pt: dict[str, Any] = {}
                for p in sim.spec.parameters:
                    if p.kind == "choice":
                        pt[p.name] = p.values[rng.integers(len(p.values))]
                    elif p.kind == "int":
                        pt[p.name] = int(rng.integers(p.bounds[0], p.bounds[1] + 1))
                    else:
                        pt[p.name] = float(rng.uniform(*p.bounds))
                pts.append(pt)
        if hasattr(sim.problem.evaluate, "predict"):
            from simulators._emulator import encode

            Y = sim.problem.evaluate.predict(encode(sim.spec, pts))
            cols = [sim.spec.outputs.index(n) for n in names]
            values = Y[:, cols]
        else:
            values = np.array([[sim.problem.evaluate(p)[n] for n in names] for p in pts])
        out.append(_score(values, objectives, ref))
    return np.asarray(out)


# ---------------------------------------------------------------------------- metrics
def _first_reach(curve: np.ndarray, target: float, maximize: bool) -> int | None:
    hit = curve >= target - 1e-12 if maximize else curve <= target + 1e-12
    idx = np.flatnonzero(hit)
    return int(idx[0]) + 1 if len(idx) else None


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, case in CASES.items():
        rows = [r for r in results if r["dataset"] == name and r["budget"] == case.budget]
        if not rows:
            continue
        sim, _params, objectives, space = _problem(name)
        maximize = len(objectives) > 1 or objectives[0].goal == "maximize"
        rand = np.asarray(random_traces(case))
        rand_median = np.median(rand, axis=0)
        entry: dict[str, Any] = {
            "budget": case.budget,
            "note": case.note,
            "kind": sim.spec.kind,
            "metric": "hypervolume" if len(objectives) > 1 else objectives[0].name,
            "goal": "maximize" if maximize else "minimize",
            "random_runs": int(rand.shape[0]),
            "random_at_budget": _quartiles(rand[:, case.budget - 1]),
            "random_curve_quartiles": {
                "q25": np.quantile(rand[:, : case.budget], 0.25, axis=0).tolist(),
                "median": rand_median[: case.budget].tolist(),
                "q75": np.quantile(rand[:, : case.budget], 0.75, axis=0).tolist(),
            },
            "planners": {},
        }
        top = None
        if space.candidates is not None and len(objectives) == 1:
            col = sim.spec.outputs.index(objectives[0].name)
            vals = np.sort(sim.dataset.Y[:, col])
            top = float(np.quantile(vals, 1 - TOP_FRACTION))
            entry["top1_threshold"] = top
            entry["best_in_table"] = float(vals[-1])
            r_hits = [_first_reach(t, top, True) for t in rand[:, : case.budget]]
            entry["random_top1_share"] = float(np.mean([h is not None for h in r_hits]))
        for kind in sorted({r["planner"] for r in rows}):
            runs = [r for r in rows if r["planner"] == kind]
            traces = np.asarray([r["trace"] for r in runs])
            median = np.median(traces, axis=0)
            target = float(median[-1])
            n_planner = _first_reach(median, target, maximize) or case.budget
            n_random = _first_reach(rand_median, target, maximize)
            af: float
            if n_random is None:
                af, bound = rand.shape[1] / n_planner, True
            else:
                af, bound = n_random / n_planner, False
            rb = float(rand_median[case.budget - 1])
            ef = (target / rb if maximize else rb / target) if rb and target else float("nan")
            p: dict[str, Any] = {
                "seeds": [r["seed"] for r in runs],
                "curve_quartiles": {
                    "q25": np.quantile(traces, 0.25, axis=0).tolist(),
                    "median": median.tolist(),
                    "q75": np.quantile(traces, 0.75, axis=0).tolist(),
                },
                "at_budget": _quartiles(traces[:, -1]),
                "acceleration": af,
                "acceleration_is_lower_bound": bound,
                "n_planner": n_planner,
                "n_random": n_random,
                "enhancement": ef,
                "suggest_median_s": float(np.median([r["suggest_median_s"] for r in runs])),
            }
            if top is not None:
                hits = [_first_reach(np.asarray(r["trace"]), top, True) for r in runs]
                found = [h for h in hits if h is not None]
                p["top1_share"] = len(found) / len(runs)
                p["top1_median_trial"] = float(np.median(found)) if found else None
            entry["planners"][kind] = p
        if {"botorch", "ax"} <= set(entry["planners"]):
            entry["botorch_vs_ax"] = _compare(rows, maximize)
        summary[name] = entry
    return summary


def _compare(rows: list[dict[str, Any]], maximize: bool) -> dict[str, Any]:
    """BoTorch vs Ax at the budget: a two-sided Mann-Whitney U test over seeds.

    "Worse beyond noise" means BoTorch's median is worse and p < 0.05 (with 5 seeds each,
    the smallest possible p is 0.008, so only a consistent gap counts).
    """
    from scipy.stats import mannwhitneyu

    b = [r["trace"][-1] for r in rows if r["planner"] == "botorch"]
    a = [r["trace"][-1] for r in rows if r["planner"] == "ax"]
    p = float(mannwhitneyu(b, a, alternative="two-sided").pvalue) if len(a) > 1 else math.nan
    worse = (np.median(b) < np.median(a)) if maximize else (np.median(b) > np.median(a))
    return {
        "botorch_median": float(np.median(b)),
        "ax_median": float(np.median(a)),
        "p_value": p,
        "botorch_worse_beyond_noise": bool(worse and p < 0.05),
    }


def _quartiles(x: np.ndarray) -> list[float]:
    return [float(v) for v in np.quantile(x, [0.25, 0.5, 0.75])]


def _table(summary: dict[str, Any]) -> str:
    lines = [
        "| dataset | kind | budget | planner | best at budget: median [q25, q75] | random median "
        "| AF | EF | top-1 % found (median trial) | suggest s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in summary.items():
        for kind, p in e["planners"].items():
            q = p["at_budget"]
            af = f"{'≥' if p['acceleration_is_lower_bound'] else ''}{p['acceleration']:.1f}"
            top = "-"
            if "top1_share" in p:
                trial = p["top1_median_trial"]
                top = f"{p['top1_share']:.0%}" + (f" ({trial:.0f})" if trial is not None else "")
            lines.append(
                f"| {name} | {e['kind']} | {e['budget']} | {kind} (n={len(p['seeds'])}) | "
                f"{q[1]:.4g} [{q[0]:.4g}, {q[2]:.4g}] | {e['random_at_budget'][1]:.4g} | {af} | "
                f"{p['enhancement']:.2f} | {top} | {p['suggest_median_s']:.2f} |"
            )
    return "\n".join(lines)


def _curves(summary: dict[str, Any]) -> str:
    """Median [q25, q75] of the best so far after 5, 10, 20 trials and at the budget."""
    lines = [
        "| dataset | planner | 5 trials | 10 trials | 20 trials | budget |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in summary.items():
        arms = {k: p["curve_quartiles"] for k, p in e["planners"].items()}
        arms["random"] = e["random_curve_quartiles"]
        for kind, q in arms.items():
            cells = []
            for n in (5, 10, 20, e["budget"]):
                i = min(n, e["budget"]) - 1
                cells.append(f"{q['median'][i]:.4g} [{q['q25'][i]:.4g}, {q['q75'][i]:.4g}]")
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Best so far vs trials: median and interquartile band per planner, per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colours = {"botorch": "tab:blue", "ax": "tab:orange", "random": "tab:gray"}
    for ax, name in zip(axes.flat, names, strict=False):
        e = summary[name]
        arms = {k: p["curve_quartiles"] for k, p in e["planners"].items()}
        arms["random"] = e["random_curve_quartiles"]
        for kind, q in arms.items():
            x = np.arange(1, len(q["median"]) + 1)
            ax.plot(x, q["median"], label=kind, color=colours.get(kind))
            ax.fill_between(x, q["q25"], q["q75"], alpha=0.2, color=colours.get(kind))
        ax.set_title(f"{name} ({e['kind']}, {e['goal']} {e['metric']})", fontsize=9)
        ax.set_xlabel("trials")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _load(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text()).get("runs", []))


def _save(path: Path, runs: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"runs": runs}
    if summary is not None:
        data["summary"] = summary
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _measure(
    args: argparse.Namespace, stored: list[dict[str, Any]], out: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run what was asked, reusing matching stored runs, saving ``out`` after every run.

    Returns every run for the file (the stored ones too) and the runs asked for.
    """
    rev = revision()
    print(f"revision {rev}; results in {out}", flush=True)
    if rev.endswith("-dirty"):
        print("  (uncommitted changes: '-dirty' names no exact code)", flush=True)
    wanted = {
        (name, kind, seed)
        for seed in range(args.seeds)
        for name in args.datasets
        for kind in args.planners
    }
    reusable: dict[tuple[str, str, int], dict[str, Any]] = {}
    if rev != "unknown":
        for r in stored:
            key = (r["dataset"], r["planner"], r["seed"])
            if (
                key in wanted
                and r.get("revision") == rev
                and r.get("settings") == settings(CASES[r["dataset"]])
            ):
                reusable.setdefault(key, r)
    if args.resume:
        others = len(stored) - len(reusable)
        print(
            f"reused {len(reusable)} stored runs (revision {rev}, same settings) from "
            f"{args.resume}; {others} other stored run(s) kept in the file, not used",
            flush=True,
        )
    runs = list(stored)  # the file keeps everything it had
    chosen = list(reusable.values())
    started = time.perf_counter()

    def measure_all() -> None:
        # Seeds outermost: a run stopped early still covers every dataset and planner.
        for seed in range(args.seeds):
            for name in args.datasets:
                for kind in args.planners:
                    if (name, kind, seed) in reusable:
                        continue
                    if args.deadline and time.perf_counter() - started > args.deadline:
                        print("deadline reached; stopping", flush=True)
                        return
                    case = CASES[name]
                    try:
                        result = run_planner(case, kind, seed)
                    except Exception as exc:  # record and go on: one planner's failure
                        print(f"{name} {kind} seed {seed}: FAILED {type(exc).__name__}: {exc}")
                        continue
                    result["revision"] = rev
                    result["settings"] = settings(case)
                    runs.append(result)
                    chosen.append(result)
                    _save(out, runs)
                    print(
                        f"{name:15s} {kind:8s} seed {seed}: best {result['trace'][-1]:.4g} "
                        f"({result['wall_s']:.0f} s)",
                        flush=True,
                    )

    measure_all()
    chosen.sort(key=lambda r: (r["seed"], r["dataset"], r["planner"]))
    return runs, chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--planners", nargs="+", default=list(PLANNERS), choices=PLANNERS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=None, help="stop after S seconds")
    parser.add_argument(
        "--out",
        type=Path,
        help="results file (default: a new results/datasets-<UTC date-time>.json; with "
        "--resume: the resumed file; with --summarise: none, only print)",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="FILE",
        help="continue FILE: reuse its runs of this revision and settings, measure the rest",
    )
    parser.add_argument(
        "--summarise",
        nargs="?",
        type=Path,
        const=RESULTS,
        metavar="FILE",
        help="measure nothing: print the tables of FILE (default: the tracked "
        "results/datasets.json)",
    )
    args = parser.parse_args(argv)
    if args.summarise is not None:
        if args.resume:
            parser.error("--summarise FILE reads FILE; --resume is for measuring")
        stored = _load(args.summarise)
        runs = [
            r for r in stored if r["dataset"] in args.datasets and r["planner"] in args.planners
        ]
        print(f"{len(runs)} of {len(stored)} stored runs in {args.summarise}")
        out, everything = args.out, runs
    else:
        stored = []
        if args.resume is not None:
            if not args.resume.is_file():
                parser.error(f"--resume {args.resume}: no such file")
            stored = _load(args.resume)
        out = args.out or args.resume or dated_results("datasets")
    if out is not None and out.exists() and (args.resume is None or not out.samefile(args.resume)):
        parser.error(f"--out {out} exists: continue it with --resume {out}, or name another")
    if args.summarise is None:
        everything, runs = _measure(args, stored, out)
    summary = summarise(runs)
    if out is not None:
        _save(out, everything, summary)
        if summary:
            plot(summary, out.with_suffix(".png"))
        print(f"results and summary in {out}" + (", figure beside it (.png)" if summary else ""))
    print(_table(summary))
    print()
    print(_curves(summary))
    for name, e in summary.items():
        if "botorch_vs_ax" in e:
            c = e["botorch_vs_ax"]
            print(
                f"{name}: BoTorch {c['botorch_median']:.4g} vs Ax {c['ax_median']:.4g} "
                f"(Mann-Whitney p = {c['p_value']:.2f}; worse beyond noise: "
                f"{c['botorch_worse_beyond_noise']})"
            )
    afs = [
        p["acceleration"]
        for e in summary.values()
        for k, p in e["planners"].items()
        if k == "botorch"
    ]
    if afs:
        print(f"\nBoTorch median acceleration factor across datasets: {np.median(afs):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
