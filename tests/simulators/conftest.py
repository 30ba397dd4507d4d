"""Fixtures for the simulator tests: a RunEngine torn down cleanly and its documents."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from bluesky import RunEngine
from bluesky.utils import TransitionError

from tests.dask_cluster import one_worker, sleep  # noqa: F401 - the Dask tests' fixtures


@pytest.fixture
def RE() -> Iterator[RunEngine]:  # noqa: N802 - the name every bluesky user expects
    """A RunEngine on its own event loop, stopped and closed after the test.

    Closing the loop matters under ``filterwarnings = error``: a loop left open is reported as
    an unraisable ``ResourceWarning`` when it is garbage collected.
    """
    loop = asyncio.new_event_loop()
    engine = RunEngine({}, loop=loop)
    yield engine
    if engine.state not in ("idle", "panicked"):
        try:
            engine.halt()
        except TransitionError:
            pass
    loop.call_soon_threadsafe(loop.stop)
    engine._th.join()
    loop.close()


@pytest.fixture
def docs(RE: RunEngine) -> list[tuple[str, dict[str, Any]]]:  # noqa: N803
    """Every (name, document) the RunEngine emits during the test, in order."""
    collected: list[tuple[str, dict[str, Any]]] = []
    RE.subscribe(lambda name, doc: collected.append((name, doc)))
    return collected
