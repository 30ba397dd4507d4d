"""Builds BoTorch's compiled multi-objective kernel ahead of any campaign:
``python -m planners._kernels``, which ``make setup`` runs once after installing.

botorch 0.18 compiles a fused C++ kernel for qLogEHVI and qLogNEHVI the first time either is
constructed in an environment (it needs a C++ compiler; torch caches the build under
``~/.cache/torch_extensions`` and builds again when the environment's paths change, so each
new virtual environment builds it once). The kernel is worth having: measured on this
project's 2-core machines, one multi-objective suggest took 3.9 s against 8.2 s without it
(DTLZ2, 6 inputs, 3 objectives, 30 points) and 0.6–0.7 s against 1.0–1.1 s (BraninCurrin,
20 points). But the build took 30–80 s there, and it happened inside the first model-based
suggest of the first multi-objective campaign: every instrument slot idle meanwhile, and a
dry run meant to take seconds took over a minute. Built here, at installation, the campaign
only loads it (~50 ms).

Without a compiler botorch warns and uses its pure-Python path, which gives the same
proposals more slowly; this module then says so and exits 0, since nothing is broken.
"""

from __future__ import annotations

import time


def build() -> bool:
    """Compile (or load, when built) botorch's fused qLogEHVI kernel; True if it loaded.

    botorch offers no public call for this, only its loader, which its acquisition functions
    call on construction; calling it here does what the first construction would do.
    """
    from botorch.acquisition.multi_objective import logei

    logei._try_load_fused_kernel()
    return logei._C is not None


def main() -> None:
    started = time.perf_counter()
    built = build()
    seconds = time.perf_counter() - started
    if built:
        print(f"botorch's multi-objective kernel is compiled and loads ({seconds:.0f} s)")
    else:
        print(
            "botorch's multi-objective kernel could not be compiled (no C++ compiler?): "
            "multi-objective campaigns use its slower pure-Python path"
        )


if __name__ == "__main__":
    main()
