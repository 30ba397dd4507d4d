"""A runner whose lease another runner took over mid-trial touches neither the store nor the
hardware again (found in review: a runner frozen past its lease stored the event and stop
documents of a trial its successor had reconciled as abandoned, then wrote its `on_stop`
safe state in the middle of the successor's trial)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from loop import Runner, Store, load_campaign
from loop.store import LeaseClaim, LeaseLost

DEVICES = """
import json, threading
from ophyd import Signal
from ophyd.status import Status

LOG = {log!r}
STEAL = []  # the test's hook: called while the detector measures


class LoggedSignal(Signal):
    def put(self, value, **kwargs):
        with open(LOG, "a") as f:
            f.write(json.dumps([self.name, value]) + "\\n")
        return super().put(value, **kwargs)


class Detector(Signal):
    def trigger(self):
        status = Status(self)

        def measure():
            for steal in STEAL:
                steal()
            super(Detector, self).put(42.0)
            status.set_finished()

        threading.Thread(target=measure, daemon=True).start()
        return status
"""

BENCH = """
name: bench
inputs:
  x1: {device: "takeover_devices:LoggedSignal", limits: [0, 1]}
outputs:
  y: {device: "takeover_devices:Detector"}
on_stop:
  x1: 0
"""

CAMPAIGN = """
name: takeover
parameters:
  - {name: x1, type: float, bounds: [0.5, 1]}
objectives:
  - {name: y, goal: minimize}
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 1
"""


def test_a_runner_that_lost_its_lease_mid_trial_stores_and_writes_nothing_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "puts.jsonl"
    (tmp_path / "takeover_devices.py").write_text(textwrap.dedent(DEVICES.format(log=str(log))))
    (tmp_path / "bench.yaml").write_text(BENCH)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import takeover_devices  # type: ignore[import-not-found]

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    successor = LeaseClaim(owner="other:2", host="other", pid=2, token="successor", ttl=60)

    def steal() -> None:  # another runner takes the campaign over during trial 1
        lease = store.lease(1)
        assert lease is not None
        assert store.replace_lease(1, lease.token, successor)

    monkeypatch.setattr(takeover_devices, "STEAL", [steal])
    runner = Runner(load_campaign(tmp_path / "c.yaml"), store)
    with pytest.raises(LeaseLost, match="other:2"):
        runner.run()
    trials = store.trials(1)
    assert [t.status for t in trials] == ["running"]  # the successor's to reconcile
    assert [d.name for d in store.documents(trials[0].id or 0)] == ["start"]
    puts = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(puts) == 1 and puts[0][1] >= 0.5, puts  # the trial's move; no safe state (0)
    assert store.lease(1).token == "successor"  # type: ignore[union-attr]
    store.close()
