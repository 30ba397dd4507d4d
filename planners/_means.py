"""A GP prior mean that falls off toward the box's faces (Snoek et al. 2015).

A GP with a constant mean reverts to that constant away from the data, with its variance
largest there; in a box of several dimensions that is on the faces and corners. Under
observation noise a sparsely sampled campaign explains much of its variation as noise, and
its acquisition then follows the variance into the faces: on noisy Hartmann6 (6-D, sd 0.1,
40 trials) the default model proposed about one coordinate at a bound per proposal, and the
runs that failed spent their first 15-20 model trials there (benchmarks/README.md, session
5). Snoek et al. ("Scalable Bayesian Optimization Using Deep Neural Networks", ICML 2015)
put a quadratic prior mean under their model "to prevent over-exploration of the
boundaries"; Siivola et al. (2018) describe the same deficiency. Here it is

    m(x) = c - b * ||x - 1/2||^2    (x: the model's inputs, each in [0, 1]; b >= 0)

with ``c`` and ``b`` fitted by marginal likelihood with the kernel's hyperparameters. The
data decide how much it says: ``b`` goes toward 0 when the measurements do not fall off
toward the faces, and where they rise toward a face the GP's kernel part carries the rise,
as it does with a constant mean. Measured (session 21, ``planner_tuning.py`` protocol):
noisy Hartmann6 median regret 0.054 against 0.148 over seeds 0-56, better on 40 of 57 seeds
(Wilcoxon p = 0.001); noiseless Branin and Hartmann6 and a Hartmann6 whose optimum was moved
next to a face no worse. The centre is fixed: learning it too lost on the moved optimum.
"""

from __future__ import annotations

from typing import Any

import torch
from gpytorch.constraints import Positive
from gpytorch.means import Mean
from torch import Tensor


class QuadraticMean(Mean):
    """``c - b * ||x - 1/2||^2`` over the model's ``[0, 1]`` inputs, ``b >= 0`` (a GP
    without a batch shape: each output has its own GP here)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("raw_constant", torch.nn.Parameter(torch.zeros(())))
        self.register_parameter("raw_curvature", torch.nn.Parameter(torch.zeros(())))
        self.register_constraint("raw_curvature", Positive())
        with torch.no_grad():  # the start the measurements above were made from: b = 1/2
            self.raw_curvature.copy_(
                self.raw_curvature_constraint.inverse_transform(torch.tensor(0.5))
            )

    @property
    def curvature(self) -> Tensor:
        """``b``: how fast the prior mean falls from the centre (standardised outputs)."""
        constraint: Any = self.raw_curvature_constraint
        return constraint.transform(self.raw_curvature)  # type: ignore[no-any-return]

    def forward(self, x: Tensor) -> Tensor:
        distance = ((x - 0.5) ** 2).sum(-1)
        return self.raw_constant - self.curvature * distance
