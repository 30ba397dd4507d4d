"""The source trees a benchmark compares: this checkout and, optionally, a git revision.

Timings from different days on a shared VM are not comparable (the host's share of the CPU
moves by 1.5x), so a speed claim is measured as a ratio in one run: the baseline revision is
checked out into a temporary git worktree, runs with the same virtual env and data, and
alternates with the current tree on every repeat.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def trees(baseline: str | None) -> Iterator[dict[str, Path]]:
    """``{"current": ROOT}``, plus ``"baseline"``: a worktree of ``baseline``, removed after."""
    if baseline is None:
        yield {"current": ROOT}
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(base), baseline],
            cwd=ROOT,
            check=True,
        )
        try:
            yield {"current": ROOT, "baseline": base}
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False
            )
