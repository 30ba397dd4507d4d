"""Builds BoTorch's compiled multi-objective kernel ahead of any campaign:
``python -m planners._kernels``, which ``make setup`` runs once after installing.

botorch 0.18 compiles a fused C++ kernel for qLogEHVI and qLogNEHVI the first time either is
constructed in an environment (it needs a C++ compiler; each environment keeps its build,
see below). The kernel is worth having: measured on this
project's 2-core machines, one multi-objective suggest took 3.9 s against 8.2 s without it
(DTLZ2, 6 inputs, 3 objectives, 30 points) and 0.6–0.7 s against 1.0–1.1 s (BraninCurrin,
20 points). But the build took 30–80 s there, and it happened inside the first model-based
suggest of the first multi-objective campaign: every instrument slot idle meanwhile, and a
dry run meant to take seconds took over a minute. Built here, at installation, the campaign
only loads it (~50 ms).

Without a compiler botorch warns and uses its pure-Python path, which gives the same
proposals more slowly; this module then says so and exits 0, since nothing is broken.

Each environment keeps its own build (:func:`use_environment_cache`): torch's default cache,
``~/.cache/torch_extensions``, is one folder per user keyed by the extension's name, and a
build from another environment's paths replaces the one there. A user with two virtual
environments paid the 30–80 s compile again in the first multi-objective suggest after
each switch (seen here: a fresh clone's set-up, then a suite run in the main checkout,
which compiled for 45 s inside a test).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

#: Where this environment's compiled torch extensions go, under ``sys.prefix``.
EXTENSIONS = ("share", "closedloop", "torch_extensions")


def use_environment_cache() -> None:
    """Point torch's extension cache (``TORCH_EXTENSIONS_DIR``) at a folder of this Python
    environment, unless the user chose one or the environment is not writable (a system
    Python run by another user: torch's default then).

    Called before botorch can first build or load its kernel: by :func:`build` and when the
    BoTorch planner is imported. torch reads the variable at each build or load, and only
    extensions built after this call go there; nothing else in the process reads it.
    """
    if "TORCH_EXTENSIONS_DIR" in os.environ or not os.access(sys.prefix, os.W_OK):
        return
    os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(sys.prefix, *EXTENSIONS))


def build() -> bool:
    """Compile (or load, when built) botorch's fused qLogEHVI kernel; True if it loaded.

    botorch offers no public call for this, only its loader, which its acquisition functions
    call on construction; calling it here does what the first construction would do.
    """
    use_environment_cache()
    from botorch.acquisition.multi_objective import logei

    load = getattr(logei, "_try_load_fused_kernel", None)
    if load is None:  # a botorch before the fused kernel (0.15.1): nothing to build
        return False
    load()
    return getattr(logei, "_C", None) is not None


def main() -> None:
    started = time.perf_counter()
    built = build()
    seconds = time.perf_counter() - started
    from botorch.acquisition.multi_objective import logei

    if built:
        print(f"botorch's multi-objective kernel is compiled and loads ({seconds:.0f} s)")
    elif not hasattr(logei, "_try_load_fused_kernel"):  # it crashed there (found in review)
        print("this botorch has no fused multi-objective kernel: nothing to build")
    else:
        print(
            "botorch's multi-objective kernel could not be compiled (no C++ compiler?): "
            "multi-objective campaigns use its slower pure-Python path"
        )


if __name__ == "__main__":
    main()
