"""A throwaway PostgreSQL server for the tests: started on 127.0.0.1, removed afterwards.

Labs share one store on a PostgreSQL server, so the store is tested against a real one, not
a mock: ``initdb`` into a temporary folder, ``pg_ctl start`` on a free TCP port of 127.0.0.1
(no Unix socket, so it never meets a system server), one database per test, then ``pg_ctl
stop`` and the folder deleted. fsync and the other durability settings are the server's
defaults: the store's crash guarantees are what is being tested.

``initdb`` and ``postgres`` refuse to run as root; as root they run as the ``postgres``
system user (``runuser -u postgres``) in a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

# Where Debian/Ubuntu's postgresql-NN packages put the server (not on PATH by default).
_DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = (
    "install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql) so that "
    "initdb and pg_ctl are on PATH or in /usr/lib/postgresql/<version>/bin, or set "
    "CLOSEDLOOP_PG_BIN to the folder that holds them"
)


class PostgresUnavailable(RuntimeError):
    """This machine cannot start a PostgreSQL server (the message says what is missing)."""


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: ``$CLOSEDLOOP_PG_BIN`` if
    set (and then only that), else the folder of ``pg_ctl`` on PATH (symlinks followed),
    else the newest Debian one."""
    tools = ("initdb", "pg_ctl", "postgres")
    if os.environ.get("CLOSEDLOOP_PG_BIN"):
        candidates = [Path(os.environ["CLOSEDLOOP_PG_BIN"])]
    else:
        on_path = shutil.which("pg_ctl")
        candidates = [Path(on_path).resolve().parent] if on_path else []
        versions = [Path(p) for p in glob.glob(_DEBIAN_BINDIRS)]
        versions.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
        candidates += reversed(versions)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in tools):
            return folder
    looked = ", ".join(map(str, candidates)) or "PATH and /usr/lib/postgresql/*/bin"
    raise PostgresUnavailable(f"no {', '.join(tools)} in {looked}; {INSTALL_HINT}")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now: take it before another does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One server in its own temporary folder; ``url(db)`` for SQLAlchemy.

    Use as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.user = "postgres"  # the database superuser initdb creates
        self.port = 0
        self.root: Path | None = None
        self._as: list[str] = []  # prefix that runs a server program as a non-root user
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root, and PostgreSQL refuses to run as root, but there is no "
                    "'postgres' user to run it as; create one (useradd --system postgres) or "
                    "run the tests as a normal user"
                ) from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresUnavailable("running as root, and runuser is not installed")
            self._as = [runuser, "-u", "postgres", "--"]

    # ------------------------------------------------------------------ lifecycle
    def start(self, attempts: int = 3) -> PostgresServer:
        """initdb, then start on a free port (another attempt if the port was taken)."""
        self.root = Path(tempfile.mkdtemp(prefix="closedloop-pg-"))
        if self._as:  # the server's user must own the folder; root keeps access anyway
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        data = self.root / "data"
        self._server(
            "initdb", "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8", timeout=120
        )
        for attempt in range(attempts):
            self.port = free_port()
            # TCP on 127.0.0.1 only, no Unix socket (never next to a system server's, and
            # no limit on the temporary folder's path length); pg_ctl -w needs none.
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
            proc = self._server(
                "pg_ctl",
                *("start", "-D", str(data), "-w", "-t", "60"),
                *("-l", str(self.root / "server.log"), "-o", options),
                check=False,
                timeout=90,
            )
            if proc.returncode == 0:
                break
            if attempt == attempts - 1:
                log = (self.root / "server.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"the PostgreSQL server did not start: {proc.stderr}\n{log}")
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended) and delete its folder."""
        if self.root is None:
            return
        if (self.root / "data" / "postmaster.pid").exists():
            self._server(
                "pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "fast", "-w",
                check=False, timeout=60,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ databases
    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self._client("createdb", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._client("dropdb", "--if-exists", "--force", name)

    def psql(self, database: str, sql: str) -> str:
        """Run SQL with psql (unaligned, tuples only): how a test reads the store directly."""
        out = self._client("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, database)
        return out.stdout.strip()

    # ------------------------------------------------------------------ processes
    def _client(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        host = ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]
        return self._run([str(self.bindir / tool), *host, *args], check=True, timeout=60)

    def _server(
        self, tool: str, *args: str, check: bool = True, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        return self._run([*self._as, str(self.bindir / tool), *args], check=check, timeout=timeout)

    @staticmethod
    def _run(
        command: Sequence[str], *, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        # The server must not inherit the test's stdout/stderr pipes: pg_ctl's postgres lives
        # on after pg_ctl exits, and pytest's capture would wait on it.
        proc = subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",  # runuser's user may not be allowed into the test's folder
            env={**os.environ, "LC_ALL": "C"},  # initdb fails on a locale that is not installed
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.strip()}")
        return proc
