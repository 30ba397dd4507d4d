"""One campaign at a time on an EPICS instrument, on this host.

Two ``run``s on one instrument file (in two stores, or two campaigns of one store) both
drove the same IOC, silently: their setpoints interleaved, one's safe state landed in the
other's trial, and a measurement was stored under the other's trial (found in review). A
campaign's lease is per campaign and per store, so it never saw the other. So a run holds
its instrument: an exclusive ``flock`` on a file named by the EPICS PVs it writes (setpoint,
motor and acquisition PVs, on their Channel Access network), taken before any device is
built and released when the run ends. The operating system releases it when the process
dies, so a killed runner leaves nothing to clean up.

The files live in one folder of the host, ``/tmp/closedloop-instruments`` (open to every
user, sticky, as ``/tmp`` is), so a colleague's campaign is seen too. It is not the
temporary folder ``TMPDIR`` names: that is often one's own (pam_tmpdir, macOS, a Slurm
job), and two runs with two ``TMPDIR``s drove one IOC at once (found in review). Nor are
the files left to the umask: a lock another user's run made ``0644`` could not be opened,
and the hold was skipped without a word; a lock that can be opened only for reading is
held all the same (``flock`` does not ask for write access), and a hold that cannot be
taken at all is said. Another host driving the same IOC is not seen: that is the
facility's access security's to prevent (EPICS Channel Access security groups); nor is a
service run with systemd's ``PrivateTmp``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from instruments._errors import InstrumentError

try:  # not on Windows: there a run holds nothing (said in the README)
    import fcntl
except ImportError:  # pragma: no cover - POSIX only
    fcntl = None  # type: ignore[assignment]


logger = logging.getLogger(__name__)

#: Where the holds live: one folder for every user of the host (see the module).
LOCK_FOLDER = Path("/tmp" if Path("/tmp").is_dir() else tempfile.gettempdir()) / (
    "closedloop-instruments"
)


class InstrumentBusy(InstrumentError):
    """Another process on this host is running a campaign on the same instrument."""


#: The Channel Access settings that say which IOCs a PV name reaches: the same names on
#: another network (another EPICS_CA_ADDR_LIST or server port) are other hardware.
_CA_NETWORK = (
    "EPICS_CA_ADDR_LIST",
    "EPICS_CA_AUTO_ADDR_LIST",
    "EPICS_CA_SERVER_PORT",
    "EPICS_CA_NAME_SERVERS",
)


def instrument_identity(spec: Any) -> list[str]:
    """The EPICS PVs a declared instrument writes, as text that is the same for the same
    hardware: every input's setpoint or motor PV and an acquisition's PV, with the file's
    prefix, and the Channel Access network they are reached on. Empty: it writes no PV.

    A plugin device is not counted: whether two of its objects are one piece of hardware
    is the class's to know (a serial port opens once; an ophyd ``Signal`` is this
    process's own).
    """
    pvs = [
        spec.prefix + (d.setpoint or d.motor) for d in spec.inputs.values() if d.setpoint or d.motor
    ]
    acquire = getattr(spec, "acquire", None)
    if acquire is not None and getattr(acquire, "pv", None):
        pvs.append(spec.prefix + acquire.pv)
    if not pvs:
        return []
    network = ";".join(f"{k}={_ca_setting(k)}" for k in _CA_NETWORK)
    return [f"ca {network}", *sorted(set(pvs))]


def _ca_setting(name: str) -> str:
    """A Channel Access setting as the same text for the same network: `no` and `NO`,
    an unset port and 5064, addresses in any order or spacing (one IOC under two spellings
    was two instruments, and two runs drove it; found in review)."""
    value = os.environ.get(name, "").strip()
    if name == "EPICS_CA_AUTO_ADDR_LIST":
        return "NO" if value.upper() == "NO" else "YES"  # anything else means yes
    if name == "EPICS_CA_SERVER_PORT":
        return value or "5064"
    return " ".join(sorted(value.split()))


class InstrumentHold:
    """The hold of one instrument by this process (see the module); :meth:`release` ends it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def hold_instrument(spec: Any, *, holder: str) -> InstrumentHold | None:
    """Hold the instrument ``spec`` describes for this process, or raise
    :class:`InstrumentBusy` naming who holds it. ``holder`` (the campaign and its store) is
    written into the file for that message. ``None``: nothing to hold (an instrument that
    writes nothing, or no ``flock`` here).
    """
    identity = instrument_identity(spec)
    if not identity or fcntl is None:
        return None
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:24]
    path = LOCK_FOLDER / f"{digest}.lock"
    try:
        fd = _open_lock(path)
    except OSError as exc:
        logger.warning(
            "instrument %r is not held for this run (%s: %s): another campaign on this host "
            "could drive it at the same time; let every user create files in %s (chmod 1777, "
            "as /tmp is)",
            spec.name,
            path,
            exc.strerror or exc,
            LOCK_FOLDER,
        )
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        held_by = _read_holder(fd)
        os.close(fd)
        raise InstrumentBusy(
            f"instrument {spec.name!r} is being driven by another campaign on this host "
            f"({held_by}); two campaigns on one instrument interleave their setpoints and "
            "each other's safe state: stop that one first (Ctrl-C in its terminal, or "
            "`kill -TERM` its pid), or point this campaign at another instrument"
        ) from None
    record = {
        "holder": holder,
        "pid": os.getpid(),
        "user": _user(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "instrument": spec.name,
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
    except OSError:  # the record is for the message only
        pass
    return InstrumentHold(path, fd)


def _open_lock(path: Path) -> int:
    """A descriptor of the lock file ``path``, made (with its folder) open to every user."""
    folder = path.parent
    try:
        folder.mkdir(exist_ok=True)
        if folder.stat().st_uid == os.getuid() and folder.stat().st_mode & 0o1777 != 0o1777:
            # not left to the umask (mkdir's mode is masked), nor as an older run made it
            os.chmod(folder, 0o1777)
    except PermissionError:
        pass  # another user's: as it is
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        try:
            fd = os.open(path, os.O_RDWR)
        except PermissionError:  # another user's lock, not writable: held all the same
            return os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o666)  # every user's run opens it, whatever the umask
    except OSError:
        pass
    return fd


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "its details could not be read"
    if not isinstance(record, dict) or not record:
        return "its details could not be read"
    if record.get("host") == socket.gethostname() and not _alive(record.get("pid")):
        # the holder opened the file read-only and could not write its own record: the one
        # there is an earlier holder's, whose pid may be another process's now (found in
        # review)
        return (
            "a process that could not record itself in the lock file; the file names an "
            f"earlier holder, pid {record.get('pid', '?')}, which has ended"
        )
    return (
        f"{record.get('holder', '?')}, pid {record.get('pid', '?')} of "
        f"{record.get('user', '?')}, since {record.get('since', '?')}"
    )


def _alive(pid: object) -> bool:
    """Whether ``pid`` is a process of this host (one of another user's counts)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (a container)
        return str(os.getuid())
