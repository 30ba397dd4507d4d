"""Parallel slots and Dask (issue 4): utilisation, regret, planner latency, Dask throughput.

Every campaign here is a real one (Runner, one RunEngine per slot on simulated Ophyd devices,
SQLite), run one after another in this one process. Figures are printed, not asserted.

* ``a`` utilisation: Hartmann6, 60 trials, latency drawn per measurement uniformly from
  0.5-1.5 s; 4 slots vs 1 slot, after a short unmeasured warm-up campaign. Utilisation =
  summed instrument busy time / (slots x wall).
* ``b`` regret: Hartmann6, 4 slots x 60 trials vs 1 slot x 60 trials, 10 seeds, at three
  instrument paces (latency uniform in 0.05-0.15 s, 0.5-1.5 s and, on 5 seeds, 2.5-7.5 s):
  median final simple regret over the seeds and over the first five, runs left in the
  second basin, utilisation, the queue depths the scheduler logged, a rank test against one
  slot.
* ``c`` planner latency: the BoTorch planner alone; median ``suggest(1, pending=4 points)``
  after 50, 200 and 500 completed Hartmann6 trials (each suggest after one more trial was
  ingested, so each refits the GP, warm-started, as in a campaign).
* ``d`` Dask: a simulator that burns ~0.5 s of CPU per trial; 20 trials with 2 slots,
  in-process vs a local Dask cluster with 2 worker processes (Sobol planner: the planner is
  not what is measured). Throughput from the first trial's start to the last one's finish;
  the session (``summary.elapsed``, which leaves the cluster out: the runner opens the
  executor before its clock starts); the whole ``Runner.run`` call; and the cluster's start
  and close timed on their own.

Usage::

    python benchmarks/parallel.py              # all four
    python benchmarks/parallel.py --parts a c  # some
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
HARTMANN_OPT = -3.32237


def burn_cpu(inputs: dict[str, Any]) -> dict[str, float]:
    """A CPU-heavy simulator: Hartmann6 after ~0.5 s of arithmetic (module-level: picklable)."""
    from simulators import get_problem

    deadline = time.thread_time() + 0.5  # this thread's CPU: fair under a GIL too
    acc = 0.0
    while time.thread_time() < deadline:
        for i in range(20_000):
            acc += (i % 7) * 1e-9
    y = get_problem("hartmann6").evaluate(inputs)["y"]
    return {"y": y + acc * 0.0}


def _campaign(
    instrument: str, trials: int, seed: int, planner: str = "botorch", name: str = "par"
) -> str:
    params = "\n".join(f"  - {{name: x{i}, type: float, bounds: [0, 1]}}" for i in range(1, 7))
    return (
        f"name: {name}\nparameters:\n{params}\n"
        "objectives: [{name: y, goal: minimize}]\n"
        f"instrument: {instrument}\n"
        f"planner: {{kind: {planner}, initial: {{kind: sobol, n: 5}}}}\n"
        f"budget: {{max_trials: {trials}, max_failures: 5}}\n"
        f"seed: {seed}\n"
    )


def _random_latency(low: float, high: float, seed: int) -> Any:
    """An instrument factory whose detectors draw a latency per measurement."""
    import numpy as np

    from instruments import build_instrument

    def factory(campaign: Any, slot_seed: int) -> Any:
        instrument = build_instrument(
            campaign.instrument, campaign.parameters, base_dir=HERE, seed=slot_seed
        )
        detector = instrument.detector
        rng = np.random.default_rng([seed, slot_seed])
        trigger = detector.trigger

        def timed_trigger() -> Any:
            detector._sim_latency = float(rng.uniform(low, high))
            return trigger()

        detector.trigger = timed_trigger
        return instrument

    return factory


def _run(text: str, *, base_dir: Path = HERE, factory: Any = None) -> tuple[Any, Any]:
    summary, trials, _ = _run_timed(text, base_dir=base_dir, factory=factory)
    return summary, trials


def _run_timed(text: str, *, base_dir: Path = HERE, factory: Any = None) -> tuple[Any, Any, float]:
    """Run a campaign; also the wall seconds of the whole ``Runner.run`` call, which, unlike
    ``summary.elapsed`` (the session's clock), includes building the slots, opening the
    executor (a local Dask cluster's start) and closing it."""
    from loop import Runner, Store, parse_campaign

    with tempfile.TemporaryDirectory() as tmp:
        path = base_dir / "_parallel_campaign.yaml"
        loaded = parse_campaign(text, path=path, base_dir=base_dir)
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        runner = Runner(loaded, store, instrument_factory=factory)
        t0 = time.monotonic()
        summary = runner.run()
        run_wall = time.monotonic() - t0
        trials = store.trials(summary.campaign_id)
        store.close()
    return summary, trials, run_wall


class _DepthLog(logging.Handler):
    """Collects the queue depths the scheduler logs ("keeping N proposal(s) ready", logged
    at INFO by ``loop.scheduler.Scheduler.depth`` whenever the depth changes)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.depths: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("keeping") and record.args:
            args = record.args if isinstance(record.args, tuple) else ()
            if args and isinstance(args[0], int):
                self.depths.append(args[0])


@contextmanager
def _depths() -> Iterator[_DepthLog]:
    log = logging.getLogger("loop.scheduler")
    handler, level = _DepthLog(), log.level
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _suggest_threads() -> str:
    """The torch threads a BoTorch suggest runs with (``BoTorchSettings.torch_threads``)."""
    import torch

    from planners import BoTorchSettings

    n = BoTorchSettings().torch_threads
    own = torch.get_num_threads()
    if n is None:
        return f"{own} (the process's; BoTorchSettings.torch_threads is None)"
    return f"{n} (BoTorchSettings.torch_threads; the process's own count is {own})"


def _regret(trials: list[Any]) -> float:
    from simulators import get_problem

    h6 = get_problem("hartmann6")
    values = [h6.evaluate(t.readbacks)["y"] for t in trials if t.status == "completed"]
    return min(values) - HARTMANN_OPT


def _load() -> str:
    """The machine's load, printed beside each figure (a shared 2-core host)."""
    with os.popen("uptime") as out:  # noqa: S605 - a fixed command; closed, not left to GC
        return out.read().strip()


# ---------------------------------------------------------------------------- parts
def utilisation(seed: int = 0, planner: str = "botorch") -> None:
    print(
        f"\n(a) utilisation, Hartmann6, 60 trials, latency U(0.5, 1.5) s, planner {planner}"
        f"   [{_load()}]"
    )
    # The first campaign in a fresh process runs slower throughout on this VM (median suggest
    # 0.35 s against 0.18-0.21 s for the same campaign run next, in the same process: memory
    # touched for the first time, lazy imports), which turned 95 % into 67 % for whichever
    # campaign ran first. A short campaign warms the process so the two runs below compare
    # slot counts, not start-up order.
    t0 = time.monotonic()
    _run(_campaign("{simulator: hartmann6, latency: 0.0}", 15, seed + 1000, planner))
    print(f"  warm-up campaign (15 trials, not measured): {time.monotonic() - t0:.1f} s")
    walls = {}
    for slots in (4, 1):
        text = _campaign(f"{{simulator: hartmann6, count: {slots}}}", 60, seed, planner)
        t0 = time.monotonic()
        summary, trials = _run(text, factory=_random_latency(0.5, 1.5, seed))
        wall = time.monotonic() - t0
        busy = sum(t.instrument_busy for t in summary.timings)
        occupied = sum(t.dispatch for t in summary.timings)
        suggest = statistics.median(t.suggest for t in summary.timings)
        walls[slots] = summary.elapsed
        print(
            f"  {slots} slot(s): {summary.completed} completed in {summary.elapsed:.1f} s "
            f"(process wall {wall:.1f} s); utilisation busy/(slots x wall) = "
            f"{busy / (slots * summary.elapsed):.1%}; slot occupied (whole run incl. "
            f"RunEngine) = {occupied / (slots * summary.elapsed):.1%}; median suggest share "
            f"{suggest:.3f} s; regret {_regret(trials):.4f}"
        )
    print(f"  speed-up 4 slots vs 1: {walls[1] / walls[4]:.2f}x")


# Hartmann6's second-best local minimum (-3.2032) lies 0.119 above the global one: a run whose
# final regret exceeds SECOND_BASIN (but not LOST) settled in that basin; judged only after at
# least BASIN_MIN_TRIALS trials, since a shorter run above it may still be searching.
SECOND_BASIN = 0.1
LOST = 1.0
BASIN_MIN_TRIALS = 40


# Part b's paces: (name, latency range in s, how many of the seeds). The planner's load is
# slots x suggest time / trial time with a ~0.2 s suggest; the queue depth follows it
# (loop.scheduler.Scheduler.depth).
PACES = (
    ("planner-bound", (0.05, 0.15), 1.0),  # load > 1: slots wait for proposals, no queue
    ("part a's pace", (0.5, 1.5), 1.0),  # load ~0.7: 3-4 proposals ready
    ("slow instruments", (2.5, 7.5), 0.5),  # load ~0.16: 1 ready
)


def regret(seeds: int = 10, trials: int = 60) -> None:
    """Final regret of 4 slots vs 1 slot, per seed, with a rank test between the two.

    Ten seeds by default (the issue asks for the median of five; the first five are printed
    too): on Hartmann6 a run either settles in the second basin (regret ~0.12) or refines the
    global one (< 0.02), and five seeds cannot tell a 20 % from a 40 % chance of the former.
    Four slots run at three paces (``PACES``; the slow one on half the seeds: 75 s a run),
    because how deep the scheduler queues proposals, and so how many points each suggest
    sees pending, depends on the planner's load. One slot runs once, planner-bound: a
    sequential campaign proposes the same points whatever its instrument's latency.
    """
    from scipy.stats import mannwhitneyu

    print(f"\n(b) regret, Hartmann6, {trials} trials   [{_load()}]")
    one: list[float] = []
    for slots, (name, (low, high), share) in [(1, PACES[0])] + [(4, pace) for pace in PACES]:
        n = max(1, round(seeds * share))
        values, walls, busy = [], [], []
        depths: list[int] = []
        for seed in range(n):
            text = _campaign(f"{{simulator: hartmann6, count: {slots}}}", trials, seed)
            with _depths() as log:
                summary, rows = _run(text, factory=_random_latency(low, high, seed))
            depths += log.depths
            values.append(_regret(rows))
            walls.append(summary.elapsed)
            busy.append(sum(t.instrument_busy for t in summary.timings) / (slots * summary.elapsed))
        first = values[:5]
        if trials >= BASIN_MIN_TRIALS:
            lost = sum(v > LOST for v in values)
            basin = f"{sum(SECOND_BASIN < v <= LOST for v in values)}/{n} in the second basin"
            basin += f", {lost} lost (> {LOST:g})" if lost else ""
        else:
            basin = (
                f"{sum(v > SECOND_BASIN for v in values)}/{n} above {SECOND_BASIN:g} (basin not "
                f"judged under {BASIN_MIN_TRIALS} trials)"
            )
        line = (
            f"  {slots} slot(s), latency U({low}, {high}) s ({name}): median regret "
            f"{statistics.median(values):.4f} over {n} seeds, {statistics.median(first):.4f} "
            f"over seeds 0-{len(first) - 1}; {basin}; per seed "
            f"{', '.join(f'{v:.4f}' for v in values)}; "
            f"median wall {statistics.median(walls):.1f} s, utilisation "
            f"{statistics.median(busy):.1%}"
        )
        if slots > 1:
            line += f"; queue depth {slots} (the lookahead) at the start, " + (
                f"then {min(depths)}-{max(depths)} (median {statistics.median(depths):g} of "
                f"the {len(depths)} changes the scheduler logged)"
                if depths
                else "never changed (no change logged)"
            )
        if slots == 1:
            one = values
        else:
            test = mannwhitneyu(values, one[:n], alternative="two-sided")
            line += f"; Mann-Whitney U vs 1 slot (same seeds): p = {test.pvalue:.3f}"
        print(line, flush=True)


def planner_latency(sizes: tuple[int, ...] = (50, 200, 500), reps: int = 5) -> None:
    import torch

    from planners import Objective, Observation, PlannerConfig, Space, make_planner
    from planners._space import FloatParameter
    from simulators import get_problem

    print(f"\n(c) planner latency, Hartmann6, suggest(1) with 4 pending   [{_load()}]")
    print(f"  torch threads in each suggest: {_suggest_threads()}")
    h6 = get_problem("hartmann6")
    space = Space([FloatParameter(name=f"x{i}", bounds=(0.0, 1.0)) for i in range(1, 7)])
    rng = torch.Generator().manual_seed(0)
    for n in sizes:
        X = torch.rand(n + reps + 4, 6, generator=rng, dtype=torch.float64)
        points = [{f"x{i + 1}": float(v) for i, v in enumerate(row)} for row in X]
        obs = [Observation(parameters=p, outputs=h6.evaluate(p)) for p in points[:n]]
        planner = make_planner(
            space, [Objective(name="y", goal="minimize")], PlannerConfig(), seed=0
        )
        planner.ingest(obs)
        pending = points[-4:]
        t0 = time.perf_counter()
        planner.suggest(1, pending=pending)
        first = time.perf_counter() - t0
        times, fits = [], []
        for k in range(reps):
            p = points[n + k]
            planner.ingest([Observation(parameters=p, outputs=h6.evaluate(p))])
            t0 = time.perf_counter()
            planner.suggest(1, pending=pending)
            times.append(time.perf_counter() - t0)
            timing = getattr(planner, "last_timing", None)
            fits.append(timing.fit if timing is not None else float("nan"))
        print(
            f"  {n:>4} completed: median suggest {statistics.median(times):.2f} s "
            f"(fit {statistics.median(fits):.2f} s; first, cold fit: {first:.2f} s; "
            f"all {', '.join(f'{t:.2f}' for t in times)})"
        )


def dask_throughput(trials: int = 20) -> None:
    print(f"\n(d) Dask, {trials} trials of a ~0.5 s CPU simulator, 2 slots   [{_load()}]")
    fn = f'{{function: "{Path(__file__).name}:burn_cpu", outputs: [y], count: 2'
    from simulators import DaskExecutor

    # The runner opens the executor before the session's clock starts, so summary.elapsed
    # leaves the cluster out: the whole Runner.run call is timed as well, and the cluster's
    # start and close are timed on their own first.
    t0 = time.monotonic()
    executor = DaskExecutor.local(workers=2)
    started = time.monotonic() - t0
    t0 = time.monotonic()
    executor.close()
    closed = time.monotonic() - t0
    print(f"  local Dask cluster, 2 workers, alone: start {started:.1f} s, close {closed:.1f} s")
    for label, spec in (
        ("in-process", ""),
        ("local Dask, 2 workers", ", executor: {kind: local, workers: 2}"),
    ):
        text = _campaign(fn + spec + "}", trials, 0, planner="sobol", name="dask")
        summary, rows, run_wall = _run_timed(text)
        span = (max(t.finished_at for t in rows) - min(t.started_at for t in rows)).total_seconds()
        print(
            f"  {label}: {summary.completed} trials from first start to last finish in "
            f"{span:.1f} s = {summary.completed / span:.2f} trials/s; session "
            f"{summary.elapsed:.1f} s (excludes the cluster); Runner.run {run_wall:.1f} s "
            f"(+{run_wall - summary.elapsed:.1f} s: building the slots, and for Dask starting "
            "and closing the cluster)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["a", "b", "c", "d"], choices=list("abcd"))
    parser.add_argument("--seeds", type=int, default=10, help="seeds of part b")
    parser.add_argument("--trials", type=int, default=60, help="trials per run of part b")
    parser.add_argument("--planner", default="botorch", help="planner of part a")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="the process's torch threads (each BoTorch suggest uses "
        "BoTorchSettings.torch_threads, 1, whatever this is)",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"cores: {os.cpu_count()}; {_load()}")
    parts = {
        "a": lambda: utilisation(planner=args.planner),
        "b": lambda: regret(args.seeds, args.trials),
        "c": planner_latency,
        "d": dask_throughput,
    }
    for part in args.parts:
        parts[part]()


if __name__ == "__main__":
    main()
