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
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    settings = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    values, seconds = [], []
    for seed in range(args.seed_offset, args.seed_offset + args.seeds):
        final, trace, suggest = run(
            seed, args.slots, trials=args.trials, ready=args.ready, settings=settings
        )
        values.append(final)
        seconds.append(suggest)
        marks = ", ".join(f"{trace[k - 1]:.4f}" for k in (40, 48, 56) if k <= len(trace))
        print(
            f"seed {seed}: regret {final:.5f} (after 40/48/56 outcomes: {marks}); "
            f"median suggest {suggest:.3f} s",
            flush=True,
        )
    print(
        f"{args.slots} slot(s), {args.ready} ready, settings {settings or 'default'}: median "
        f"regret {statistics.median(values):.5f}; {sum(v > 0.1 for v in values)}/{len(values)} "
        f"in the second basin; per seed {', '.join(f'{v:.4f}' for v in values)}; median "
        f"suggest {statistics.median(seconds):.3f} s (one torch thread, cores shared)"
    )


if __name__ == "__main__":
    main()
