"""Instruments: Ophyd devices driven by one Bluesky run per trial.

``build_instrument`` turns a campaign's ``instrument:`` section into devices, ``Dispatcher``
runs each trial on a real ``RunEngine`` and returns a ``TrialResult`` with the run's
documents. Nothing here imports botorch, torch, ``planners`` or ``loop``.
"""

from simulators._lazy import attach_stub

# Submodules load on first use of one of their names (SPEC 1, as in scikit-image and
# networkx): `closedloop status` then imports the store, not torch, BoTorch and ophyd.
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
