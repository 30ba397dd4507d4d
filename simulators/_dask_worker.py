"""Preload of the local cluster's worker processes (``DaskExecutor.local``).

A terminal's Ctrl-C sends SIGINT to its whole foreground process group, and the worker
processes that ``LocalCluster`` spawns are in the campaign's group. Each one then died of its
own ``KeyboardInterrupt`` while the campaign was still stopping, printing a page of tracebacks
per worker over the campaign's "stopped" summary, and leaving a trial that was still computing
without a worker before the runner had recorded it. The campaign process owns the stop: it
ends its trials, then closes the cluster, which ends the workers. So a worker ignores SIGINT
and waits for that. (SIGTERM and SIGKILL still end it: the nanny's own way to stop it.)
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    """Ignore SIGINT in this worker process (Dask calls this as the worker starts)."""
    # The worker's event loop runs in its process's main thread, the only one that may set
    # a signal handler; the check keeps a thread-based worker (never used here) safe.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
