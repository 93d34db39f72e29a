"""One output, one writer: a lock file in ``out`` that works on shared filesystems too.

The lock is ``out/convert.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local
filesystems and on NFSv3+), holding the driver's host, pid, process start time and a
random token. A second driver finds it and refuses with one line naming the holder.
A lock whose holder is dead is stale: on the same host a driver checks the pid (and its
start time, against pid reuse), logs a line and takes the lock over. From another host
a driver cannot tell, so it refuses and says how to clear the lock by hand.

On an object store (``out=s3://...``) there is no ``O_EXCL``, and pyarrow offers no conditional
PUT. There a driver first lists the claims in ``out`` (``convert.lock.*``) and refuses, naming the
holder, if there is one. Otherwise it writes its own claim, ``convert.lock.<token>`` (no other driver
writes that key), and lists again: it holds the lock when its claim is the only one. Listing after a
write is strongly consistent on S3 and GCS, so of two drivers whose claims overlap, the one that listed
later sees both: two drivers never both see only their own. A driver that sees another claim deletes
its own, waits a random moment (up to BACKOFF_S) and starts again; of two that started together, the
first to come back takes the lock and the other is refused (after CLAIM_ATTEMPTS collisions in a
row, both are). Safety needs no timing assumption, and nothing waits in the common case: a listing,
a PUT and a listing, then a DELETE at release. A stale claim of this host (its pid dead) is deleted
and the protocol starts again.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from typing import Optional

from lmdbshard.errors import LmdbshardError
from lmdbshard.storage import objects
from lmdbshard.storage.urls import is_url, join

LOCK_NAME = "convert.lock"
#: Object stores: tries at the claim protocol, and the longest random wait between two (seconds).
CLAIM_ATTEMPTS = 6
BACKOFF_S = 0.5
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


def is_lock(rel: str) -> bool:
    """Whether ``rel`` (a name in ``out``) is the lock: the lock file, a claim object or a moved-aside stale lock."""
    name = rel.rsplit("/", 1)[-1]
    return name == LOCK_NAME or name.startswith(LOCK_NAME + ".")


class OutputLock:
    """``with OutputLock(out):`` holds ``out/convert.lock`` (an object store: our claim object) for the
    duration of a job."""

    def __init__(self, root: str):
        self.root = root
        self.remote = is_url(root)
        self.path = join(root, LOCK_NAME)
        self.holder: Optional[Holder] = None

    def _create(self, me: Holder) -> bool:
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
        if self.remote:
            self.path = self._claim(me)
            self.holder = me
            return
        for _ in range(3):
            if self._create(me):
                self.holder = me
                return
            other = _read(self.path)
            if other is None:       # released between our two looks: try again
                continue
            self._refuse_unless_dead(other, self.path, me)
            self._take_over(other)
        raise OutputLockedError(f"could not take the lock {self.path}: other drivers keep taking it; rerun")

    def _refuse_unless_dead(self, other: Holder, path: str, me: Holder) -> None:
        """Raise OutputLockedError naming ``other`` unless it is a dead driver of this host."""
        if other.host != me.host or other.pid < 0:
            raise OutputLockedError(
                f"out {self.root!r} is locked by {other.describe()}: another conversion may be writing it; "
                f"wait for it, or if that driver is dead, delete {path} and rerun")
        if other.alive():
            raise OutputLockedError(
                f"out {self.root!r} is being written by another conversion, {other.describe()}; wait for "
                "it to finish (or stop it), then rerun")

    def _claim(self, me: Holder) -> str:
        """The claim protocol on an object store (module docstring); the URL of our claim once held."""
        mine = join(self.root, f"{LOCK_NAME}.{me.token}")
        for _ in range(CLAIM_ATTEMPTS):
            others = self._claims()
            if others:
                other = _read(others[0])
                if other is not None:
                    self._refuse_unless_dead(other, others[0], me)
                    objects.delete(others[0])
                    log.warning("took over the lock of a dead conversion (%s) on %s", other.describe(), self.root)
                continue
            objects.write_bytes(mine, json.dumps(asdict(me)).encode())
            if self._claims() == [mine]:
                return mine
            objects.delete(mine)   # claimed together with another driver: both step back
            time.sleep(random.uniform(0.0, BACKOFF_S))
        raise OutputLockedError(f"could not take the lock on {self.root}: other drivers keep claiming it; rerun")

    def _claims(self) -> list[str]:
        """URLs of the claim objects in ``out`` (and the lock object of an earlier version), sorted."""
        return [join(self.root, name) for name, folder, _ in objects.listdir(self.root) if not folder and is_lock(name)]

    def _take_over(self, stale: Holder) -> None:
        """Move a dead driver's lock file aside; only the driver that moves the same stale lock wins."""
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
        if self.remote:
            objects.delete(self.path)   # our claim: nobody else writes its key
        else:
            current = _read(self.path)
            if current is not None and current.token == self.holder.token:
                os.remove(self.path)
        self.holder = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
