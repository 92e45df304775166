"""The processes of a one-node CPU run of N > 1 processes, started at the beginning of ``vidtempo train``.

Lightning's launcher starts ranks 1..N-1 from ``Trainer.fit``, after this process has imported torch,
Lightning and transformers, read the data and built the model; each new rank then does all of it again while
rank 0 waits (about 8 s of a 2-core machine for the demo recipe, before its first step). Started here, before
those imports, all ranks import and build at the same time. Each process gets the variables Lightning reads
when something else launched it (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``), so Lightning starts nothing itself; the training is the same (each rank seeds itself as
before, and DDP starts every rank from rank 0's weights).

Only for ``trainer.accelerator: cpu`` with an integer ``trainer.devices`` > 1 on one node, a ``ddp`` or ``fsdp``
strategy, the same in every stage, and nothing launched this process already (no ``LOCAL_RANK``: torchrun,
SLURM). Other runs keep Lightning's launcher (GPU runs included: this path has not run on a GPU).

A rank that fails stops the others, as Lightning's launcher does (a rank left alone would wait in a collective);
a rank interrupted by Ctrl-C (exit code 130) gives rank 0 ``INTERRUPT_GRACE_S`` to save its checkpoint first.

Example:
    >>> launch_size({"trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}})
    2
    >>> launch_size({"trainer": {"accelerator": "gpu", "devices": 2, "strategy": "ddp"}})
    0
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

STRATEGIES = ("ddp", "fsdp", "fsdp2")
LAUNCH_KEYS = ("accelerator", "devices", "strategy", "num_nodes")  # a stage that changes one keeps Lightning's
POLL_S = 0.5  # how often the watcher looks at the other ranks
INTERRUPT_GRACE_S = 60.0  # after a rank exits with 130 (Ctrl-C), how long rank 0 may take to save and exit


def launch_size(recipe: dict[str, Any]) -> int:
    """How many processes to start here for a resolved recipe (plain dict), or 0 for Lightning's launcher."""
    trainer = recipe.get("trainer") or {}
    for stage in recipe.get("stages") or []:
        override = (stage or {}).get("trainer") or {}
        if any(k in override and override[k] != trainer.get(k) for k in LAUNCH_KEYS):
            return 0
    devices = trainer.get("devices")
    if (trainer.get("accelerator") != "cpu" or isinstance(devices, bool) or not isinstance(devices, int)
            or devices < 2 or (trainer.get("num_nodes") or 1) != 1 or str(trainer.get("strategy")) not in STRATEGIES):
        return 0  # fmt: skip
    return devices


class LocalRanks:
    """Ranks 1..N-1 started by :func:`launch_local_ranks`, watched from a thread of rank 0.

    Example:
        >>> ranks = LocalRanks([])
        >>> ranks.wait()
        0
    """

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        self.procs = procs
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="vidtempo-rank-watcher", daemon=True)
        if procs:
            self._watcher.start()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for every rank (rank 0 is done); the first non-zero exit code, else 0. Ranks still running after
        ``timeout`` seconds are killed."""
        self._done.set()  # the watcher stops: from here rank 0 itself reads every exit code
        if self._watcher.is_alive():
            self._watcher.join()
        deadline = None if timeout is None else time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return next((p.returncode for p in self.procs if p.returncode), 0)

    def _watch(self) -> None:
        interrupted_at: float | None = None
        while not self._done.wait(POLL_S):
            failed = [(k, p.returncode) for k, p in enumerate(self.procs, 1) if p.poll() not in (None, 0)]
            if not failed:
                continue
            rank, code = failed[0]
            if code == 130:  # Ctrl-C: rank 0 saves its checkpoint and exits on its own
                interrupted_at = interrupted_at or time.monotonic()
                if time.monotonic() - interrupted_at < INTERRUPT_GRACE_S:
                    continue
            if not self._done.is_set():  # rank 0 is not already waiting for the ranks itself
                self._stop_all(rank, code)
            return

    def _stop_all(self, rank: int, code: int) -> None:
        print(f"rank {rank} exited with code {code}: stopping the other ranks (a rank left alone would wait in "
              "a collective)", file=sys.stderr, flush=True)  # fmt: skip
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        os.kill(os.getpid(), signal.SIGKILL)  # rank 0 may be blocked in a collective: nothing else stops it


def launch_local_ranks(processes: int, command: Sequence[str]) -> LocalRanks | None:
    """Make this process rank 0 of ``processes`` and start the others as ``command`` (this one's command line)
    with their ``LOCAL_RANK``; None (nothing started) when something launched this process already."""
    if processes < 2 or "LOCAL_RANK" in os.environ:
        return None
    os.environ.update({"MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"), "MASTER_PORT": str(free_port()),
                       "NODE_RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": str(processes)})  # fmt: skip
    procs = [subprocess.Popen(list(command), env={**os.environ, "LOCAL_RANK": str(k)}) for k in range(1, processes)]
    return LocalRanks(procs)


def is_first_process() -> bool:
    """Whether this is the run's first process (rank 0 of node 0, or a run that nothing launched), the one that
    writes the run's own files (recipe, manifest) while the others only read them.

    Example:
        >>> is_first_process() if "LOCAL_RANK" not in os.environ else True
        True
    """
    return int(os.environ.get("LOCAL_RANK", 0) or 0) == 0 and int(os.environ.get("NODE_RANK", 0) or 0) == 0


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (the ranks' rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
