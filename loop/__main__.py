"""The ``closedloop`` command's entry point (also ``python -m loop``).

Only the standard library is imported before the ``try``: the CLI's own modules (typer,
rich, SQLAlchemy, the store) take ~0.7 s to import, and a Ctrl-C in that time printed a
KeyboardInterrupt traceback through the middle of some library's import. It now exits 130
with one line, as a Ctrl-C does once a command runs.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    try:
        from loop.cli import main as run_command
    except KeyboardInterrupt:
        os.write(2, b"\ninterrupted (Ctrl-C) while closedloop started: nothing was done\n")
        sys.exit(130)
    run_command()


if __name__ == "__main__":
    main()
