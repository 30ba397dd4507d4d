"""An equality over integer parameters squeezes no float parameter (``closedloop validate``).

``n + m <= 7`` and ``n + m >= 7`` over ints validated alone, but beside an unrelated
``x <= 0.9`` on a float the file was refused, every planner kind: "constraints[0] ... and
constraints[1] ... and constraints[2] 'x <= 0.9' leave the float parameters no room"
(found in review: the no-room check ran over every constraint, and the zero room came from
the integer pair). The floats' room is now judged with the integer-only constraints held,
so the file validates; a genuine squeeze or conflict is still refused, naming only the
constraints at fault.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loop.cli import app
from loop.errors import CampaignConfigError

CAMPAIGN = """name: inteq
parameters:
  - {name: x, type: float, bounds: [0, 1]}
  - {name: y, type: float, bounds: [0, 1]}
  - {name: n, type: int, bounds: [1, 6]}
  - {name: m, type: int, bounds: [1, 6]}
constraints:
%s
objectives:
  - {name: f, goal: minimize}
instrument: manual
planner: {kind: %s}
budget: {max_trials: 5}
seed: 1
"""
FIRST = 8  # the line of constraints[0]
EQUALITY = ["n + m <= 7", "n + m >= 7"]


def _validate(tmp_path: Path, constraints: list[str], kind: str = "botorch") -> str | None:
    """``closedloop validate``'s refusal (the message its entry point prints after
    ``error:``, exit code 2), or None when the file validates."""
    path = tmp_path / "inteq.yaml"
    path.write_text(CAMPAIGN % ("\n".join(f'  - "{c}"' for c in constraints), kind))
    result = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "300"})
    if result.exception is None:
        assert result.exit_code == 0 and result.output.startswith("ok "), result.output
        return None
    assert isinstance(result.exception, CampaignConfigError), result.exception
    return " ".join(str(result.exception).split())


def _named(constraints: list[str], *indices: int) -> str:
    return " and ".join(f"constraints[{i}] '{constraints[i]}'" for i in indices)


@pytest.mark.parametrize("kind", ["botorch", "sobol", "random"])
def test_an_integer_equality_beside_a_float_bound_validates(tmp_path: Path, kind: str) -> None:
    for extra in ([], ["x <= 0.9"], ["x <= 0.9", "x + y <= 1.5", "x + n <= 6.5"]):
        assert _validate(tmp_path, [*EQUALITY, *extra], kind) is None


def test_ax_refuses_the_integer_equality_for_its_own_reason(tmp_path: Path) -> None:
    """Ax's sampler cannot reach an equality's integer points: its own refusal, naming the
    pair and the planner kinds that can, not the floats' room."""
    output = _validate(tmp_path, [*EQUALITY, "x <= 0.9"], "ax")
    assert output is not None
    assert "constraints 0 ('n + m <= 7') and 1 ('n + m >= 7') together are an equality" in output
    assert "float parameters no room" not in output


@pytest.mark.parametrize(
    ("constraints", "named", "message"),
    [
        # an integer bound pushes a float's constraint to its edge: x = 0 whenever n >= 5
        (["n >= 5", "x + n <= 5", "y <= 0.9"], (0, 1), "leave the float parameters no room"),
        # a float equality beside an integer one: the float pair only
        ([*EQUALITY, "x + y <= 1", "x + y >= 1"], (2, 3), "leave the float parameters no room"),
        # floats met at one corner only by three constraints, no pair at fault: the three
        (
            [*EQUALITY, "x >= 0.5", "y >= 0.5", "x + y <= 1"],
            (2, 3, 4),
            "leave the float parameters no room",
        ),
        # an integer contradiction beside a float bound: the contradicting pair
        (["n + m <= 7", "x <= 0.9", "n + m >= 8"], (0, 2), "can never hold together"),
        # a float contradiction of three beside an integer equality: the three
        (
            ["x >= 0.6", *EQUALITY, "y >= 0.6", "x + y <= 1"],
            (0, 3, 4),
            "can never hold together",
        ),
    ],
    ids=["int_bound_squeezes", "float_pair", "float_corner", "int_conflict", "float_conflict"],
)
def test_a_genuine_squeeze_or_conflict_is_refused_naming_its_constraints(
    tmp_path: Path, constraints: list[str], named: tuple[int, ...], message: str
) -> None:
    output = _validate(tmp_path, constraints)
    assert output is not None
    line = FIRST + max(named)
    assert f"inteq.yaml:{line}: {_named(constraints, *named)} {message}" in output, output
    others = set(range(len(constraints))) - set(named)
    assert not any(f"constraints[{i}]" in output for i in others), output
