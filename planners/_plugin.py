"""Your own planner, named by a campaign: ``planner: {plugin: module:Class, args: {...}}``.

The class is built as ``Class(context, **args)``: a :class:`PlannerContext` carries what the
campaign says a planner must honour (the space with its constraints, the objectives, the
outcome constraints, the seed, the initial design, the batch size), and ``args`` are the
campaign's own keyword arguments, plain YAML data stored with it. The object it builds
must satisfy :class:`~planners.Planner`; from there the loop treats it as it treats its
own planners (rebuilt by ingesting the store's trials on every resume, proposals checked
at the engine's seam).

This package never imports user code (``planners`` stays free of instruments and of the
import machinery): the campaign loader attaches a loader to the config
(:meth:`~planners.PlannerConfig.attach_plugin_loader`, ``loop.planner_plugin``), called
when a planner is built or checked.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from planners._protocol import Objective, OutcomeConstraint, Planner

if TYPE_CHECKING:
    from planners._config import InitialDesign, PlannerConfig
    from planners._space import Space


@dataclass(frozen=True)
class PlannerContext:
    """What a campaign asks of its planner, as a plugin's constructor receives it.

    Attributes:
        space: the search space: parameters, constraints (``space.feasible``,
            ``space.validate``) and, for a lookup dataset, its candidate rows. Proposals
            must be members (``space.validate(point)`` returns them unchanged).
        objectives: what to optimise, in order (``Objective.sign``: +1 maximise, -1
            minimise).
        outcome_constraints: bounds a measured output must respect for a trial to count.
        seed: the campaign's seed. Derive every random draw from it and the planner's
            state (e.g. ``numpy.random.default_rng([seed, n_ingested, len(pending)])``):
            the same seed and trials then give the same proposals, after a resume too.
        initial: the campaign's ``planner.initial`` (``initial.size(space.dim)``: the
            number of design points the campaign expects before a model's proposals).
        batch_size: ``planner.batch_size``: the loop asks for at least this many points
            per ``suggest`` call.
    """

    space: Space
    objectives: tuple[Objective, ...]
    outcome_constraints: tuple[OutcomeConstraint, ...]
    seed: int
    initial: InitialDesign
    batch_size: int

    @property
    def n_initial(self) -> int:
        """The number of initial design points the campaign asks for."""
        return self.initial.size(self.space.dim)


class PlannerPluginError(ValueError):
    """A ``plugin:`` that does not name a usable planner class, or whose planner cannot
    serve the campaign.

    Attributes:
        problem: what is wrong.
        fix: what to do about it.
        key: where it is written under ``planner:`` (``("plugin",)`` or ``("args",)``), so
            the campaign loader can point at its line.
    """

    def __init__(self, problem: str, *, fix: str, key: tuple[str, ...] = ("plugin",)) -> None:
        self.problem, self.fix, self.key = problem, fix, key
        super().__init__(f"{problem}; {fix}" if fix else problem)


def plugin_context(
    space: Space,
    objectives: Sequence[Objective],
    config: PlannerConfig,
    seed: int,
    outcome_constraints: Sequence[OutcomeConstraint] = (),
) -> PlannerContext:
    """The :class:`PlannerContext` of a campaign's ``planner:`` section."""
    return PlannerContext(
        space=space,
        objectives=tuple(objectives),
        outcome_constraints=tuple(outcome_constraints),
        seed=seed,
        initial=config.initial,
        batch_size=config.batch_size,
    )


def build_plugin(
    cls: type, context: PlannerContext, args: Mapping[str, Any], *, spec: str
) -> Planner:
    """``cls(context, **args)``, checked to satisfy :class:`~planners.Planner`.

    Raises:
        PlannerPluginError: ``cls`` is not a class, its constructor does not take
            ``(context, **args)`` or raised, or what it built lacks ``suggest``, ``ingest``
            or ``last_kinds`` (``spec``: the ``plugin:`` as written, for the message).
    """
    _check_signature(cls, args, spec=spec)
    try:
        planner = cls(context, **args)
    except Exception as exc:
        raise PlannerPluginError(
            f"planner plugin {spec}: {_call(cls, args)} raised {type(exc).__name__}: {exc}",
            fix="fix the planner.args, or the plugin if they are right"
            if isinstance(exc, TypeError | ValueError)
            else "fix the plugin (its constructor must not fail for a valid campaign)",
            key=("args",) if isinstance(exc, TypeError | ValueError) and args else ("plugin",),
        ) from exc
    missing = [
        name
        for name in ("suggest", "ingest", "last_kinds")
        if not hasattr(planner, name)
        or (name != "last_kinds" and not callable(getattr(planner, name)))
    ]
    if missing:
        raise PlannerPluginError(
            f"planner plugin {spec}: a {cls.__name__} is not a planner: it has no "
            f"{', '.join(missing)}",
            fix="give the class suggest(n, pending), ingest(observations) and a last_kinds "
            "list (the Planner protocol; README: Your own planner)",
        )
    return planner  # type: ignore[no-any-return]  # checked just above


def check_plugin(cls: type, context: PlannerContext, args: Mapping[str, Any], *, spec: str) -> None:
    """Raise :class:`PlannerPluginError` if ``cls`` cannot serve the campaign of ``context``.

    What ``closedloop validate`` (and ``run``, before anything is stored) asks: the class's
    own ``check(context, **args)`` classmethod when it has one (a ``ValueError`` there is the
    plugin's refusal of the campaign, shown at the ``plugin:`` line), then a planner built
    once (its constructor may refuse, too). No trial is proposed.
    """
    _check_signature(cls, args, spec=spec)
    check = getattr(cls, "check", None)
    if callable(check):
        try:
            check(context, **args)
        except ValueError as exc:
            raise PlannerPluginError(
                f"planner plugin {spec} cannot serve this campaign: {exc}",
                fix="change the campaign (or planner.args) as the plugin asks, or use another "
                "planner",
            ) from exc
        except Exception as exc:
            raise PlannerPluginError(
                f"planner plugin {spec}: {cls.__name__}.check(context, ...) raised "
                f"{type(exc).__name__}: {exc}",
                fix="fix the plugin's check (it refuses a campaign with ValueError)",
            ) from exc
    build_plugin(cls, context, args, spec=spec)


def _check_signature(cls: type, args: Mapping[str, Any], *, spec: str) -> None:
    """``cls`` is a class whose constructor takes ``(context, **args)``."""
    if not inspect.isclass(cls):
        raise PlannerPluginError(
            f"planner plugin {spec} is not a class (it is of type {type(cls).__name__})",
            fix="name the planner's class (module:Class, path/to/file.py:Class)",
        )
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # no introspectable signature: the call will tell
        return
    try:
        signature.bind(None, **args)
    except TypeError as exc:
        if args:
            fix = (
                f"give planner.args that {cls.__name__}{signature} accepts (it is called with "
                "the context first, then the args as keywords)"
            )
        else:
            fix = f"define the constructor as {cls.__name__}(context, **keywords)"
        raise PlannerPluginError(
            f"planner plugin {spec}: {cls.__name__}{signature} cannot be called as "
            f"{_call(cls, args)}: {exc}",
            fix=fix,
            key=("args",) if args else ("plugin",),
        ) from None


def _call(cls: type, args: Mapping[str, Any]) -> str:
    shown = "".join(f", {k}={v!r}" for k, v in args.items())
    return f"{getattr(cls, '__name__', cls)}(context{shown})"
