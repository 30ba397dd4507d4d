"""A campaign whose own function is slower than its ``timeout``: every trial times out, and
the function is never entered twice on one slot; and the failure kinds of the texts found
with it in review.

Found in review (timeout 1 s, a 2.5 s function, ``max_retries: 1``, one slot): the retry
and the next point called the function while the timed-out call still ran, three calls in
flight at once, as a function driving a real instrument must never see.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from loop import Runner, Store, load_campaign
from loop.failures import UNMEASURED, failure_kind, is_point_failure

SLOW = """\
import json, threading, time

LOCK = threading.Lock()  # fine in this process (the default executor: inprocess)
ACTIVE = [0]


def measure(inputs):
    with LOCK:
        ACTIVE[0] += 1
        active = ACTIVE[0]
    with open(LOG, "a") as f:
        f.write(json.dumps({"active": active}) + "\\n")
    try:
        time.sleep(0.6)
        return {"y": inputs["x1"]}
    finally:
        with LOCK:
            ACTIVE[0] -= 1
"""

CAMPAIGN = """\
name: slowfn
parameters:
  - {name: x1, type: float, bounds: [0, 1]}
objectives:
  - {name: y, goal: minimize}
instrument: {function: "slow.py:measure", outputs: [y], timeout: 0.25, max_retries: 1, \
count: COUNT}
planner: {kind: sobol}
budget: {max_trials: 3, max_failures: 4}
seed: 3
"""


@pytest.mark.parametrize("count", [1, 2])
def test_a_function_slower_than_its_timeout_is_never_entered_twice_per_slot(
    tmp_path: Path, count: int, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "calls.jsonl"
    (tmp_path / "slow.py").write_text(f"LOG = {str(log)!r}\n" + SLOW)
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.replace("COUNT", str(count)))
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        summary = Runner(load_campaign(path), store).run()
        # a trial that timed out waiting behind the call before it never measured: said
        # so, and not learned as its point's timeout
        counts = summary.failure_counts
        assert sum(counts.values()) == 4 and counts.get("timeout", 0) >= 1, summary.reason
        assert set(counts) <= {"timeout", UNMEASURED}, summary.reason
    finally:
        store.close()
        time.sleep(0.7)  # the last timed-out call returns before tmp_path goes
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls and max(c["active"] for c in calls) <= count, calls
    assert "is still running for a trial stopped" in caplog.text


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            "the setpoints could not be checked against the limits, no device moved: "
            "ReadTimeoutError: Failed to read PV:temp:RBV within 2 sec",
            "limit check unanswered",
        ),
        (
            "the setpoints could not be checked against the limits, no device moved: "
            "DeviceTimeout: position of temperature timed out after 2 s",
            "limit check unanswered",
        ),
        (
            "the setpoints could not be checked against the limits, no device moved: "
            "DeviceConnectionError: lost the connection to PV PV:temp:RBV during the trial",
            "connection lost",
        ),
        # the text a function returning 10**400 now fails with: the function's to fix
        (
            "function measure (faulty.py) returned a non-numeric output: "
            "y = 100000000000000000...0000000000000000000 is too large for a float (at most "
            "1.798e+308)",
            "wrong outputs",
        ),
    ],
)
def test_failure_kinds_of_a_pre_check_and_an_overflowing_output(error: str, kind: str) -> None:
    assert failure_kind(error) == kind
    # a readback that did not answer is the instrument's; a wrong output the point's
    assert is_point_failure(error) is (kind == "wrong outputs")
