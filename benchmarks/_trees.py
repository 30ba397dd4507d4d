"""The source trees a benchmark compares, the revision a result came from, and where it goes.

``trees``: this checkout and, optionally, a git revision. Timings from different days on a
shared VM are not comparable (the host's share of the CPU moves by 1.5x), so a speed claim is
measured as a ratio in one run: the baseline revision is checked out into a temporary git
worktree, runs with the same virtual env and data, and alternates with the current tree on
every repeat.

``revision()`` names the code a result was measured with, and ``dated_results(stem)`` gives a
new results file, so a run never overwrites the figures tracked in ``results/``.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def revision(root: Path = ROOT) -> str:
    """``git rev-parse --short HEAD`` of ``root``, plus ``-dirty`` if a tracked file differs
    from it (untracked files, such as new results files, do not count); ``unknown`` outside
    git. A ``-dirty`` revision names no exact code: two dirty trees share it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if status else head


def dated_results(stem: str, suffix: str = ".json") -> Path:
    """A new file ``results/<stem>-YYYYMMDD-HHMMSS<suffix>`` (UTC), never an existing one."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{stem}-{stamp}{suffix}"
    n = 1
    while path.exists():
        path = RESULTS / f"{stem}-{stamp}-{n}{suffix}"
        n += 1
    return path


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
