"""``python -m planners._kernels``, which ``make setup`` runs: botorch's fused multi-objective
kernel is built at installation, not inside a campaign's first suggest."""

from __future__ import annotations

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
