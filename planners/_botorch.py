"""Bayesian optimisation with BoTorch: a GP surrogate, a Log-EI acquisition, exact mixed search.

One suggest call reads top to bottom in :meth:`BoTorchPlanner.suggest`:

1. positions that still belong to the initial design get Sobol/random points;
2. the remaining positions get a GP fitted on the usable observations (refitted whenever
   new observations arrived), an acquisition function conditioned on the pending points,
   and candidates from ``optimize_acqf`` (all-float spaces) or
   ``optimize_acqf_mixed_alternating`` (int/choice columns searched on their grid; the GP
   sees choice columns one-hot, see ``planners/_transforms.py``);
3. candidates are decoded, and any that repeats a pending point is replaced by a design point.

Where experiments fail. A failed trial has no outputs, so it never enters the objective GP;
left at that, the planner would learn nothing from it and propose the same failing region
again and again (the objective's posterior there is unchanged). With
``BoTorchSettings.learn_failures`` (the default), once at least one trial has failed a second
GP, the *feasibility model*, is fitted on a success label (+1 for usable trials, -1 for failed
ones) over the same encoded inputs, and the acquisition optimises over
``ModelListGP([objective GP, feasibility GP])`` with the outcome constraint "success score
> 0": every MC sample of a candidate counts only where its feasibility sample is positive, so
the acquisition is weighted by the posterior probability of success (idiomatic BoTorch
constrained BO, Gardner et al. 2014). A GP regression on labels is a cheap stand-in for a GP
classifier (no Laplace/EP approximation, same kernel and fitting code, warm-started like the
objective GP); far from any trial it reverts to the prior mean, so unexplored regions stay
attractive. Abandoned trials (interrupted, see ``planners/_protocol.py``) teach it nothing.

Everything random runs under ``torch.random.fork_rng`` with a seed derived from the campaign
seed and the trial position, so the same seed and the same observations give the same run.
With ``BoTorchSettings.warm_start`` (the default) each GP fit starts from the previous fit's
hyperparameters; the chain of fits of a run is deterministic, but a planner rebuilt from the
store (``resume``) fits once from the cold start and may propose slightly different points
than the original would have (equally valid ones: ``resume`` still needs no pickled model).
With ``warm_start=False`` the rebuilt planner proposes exactly what the original would have.

The training data is an ``n x m`` matrix of *signed* objective values (maximise ``sign * y``),
built in one place (:meth:`BoTorchPlanner.training_data`) so that more objectives (a
``ModelListGP`` and a hypervolume acquisition) and outcome constraints (extra columns fed to
the acquisition's ``constraints``) slot in without touching the rest.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from botorch.acquisition.utils import get_infeasible_cost
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
from botorch.optim import optimize_acqf
from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating
from botorch.sampling import SobolQMCNormalSampler
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood, Likelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior
from torch import Tensor

from planners._baselines import PositionalDesign, derive_seed, point_key
from planners._config import PlannerConfig
from planners._protocol import Objective, Observation
from planners._space import MAX_ENUMERATED_INTS, IntParameter, Point, Space, _scale
from planners._transforms import OneHotCategories

logger = logging.getLogger(__name__)

KernelKind = Literal["rbf", "matern", "matern_gamma"]
NoisePrior = Literal["lognormal", "gamma", "gamma_small"]

# Below this the standardised noise variance is not allowed to go: keeps the Cholesky factor
# of near-duplicate inputs well conditioned without blurring noiseless objectives (1e-4, the
# GPyTorch default, left Branin regret at ~0.03 in ``benchmarks/planner_tuning.py``).
_NOISE_FLOOR = 1e-5


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
        noise_floor: lower bound of the inferred noise variance on the standardised scale.
        fit_maxiter: L-BFGS-B iterations of one GP hyperparameter fit (``None``: SciPy's).
        fit_ftol: relative loss reduction at which a GP fit stops (``None``: SciPy's 2.2e-9).
        warm_start: start each GP fit from the previous fit's hyperparameters instead of the
            priors' initial values. The chain of fits of a fresh seeded run is deterministic,
            so runs stay reproducible; a planner rebuilt from a store (``resume``) fits once,
            cold, and may therefore propose slightly different points than the original.
        cold_refit_every: with ``warm_start``, also fit from the cold start whenever the
            number of observations is a multiple of this, and keep the likelier fit.
        mc_samples: quasi-MC samples of the MC acquisition functions.
        raw_samples: random points scored to pick optimiser starting points.
        num_restarts: optimiser starting points.
        maxiter: L-BFGS-B iterations per restart (all-float spaces).
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
    """

    kernel: KernelKind = "matern"
    noise_prior: NoisePrior = "gamma"
    noise_floor: float = _NOISE_FLOOR
    fit_maxiter: int | None = 100
    fit_ftol: float | None = 1e-6
    warm_start: bool = True
    cold_refit_every: int | None = 5
    exploit_every: int | None = 4
    exploit_max_noise: float = 1e-3
    mc_samples: int = 128
    raw_samples: int = 512
    num_restarts: int = 8
    maxiter: int = 200
    batch_limit: int | None = None
    sample_around_best: bool = True
    maxiter_alternating: int = 16
    ucb_beta: float = 4.0
    learn_failures: bool = True


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
        objectives: what to optimise; one objective for now (checked here, at construction,
            so a campaign the planner cannot serve fails when it loads, not mid-run).
        config: the campaign's ``planner:`` section (initial design, acquisition).
        seed: the campaign seed; with the same observations and pending points the planner
            proposes the same points.
        settings: model/optimiser knobs; the defaults are tuned, tests shrink them.

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
    ) -> None:
        if len(objectives) != 1:
            raise ValueError(
                f"BoTorchPlanner optimises exactly one objective for now, got {len(objectives)}"
            )
        self.space = space
        self.objectives: tuple[Objective, ...] = tuple(objectives)
        self.config = config if config is not None else PlannerConfig()
        self.seed = int(seed)
        self.settings = settings if settings is not None else BoTorchSettings()
        self.design = PositionalDesign(space, seed, self.config.initial.kind)
        self.n_initial = self.config.initial.size(space.dim)
        self.observations: list[Observation] = []
        self.last_suggest_seconds: float | None = None
        self.last_timing: SuggestTiming | None = None
        self.last_kinds: list[str] = []
        self.timings: list[SuggestTiming] = []
        self._fitted: _Fitted | None = None
        self._feasibility: _Fitted | None = None
        self._bounds = space.bounds
        self._cat_dims = space.cat_dims
        self._discrete_dims = _narrow_discrete_dims(space)

    # ------------------------------------------------------------------ protocol
    def ingest(self, observations: Sequence[Observation]) -> None:
        """Remember finished trials; the model is refitted on the next ``suggest``.

        Fitting lazily means a resume that ingests a whole store trial by trial fits once.
        """
        self.observations.extend(observations)

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
        pending = [self.space.validate(p) for p in pending]
        position = len(self.observations) + len(pending)
        n_usable = sum(o.usable_for(self.outcome_names) for o in self.observations)

        n_design = min(n, max(0, self.n_initial - n_usable - len(pending)))
        if n_usable == 0:
            n_design = n  # nothing to model yet: keep exploring with the design
        proposals = self.design.points(position, n_design, avoid=pending)

        n_model = n - n_design
        if n_model > 0:
            suggest_seed = derive_seed(self.seed, len(self.observations), len(pending))
            with torch.random.fork_rng():
                torch.manual_seed(suggest_seed)
                model_points = self._suggest_from_model(
                    n_model, pending + proposals, position + n_design, timing
                )
            proposals += model_points

        timing.total = time.perf_counter() - start
        timing.n_model = n_model
        self.last_kinds = ["initial"] * n_design + ["model"] * n_model
        self.last_suggest_seconds = timing.total
        self.last_timing = timing
        self.timings.append(timing)
        return proposals

    # ------------------------------------------------------------------ data
    @property
    def outcome_names(self) -> list[str]:
        """Outputs the model needs, in ``train_Y`` column order (objectives, later constraints)."""
        return [o.name for o in self.objectives]

    def training_data(self) -> tuple[Tensor, Tensor]:
        """``n x d`` encoded inputs and ``n x m`` signed outcomes for the objective model.

        Usable observations with their values; with ``learn_failures``, failed trials at the
        worst value seen (abandoned ones never: a stop says nothing about the point).
        Non-finite outputs never reach a model. Inputs slightly outside the space
        (instrument readbacks) are clamped to its bounds.
        """
        names = self.outcome_names
        usable = [o for o in self.observations if o.usable_for(names)]
        X = self.space.encode([o.parameters for o in usable])
        clamped = torch.minimum(torch.maximum(X, self._bounds[0]), self._bounds[1])
        if not torch.equal(clamped, X):
            logger.warning("observed parameters outside the space were clamped to its bounds")
        signs = torch.tensor([o.sign for o in self.objectives], dtype=torch.float64)
        Y = torch.tensor([[o.outputs[n] for n in names] for o in usable], dtype=torch.float64)
        Y = Y.reshape(len(usable), len(names)) * signs
        failed = [o for o in self.observations if o.outcome == "failed"]
        if self.settings.learn_failures and failed and len(usable) > 0:
            # A failed point enters the objective model at the worst value measured so far:
            # the feasibility model alone leaves the objective GP predicting large gains in
            # a region that never returns a number, and late in a run a few percent chance of
            # success there still wins the acquisition (benchmarks/failure_region.py: 12.5 %
            # of proposals in the failing region without this, 4 % with it).
            Xf = self.space.encode([o.parameters for o in failed])
            Xf = torch.minimum(torch.maximum(Xf, self._bounds[0]), self._bounds[1])
            Yf = Y.min(dim=0).values.expand(len(failed), -1)
            return torch.cat([clamped, Xf]), torch.cat([Y, Yf])
        return clamped, Y

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
        X = self.space.encode([o.parameters for o, _ in rows])
        X = torch.minimum(torch.maximum(X, self._bounds[0]), self._bounds[1])
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
            model, _ = self._fit_once(train_X, labels, start)
        self._feasibility = _Fitted(model, train_X, labels, len(self.observations))
        return model

    def fit(self) -> Model:
        """The GP on all usable observations, refitted only when observations were added."""
        if self._fitted is not None and self._fitted.n_ingested == len(self.observations):
            return self._fitted.model
        train_X, train_Y = self.training_data()
        # Seeded by the data size only (not by pending points), so a cached model and a
        # freshly fitted one are identical: fit_gpytorch_mll draws random restarts from the
        # priors when a fit fails.
        previous = self._fitted.model if self._fitted is not None else None
        warm = self.settings.warm_start and previous is not None
        every = self.settings.cold_refit_every
        with torch.random.fork_rng():
            torch.manual_seed(derive_seed(self.seed, len(self.observations), 7))
            model, score = self._fit_once(train_X, train_Y, previous if warm else None)
            if warm and every and len(self.observations) % every == 0:
                # A warm-started chain can stay in a poor local optimum of the likelihood
                # (e.g. "everything is noise" after a few unlucky early points); a cold fit
                # now and then lets the chain jump out. Keep whichever explains the data better.
                cold, cold_score = self._fit_once(train_X, train_Y, None)
                if cold_score > score:
                    model = cold
        self._fitted = _Fitted(model, train_X, train_Y, len(self.observations))
        return model

    def _fit_once(
        self, train_X: Tensor, train_Y: Tensor, start: Model | None
    ) -> tuple[Model, float]:
        """A GP fitted from ``start``'s hyperparameters (or the priors'), and its log posterior."""
        model = self._build_model(train_X, train_Y)
        if start is not None:
            _copy_hyperparameters(start, model)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        options: dict[str, Any] = {}
        if self.settings.fit_maxiter is not None:
            options["maxiter"] = self.settings.fit_maxiter
        if self.settings.fit_ftol is not None:
            options["ftol"] = self.settings.fit_ftol
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": options})
            mll.train()
            with torch.no_grad():
                output = model(*model.train_inputs)  # type: ignore[misc]
                score = float(mll(output, model.train_targets).sum())  # type: ignore[arg-type]
            mll.eval()
        _log_warnings(caught, "GP fit")
        return model, score

    def _build_model(self, train_X: Tensor, train_Y: Tensor) -> Model:
        d = self.space.dim
        likelihood = self._likelihood()
        outcome_transform = Standardize(m=train_Y.shape[-1])
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
            input_transform=input_transform,
            outcome_transform=outcome_transform,
        )

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
        if self.settings.noise_prior == "lognormal":
            likelihood = get_gaussian_likelihood_with_lognormal_prior()
            likelihood.noise_covar.register_constraint(
                "raw_noise", GreaterThan(floor, transform=None, initial_value=1e-2)
            )
            likelihood.noise = 1e-2
            return likelihood
        concentration, rate = (1.05, 0.5) if self.settings.noise_prior == "gamma" else (1.1, 0.05)
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

        With a ``feasibility`` model the acquisition runs on ``ModelListGP([model,
        feasibility])``: output 0 is the objective, output 1 the success score, and the
        outcome constraint ``score > 0`` (BoTorch constraints are feasible where the callable
        is <= 0) zeroes every MC sample whose score sample is negative. The log-EI family
        takes ``constraints=`` directly; ``qUpperConfidenceBound`` and ``qSimpleRegret`` get
        the same constraint through a ``ConstrainedMCObjective`` that gives infeasible samples
        a value below anything the objective GP considers plausible.
        """
        s = self.settings
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([s.mc_samples]))
        kind = "qSimpleRegret" if exploit else self.config.acquisition
        acq_model: Model = model
        objective: Any = None
        constraints: list[Any] | None = None
        if feasibility is not None:
            acq_model = ModelListGP(model, feasibility)  # type: ignore[arg-type]
            objective = GenericMCObjective(_objective_column)
            constraints = [_success_constraint]
            if kind not in ("qLogNoisyExpectedImprovement", "qLogExpectedImprovement"):
                with torch.no_grad():
                    cost = get_infeasible_cost(train_X, model)
                objective = ConstrainedMCObjective(
                    _objective_column, constraints, infeasible_cost=cost
                )
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
                constraints=constraints,
            )
        if kind == "qLogExpectedImprovement":
            # Best posterior mean at the observed points, not the best noisy observation.
            with torch.no_grad():
                best_f = model.posterior(train_X).mean.max()  # type: ignore[attr-defined]
            return qLogExpectedImprovement(
                acq_model,
                best_f=best_f,
                sampler=sampler,
                objective=objective,
                X_pending=X_pending,
                constraints=constraints,
            )
        return qUpperConfidenceBound(
            acq_model, beta=s.ucb_beta, sampler=sampler, objective=objective, X_pending=X_pending
        )

    def _optimize(self, acqf: AcquisitionFunction, q: int) -> Tensor:
        s = self.settings
        options: dict[str, Any] = {}
        if s.batch_limit is not None:
            options["batch_limit"] = s.batch_limit
        if not self._cat_dims and not self._discrete_dims:
            options |= {"maxiter": s.maxiter, "sample_around_best": s.sample_around_best}
            candidates, _ = optimize_acqf(
                acqf,
                bounds=self._bounds,
                q=q,
                num_restarts=s.num_restarts,
                raw_samples=s.raw_samples,
                options=options,
                sequential=True,
            )
            return candidates
        options["maxiter_alternating"] = s.maxiter_alternating
        candidates, _ = optimize_acqf_mixed_alternating(
            acqf,
            bounds=self._bounds,
            discrete_dims=self._discrete_dims,
            cat_dims=self._cat_dims,
            q=q,
            num_restarts=s.num_restarts,
            raw_samples=s.raw_samples,
            options=options,
        )
        return candidates

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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exploit = self._exploit_now(position, model)
            acqf = self._acquisition(model, X_baseline, X_pending, feasibility, exploit)
            candidates = self._optimize(acqf, q)
        _log_warnings(caught, "acquisition optimisation")
        timing.optimize = time.perf_counter() - t1

        points = self.space.decode(candidates)
        return self._replace_repeats(points, pending, position)

    def _exploit_now(self, position: int, model: Model) -> bool:
        k = self.settings.exploit_every
        if k is None or (position - self.n_initial + 1) % k != 0:
            return False
        likelihood = getattr(model, "likelihood", None)
        noise = float(likelihood.noise.detach().max()) if likelihood is not None else float("inf")
        logger.debug("exploit step? fitted noise variance %.3g", noise)
        return noise < self.settings.exploit_max_noise

    def _replace_repeats(
        self, points: list[Point], pending: list[Point], position: int
    ) -> list[Point]:
        """Swap any proposal that equals a pending (or earlier batch) point for a design point.

        The acquisition value at a pending point is already near zero, so this only triggers
        on small finite spaces or a degenerate model (e.g. constant outcomes).
        """
        taken = {point_key(self.space, p) for p in pending}
        out: list[Point] = []
        for i, point in enumerate(points):
            if point_key(self.space, point) in taken:
                logger.info("model proposal repeats a pending point; using a design point")
                point = self.design.points(position + i, 1, avoid=pending + out)[0]
            taken.add(point_key(self.space, point))
            out.append(point)
        return out


# A sample counts as a success only above this score (labels are +1/-1): a point the
# feasibility model is unsure about (posterior mean near 0, or a wide posterior between
# failures) is discounted more than a 50/50 classifier would, because the objective GP, which
# never sees failures, keeps promising large improvements inside a failing region and even a
# few percent of success probability there would outweigh the small improvements left
# elsewhere late in a campaign (``benchmarks/failure_region.py``).
_SUCCESS_MARGIN = 0.5


def _objective_column(Z: Tensor, X: Tensor | None = None) -> Tensor:
    """The objective's MC samples out of ``ModelListGP([objective, feasibility])`` samples."""
    return Z[..., 0]


def _success_constraint(Z: Tensor) -> Tensor:
    """Outcome constraint "success score > margin" in BoTorch's form (feasible where <= 0)."""
    return _SUCCESS_MARGIN - Z[..., 1]


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


def _narrow_discrete_dims(space: Space) -> dict[int, list[float]]:
    """Grid values of the integer columns that are searched exactly.

    Wider integer ranges are optimised as continuous columns and snapped to the grid by
    ``Space.decode`` (listing every value of a 10^9-wide range would not fit in memory).
    """
    out: dict[int, list[float]] = {}
    for i, p in enumerate(space.parameters):
        if isinstance(p, IntParameter):
            lo, hi = p.bounds
            if hi - lo + 1 <= MAX_ENUMERATED_INTS:
                out[i] = [_scale(p, v) for v in range(lo, hi + 1)]
    return out


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


def _log_warnings(caught: list[warnings.WarningMessage], stage: str) -> None:
    """Turn handled numerical/optimiser hiccups into log records; re-emit anything else.

    Inside a closed loop these recur on every suggest and would drown real problems (or, under
    ``-W error``, abort a campaign); the log keeps them for diagnosis. Other warnings (bad
    inputs, deprecations) keep their category.
    """
    for w in caught:
        if issubclass(w.category, _QUIET_CATEGORIES):
            logger.info("%s: %s: %s", stage, w.category.__name__, w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
