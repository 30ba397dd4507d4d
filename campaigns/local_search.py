"""A planner of your own, for ``own_planner.yaml``: random points first, then Gaussian steps
around the best point measured so far (README: Your own planner)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from planners import Observation, PlannerContext, Point


class LocalSearch:
    """Random initial points, then steps of ``radius`` (a fraction of each parameter's
    range) around the best point so far; never a point in flight (``pending``) again."""

    def __init__(self, context: PlannerContext, radius: float = 0.1) -> None:
        if not 0 < radius <= 1:
            raise ValueError(f"radius must be in (0, 1], got {radius}")
        self.context, self.radius = context, radius
        self.seen = 0  # trials ingested: with the seed, what each call's draws derive from
        self.best: tuple[float, Point] | None = None
        self.last_kinds: list[str] = []

    def ingest(self, observations: Sequence[Observation]) -> None:
        goal = self.context.objectives[0]
        for o in observations:  # completed, failed and abandoned trials, as they ended
            self.seen += 1
            if o.usable_for([goal.name]):  # completed, with a finite value
                value = goal.sign * o.outputs[goal.name]
                if self.best is None or value > self.best[0]:
                    self.best = (value, dict(o.parameters))

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        space, ctx = self.context.space, self.context
        rng = np.random.default_rng([ctx.seed, self.seen, len(pending)])  # same trials, same points
        lo, hi = space.bounds.numpy()
        taken = {tuple(x) for x in space.encode(list(pending)).tolist()}
        points: list[Point] = []
        self.last_kinds = []
        for _ in range(1000 * n):
            if len(points) == n:
                break
            design = self.best is None or self.seen + len(pending) + len(points) < ctx.n_initial
            if design or self.best is None:
                X = space.from_unit_cube(torch.tensor(rng.random((1, space.dim))))
            else:
                centre = space.encode([self.best[1]]).numpy()
                step = rng.normal(0.0, self.radius, centre.shape) * (hi - lo)
                X = torch.tensor(np.clip(centre + step, lo, hi))
            (point,) = space.decode(X)
            key = tuple(space.encode([point])[0].tolist())
            if key not in taken and space.contains(point):  # new, and within the constraints
                taken.add(key)
                points.append(point)
                self.last_kinds.append("initial" if design else "local")
        if len(points) < n:
            raise RuntimeError(f"found {len(points)} new points of {n} asked for")
        return points
