"""Event-model's document validation at a fraction of its cost, with the same verdicts.

Bluesky's RunEngine checks every document it composes against event-model's JSON schemas
(``event_model.schema_validators``: jsonschema's pure-Python Draft 2020-12 validators). For
one trial's four documents that took 16-21 ms on the 2-core CI machine, half of the
engine's whole overhead per trial, the descriptor alone 11-16 ms (jsonschema resolves a
``$ref`` for every data key, and a data key with its ``limits`` adds five more); the
session-30 descriptors that carry units and limits made every trial 5 ms slower.
jsonschema-rs checks the same schemas in 2-30 µs a document.

:func:`install` puts a :class:`FastValidator` in front of each of event-model's validators,
in place, so bluesky (and anything else in the process that validates documents through
event-model) uses it. Only an acceptance is taken from jsonschema-rs: a document it refuses,
or cannot read (an object that is not JSON, such as a NumPy array, which event-model's own
type checker accepts as an array), goes to event-model's validator, whose verdict and error
stand. So no valid document is ever refused, and an invalid one raises what it raised before.

And only a document of JSON's types (dicts with text keys, lists, text, numbers, bools,
``None``, and their subclasses, but no ``Enum`` member), nested at most :data:`MAX_DEPTH`
deep, is shown to jsonschema-rs at all: it reads a ``Decimal`` as a number and an ``Enum``
member as its value, where jsonschema refuses both, and it accepted metadata nested 10 000
deep (jsonschema: ``RecursionError``) and crashed the process at 30 000 (found in review).
Anything else keeps event-model's verdict exactly, at its old cost. Subclasses are JSON to
both (ophyd's descriptors carry ``OrderedDict``s, an instrument file's ``args`` ruamel's
``ScalarFloat``): taken exactly, every descriptor went the slow way (found in review).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from enum import Enum
from typing import Any

logger = logging.getLogger(__name__)

_installed = False
_lock = threading.Lock()

#: The deepest nesting shown to jsonschema-rs (a trial's documents nest 5 deep).
MAX_DEPTH = 64


def plain_json(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is built of JSON's types (``dict`` with ``str`` keys, ``list``,
    ``str``, ``int``, ``float``, ``bool``, ``None``, or their subclasses: ophyd's
    ``OrderedDict``, a YAML loader's ``ScalarFloat``), no ``Enum`` member among them,
    nested at most :data:`MAX_DEPTH` deep."""
    if value is None:
        return True
    if isinstance(value, Enum):
        return False
    if isinstance(value, str | int | float):
        return True
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(
            isinstance(k, str) and not isinstance(k, Enum) and plain_json(v, depth + 1)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return all(plain_json(v, depth + 1) for v in value)
    return False


class FastValidator:
    """One document kind's validator: jsonschema-rs first, event-model's on a refusal.

    Every other attribute (``iter_errors``, ``schema``, ...) is the original validator's.
    """

    def __init__(self, original: Any, schema: Mapping[str, Any]) -> None:
        import jsonschema_rs

        self.original = original
        self._fast = jsonschema_rs.validator_for(dict(schema))

    def validate(self, doc: Any) -> None:
        """Return if ``doc`` is valid, else raise event-model's own ``ValidationError``."""
        try:
            if plain_json(doc) and self._fast.is_valid(doc):
                return
        except Exception:  # not JSON to jsonschema-rs (a NumPy float): the original decides
            pass
        self.original.validate(doc)

    def __getattr__(self, name: str) -> Any:
        if name == "original":  # not set yet (copy.copy makes one without __init__)
            raise AttributeError(name)
        return getattr(self.original, name)


def install() -> bool:
    """Put a :class:`FastValidator` in front of every event-model validator (once per
    process; idempotent and thread-safe). ``False`` if jsonschema-rs cannot be imported or
    build a schema's validator: event-model's validators then stay as they are."""
    global _installed
    with _lock:
        if _installed:
            return True
        try:
            from event_model import schema_validators, schemas

            fast = {name: FastValidator(schema_validators[name], schemas[name]) for name in schemas}
        except Exception as exc:  # an optimisation: never a reason to fail
            logger.debug("event-model's document validation stays as it is: %s", exc)
            return False
        schema_validators.update(fast)
        _installed = True
        return True
