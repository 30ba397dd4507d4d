"""A simulated coating process for ``mixed_space.yaml``: every parameter type in one function.

Inputs: ``temperature`` (float, degC), ``concentration`` (log float, mol/L), ``layers``
(int), ``speed`` (ordered choice: slow < medium < fast), ``solvent`` (categorical) and
``pressure`` (fixed, kPa). Output ``quality`` (maximise, best 1.0 near 65 degC,
0.02 mol/L, 3 layers, medium speed, in ethanol) and ``thickness`` (measured, um).
"""

from __future__ import annotations

import math
from typing import Any

_SPEED = {"slow": 0.0, "medium": 1.0, "fast": 2.0}
_SOLVENT = {"water": 0.55, "ethanol": 1.0, "toluene": 0.8}


def measure(inputs: dict[str, Any]) -> dict[str, float]:
    t = (float(inputs["temperature"]) - 65.0) / 25.0
    c = math.log10(float(inputs["concentration"]) / 0.02)
    n = (int(inputs["layers"]) - 3) / 2.0
    s = _SPEED[str(inputs["speed"])] - 1.0
    base = math.exp(-(t**2) - c**2 - n**2 - 0.5 * s**2)
    quality = _SOLVENT[str(inputs["solvent"])] * base * (float(inputs["pressure"]) / 101.0)
    thickness = 0.4 * int(inputs["layers"]) * float(inputs["concentration"]) ** 0.5 * 10
    return {"quality": quality, "thickness": thickness}
