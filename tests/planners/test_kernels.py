"""``python -m planners._kernels``, which ``make setup`` runs: botorch's fused multi-objective
kernel is built at installation, not inside a campaign's first suggest."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_kernel_build_step_exits_0_and_says_what_campaigns_will_use() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "planners._kernels"],
        capture_output=True,
        text=True,
        timeout=600,  # a first build compiles C++ (30-80 s on 2 cores)
    )
    assert done.returncode == 0, done.stderr
    said = done.stdout.strip()
    assert said.startswith("botorch's multi-objective kernel is compiled and loads (") or (
        said.endswith("multi-objective campaigns use its slower pure-Python path")
    ), said


def test_after_the_build_a_multi_objective_acquisition_loads_the_kernel() -> None:
    """What the build is for: the acquisition a campaign constructs finds the kernel built
    (on a machine with a compiler, as every machine this suite runs on has)."""
    from botorch.acquisition.multi_objective import logei

    from planners._kernels import build

    assert build()
    assert logei._C is not None


def test_each_environment_keeps_its_own_build() -> None:
    """torch's default cache is one folder per user, keyed by the extension's name: a build
    from another environment replaced this one's, and its next multi-objective suggest
    compiled again (30-80 s). The planner points the cache at the environment, unless the
    user chose a folder."""
    from pathlib import Path

    from planners._kernels import EXTENSIONS

    show = "import os, planners._botorch; print(os.environ.get('TORCH_EXTENSIONS_DIR'))"
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    ours = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True)
    assert ours.stdout.strip() == str(Path(sys.prefix, *EXTENSIONS)), ours.stderr
    chosen = subprocess.run(
        [sys.executable, "-c", show],
        env={**env, "TORCH_EXTENSIONS_DIR": "/srv/extensions"},
        capture_output=True,
        text=True,
    )
    assert chosen.stdout.strip() == "/srv/extensions", chosen.stderr
