"""The ``closedloop`` command as a user runs it: a fresh interpreter, its exit code and
both streams (for what CliRunner cannot show: signals, exit codes of ``main``, start-up)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def closedloop(*args: str, cwd: Path, wide: bool = False) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` in ``cwd``; ``wide``: a 200-column terminal, so rich does not
    wrap table cells a test reads (the test session itself drops ``COLUMNS``)."""
    env = {**os.environ, "COLUMNS": "200"} if wide else None
    return subprocess.run(
        [sys.executable, "-m", "loop.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
