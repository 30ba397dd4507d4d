"""The loop. One trial's life reads top to bottom in ``Runner._run_one``:

    propose  ->  persist  ->  dispatch  ->  ingest  ->  learn
    planner      store        RunEngine     store       planner
    .suggest     .add_trial   (one run)     .finish     .ingest

Everything a trial learns is committed before the next trial is proposed, and the trial row
exists before any device moves, so a crash at any point leaves a store that says exactly how
far each trial got.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from instruments import Dispatcher, Instrument, TrialInterrupted, TrialResult, build_instrument
from loop.config import Campaign, LoadedCampaign
from loop.store import Store, TrialRow, TrialStatus
from planners import Observation, Planner, Point, make_planner

logger = logging.getLogger(__name__)


@dataclass
class TrialTiming:
    """Where one trial's wall time went (seconds).

    ``overhead`` is the engine's own cost: wall time minus planner time minus the time the
    instrument spent measuring (simulated latency or real hardware time).
    """

    suggest: float
    dispatch: float
    total: float
    instrument_busy: float

    @property
    def overhead(self) -> float:
        return max(self.total - self.suggest - self.instrument_busy, 0.0)


@dataclass
class TrialReport:
    """What a listener hears when a trial ends."""

    number: int
    trial_id: int
    status: str
    parameters: Point
    outputs: dict[str, float]
    objective: float | None
    best: float | None
    error: str | None
    timing: TrialTiming


@dataclass
class CampaignSummary:
    """The outcome of ``Runner.run``."""

    campaign_id: int
    name: str
    status: str
    reason: str
    completed: int
    failed: int
    best: TrialReport | None
    elapsed: float
    timings: list[TrialTiming] = field(default_factory=list)


class RunListener(Protocol):
    """Receives progress; the CLI draws it, tests and benchmarks record it."""

    def trial_started(self, number: int, parameters: Point) -> None: ...

    def trial_finished(self, report: TrialReport) -> None: ...


class _Silent:
    def trial_started(self, number: int, parameters: Point) -> None:
        pass

    def trial_finished(self, report: TrialReport) -> None:
        pass


class Runner:
    """Drives one campaign from its file to its budget, storing every trial.

    Args:
        loaded: the validated campaign.
        store: where trials, observations and documents go.
        seed: overrides the file's seed (a random seed is drawn and stored when neither).
        max_trials: overrides ``budget.max_trials``.
        listener: progress receiver.
        instrument_factory: builds the instrument; tests and benchmarks may wrap it.
    """

    def __init__(
        self,
        loaded: LoadedCampaign,
        store: Store,
        *,
        seed: int | None = None,
        max_trials: int | None = None,
        listener: RunListener | None = None,
        instrument_factory: Callable[[Campaign, int], Instrument] | None = None,
    ) -> None:
        self.loaded = loaded
        self.campaign = loaded.campaign
        self.store = store
        if seed is None:
            seed = self.campaign.seed
        self.seed = seed if seed is not None else secrets.randbelow(2**31)
        self.max_trials = max_trials if max_trials is not None else self.campaign.budget.max_trials
        self.listener: RunListener = listener or _Silent()
        self._instrument_factory = instrument_factory or self._default_instrument
        self.space = self.campaign.space
        self.objective = self.campaign.objectives[0]

    def _default_instrument(self, campaign: Campaign, seed: int) -> Instrument:
        return build_instrument(
            campaign.instrument, campaign.parameters, base_dir=self.loaded.base_dir, seed=seed
        )

    # ----------------------------------------------------------------- the loop
    def run(self) -> CampaignSummary:
        """Run until a budget limit is reached, the instrument fails too often, or Ctrl-C."""
        c = self.campaign
        campaign_id = self.store.create_campaign(
            c.name, self.loaded.text, str(self.loaded.path), self.seed
        )
        planner = make_planner(self.space, list(c.objectives), c.planner, self.seed)
        instrument = self._instrument_factory(c, self.seed)
        dispatcher = Dispatcher(instrument)
        start = time.monotonic()
        completed = failed = 0
        best: TrialReport | None = None
        timings: list[TrialTiming] = []
        status, reason = "completed", ""
        try:
            while True:
                stop = self._stop_reason(completed, failed, time.monotonic() - start)
                if stop:
                    status, reason = stop
                    break
                report = self._run_one(campaign_id, planner, dispatcher, best)
                timings.append(report.timing)
                if report.status == "completed":
                    completed += 1
                    if report.objective is not None and (
                        best is None
                        or best.objective is None
                        or self.objective.sign * (report.objective - best.objective) > 0
                    ):
                        best = report
                else:
                    failed += 1
                if best is not None:
                    report.best = best.objective
                self.listener.trial_finished(report)
        except KeyboardInterrupt:
            status, reason = "stopped", "interrupted by the user (Ctrl-C)"
            raise
        finally:
            self.store.finish_campaign(campaign_id, status, reason or "unknown")
            dispatcher.close()
            instrument.close()
        return CampaignSummary(
            campaign_id=campaign_id,
            name=c.name,
            status=status,
            reason=reason,
            completed=completed,
            failed=failed,
            best=best,
            elapsed=time.monotonic() - start,
            timings=timings,
        )

    def _stop_reason(self, completed: int, failed: int, elapsed: float) -> tuple[str, str] | None:
        budget = self.campaign.budget
        if self.max_trials is not None and completed >= self.max_trials:
            return "completed", f"max_trials reached ({completed} completed trials)"
        if budget.max_duration is not None and elapsed >= budget.max_duration:
            return "completed", f"max_duration reached ({elapsed:.0f} s)"
        if failed >= budget.max_failures:
            return "failed", (
                f"{failed} trials failed (budget.max_failures = "
                f"{budget.max_failures}); check the instrument"
            )
        return None

    def _run_one(
        self, campaign_id: int, planner: Planner, dispatcher: Dispatcher, best: TrialReport | None
    ) -> TrialReport:
        t0 = time.perf_counter()
        # propose
        (parameters,) = planner.suggest(1, pending=[])
        suggest = time.perf_counter() - t0
        (kind,) = planner.last_kinds
        # persist
        trial = self.store.add_trial(campaign_id, parameters, kind, suggest_seconds=suggest)
        number, trial_id = trial.number, _id(trial)
        self.listener.trial_started(number, parameters)
        # dispatch (each document is committed as the RunEngine emits it)
        t1 = time.perf_counter()
        try:
            result = dispatcher.run(
                trial_id, self.campaign.name, parameters, document_sink=self._sink(trial_id)
            )
        except TrialInterrupted as exc:  # Ctrl-C: the RunEngine aborted the run cleanly
            self.store.finish_trial(
                trial_id,
                status="abandoned",
                outputs={},
                readbacks={},
                run_uid=exc.result.run_uid if exc.result else None,
                error="interrupted by the user (Ctrl-C)",
            )
            raise
        dispatch = time.perf_counter() - t1
        # ingest
        status: TrialStatus = "completed" if result.exit_status == "success" else "failed"
        self.store.finish_trial(
            trial_id,
            status=status,
            outputs=result.outputs,
            readbacks=result.readbacks,
            run_uid=result.run_uid,
            error=result.error,
        )
        # learn
        planner.ingest([self._observation(parameters, result, status)])
        value = result.outputs.get(self.objective.name)
        if value is not None and not math.isfinite(value):
            value = None
        total = time.perf_counter() - t0
        timing = TrialTiming(
            suggest=suggest, dispatch=dispatch, total=total, instrument_busy=result.instrument_busy
        )
        return TrialReport(
            number=number,
            trial_id=trial_id,
            status=status,
            parameters=parameters,
            outputs=result.outputs,
            objective=value if status == "completed" else None,
            best=best.objective if best else None,
            error=result.error,
            timing=timing,
        )

    def _sink(self, trial_id: int) -> Callable[[str, dict[str, Any]], None]:
        seq = 0
        run_uid: str | None = None

        def sink(name: str, doc: dict[str, Any]) -> None:
            nonlocal seq, run_uid
            if name == "start":
                run_uid = doc.get("uid")
            seq += 1
            self.store.add_document(trial_id, seq, name, doc, run_uid)

        return sink

    def _observation(self, commanded: Point, result: TrialResult, status: str) -> Observation:
        """The model learns from where the instrument actually was, when it says so."""
        achieved = {**commanded, **{k: v for k, v in result.readbacks.items() if k in commanded}}
        parameters = achieved if self.space.contains(achieved) else commanded
        if status != "completed":
            return Observation(parameters=parameters, outcome="failed")
        return Observation(parameters=parameters, outputs=dict(result.outputs))


def _id(trial: TrialRow) -> int:
    if trial.id is None:  # pragma: no cover - the database assigns it
        raise RuntimeError("trial has no id after commit")
    return trial.id
