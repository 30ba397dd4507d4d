"""Installed versions, read from package metadata: nothing is imported.

Its own module, imported without ophyd or bluesky: ``closedloop --version`` took 2-5 s
importing them through :mod:`instruments._dispatch` (found in review), slower than
``status`` of a 5000-trial store.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Mapping


def closedloop_version() -> str:
    """closedloop's installed version: the start documents' ``versions``, ``closedloop
    --version`` and the message that refuses a store written by a newer closedloop."""
    return installed_version("closedloop") or "unknown"  # unknown: run from a source tree


#: The planner stack, which every run's start document names in ``versions`` beside
#: closedloop and what bluesky puts there (bluesky, ophyd, ophyd_async, event_model): the
#: model that chose a trial's point is part of how the trial came about ({key: distribution};
#: ``loop.provenance`` records them with each session too).
PLANNER_STACK = {"botorch": "botorch", "gpytorch": "gpytorch", "torch": "torch"}


@functools.cache
def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (``None`` when it is not installed), read
    from its metadata: nothing is imported, so instruments never load torch to name it.
    Read once per process: the code a process runs is what it imported at its start, not
    what a later ``pip install`` leaves on disk."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_versions(distributions: Mapping[str, str]) -> dict[str, str]:
    """``{key: version}`` for each installed ``{key: distribution}``; the others left out."""
    found = {key: installed_version(dist) for key, dist in distributions.items()}
    return {key: version for key, version in found.items() if version is not None}
