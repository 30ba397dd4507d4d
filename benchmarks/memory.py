"""A whole campaign's memory in one process, with and without ``loop.memory.steady_memory``.

``scale.py`` measures one suggest in a fresh interpreter; a campaign that runs for hours in
one process also keeps what its allocator does not hand back. Each campaign here runs in a
fresh interpreter through the Python API (``Runner.run``), the two settings alternating on
every repeat, and prints its peak resident memory (``ru_maxrss``), its CPU time (user and
system) and its wall time, then the ratios. The campaign: noisy 2-D Branin, the BoTorch
planner, no instrument latency (the planner is all there is to see).

    .venv/bin/python benchmarks/memory.py --trials 80 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CAMPAIGN = """\
name: memory
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, noise: 0.5}
planner: {kind: botorch}
budget: {max_trials: TRIALS}
seed: 1
"""

DRIVER = """
import json, resource, sys, time
from pathlib import Path
if sys.argv[3] == "steady":
    from loop.memory import steady_memory
    assert steady_memory(), "glibc's mallopt is not available here"
from loop import Runner, Store, parse_campaign
path, url = Path(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
loaded = parse_campaign(path.read_text(), path=path, base_dir=path.parent)
store = Store(url)
summary = Runner(loaded, store).run()
store.close()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "peak_mb": usage.ru_maxrss / 1024, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
    "wall_s": time.perf_counter() - t0, "trials": summary.completed,
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"default": [], "steady": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        campaign = folder / "memory.yaml"
        campaign.write_text(CAMPAIGN.replace("TRIALS", str(args.trials)))
        for repeat in range(args.repeats):
            for setting in runs:
                url = f"sqlite:///{folder / f'{setting}{repeat}.db'}"
                out = subprocess.run(
                    [sys.executable, "-c", DRIVER, str(campaign), url, setting],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                runs[setting].append(figures)
                print(
                    f"{setting:8s} repeat {repeat}: peak {figures['peak_mb']:.0f} MB, user "
                    f"{figures['user_s']:.1f} s, sys {figures['sys_s']:.1f} s, wall "
                    f"{figures['wall_s']:.1f} s ({figures['trials']:.0f} trials)",
                    flush=True,
                )
    median = {
        setting: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        for setting, rs in runs.items()
    }
    for key in ("peak_mb", "user_s", "sys_s", "wall_s"):
        a, b = median["steady"][key], median["default"][key]
        print(f"median {key}: steady {a:.1f} against default {b:.1f}, ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
