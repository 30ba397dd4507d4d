"""Proposal strategies behind one protocol: random, Sobol, BoTorch, Ax, and your own
(``planner: {plugin: ...}``, :class:`PlannerContext`)."""

from simulators._lazy import attach_stub

# Submodules load on first use of one of their names (SPEC 1, as in scikit-image and
# networkx): `closedloop status` then imports the store, not torch, BoTorch and ophyd.
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
