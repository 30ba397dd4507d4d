"""``instrument: manual``: a person carries out each trial and types in what was measured.

The trial still goes through the same Bluesky run as any instrument (start document with
the commanded parameters, ``mv`` of the inputs, ``trigger_and_read``, stop), so the store,
``resume``'s reconciliation and ``export`` treat a manual trial exactly like a measured one.
What differs is *when* the values exist: the engine's runner asks the operator first (on the
main thread, at the terminal; see ``loop.runner.Operator``) and then loads the answer into
these soft devices with :meth:`ManualInstrument.enter`, and only then dispatches the run.

Why not ask from inside a detector's ``trigger()``? The RunEngine calls ``trigger()`` on its
own event-loop thread while the main thread blocks in ``RE(plan)``; a prompt there would read
the terminal from a background thread, Ctrl-C (delivered to the main thread) could not
interrupt it, and a run would stay open for as long as the operator takes (hours), its start
document stored with nothing after it. Asking before the run keeps the run short and the
prompt on the main thread, where Ctrl-C stops it like any other run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ophyd import Signal
from ophyd.status import StatusBase

from instruments._build import InputSpec


class ManualInput(Signal):  # type: ignore[misc]  # ophyd is untyped
    """A parameter the operator sets by hand.

    ``set(value)`` records the commanded value, unless the operator reported having used
    another one (:meth:`ManualInstrument.enter`): then that is what the device reads back,
    so the run's event and the stored readbacks hold the parameters actually used.
    """

    def __init__(self, name: str, *, initial: Any = 0.0) -> None:
        super().__init__(name=name, value=initial)
        self.actual: Any = None

    def set(self, value: Any, **kwargs: Any) -> StatusBase:
        return super().set(value if self.actual is None else self.actual, **kwargs)


class ManualInstrument:
    """Soft inputs (one per parameter) and one soft signal per declared output.

    Args:
        inputs: the campaign's parameters.
        outputs: what the operator measures (the names objectives refer to).
    """

    def __init__(self, inputs: Sequence[InputSpec], outputs: Sequence[str]) -> None:
        self._inputs = {s.name: ManualInput(s.name, initial=_initial(s)) for s in inputs}
        self._outputs = tuple(outputs)
        self._signals = [Signal(name=o, value=math.nan) for o in self._outputs]

    @property
    def name(self) -> str:
        return "manual"

    @property
    def inputs(self) -> Mapping[str, ManualInput]:
        return self._inputs

    @property
    def detectors(self) -> Sequence[Signal]:
        return self._signals

    @property
    def outputs(self) -> tuple[str, ...]:
        return self._outputs

    def enter(self, outputs: Mapping[str, float], actual: Mapping[str, Any] | None = None) -> None:
        """Load the operator's answer for the next run: measured outputs and, optionally,
        the parameters actually used (read back instead of the commanded ones).

        An output not given reads NaN, which fails the trial like any missing measurement
        when an objective or outcome constraint reads it (a side output may read NaN).
        """
        for signal in self._signals:
            signal.put(float(outputs.get(signal.name, math.nan)))
        for name, device in self._inputs.items():
            device.actual = (actual or {}).get(name)

    def clear(self) -> None:
        """Forget the last answer, so a stale value can never be read twice."""
        self.enter({}, {})

    def close(self) -> None:
        pass


def _initial(spec: InputSpec) -> Any:
    if spec.values:
        return spec.values[0]
    if spec.bounds is not None:
        return spec.bounds[0]
    return 0.0
