"""Regret, suggest latency and engine overhead, measured through the whole engine.

Every run is a real campaign: the Runner, a real RunEngine on simulated Ophyd devices and a
SQLite store, exactly what ``closedloop run`` does. Per problem and planner, over 5 seeds:

* final simple regret: best *noiseless* objective among the points tried minus the optimum
  (for the noisy problem the noisy readings drive the planner; the score uses the truth);
* suggest latency: median seconds per model-based suggest (after the initial design);
* engine overhead: median per trial of wall time minus planner time minus instrument time.

The suggest and overhead columns are the median over seeds of each campaign's median.
Every BoTorch suggest runs with ``BoTorchSettings.torch_threads`` torch threads (1), whatever
the process's own thread count; both are printed and recorded.

Usage::

    python benchmarks/run.py                 # everything, 2 worker processes
    python benchmarks/run.py --jobs 1        # latency without a neighbour process on the other core
    python benchmarks/run.py --problems branin --seeds 2

Results go to a new file, ``results/run-<UTC date-time>.json`` (``--out`` names another); the
tracked ``results/latest.json`` is written only when named.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _trees, when run from elsewhere

from _trees import dated_results  # noqa: E402

PROBLEMS = {
    # name: (simulator, trials, noise sd, parameters)
    "branin": ("branin", 30, 0.0, [("x1", -5, 10), ("x2", 0, 15)]),
    "hartmann6": ("hartmann6", 40, 0.0, [(f"x{i}", 0, 1) for i in range(1, 7)]),
    "hartmann6_noisy": ("hartmann6", 40, 0.1, [(f"x{i}", 0, 1) for i in range(1, 7)]),
}
PLANNERS = ("botorch", "sobol")


@dataclass
class Result:
    problem: str
    planner: str
    seed: int
    regret: float
    suggest_median: float | None
    overhead_median: float
    wall: float
    trials: int


def campaign_text(problem: str, planner: str, seed: int) -> str:
    simulator, trials, noise, params = PROBLEMS[problem]
    lines = [f"name: bench-{problem}-{planner}", "parameters:"]
    lines += [f"  - {{name: {n}, type: float, bounds: [{lo}, {hi}]}}" for n, lo, hi in params]
    lines += [
        "objectives: [{name: y, goal: minimize}]",
        f"instrument: {{simulator: {simulator}, noise: {noise}}}",
        f"planner: {{kind: {planner}, initial: {{kind: sobol, n: 5}}}}",
        f"budget: {{max_trials: {trials}, max_failures: 1}}",
        f"seed: {seed}",
    ]
    return "\n".join(lines) + "\n"


def run_one(problem: str, planner: str, seed: int, threads: int) -> Result:
    import torch

    torch.set_num_threads(threads)
    from loop import Runner, Store, parse_campaign
    from simulators import get_problem

    truth = get_problem(PROBLEMS[problem][0])
    optimum = (truth.optimum or {})["y"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "campaign.yaml"
        text = campaign_text(problem, planner, seed)
        path.write_text(text)
        store = Store(f"sqlite:///{tmp}/bench.db")
        loaded = parse_campaign(text, path=path, base_dir=Path(tmp))
        start = time.perf_counter()
        summary = Runner(loaded, store).run()
        wall = time.perf_counter() - start
        trials = store.trials(summary.campaign_id)
        store.close()
    values = [
        truth.evaluate(t.readbacks or t.parameters)["y"] for t in trials if t.status == "completed"
    ]
    model_suggests = [
        t.suggest_seconds for t in trials if t.kind == "model" and t.suggest_seconds is not None
    ]
    return Result(
        problem=problem,
        planner=planner,
        seed=seed,
        regret=min(values) - optimum,
        suggest_median=statistics.median(model_suggests) if model_suggests else None,
        overhead_median=statistics.median(t.overhead for t in summary.timings),
        wall=wall,
        trials=len(values),
    )


def _suggest_threads(process_threads: int) -> int:
    """The torch threads a BoTorch suggest runs with: ``BoTorchSettings.torch_threads``, or
    the process's count when that setting is ``None`` (leave torch alone)."""
    from planners import BoTorchSettings

    n = BoTorchSettings().torch_threads
    return process_threads if n is None else n


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--planners", nargs="+", default=list(PLANNERS), choices=PLANNERS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--out",
        type=Path,
        help="results JSON (default: a new results/run-<UTC date-time>.json)",
    )
    args = parser.parse_args()
    out = args.out or dated_results("run")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    suggest_threads = _suggest_threads(threads)
    tasks = [
        (p, pl, s, threads)
        for p in args.problems
        for pl in args.planners
        for s in range(args.seeds)
    ]
    print(
        f"{len(tasks)} campaigns, {args.jobs} process(es); each BoTorch suggest uses "
        f"{suggest_threads} torch thread(s) (BoTorchSettings.torch_threads; the process "
        f"default is set to {threads})",
        file=sys.stderr,
    )
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run_one, *zip(*tasks, strict=True)))
    total = time.perf_counter() - start

    header = (
        f"{'problem':<16} {'planner':<8} {'regret median [q1, q3]':<34} "
        f"{'suggest s':>9} {'overhead ms':>11}"
    )
    print(header)
    print("-" * len(header))
    for problem in args.problems:
        for planner in args.planners:
            rs = [r for r in results if r.problem == problem and r.planner == planner]
            q1, med, q3 = quartiles([r.regret for r in rs])
            sug = [r.suggest_median for r in rs if r.suggest_median is not None]
            sug_text = f"{statistics.median(sug):9.3f}" if sug else f"{'-':>9}"
            over = statistics.median(r.overhead_median for r in rs) * 1e3
            print(
                f"{problem:<16} {planner:<8} {med:<10.4g} [{q1:.4g}, {q3:.4g}]".ljust(61)
                + f" {sug_text} {over:11.1f}"
            )
    print(f"\ntotal wall time {total:.0f} s; results in {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "jobs": args.jobs,
                "suggest_threads": suggest_threads,
                "process_threads": threads,
                "results": [asdict(r) for r in results],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
