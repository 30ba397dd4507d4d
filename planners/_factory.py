"""Build the planner a campaign's ``planner:`` section asks for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from planners._config import (
    PlannerConfig,
    check_botorch_support,
    check_prior_mean,
    check_settings,
)
from planners._plugin import PlannerPluginError
from planners._protocol import Objective, OutcomeConstraint, Planner
from planners._room import check_room
from planners._space import Space

if TYPE_CHECKING:
    from planners._botorch import BoTorchSettings


def make_planner(
    space: Space,
    objectives: Sequence[Objective],
    config: PlannerConfig,
    seed: int,
    *,
    outcome_constraints: Sequence[OutcomeConstraint] = (),
    settings: BoTorchSettings | None = None,
) -> Planner:
    """The planner for ``config.kind``, or the ``config.plugin`` class, checked against the
    space and objectives now: the one place planners are built.

    Checking at construction (e.g. the BoTorch planner's limit of four objectives) makes an
    unsupported campaign fail when it loads rather than after its initial design. A plugin
    is built as ``Class(context, **config.args)`` (:mod:`planners._plugin`); its class comes
    from the loader the campaign loader attached (:meth:`PlannerConfig.plugin_class`),
    which imports the user's code now if nothing imported it yet.

    Args:
        space: the search space.
        objectives: what to optimise (model-free baselines ignore them).
        config: the campaign's ``planner:`` section.
        seed: the campaign seed; the same seed and trials give the same proposals.
        outcome_constraints: bounds on outputs a trial must respect to count (model-free
            baselines ignore them; BoTorch and Ax model them).
        settings: BoTorch model/optimiser knobs (benchmarks, tests); ignored by baselines.
    """
    if not objectives:
        raise ValueError("a campaign needs at least one objective")
    # What the campaign loader refuses is refused here too, for a planner built in Python:
    # a setting for another kind, and linear constraints that leave no room to sample.
    check_settings(config)
    check_room(space)
    if config.plugin is not None:
        from planners._plugin import build_plugin, plugin_context

        context = plugin_context(space, objectives, config, seed, outcome_constraints)
        cls = config.plugin_class()
        try:
            return build_plugin(cls, context, config.args, spec=config.plugin)
        except PlannerPluginError as exc:  # in the campaign loader's words, when it gave some
            refused = config.refuse_plugin(exc)
            if refused is exc:
                raise
            raise refused from exc
    if config.kind == "botorch":
        from planners._botorch import BoTorchPlanner  # lazy: BoTorch and GPyTorch take ~1.5 s

        return BoTorchPlanner(
            space,
            objectives,
            config,
            seed,
            settings=settings,
            outcome_constraints=outcome_constraints,
        )
    if config.kind == "ax":
        from planners._ax import AxPlanner  # lazy: Ax is slow to import

        return AxPlanner(space, objectives, config, seed, outcome_constraints=outcome_constraints)
    from planners._baselines import RandomPlanner, SobolPlanner  # torch's Sobol engine

    if config.kind == "sobol":
        return SobolPlanner(space, seed)
    if config.kind == "random":
        return RandomPlanner(space, seed)
    raise ValueError(f"unknown planner kind {config.kind!r}")  # pragma: no cover


def check_planner(
    space: Space,
    objectives: Sequence[Objective],
    config: PlannerConfig,
    *,
    outcome_constraints: Sequence[OutcomeConstraint] = (),
) -> None:
    """Raise ``ValueError`` if ``config.kind`` cannot serve this campaign; fit nothing.

    What ``closedloop validate`` asks, as cheaply as it can be answered: BoTorch's limits are
    checked without importing torch or BoTorch (the planner runs the same check when it is
    built), the model-free baselines serve every space, and Ax's checks need Ax's parameter
    types, so the Ax planner is built. A setting written for another kind (BoTorch's
    ``acquisition`` under ``kind: ax``) is refused rather than ignored: a
    :class:`~planners._config.PlannerSettingError` carrying the setting's key. A plugin is
    imported (by the loader attached to ``config``), asked its own ``check`` and built once
    (:func:`planners._plugin.check_plugin`; a :class:`~planners._plugin.PlannerPluginError`
    carrying its key), with seed 0 as the other kinds are checked.
    """
    if not objectives:
        raise ValueError("a campaign needs at least one objective")
    check_settings(config)
    if config.plugin is not None:
        from planners._plugin import check_plugin, plugin_context

        context = plugin_context(space, objectives, config, 0, outcome_constraints)
        check_plugin(config.plugin_class(), context, config.args, spec=config.plugin)
        return
    if config.kind == "botorch":
        check_botorch_support(objectives, config)
        check_prior_mean(space, objectives, config, outcome_constraints)
    elif config.kind == "ax":
        make_planner(space, objectives, config, 0, outcome_constraints=outcome_constraints)
