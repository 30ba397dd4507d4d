"""A package's lazy submodule that fails while it imports says so (simulators._lazy).

With ophyd 1.10 beside caproto 1.3, ophyd's import raised an ``AttributeError``, and
``from instruments import STREAM_NAME`` said only "cannot import name 'STREAM_NAME'"
(found in review).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = "cl_lazy_probe"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text(
        "from simulators._lazy import attach_stub\n"
        "__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)\n"
    )
    (root / "__init__.pyi").write_text("from ._broken import THING as THING\n")
    (root / "_broken.py").write_text(
        "class PV: ...\nPV._default_context  # as a mismatched dependency fails\nTHING = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_a_submodule_failing_to_import_is_named_with_its_error(package: str) -> None:
    with pytest.raises(ImportError) as info:
        exec(f"from {package} import THING")
    message = str(info.value)
    assert f"importing {package}'s 'THING' failed: AttributeError:" in message
    assert "_default_context" in message and "constraints.txt" in message


def test_a_name_the_package_does_not_have_is_still_an_attribute_error(package: str) -> None:
    module = __import__(package)
    with pytest.raises(AttributeError):
        module.NOT_THERE  # noqa: B018
    assert not hasattr(module, "NOT_THERE")
