"""The engine's own overhead per trial, against a baseline revision in the same run.

Engine overhead is what ``run.py`` reports: per trial, wall time minus planner time minus
instrument time (the RunEngine, the Ophyd plumbing, the store's commits, the scheduler).
Here the planner is Sobol and the simulator has no latency, so nothing else hides it. Each
campaign runs in a fresh interpreter; with ``--baseline REV`` the same campaign also runs
from a git worktree of that revision, alternating with the current tree on every repeat, so
the ratio is measured on the same host in the same minutes.

    .venv/bin/python benchmarks/overhead.py --baseline a2f350c --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _trees import trees

# Runs inside the tree under test: only the public API every revision since the
# first issue has (parse_campaign, Runner, Store, the summary's timings).
DRIVER = """
import json, statistics, sys
from pathlib import Path
from loop import Runner, Store, parse_campaign
path, url = Path(sys.argv[1]), sys.argv[2]
loaded = parse_campaign(path.read_text(), path=path, base_dir=path.parent)
store = Store(url)
summary = Runner(loaded, store).run()
store.close()
overheads = [t.overhead for t in summary.timings]
print(json.dumps({"median": statistics.median(overheads), "trials": len(overheads)}))
"""


def campaign(trials: int) -> str:
    parameters = "\n".join(f"  - {{name: x{i}, type: float, bounds: [0, 1]}}" for i in range(1, 7))
    return (
        "name: overhead\nparameters:\n" + parameters + "\nobjectives: [{name: y, goal: minimize}]\n"
        "instrument: {simulator: hartmann6}\n"
        "planner: {kind: sobol}\n"
        f"budget: {{max_trials: {trials}}}\n"
        "seed: 0\n"
    )


def overhead(tree: Path, path: Path, url: str) -> float:
    """Median engine overhead per trial (seconds) of one campaign run from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(path), url],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the campaign failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["median"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="git revision to compare against (a worktree)")
    args = parser.parse_args()

    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, trees(args.baseline) as sources:
        path = Path(tmp) / "overhead.yaml"
        path.write_text(campaign(args.trials))
        for repeat in range(args.repeats):
            for label, tree in sources.items():
                url = f"sqlite:///{Path(tmp) / f'{label}-{repeat}.db'}"
                runs.setdefault(label, []).append(overhead(tree, path, url))
                print(f"repeat {repeat} {label}: {runs[label][-1] * 1e3:.1f} ms", file=sys.stderr)

    print(
        f"Sobol on Hartmann6, {args.trials} trials, no instrument latency; median engine "
        f"overhead per trial, median of {args.repeats} campaigns (each a fresh interpreter)"
    )
    for label in sources:
        name = "current" if label == "current" else args.baseline
        listed = ", ".join(f"{x * 1e3:.1f}" for x in runs[label])
        print(f"{name}: {statistics.median(runs[label]) * 1e3:.1f} ms  (runs: {listed})")
    if args.baseline:
        ratio = statistics.median(runs["current"]) / statistics.median(runs["baseline"])
        print(f"ratio current / {args.baseline}: {ratio:.2f}")


if __name__ == "__main__":
    main()
