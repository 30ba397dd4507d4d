"""Instrument settings as written under ``instrument:`` in a campaign file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InstrumentConfig(BaseModel):
    """A built-in simulator by name, or the user's own Python function, with fault options.

    A user function is named ``module:function`` (importable) or ``path/to/file.py:function``
    (relative to the campaign file). It takes the inputs dict and returns the outputs dict;
    it is wrapped as Ophyd devices exactly like a built-in simulator.
    """

    model_config = ConfigDict(extra="forbid")

    simulator: str | None = Field(default=None, description="Built-in simulator name.")
    function: str | None = Field(
        default=None,
        pattern=r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:function or path/to/file.py:function (inputs dict -> outputs dict).",
    )
    outputs: list[str] | None = Field(
        default=None, description="Output names a user function returns (required for one)."
    )
    noise: float | dict[str, float] = Field(
        default=0.0, description="Gaussian measurement noise sd, for all or per output."
    )
    latency: float = Field(default=0.0, ge=0.0, le=86_400.0, description="Seconds per trial.")
    failure_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability that a trial's run raises."
    )

    @model_validator(mode="after")
    def _one_source(self) -> InstrumentConfig:
        if (self.simulator is None) == (self.function is None):
            raise ValueError(
                "give exactly one of `simulator: NAME` (a built-in) or "
                "`function: module:function` (your own model)"
            )
        if self.function is not None and not self.outputs:
            raise ValueError("a `function:` instrument needs `outputs: [name, ...]`")
        noises = self.noise.values() if isinstance(self.noise, dict) else [self.noise]
        if any(not (0.0 <= n < 1e12) for n in noises):
            raise ValueError("noise must be a finite sd >= 0")
        return self
