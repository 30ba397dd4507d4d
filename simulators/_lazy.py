"""Each package's lazy submodule loading (SPEC 1), with a submodule's own failure said.

``lazy_loader.attach_stub`` imports a submodule on first use of one of its names. An
``AttributeError`` raised while that submodule imports (a dependency at a version that does
not fit: ophyd 1.10 beside caproto 1.3 raises one) escapes its ``__getattr__``, and
``from instruments import STREAM_NAME`` turns it into "cannot import name 'STREAM_NAME'",
which hides the cause (found in review). Here it is an ``ImportError`` that names the
submodule and the error. Standard library and ``lazy_loader`` only: every package's
``__init__`` uses it, the planners' too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lazy_loader


def attach_stub(
    package: str, file: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``lazy_loader.attach_stub(package, file)``, its ``__getattr__`` wrapped (see the
    module)."""
    get, listing, names = lazy_loader.attach_stub(package, file)

    def __getattr__(name: str) -> Any:
        try:
            return get(name)
        except AttributeError as exc:
            if name not in names:
                raise  # not one of the package's names: the usual AttributeError
            raise ImportError(
                f"importing {package}'s {name!r} failed: {type(exc).__name__}: {exc} (a "
                "package closedloop depends on may be at a version it does not work with: "
                "constraints.txt lists the tested ones)"
            ) from exc

    return __getattr__, listing, names
