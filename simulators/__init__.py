"""Simulated instruments: benchmark functions and a flow reactor, wrapped as Ophyd devices.

The physics of every simulator is a pure function (inputs dict -> outputs dict), testable
without a RunEngine; :func:`build_simulated_instrument` wraps any such function as Ophyd
devices (one settable :class:`SimActuator` per input, a triggerable :class:`SimDetector`) so
that a dry run drives exactly the code path real hardware uses. This package is the leaf of
the dependency graph: it imports neither ``planners``, ``instruments`` nor ``loop``.
"""

from simulators._lazy import attach_stub

# Submodules load on first use of one of their names (SPEC 1, as in scikit-image and
# networkx): `closedloop status` then imports the store, not torch, BoTorch and ophyd.
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
