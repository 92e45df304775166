"""Helpers for the processes vidtempo starts (rendering workers, evaluation processes)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the process that started it is gone (killed, even by
    SIGKILL), instead of living on orphaned: the kernel's parent-death signal where there is one (Linux), and a
    watcher thread everywhere.

    Example (in a worker):
        >>> from concurrent.futures import ProcessPoolExecutor
        >>> pool = ProcessPoolExecutor(1, initializer=die_with_parent, initargs=(os.getpid(),))
        >>> pool.shutdown()
    """

    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="vidtempo-parent-watch").start()
