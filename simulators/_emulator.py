"""A Gaussian-process emulator of a measured dataset: fitted once with BoTorch, served by numpy.

Why a GP: the datasets are small (66 to 1386 rows), noisy and smooth at the scale of their
sampling, which is the regime GPs are built for; a GP also *estimates* the measurement
noise (the likelihood's noise), which is exactly the scatter a dry run should reproduce.
Olympus itself uses Bayesian neural networks; a GP needs no architecture search and its fit
is checked the same way, by 5-fold cross-validated R² (:func:`cross_validate`).

The model per output: inputs scaled to [0, 1] by the dataset's bounds (choices one-hot; a
mixture's relative amounts divided by their sum), output standardised, constant mean, a
Matern-5/2 ARD kernel with an output scale, Gaussian noise. Hyperparameters are fitted by
maximising the marginal likelihood (``fit_gpytorch_mll``) on at most
``MAX_FIT_POINTS`` rows (a random subsample for the 1386-row hplc: the fit is cubic in the
rows, the hyperparameters barely move), and the posterior mean conditions on every row up
to ``MAX_POSTERIOR_POINTS`` (a seeded subsample beyond that; every bundled dataset fits).

Serving needs no torch: the posterior mean is ``c + k(x, X) @ alpha`` with ``alpha``
precomputed, in numpy, so an emulator loads and answers in milliseconds. Fitted emulators
are cached on disk keyed by the data's hash (the bundled ones ship pre-fitted), so only the
first use of new data pays for a fit.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simulators._datasets import DATA_DIR, Dataset, DatasetSpec

logger = logging.getLogger(__name__)

#: Bump when the model or the file layout changes: old cache files are then ignored.
FIT_VERSION = 1
#: Rows used to fit the hyperparameters (a seeded subsample beyond this).
MAX_FIT_POINTS = 500
#: Rows the posterior conditions on (a seeded subsample beyond this).
MAX_POSTERIOR_POINTS = 2000
#: Folds of the cross-validation that checks each fit (:func:`cross_validate`).
CV_FOLDS = 5


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where fitted emulators are kept: ``cache_dir``, ``$CLOSEDLOOP_CACHE_DIR``,
    ``$XDG_CACHE_HOME/closedloop`` or ``~/.cache/closedloop``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("CLOSEDLOOP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "closedloop"


# ---------------------------------------------------------------------------- encoding
def encode(spec: DatasetSpec, points: Sequence[Mapping[str, Any]]) -> NDArray[np.float64]:
    """Points -> ``n x d`` model inputs in [0, 1] (choices one-hot, mixtures normalised)."""
    cols: list[NDArray[np.float64]] = []
    simplex = [p for p in spec.parameters if p.name in spec.simplex]
    fractions: dict[str, NDArray[np.float64]] = {}
    if simplex:
        raw = np.array([[float(pt[p.name]) for p in simplex] for pt in points], dtype=np.float64)
        total = raw.sum(axis=1, keepdims=True)
        even = np.full_like(raw, 1.0 / len(simplex))
        frac = np.where(total > 0, raw / np.where(total > 0, total, 1.0), even)
        fractions = {p.name: frac[:, j] for j, p in enumerate(simplex)}
    for p in spec.parameters:
        if p.kind == "choice":
            values = [str(v) for v in p.values or ()]
            onehot = np.zeros((len(points), len(values)))
            for i, pt in enumerate(points):
                onehot[i, values.index(str(pt[p.name]))] = 1.0
            cols.extend(onehot.T)
            continue
        lo, hi = p.bounds or (0.0, 1.0)
        if p.name in fractions:
            x = fractions[p.name]
        else:
            x = np.array([float(pt[p.name]) for pt in points], dtype=np.float64)
        if p.log:
            x, lo, hi = np.log(x), math.log(lo), math.log(hi)
        cols.append((x - lo) / (hi - lo))
    return np.column_stack(cols) if cols else np.zeros((len(points), 0))


def _matern52(
    A: NDArray[np.float64], B: NDArray[np.float64], lengthscale: NDArray[np.float64]
) -> NDArray[np.float64]:
    a, b = A / lengthscale, B / lengthscale
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    r = np.sqrt(np.clip(sq, 0.0, None))
    s5r = math.sqrt(5.0) * r
    return (1.0 + s5r + 5.0 / 3.0 * r * r) * np.exp(-s5r)


@dataclass(frozen=True)
class _Hyper:
    lengthscale: NDArray[np.float64]  # d
    outputscale: float
    noise: float  # variance, standardised units
    mean: float  # standardised units


# ---------------------------------------------------------------------------- model
@dataclass(frozen=True, eq=False)
class Emulator:
    """Posterior mean of one GP per output, in numpy; call it like a simulator.

    Attributes:
        spec: the dataset's spec (encoding, outputs).
        digest: the data hash it was fitted on.
        X: ``n x d`` encoded rows the posterior conditions on.
        alpha: ``n x m`` weights, ``(K + noise I)^-1 (y - c)`` per output.
        lengthscale: ``m x d``; outputscale, noise (variance), mean: ``m``, standardised.
        y_mean, y_std: ``m``, the standardisation.
        y_lo, y_hi: ``m``, the measured range; predictions are clipped to it, so the
            emulator never promises more than was measured.
        cv_r2: 5-fold cross-validated R² per output, when computed.
    """

    spec: DatasetSpec
    digest: str
    X: NDArray[np.float64]
    alpha: NDArray[np.float64]
    lengthscale: NDArray[np.float64]
    outputscale: NDArray[np.float64]
    noise: NDArray[np.float64]
    mean: NDArray[np.float64]
    y_mean: NDArray[np.float64]
    y_std: NDArray[np.float64]
    y_lo: NDArray[np.float64]
    y_hi: NDArray[np.float64]
    cv_r2: Mapping[str, float] | None = None

    @property
    def __name__(self) -> str:  # shown in device error messages
        return f"emulator[{self.spec.name}]"

    @property
    def noise_sd(self) -> dict[str, float]:
        """The fitted measurement noise sd per output, in the output's units."""
        return {
            o: float(math.sqrt(self.noise[j]) * self.y_std[j])
            for j, o in enumerate(self.spec.outputs)
        }

    def predict(self, Xq: NDArray[np.float64]) -> NDArray[np.float64]:
        """Posterior mean, ``n x m`` in output units (clipped to the measured range)."""
        out = np.empty((Xq.shape[0], len(self.spec.outputs)))
        for j in range(len(self.spec.outputs)):
            k = self.outputscale[j] * _matern52(Xq, self.X, self.lengthscale[j])
            z = self.mean[j] + k @ self.alpha[:, j]
            out[:, j] = np.clip(z * self.y_std[j] + self.y_mean[j], self.y_lo[j], self.y_hi[j])
        return out

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, float]:
        """The noiseless response at one point (the instrument adds ``noise_sd``)."""
        _check_point(self.spec, inputs)
        y = self.predict(encode(self.spec, [inputs]))[0]
        return {o: float(y[j]) for j, o in enumerate(self.spec.outputs)}

    def save(self, path: Path) -> None:
        """Write the fit to ``path`` whole or not at all: a temporary file renamed over it.

        The temporary file is made by ``tempfile.mkstemp``: a name nobody can guess,
        created exclusively, so never written through a link planted in a shared cache
        folder (the name was ``NAME.<pid>.tmp.npz``, opened following links; found in
        review). It is private (0600), as the cache of a fit is: it holds the data's rows.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                self._write(handle)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _write(self, handle: Any) -> None:
        r2 = self.cv_r2 or {}
        np.savez_compressed(
            handle,
            version=np.array(FIT_VERSION),
            digest=np.array(self.digest),
            X=self.X,
            alpha=self.alpha,
            lengthscale=self.lengthscale,
            outputscale=self.outputscale,
            noise=self.noise,
            mean=self.mean,
            y_mean=self.y_mean,
            y_std=self.y_std,
            y_lo=self.y_lo,
            y_hi=self.y_hi,
            cv_r2=np.array([r2.get(o, np.nan) for o in self.spec.outputs]),
        )

    @classmethod
    def load(cls, path: Path, spec: DatasetSpec, digest: str) -> Emulator | None:
        """The emulator stored at ``path`` if it is this version and data, else ``None``.

        Any file that cannot be read as one (truncated by a full disk or a killed process,
        emptied, written by something else) is ``None`` too: the cache only saves time, and
        a refit replaces it. ``numpy.load`` fails on such files with many types (``OSError``,
        ``ValueError``, ``zipfile.BadZipFile``, ``EOFError``, ``zlib.error``, ...), and an
        ``EOFError`` escaping to the CLI would be taken for Ctrl-D and end it silently.
        """
        try:
            # Our own file handle: np.load leaves its own open when it fails on an empty file.
            with path.open("rb") as fh, np.load(fh, allow_pickle=False) as f:
                if int(f["version"]) != FIT_VERSION or str(f["digest"]) != digest:
                    return None
                r2 = f["cv_r2"]
                cv = (
                    None
                    if np.isnan(r2).all()
                    else {o: float(r2[j]) for j, o in enumerate(spec.outputs)}
                )
                arrays = {
                    k: np.asarray(f[k], dtype=np.float64)
                    for k in (
                        "X",
                        "alpha",
                        "lengthscale",
                        "outputscale",
                        "noise",
                        "mean",
                        "y_mean",
                        "y_std",
                        "y_lo",
                        "y_hi",
                    )
                }
                emulator = cls(spec=spec, digest=digest, cv_r2=cv, **arrays)
                _check_shapes(emulator, len(r2))
                return emulator
        except Exception as exc:  # any unreadable file; see the docstring
            logger.warning(
                "ignoring unreadable emulator cache %s (%s: %s)",
                path,
                type(exc).__name__,
                exc,
            )
            return None


def _check_shapes(emulator: Emulator, n_r2: int) -> None:
    """Refuse arrays that do not fit together (a damaged file whose zip is still valid), so
    that the damage shows here rather than as a shape error in the first measurement."""
    n, d = emulator.X.shape if emulator.X.ndim == 2 else (-1, -1)
    m = len(emulator.spec.outputs)
    expected = {
        "alpha": (n, m),
        "lengthscale": (m, d),
        **dict.fromkeys(("outputscale", "noise", "mean", "y_mean", "y_std", "y_lo", "y_hi"), (m,)),
    }
    for key, shape in expected.items():
        if getattr(emulator, key).shape != shape:
            raise ValueError(f"{key} has shape {getattr(emulator, key).shape}, not {shape}")
    width = sum(len(p.values or ()) if p.kind == "choice" else 1 for p in emulator.spec.parameters)
    if n_r2 != m or d != width:  # encode()'s columns: one-hot choices, one per number
        raise ValueError("the arrays do not match the dataset's inputs and outputs")


def _check_point(spec: DatasetSpec, inputs: Mapping[str, Any]) -> None:
    """Refuse a point the dataset has no meaning for, saying which rule it breaks.

    An ``int`` parameter's value can lie inside its bounds and still be refused (9.22 struts),
    so that case says "not a whole number" rather than "outside its domain".
    """
    for p in spec.parameters:
        if p.name not in inputs:
            raise KeyError(f"dataset {spec.name!r}: no value for input {p.name!r}")
        value = inputs[p.name]
        if p.contains(value):
            continue
        lo, hi = p.bounds or (math.nan, math.nan)
        if p.kind == "int" and _is_number(value) and lo <= value <= hi:
            raise ValueError(
                f"dataset {spec.name!r}: {p.name}={value!r} is not a whole number "
                f"({p.name} is an int in {list(p.limits)})"
            )
        raise ValueError(
            f"dataset {spec.name!r}: {p.name}={value!r} is outside its domain {list(p.limits)}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fit_hyper(X: NDArray[np.float64], z: NDArray[np.float64], seed: int) -> _Hyper:
    """Marginal-likelihood fit of one GP (standardised ``z``) with BoTorch; torch lazily."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.kernels import MaternKernel, ScaleKernel
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from gpytorch.priors import LogNormalPrior

    torch.manual_seed(seed)
    d = X.shape[1]
    # BoTorch's dimension-scaled length-scale prior (Hvarfner et al. 2024), on a Matern kernel.
    prior = LogNormalPrior(loc=math.sqrt(2.0) + math.log(d) / 2.0, scale=math.sqrt(3.0))
    covar = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d, lengthscale_prior=prior))
    train_X = torch.as_tensor(X, dtype=torch.float64)
    train_Y = torch.as_tensor(z, dtype=torch.float64).unsqueeze(-1)
    model = SingleTaskGP(train_X, train_Y, covar_module=covar, outcome_transform=None)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    # One intra-op thread, as the planner's suggest runs (``BoTorchSettings.torch_threads``):
    # torch's default of one per core made this fit 6-9x slower in wall time on a 2-core
    # machine with another process busy (snar: 16-23 s against 2.5-2.7 s, session 22), its
    # OpenMP threads spinning against each other on matrices too small to share out.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            # Real data gives the optimiser the odd ill-conditioned step; the fit is judged
            # by its cross-validated R², not by the optimiser's messages.
            warnings.simplefilter("ignore")
            fit_gpytorch_mll(mll)
    finally:
        torch.set_num_threads(threads)
    return _Hyper(
        lengthscale=covar.base_kernel.lengthscale.detach().numpy().reshape(-1).astype(np.float64),
        outputscale=float(covar.outputscale.detach()),
        noise=float(model.likelihood.noise.detach().reshape(-1)[0]),
        mean=float(model.mean_module.constant.detach()),
    )


def _alpha(X: NDArray[np.float64], z: NDArray[np.float64], h: _Hyper) -> NDArray[np.float64]:
    K = h.outputscale * _matern52(X, X, h.lengthscale)
    K[np.diag_indices_from(K)] += h.noise + 1e-8
    L = np.linalg.cholesky(K)
    return np.linalg.solve(L.T, np.linalg.solve(L, z - h.mean))


def _subsample(n: int, k: int, seed: int) -> NDArray[np.intp]:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def fit_emulator(dataset: Dataset, *, seed: int = 0) -> Emulator:
    """Fit one GP per output on ``dataset`` (see the module docstring)."""
    spec = dataset.spec
    X_all = encode(spec, dataset.rows)
    keep = _subsample(len(X_all), MAX_POSTERIOR_POINTS, seed)
    X_all, Y_all = X_all[keep], dataset.Y[keep]
    fit_rows = _subsample(len(X_all), MAX_FIT_POINTS, seed + 1)
    m = len(spec.outputs)
    arrays: dict[str, list[Any]] = {k: [] for k in ("ls", "os", "nz", "mu", "ym", "ys", "al")}
    for j in range(m):
        y = Y_all[:, j]
        ym, ys = float(y.mean()), float(y.std()) or 1.0
        z = (y - ym) / ys
        h = _fit_hyper(X_all[fit_rows], z[fit_rows], seed)
        arrays["ls"].append(h.lengthscale)
        arrays["os"].append(h.outputscale)
        arrays["nz"].append(h.noise)
        arrays["mu"].append(h.mean)
        arrays["ym"].append(ym)
        arrays["ys"].append(ys)
        arrays["al"].append(_alpha(X_all, z, h))
    return Emulator(
        spec=spec,
        digest=dataset.digest,
        X=X_all,
        alpha=np.column_stack(arrays["al"]),
        lengthscale=np.vstack(arrays["ls"]),
        outputscale=np.array(arrays["os"]),
        noise=np.array(arrays["nz"]),
        mean=np.array(arrays["mu"]),
        y_mean=np.array(arrays["ym"]),
        y_std=np.array(arrays["ys"]),
        y_lo=dataset.Y.min(axis=0),
        y_hi=dataset.Y.max(axis=0),
    )


def cross_validate(dataset: Dataset, *, seed: int = 0) -> dict[str, float]:
    """Out-of-fold R² per output: ``1 - SSE / SST`` over all held-out rows of ``CV_FOLDS``
    folds.

    Each fold refits the hyperparameters on the other folds, so this measures the whole
    procedure, not one fitted model.
    """
    spec = dataset.spec
    X = encode(spec, dataset.rows)
    n = len(X)
    order = np.random.default_rng(seed).permutation(n)
    pred = np.empty_like(dataset.Y)
    for f in range(CV_FOLDS):
        test = order[f::CV_FOLDS]
        train = np.setdiff1d(order, test)
        train = train[_subsample(len(train), MAX_POSTERIOR_POINTS, seed)]
        fit_rows = _subsample(len(train), MAX_FIT_POINTS, seed + 1)
        for j in range(len(spec.outputs)):
            y = dataset.Y[train, j]
            ym, ys = float(y.mean()), float(y.std()) or 1.0
            z = (y - ym) / ys
            h = _fit_hyper(X[train][fit_rows], z[fit_rows], seed)
            alpha = _alpha(X[train], z, h)
            k = h.outputscale * _matern52(X[test], X[train], h.lengthscale)
            pred[test, j] = (h.mean + k @ alpha) * ys + ym
    r2: dict[str, float] = {}
    for j, o in enumerate(spec.outputs):
        y = dataset.Y[:, j]
        sst = float(((y - y.mean()) ** 2).sum())
        r2[o] = 1.0 - float(((y - pred[:, j]) ** 2).sum()) / sst if sst > 0 else float("nan")
    return r2


def cache_path(dataset: Dataset, cache_dir: str | Path | None = None) -> Path:
    """The file a fitted emulator of ``dataset`` is kept in."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset.name)
    return cache_root(cache_dir) / "emulators" / f"{name}-{dataset.digest[:16]}.npz"


def bundled_path(dataset: Dataset) -> Path:
    """Where a bundled dataset's pre-fitted emulator ships."""
    return DATA_DIR / dataset.name / "emulator.npz"


def cached_emulator(
    dataset: Dataset, *, cache_dir: str | Path | None = None, cv: bool = False
) -> Emulator:
    """The emulator of ``dataset``: the shipped or cached fit if it matches the data, else
    a new fit (and, with ``cv``, its cross-validated R²), saved to the cache."""
    paths = [bundled_path(dataset), cache_path(dataset, cache_dir)]
    for path in paths:
        if path.is_file():
            found = Emulator.load(path, dataset.spec, dataset.digest)
            if found is not None and (found.cv_r2 is not None or not cv):
                return found
    logger.info("fitting the emulator of dataset %r (%d rows)", dataset.name, len(dataset))
    emulator = fit_emulator(dataset)
    if cv:
        emulator = _with_cv(emulator, cross_validate(dataset))
    target = paths[1]
    try:
        emulator.save(target)
    except OSError as exc:
        logger.warning("cannot cache the emulator at %s: %s (it will be refitted)", target, exc)
    return emulator


def _with_cv(emulator: Emulator, r2: Mapping[str, float]) -> Emulator:
    from dataclasses import replace

    return replace(emulator, cv_r2=dict(r2))
