"""Suite-wide settings.

Property tests explore new random examples on every local run (that is how they find bugs);
under CI (``CI`` set, as the CI runner does) they replay a fixed, derandomised sequence, so a
submission cannot fail on a draw its author never saw.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
