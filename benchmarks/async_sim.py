"""Asynchronous BO in simulated time: the BoTorch planner alone, K slots, no waiting.

Why this exists: through the real loop (``parallel.py`` part b) the regret of 4 slots moves
from run to run, because the order in which slots finish changes the proposals, and a run at
a slow pace costs 75 s; ten seeds of it cannot rank small planner changes. Here each slot's
latency is drawn but not slept: the moment a slot frees, its outcome is ingested and the
planner makes the next proposal with every point still in flight (and any queued proposal)
pending, exactly the calls the scheduler makes, so a 60-trial run takes ~10 s of CPU.

``--ready D`` keeps D proposals queued ahead (a freed slot takes the oldest; each queued one
was made with the points ahead of it pending), as the scheduler does at a fast pace
(``loop.scheduler.Scheduler.depth``). ``--set key=value`` overrides ``BoTorchSettings``.
``--trace-out FILE`` writes every seed's best-so-far regret after each outcome (JSON).

Printed per seed and as medians over the seeds: the regret after k = 20, 30, 40, 45, 50, 55
and 60 outcomes (those <= ``--trials``). The basin rule: a run is counted "in the second
basin" when its final regret is above 0.1 (Hartmann6's second-best local minimum lies 0.119
above the global one) but not above 1, and only when it had at least 40 outcomes; with fewer
a run above 0.1 may still be searching, so no basin count is given. A final regret above 1
is counted as lost (in neither basin).

    .venv/bin/python benchmarks/async_sim.py --slots 4 --seeds 10
    .venv/bin/python benchmarks/async_sim.py --slots 1 --seeds 10
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MARKS = (20, 30, 40, 45, 50, 55, 60)
"""Outcomes after which the regret is printed (those <= --trials)."""
SECOND_BASIN = 0.1  # Hartmann6's second-best local minimum lies 0.119 above the global one
LOST = 1.0  # far from both basins
BASIN_MIN_TRIALS = 40  # fewer outcomes: a run above SECOND_BASIN may still be searching


def run(
    seed: int,
    slots: int,
    *,
    trials: int = 60,
    ready: int = 0,
    latency: tuple[float, float] = (0.5, 1.5),
    settings: dict[str, Any] | None = None,
) -> tuple[float, list[float], float]:
    """Final simple regret on Hartmann6, the best-so-far regret after each outcome, and the
    median seconds of a model-based suggest (its cost decides how deep the scheduler's
    queue must be at a given pace)."""
    import numpy as np
    import torch
    from botorch.test_functions import Hartmann

    from planners import (
        BoTorchPlanner,
        BoTorchSettings,
        FloatParameter,
        InitialDesign,
        Objective,
        Observation,
        PlannerConfig,
        Point,
        Space,
    )

    torch.set_num_threads(1)
    fn = Hartmann(dim=6)
    space = Space([FloatParameter(name=f"x{i}", bounds=(0.0, 1.0)) for i in range(6)])
    planner = BoTorchPlanner(
        space,
        [Objective(name="f", goal="minimize")],
        PlannerConfig(initial=InitialDesign(n=5)),
        seed=seed,
        settings=BoTorchSettings(**(settings or {})),
    )
    rng = np.random.default_rng(seed)

    def value(point: Point) -> float:
        x = torch.tensor([[point[n] for n in space.names]], dtype=torch.float64)
        return float(fn.evaluate_true(x))

    events: list[tuple[float, int]] = []  # (finish time, trial number)
    running: dict[int, Point] = {}
    queued: list[Point] = []
    started = 0

    def start(point: Point, now: float) -> None:
        nonlocal started
        heapq.heappush(events, (now + float(rng.uniform(*latency)), started))
        running[started] = point
        started += 1

    for point in planner.suggest(slots):
        start(point, 0.0)
    best, trace = float("inf"), list[float]()
    while len(trace) < trials:
        now, number = heapq.heappop(events)
        point = running.pop(number)
        y = value(point)
        best = min(best, y)
        trace.append(best - fn.optimal_value)
        planner.ingest([Observation(parameters=point, outputs={"f": y})])
        if started < trials:
            if queued:
                start(queued.pop(0), now)
            else:
                (fresh,) = planner.suggest(1, pending=list(running.values()))
                start(fresh, now)
            while len(queued) < ready and started + len(queued) < trials:
                queued += planner.suggest(1, pending=list(running.values()) + queued)
    seconds = [t.total for t in planner.timings if t.n_model]
    return trace[-1], trace, statistics.median(seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--ready", type=int, default=0, help="proposals queued ahead")
    parser.add_argument("--set", nargs="*", default=[], help="BoTorchSettings key=json-value")
    parser.add_argument(
        "--trace-out", type=Path, metavar="FILE", help="write each seed's best-so-far trace"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    settings = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    marks = [k for k in MARKS if k <= args.trials]
    values: list[float] = []
    seconds: list[float] = []
    traces: list[dict[str, Any]] = []
    for seed in range(args.seed_offset, args.seed_offset + args.seeds):
        final, trace, suggest = run(
            seed, args.slots, trials=args.trials, ready=args.ready, settings=settings
        )
        values.append(final)
        seconds.append(suggest)
        traces.append({"seed": seed, "final": final, "suggest_median_s": suggest, "trace": trace})
        after = ", ".join(f"{k}: {trace[k - 1]:.4g}" for k in marks)
        print(
            f"seed {seed}: regret {final:.5f} (after k outcomes, {after or 'none'}); "
            f"median suggest {suggest:.3f} s",
            flush=True,
        )
    if args.trials >= BASIN_MIN_TRIALS:
        second = sum(SECOND_BASIN < v <= LOST for v in values)
        lost = sum(v > LOST for v in values)
        basin = f"{second}/{len(values)} in the second basin" + (
            f", {lost} lost (regret > {LOST:g})" if lost else ""
        )
    else:
        basin = (
            f"{sum(v > SECOND_BASIN for v in values)}/{len(values)} above {SECOND_BASIN:g} "
            f"(basin not judged: fewer than {BASIN_MIN_TRIALS} outcomes)"
        )
    print(
        f"{args.slots} slot(s), {args.ready} ready, settings {settings or 'default'}: median "
        f"regret {statistics.median(values):.5f}; {basin}; per seed "
        f"{', '.join(f'{v:.4f}' for v in values)}; median suggest "
        f"{statistics.median(seconds):.3f} s (one torch thread, cores shared)"
    )
    if marks:
        cells = ", ".join(
            f"{k}: {statistics.median(t['trace'][k - 1] for t in traces):.2g}" for k in marks
        )
        print(f"median regret after k outcomes: {cells}")
    if args.trace_out:
        args.trace_out.parent.mkdir(parents=True, exist_ok=True)
        args.trace_out.write_text(
            json.dumps(
                {
                    "slots": args.slots,
                    "ready": args.ready,
                    "trials": args.trials,
                    "settings": settings,
                    "basin_rule": {
                        "second_basin_above": SECOND_BASIN,
                        "lost_above": LOST,
                        "min_trials": BASIN_MIN_TRIALS,
                    },
                    "runs": traces,
                },
                indent=1,
            )
        )
        print(f"traces in {args.trace_out}")


if __name__ == "__main__":
    main()
