"""Built-in simulators by name, as a campaign file's ``instrument: {simulator: NAME}`` says."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from types import MappingProxyType

from simulators._flow_reactor import flow_reactor_problem
from simulators._functions import TestProblem, ackley, branin, hartmann6, rosenbrock

logger = logging.getLogger(__name__)

#: Every built-in problem by name (read-only; build variants with e.g. ``ackley(dim=6)``).
SIMULATORS: Mapping[str, TestProblem] = MappingProxyType(
    {p.name: p for p in (branin(), hartmann6(), ackley(), rosenbrock(), flow_reactor_problem())}
)


class UnknownSimulatorError(KeyError):
    """No built-in simulator has that name; the message lists the names and a suggestion.

    A ``KeyError`` (lookup by name failed) whose ``str()`` is the plain message: ``KeyError``
    normally shows the repr of its argument, which would wrap a sentence in quotes.

    Attributes:
        name: The name asked for.
        suggestion: The closest allowed name, or ``None``.
    """

    def __init__(self, name: str, allowed: tuple[str, ...]) -> None:
        self.name = name
        self.allowed = allowed
        close = difflib.get_close_matches(str(name).lower(), allowed, n=1, cutoff=0.5)
        self.suggestion = close[0] if close else None
        hint = f"; did you mean {self.suggestion!r}?" if self.suggestion else ""
        self.message = f"unknown simulator {name!r}{hint} (choose from {', '.join(allowed)})"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def get_problem(name: str) -> TestProblem:
    """The built-in problem called ``name``.

    Raises:
        UnknownSimulatorError: (a ``KeyError``) naming the allowed names and the nearest one.
    """
    try:
        return SIMULATORS[name]
    except (KeyError, TypeError):
        raise UnknownSimulatorError(name, tuple(SIMULATORS)) from None
