"""The packages load their submodules lazily (``__init__.pyi`` + lazy_loader).

Two things can go wrong with that: a public name listed in a stub that no submodule defines
(an ``AttributeError`` on first use, in a user's session rather than at import), and a light
command (``validate``, ``status``, ``export``) importing torch, BoTorch or ophyd again through
some new top-level import, which costs every such command several seconds.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGES = ("loop", "planners", "instruments", "simulators")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package}/__init__.pyi lists names no submodule defines: {missing}"
    assert set(dir(module)) >= set(module.__all__)


def test_unknown_name_is_an_attribute_error() -> None:
    import planners

    with pytest.raises(AttributeError, match="no_such_planner"):
        planners.no_such_planner  # type: ignore[attr-defined]  # noqa: B018


def test_validating_and_reading_a_store_import_no_model_or_hardware_library(
    tmp_path: Path,
) -> None:
    """What ``validate``, ``status`` and ``export`` do, in a fresh interpreter: check a
    campaign file against its planner and simulator, parse a stored campaign, annotate its
    records, count failures. None of it needs torch, BoTorch or ophyd (``bluesky.protocols``,
    0.2 s, types the instrument protocol that describing an instrument reaches)."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path

        import loop.cli  # the command line itself
        from loop.config import load_campaign, parse_campaign
        from loop.failures import failures_of
        from loop.report import annotate
        from loop.retries import owed_retries
        from loop.store import Store

        load_campaign("campaigns/branin.yaml")  # closedloop validate (a botorch planner)
        text = Path("campaigns/flow_reactor.yaml").read_text()
        campaign = parse_campaign(
            text, path=Path("campaigns/flow_reactor.yaml"), base_dir=Path("campaigns"),
            cross_check=False,
        ).campaign
        store = Store(sys.argv[1])
        annotate([], campaign)
        failures_of([])
        owed_retries([], 2, {})  # closedloop status names a stopped session's owed retries
        store.close()
        heavy = sorted(
            m for m in ("torch", "botorch", "gpytorch", "ophyd") if m in sys.modules
        )
        print(",".join(heavy))
        """
    )
    url = f"sqlite:///{tmp_path / 'light.db'}"
    done = subprocess.run(
        [sys.executable, "-c", script, url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported: {done.stdout.strip()}"
