"""Instrument settings as written under ``instrument:`` in a campaign file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


class RuleError(ValueError):
    """A rule across the keys of ``instrument:`` broken, with what to change.

    Pydantic keeps the exception a validator raised (``ctx["error"]`` of its error), so the
    campaign loader shows ``fix`` on the message's fix line; the message alone says what is
    wrong. Without it, the fix shown was the one for the section (``instrument: {simulator:
    branin}``), unrelated to a missing ``timeout`` (found in review).
    """

    def __init__(self, message: str, *, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


_DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")
"""The comms a Dask scheduler can be reached over (``distributed.comm``'s backends)."""


class ExecutorConfig(BaseModel):
    """Where a simulated detector computes its outputs (``instrument.executor``).

    ``inprocess`` (the default) evaluates the simulator in this process; ``local`` starts a
    Dask ``LocalCluster`` (worker processes on 127.0.0.1) once per campaign and closes it at
    the end; ``dask`` connects to a running scheduler at ``address`` (e.g. one started by
    dask-jobqueue on an HPC batch system). Either way the detector's ``trigger()`` submits
    the pure simulator function and completes its Status when the future resolves, so the
    Bluesky path is the same.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["inprocess", "local", "dask"] = Field(
        default="inprocess",
        description="inprocess | local (a LocalCluster started for the campaign) | dask "
        "(a running scheduler at `address`).",
    )
    address: str | None = Field(
        default=None,
        min_length=1,
        description="Scheduler address for kind dask, e.g. tcp://host:8786.",
    )
    workers: int | None = Field(
        default=None, ge=1, le=512, description="Worker processes of a local cluster (default 2)."
    )
    connect_timeout: float = Field(
        default=10.0,
        gt=0.0,
        le=600.0,
        description="Seconds to wait for the scheduler before the run fails.",
    )

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, address: str | None) -> str | None:
        """A scheduler's address as dask reads it, checked here: `validate` passed
        ``http://host:8786`` and ``host:99999``, and the run then said no scheduler answered
        and to start one (found in review)."""
        if address is None:
            return None
        scheme, sep, rest = address.strip().partition("://")
        if not sep:
            scheme, rest = "tcp", address.strip()  # dask's default for host:port
        example = 'address: "tcp://host:8786"'
        if scheme not in _DASK_SCHEMES:
            raise RuleError(
                "not a Dask scheduler's address: dask speaks "
                f"{', '.join(s + '://' for s in _DASK_SCHEMES)}, not {scheme}://",
                fix=f"write {example} (tls:// for a scheduler with TLS)",
            )
        host, colon, port = rest.rpartition(":")
        if not colon or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise RuleError(
                "names no host and port (1-65535) of a scheduler",
                fix=f"write {example} (8786 is a scheduler's default port)",
            )
        return address.strip()

    @model_validator(mode="after")
    def _address_for_dask(self) -> ExecutorConfig:
        if self.kind == "dask" and self.address is None:
            raise RuleError(
                "executor kind dask needs the address of a running scheduler",
                fix='add e.g. address: "tcp://host:8786", or use `kind: local` to start a '
                "cluster on this machine",
            )
        if self.kind != "dask" and self.address is not None:
            raise RuleError(
                f"`address` is for `kind: dask` (a running scheduler); kind {self.kind} takes none",
                fix="drop `address`, or write `kind: dask` to use the scheduler there",
            )
        if self.kind != "local" and self.workers is not None:
            has = (
                "computes in this process, with no workers"
                if self.kind == "inprocess"
                else "uses the workers started for its scheduler"
            )
            raise RuleError(
                "`workers` is the size of the cluster `kind: local` starts; kind "
                f"{self.kind} {has}",
                fix="drop `workers`, or write `kind: local` to start that many worker "
                "processes on this machine",
            )
        return self


class InstrumentConfig(BaseModel):
    """A built-in simulator by name, or the user's own Python function, with fault options.

    A user function is named ``module:function`` (importable) or ``path/to/file.py:function``
    (relative to the campaign file). It takes the inputs dict and returns the outputs dict;
    it is wrapped as Ophyd devices exactly like a built-in simulator.
    """

    model_config = ConfigDict(extra="forbid")
    # The text of ``file:`` as the campaign stored it (``loop.config`` sets it), so the devices
    # are built from what the campaign started with even if the file changed or vanished.
    _file_text: str | None = PrivateAttr(default=None)
    # The campaign file, where inline ``devices:`` are written (``loop.config`` sets it), so
    # an error found when they are built names that file's line, not a pseudo-file.
    _campaign_path: Path | None = PrivateAttr(default=None)
    # Whether the campaign is a stored one, read as it was accepted (``loop.config`` sets it):
    # its instrument file's ``metadata:`` keys that closedloop has come to write itself are
    # then left out with a warning, not refused (``instruments._instrument_file.parse_instrument``).
    _as_stored: bool = PrivateAttr(default=False)

    simulator: str | None = Field(default=None, description="Built-in simulator name.")
    manual: bool = Field(
        default=False,
        description="A person runs each trial and enters the measured outputs at a prompt "
        "(`outputs:` names them; a campaign's objectives by default).",
    )
    function: str | None = Field(
        default=None,
        description="module:function or path/to/file.py:function (inputs dict -> outputs dict).",
    )
    outputs: list[str] | None = Field(
        default=None, description="Output names a user function returns (required for one)."
    )
    file: str | None = Field(
        default=None,
        min_length=1,
        description="Instrument file (EPICS PVs, plugin devices), relative to the campaign file.",
    )
    devices: dict[str, Any] | None = Field(
        default=None,
        description="An instrument file's content inline (see instruments/_instrument_file.py).",
    )
    dataset: str | None = Field(
        default=None,
        min_length=1,
        description="A bundled dataset (`closedloop datasets` lists them) or a CSV of your own "
        "measurements (relative to the campaign file, with `spec:`): served by exact lookup "
        "(enumerated) or by a GP emulator fitted on it.",
    )
    spec: str | None = Field(
        default=None,
        min_length=1,
        description="YAML spec of a `dataset:` CSV (parameters, outputs, goal, enumerated), "
        "relative to the campaign file.",
    )
    noise: float | dict[str, float] = Field(
        default=0.0,
        description="Gaussian measurement noise sd, for all or per output (a dataset "
        "emulator defaults to the noise fitted on its data).",
    )
    latency: float = Field(default=0.0, ge=0.0, le=86_400.0, description="Seconds per trial.")
    failure_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability that a trial's run raises."
    )
    hang_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability that a trial's run never ends."
    )
    nan_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability that the outputs are NaN/inf."
    )
    readback_out_of_range_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Probability, per numeric input and trial, of a readback outside its bounds.",
    )
    failing_region: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Where every run fails, e.g. 'x1 + x2 > 1.5' (parameters, numbers, "
        "+ - * / **, comparisons, and/or/not).",
    )
    timeout: float | None = Field(
        default=None,
        gt=0.0,
        le=7 * 86_400.0,
        description="Seconds a trial's run may take before it is aborted and the trial fails.",
    )
    max_retries: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Extra attempts at the same point after a transient failure (a fault, a "
        "timeout); each attempt is its own trial.",
    )
    count: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Identical instrument slots run in parallel, each with its own devices "
        "and RunEngine; the runner keeps them all busy.",
    )
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig,
        description="Where a simulator computes: inprocess, local (Dask LocalCluster) or "
        "dask (a running scheduler).",
    )
    readback_tolerance: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="How far (a fraction of the bounds' span) a readback may lie outside "
        "its parameter's bounds before the trial fails.",
    )

    @field_validator("function")
    @classmethod
    def _function_form(cls, value: str | None) -> str | None:
        """``file.py:function`` or ``module:function``; said in those words (the regex
        pydantic printed was the whole message, and the fix named a simulator)."""
        if value is None or re.fullmatch(r"[^:]+:[A-Za-z_][A-Za-z0-9_]*", value):
            return value
        file, colon, name = value.rpartition(":")
        if not colon:
            stem = value.removesuffix(".py").replace("/", ".").strip(".") or "model"
            raise RuleError(
                f"{value!r} names no function",
                fix=f"write the file (or module) and the function, e.g. {value}:measure"
                if value.endswith(".py")
                else f"write the module and the function, e.g. {stem}:measure, or "
                f"{stem}.py:measure for a file",
            )
        raise RuleError(
            f"{value!r}: {name!r} is not a Python function name"
            if file
            else f"{value!r} names no file or module",
            fix="write file.py:function or module:function, e.g. model.py:measure",
        )

    @model_validator(mode="after")
    def _hang_needs_timeout(self) -> InstrumentConfig:
        # Without a timeout a hung run would stall the campaign for ever.
        if self.hang_rate > 0 and self.timeout is None:
            raise RuleError(
                "hang_rate needs a `timeout: SECONDS`, or a hung run never ends",
                fix="add e.g. timeout: 60 (seconds a run may take before it is aborted and "
                "the trial fails), or drop hang_rate",
            )
        return self

    @model_validator(mode="after")
    def _one_source(self) -> InstrumentConfig:
        sources = (self.simulator, self.function, self.file, self.devices, self.dataset)
        if sum(s is not None for s in sources) + self.manual != 1:
            raise RuleError(
                "give exactly one of `simulator: NAME` (a built-in), "
                "`function: module:function` (your own model), `dataset: NAME` (measured "
                "data: `closedloop datasets`), `file: instrument.yaml`, "
                "inline `devices: {...}` (hardware: EPICS PVs, plugin devices) or "
                "`manual: true` (a person enters the results)",
                fix="keep one of them, e.g. instrument: {simulator: branin}",
            )
        if self.manual:
            if not self.outputs:
                # A campaign fills in its objectives (and outcome-constrained outputs) when
                # `outputs:` is left out (loop.config); an empty list names none.
                raise RuleError(
                    "a manual instrument needs at least one output: what the operator "
                    "measures and types in",
                    fix="list them, e.g. outputs: [yield, purity], or leave `outputs:` out to "
                    "enter the objectives",
                )
            simulated = [
                key
                for key in (
                    "noise",
                    "latency",
                    "failure_rate",
                    "hang_rate",
                    "nan_rate",
                    "readback_out_of_range_rate",
                    "failing_region",
                )
                if key in self.model_fields_set
            ]
            if simulated:
                one = len(simulated) == 1
                raise RuleError(
                    f"{', '.join(simulated)} simulate{'s' * one} a faulty instrument and "
                    f"{'does' if one else 'do'} not apply to a manual one (the operator's "
                    "numbers are the measurement)",
                    fix=f"drop {', '.join(simulated)}",
                )
        if self.manual and self.count != 1:
            raise RuleError(
                "a manual instrument is one operator: `count` must be 1",
                fix="drop `count` (several people: one campaign each, or ask/tell: `closedloop "
                "suggest -n N`)",
            )
        if self.count != 1 and (self.file is not None or self.devices is not None):
            raise RuleError(
                "an instrument file describes one set of hardware: `count` must be 1",
                fix="drop `count` and run one campaign per instrument (slots are for a "
                "simulator or a function)",
            )
        if self.executor.kind != "inprocess" and (
            self.manual or self.file is not None or self.devices is not None
        ):
            raise RuleError(
                "`executor` runs a simulator or a `function:` on Dask; a manual or declared "
                "(hardware) instrument computes nothing to send there",
                fix="drop `executor`",
            )
        if (self.file is not None or self.devices is not None) and self.outputs:
            raise RuleError(
                "a declared instrument lists its outputs in its own `outputs:`",
                fix="drop `outputs:` here; the instrument file's (or inline devices') "
                "`outputs:` names them",
            )
        if self.spec is not None and self.dataset is None:
            raise RuleError(
                "`spec:` describes a `dataset: data.csv`; give the dataset too",
                fix="add dataset: PATH.csv (the measurements the spec describes), or drop `spec:`",
            )
        if self.function is not None and not self.outputs:
            raise RuleError(
                "a `function:` instrument needs `outputs: [name, ...]`",
                fix="list the keys of the dict the function returns, e.g. outputs: [y]",
            )
        noises = self.noise.values() if isinstance(self.noise, dict) else [self.noise]
        if any(not (0.0 <= n < 1e12) for n in noises):
            raise RuleError(
                "noise must be a finite sd >= 0",
                fix="write a standard deviation in the output's units, e.g. noise: 0.1 (or "
                "per output: noise: {y: 0.1})",
            )
        return self
