"""SIGINT and SIGTERM during a job, and the processes a job started.

While Ray starts, shard tasks run or Ray shuts down, both signals only set a flag (``STOP``): the
driver then stops in order (cancel the tasks, shut the cluster down, remove scratch) and raises one
``JobInterrupted`` whose message every entry point prints as it is. A ``KeyboardInterrupt`` raised at
a random point of ``ray.init`` or of a Ray call could leave half-started processes behind, or crash.
Elsewhere the signals act as usual.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager, suppress
from typing import Callable, Iterator, Optional

from lmdbshard.errors import JobInterrupted


class Stop:
    """SIGINT and SIGTERM caught as a flag where breaking in would do harm (while Ray starts, while shard
    tasks run, while Ray shuts down), so that the driver stops in order: cancel the tasks, shut its
    cluster down, remove scratch, then raise one ``JobInterrupted``."""

    signum: Optional[int] = None

    def handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    def check(self, what: str) -> None:
        """Raise ``JobInterrupted`` with ``what`` (e.g. "2 of 5 shards complete and kept") once a signal came."""
        if self.signum is not None:
            by = "" if self.signum == signal.SIGINT else f" by {signal.Signals(self.signum).name}"
            raise JobInterrupted(f"interrupted{by}: {what}; rerun the same command to resume")


STOP = Stop()
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def caught_signals() -> Iterator[Callable[[], None]]:
    """Route SIGINT and SIGTERM to ``STOP`` inside the block (main thread only: Python runs handlers
    there), and put the previous handlers back after it. Yields ``reinstall``: after ``ray.init`` has set
    its own SIGTERM handler, it takes that one as the handler to put back, and routes SIGTERM here again."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    saved: dict[int, object] = {}

    def install() -> None:
        for s in _SIGNALS:
            current = signal.getsignal(s)
            if current != STOP.handle:
                saved[s] = current if current is not None else signal.SIG_DFL
            signal.signal(s, STOP.handle)

    STOP.signum = None
    install()
    try:
        yield install
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def descendants(root: int) -> list[int]:
    """PIDs of every process below ``root`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
