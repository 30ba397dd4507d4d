"""``closedloop campaigns`` lists a store's campaigns; a mistyped ``-c NAME`` gets the nearest.

Found in review: a store of 58 campaigns had no command that listed them, and ``-c camp-7``
(the campaign was ``camp-07``) was answered with "no campaign" and nothing more.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from loop import Runner, Store, parse_campaign
from loop.cli import app

CAMPAIGN = """
name: NAME
parameters: [{name: x1, type: float, bounds: [-5, 10]}, {name: x2, type: float, bounds: [0, 15]}]
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin}
planner: {kind: sobol}
budget: {max_trials: TRIALS}
seed: 1
"""


def _store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'many.db'}"
    for name, trials in (("camp-07", 2), ("camp-08", 3), ("other", 1)):
        text = CAMPAIGN.replace("NAME", name).replace("TRIALS", str(trials))
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        store = Store(url)
        Runner(parse_campaign(text, path=path, base_dir=tmp_path), store).run()
        store.close()
    return url


def test_campaigns_lists_each_with_its_trials_and_a_typo_gets_the_nearest(
    tmp_path: Path,
) -> None:
    url = _store(tmp_path)
    cli = CliRunner()
    listed = cli.invoke(app, ["campaigns", "--store", url])
    assert listed.exit_code == 0, listed.output
    lines = [" ".join(line.replace("│", " ").split()) for line in listed.output.splitlines()]
    assert any(line.startswith("1 camp-07 completed 2 completed") for line in lines), lines
    assert any(line.startswith("2 camp-08 completed 3 completed") for line in lines), lines
    assert any(line.startswith("3 other completed 1 completed") for line in lines), lines

    typo = cli.invoke(app, ["status", "--store", url, "-c", "camp-7"])
    said = " ".join(str(typo.exception).split())  # `closedloop` prints it, exit 2
    assert "no campaign 'camp-7'" in said and "did you mean 'camp-07'?" in said
    assert f"`closedloop campaigns --store {url}` lists the 3 campaign name(s)" in said


def test_an_empty_store_lists_no_campaign(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(url).close()
    listed = CliRunner().invoke(app, ["campaigns", "--store", url])
    assert listed.exit_code == 0 and "no campaign in" in listed.output
