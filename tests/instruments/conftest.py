from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from bluesky import RunEngine
from bluesky.run_engine import get_bluesky_event_loop, set_bluesky_event_loop
from bluesky.utils import DuringTask
from epics_ioc import epics_ioc  # noqa: F401  (one session IOC for every module)
from instrument_doubles import FakeInstrument, make_instrument


@pytest.fixture
def RE() -> Iterator[RunEngine]:
    """A real RunEngine without SIGINT handling, its loop thread stopped after the test."""
    loop = asyncio.new_event_loop()
    engine = RunEngine({}, loop=loop, context_managers=[], during_task=DuringTask())
    yield engine
    if engine.state not in ("idle", "panicked"):
        engine.halt()
    loop.call_soon_threadsafe(loop.stop)
    engine._th.join(timeout=5)
    loop.close()
    if get_bluesky_event_loop() is loop:
        set_bluesky_event_loop(None)


@pytest.fixture
def docs() -> list[tuple[str, dict[str, Any]]]:
    """Collected ``(name, doc)`` pairs; pass ``docs.append``-style sinks to collect."""
    return []


@pytest.fixture
def instrument() -> FakeInstrument:
    return make_instrument()
