"""One campaign at a time on an EPICS instrument, on this host.

Two ``run``s on one instrument file (in two stores, or two campaigns of one store) both
drove the same IOC, silently: their setpoints interleaved, one's safe state landed in the
other's trial, and a measurement was stored under the other's trial (found in review). A
campaign's lease is per campaign and per store, so it never saw the other. So a run holds
its instrument: an exclusive ``flock`` on one file per EPICS PV it writes (setpoint, motor
and acquisition PVs, on their Channel Access network), so two instrument files that share
one PV are one instrument to it, all taken before any device is built and released when
the run ends. The operating system releases it when the process
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
    """The EPICS PVs a declared instrument writes, each as text that is the same for the
    same PV of the same hardware: every input's setpoint or motor PV, an acquisition's PV
    and each ``on_stop`` PV that is no input, with the file's prefix, on the Channel Access
    network they are reached on. Empty: it writes no PV.

    One entry, and so one hold, per PV: two instrument files that share only a heater's
    setpoint drive one heater, and a hold of the whole list let both run at once, one's
    safe state overwritten by the other's next setpoint and one's measurement stored as
    the other's (found in review, session 38).

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
    # a safe state's PV that is no input: a pump file's on_stop of the heater's setpoint
    # wrote it mid-trial of the heater's campaign (review V)
    pvs.extend(spec.prefix + key for key in getattr(spec, "on_stop", {}) if key not in spec.inputs)
    network = _ca_network()
    return [f"ca {network} {pv}" for pv in sorted(set(pvs))]


def _ca_network() -> str:
    """The Channel Access network as the same text for the same IOCs: `no` and `NO`, an
    unset port and 5064, addresses in any order or spacing, an address with the server
    port written in and one that takes it from ``EPICS_CA_SERVER_PORT`` (one IOC under two
    spellings was two instruments, and two runs drove it; found in review)."""
    port = os.environ.get("EPICS_CA_SERVER_PORT", "").strip() or "5064"

    def addresses(name: str) -> str:
        given = os.environ.get(name, "").split()
        return " ".join(sorted({a if ":" in a else f"{a}:{port}" for a in given}))

    auto = os.environ.get("EPICS_CA_AUTO_ADDR_LIST", "").strip().upper() != "NO"
    broadcast = f"port {port}" if auto else "NO"  # anything but NO means yes
    return (
        f"addr=[{addresses('EPICS_CA_ADDR_LIST')}];auto={broadcast};"
        f"names=[{addresses('EPICS_CA_NAME_SERVERS')}]"
    )


class InstrumentHold:
    """The hold of one instrument by this process (see the module): one lock file per PV it
    writes (``paths``; ``path`` the first); :meth:`release` ends it."""

    def __init__(self, paths: list[Path], fds: list[int]) -> None:
        self.paths = paths
        self.path = paths[0]
        self._fds = fds

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing a descriptor releases its flock


def hold_instrument(spec: Any, *, holder: str) -> InstrumentHold | None:
    """Hold every PV the instrument ``spec`` writes for this process, or raise
    :class:`InstrumentBusy` naming the PV and who holds it (none is then held).
    ``holder`` (the campaign and its store) is written into each file for that message.
    ``None``: nothing to hold (an instrument that writes nothing, or no ``flock`` here).
    """
    identity = instrument_identity(spec)
    if not identity or fcntl is None:
        return None
    record = {
        "holder": holder,
        "pid": os.getpid(),
        "user": _user(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "instrument": spec.name,
    }
    held = InstrumentHold([LOCK_FOLDER / _lock_name(entry) for entry in identity], [])
    for entry, path in zip(identity, held.paths, strict=True):
        pv = entry.rsplit(" ", 1)[-1]
        try:
            fd = _open_lock(path)
        except OSError as exc:
            held.release()
            logger.warning(
                "instrument %r is not held for this run (%s, for %s: %s): another campaign "
                "on this host could drive it at the same time; let every user create files "
                "in %s (chmod 1777, as /tmp is)",
                spec.name,
                path,
                pv,
                exc.strerror or exc,
                LOCK_FOLDER,
            )
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            held_by = _read_holder(fd)
            os.close(fd)
            held.release()
            raise InstrumentBusy(
                f"instrument {spec.name!r} writes PV {pv}, which another campaign on this "
                f"host is driving ({held_by}); two campaigns on one device interleave their "
                "setpoints and each other's safe state: stop that one first (Ctrl-C in its "
                "terminal, or `kill -TERM` its pid), or point this campaign at another "
                "instrument"
            ) from None
        held._fds.append(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({**record, "pv": pv}).encode(), 0)
        except OSError:  # the record is for the message only
            pass
    return held


def _lock_name(entry: str) -> str:
    return f"{hashlib.sha256(entry.encode()).hexdigest()[:24]}.lock"


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
