"""The data keys a simulated instrument records, and the rule that they be distinct.

Kept apart from ``simulators._devices`` (which imports ophyd) because the campaign loader
applies the same rule at ``closedloop validate``, where importing ophyd would cost ~0.6 s.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: Ends the error of a function's exception that says it is transient (``transient = True``):
#: ``loop.failures.said_transient`` reads it back from a stored error, when ``resume``
#: reconciles a trial whose outcome a crash kept from the store (its flag lost with the
#: process; found in review).
SAID_TRANSIENT = "; its exception says it is transient"

#: How a failed trial's error ends when a user's function used a key one edit away from a
#: campaign name: returned ``'Yield'`` for the output ``yield``, or read ``inputs["temprature"]``.
#: ``loop.runner`` reads it (:func:`misnamed`): every trial would fail alike, so a campaign
#: that has measured nothing yet stops at the first one instead of at ``max_failures``.
#: No command in it: the error is stored with the trial, which names neither store nor
#: campaign, and a bare `closedloop resume` pasted resumed the default store's latest
#: campaign; the runner's stop reason names the whole command (session 39).
_MISNAMED_FIX = (
    "rename the key in the function, then resume this campaign (renaming the {what} in the "
    "campaign file instead needs a new campaign: a stored one keeps its file)"
)
#: What :func:`misnamed` looks for: the fix's words before the command, which errors stored
#: by earlier versions ("then `closedloop resume`") share.
_MISNAMED_MARK = "rename the key in the function, then "


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


def misnamed_hint(pairs: Iterable[tuple[str, str]], what: str) -> str:
    """``; is 'Yield' meant to be 'yield'? ...`` for ``(used, campaign name)`` pairs, or
    ``""`` for none; ``what``: ``output`` or ``parameter``."""
    shown = [f"'{used}' meant to be '{name}'" for used, name in pairs]
    if not shown:
        return ""
    keys = (
        "the dict's keys must be the campaign's outputs"
        if what == "output"
        else ("the inputs dict's keys are the campaign's parameters")
    )
    return f"; is {' and '.join(shown)}? {keys}: {_MISNAMED_FIX.format(what=what)}"


def near_name(used: str, names: Iterable[str]) -> str | None:
    """The campaign name ``used`` is most likely a typo of, or ``None``: the same letters in
    another case (``YIELD``; difflib rates that no match at all), else a close one."""
    names = list(names)
    same = [n for n in names if n.casefold() == used.casefold()]
    if same:
        return same[0]
    near = difflib.get_close_matches(used, names, n=1)
    return near[0] if near else None


def misnamed(error: str | None) -> bool:
    """Whether a trial failed on a key :func:`misnamed_hint` named (a typo in the code)."""
    return error is not None and _MISNAMED_MARK in error
