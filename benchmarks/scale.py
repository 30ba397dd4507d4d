"""The BoTorch planner at size: suggest time and memory with hundreds to thousands of trials.

Planner only (no RunEngine, no store): a campaign's history of ``N`` scrambled Sobol points
(seed 0) is ingested into the planner built by ``planners.make_planner`` (``kind: botorch``,
default settings), then the planner runs as a campaign would: ``suggest``, evaluate the
point, ingest it, ``suggest`` again. Each case and size runs in a fresh interpreter, so its
peak RSS (the child's own ``ru_maxrss``) is that case's alone. Torch runs with one thread
(``--threads``). Figures are printed, not asserted; the load average is printed before each
case (a shared 2-core host: timings from different days are not comparable, compare within
one run with ``--baseline``).

Cases:

* ``single``: 2-D Branin, minimised; N = 500, 1000, 2000.
* ``pending``: the same with 4 points pending at every suggest (``suggest(1, pending=...)``,
  as slots measuring in parallel leave them; ``benchmarks/parallel.py`` part c); the
  planner then uses ``BoTorchSettings.pending_effort``.
* ``three``: DTLZ2 (6-D) with 3 objectives, minimised, BoTorch's reference point;
  N = 150, 300, 600.
* ``four``: DTLZ2 (6-D) with 4 objectives; N = 100, 300.

Figures per case and size:

* ``front``: with several objectives, ``observed/mean``: the Pareto-optimal points among
  the N observed, and those on the front of the GPs' posterior mean at the observed and
  pending points at the first suggest. The mean's front decides the acquisition: qLogNEHVI
  up to ``BoTorchSettings.hv_exact_max_front`` (48) points, qLogEHVI over that front past
  it (``planners/_botorch.py``, ``_mean_front``; qLogNEHVI's cost and memory grow with the
  front and far faster with 4 objectives than with 3). Each suggest's mean front is listed
  too (``f47``); ``-`` where the planner did not compute one (N <= 48, or a revision
  without it).
* ``first``: the first suggest after the N points were ingested, and its GP fit: a cold
  fit on all N (a campaign resumed from its store pays this once); ``x`` as below (at the
  default sizes the first single-objective suggest is an exploit position).
* ``suggest``, ``cpu``, ``fit``, ``optimise``: medians over the ``--suggests`` (5) suggests
  that follow, each after one more ingested observation (the previous proposal,
  evaluated). ``suggest`` is the call's wall time, ``cpu`` its process CPU time (one
  thread: a wall time well above it means other work on the host took the core). ``fit``
  and ``optimise`` come from the planner's ``last_timing`` (``planners.SuggestTiming``):
  the GP fit, warm-started, and building and maximising the acquisition. Past
  ``BoTorchSettings.refit_past`` (1000) observations a fit happens only when the count
  crosses a multiple of ``refit_every`` (5) and the other suggests keep the
  hyperparameters (``fit`` ~0.01 s): at N = 2000 one suggest in five refits.
* each suggest, ``wall/fit`` seconds: all of them, in order. Every 4th model-based
  position is the posterior-mean (exploit) step while the fitted noise is tiny (Branin),
  a different and cheaper acquisition: such a position is marked ``x``.
* ``peak RSS``: the interpreter's peak resident memory over the whole case.

Usage::

    .venv/bin/python benchmarks/scale.py                        # everything: ~8 min of CPU
    .venv/bin/python benchmarks/scale.py --quick                # tiny sizes: ~1 min
    .venv/bin/python benchmarks/scale.py --cases single --sizes 2000 --suggests 3
    .venv/bin/python benchmarks/scale.py --cases three --set hv_exact_max_front=1000
    .venv/bin/python benchmarks/scale.py --cases single --sizes 1000 --baseline b0e5dee

``--set NAME=VALUE`` overrides a ``BoTorchSettings`` field (a Python literal: ``None``,
``1000``, ``(4, 256, 64)``). ``--quick`` runs one small size per case with the at-size
paths switched on early (``refit_past=20``, ``hv_exact_max_front=8``, unless ``--set``
names them), so a reviewer sees every branch in about a minute. ``--baseline REV`` also
runs each case from a git worktree of ``REV``, alternating with the current tree, and
prints the ratio of the median suggests.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _trees, when run from elsewhere

from _trees import revision, trees  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One benchmark case: how many objectives, points pending per suggest, sizes."""

    objectives: int
    pending: int
    sizes: tuple[int, ...]
    quick: int
    description: str


CASES = {
    "single": Case(1, 0, (500, 1000, 2000), 40, "Branin (2-D), one objective"),
    "pending": Case(1, 4, (500, 1000, 2000), 40, "Branin (2-D), 4 points pending"),
    "three": Case(3, 0, (150, 300, 600), 30, "DTLZ2 (6-D), 3 objectives"),
    "four": Case(4, 0, (100, 300), 20, "DTLZ2 (6-D), 4 objectives"),
}
QUICK_SETTINGS = {"refit_past": 20, "hv_exact_max_front": 8}
QUICK_SUGGESTS = 2


# ---------------------------------------------------------------------------- child
def _problem(case: Case) -> tuple[Any, list[Any], Any]:
    """The space, the objectives and ``evaluate(point) -> outputs`` of a case."""
    import torch

    from planners import FloatParameter, Objective, Space

    if case.objectives == 1:
        from simulators import get_problem

        branin = get_problem("branin")
        space = Space(
            [
                FloatParameter(name="x1", bounds=(-5.0, 10.0)),
                FloatParameter(name="x2", bounds=(0.0, 15.0)),
            ]
        )
        return space, [Objective(name="y", goal="minimize")], branin.evaluate

    from botorch.test_functions.multi_objective import DTLZ2

    m = case.objectives
    fn = DTLZ2(dim=6, num_objectives=m)
    names = [f"x{i}" for i in range(6)]
    space = Space([FloatParameter(name=n, bounds=(0.0, 1.0)) for n in names])
    ref = [float(v) for v in fn._ref_point]
    objectives = [
        Objective(name=f"f{j + 1}", goal="minimize", reference_point=ref[j]) for j in range(m)
    ]

    def evaluate(point: dict[str, Any]) -> dict[str, float]:
        x = torch.tensor([[float(point[n]) for n in names]], dtype=torch.float64)
        y = fn.evaluate_true(x)[0]
        return {f"f{j + 1}": float(y[j]) for j in range(m)}

    return space, objectives, evaluate


def _timing(planner: Any, seconds: float, cpu: float) -> dict[str, float]:
    """The last suggest's wall, CPU, fit and optimise seconds (NaN where a revision has none)."""
    timing = getattr(planner, "last_timing", None)
    nan = float("nan")
    return {
        "total": seconds,
        "cpu": cpu,
        "fit": float(timing.fit) if timing is not None else nan,
        "optimize": float(timing.optimize) if timing is not None else nan,
    }


def _record_mean_fronts() -> list[int]:
    """The size of every posterior-mean front the planner computes from now on (a wrapper
    around ``planners._botorch._mean_front``, private: a benchmark's probe; nothing is
    recorded where a revision has no such function)."""
    import planners._botorch as botorch_planner

    sizes: list[int] = []
    original = getattr(botorch_planner, "_mean_front", None)
    if original is None:
        return sizes

    def recording(*args: Any, **kwargs: Any) -> Any:
        front = original(*args, **kwargs)
        sizes.append(int(front.shape[0]))
        return front

    botorch_planner._mean_front = recording  # type: ignore[assignment]
    return sizes


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one case at one size in this interpreter; the figures as a JSON-able dict."""
    import torch

    from planners import (
        BoTorchSettings,
        Observation,
        PlannerConfig,
        make_planner,
        pareto_mask,
    )

    torch.set_num_threads(spec["threads"])
    case = CASES[spec["case"]]
    n, k = int(spec["n"]), int(spec["suggests"])
    space, objectives, evaluate = _problem(case)
    settings = BoTorchSettings(**spec["settings"])
    planner = make_planner(space, objectives, PlannerConfig(), seed=0, settings=settings)

    names = [p.name for p in space.parameters]
    lower = [float(p.bounds[0]) for p in space.parameters]
    upper = [float(p.bounds[1]) for p in space.parameters]
    unit = torch.quasirandom.SobolEngine(len(names), scramble=True, seed=0).draw(
        n + case.pending, dtype=torch.float64
    )

    def point(row: Any) -> dict[str, Any]:
        return {
            name: lo + float(u) * (hi - lo)
            for name, u, lo, hi in zip(names, row, lower, upper, strict=True)
        }

    history = [point(row) for row in unit[:n]]
    pending = [point(row) for row in unit[n:]]
    t0 = time.perf_counter()
    observations = [Observation(parameters=p, outputs=evaluate(p)) for p in history]
    planner.ingest(observations)
    ingest = time.perf_counter() - t0

    front = None
    mean_fronts: list[int] = []
    if case.objectives > 1:
        Y = [[o.outputs[obj.name] for obj in objectives] for o in observations]
        front = int(pareto_mask(Y, objectives).sum())
        mean_fronts = _record_mean_fronts()

    every: int | None = getattr(settings, "exploit_every", None)
    n_initial = int(getattr(planner, "n_initial", 0))
    runs: list[dict[str, Any]] = []
    for i in range(k + 1):
        position = n + i + len(pending)  # the proposal's trial index, as the planner counts
        seen = len(mean_fronts)
        t0, c0 = time.perf_counter(), time.process_time()
        (proposal,) = planner.suggest(1, pending=pending)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        row: dict[str, Any] = _timing(planner, wall, cpu)
        row["mean_front"] = mean_fronts[-1] if len(mean_fronts) > seen else None
        row["exploit"] = (
            case.objectives == 1 and every is not None and (position - n_initial + 1) % every == 0
        )
        runs.append(row)
        if i < k:
            planner.ingest([Observation(parameters=proposal, outputs=evaluate(proposal))])
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return {
        "ingest": ingest,
        "front": front,
        "first": runs[0],
        "suggests": runs[1:],
        "rss_gb": rss_kb / 2**20,
    }


# ---------------------------------------------------------------------------- parent
def _load() -> str:
    """The machine's load averages (a shared 2-core host)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def run_case(tree: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """One case at one size in a fresh interpreter importing the packages of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"{tree}: case {spec['case']} at N = {spec['n']} failed:\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows) if rows else float("nan")


def _each(row: dict[str, Any]) -> str:
    """One suggest in the list: ``wall/fit``, ``x`` at an exploit position, ``fN`` the size
    of the posterior mean's front it computed."""
    text = f"{row['total']:.2f}/{row['fit']:.2f}"
    if row["exploit"]:
        text += "x"
    if row.get("mean_front") is not None:
        text += f" f{row['mean_front']}"
    return text


def row_text(label: str, case: str, n: int, result: dict[str, Any]) -> str:
    first, rest = result["first"], result["suggests"]
    front = "-"
    if result["front"] is not None:
        mean = first.get("mean_front")
        front = f"{result['front']}/{'-' if mean is None else mean}"
    each = " ".join(_each(r) for r in rest)
    return (
        f"{label:<9} {case:<8} {n:>5} {front:>7} "
        f"{first['total']:>7.2f}{'x' if first['exploit'] else ' '}({first['fit']:>6.2f}) "
        f"{_median(rest, 'total'):>8.2f} {_median(rest, 'cpu'):>6.2f} {_median(rest, 'fit'):>6.2f} "
        f"{_median(rest, 'optimize'):>8.2f} {result['rss_gb']:>6.2f} GB   {each}"
    )


def _literal(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``--set``: the value read as a Python literal (never evaluated)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--set wants NAME=VALUE, got {text!r}")
    try:
        return name.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(
            f"--set {name}: {value!r} is not a Python literal (e.g. 5, None, (4, 256, 64))"
        ) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--sizes", nargs="+", type=int, help="observations N (default: each case's own)"
    )
    parser.add_argument(
        "--suggests", type=int, help="suggests after the first, one more observation each (5)"
    )
    parser.add_argument("--quick", action="store_true", help="one tiny size per case")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=_literal,
        metavar="NAME=VALUE",
        help="a BoTorchSettings field for every case (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each child")
    parser.add_argument("--baseline", help="git revision to compare against (a worktree)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return

    settings: dict[str, Any] = dict(QUICK_SETTINGS) if args.quick else {}
    settings.update(dict(args.overrides))
    sys.path.insert(0, str(HERE.parent))
    from planners import BoTorchSettings  # the current tree's fields

    known = {f.name for f in fields(BoTorchSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        parser.error(
            f"--set {unknown[0]}: BoTorchSettings has no such field ({', '.join(sorted(known))})"
        )
    suggests = args.suggests or (QUICK_SUGGESTS if args.quick else 5)
    print(
        f"revision {revision()}; {os.cpu_count()} cores; {args.threads} torch thread(s); "
        f"{suggests} suggests after the first; settings "
        f"{settings or 'BoTorchSettings defaults'}"
    )
    header = (
        f"{'tree':<9} {'case':<8} {'N':>5} {'front':>7} {'first s (fit)':>16} "
        f"{'suggest':>8} {'cpu':>6} {'fit':>6} {'optimise':>8} {'peak RSS':>9}   each suggest "
        "wall/fit (x: exploit position; fN: mean front)"
    )
    with trees(args.baseline) as sources:
        for name in args.cases:
            case = CASES[name]
            sizes = args.sizes or ((case.quick,) if args.quick else case.sizes)
            print(f"\n{name}: {case.description}   [{_load()}]")
            print(header)
            for n in sizes:
                spec = {
                    "case": name,
                    "n": n,
                    "suggests": suggests,
                    "settings": settings,
                    "threads": args.threads,
                }
                medians: dict[str, float] = {}
                for label, tree in sources.items():
                    result = run_case(tree, spec)
                    medians[label] = _median(result["suggests"], "total")
                    shown = "current" if label == "current" else str(args.baseline)[:9]
                    print(row_text(shown, name, n, result), flush=True)
                if "baseline" in medians:
                    ratio = medians["current"] / medians["baseline"]
                    print(f"{'':<9} ratio of median suggests, current / baseline: {ratio:.2f}")


if __name__ == "__main__":
    main()
