"""One output, one writer: a lock file in ``out`` that works on shared filesystems too.

The lock is ``out/convert.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local
filesystems and on NFSv3+), holding the driver's host, pid, process start time and a
random token. A second driver finds it and refuses with one line naming the holder.
A lock whose holder is dead is stale: on the same host a driver checks the pid (and its
start time, against pid reuse), logs a line and takes the lock over. From another host
a driver cannot tell, so it refuses and says how to clear the lock by hand.

On an object store (``out=s3://...``) there is no ``O_EXCL``, and pyarrow offers no conditional
PUT, so the lock is a lock object with a protocol: refuse if ``convert.lock`` exists (naming its
holder); else PUT it holding a random token, wait SETTLE_S, read it back, and go on only if it
still holds our token (S3 reads are strongly consistent after a write: of two drivers that both
wrote, the later write wins and the earlier driver reads the other's token and refuses). Its limit:
a driver whose own check and PUT are more than SETTLE_S apart (a request stalled by retries) can
overwrite a lock that another driver has already confirmed, and then both run. Starting two drivers
on one output within the same few seconds is what the lock cannot always catch there; a driver
started while another runs is refused. A stale lock of this host (its pid dead) is taken over as
locally, by the same write-wait-read protocol.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from typing import Optional

from lmdbshard.errors import LmdbshardError
from lmdbshard.storage import objects
from lmdbshard.storage.urls import is_url, join

LOCK_NAME = "convert.lock"
#: Object stores: seconds between writing the lock object and reading it back (see above).
SETTLE_S = 1.0
log = logging.getLogger("lmdbshard")


class OutputLockedError(LmdbshardError, RuntimeError):
    """Another driver holds the lock on this output folder (exit status 1: retry later, nothing is wrong)."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float            # wall-clock time the lock was taken
    pid_start: Optional[str]  # the process's start time in clock ticks since boot (/proc), against pid reuse
    token: str

    @classmethod
    def me(cls) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), round(time.time(), 3), _pid_start(os.getpid()),
                   secrets.token_hex(8))

    def alive(self) -> bool:
        """On this host only: whether the holding process still runs (the same process, not a reused pid)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return self.pid_start is None or _pid_start(self.pid) in (None, self.pid_start)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on host {self.host} (since {since})"


def _pid_start(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read(path: str) -> Optional[Holder]:
    """The holder recorded in ``path`` (a file or an object URL); None when it is gone. An unreadable lock
    is a holder we cannot name."""
    try:
        if is_url(path):
            data = json.loads(objects.read_bytes(path))
        else:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        return Holder(str(data["host"]), int(data["pid"]), float(data["started"]), data.get("pid_start"),
                      str(data["token"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        local = not is_url(path) and os.path.exists(path)
        return Holder("?", -1, os.path.getmtime(path) if local else 0.0, None, "")


class OutputLock:
    """``with OutputLock(out):`` holds ``out/convert.lock`` for the duration of a job."""

    def __init__(self, root: str):
        self.root = root
        self.remote = is_url(root)
        self.path = join(root, LOCK_NAME)
        self.holder: Optional[Holder] = None

    def _create(self, me: Holder) -> bool:
        if self.remote:
            return _put_and_confirm(self.path, me, check_absent=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(me), f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def acquire(self) -> None:
        me = Holder.me()
        for _ in range(3):
            if self._create(me):
                self.holder = me
                return
            other = _read(self.path)
            if other is None:       # released between our two looks: try again
                continue
            if other.host != me.host or other.pid < 0:
                raise OutputLockedError(
                    f"out {self.root!r} is locked by {other.describe()}: another conversion may be writing it; "
                    f"wait for it, or if that driver is dead, delete {self.path} and rerun")
            if other.alive():
                raise OutputLockedError(
                    f"out {self.root!r} is being written by another conversion, {other.describe()}; wait for "
                    "it to finish (or stop it), then rerun")
            self._take_over(other)
        raise OutputLockedError(f"could not take the lock {self.path}: other drivers keep taking it; rerun")

    def _take_over(self, stale: Holder) -> None:
        """Move a dead driver's lock aside; only the driver that moves the same stale lock wins.
        On an object store: overwrite it if it is still the stale one (the next ``_create`` confirms)."""
        if self.remote:
            current = _read(self.path)
            if current is not None and current.token == stale.token:
                objects.remove(self.path)
                log.warning("took over the lock of a dead conversion (%s) on %s", stale.describe(), self.root)
            return
        aside = f"{self.path}.stale.{os.getpid()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = _read(aside)
        if moved is not None and moved.token != stale.token:   # a live driver's fresh lock: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.remove(aside)
            return
        os.remove(aside)
        log.warning("took over the lock of a dead conversion (%s) on %s", stale.describe(), self.root)

    def release(self) -> None:
        if self.holder is None:
            return
        current = _read(self.path)
        if current is not None and current.token == self.holder.token:
            objects.remove(self.path) if self.remote else os.remove(self.path)
        self.holder = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _put_and_confirm(url: str, me: Holder, check_absent: bool) -> bool:
    """The lock-object protocol: if no lock object exists, write ours, wait SETTLE_S and read it back;
    True when it still holds our token (see the module docstring for the limit)."""
    if check_absent and objects.exists(url):
        return False
    objects.write_bytes(url, json.dumps(asdict(me)).encode())
    time.sleep(SETTLE_S)
    current = _read(url)
    return current is not None and current.token == me.token
