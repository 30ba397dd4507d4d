"""A simulated continuous flow reactor: Arrhenius kinetics solved analytically in plug flow.

The model is small enough to read in one sitting and rich enough that optimising it is not
trivial: the best conditions are interior in every continuous input, differ per catalyst, and
the most productive conditions are not the cleanest or the cheapest ones.

Chemistry (think of a Pd-catalysed cross-coupling of a limiting substrate A with a reagent B,
used in ``equivalents`` relative to A)::

    A (+B, cat) --k1--> P        desired product, reported as ``yield``
    A      (cat) --k3--> S        parallel side reaction (e.g. dehalogenation of A)
    P (+B, cat) --k2--> D        consecutive over-reaction of the product with excess B

Why each term:

* **Plug flow, isothermal, first order in A.** A tubular reactor at steady state behaves like a
  batch reactor run for the residence time ``tau``, so the outlet composition is the batch
  solution at ``t = tau``; all three steps are (pseudo-)first order in the organic species, so
  the linear ODE system has a closed form (below) and evaluation costs microseconds.
* **Arrhenius, in reference form**: ``k(T) = k_ref * exp(-Ea/R * (1/T - 1/T_ref))`` with
  ``T_ref = 70 degC``. It is the same law as ``A * exp(-Ea / RT)`` (the pre-exponential factor
  is ``A = k_ref * exp(Ea / (R T_ref))``) but ``k_ref`` is a rate one can picture (per minute,
  mid-range) and it keeps ``k_ref`` and ``Ea`` uncorrelated when fitted.
* **Activation energies are ordered Ea3 < Ea1 < Ea2.** The side reaction of A has a low
  barrier, so at low temperature it competes well with the slow desired step; the
  over-reaction has the highest barrier, so it takes over at high temperature. That ordering is
  what makes the best temperature interior, and since each catalyst has its own ``Ea1`` and
  ``k_ref`` values, its best temperature is different.
* **Saturation in equivalents** for the desired step, ``k1 ∝ eq / (K_B + eq)``: adding B speeds
  up the catalytic cycle until another step (oxidative addition) limits turnover, so returns
  diminish. The over-reaction is first order in B, ``k2 ∝ eq``, and never saturates. More B
  therefore helps the desired step win against the B-independent side reaction ``k3`` but
  feeds the over-reaction: the best ``equivalents`` are interior too.
* **Consecutive kinetics make residence time interior**: P first accumulates and is then
  consumed by the over-reaction, so for every (T, eq, catalyst) there is a best ``tau``.
  ``impurity`` (``S + D``) never decreases with ``tau``: pushing conversion for yield costs
  purity, which is the trade-off a campaign's ``impurity <= 0.05`` constraint exercises.

Closed form with ``ka = k1 + k3`` (the total consumption rate of A)::

    A = exp(-ka tau)
    P = k1 tau exp(-min(ka, k2) tau) * h(|k2 - ka| tau),   h(z) = (1 - exp(-z)) / z, h(0) = 1
    S = k3 tau h(ka tau)
    D = 1 - A - P - S

The ``h`` form is the textbook ``k1/(k2-ka) * (exp(-ka tau) - exp(-k2 tau))`` rewritten so
that it neither cancels catastrophically when ``k2 ≈ ka`` nor overflows when rates are large.

Cost per run (arbitrary currency, a run producing a fixed outlet volume): reagent B is paid
per equivalent, the catalyst per run (XPhos-Pd-G3 is the fastest and most selective but by
far the most expensive), and the reactor's time and heating grow with ``tau`` (a longer
residence time at a fixed volume means a slower flow, i.e. a longer run) and with
``T - 20 degC``. So the highest yield is not the cheapest: a second trade-off.

The outputs are noiseless; measurement noise, latency and failures belong to the device
wrapper (``SimDetector``), not to the physics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simulators._functions import Inputs, Outputs, ParamSpec, TestProblem

logger = logging.getLogger(__name__)

#: Gas constant in kJ/(mol K), so activation energies are in kJ/mol.
R_GAS = 8.314462618e-3
#: Reference temperature of the Arrhenius law (70 degC, mid-range), in K.
T_REF_K = 343.15
KELVIN = 273.15

#: Activation energy of the over-reaction P + B -> D, kJ/mol (highest: wins when hot).
EA_OVER = 120.0
#: Activation energy of the side reaction A -> S, kJ/mol (lowest: competes when cold).
EA_SIDE = 40.0

TEMPERATURE_RANGE = (30.0, 110.0)
RESIDENCE_TIME_RANGE = (0.5, 30.0)
EQUIVALENTS_RANGE = (1.0, 3.0)

# Cost model, currency units per run.
_COST_PER_EQUIVALENT = 4.0
_COST_PER_MINUTE = 0.10
_COST_PER_DEGREE_MINUTE = 0.004


@dataclass(frozen=True)
class Catalyst:
    """Kinetic and economic constants of one catalyst.

    Rates are per minute at ``T_REF_K`` and 1 equivalent of B; energies in kJ/mol.

    Attributes:
        name: The value of the ``catalyst`` input.
        k_main: Rate constant of A -> P, k1_ref.
        ea_main: Activation energy of A -> P (between ``EA_SIDE`` and ``EA_OVER``).
        k_sat: ``K_B`` in ``eq / (K_B + eq)``: equivalents of B at half-maximal turnover.
        k_over: Rate constant of P -> D per equivalent of B (the catalyst mediates it too).
        k_side: Rate constant of A -> S.
        price: Catalyst cost per run.
    """

    name: str
    k_main: float
    ea_main: float
    k_sat: float
    k_over: float
    k_side: float
    price: float


#: The catalysts, cheapest and most sluggish first. Constants were chosen so that each one's
#: best conditions are interior and distinct (about 95/72/55 degC, 2.5/6/12 min, 1.5/2/2.4 eq).
CATALYSTS: Mapping[str, Catalyst] = {
    c.name: c
    for c in (
        Catalyst("Pd(OAc)2", 0.42, 90.0, 2.5, 0.0018, 0.031, 0.5),
        Catalyst("Pd(PPh3)4", 1.05, 72.0, 1.33, 0.0030, 0.041, 2.0),
        Catalyst("XPhos-Pd-G3", 1.84, 65.0, 1.09, 0.0051, 0.035, 6.0),
    )
}

#: Best noiseless yield per catalyst and where it is attained, estimated once by a dense grid
#: refined with L-BFGS-B (``estimate_flow_reactor_optima``); a test recomputes and compares.
FLOW_REACTOR_OPTIMA: Mapping[str, Mapping[str, float]] = {
    "Pd(OAc)2": {
        "yield": 0.8397540558,
        "temperature": 94.9473,
        "residence_time": 2.49164,
        "equivalents": 1.50000,
    },
    "Pd(PPh3)4": {
        "yield": 0.9001128325,
        "temperature": 72.1532,
        "residence_time": 5.95414,
        "equivalents": 1.99499,
    },
    "XPhos-Pd-G3": {
        "yield": 0.9399400350,
        "temperature": 55.0116,
        "residence_time": 11.9946,
        "equivalents": 2.39798,
    },
}


def _arrhenius(k_ref: float, ea: float, temp_k: NDArray[np.float64]) -> NDArray[np.float64]:
    return k_ref * np.exp(-ea / R_GAS * (1.0 / temp_k - 1.0 / T_REF_K))


def _h(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(1 - exp(-z)) / z`` for ``z >= 0``, continuous at 0 (where it is 1)."""
    small = z < 1e-8
    safe = np.where(small, 1.0, z)
    return np.where(small, 1.0 - 0.5 * z, -np.expm1(-safe) / safe)


def flow_reactor_array(
    temperature: ArrayLike,
    residence_time: ArrayLike,
    equivalents: ArrayLike,
    catalyst: str,
) -> dict[str, NDArray[np.float64]]:
    """Vectorised model: broadcastable arrays in, outlet composition and cost out.

    Args:
        temperature: degC.
        residence_time: min.
        equivalents: mol B per mol A.
        catalyst: A key of :data:`CATALYSTS`.

    Returns:
        ``yield`` (P), ``impurity`` (S + D), ``conversion`` (1 - A), all mol per mol A in
        ``[0, 1]``, and ``cost`` per run.
    """
    try:
        cat = CATALYSTS[catalyst]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown catalyst {catalyst!r}; choose one of {list(CATALYSTS)}"
        ) from None
    t_c = np.asarray(temperature, dtype=np.float64)
    tau = np.asarray(residence_time, dtype=np.float64)
    eq = np.asarray(equivalents, dtype=np.float64)
    t_k = t_c + KELVIN

    k1 = _arrhenius(cat.k_main, cat.ea_main, t_k) * eq / (cat.k_sat + eq)
    k2 = _arrhenius(cat.k_over, EA_OVER, t_k) * eq
    k3 = _arrhenius(cat.k_side, EA_SIDE, t_k)
    ka = k1 + k3

    a = np.exp(-ka * tau)
    p = k1 * tau * np.exp(-np.minimum(ka, k2) * tau) * _h(np.abs(k2 - ka) * tau)
    # Round-off can push these a hair outside [0, 1]; a yield of -1e-17 would confuse users.
    p = np.clip(p, 0.0, 1.0)
    impurity = np.clip(1.0 - a - p, 0.0, 1.0)
    cost = (
        _COST_PER_EQUIVALENT * eq
        + cat.price
        + _COST_PER_MINUTE * tau
        + _COST_PER_DEGREE_MINUTE * np.maximum(t_c - 20.0, 0.0) * tau
    )
    return {"yield": p, "impurity": impurity, "conversion": 1.0 - a, "cost": cost}


def flow_reactor(inputs: Inputs) -> Outputs:
    """The flow reactor as a pure function: inputs dict -> ``yield``, ``impurity``, ``cost``.

    Args:
        inputs: ``temperature`` (degC), ``residence_time`` (min), ``equivalents`` and
            ``catalyst``. Values outside the nominal ranges are extrapolated, not refused:
            refusing is the devices' job.

    Raises:
        KeyError: if an input is missing.
        ValueError: if the catalyst is unknown.
    """
    missing = [
        n for n in ("temperature", "residence_time", "equivalents", "catalyst") if n not in inputs
    ]
    if missing:
        raise KeyError(f"flow_reactor: missing inputs {missing}")
    out = flow_reactor_array(
        float(inputs["temperature"]),
        float(inputs["residence_time"]),
        float(inputs["equivalents"]),
        inputs["catalyst"],
    )
    return {name: float(out[name]) for name in ("yield", "impurity", "cost")}


def estimate_flow_reactor_optima(grid: int = 41) -> dict[str, dict[str, float]]:
    """Best noiseless yield per catalyst: dense grid, then L-BFGS-B from the best grid point.

    The optimiser works in ``(T, log tau, eq)``, the coordinates in which the yield surface is
    smooth and well scaled. Used to produce :data:`FLOW_REACTOR_OPTIMA` and by the test that
    keeps that constant honest; it takes well under a second.

    Args:
        grid: Points per dimension of the initial grid.
    """
    from scipy.optimize import minimize  # only needed here; keeps the import cheap

    lo = np.array([TEMPERATURE_RANGE[0], math.log(RESIDENCE_TIME_RANGE[0]), EQUIVALENTS_RANGE[0]])
    hi = np.array([TEMPERATURE_RANGE[1], math.log(RESIDENCE_TIME_RANGE[1]), EQUIVALENTS_RANGE[1]])
    axes = [np.linspace(lo[i], hi[i], grid) for i in range(3)]
    mesh = np.meshgrid(*axes, indexing="ij")
    result: dict[str, dict[str, float]] = {}
    for name in CATALYSTS:

        def negative_yield(x: NDArray[np.float64], name: str = name) -> float:
            return -float(flow_reactor_array(x[0], math.exp(x[1]), x[2], name)["yield"])

        y = flow_reactor_array(mesh[0], np.exp(mesh[1]), mesh[2], name)["yield"]
        idx = np.unravel_index(int(np.argmax(y)), y.shape)
        x0 = np.array([axes[i][idx[i]] for i in range(3)])
        res = minimize(
            negative_yield,
            x0,
            method="L-BFGS-B",
            bounds=list(zip(lo, hi, strict=True)),
            options={"ftol": 1e-15, "gtol": 1e-12},
        )
        result[name] = {
            "yield": -float(res.fun),
            "temperature": float(res.x[0]),
            "residence_time": math.exp(float(res.x[1])),
            "equivalents": float(res.x[2]),
        }
    return result


def flow_reactor_problem() -> TestProblem:
    """The flow reactor as a benchmark: maximise ``yield``; ``impurity``/``cost`` measured."""
    best_cat = max(FLOW_REACTOR_OPTIMA, key=lambda c: FLOW_REACTOR_OPTIMA[c]["yield"])
    best = FLOW_REACTOR_OPTIMA[best_cat]
    optimizer: dict[str, Any] = {
        "temperature": best["temperature"],
        "residence_time": best["residence_time"],
        "equivalents": best["equivalents"],
        "catalyst": best_cat,
    }
    return TestProblem(
        name="flow_reactor",
        parameters=(
            ParamSpec("temperature", bounds=TEMPERATURE_RANGE, unit="degC"),
            ParamSpec("residence_time", bounds=RESIDENCE_TIME_RANGE, log=True, unit="min"),
            ParamSpec("equivalents", bounds=EQUIVALENTS_RANGE),
            ParamSpec("catalyst", kind="choice", values=tuple(CATALYSTS)),
        ),
        outputs=("yield", "impurity", "cost"),
        evaluate=flow_reactor,
        goal={"yield": "maximize"},
        optimum={"yield": best["yield"]},
        optimizers=(optimizer,),
        description=(
            "Continuous flow reactor, A -> P with a parallel (A -> S) and a consecutive "
            "(P -> D) side reaction, Arrhenius kinetics; maximise yield, with impurity and "
            "cost per run as measured side outputs. Interior optimum, different per catalyst."
        ),
        metadata={"catalyst_optima": FLOW_REACTOR_OPTIMA},
        floors={"yield": 0.0, "impurity": 0.0, "cost": 0.0},  # fractions and a price
    )
