"""Tools for fault-injection tests: an image file that holds its reader until released, and finding
the process that is reading it, so a test can kill exactly the worker that is mid-shard."""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Callable


class FifoImage:
    """A named pipe standing where an image file was. A reader's ``open`` succeeds and its ``read``
    blocks until ``release()``; after that every reader (a retried task too) gets the image bytes."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            self.data = f.read()
        os.remove(path)
        os.mkfifo(path)
        self.path = path
        self.released = threading.Event()
        self.stopped = threading.Event()
        self.serves = 0
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"fifo {path}")
        self._thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:   # non-blocking open fails with ENXIO until a reader has the pipe open
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.01)
                continue
            os.set_blocking(fd, True)
            try:
                while not (self.released.wait(0.05) or self.stopped.is_set()):
                    pass
                if self.released.is_set():
                    os.write(fd, self.data)
                    self.serves += 1
            except BrokenPipeError:   # the reader was killed while it waited
                pass
            finally:
                os.close(fd)

    def release(self) -> None:
        self.released.set()

    def restore(self) -> None:
        """Stop serving and put the plain image file back, as it was before."""
        self.stopped.set()
        self._thread.join(timeout=5)
        os.remove(self.path)
        with open(self.path, "wb") as f:
            f.write(self.data)


def readers_of(path: str) -> list[int]:
    """PIDs of other processes with ``path`` open (a scan of /proc/*/fd)."""
    target = os.path.realpath(path)
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    pids.append(int(pid))
                    break
        except OSError:
            continue
    return pids


def wait_for(condition: Callable[[], object], timeout: float = 120.0, what: str = "a condition"):
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
