"""Tools for fault-injection tests: an image file that holds its reader until released, a dataset that
reads it (lmdbshard itself reads only regular files), finding the process that is reading it (so a test
can kill exactly the worker that is mid-shard), and a real driver process whose session holds every
process it starts."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from PIL import Image


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


class HeldFolder:
    """The images of an ImageFolder tree (``root/<class>/**/<image>``) as a python source,
    ``source.target=faults:HeldFolder source.args=[root]``. The dataset opens its files itself, as a
    user's dataset does, so a ``FifoImage`` among them keeps the task that reaches it waiting."""

    EXTENSIONS = (".jpg", ".jpeg", ".png")

    def __init__(self, root: str):
        self.root = root
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.items = sorted((os.path.relpath(os.path.join(folder, name), root), label)
                            for label, c in enumerate(self.classes) for folder, _, names in os.walk(os.path.join(root, c))
                            for name in names if name.lower().endswith(self.EXTENSIONS))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        rel, label = self.items[i]
        with open(os.path.join(self.root, rel), "rb") as f:
            return Image.open(io.BytesIO(f.read())), label


@contextmanager
def held_conversion(held: "FifoImage", run: Callable[[], object]) -> Iterator[dict]:
    """Run ``run()`` (a conversion) on a thread while ``held`` holds one image back; yields a dict that
    gets ``result``. On leaving: the image is released, the run joined, and the file restored."""
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=run()))
    runner.start()
    try:
        yield outcome
        held.release()
        runner.join(timeout=240)
    finally:
        held.release()
        held.restore()


def held_source(root: str):
    from lmdbshard import SourceConfig
    return SourceConfig(kind="python", target="faults:HeldFolder", args=[root])


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


TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
DRIVER_ARGS = ["shard_size=5", "transform.resize_shorter=32", "storage.quality=90", "progress=log",
               "log_interval_s=0.2", "ray.num_cpus=2", "ray.max_in_flight=4"]


def start_driver(src: str, out: str, *overrides: str) -> subprocess.Popen:
    """``jobs/convert.py`` as a user runs it, over ``HeldFolder(src)``, in a session of its own: a signal to its process group is
    what a terminal's Ctrl-C sends, and the session finds every process it started (Ray's included)."""
    cmd = [sys.executable, os.path.join(REPO, "jobs", "convert.py"), "--config-name", "base", "source=python",
           "source.target=faults:HeldFolder", f"source.args=['{src}']", f"out={out}", *DRIVER_ARGS, *overrides]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env_with_tests())


def env_with_tests() -> dict[str, str]:
    """This environment, with the tests folder on PYTHONPATH: Ray workers import HeldFolder from there."""
    path = os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def session_processes(sid: int) -> dict[int, str]:
    """Live processes of session ``sid`` (pid -> command line); zombies are left out."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid or fields[0] == "Z":
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found[int(pid)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue
    return found
