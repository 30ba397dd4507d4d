"""The error family of closedloop: one root, builtins mixed in, data attached.

Every error a user can cause carries enough data (file, line, trial id) for the CLI to print
one clear message instead of a traceback.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path


class ClosedLoopError(Exception):
    """Root of every error closedloop raises on purpose."""


class CampaignConfigError(ClosedLoopError, ValueError):
    """A campaign file that cannot be run, with where and how to fix it.

    Attributes:
        path: the campaign file.
        line: 1-based line of the offending key, when known.
        problem: what is wrong.
        fix: what to do about it (may be empty when the problem says it).
    """

    def __init__(
        self, path: Path | str, problem: str, *, line: int | None = None, fix: str = ""
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        message = f"{where}: {problem}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)


class StoreError(ClosedLoopError, RuntimeError):
    """The store is missing, unreadable, or holds no campaign matching the request."""


def shell_word(text: str) -> str:
    """``text`` as one word of a command a message tells the user to paste: quoted where a
    shell would split or read it (a store in ``Données de l'été``, a OneDrive folder
    ``- University``; the printed ``resume`` failed when pasted: found in review), as is
    where it needs nothing (``sqlite:///runs/x.db``)."""
    return shlex.quote(text)


#: The environment variable ``--store`` falls back on (``loop.cli``'s ``StoreOpt``).
STORE_ENV = "CLOSEDLOOP_STORE"


def cli_command(
    verb: str, store_url: str, campaign_id: int | None, *options: str, printed: bool = False
) -> str:
    """``closedloop VERB --store URL -c ID [OPTIONS]``, as a message tells the user to paste it.

    Every such command names its store and its campaign: a bare ``closedloop resume``,
    pasted, resumed the latest unfinished campaign of the default store, another one than
    the message was about (found in review, session 36). ``campaign_id`` is ``None`` only
    where no campaign was stored yet. The store is named as :func:`_store_word` says;
    ``printed``: the text goes to this shell's terminal now, never into the store."""
    words = ["closedloop", verb, "--store", _store_word(store_url, printed=printed)]
    if campaign_id is not None:
        words += ["-c", str(campaign_id)]
    return " ".join([*words, *options])


def resume_command(
    function: str | None,
    store_url: str,
    campaign_id: int | None,
    *options: str,
    printed: bool = False,
) -> str:
    """How to continue a campaign: ``closedloop resume --store URL -c ID [OPTIONS]`` (see
    :func:`cli_command`), or for one whose ``function:`` lives in a Python session
    (``__main__:measure``, a notebook's), which the command line refuses, the Python call,
    a budget option (``--max-trials 13``) as its keyword (found in review, session 39: a
    notebook's campaign was told to run the command)."""
    if function is not None and function.startswith("__main__:"):
        from loop.config import parse_duration
        from loop.store import shown_url

        keywords = ""
        for option in options:
            flag, _, value = option.partition(" ")
            name = flag.lstrip("-").replace("-", "_")
            number = parse_duration(value) if name == "max_duration" else value
            keywords += f", {name}={number}"
        store = f"Store({shown_url(store_url)!r})"
        return f"Runner.from_store({store}, {campaign_id}{keywords}).resume()"
    return cli_command("resume", store_url, campaign_id, *options, printed=printed)


def _store_word(store_url: str, *, printed: bool) -> str:
    """The store's URL as a pasteable command's word, its password never shown.

    A URL with a password is shown masked (``loop.store.shown_url``), as every message
    shows it: some commands printed the password the user had typed, others ``***``. Masked,
    a pasted command fails to log in; so in text ``printed`` to the terminal at once, when
    the URL came from ``$CLOSEDLOOP_STORE`` (as a lab keeps a password out of its shell
    history), the command names the variable (found in review, session 37): pasted in that
    shell, it works. Never in text that may be stored (a stop reason, a trial's error):
    shown later where the variable is unset, or names another store, the pasted command
    failed or acted on another store's campaign (review AA, session 39)."""
    from loop.store import shown_url  # the store's one masking; not at import: kept light

    shown = shown_url(store_url)
    if printed and (shown != store_url or "***" in store_url):  # a password there
        env = os.environ.get(STORE_ENV)
        if env and shown_url(env) == shown:
            return f'"${STORE_ENV}"'
    return shell_word(shown)


def first_line(text: object, default: str = "") -> str:
    """The first non-blank line of ``str(text)``, stripped; ``default`` if it has none.

    For a database error in a one-line message: its text runs over several lines (the
    server's words first, then libpq's "Is the server running...?", PostgreSQL's LINE/caret
    excerpt, SQLAlchemy's background link), and the first says what went wrong.
    """
    return next((line.strip() for line in str(text).splitlines() if line.strip()), default)
