"""``closedloop plan --dry-run --store URL``: the next proposal of a stored campaign (its
planner rebuilt from the store's trials) as the exact Bluesky messages, with nothing sent to
a device and nothing written to the store; ``resume`` then measures that very point.
No IOC: the devices are plugin ``Signal``s.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loop.cli import app
from loop.config import load_campaign
from loop.runner import Runner
from loop.store import Store

INSTRUMENT = """\
name: plan-bench
inputs:
  x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2]}
  z: {device: "ophyd:Signal", args: {value: 1.0}, limits: [-1, 1]}
outputs:
  y: {device: "ophyd:Signal", args: {value: 0.5}}
"""
CAMPAIGN = """\
name: plan-bench
parameters:
  - {name: x, type: float, bounds: [0, 2]}
  - {name: z, type: float, bounds: [-1, 1]}
objectives:
  - {name: y, goal: maximize}
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 11
"""
HEADER = re.compile(r"next trial #(\d+) at x=(\S+), z=(\S+)")


def _commands(output: str) -> list[str]:
    return [line.split()[1] for line in output.splitlines() if line.strip()[:1].isdigit()]


def test_plan_dry_run_of_a_stored_campaign_is_what_resume_runs_next(tmp_path: Path) -> None:
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    try:
        summary = Runner(load_campaign(tmp_path / "c.yaml"), store, max_trials=2).run()
        cid = summary.campaign_id
        assert [t.status for t in store.trials(cid)] == ["completed", "completed"]
        (tmp_path / "bench.yaml").unlink()  # the stored instrument text is enough

        out = CliRunner().invoke(app, ["plan", "--dry-run", "--store", url, "-c", str(cid)])
        assert out.exit_code == 0, out.output
        match = HEADER.search(out.output)
        assert match is not None, out.output
        assert f"plan-bench (id {cid}, completed, 2 stored trials)" in out.output
        assert match.group(1) == "3"
        x, z = float(match.group(2)), float(match.group(3))
        commands = _commands(out.output)
        assert commands[0] == "open_run" and commands[-1] == "close_run"
        assert commands[1:4] == ["set", "set", "wait"]
        assert f"x {match.group(2)}" in out.output and f"z {match.group(3)}" in out.output
        assert len(store.trials(cid)) == 2  # a dry run writes nothing

        # by the campaign file's name, too (the file is the same text: no note)
        by_name = CliRunner().invoke(
            app, ["plan", str(tmp_path / "c.yaml"), "--dry-run", "--store", url]
        )
        assert by_name.exit_code == 0, by_name.output
        assert HEADER.search(by_name.output).groups() == match.groups()  # type: ignore[union-attr]
        assert "differs" not in by_name.output

        # the file alone (no store) plans the campaign's first trial instead
        fresh = CliRunner().invoke(app, ["plan", str(tmp_path / "c.yaml"), "--dry-run"])
        assert "next trial #" not in fresh.output

        resumed = Runner.from_store(store, cid, max_trials=3).resume()
        assert resumed.completed == 3
        third = store.trials(cid)[2]
        assert third.parameters["x"] == pytest.approx(x, rel=1e-5, abs=1e-6)
        assert third.parameters["z"] == pytest.approx(z, rel=1e-5, abs=1e-6)
    finally:
        store.close()


def test_plan_with_store_names_a_missing_campaign(tmp_path: Path) -> None:
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Store(url).close()
    out = CliRunner().invoke(app, ["plan", str(tmp_path / "c.yaml"), "--dry-run", "--store", url])
    assert out.exit_code == 2
    assert "no campaign named 'plan-bench'" in out.output
    # the run it offers starts the campaign in this store, not the default one (review U)
    said = "".join(out.output.replace("│", "").split())  # rich's box wraps anywhere
    run = f"`closedloop run {tmp_path / 'c.yaml'} --store {url}` starts it"
    assert "".join(run.split()) in said, out.output
