"""Planner settings as written under ``planner:`` in a campaign file."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr
from ruamel.yaml.scalarbool import ScalarBoolean

if TYPE_CHECKING:
    from planners._plugin import PlannerPluginError
    from planners._protocol import Objective, OutcomeConstraint
    from planners._space import Space

PriorMean = Literal["quadratic", "constant"]
"""The BoTorch planner's prior mean of the objective GP (``planners._means``)."""

Acquisition = Literal[
    "qLogNoisyExpectedImprovement",
    "qLogExpectedImprovement",
    "qUpperConfidenceBound",
]


class InitialDesign(BaseModel):
    """Space-filling points run before the model takes over."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sobol", "random"] = Field(
        default="sobol", description="Scrambled Sobol (balanced) or independent uniform draws."
    )
    n: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Number of initial trials; default max(5, d + 1) for d parameters.",
    )
    centre: bool | None = Field(
        default=None,
        description=(
            "Start with the centre of the space (BoTorch and Ax planners); default: with "
            "BoTorch only when the campaign has several objectives, with Ax always."
        ),
    )

    def size(self, dim: int) -> int:
        return self.n if self.n is not None else max(5, dim + 1)

    def centre_first(
        self, n_objectives: int, planner: Literal["botorch", "ax"] = "botorch"
    ) -> bool:
        """Whether the design of the ``planner`` kind starts with the centre point (see
        ``centre``): as written, else that kind's default.

        A handful of scrambled Sobol points in several dimensions rarely comes near the middle
        of every column at once, so the first GPs cannot see curvature along columns whose
        best value lies inside (what centre points add to two-level designs in classical
        design of experiments; Ax starts every campaign with one). With several objectives
        this costs more: a column whose effect the GPs miss looks irrelevant to every
        objective, and the hypervolume acquisition pushes it to a bound, where the posterior
        is widest, trial after trial. DTLZ2 (6-D, 3 objectives, 10 initial of 40 trials;
        ``benchmarks/goals.py``): median hypervolume over seeds 0-9 0.33 -> 0.42, higher
        on 8 of the 10 seeds (seeds 0-4: 0.39 -> 0.43, Ax 0.39). DTLZ2 flatters it (the
        centre lies on its Pareto front: 0.15-0.25 after the initial design, against
        0.06-0.20 without); the model trials keep that lead rather than add more (trials 10 -> 40
        add a median 0.23 with and without it), and no seed stalls any longer (seed 9: 0.06
        -> 0.44). BraninCurrin stays level (seeds 0-9: 57.79 -> 57.76; Ax 57.60 on 0-4).
        Single-objective campaigns keep the plain design their settings were tuned on
        unless asked.

        Ax starts every campaign at the centre unless ``centre: false`` is written: its own
        default, which its figures (``benchmarks/``) and the campaigns run with it since it
        was added were made with (a campaign resumed under another default would change its
        design midway).
        """
        if self.centre is not None:
            return self.centre
        return planner == "ax" or n_objectives > 1


def _plain(value: Any) -> Any:
    """YAML data as plain Python: dicts, lists, ``int``, ``float``, ``str``, ``bool``, dates
    and ``None``, keys as written (a number stays a number).

    A plugin's ``args:`` reached it as the YAML reader's own types (a ruamel ``CommentedSeq``
    compared with an int read "'<' not supported between ... 'CommentedSeq'"; found in
    review). Not pydantic's ``JsonValue``, which refused a date or a number as a key that
    campaigns were stored with.
    """
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, ScalarBoolean):  # an anchored true/false: an int subclass
        return bool(value)
    for kind in (bool, int, float, str):  # ruamel's ScalarFloat etc. subclass these
        if isinstance(value, kind) and type(value) is not kind:
            return kind(value)
    return value


class PlannerConfig(BaseModel):
    """Which strategy proposes the next experiments, and how."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["botorch", "sobol", "random", "ax"] = Field(
        default="botorch",
        description="Bayesian optimisation (BoTorch, or Ax's Client), or a model-free baseline.",
    )
    initial: InitialDesign = Field(default_factory=InitialDesign)
    acquisition: Acquisition = Field(
        default="qLogNoisyExpectedImprovement",
        description="BoTorch acquisition function (Log variants: plain EI is numerically poor).",
    )
    batch_size: int = Field(default=1, ge=1, le=64, description="Proposals per suggest call.")
    prior_mean: PriorMean | None = Field(
        default=None,
        description=(
            "BoTorch's prior mean of the objective, for one objective over numbers: "
            "quadratic (the default there: a bowl centred in the box, its depth fitted) or "
            "constant (for an optimum you expect on a face of the box)."
        ),
    )
    plugin: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description=(
            "Your own planner class instead of a kind: an entry point of the "
            "`closedloop.planners` group, module:Class, or path/to/file.py:Class (relative "
            "to the campaign file). Built as Class(context, **args)."
        ),
    )
    args: Annotated[dict[str, Any], BeforeValidator(_plain)] = Field(
        default_factory=dict,
        description="Keyword arguments of the plugin's constructor: plain YAML data, stored "
        "with the campaign.",
    )
    # How ``plugin`` becomes a class, and how its problems are worded: attached by the
    # campaign loader (``loop.planner_plugin`` imports the user's code, which ``planners``
    # never does), called when a planner is built or checked.
    _plugin_loader: Callable[[], type] | None = PrivateAttr(default=None)
    _plugin_refusal: Callable[[PlannerPluginError], Exception] | None = PrivateAttr(default=None)

    @property
    def label(self) -> str:
        """The planner as messages name it: ``botorch``, ..., or ``plugin module:Class``."""
        return f"plugin {self.plugin}" if self.plugin is not None else self.kind

    def attach_plugin_loader(
        self,
        loader: Callable[[], type],
        refusal: Callable[[PlannerPluginError], Exception] | None = None,
    ) -> None:
        """Say how ``plugin`` is imported: ``loader()`` returns the class or raises
        :class:`~planners.PlannerPluginError`. Only the loader imports user code, and only
        when a planner is built or checked (:func:`planners.make_planner`,
        :func:`planners.check_planner`), so reading a campaign never runs it.

        ``refusal``: the error to raise instead of a ``PlannerPluginError`` (the campaign
        loader's, naming the campaign file and the ``plugin:`` line), for the import and for
        the planner's construction (:meth:`refuse_plugin`)."""
        self._plugin_loader = loader
        self._plugin_refusal = refusal

    def refuse_plugin(self, exc: PlannerPluginError) -> Exception:
        """The error to raise for ``exc``: the attached refusal's, else ``exc`` itself."""
        return self._plugin_refusal(exc) if self._plugin_refusal is not None else exc

    def plugin_class(self) -> type:
        """The class ``plugin`` names, imported by the attached loader now if it was not yet.

        Raises:
            PlannerPluginError: no loader attached (a ``PlannerConfig`` built in Python, not
                by the campaign loader).
        """
        from planners._plugin import PlannerPluginError

        if self.plugin is None or self._plugin_loader is None:
            raise PlannerPluginError(
                f"planner plugin {self.plugin!r} has not been imported",
                fix="load the campaign with loop.load_campaign (which imports the plugin), or "
                "build the planner yourself: Class(PlannerContext(...), **args)",
                key=("plugin",),
            )
        try:
            return self._plugin_loader()
        except PlannerPluginError as exc:
            refused = self.refuse_plugin(exc)
            if refused is exc:
                raise
            raise refused from exc


# Hypervolume acquisition cost grows quickly with the number of objectives (box
# decompositions); beyond four a scalarisation is the better tool.
MAX_OBJECTIVES = 4


def check_botorch_support(objectives: Sequence[Objective], config: PlannerConfig) -> None:
    """Raise ``ValueError`` if the BoTorch planner cannot serve these objectives and settings.

    Kept apart from ``BoTorchPlanner`` (which calls it first) so that ``closedloop validate``
    can check a campaign against the planner without importing torch and BoTorch.
    """
    if not 1 <= len(objectives) <= MAX_OBJECTIVES:
        raise ValueError(
            f"BoTorchPlanner optimises 1 to {MAX_OBJECTIVES} objectives, got "
            f"{len(objectives)}; combine objectives into fewer outputs or drop some"
        )
    names = [o.name for o in objectives]
    if len(set(names)) != len(names):
        raise ValueError(f"objectives name the same output twice: {names}")
    if len(objectives) > 1 and config.acquisition != "qLogNoisyExpectedImprovement":
        raise ValueError(
            f"acquisition {config.acquisition} optimises one objective; with several "
            "objectives the planner uses qLogNoisyExpectedHypervolumeImprovement: remove "
            "planner.acquisition from the campaign"
        )


def quadratic_mean_applies(
    space: Space, objectives: Sequence[Objective], outcome_constraints: Sequence[OutcomeConstraint]
) -> bool:
    """Whether the BoTorch planner's objective GP may take the quadratic prior mean.

    It is for what it was measured on: one objective, every model column a number in
    ``[0, 1]`` (an unordered choice's one-hot columns have no centre to fall off from), and
    no outcome constraint (whose GPs model other outputs, and whose feasible region may hug
    a face). Every other model keeps a constant mean.
    """
    return len(objectives) == 1 and not space.cat_dims and not outcome_constraints


def check_prior_mean(
    space: Space,
    objectives: Sequence[Objective],
    config: PlannerConfig,
    outcome_constraints: Sequence[OutcomeConstraint],
) -> None:
    """Raise :class:`PlannerSettingError` for ``prior_mean: quadratic`` written where the
    planner keeps a constant mean (:func:`quadratic_mean_applies`): a setting that would be
    ignored is refused, never silently dropped. ``constant`` is what such a model has anyway.
    """
    if config.prior_mean != "quadratic" or quadratic_mean_applies(
        space, objectives, outcome_constraints
    ):
        return
    why = (
        "several objectives"
        if len(objectives) > 1
        else "an unordered choice parameter"
        if space.cat_dims
        else "an outcome constraint"
    )
    raise PlannerSettingError(
        f"planner.prior_mean: quadratic applies to one objective over numbers, and this "
        f"campaign has {why} (its models keep a constant mean); remove it",
        key=("prior_mean",),
        # the loader's own fix ("change planner.kind") told a botorch user to use botorch
        # (found in review, session 39)
        fix="remove planner.prior_mean (or write prior_mean: constant)"
        + (
            "; a choice whose values have an order can be `ordered: true`"
            if why == "an unordered choice parameter"
            else ""
        ),
    )


class PlannerSettingError(ValueError):
    """A ``planner:`` setting the chosen kind would not follow.

    Attributes:
        key: where it is written under ``planner:``, e.g. ``("initial", "centre")``, so the
            campaign loader can point at its own line.
        fix: what to do, when the message does not say it (the loader's own otherwise).
    """

    def __init__(self, message: str, *, key: tuple[str, ...], fix: str = "") -> None:
        self.key = key
        self.fix = fix
        super().__init__(message)


class PlannerUnavailable(ImportError):
    """A planner kind whose library is not installed: ``kind: ax`` without Ax.

    Ax (``ax-platform``) is an optional extra, ``closedloop[ax]``: without it a campaign of
    kind ``ax`` passed ``validate``, was stored by ``run``, and failed at its first proposal
    with "ModuleNotFoundError: No module named 'ax'" and a request to report a bug (found in
    review). A missing library is a matter of the environment, not of the campaign file, so
    the fix is the install, never an edit (and a stored campaign resumes once it is done).

    Attributes:
        kind: the planner kind.
        problem: what is missing, naming the environment it is missing from.
        fix: the install that brings it, or the kinds that need nothing more.
        install: the install alone (a stored campaign cannot change its kind).
        key: where the kind is written under ``planner:`` (``("kind",)``), for the line.
    """

    def __init__(self, kind: str, *, cause: ImportError | None = None) -> None:
        self.kind = kind
        self.key = ("kind",)
        module, library, extra = _OPTIONAL_LIBRARIES[kind]
        where = f"this Python environment ({sys.prefix})"
        if cause is None or cause.name == module:
            self.problem = f"planner kind {kind} needs {library}, which is not installed in {where}"
            install = f"`pip install 'closedloop[{extra}]'` into this environment"
        else:  # installed, but something it imports is missing or broken
            self.problem = (
                f"planner kind {kind} needs {library}, which is installed in {where} but "
                f"cannot be imported: {cause}"
            )
            install = (
                f"repair its install in this environment (`pip install --upgrade "
                f"'closedloop[{extra}]'`; the import error names what is missing)"
            )
        self.install = install
        self.fix = (
            f"{install}, or use another planner kind: botorch (Bayesian optimisation, "
            "installed with closedloop), sobol or random"
        )
        super().__init__(f"{self.problem}\n  fix: {self.fix}", name=module)


#: The planner kinds that run on a library closedloop does not install by default: the
#: kind -> (its import name, the library as messages name it, the extra that installs it).
_OPTIONAL_LIBRARIES = {"ax": ("ax", "Ax (ax-platform)", "ax")}


def check_available(config: PlannerConfig) -> None:
    """Raise :class:`PlannerUnavailable` if the library ``config.kind`` runs on is not
    installed.

    ``importlib.util.find_spec`` looks for the package without importing it: Ax takes ~2 s
    to import, which ``closedloop validate`` does not pay (the planner imports it at its
    first proposal, :func:`planners._ax._import_ax`, which raises the same error should the
    import fail all the same).
    """
    optional = _OPTIONAL_LIBRARIES.get(config.kind)
    if optional is None or config.plugin is not None:
        return
    try:
        found = importlib.util.find_spec(optional[0]) is not None
    except (ImportError, ValueError):  # a broken entry in sys.modules or on sys.path
        found = False
    if not found:
        raise PlannerUnavailable(config.kind)


def check_settings(config: PlannerConfig) -> None:
    """Raise :class:`PlannerSettingError` for a setting written for another planner kind
    (the first of :func:`ignored_settings`)."""
    ignored = ignored_settings(config)
    if ignored:
        raise ignored[0]


def ignored_settings(config: PlannerConfig) -> list[PlannerSettingError]:
    """Every setting written for another planner kind, which this kind would not follow.

    Only what is written counts (``model_fields_set``), and a setting is refused when the
    kind would do otherwise, not merely because the kind has no use for it: ``initial:
    {kind: sobol}`` or ``centre: false`` describe what kind ``sobol`` does anyway, and a
    benchmark or a campaign that switches ``kind`` and keeps such settings stays valid.
    ``initial.n`` and ``batch_size`` apply to every kind (the loop reads them to pace
    proposals). What each kind follows:

    * ``botorch``: everything.
    * ``ax``: every ``initial`` setting (its initial design is the BoTorch planner's, see
      ``planners._ax``); it picks its own acquisition and model, so ``acquisition`` and
      ``prior_mean`` are refused.
    * ``sobol``/``random``: every point is a point of that design, never the centre, and no
      model (``acquisition``, ``prior_mean``, another ``initial.kind``, ``initial.centre:
      true``).
    * ``plugin``: every ``initial`` setting and ``batch_size`` (its context carries them);
      a ``kind`` written beside it (two planners named), ``acquisition`` and ``prior_mean``
      are refused.
      ``args`` without a ``plugin`` are refused for every kind.

    A campaign file with one is refused (:func:`check_settings`); a campaign stored before
    they were refused keeps them, ignored as they always were (``loop.config``, with
    :func:`followed_settings`). Ax's ``initial.kind`` and ``initial.centre`` are followed
    since its design became the BoTorch planner's, also by a campaign stored before they
    were refused (when Ax ignored them): its remaining initial points are of the design it
    asked for.
    """
    if config.plugin is not None:
        return _plugin_ignores(config)
    if "args" in config.model_fields_set:
        return [
            PlannerSettingError(
                f"planner.args are the keyword arguments of a planner plugin, and kind "
                f"{config.kind} takes none",
                key=("args",),
                fix="remove planner.args, or name your own planner's class with planner.plugin",
            )
        ]
    kind = config.kind
    if kind == "botorch":
        return []
    found: list[PlannerSettingError] = []
    initial = config.initial
    written = initial.model_fields_set
    for setting in ("acquisition", "prior_mean"):
        if setting in config.model_fields_set:
            what = "Ax picks its own" if kind == "ax" else f"kind {kind} uses no model"
            found.append(
                PlannerSettingError(
                    f"planner.{setting} applies to kind: botorch only ({what}); remove it",
                    key=(setting,),
                )
            )
    if kind == "ax":
        return found
    if "kind" in written and initial.kind != kind:
        found.append(
            PlannerSettingError(
                f"planner.initial.kind: {initial.kind} does not apply to kind: {kind} "
                f"(every point of kind {kind} is a {kind} design point); remove it, or use "
                f"kind: botorch or ax for a {initial.kind} initial design",
                key=("initial", "kind"),
            )
        )
    if "centre" in written and initial.centre:
        found.append(
            PlannerSettingError(
                f"planner.initial.centre: true does not apply to kind: {kind} (kind {kind} "
                "never proposes it); remove it, or use kind: botorch or ax",
                key=("initial", "centre"),
            )
        )
    return found


def _plugin_ignores(config: PlannerConfig) -> list[PlannerSettingError]:
    """What a ``plugin`` planner would not follow: ``kind`` (two planners named; which one
    proposes would be a guess) and BoTorch's ``acquisition``. Every ``initial`` setting and
    ``batch_size`` are the plugin's to honour: its :class:`~planners.PlannerContext` carries
    them, and the loop paces proposals by ``initial.n`` and ``batch_size`` for every planner.
    """
    found: list[PlannerSettingError] = []
    if "kind" in config.model_fields_set:
        found.append(
            PlannerSettingError(
                f"planner.kind: {config.kind} and planner.plugin: {config.plugin} both name "
                "the planner",
                key=("kind",),
                fix="remove planner.kind (the plugin proposes every point), or remove "
                "planner.plugin and planner.args to use the built-in planner",
            )
        )
    for setting in ("acquisition", "prior_mean"):
        if setting in config.model_fields_set:
            found.append(
                PlannerSettingError(
                    f"planner.{setting} applies to kind: botorch only (a plugin picks its "
                    "own model)",
                    key=(setting,),
                    fix="remove it; a setting of your planner's own goes under planner.args",
                )
            )
    return found


def followed_settings(config: PlannerConfig) -> PlannerConfig:
    """``config`` without the settings its kind ignores (:func:`ignored_settings`): the
    planner it builds proposes exactly what ``config``'s would, and passes
    :func:`check_settings`."""
    ignored = ignored_settings(config)
    if not ignored:
        return config
    data = config.model_dump(exclude_unset=True)
    for setting in ignored:
        *parents, last = setting.key
        node = data
        for key in parents:
            node = node.get(key, {})
        node.pop(last, None)
    return PlannerConfig.model_validate(data)
