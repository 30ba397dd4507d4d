"""Bayesian optimisation with BoTorch: a GP surrogate, a Log-EI acquisition, exact mixed search.

One suggest call reads top to bottom in :meth:`BoTorchPlanner.suggest`:

1. positions that still belong to the initial design get Sobol/random points (with several
   objectives the centre of the space first, see ``InitialDesign.centre_first``);
2. the remaining positions get a GP fitted on the usable observations (refitted whenever
   new observations arrived), an acquisition function conditioned on the pending points,
   and candidates from ``optimize_acqf`` (all-float spaces) or
   ``optimize_acqf_mixed_alternating`` (int/choice columns searched on their grid; the GP
   sees choice columns one-hot, see ``planners/_transforms.py``);
3. candidates are decoded, and any that repeats a pending point is replaced by a design point.

Where experiments fail. A failed trial has no outputs; left out of the models, the planner
would learn nothing from it and propose the same failing region again and again (the
objective's posterior there unchanged). With ``BoTorchSettings.learn_failures`` (the
default), once at least one trial has failed, it teaches the planner twice. It enters the
objective GP at the worst value measured so far in each column (once any trial has
succeeded; :meth:`BoTorchPlanner.training_data`), so the GP no longer predicts large gains
where no number comes back. And a second GP, the *feasibility model*, is fitted on a success label
(+1 for usable trials, -1 for failed ones) over the same encoded inputs, and the acquisition
optimises over ``ModelListGP([objective GP, feasibility GP])`` with the outcome constraint
"success score > 0": every MC sample of a candidate counts only where its feasibility sample
is positive, so the acquisition is weighted by the posterior probability of success
(idiomatic BoTorch constrained BO, Gardner et al. 2014). A GP regression on labels is a cheap
stand-in for a GP classifier (no Laplace/EP approximation, same kernel and fitting code,
warm-started like the objective GP); far from any trial it reverts to the prior mean, so
unexplored regions stay attractive. With ``learn_failures`` off a failed trial enters no
model. Abandoned trials (interrupted, see ``planners/_protocol.py``) teach it nothing.

Everything random runs under ``torch.random.fork_rng`` with a seed derived from the campaign
seed and the trial position, so the same seed and the same observations give the same run.
With ``BoTorchSettings.warm_start`` (the default) each GP fit starts from the previous fit's
hyperparameters; the chain of fits of a run is deterministic, but a planner rebuilt from the
store (``resume``) fits once from the cold start and may propose slightly different points
than the original would have (equally valid ones: ``resume`` still needs no pickled model).
With ``warm_start=False`` the rebuilt planner proposes exactly what the original would have.

Goals. The training data (:meth:`BoTorchPlanner.training_data`) is an ``n x (m + c)``
matrix: the ``m`` objectives *signed* (maximise ``sign * y``), then the *slack* of each of the
``c`` outcome constraints (``bound - y`` for ``y <= bound``, ``y - bound`` for ``>=``), so
every column reads "larger is better". Each column gets its own GP (one ``SingleTaskGP``, or
a ``ModelListGP`` of them), and the acquisition (:meth:`BoTorchPlanner._acquisition`) sees
outputs ``[objectives..., slacks..., success score]``:

* outcome constraints are BoTorch ``constraints=`` callables ("slack >= 0"), like the
  failure model's "score > margin": each MC sample is weighted by its smoothed feasibility
  indicator, so the acquisition is feasibility-weighted and the incumbent (qLogNEI's noisy
  baseline, qLogEI's ``best_f``, qLogNEHVI's Pareto front) counts feasible points only.
  Until a trial satisfies every outcome constraint there is nothing to improve on, and the
  acquisition is the probability of feasibility (``qLogProbabilityOfFeasibility``);
* with 2-4 objectives the acquisition is ``qLogNoisyExpectedHypervolumeImprovement`` over
  the signed reference point (each objective's ``reference_point``, else the feasible
  front's nadir less 10 % of its range, :func:`planners._pareto.front_reference_point`,
  as BoTorch infers it), with ``prune_baseline`` and
  BoTorch's cached Cholesky root (with more than ``hv_exact_max_front`` points on the
  posterior mean's front, qLogEHVI over that front: :meth:`BoTorchPlanner._front_ehvi`); the
  single-objective options (``acquisition``, the exploit step) do not apply;
* a batch (``suggest(n)`` with ``n > 1``) is optimised jointly by sequential greedy
  conditioning in ``optimize_acqf`` (each point's acquisition conditioned on the ones chosen
  before it, and on the pending points through ``X_pending``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import Any, Literal

import numpy as np
import torch
from botorch.acquisition import (
    AcquisitionFunction,
    ConstrainedMCObjective,
    GenericMCObjective,
    qLogExpectedImprovement,
    qLogNoisyExpectedImprovement,
    qSimpleRegret,
    qUpperConfidenceBound,
)
from botorch.acquisition.logei import qLogProbabilityOfFeasibility
from botorch.acquisition.multi_objective import (
    IdentityMCMultiOutputObjective,
    qLogExpectedHypervolumeImprovement,
    qLogNoisyExpectedHypervolumeImprovement,
)
from botorch.acquisition.utils import get_infeasible_cost
from botorch.exceptions.errors import CandidateGenerationError
from botorch.exceptions.warnings import BadInitialCandidatesWarning, OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import InputTransform, Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import (
    get_covar_module_with_dim_scaled_prior,
    get_gaussian_likelihood_with_lognormal_prior,
)
from botorch.optim import optimize_acqf, optimize_acqf_discrete
from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.multi_objective.box_decompositions import FastNondominatedPartitioning
from botorch.utils.multi_objective.pareto import is_non_dominated
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood, Likelihood
from gpytorch.means import Mean
from gpytorch.mlls import (
    ExactMarginalLogLikelihood,
    MarginalLogLikelihood,
    SumMarginalLogLikelihood,
)
from gpytorch.priors import GammaPrior
from torch import Tensor

from planners._baselines import (
    PositionalDesign,
    RepeatGuard,
    derive_seed,
    feasible_cardinality,
    near_duplicate,
    point_key,
)
from planners._config import (
    PlannerConfig,
    PriorMean,
    check_botorch_support,
    check_prior_mean,
    quadratic_mean_applies,
)
from planners._constraints import InfeasibleSpaceError, encoded_linear_constraint
from planners._kernels import use_environment_cache
from planners._means import QuadraticMean
from planners._outliers import NOISE_FLOOR, clip_column, outlying
from planners._pareto import front_reference_point
from planners._progress import report_progress
from planners._protocol import Objective, Observation, OutcomeConstraint, check_observations
from planners._space import MAX_ENUMERATED_INTS, IntParameter, Point, Space
from planners._transforms import OneHotCategories

logger = logging.getLogger(__name__)
use_environment_cache()  # before botorch first builds or loads its multi-objective kernel

KernelKind = Literal["rbf", "matern", "matern_gamma"]
NoisePrior = Literal["lognormal", "gamma", "gamma_small"]


# Standardize treats an output column whose standard deviation is below its ``min_stdv`` as
# constant (scale 1 instead of the std). BoTorch's default floor is absolute (1e-8), so
# outputs in small units (currents of ~1e-12 A) counted as constant and the GP learned
# nothing. The floor here is relative to the column's magnitude: a spread below 1e-13 of
# max|y| (~450 ulps; a mean and a std of float64 data round at a few ulps) is rounding
# noise, anything larger is data. An offset of 1e12 with a spread of 1 stays data (the
# floor is 0.1 there); the absolute floor keeps an all-zero column from dividing by zero
# and a posterior variance (std squared) far from underflow.
_MIN_STDV_RELATIVE = 1e-13
_MIN_STDV_ABSOLUTE = 1e-100
# An output column spanning less than this is scaled up for the model by a power of two (see
# BoTorchPlanner._model_outcomes): BoTorch's absolute smoothing constants (1e-6 on an
# improvement, 1e-3 on a constraint slack) are then small against the data's differences.
# Ordinary objectives (Branin spans ~300, Hartmann6 ~3) keep their units.
_SMALL_RANGE = 1e-2
# How far past the box (share of each range) an observed point still counts as a design
# point: a readback a hair past a bound (``BoTorchPlanner._in_box``).
_BOX_SLACK = 1e-2


@dataclass(frozen=True)
class BoTorchSettings:
    """Model and optimiser knobs that a campaign file does not expose.

    The defaults were chosen with ``benchmarks/planner_tuning.py`` (Branin, Hartmann6 with and
    without noise, 5 initial points) to reach low regret at under half a second per suggest
    on one CPU core; tests shrink ``raw_samples``/``num_restarts`` to stay fast. In short:
    a Matern 5/2 kernel with BoTorch's dimension-scaled LogNormal lengthscale prior escapes
    Hartmann6's local optimum more often than the EDBO/BayBE Gamma priors, the weak Gamma
    noise prior lets the noise of noiseless objectives shrink to the floor (Branin) while
    still learning real noise, and warm-started fits with a loose tolerance cut the fit
    from ~1 s to ~0.05 s at 40 points.

    Attributes:
        kernel: ``rbf`` or ``matern`` (5/2) with BoTorch's dimension-scaled LogNormal
            lengthscale prior (Hvarfner et al. 2024), or ``matern_gamma``: a scaled Matern 5/2
            with Gamma priors interpolated in the dimension (EDBO/BayBE style).
        noise_prior: ``lognormal`` (BoTorch's LogNormal(-4, 1)), ``gamma`` (Gamma(1.05, 0.5),
            EDBO/BayBE) or ``gamma_small`` (Gamma(1.1, 0.05), BoTorch's pre-0.12 default).
        moo_noise_prior: the noise prior of every GP of a campaign with several objectives.
            The Gamma prior, which wins on noisy single-objective problems, lets each of the
            objectives' GPs explain the variation of a sparsely sampled space as noise; their
            posteriors then revert to the data mean wherever nothing was measured, and
            qLogNEHVI spends trials on unexplored corners (DTLZ2, 6-D, 3 objectives, 40 trials,
            seeds 0-4: median hypervolume 0.09 with Gamma, 0.39 with LogNormal;
            Ax 0.39).
        noise_floor: lower bound of the inferred noise variance on the standardised scale.
        prior_mean: the objective GP's prior mean for one objective over a space without
            choice parameters and without outcome constraints: ``quadratic`` (a bowl centred
            in the box, its depth fitted: ``planners._means``), which keeps a noisy campaign
            from exploring the box's faces while it cannot see the objective's shape yet
            (noisy Hartmann6, seeds 0-56: median regret 0.054 against 0.148, better on 40
            of 57 seeds; noiseless problems no worse), or ``constant``. Every other model
            keeps a constant mean. A campaign's ``planner.prior_mean``, when written,
            decides instead.
        fit_maxiter: L-BFGS-B iterations of one GP hyperparameter fit (``None``: SciPy's).
        fit_ftol: relative loss reduction at which a GP fit stops (``None``: SciPy's 2.2e-9).
        warm_start: start each GP fit from the previous fit's hyperparameters instead of the
            priors' initial values. The chain of fits of a fresh seeded run is deterministic,
            so runs stay reproducible; a planner rebuilt from a store (``resume``) fits once,
            cold, and may therefore propose slightly different points than the original.
        cold_refit_every: with ``warm_start``, also fit from the cold start whenever the
            number of observations reaches a multiple of this (or passes one: several slots
            deliver outcomes in twos and threes), and keep the likelier fit.
        cold_refit_max_n: ... but not beyond this many observations: with hundreds of points
            the hyperparameters barely move between suggests and a cold fit costs ~7x a warm
            one (Hartmann6, 500 points: 1.5 s against 0.22 s), which would make every fifth
            suggest of a long campaign stall a free instrument.
        torch_threads: intra-op threads torch may use during ``suggest`` (``None``: leave
            torch's setting alone). One thread by default: at campaign sizes (n <= ~1000) the
            GP's matrices are too small to gain from parallel BLAS, and OpenMP threads that
            spin while other work (RunEngine slots, simulations, other processes) shares the
            cores collapse throughput (``benchmarks/parallel.py`` part c, 500 points, load 3
            on 2 cores: 0.55-0.8 s per suggest with one thread, 6.8-13 s with two).
        pending_effort: ``(num_restarts, raw_samples, mc_samples)`` for a single-objective
            suggest with points pending (``None``: the same effort as without). Points are
            pending when several slots measure at once, and then the next suggest follows
            within a fraction of a trial, so a cheaper optimisation loses little while a
            planner that cannot keep up idles instruments: ``(4, 256, 64)`` cut a Hartmann6
            suggest with 4 pending from ~0.25 s to ~0.18 s, which took four 1 s slots from
            88 % to 93-96 % busy, and left the regret of 4 slots x 60 trials where it was
            (median over seeds 0-9 0.0004 against 0.0003-0.0009; ``benchmarks/parallel.py``).
            A batch's points after the first (``suggest -n 8``) keep the full effort: with
            it they were chosen worse (Hartmann6, batches of 8, 48 trials: median regret
            0.0086 against 0.0023 over seeds 0-5) and no faster on a box. Sequential
            campaigns never have pending points: their tuning is untouched.
        mc_samples: quasi-MC samples of the MC acquisition functions.
        raw_samples: random points scored to pick optimiser starting points.
        num_restarts: optimiser starting points.
        float_restarts: ... at most this many for one objective over an all-float space
            (``None``: ``num_restarts``). The batched L-BFGS-B runs until its slowest start
            converges, and each acquisition call costs about the same for 4 starts as for 8
            (GPyTorch's per-call overhead dominates), so halving the starts cut a Hartmann6
            suggest at 38 points from 0.51 s to 0.36 s. Over seeds 0-39
            (``planner_tuning.py``) 4 starts left the regret where 8 had it: Branin median
            0.00094 against 0.0012 (32 and 30 of 40 runs <= 0.005), Hartmann6 0.0019 against
            0.0014 (24 and 26 of 40), noisy Hartmann6 0.094 against 0.121 (15 and 14 of 40
            <= 0.05); Mann-Whitney p = 0.81 and 0.94 on the noiseless ones. A mixed space keeps
            ``num_restarts``: its alternating search lost with 4 (``goals.py`` mixed Ackley,
            seeds 0-4: median regret 1.89 against 1.15), and so do several objectives
            (BraninCurrin: 57.68 against 57.75).
        maxiter: L-BFGS-B iterations per restart (all-float spaces).
        slsqp_maxiter: SLSQP iterations per start under parameter constraints. A start that
            converges takes 2-14 iterations; one crawling along a curved constraint's edge
            (a log-scale parameter in a linear constraint) ran the full 200 with ~10
            acquisition evaluations each, 11 of a first suggest's 12 s, and ended worse
            than the starts that converged (found in review). Capped at 30: on a
            log-int/float/choice space with such a constraint (16 trials, seeds 0-4) the
            best values found were identical to 200's and the suggests took 3-8x less in
            all (16-50 s against 48-400 s on a loaded host); constrained Branin (25 trials)
            identical too, its slowest suggest 0.78 s against 2.5 s.
        batch_limit: restarts optimised jointly in one batched L-BFGS-B run.
        sample_around_best: seed part of the raw samples around the best observed points.
        maxiter_alternating: discrete/continuous alternations (mixed spaces).
        ucb_beta: exploration weight of ``qUpperConfidenceBound``.
        learn_failures: once a trial has failed, fit a feasibility model on succeeded vs
            failed trials and weight the acquisition by its probability of success, and put
            failed points into the objective model at the worst value seen, so the planner
            stops proposing where experiments fail (``benchmarks/failure_region.py``: 4 % of
            proposals in a failing region it is attracted to, against 54 % without).
        exploit_every: every k-th model-based trial maximises the posterior mean
            (``qSimpleRegret``) instead of the acquisition: a pure refinement step in the
            incumbent's basin, which expected improvement undervalues when several basins
            look equally good. ``None`` disables it.
        exploit_max_noise: ... only while the fitted noise variance (standardised scale) is
            below this: refining on the posterior mean pays when observations are precise,
            and traps a noisy campaign in the basin it happens to be in.
        refit_past: with ``warm_start``, past this many observations the GP's
            hyperparameters are fitted only when the count crosses a multiple of
            ``refit_every`` (as ``cold_refit_every`` counts); in between the GP keeps the
            last fit's hyperparameters and is only conditioned on the new data (``None``:
            fit on every new observation). Branin at 2000 points: a warm fit took 5-6 s of
            a 10-13 s suggest, a kept one 0.01 s (suggests 6-10 s: optimising the
            acquisition over the 2000-point posterior is the rest, and RSS stays ~1.8 GB).
        refit_every: ... see ``refit_past``.
        hv_exact_max_front: with several objectives, the most points on the front of the
            posterior mean at the observed (and pending) points for which the acquisition
            stays qLogNEHVI; past it, qLogEHVI over that front
            (:meth:`BoTorchPlanner._front_ehvi`), whose cost does not multiply with the MC
            samples. Campaigns of up to this many trials never reach it.
        init_batch_limit: ... and the raw samples that the qLogEHVI path scores at once
            (each scores against every box of the front: all 512 at once took GBs).
    """

    kernel: KernelKind = "matern"
    noise_prior: NoisePrior = "gamma"
    moo_noise_prior: NoisePrior = "lognormal"
    noise_floor: float = NOISE_FLOOR
    prior_mean: PriorMean = "quadratic"
    fit_maxiter: int | None = 100
    fit_ftol: float | None = 1e-6
    warm_start: bool = True
    cold_refit_every: int | None = 5
    cold_refit_max_n: int = 200
    torch_threads: int | None = 1
    exploit_every: int | None = 4
    exploit_max_noise: float = 1e-3
    pending_effort: tuple[int, int, int] | None = (4, 256, 64)
    mc_samples: int = 128
    raw_samples: int = 512
    num_restarts: int = 8
    float_restarts: int | None = 4
    maxiter: int = 200
    slsqp_maxiter: int = 30
    batch_limit: int | None = None
    sample_around_best: bool = True
    maxiter_alternating: int = 16
    ucb_beta: float = 4.0
    learn_failures: bool = True
    refit_past: int | None = 1000
    refit_every: int = 5
    hv_exact_max_front: int = 48
    init_batch_limit: int = 32


@dataclass
class SuggestTiming:
    """Wall-clock breakdown of one ``suggest`` call, in seconds.

    Attributes:
        total: the whole call.
        fit: fitting the GP hyperparameters (0 when the model was reused or not needed).
        optimize: building and optimising the acquisition function.
        n_model: proposals that came from the model (the others from the initial design).
        n_train: observations the model was trained on.
        n_failed: failed observations the feasibility model was trained on (0: none used).
    """

    total: float = 0.0
    fit: float = 0.0
    optimize: float = 0.0
    n_model: int = 0
    n_train: int = 0
    n_failed: int = 0


@dataclass(frozen=True)
class ModelEstimates:
    """What the model makes of the measured points: :meth:`BoTorchPlanner.model_estimates`.

    Attributes:
        mean: observation index (in the planner's ``observations``) -> the posterior mean of
            the objective there, in the output's units: the model's estimate of the true
            value, every reading of the point and of its neighbours weighed. Measured
            readings only: none for a failed trial or a reading far outside every other one
            (an overrange code), which the model is not fitted on.
        sd: the same -> the posterior standard deviation of that true value.
        best: the observation whose mean is best among those the model rates feasible
            (every outcome constraint's mean met); ``None`` if it rates none feasible.
        noise_sd: the fitted measurement noise (the standard deviation of one reading).
    """

    mean: dict[int, float]
    sd: dict[int, float]
    best: int | None
    noise_sd: float


@dataclass
class _Fitted:
    """A fitted model and the data it saw, reused until new observations arrive."""

    model: Model
    train_X: Tensor
    train_Y: Tensor
    n_ingested: int
    timings: dict[str, float] = field(default_factory=dict)


class BoTorchPlanner:
    """GP-based Bayesian optimisation over a mixed float/int/choice space.

    Args:
        space: the search space.
        objectives: what to optimise: one objective (by ``config.acquisition``) or 2 to 4
            (by qLogNEHVI), checked here at construction
            (``planners._config.check_botorch_support``) so a campaign the planner cannot
            serve fails when it loads, not mid-run.
        config: the campaign's ``planner:`` section (initial design, acquisition).
        seed: the campaign seed; with the same observations and pending points the planner
            proposes the same points.
        settings: model/optimiser knobs; the defaults are tuned, tests shrink them.
        outcome_constraints: bounds on measured outputs (``y <= bound``, ``y >= bound``),
            each modelled by its own GP on its slack; the acquisition is weighted by the
            probability of meeting them all, and improves on the best feasible trial only
            (see "Goals" in the module docstring).

    Attributes:
        last_suggest_seconds: wall-clock duration of the last ``suggest`` call.
        last_timing: its breakdown into fit and optimise time.
        timings: every call's breakdown, for benchmarks.
    """

    def __init__(
        self,
        space: Space,
        objectives: Sequence[Objective],
        config: PlannerConfig | None = None,
        seed: int = 0,
        settings: BoTorchSettings | None = None,
        outcome_constraints: Sequence[OutcomeConstraint] = (),
    ) -> None:
        config = config if config is not None else PlannerConfig()
        check_botorch_support(objectives, config)
        check_prior_mean(space, objectives, config, outcome_constraints)
        self.space = space
        self.objectives: tuple[Objective, ...] = tuple(objectives)
        self.outcome_constraints: tuple[OutcomeConstraint, ...] = tuple(outcome_constraints)
        self.config = config
        self.seed = int(seed)
        self.settings = settings if settings is not None else BoTorchSettings()
        self.design = PositionalDesign(
            space,
            seed,
            self.config.initial.kind,
            centre_first=self.config.initial.centre_first(len(self.objectives)),
        )
        self.n_initial = self.config.initial.size(space.dim)
        self.observations: list[Observation] = []
        self.last_suggest_seconds: float | None = None
        self.last_timing: SuggestTiming | None = None
        self.last_kinds: list[str] = []
        self._design_swaps: list[bool] = []  # per model point of the last suggest
        self._told_unmodelled = False  # an observation without the modelled outputs, said
        self._told_constant: set[str] = set()  # outputs said to be constant
        self.timings: list[SuggestTiming] = []
        self._fitted: _Fitted | None = None
        self._feasibility: _Fitted | None = None
        self._outliers_reported: set[int] = set()  # observation indices (see _model_outcomes)
        self.repeats = RepeatGuard(space, "those the model rates most promising")
        self._bounds = space.bounds
        self._cat_dims = space.cat_dims
        self._discrete_dims = _narrow_discrete_dims(space)

    # ------------------------------------------------------------------ protocol
    def ingest(self, observations: Sequence[Observation]) -> None:
        """Remember finished trials; the model is refitted on the next ``suggest``.

        Fitting lazily means a resume that ingests a whole store trial by trial fits once.
        Observations that no planner could learn from are refused first
        (:func:`~planners._protocol.check_observations`), and completed ones that carry none
        of the objectives' outputs are named once: they teach the model nothing.
        """
        check_observations(self.space, observations)
        self.observations.extend(observations)
        if not self._told_unmodelled:
            for obs in observations:
                if (
                    obs.outcome == "completed"
                    and obs.outputs
                    and not any(name in obs.outputs for name in self.outcome_names)
                ):
                    self._told_unmodelled = True
                    logger.warning(
                        "an observation has outputs %s but the planner models %s: it teaches "
                        "the model nothing (check the objectives' and outcome constraints' "
                        "names)",
                        sorted(obs.outputs),
                        list(self.outcome_names),
                    )
                    break

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        """Propose ``n`` points, none equal to a pending one (unless the space is exhausted).

        Args:
            n: number of proposals.
            pending: points proposed earlier whose trials have not finished; the model treats
                them as "being measured" (BoTorch ``X_pending``) so a batch stays diverse.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        start = time.perf_counter()
        timing = SuggestTiming()
        self._design_swaps = []
        pending = [self.space.validate(p) for p in pending]
        position = len(self.observations) + len(pending)
        n_usable = self._design_done()

        # pending design points will complete the design; pending model points will not
        in_design = self._pending_design(pending, position) if n_usable < self.n_initial else 0
        n_design = min(n, max(0, self.n_initial - n_usable - in_design))
        if n_usable == 0:
            n_design = n  # nothing to model yet: keep exploring with the design
        measured = self._measured_points()
        proposals = self.design.points(
            position, n_design, self.repeats.avoid(pending, measured, n), pending=pending
        )

        n_model = n - n_design
        if n_model > 0:
            suggest_seed = derive_seed(self.seed, len(self.observations), len(pending))
            with (
                torch.random.fork_rng(),
                torch_threads(self.settings.torch_threads),
                self._effort(bool(pending + proposals)),
            ):
                torch.manual_seed(suggest_seed)
                try:
                    model_points = self._suggest_from_model(
                        n_model, pending + proposals, position + n_design, timing
                    )
                except RuntimeError as exc:
                    # Numerical failure inside GPyTorch/BoTorch (e.g. outputs spanning 1e10
                    # make the start sampler's probabilities NaN, a covariance that is not
                    # positive definite): an idle instrument helps no one, so this trial
                    # gets a design point and the next suggest tries the model again.
                    said = str(exc).splitlines()[0] if str(exc) else ""
                    if _out_of_memory(exc):
                        # It will not fit next time either: say so, and what to do (was only
                        # the allocator's words, so a campaign of 20 000 prior rows became a
                        # Sobol campaign with no reason given: found in review).
                        said = (
                            f"an exact GP on {len(self.observations)} observations needs more "
                            "memory than there is (it grows with their square), so every "
                            "proposal from here is a design point; give fewer prior-data rows, "
                            f"or run where there is more memory ({said})"
                        )
                    logger.warning(
                        "the model could not propose (%s: %s); using %d design point(s)",
                        type(exc).__name__,
                        said,
                        n_model,
                    )
                    model_points = self.design.points(
                        position + n_design,
                        n_model,
                        self.repeats.avoid(pending + proposals, self._measured_points(), n_model),
                        pending=pending + proposals,
                    )
                    n_design, n_model = n_design + n_model, 0
            proposals += model_points

        timing.total = time.perf_counter() - start
        timing.n_model = n_model
        swaps = self._design_swaps if len(self._design_swaps) == n_model else [False] * n_model
        self.last_kinds = ["initial"] * n_design + [
            "initial" if swapped else "model" for swapped in swaps
        ]
        self.last_suggest_seconds = timing.total
        self.last_timing = timing
        self.timings.append(timing)
        return proposals

    @contextmanager
    def _effort(self, pending: bool) -> Iterator[None]:
        """Use ``settings.pending_effort`` for this suggest if points are pending.

        Only for one objective: that is where it was measured; the hypervolume acquisition
        already scales its MC samples with the number of objectives.
        """
        effort = self.settings.pending_effort
        if not pending or effort is None or len(self.objectives) > 1:
            yield
            return
        full = self.settings
        restarts, raw, mc = effort
        self.settings = replace(  # never more than the full effort (tests shrink it)
            full,
            num_restarts=min(restarts, full.num_restarts),
            raw_samples=min(raw, full.raw_samples),
            mc_samples=min(mc, full.mc_samples),
        )
        try:
            yield
        finally:
            self.settings = full

    # ------------------------------------------------------------------ data
    @property
    def outcome_names(self) -> list[str]:
        """Outputs the model needs, in ``train_Y`` column order: objectives, then constraints."""
        return [o.name for o in self.objectives] + [c.name for c in self.outcome_constraints]

    def training_data(self) -> tuple[Tensor, Tensor]:
        """``n x d`` encoded inputs and ``n x (m + c)`` outcomes for the outcome model.

        Columns: the ``m`` objectives signed (maximise ``sign * y``), then the slack of each
        of the ``c`` outcome constraints (``bound - y`` for ``<=``, ``y - bound`` for
        ``>=``: feasible where >= 0), so that every column reads "larger is better".
        Usable observations with their values; with ``learn_failures``, failed trials at the
        worst value seen in every column (abandoned ones never: a stop says nothing about
        the point).
        Non-finite outputs never reach a model; values far outside the others and of
        sentinel magnitude (an overrange code such as 9.9e37) reach it clipped, and a column
        of small values (currents in amps) scaled up by a power of two
        (:meth:`_model_outcomes`).
        Inputs outside the space (a readback past a bound, prior data measured before the
        space was narrowed) stay where they were measured, outside the unit cube the model
        normalises to: clamped onto the bounds, a reading at 12 of a parameter now bounded
        at 5 was taken for one at 5 (found in review).
        """
        names = self.outcome_names
        rows = [i for i, o in enumerate(self.observations) if o.usable_for(names)]
        usable = [self.observations[i] for i in rows]
        X = self.space.encode([o.parameters for o in usable])
        Y, scale = self._model_outcomes(rows)
        Y = Y * scale
        failed = [o for o in self.observations if o.outcome == "failed"]
        if self.settings.learn_failures and failed and len(usable) > 0:
            # A failed point enters the objective model at the worst value measured so far:
            # the feasibility model alone leaves the objective GP predicting large gains in
            # a region that never returns a number, and late in a run a few percent chance of
            # success there still wins the acquisition (benchmarks/failure_region.py: 12.5 %
            # of proposals in the failing region without this, 4 % with it).
            Xf = self.space.encode([o.parameters for o in failed])
            Yf = Y.min(dim=0).values.expand(len(failed), -1)
            return torch.cat([X, Xf]), torch.cat([Y, Yf])
        return X, Y

    def _model_outcomes(self, rows: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The rows of ``train_Y`` (see :meth:`training_data`) of the usable observations
        ``rows`` in output units, with outlying values clipped onto the nearest of the others
        by :func:`_clip_outliers`, and the scale of each column for the model.

        For the model only: the observations (and the store) keep what was measured. Each
        observation that holds an outlying value is reported once per planner, as a warning
        naming the value and the point: the user should know that a reading looks like an
        overrange code or a sentinel, but not once per suggest.

        The scale is 1, except for a column whose values span less than ``_SMALL_RANGE``: a
        power of two that brings the span into [1, 2). The GP itself is blind to the scale
        (standardised, see ``_MIN_STDV_RELATIVE``), but the acquisition works in the model's
        units, and BoTorch's smoothing constants are absolute (Log-EI's ``tau_relu`` 1e-6 on
        an improvement, the constraint indicator's ``eta`` 1e-3 on a slack): with the GP
        standardising it, Branin in units of 1e-12 still reached a regret of 3.2 and 9.1
        after 16 trials (seeds 2, 3) where Branin itself reached 0.69 and 0.15; scaled, the
        regrets are Branin's. A power of two leaves every standardised value bit for bit as
        it was.
        """
        names = self.outcome_names
        Y = torch.tensor(
            [self._outcome_row(self.observations[i].outputs) for i in rows], dtype=torch.float64
        ).reshape(len(rows), len(names))
        Y, moved = _clip_outliers(Y, self.settings.noise_floor)
        for r in moved.any(dim=-1).nonzero()[:, 0].tolist():
            if rows[r] in self._outliers_reported:
                continue
            self._outliers_reported.add(rows[r])
            o = self.observations[rows[r]]
            outputs = {names[j] for j in moved[r].nonzero()[:, 0].tolist()}
            values = [f"{n} = {o.outputs[n]:.6g}" for n in dict.fromkeys(names) if n in outputs]
            point = [
                f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v!r}"
                for k, v in o.parameters.items()
            ]
            logger.warning(
                "%s at %s is far outside the other values (an overrange code or a sentinel?); "
                "the model sees it clipped to the nearest of them (the stored value is unchanged)",
                ", ".join(values),
                ", ".join(point),
            )
        return Y, _column_scales(Y)

    def _outcome_row(self, outputs: dict[str, float]) -> list[float]:
        """One row of ``train_Y`` (see :meth:`training_data`) from a trial's outputs."""
        return [o.sign * outputs[o.name] for o in self.objectives] + [
            c.slack(outputs[c.name]) for c in self.outcome_constraints
        ]

    def hypervolume_reference(self) -> Tensor:
        """The signed ``m`` reference point of the hypervolume acquisition.

        Each objective's ``reference_point`` where given, otherwise inferred from the usable
        observations (from the feasible ones once there are any) by
        :func:`planners._pareto.front_reference_point`: the worst value on the Pareto front
        minus 10 % of the front's range (BoTorch's rule; the campaign's reported hypervolume
        uses :func:`planners._pareto.reference_point`, which does not move with the front).
        The values are the model's (outliers clipped, see :meth:`_model_outcomes`): a
        sentinel on the front would otherwise put the reference where no other trial can
        improve the hypervolume. In the model's units too (each column's scale).
        """
        names = self.outcome_names
        rows = [i for i, o in enumerate(self.observations) if o.usable_for(names)]
        m = len(self.objectives)
        signs = np.array([o.sign for o in self.objectives])
        Y, scale = self._model_outcomes(rows)
        outputs = Y[:, :m].numpy() * signs  # signed back to output units
        feasible = [
            all(c.satisfied(self.observations[i].outputs) for c in self.outcome_constraints)
            for i in rows
        ]
        ref = front_reference_point(self.objectives, outputs, feasible)
        return torch.tensor(ref * signs, dtype=torch.float64) * scale[:m]

    def feasibility_data(self) -> tuple[Tensor, Tensor] | None:
        """Encoded inputs and success labels (+1 usable, -1 failed), or ``None`` if not needed.

        ``None`` when ``learn_failures`` is off or no trial has failed yet (a feasibility model
        fitted on successes only would say nothing). Abandoned trials are left out: an
        interrupted trial says nothing about its point. So are completed trials whose outputs
        are unusable (NaN): the runner reports those as failed; a planner used directly sees
        an ambiguous record and ignores it.
        """
        if not self.settings.learn_failures:
            return None
        names = self.outcome_names
        rows = [
            (o, 1.0 if o.usable_for(names) else -1.0)
            for o in self.observations
            if o.outcome == "failed" or o.usable_for(names)
        ]
        if not any(label < 0 for _, label in rows):
            return None
        X = self.space.encode([o.parameters for o, _ in rows])  # as measured (training_data)
        labels = torch.tensor([[label] for _, label in rows], dtype=torch.float64)
        return X, labels

    # ------------------------------------------------------------------ model
    def fit_feasibility(self) -> Model | None:
        """The feasibility GP (``None`` without failures), refitted only on new observations.

        The same GP as the objective's (kernel, priors, noise floor, input transform) on the
        +-1 success labels; the ``Standardize`` outcome transform centres them, and the
        learned constant mean makes regions far from every trial as feasible as the campaign
        so far. Warm-started from the previous feasibility fit like :meth:`fit`.
        """
        if self._feasibility is not None and self._feasibility.n_ingested == len(self.observations):
            return self._feasibility.model
        data = self.feasibility_data()
        if data is None:
            self._feasibility = None
            return None
        train_X, labels = data
        previous = self._feasibility.model if self._feasibility is not None else None
        start = previous if self.settings.warm_start else None
        with torch.random.fork_rng():
            torch.manual_seed(derive_seed(self.seed, len(self.observations), 11))
            model, _ = self._fit_once(train_X, labels, start, objective=False)
        self._feasibility = _Fitted(model, train_X, labels, len(self.observations))
        return model

    def fit(self) -> Model:
        """The GP on all usable observations, refitted only when observations were added."""
        if self._fitted is not None and self._fitted.n_ingested == len(self.observations):
            return self._fitted.model
        train_X, train_Y = self.training_data()
        self._say_constant()
        # Seeded by the data size only (not by pending points), so a cached model and a
        # freshly fitted one are identical: fit_gpytorch_mll draws random restarts from the
        # priors when a fit fails.
        previous = self._fitted.model if self._fitted is not None else None
        warm = self.settings.warm_start and previous is not None
        every = self.settings.cold_refit_every
        past, k = self.settings.refit_past, self.settings.refit_every
        n_new, n_old = len(self.observations), self._fitted.n_ingested if self._fitted else 0
        refit = n_new // k != n_old // k
        if warm and previous is not None and past is not None and n_new > past and not refit:
            # Past ``refit_past`` observations, a fit (5-11 s warm at 2000 points) moves the
            # hyperparameters little: between refits the GP keeps them, conditioned on the
            # new data only.
            model = self._build_model(train_X, train_Y)
            _copy_hyperparameters(previous, model)
            model.eval()
            self._fitted = _Fitted(model, train_X, train_Y, n_new)
            return model
        with torch.random.fork_rng():
            torch.manual_seed(derive_seed(self.seed, len(self.observations), 7))
            model, score = self._fit_once(train_X, train_Y, previous if warm else None)
            n_obs = len(self.observations)
            n_before = self._fitted.n_ingested if self._fitted is not None else 0
            if (
                warm
                and every
                and n_obs // every > n_before // every
                and n_obs <= self.settings.cold_refit_max_n
            ):
                # A warm-started chain can stay in a poor local optimum of the likelihood
                # (e.g. "everything is noise" after a few unlucky early points); a cold fit
                # now and then lets the chain jump out. Keep whichever explains the data better.
                # "Crossed a multiple of every", not "is a multiple": with several slots the
                # outcomes arrive in twos and threes, and n_obs % every == 0 skipped most of
                # the cold fits.
                cold, cold_score = self._fit_once(train_X, train_Y, None)
                if cold_score > score:
                    model = cold
        self._fitted = _Fitted(model, train_X, train_Y, len(self.observations))
        return model

    def _say_constant(self) -> None:
        """Warn once per objective that every measured value of it is the same, from the
        initial design's size on: the model then sees no difference between points, and a
        stuck reading (a detector unplugged, a function returning a default) looks like a
        flat response (found in review: no word of it)."""
        names = self.outcome_names
        usable = [o for o in self.observations if o.usable_for(names)]
        if len(usable) < max(self.n_initial, 3):
            return
        for name in (o.name for o in self.objectives):  # a constrained output may be flat
            first = usable[0].outputs[name]
            if name in self._told_constant or any(o.outputs[name] != first for o in usable):
                continue
            self._told_constant.add(name)
            logger.warning(
                "%s has been %g in all %d trials measured: the model cannot tell points apart "
                "by it; check that the instrument measures it (a constant reading can be a "
                "stuck detector or a default value)",
                name,
                first,
                len(usable),
            )

    def _fit_once(
        self, train_X: Tensor, train_Y: Tensor, start: Model | None, *, objective: bool = True
    ) -> tuple[Model, float]:
        """A GP fitted from ``start``'s hyperparameters (or the priors'), and its log posterior
        (``objective``: of the measured outputs, not the feasibility labels)."""
        model = self._build_model(train_X, train_Y, objective=objective)
        if start is not None:
            _copy_hyperparameters(start, model)
        mll: MarginalLogLikelihood
        if isinstance(model, ModelListGP):
            # fit_gpytorch_mll fits each output's GP on its own with these options.
            mll = SumMarginalLogLikelihood(model.likelihood, model)
        else:
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
        options: dict[str, Any] = {}
        if self.settings.fit_maxiter is not None:
            options["maxiter"] = self.settings.fit_maxiter
        if self.settings.fit_ftol is not None:
            options["ftol"] = self.settings.fit_ftol
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": options})
            score = 0.0
            for gp in _outputs(model):
                gp_mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
                gp_mll.train()
                with torch.no_grad():
                    output = gp(*gp.train_inputs)  # type: ignore[misc]
                    score += float(gp_mll(output, gp.train_targets).sum())  # type: ignore[arg-type]
                gp_mll.eval()
        _log_warnings(caught, "GP fit")
        return model, score

    def _build_model(self, train_X: Tensor, train_Y: Tensor, *, objective: bool = True) -> Model:
        """One GP per column of ``train_Y``; several in a ``ModelListGP``.

        Independent GPs (own lengthscales, scale and noise per output) in a list rather than
        one batched multi-output ``SingleTaskGP``: BoTorch fits them one after another in
        about the time of a batched fit, and sampling a batched model's posterior inside
        the ``ModelListGP`` that joins the feasibility model goes through linear_operator
        paths that raise torch deprecation warnings.
        """
        if train_Y.shape[-1] > 1:
            gps = [
                self._build_model(train_X, train_Y[:, j : j + 1]) for j in range(train_Y.shape[-1])
            ]
            return ModelListGP(*gps)  # type: ignore[arg-type]
        d = self.space.dim
        likelihood = self._likelihood()
        outcome_transform = Standardize(m=1, min_stdv=_min_stdv(train_Y))
        input_transform: InputTransform
        if self._cat_dims:
            # Choice columns hold category indices; the GP sees them one-hot (see
            # planners/_transforms.py for why not MixedSingleTaskGP).
            one_hot = OneHotCategories(d, {i: len(v) for i, v in self._cat_dims.items()})
            input_transform, model_dim = one_hot, one_hot.transformed_dim
        else:
            # Columns are already in [0, 1]; Normalize with the fixed space bounds is then an
            # identity that tells BoTorch the inputs are scaled (no InputDataWarning) and
            # stays correct should the encoding ever change.
            input_transform, model_dim = Normalize(d, bounds=self._bounds), d
        return SingleTaskGP(
            train_X,
            train_Y,
            likelihood=likelihood,
            covar_module=self._kernel(model_dim, None, torch.Size()),
            mean_module=self._prior_mean() if objective else None,
            input_transform=input_transform,
            outcome_transform=outcome_transform,
        )

    def _prior_mean(self) -> Mean | None:
        """The objective GP's prior mean (the campaign's ``planner.prior_mean``, else
        ``BoTorchSettings.prior_mean``); ``None``: the constant mean ``SingleTaskGP`` makes.

        The quadratic mean only where :func:`~planners._config.quadratic_mean_applies`. Not
        the feasibility GP either (``objective=False`` in :meth:`_build_model`): its
        constant mean makes regions far from every trial as feasible as the campaign so far.
        """
        chosen: PriorMean = self.config.prior_mean or self.settings.prior_mean
        if chosen != "quadratic" or not quadratic_mean_applies(
            self.space, self.objectives, self.outcome_constraints
        ):
            return None
        return QuadraticMean()

    def _kernel(
        self, ard_num_dims: int, active_dims: Sequence[int] | None, batch_shape: torch.Size
    ) -> Kernel:
        kind = self.settings.kernel
        if kind in ("rbf", "matern"):
            return get_covar_module_with_dim_scaled_prior(
                ard_num_dims=ard_num_dims,
                batch_shape=batch_shape,
                use_rbf_kernel=kind == "rbf",
                active_dims=active_dims,
            )
        # EDBO/BayBE: low-dimensional moments up to 8 inputs, high-dimensional from 75,
        # linear in between. Long lengthscales in high dimensions avoid overfitting.
        dims = (8, 75)
        ls_prior = GammaPrior(
            float(np.interp(ard_num_dims, dims, [1.2, 2.5])),
            float(np.interp(ard_num_dims, dims, [1.1, 0.55])),
        )
        os_prior = GammaPrior(
            float(np.interp(ard_num_dims, dims, [5.0, 3.5])),
            float(np.interp(ard_num_dims, dims, [0.5, 0.15])),
        )
        base = MaternKernel(
            nu=2.5,
            ard_num_dims=ard_num_dims,
            batch_shape=batch_shape,
            active_dims=active_dims,
            lengthscale_prior=ls_prior,
        )
        base.lengthscale = float(np.interp(ard_num_dims, dims, [0.2, 6.0]))
        kernel = ScaleKernel(base, batch_shape=batch_shape, outputscale_prior=os_prior)
        kernel.outputscale = float(np.interp(ard_num_dims, dims, [8.0, 15.0]))
        return kernel

    def _likelihood(self) -> Likelihood:
        floor = self.settings.noise_floor
        prior = self.settings.noise_prior
        if len(self.objectives) > 1:
            prior = self.settings.moo_noise_prior
        if prior == "lognormal":
            likelihood = get_gaussian_likelihood_with_lognormal_prior()
            likelihood.noise_covar.register_constraint(
                "raw_noise", GreaterThan(floor, transform=None, initial_value=1e-2)
            )
            likelihood.noise = 1e-2
            return likelihood
        concentration, rate = (1.05, 0.5) if prior == "gamma" else (1.1, 0.05)
        likelihood = GaussianLikelihood(
            noise_prior=GammaPrior(concentration, rate),
            noise_constraint=GreaterThan(floor, transform=None, initial_value=0.1),
        )
        likelihood.noise = 0.1
        return likelihood

    # ------------------------------------------------------------------ acquisition
    def _acquisition(
        self,
        model: Model,
        train_X: Tensor,
        X_pending: Tensor | None,
        feasibility: Model | None = None,
        exploit: bool = False,
    ) -> Any:
        """The campaign's acquisition (or ``qSimpleRegret`` when ``exploit``).

        The outcome model's outputs are the ``m`` signed objectives, then the ``c``
        constraint slacks (see :meth:`training_data`); with a ``feasibility`` model the
        acquisition runs on ``ModelListGP([model, feasibility])`` and the success score is
        the last output. Every outcome constraint ("slack >= 0") and the success constraint
        ("score > margin") become BoTorch constraint callables (feasible where <= 0), which
        weight each MC sample by its smoothed feasibility indicator: the acquisition is
        feasibility-weighted, and the incumbent (qLogNEI/qLogNEHVI baseline, qLogEI
        ``best_f``) counts feasible points only. The log-EI family and qLogNEHVI take
        ``constraints=`` directly; ``qUpperConfidenceBound`` and ``qSimpleRegret`` get them
        through a ``ConstrainedMCObjective`` that gives infeasible samples a value below
        anything the outcome model considers plausible. Until some trial satisfies every
        outcome constraint, the acquisition is the probability of feasibility alone.

        With several objectives the acquisition is qLogNoisyExpectedHypervolumeImprovement
        over the signed reference point of :meth:`hypervolume_reference`; its baseline is
        pruned to points that may be on the front and it caches the baseline's Cholesky
        root where the model allows it (``cache_root`` left to BoTorch's check).
        """
        s = self.settings
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([s.mc_samples]))
        kind = "qSimpleRegret" if exploit else self.config.acquisition
        m = len(self.objectives)
        constraints: list[Any] = [
            partial(_slack_constraint, column=m + j) for j in range(len(self.outcome_constraints))
        ]
        acq_model: Model = model
        if feasibility is not None:
            acq_model = ModelListGP(*_outputs(model), feasibility)  # type: ignore[arg-type]
            constraints.append(_success_constraint)
        extra_outputs = bool(constraints)

        if self.outcome_constraints and not any(
            o.usable_for(self.outcome_names)
            and all(c.satisfied(o.outputs) for c in self.outcome_constraints)
            for o in self.observations
        ):
            # Nothing measured satisfies the outcome constraints yet: there is no feasible
            # incumbent to improve on, so look for the feasible region first (BoTorch's advice).
            return qLogProbabilityOfFeasibility(
                acq_model, constraints=constraints, sampler=sampler, X_pending=X_pending
            )
        if m > 1:
            # qLogNEHVI partitions the baseline's front once per MC sample, and the boxes
            # multiply with each objective: halve the samples per objective beyond two
            # (4 objectives, 20 trials: ~20 s of CPU per suggest at 128 samples, ~6 s at 32).
            # DTLZ2 (3 objectives) gains nothing from 128: median hypervolume 0.36 vs 0.39.
            n_mc = max(16, s.mc_samples // 2 ** (m - 2))
            ref_point = self.hypervolume_reference()
            hv_sampler = SobolQMCNormalSampler(sample_shape=torch.Size([n_mc]))
            if train_X.shape[0] > s.hv_exact_max_front:
                points = train_X if X_pending is None else torch.cat([train_X, X_pending])
                front = _mean_front(acq_model, points, ref_point, constraints)
                if front.shape[0] > s.hv_exact_max_front:
                    return self._front_ehvi(acq_model, front, ref_point, hv_sampler, constraints)
            return qLogNoisyExpectedHypervolumeImprovement(
                acq_model,
                ref_point=ref_point,
                X_baseline=train_X,
                sampler=hv_sampler,
                objective=(
                    IdentityMCMultiOutputObjective(outcomes=list(range(m)))
                    if extra_outputs
                    else None
                ),
                constraints=constraints or None,
                X_pending=X_pending,
                prune_baseline=True,
            )

        objective: Any = GenericMCObjective(_objective_column) if extra_outputs else None
        if extra_outputs and kind not in (
            "qLogNoisyExpectedImprovement",
            "qLogExpectedImprovement",
        ):
            with torch.no_grad():
                cost = get_infeasible_cost(train_X, model, _objective_column)
            objective = ConstrainedMCObjective(_objective_column, constraints, infeasible_cost=cost)
        if kind == "qSimpleRegret":
            return qSimpleRegret(
                acq_model, sampler=sampler, objective=objective, X_pending=X_pending
            )
        if kind == "qLogNoisyExpectedImprovement":
            # The incumbent is integrated over the model at the observed points, so noisy
            # observations do not set an over-optimistic best_f.
            return qLogNoisyExpectedImprovement(
                acq_model,
                X_baseline=train_X,
                sampler=sampler,
                objective=objective,
                X_pending=X_pending,
                prune_baseline=True,
                constraints=constraints or None,
            )
        if kind == "qLogExpectedImprovement":
            return qLogExpectedImprovement(
                acq_model,
                best_f=self._best_feasible_mean(model, train_X),
                sampler=sampler,
                objective=objective,
                X_pending=X_pending,
                constraints=constraints or None,
            )
        return qUpperConfidenceBound(
            acq_model, beta=s.ucb_beta, sampler=sampler, objective=objective, X_pending=X_pending
        )

    def _front_ehvi(
        self,
        model: Model,
        front: Tensor,
        ref_point: Tensor,
        sampler: SobolQMCNormalSampler,
        constraints: list[Any],
    ) -> qLogExpectedHypervolumeImprovement:
        """qLogEHVI over one partitioning of ``front`` (:func:`_mean_front`): the
        acquisition for a front too large for qLogNEHVI (``hv_exact_max_front``).

        qLogNEHVI partitions the front under each of its MC samples and scores every
        candidate against every box of every partitioning; the boxes grow with the front
        (3 objectives: ~2 per front point), so a suggest took 17 s and 2.3 GB at 150 trials
        (82 points on the front), 40-50 s and 4.1 GB at 300, and over 9 GB at 600; 4
        objectives, 100 trials: 33-49 s and 3.6 GB. Here the front is partitioned once, and
        the optimiser scores its raw samples in chunks (:func:`_optimize_box`), which bounds
        the memory. With that many trials the mean on the front is pinned down, so
        integrating over its noise (what qLogNEHVI adds) changes little.
        """
        m = ref_point.shape[0]
        return qLogExpectedHypervolumeImprovement(
            model,
            ref_point=ref_point,
            # BoTorch's hint names the slower NondominatedPartitioning; its own
            # input constructors pass this one
            partitioning=FastNondominatedPartitioning(ref_point=ref_point, Y=front),  # type: ignore[arg-type]
            sampler=sampler,
            objective=IdentityMCMultiOutputObjective(outcomes=list(range(m))),
            constraints=constraints or None,
        )

    def model_estimates(self) -> ModelEstimates | None:
        """The model's estimate of the objective's true value at every usable measured
        point, and the best of them; ``None`` with several objectives (a front has no one
        best) or before two usable observations.

        Under measurement noise the best *reading* is the luckiest one, not the best point:
        where the top points differ by less than the noise, the trial that read best is
        mostly the one whose noise was largest (the winner's curse), and its reading
        overstates it. The posterior mean weighs every reading of the point and of its
        neighbours: it says how much of a reading to believe, and its best is a candidate to
        repeat (Ax's "best point by model predictions" is that rule; qLogNEI's ``best_f``
        here is its value). Without noise the two agree.
        """
        if len(self.objectives) != 1:
            return None
        rows = [i for i, o in enumerate(self.observations) if o.usable_for(self.outcome_names)]
        # Measured readings only, and none that status leaves out of best (an overrange code,
        # clipped for the planner onto the best value, made a flat, noiseless plateau there
        # and was then rated best; found in review). Nor the failed points the planner learns
        # at the worst value (``learn_failures``): a transient fault in a good region made
        # the fitted noise 0.6 where it was 0.009 (found in review). So a model of its own,
        # fitted on these rows, not the planner's.
        name = self.objectives[0].name
        far = outlying([self.observations[i].outputs[name] for i in rows])
        rows = [i for i, flagged in zip(rows, far, strict=True) if not flagged]
        if len(rows) < 2:
            return None
        X = self.space.encode([self.observations[i].parameters for i in rows])
        Y, scales = self._model_outcomes(rows)
        with torch_threads(self.settings.torch_threads), torch.random.fork_rng():
            torch.manual_seed(derive_seed(self.seed, len(rows), 13))
            model, _ = self._fit_once(X, Y * scales, None)
            with torch.no_grad():
                posterior = model.posterior(X)
                mean, variance = posterior.mean, posterior.variance  # type: ignore[attr-defined]
        feasible = (mean[..., 1:] >= 0).all(dim=-1)
        objective = torch.where(feasible, mean[..., 0], -math.inf)
        gp: Any = _outputs(model)[0]  # a SingleTaskGP: Gaussian likelihood, Standardize
        scale = float(scales[0])
        noise = float(gp.likelihood.noise.detach().max())
        stdv = float(gp.outcome_transform.stdvs.detach().reshape(-1)[0])
        sign = self.objectives[0].sign
        return ModelEstimates(
            mean={i: sign * float(mean[k, 0]) / scale for k, i in enumerate(rows)},
            sd={i: math.sqrt(max(float(variance[k, 0]), 0.0)) / scale for k, i in enumerate(rows)},
            best=rows[int(objective.argmax())] if bool(feasible.any()) else None,
            noise_sd=math.sqrt(noise) * stdv / scale,
        )

    def _best_feasible_mean(self, model: Model, train_X: Tensor) -> Tensor:
        """qLogEI's ``best_f``: the best posterior mean among observed points that the model
        considers feasible (all constraint slacks' means >= 0), not the best noisy reading.

        With no point feasible yet, the lowest mean: every feasible sample then improves, and
        the constraint weights steer the search towards feasibility first.
        """
        with torch.no_grad():
            mean = model.posterior(train_X).mean  # type: ignore[attr-defined]
        objective = mean[..., 0]
        slacks = mean[..., len(self.objectives) :]
        feasible = (slacks >= 0).all(dim=-1)
        if not bool(feasible.any()):
            return objective.min()
        return objective[feasible].max()

    def _optimize(self, acqf: AcquisitionFunction, X_pending: Tensor | None) -> Tensor:
        """The ``1 x d`` encoded candidate maximising ``acqf``; it decodes to a member of the space.

        One point per call: a batch is chosen point by point in :meth:`_suggest_from_model`,
        each with an acquisition built on everything pending so far. (BoTorch's own
        sequential loops condition on ``acqf.X_pending``, which qLogNEI's default
        incremental mode folds into its baseline and leaves ``None``: from a batch's second
        point on they forgot the caller's pending points.)

        * a candidate table: ``optimize_acqf_discrete`` over the rows not measured or pending
          (``X_pending``);
        * no parameter constraints: ``optimize_acqf`` (all float) or
          ``optimize_acqf_mixed_alternating`` (integer/choice columns on their grids);
        * constraints: :func:`_optimize_constrained`, multi-start SLSQP from feasible starts
          with linear constraints (in the encoded space) as ``inequality_constraints`` and
          the others as ``nonlinear_inequality_constraints``.

        Whatever the path, :meth:`_ensure_feasible` checks every decoded candidate against
        the space and replaces an infeasible one (optimiser tolerance, rounding of a relaxed
        integer) by the best feasible raw sample: a proposal never breaks a rule.
        """
        if self.space.candidates is not None:
            return _optimize_table(self, acqf, X_pending)
        linear, nonlinear = _encoded_constraints(self.space)
        try:
            if linear or nonlinear:
                candidates = _optimize_constrained(
                    self, acqf, linear, nonlinear, avoid=self._known_rows(X_pending)
                )
            else:
                candidates = _optimize_box(self, acqf)
        except CandidateGenerationError as exc:
            logger.info("constrained optimiser found no feasible candidate (%s)", exc)
            candidates = torch.empty(0, self.space.dim, dtype=torch.float64)
        return _ensure_feasible(self, acqf, candidates, 1)

    def _suggest_from_model(
        self, q: int, pending: list[Point], position: int, timing: SuggestTiming
    ) -> list[Point]:
        t0 = time.perf_counter()
        fresh = self._fitted is None or self._fitted.n_ingested != len(self.observations)
        model = self.fit()
        fitted = self._fitted
        if fitted is None:  # pragma: no cover - fit() always sets it
            raise RuntimeError("model fit did not record its data")
        feasibility = self.fit_feasibility()
        timing.fit = time.perf_counter() - t0 if fresh else 0.0
        timing.n_train = fitted.train_X.shape[0]
        if self._feasibility is not None:
            timing.n_failed = int((self._feasibility.train_Y < 0).sum())

        t1 = time.perf_counter()
        X_pending = self.space.encode(pending) if pending else None
        # Repeated inputs (replicates, or a finite space revisited) make the joint posterior
        # over the baseline singular; one copy of each carries the same information.
        X_baseline = torch.unique(fitted.train_X, dim=0)
        # Sampling a multi-output posterior from the cached baseline root builds a sparse
        # interpolation matrix, on which torch warns unless sparse invariant checks are set
        # explicitly; BoTorch/linear_operator build them correctly, so checks stay off.
        with (
            warnings.catch_warnings(record=True) as caught,
            torch.sparse.check_sparse_tensor_invariants(enable=False),
        ):
            warnings.simplefilter("always")
            chosen = self._exploit_point(position, q, model, X_baseline, X_pending, feasibility)
            picked = [] if chosen is None else [chosen]
            if picked:
                report_progress(1, q)
            while len(picked) < q:
                if picked:
                    X_pending = (
                        picked[-1] if X_pending is None else torch.cat([X_pending, picked[-1]])
                    )
                # A batch's later points keep the full effort: with the pending effort
                # (fewer raw and MC samples) a Hartmann6 batch of 8 was no faster and its
                # regret worse on 5 of 6 seeds (median 0.0086 against 0.0023).
                acqf = self._acquisition(model, X_baseline, X_pending, feasibility)
                picked.append(self._optimize(acqf, X_pending))
                report_progress(len(picked), q)
            candidates = torch.cat(picked)
        _log_warnings(caught, "acquisition optimisation")
        timing.optimize = time.perf_counter() - t1

        points = self.space.decode(candidates)
        return self._replace_repeats(points, pending, position, precise=self._precise(model))

    def _exploit_point(
        self,
        position: int,
        q: int,
        model: Model,
        X_baseline: Tensor,
        X_pending: Tensor | None,
        feasibility: Model | None,
    ) -> Tensor | None:
        """The exploit step's ``1 x d`` point if one of positions ``position..position+q-1``
        is an exploit position (see ``BoTorchSettings.exploit_every``), else ``None``.

        The exploit point maximises the posterior mean of one point *without* the pending
        points: with them, ``qSimpleRegret`` scores ``E[max(f(x), f(pending))]``, which
        rewards posterior variance once a pending point sits near the incumbent, and the
        refinement step turns into an exploration step (4 slots: the asynchronous loop
        refined less than the sequential one). If a pending point already is (to 1e-3 of
        each range) the posterior mean's maximiser, e.g. the previous exploit point still
        being measured, measuring it twice would teach nothing: no exploit point then.
        """
        k = self.settings.exploit_every
        if k is None or not any(
            (p - self.n_initial + 1) % k == 0 for p in range(position, position + q)
        ):
            return None
        if not self._exploit_regime(model):
            return None
        acqf = self._acquisition(model, X_baseline, None, feasibility, exploit=True)
        x = self._optimize(acqf, None)
        if X_pending is not None and len(X_pending):
            span = (self._bounds[1] - self._bounds[0]).clamp_min(1e-12)
            gap = ((X_pending - x) / span).abs().amax(dim=-1).min()
            if float(gap) < 1e-3:
                logger.debug("exploit point is already pending; using the acquisition")
                return None
        return x

    def _precise(self, model: Model) -> bool:
        """Whether every modelled output is measured without noise (its fitted noise below
        ``exploit_max_noise``): then measuring a point again returns what it did."""
        noises = [
            float(likelihood.noise.detach().max())
            for m in _outputs(model)
            if (likelihood := getattr(m, "likelihood", None)) is not None
        ]
        return bool(noises) and max(noises) < self.settings.exploit_max_noise

    def _exploit_regime(self, model: Model) -> bool:
        """Whether refining on the posterior mean pays: one objective, precise observations."""
        # Refining one incumbent has no analogue for a Pareto front: never with several
        # objectives.
        if len(self.objectives) > 1:
            return False
        # The objective's GP (output 0): constraint outputs may be noisy where it is not.
        likelihood = getattr(_outputs(model)[0], "likelihood", None)
        noise = float(likelihood.noise.detach().max()) if likelihood is not None else float("inf")
        logger.debug("exploit step? fitted noise variance %.3g", noise)
        return noise < self.settings.exploit_max_noise

    def _design_done(self) -> int:
        """How many of the initial design's ``n_initial`` points the usable observations
        stand for: their distinct points. Replicates of one point (a plate's control in
        triplicate, prior data measured twice) teach the model no more of the space than
        one does, and took the place of design points (found in review: two Sobol points
        left of five). The design is complete (``n_initial``) once the distinct points
        cover a finite space (three choices: three points; its feasible points under
        constraints), or the usable observations are twice ``n_initial``: counted as
        distinct only, a three-choice campaign never left its design (found in review)."""
        usable = [o for o in self.observations if o.usable_for(self.outcome_names)]
        if usable:  # one encoding of them all: this runs at every suggest
            inside = self._in_box([o.parameters for o in usable])
            usable = [o for o, ok in zip(usable, inside, strict=True) if ok]
        distinct = len({self._observed_key(o.parameters) for o in usable})
        if (
            distinct >= self.n_initial
            or len(usable) >= 2 * self.n_initial
            or distinct >= self._feasible_points
        ):
            return max(distinct, self.n_initial)
        return distinct

    def _in_box(self, points: Sequence[Point]) -> list[bool]:
        """Whether each observed point lies in the space's box, to 1 % of each range (a
        readback a hair past a bound is the design point that was proposed). Prior data
        measured outside a narrowed space teaches the model but is no design point: counted,
        rows all outside the box skipped the whole design, and the model extrapolated over a
        region with no data (found in review)."""
        x = self.space.encode(points)
        lo, hi = self._bounds  # the encoded box (a choice's column counts its values)
        slack = _BOX_SLACK * (hi - lo)
        return [bool(ok) for ok in ((x >= lo - slack) & (x <= hi + slack)).all(dim=-1)]

    @cached_property
    def _feasible_points(self) -> float:
        """The space's feasible points (``inf`` with a float parameter): enumerated once,
        not at every suggest of the design (up to 4096 points checked each time)."""
        return feasible_cardinality(self.space)

    def _observed_key(self, point: Point) -> Hashable:
        """:func:`point_key` of an observed point, which may lie outside the space (a
        readback past a bound, prior data measured before the space was narrowed); such a
        point is its values as read (found in CI: it broke every suggest after it)."""
        try:
            return point_key(self.space, point)
        except ValueError:  # planners.InvalidPoint
            return tuple(repr(point.get(name)) for name in self.space.names)

    def _pending_design(self, pending: Sequence[Point], position: int) -> int:
        """How many ``pending`` points are initial-design points: a point of the design at a
        position before ``position`` (every one proposed so far was drawn there).

        The design is complete once ``n_initial`` distinct points are usable; a pending
        design point will count when it ends, a pending model point never counts. Counting
        every pending point left a design point that failed or was withdrawn (``tell
        --abandon``) while a model point was pending unreplaced, the design one point short
        (found in review).
        The planner is told pending points, not their kinds (it is rebuilt for each ask/tell
        command), so a design point is recognised as one of the design's own points. A
        finite space's design point swapped for a free one (``PositionalDesign.points``) is
        not recognised, and the design may then make one point more.
        """
        if not pending:
            return 0
        try:
            design = self.design.points(0, position)
        except ValueError:  # a constrained design that ended before: as if all were design
            return len(pending)
        keys = {point_key(self.space, p) for p in design}
        return sum(point_key(self.space, p) in keys for p in pending)

    def _known_rows(self, X_pending: Tensor | None) -> Tensor | None:
        """On a finite space (integer and choice columns only), the encoded points measured
        or pending, for the constrained optimiser to pass over: it proposed them again, and
        each came back as a random design point (three of 30 trials on "at most 3 of 25
        additives"; found in review), where the best unmeasured point scores next. ``None``
        on a space with floats (a repeat there is a replicate, see ``_replace_repeats``)."""
        if not math.isfinite(self.space.cardinality()):
            return None
        measured = self._measured_points()
        rows = [self.space.encode(measured)] if measured else []
        if X_pending is not None:
            rows.append(X_pending.reshape(-1, self.space.dim))
        return torch.cat(rows) if rows else None

    def _measured_points(self) -> list[Point]:
        """The points of the observations that measured something, for the finite-space
        repeat guard (``self.repeats``): an abandoned trial was interrupted before it
        measured anything, so its point must be proposed again before the space counts as
        exhausted (as in the Sobol and random designs and Ax's fill-ins)."""
        return [o.parameters for o in self.observations if o.outcome != "abandoned"]

    def _replace_repeats(
        self, points: list[Point], pending: list[Point], position: int, *, precise: bool = False
    ) -> list[Point]:
        """Swap any proposal that repeats a pending (or earlier batch) point for a design point
        (``near_duplicate``: floats to 1e-6 of their range, the rule Ax's proposals follow
        too); on a finite space (int and choice parameters, or a candidate table), any that
        equals a measured one too.

        The acquisition value at a pending point is already near zero, so that only triggers
        on small finite spaces or a degenerate model (e.g. constant outcomes). A measured
        point is another matter: once the optimum of a finite space has been measured,
        qLogNEI can score it above every unmeasured point, and the model proposed it again
        and again (a 5 x 5 grid: one point five times in a row, 9 of 25 points ever
        visited). Until every point has been measured, a new one teaches more. (A candidate
        table follows the same rule in :func:`_optimize_table` already.)

        With ``precise`` outputs (no fitted noise), a proposal that repeats a measured point
        of a space with floats (``near_duplicate``) is swapped too: it would return the value
        already known. Where nothing else scores (a choice of 200 categories, 4 of them seen;
        the incumbent on a bound), the model proposed the incumbent 15 times in 20 trials
        (found in review). Under noise a repeat is a replicate, which qLogNEI may rightly
        want, and stays.
        """
        measured = self._measured_points()
        # a finite space avoids measured points by the repeat guard's rule (until exhausted)
        floats = not math.isfinite(self.space.cardinality())
        avoid = self.repeats.avoid(pending, measured, len(points))
        taken = {point_key(self.space, p) for p in avoid}
        out: list[Point] = []
        self._design_swaps = []
        for i, point in enumerate(points):
            held = [*pending, *out]
            swapped = False
            if not self.space.contains(point):  # last guard: _optimize already checked
                logger.warning("model proposal %s is not in the space; using a design point", point)
                point, swapped = (
                    self.design.points(position + i, 1, avoid + out, pending=held)[0],
                    True,
                )
            if (
                point_key(self.space, point) in taken
                or near_duplicate(self.space, point, held)
                or (floats and precise and near_duplicate(self.space, point, measured))
            ):
                logger.info("model proposal repeats a pending or measured point; a design point")
                point, swapped = (
                    self.design.points(position + i, 1, avoid + out, pending=held)[0],
                    True,
                )
            taken.add(point_key(self.space, point))
            out.append(point)
            self._design_swaps.append(swapped)  # labelled "initial", not "model" (last_kinds)
        return out


# A sample counts as a success only above this score (labels are +1/-1): a point the
# feasibility model is unsure about (posterior mean near 0, or a wide posterior between
# failures) is discounted more than a 50/50 classifier would, because the objective GP, which
# never sees failures, keeps promising large improvements inside a failing region and even a
# few percent of success probability there would outweigh the small improvements left
# elsewhere late in a campaign (``benchmarks/failure_region.py``).
_SUCCESS_MARGIN = 0.5


def _out_of_memory(exc: BaseException) -> bool:
    """Whether torch could not allocate (its CPU allocator says so in a RuntimeError)."""
    said = str(exc).lower()
    return "can't allocate memory" in said or "out of memory" in said


def _objective_column(Z: Tensor, X: Tensor | None = None) -> Tensor:
    """The (single) objective's MC samples: output 0 of the outcome model."""
    return Z[..., 0]


def _success_constraint(Z: Tensor) -> Tensor:
    """Constraint "success score > margin" in BoTorch's form (feasible where <= 0).

    The feasibility model is always the last output of the acquisition's model.
    """
    return _SUCCESS_MARGIN - Z[..., -1]


def _outputs(model: Model) -> list[Model]:
    """The single-output GPs of an outcome model (itself, or a ``ModelListGP``'s members)."""
    return list(model.models) if isinstance(model, ModelListGP) else [model]  # type: ignore[arg-type]


def _mean_front(model: Model, X: Tensor, ref_point: Tensor, constraints: list[Any]) -> Tensor:
    """The signed objectives of the posterior mean at ``X`` that are feasible by the mean
    (every constraint callable <= 0), better than ``ref_point`` and not dominated.

    ``X`` holds the observed and the pending points: a pending point enters the front at
    its mean (a "Kriging believer"), not as joint samples, whose inclusion-exclusion
    doubles qLogEHVI's work per pending point.
    """
    with torch.no_grad():
        mean = model.posterior(X).mean  # type: ignore[attr-defined]
    keep = (mean[:, : ref_point.shape[0]] > ref_point).all(dim=-1)
    for constraint in constraints:
        keep &= constraint(mean) <= 0
    Y = mean[keep][:, : ref_point.shape[0]]
    return Y[is_non_dominated(Y)]


def _slack_constraint(Z: Tensor, column: int) -> Tensor:
    """Outcome constraint "slack >= 0" on output ``column`` (feasible where <= 0)."""
    return -Z[..., column]


def _copy_hyperparameters(source: Model, target: Model) -> None:
    """Start ``target``'s fit where ``source``'s ended (same structure, more data).

    Only trainable parameters are copied: buffers such as the outcome transform's mean and
    scale belong to the new data.
    """
    previous = dict(source.named_parameters())
    with torch.no_grad():
        for name, param in target.named_parameters():
            old = previous.get(name)
            if old is not None and old.shape == param.shape:
                param.copy_(old)


def _column_scales(Y: Tensor) -> Tensor:
    """The model's scale of each column of ``Y`` (``n x k``): see
    :meth:`BoTorchPlanner._model_outcomes`."""
    scales = torch.ones(Y.shape[-1], dtype=torch.float64)
    if not len(Y):
        return scales
    spans = (Y.max(dim=0).values - Y.min(dim=0).values).tolist()
    for j, span in enumerate(spans):
        if 0 < span < _SMALL_RANGE:
            _, exponent = math.frexp(span)  # span = f * 2**exponent, 0.5 <= f < 1
            scales[j] = math.ldexp(1.0, 1 - exponent)
    return scales


def _min_stdv(Y: Tensor) -> float:
    """Standardize's ``min_stdv`` for output column(s) ``Y``: relative to their magnitude
    (see ``_MIN_STDV_RELATIVE``), so that outputs in small units are standardised too."""
    if not Y.numel():
        return _MIN_STDV_ABSOLUTE
    return max(_MIN_STDV_ABSOLUTE, _MIN_STDV_RELATIVE * float(Y.abs().max()))


def _clip_outliers(Y: Tensor, noise_floor: float) -> tuple[Tensor, Tensor]:
    """``Y`` (``n x k``) for the model, with each column's outlying values clipped onto the
    nearest of the others, and the mask of the entries clipped.

    A standardised column is divided by its standard deviation, so one value of 9.9e37 among
    readings of ~100 leaves the others within ~1e-36 of each other: the GP sees a flat
    function and a spike (proposals in corners, repeats), and 1e300 overflows the variance
    (every later fit fails). A value is outlying when it squashes the others below what the
    GP can resolve at all: one value a distance ``G`` from ``n - 1`` others spread over ``R``
    makes the column's std ``~G / sqrt(n)``, and the others' whole range standardises to
    ``R sqrt(n) / G``, under one noise-floor std (``sqrt(noise_floor)``, the smallest noise
    the GP may infer) once ``G / R > sqrt(n / noise_floor)``: about 700 at 5 points, 1700 at
    30, 3200 at 100 with the default floor. Below that the GP still sees every difference
    and nothing is touched, so ordinary data is modelled exactly as measured, bit for bit
    (uniform samples of 5-40 points of 13 BoTorch test functions: gaps of at most ~70
    ranges, except Rosenbrock's steep walls, one sample in 1800; never in the planner runs
    of ``benchmarks/planner_tuning.py``). Such a value is clipped only when it is also of
    sentinel magnitude (at least ``SENTINEL_MAGNITUDE``, 1e30, see
    :mod:`planners._outliers`): a genuine extreme reading (a hit of 40 among titres of 5, a
    beam of 12000 counts after dark counts of 3-6) is what the planner should exploit, and
    clipping it to the background hid it from the model (found in review); the GP then
    sees a flat background and a peak, which it models. A sentinel is clipped to the
    nearest of the ordinary values (classic winsorising), not to just beyond them: on
    Branin maximised with one overrange reading of 9.9e37 at trial 7, clipping to one
    range beyond the best left the planner refining around that point (regret 0.3-2.2
    after 30 trials, seeds 0-5), clipping onto the best matched the clean runs (0.001-0.08
    against 0.0001-0.02). See :func:`planners._outliers.clip_column`, which also clips
    any value above 1e150 in magnitude (its square would overflow the variance).
    """
    moved = torch.zeros(Y.shape, dtype=torch.bool)
    n = Y.shape[0]
    if n < 2:
        return Y, moved
    factor = math.sqrt(n / noise_floor)
    out = Y.clone()
    for j in range(Y.shape[-1]):
        column = Y[:, j].numpy()
        new = clip_column(column, factor)
        changed = new != column
        if changed.any():
            out[:, j] = torch.from_numpy(new)
            moved[:, j] = torch.from_numpy(changed)
    return out, moved


def _narrow_discrete_dims(space: Space) -> dict[int, list[float]]:
    """Grid values of the integer and ordered-choice columns that are searched exactly.

    Wider integer ranges are optimised as continuous columns and snapped to the grid by
    ``Space.decode`` (listing every value of a 10^9-wide range would not fit in memory). The
    width is checked before any grid is listed: ``Space.discrete_dims`` leaves wide ranges
    out as well, and this keeps the planner safe whatever it lists.
    """
    wide = {
        i
        for i, p in enumerate(space.columns)
        if isinstance(p, IntParameter) and p.bounds[1] - p.bounds[0] + 1 > MAX_ENUMERATED_INTS
    }
    return {i: values for i, values in space.discrete_dims.items() if i not in wide}


# OptimizationWarning: L-BFGS-B stopped abnormally (BoTorch then retries or keeps the best
# point found). RuntimeWarning: optimize_acqf's "retrying with new initial conditions" notice
# and linear_operator's NumericalWarning "A not p.d., added jitter ..." (a subclass), which a
# candidate on top of an observed point of a finite space triggers. All are handled by the
# libraries and not actionable by a user of a running campaign. BadInitialCandidatesWarning:
# every raw sample had zero acquisition value (e.g. a nearly exhausted finite space), so
# BoTorch starts from random points instead.
_QUIET_CATEGORIES: tuple[type[Warning], ...] = (
    OptimizationWarning,
    RuntimeWarning,
    BadInitialCandidatesWarning,
)


# BotorchWarning from an outcome-constrained acquisition when, in some MC sample, no
# baseline point is feasible: BoTorch then values infeasible samples at a lower bound of the
# objective, which is what we want; with no feasible *observation* at all the planner already
# maximises the probability of feasibility instead (see ``BoTorchPlanner._acquisition``).
_QUIET_MESSAGES: tuple[str, ...] = ("When all training points are infeasible",)


def _log_warnings(caught: list[warnings.WarningMessage], stage: str) -> None:
    """Turn handled numerical/optimiser hiccups into log records; re-emit anything else.

    Inside a closed loop these recur on every suggest and would drown real problems (or, under
    ``-W error``, abort a campaign); the log keeps them for diagnosis. Other warnings (bad
    inputs, deprecations) keep their category.
    """
    for w in caught:
        if issubclass(w.category, _QUIET_CATEGORIES) or str(w.message).startswith(_QUIET_MESSAGES):
            logger.info("%s: %s: %s", stage, w.category.__name__, w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# ---------------------------------------------------------------------------- constrained search
# Nonlinear constraints reach SLSQP as slack / scale - margin: the scale (a typical |slack|
# over the space) makes constraints in different units equally well conditioned, and the
# margin keeps SLSQP's 1e-8 tolerance on the feasible side of Space.validate.
_NONLINEAR_MARGIN = 1e-7
# Raw points seeded around the best observed points, as a share of the raw samples.
_AROUND_BEST_SHARE = 0.25
_AROUND_BEST_STD = 0.05

LinearConstraint = tuple[Tensor, Tensor, float]
NonlinearConstraint = tuple[Callable[[Tensor], Tensor], bool]


def _encoded_constraints(space: Space) -> tuple[list[LinearConstraint], list[NonlinearConstraint]]:
    """The space's constraints for BoTorch: linear ones in the encoded space, the rest as
    intra-point callables ``f(x) >= 0`` of an encoded point ``x`` (``d``)."""
    linear: list[LinearConstraint] = []
    nonlinear: list[NonlinearConstraint] = []
    if not space.constraints:
        return linear, nonlinear
    U = torch.quasirandom.SobolEngine(space.dim, scramble=True, seed=0).draw(
        256, dtype=torch.float64
    )
    values = space.torch_values(space.from_unit_cube(U))
    for c in space.constraints:
        form = encoded_linear_constraint(c, space.columns)
        if form is not None:
            linear.append(form)
            continue
        if c.is_linear and not c.coefficients:
            continue  # always true (parse_constraint refused the always-false case)
        slack = c.slack_torch(values)
        finite = slack[torch.isfinite(slack)].abs()
        scale = float(finite.median()) if len(finite) and float(finite.median()) > 0 else 1.0
        nonlinear.append((partial(_nonlinear_slack, space, c, scale), True))
    return linear, nonlinear


def _nonlinear_slack(space: Space, constraint: Any, scale: float, x: Tensor) -> Tensor:
    slack = constraint.slack_torch(space.torch_values(x))
    return slack / scale - _NONLINEAR_MARGIN


def _optimize_box(planner: BoTorchPlanner, acqf: AcquisitionFunction) -> Tensor:
    """BoTorch's own optimisers over the unconstrained box (exact mixed search)."""
    s = planner.settings
    options: dict[str, Any] = {}
    if s.batch_limit is not None:
        options["batch_limit"] = s.batch_limit
    if type(acqf) is qLogExpectedHypervolumeImprovement:  # a large front (_front_ehvi)
        options["init_batch_limit"] = s.init_batch_limit
    if not planner._cat_dims and not planner._discrete_dims:
        options |= {"maxiter": s.maxiter, "sample_around_best": s.sample_around_best}
        restarts = s.num_restarts
        if s.float_restarts is not None and len(planner.objectives) == 1:
            restarts = min(restarts, s.float_restarts)
        candidates, _ = optimize_acqf(
            acqf,
            bounds=planner._bounds,
            q=1,
            num_restarts=restarts,
            raw_samples=s.raw_samples,
            options=options,
        )
        return candidates
    options["maxiter_alternating"] = s.maxiter_alternating
    candidates, _ = optimize_acqf_mixed_alternating(
        acqf,
        bounds=planner._bounds,
        discrete_dims=planner._discrete_dims,
        cat_dims=planner._cat_dims,
        q=1,
        num_restarts=s.num_restarts,
        raw_samples=s.raw_samples,
        options=options,
    )
    return candidates


def _optimize_constrained(
    planner: BoTorchPlanner,
    acqf: AcquisitionFunction,
    linear: list[LinearConstraint],
    nonlinear: list[NonlinearConstraint],
    *,
    avoid: Tensor | None = None,
) -> Tensor:
    """Maximise ``acqf`` under parameter constraints: the ``1 x d`` best point found.

    Multi-start SLSQP from feasible starts, with a discrete neighbourhood search for the
    integer/choice columns:

    1. raw samples: a constrained Sobol design (rejection sampling, as the initial design)
       plus perturbations of the best observed points, all feasible, scored by ``acqf``;
    2. the best ``num_restarts`` of them, preferring distinct integer/choice values, start
       SLSQP over the continuous columns under all constraints, with the integer/choice
       columns held fixed (``fixed_features``);
    3. from the best point, up to two rounds of trying each neighbouring integer/ordered
       level and each other category (feasible ones only), re-running SLSQP from an
       improving neighbour.

    Why not BoTorch's own tools: ``optimize_acqf_mixed_alternating`` takes no nonlinear
    constraints (BoTorch 0.18 passes ``nonlinear_inequality_constraints=None`` internally),
    ``optimize_acqf`` needs feasible starts for them (``batch_initial_conditions``), and its
    start generator for linear constraints (hit-and-run polytope sampling) took ~80 % of a
    suggest (1.2 s of 1.4 s CPU on 2-D Branin) where rejection sampling takes milliseconds.
    """
    s = planner.settings
    space = planner.space
    fixed_dims = sorted({*planner._cat_dims, *planner._discrete_dims})
    continuous = [i for i in range(space.dim) if i not in fixed_dims]
    raw = _unknown(_feasible_raw_samples(planner, s.raw_samples), avoid)
    values = _acq_values(acqf, raw)
    order = values.argsort(descending=True)
    best, best_value = raw[order[0]], float(values[order[0]])
    if continuous:
        starts = _pick_starts(raw, order, fixed_dims, s.num_restarts)
        found = _slsqp(planner, acqf, starts, linear, nonlinear, fixed_dims)
        if found is not None and found[1] >= best_value:
            best, best_value = found
    for _round in range(2 if fixed_dims else 0):
        neighbours = _unknown(_neighbours(planner, best), avoid)
        if not len(neighbours):
            break
        nvalues = _acq_values(acqf, neighbours)
        j = int(nvalues.argmax())
        if float(nvalues[j]) <= best_value:
            break
        best, best_value = neighbours[j], float(nvalues[j])
        if continuous:
            found = _slsqp(planner, acqf, best[None], linear, nonlinear, fixed_dims)
            if found is not None and found[1] >= best_value:
                best, best_value = found
    return best.detach()[None]


def _unknown(X: Tensor, known: Tensor | None) -> Tensor:
    """The rows of ``X`` that are not rows of ``known`` (all of them when every one is:
    a finite space exhausted, which ``_replace_repeats`` then handles)."""
    if known is None or not len(known) or not len(X):
        return X
    new = torch.cdist(X, known).amin(dim=-1) > 1e-9
    return X[new] if bool(new.any()) else X


def _slsqp(
    planner: BoTorchPlanner,
    acqf: AcquisitionFunction,
    starts: Tensor,
    linear: list[LinearConstraint],
    nonlinear: list[NonlinearConstraint],
    fixed_dims: list[int],
) -> tuple[Tensor, float] | None:
    """Best feasible SLSQP result from ``starts`` (``k x d``, feasible) with the integer/choice
    columns of each start held fixed, or ``None`` if no run ended feasible."""
    space = planner.space
    if nonlinear:
        # BoTorch refuses starts outside its nonlinear constraints (ours carry a margin, so
        # a start on the boundary of the space's constraints can be one of them).
        with torch.no_grad():
            inside = torch.stack([f(starts) >= 0 for f, _ in nonlinear]).all(dim=0)
        starts = starts[inside]
        if not len(starts):
            return None
    fixed = {i: starts[:, i].clone() for i in fixed_dims}
    one_by_one = bool(nonlinear) or bool(fixed)  # BoTorch: needed for both
    options: dict[str, Any] = {"maxiter": planner.settings.slsqp_maxiter}
    if one_by_one:
        options |= {"batch_limit": 1, "max_optimization_problem_aggregation_size": 1}
    try:
        X, acq = optimize_acqf(
            acqf,
            bounds=planner._bounds,
            q=1,
            num_restarts=len(starts),
            batch_initial_conditions=starts.unsqueeze(-2),
            inequality_constraints=linear or None,
            nonlinear_inequality_constraints=nonlinear or None,
            fixed_features=fixed or None,
            options=options,
            return_best_only=False,
        )
    except CandidateGenerationError:
        return None
    except ValueError as exc:  # e.g. SLSQP given a start BoTorch deems infeasible
        logger.warning("constrained SLSQP run failed (%s); keeping the raw samples", exc)
        return None
    if acq is None:  # pragma: no cover - return_acq_values defaults to True
        return None
    X = X.reshape(-1, space.dim).detach()
    acq = acq.reshape(-1).detach()
    ok = space.feasible(X) & torch.isfinite(acq)
    if not bool(ok.any()):
        return None
    j = int(torch.where(ok, acq, -math.inf).argmax())
    return X[j], float(acq[j])


def _neighbours(planner: BoTorchPlanner, x: Tensor) -> Tensor:
    """Feasible points one step from ``x`` in one integer/ordered column (next level up or
    down) or another value of one categorical column; continuous columns unchanged."""
    rows: list[Tensor] = []
    for i, grid in planner._discrete_dims.items():
        k = min(range(len(grid)), key=lambda j: abs(grid[j] - float(x[i])))
        for j in (k - 1, k + 1):
            if 0 <= j < len(grid):
                y = x.clone()
                y[i] = grid[j]
                rows.append(y)
    for i, values in planner._cat_dims.items():
        for v in values:
            if v != round(float(x[i])):
                y = x.clone()
                y[i] = v
                rows.append(y)
    if not rows:
        return torch.empty(0, x.shape[-1], dtype=x.dtype)
    X = torch.stack(rows)
    return X[planner.space.feasible(X)]


def _pick_starts(raw: Tensor, order: Tensor, fixed_dims: list[int], k: int) -> Tensor:
    """The ``k`` best raw points, at most one per integer/choice combination while there are
    other combinations to try (a start's discrete values are fixed during its SLSQP run)."""
    picked: list[int] = []
    seen: set[tuple[float, ...]] = set()
    for j in order.tolist():
        combo = tuple(raw[j, fixed_dims].tolist())
        if combo not in seen:
            seen.add(combo)
            picked.append(j)
        if len(picked) == k:
            break
    for j in order.tolist():  # fewer combinations than starts: more starts per combination
        if len(picked) == k:
            break
        if j not in picked:
            picked.append(j)
    return raw[picked]


def _acq_values(acqf: AcquisitionFunction, X: Tensor, chunk: int = 256) -> Tensor:
    """Acquisition values of ``n`` single points (``n x d``), in chunks, without gradients."""
    with torch.no_grad():
        parts = [acqf(part.unsqueeze(-2)) for part in X.split(chunk)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=X.dtype)


def _feasible_raw_samples(planner: BoTorchPlanner, n: int) -> Tensor:
    """Up to ``n`` encoded points, all satisfying the constraints, for starts and fallbacks.

    Three quarters from a constrained Sobol design (seeded from torch's generator, which
    ``suggest`` seeds per trial), the rest Gaussian perturbations (std 0.05 of each column's
    range) of the best observed points, snapped to the grids and kept where feasible. A
    narrow feasible region may hold fewer than ``n`` design points in the design's draws
    (``PositionalDesign.leading_feasible_unit_points``); those found are used, since the
    optimiser needs good starts, not a set number of them. A region so narrow that the
    fresh design finds no point at all (this suggest's seed drew none where the campaign's
    own design did) falls back on the feasible points the campaign already knows, see
    :func:`_known_feasible_samples`: a space with measured points always gets a proposal.

    Raises:
        InfeasibleSpaceError: no feasible point drawn and none known (nothing measured).
    """
    space = planner.space
    seed = int(torch.randint(2**31 - 1, (1,)))
    design = PositionalDesign(space, seed, "sobol")
    try:
        if space.constraints:
            X = space.from_unit_cube(design.leading_feasible_unit_points(n))
        else:
            X = space.from_unit_cube(design.unit_points(0, n))
    except InfeasibleSpaceError:
        X = _known_feasible_samples(planner, n)
        if not len(X):
            raise
        logger.info(
            "no feasible raw sample in the constrained design's draws; starting from %d points "
            "around the campaign's feasible points",
            len(X),
        )
    fitted = planner._fitted
    if fitted is not None and len(fitted.train_X) and not space.candidates:
        train_X, train_Y = fitted.train_X, fitted.train_Y
        top = train_X[train_Y.sum(dim=-1).argsort(descending=True)[:8]]
        top = top[space.feasible(top)]
        m = int(n * _AROUND_BEST_SHARE)
        if len(top) and m:
            idx = torch.randint(len(top), (m,))
            noise = torch.randn(m, space.dim, dtype=torch.float64)
            noisy = top[idx] + _AROUND_BEST_STD * space.bounds[1] * noise
            noisy = torch.minimum(torch.maximum(noisy, space.bounds[0]), space.bounds[1])
            noisy = space.encode(space.decode(noisy))  # onto the integer/choice grids
            noisy = noisy[space.feasible(noisy)]
            X = torch.cat([X[: n - len(noisy)], noisy])
    return X


# Perturbations of known feasible points (see _known_feasible_samples), as shares of each
# column's range: a sliver of width 1e-4 keeps few of the wide ones and most of the narrow.
_KNOWN_FEASIBLE_STDS = (0.05, 5e-3, 5e-4, 5e-5)


def _known_feasible_samples(planner: BoTorchPlanner, n: int) -> Tensor:
    """Up to ``n`` feasible encoded points from what the campaign already knows: the points
    of its trials (any outcome: a failed trial's point still satisfies the constraints) and
    of its initial design, then Gaussian perturbations of them at several widths
    (``_KNOWN_FEASIBLE_STDS``), snapped to the grids and kept where feasible. Empty when
    the campaign knows no feasible point.
    """
    space = planner.space
    parts = [space.encode([o.parameters for o in planner.observations])]
    parts.append(space.from_unit_cube(planner.design.known_feasible_unit_points()))
    known = torch.cat(parts)
    known = torch.minimum(torch.maximum(known, space.bounds[0]), space.bounds[1])
    known = torch.unique(known[space.feasible(known)], dim=0)
    if not len(known):
        return known
    out = [known[:n]]
    per_width = max(1, (n - len(out[0])) // len(_KNOWN_FEASIBLE_STDS))
    for std in _KNOWN_FEASIBLE_STDS:
        idx = torch.randint(len(known), (per_width,))
        noise = torch.randn(per_width, space.dim, dtype=torch.float64)
        noisy = known[idx] + std * space.bounds[1] * noise
        noisy = torch.minimum(torch.maximum(noisy, space.bounds[0]), space.bounds[1])
        noisy = space.encode(space.decode(noisy))  # onto the integer/choice grids
        out.append(noisy[space.feasible(noisy)])
    return torch.cat(out)[:n]


def _ensure_feasible(
    planner: BoTorchPlanner, acqf: AcquisitionFunction, candidates: Tensor, q: int
) -> Tensor:
    """``candidates`` with every row that does not decode to a member of the space (or is
    missing) replaced by the best feasible raw sample not yet used."""
    space = planner.space
    rows = list(candidates.reshape(-1, space.dim))
    good = [space.contains(p) for p in space.decode(candidates)] if len(rows) else []
    if len(rows) >= q and all(good):
        return candidates.reshape(-1, space.dim)[:q]
    logger.info(
        "%d of %d optimiser candidates break a constraint or are missing; using the best "
        "feasible raw samples instead",
        q - sum(good[:q]),
        q,
    )
    raw = _feasible_raw_samples(planner, planner.settings.raw_samples)
    order = _acq_values(acqf, raw).argsort(descending=True).tolist()
    out: list[Tensor] = []
    for i in range(q):
        if i < len(rows) and good[i]:
            out.append(rows[i])
            continue
        while order:
            j = order.pop(0)
            if not any(torch.equal(raw[j], x) for x in out):
                out.append(raw[j])
                break
        else:  # pragma: no cover - raw samples are many more than q
            out.append(raw[0])
    return torch.stack(out)


def _optimize_table(
    planner: BoTorchPlanner, acqf: AcquisitionFunction, X_pending: Tensor | None
) -> Tensor:
    """The best row of the candidate table; scored in chunks of 1024 rows.

    The repeat guard's rule (``planners._baselines.RepeatGuard``), on rows: never a pending
    row (``X_pending``) nor a measured one while another is free; once every free row is
    pending, a measured one; a pending one only when that is all there is. A row counts as
    measured when a trial measured it (``BoTorchPlanner._measured_points``): an abandoned
    trial's row is proposed again before the table counts as exhausted.
    """
    space = planner.space
    C = space.encoded_candidates
    measured = torch.zeros(len(C), dtype=torch.bool)
    for point in planner._measured_points():
        j = space.candidate_index(point)
        if j is not None:
            measured[j] = True
    if bool(measured.all()):
        planner.repeats.report_exhausted(len(C))
    pending = torch.zeros(len(C), dtype=torch.bool)
    if X_pending is not None and len(X_pending):
        distance, index = space._nearest_candidates(X_pending.reshape(-1, space.dim))
        pending[index[distance <= 1e-9]] = True
    free = ~(measured | pending)
    if not bool(free.any()):
        free = ~pending  # a measured row again (a replicate) rather than a pending one
        if not bool(measured.all()):
            logger.info("every candidate has been measured or is pending; repeating a measured one")
    if not bool(free.any()):
        logger.info("every candidate is pending; repeats are allowed")
        free = torch.ones(len(C), dtype=torch.bool)
    X, _ = optimize_acqf_discrete(acqf, 1, choices=C[free], max_batch_size=1024)
    return X


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (see ``BoTorchSettings.torch_threads``;
    the Ax planner's ``suggest`` runs on one too)."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
