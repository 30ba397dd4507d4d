"""Wall time of the light CLI commands (``status``, ``export``, ``validate``, ``--help``).

Each command is a fresh interpreter, so its time is mostly imports: what a technician waits
for when checking a running campaign. With ``--baseline REV`` the same commands also run from
a git worktree of that revision (same virtual env, same store), alternating with the current
tree on every repeat, and the table shows the ratio measured in this one run.

    .venv/bin/python benchmarks/cli_start.py --repeats 5 --baseline e0a3bc4
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _trees import ROOT, trees


def _commands(url: str) -> dict[str, list[str]]:
    return {
        "status": ["status", "--store", url],
        "export --format csv": ["export", "--store", url, "--format", "csv"],
        "validate campaigns/branin.yaml": ["validate", "campaigns/branin.yaml"],
        "--help": ["--help"],
    }


def _seconds(tree: Path, args: list[str]) -> float:
    """One command from ``tree`` (its packages first on the path), in seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "loop.cli", *args], cwd=tree, env=env, capture_output=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tree}: closedloop {' '.join(args)} failed:\n{done.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="git revision to compare against (a worktree)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'cli.db'}"
        subprocess.run(
            [sys.executable, "-m", "loop.cli", "run", "campaigns/branin.yaml"]
            + ["--max-trials", "6", "--store", url, "-q"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        with trees(args.baseline) as sources:
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.repeats):
                for name, cmd in _commands(url).items():
                    for label, tree in sources.items():
                        times.setdefault((label, name), []).append(_seconds(tree, cmd))

    header = f"{'command':34} {'current (s)':>12}"
    if args.baseline:
        header += f" {args.baseline + ' (s)':>16} {'speed-up':>9}"
    print(f"median of {args.repeats} runs, each a fresh interpreter")
    print(header)
    for name in _commands(url):
        now = statistics.median(times[("current", name)])
        line = f"{name:34} {now:12.2f}"
        if args.baseline:
            before = statistics.median(times[("baseline", name)])
            line += f" {before:16.2f} {before / now:8.1f}x"
        print(line)


if __name__ == "__main__":
    main()
