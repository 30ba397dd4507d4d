"""The data keys a simulated instrument records, and the rule that they be distinct.

Kept apart from ``simulators._devices`` (which imports ophyd) because the campaign loader
applies the same rule at ``closedloop validate``, where importing ophyd would cost ~0.6 s.
"""

from __future__ import annotations

from collections.abc import Iterable


def data_keys(inputs: Iterable[str], outputs: Iterable[str]) -> list[str]:
    """The data keys a simulated instrument records, in order: each input's readback (named
    like the input) and its ``{input}_setpoint``, then each output."""
    names = list(inputs)
    return [*names, *(f"{k}_setpoint" for k in names), *outputs]


def data_key_clashes(
    inputs: Iterable[str], outputs: Iterable[str], name: str | None = None
) -> list[str]:
    """Names that :func:`build_simulated_instrument` would record twice, sorted.

    The one rule for both the device builder and the campaign loader (which calls it so a
    clash is reported at ``validate`` with the campaign's file and line, not mid-run): the
    data keys (see :func:`data_keys`) must be unique and, when ``name`` is given, differ from
    the detector's device name, since Bluesky files each reading under its device's name.
    """
    keys = data_keys(inputs, outputs)
    clashes = {k for k in keys if keys.count(k) > 1}
    if name is not None and name in keys:
        clashes.add(name)
    return sorted(clashes)
