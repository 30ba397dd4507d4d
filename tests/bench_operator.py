"""An operator at an ``instrument: manual`` campaign's prompt, for the tests that run every
bundled campaign (campaigns/bench.yaml is a manual one: README, "A human in the loop")."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from loop import Runner
from loop.asktell import TerminalOperator


class AtTheBench:
    """Types on ``sys.stdin`` (``input()`` reads a non-terminal stdin with ``readline``):
    for each trial a yield that differs from the last, then Enter (the parameters as set)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.trials = 0

    def readline(self, size: int = -1) -> str:
        if not self.lines:
            self.trials += 1
            self.lines = [f"{0.2 + 0.1 * (self.trials % 7):.2f}", ""]
        return f"{self.lines.pop(0)}\n"


def answer_at_the_bench(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> io.StringIO | None:
    """For a manual campaign, the real terminal prompt answered by :class:`AtTheBench`;
    what the prompt shows is returned. Nothing for any other instrument."""
    if not runner.campaign.instrument.manual:
        return None
    shown = io.StringIO()
    runner.operator = TerminalOperator(runner, Console(file=shown, width=200))
    monkeypatch.setattr(sys, "stdin", AtTheBench())
    return shown
