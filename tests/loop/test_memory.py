"""The command line holds a long campaign's memory near what it uses (``loop.memory``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from loop.memory import steady_memory
print(steady_memory())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_fixed_mmap_threshold_unless_the_user_set_one() -> None:
    def probe(env: dict[str, str]) -> str:
        out = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True
        )
        return out.stdout.strip()

    assert probe({"PATH": "/usr/bin"}) == "True"
    assert probe({"PATH": "/usr/bin", "MALLOC_MMAP_THRESHOLD_": "65536"}) == "False"
