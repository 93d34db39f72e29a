"""Publishing files atomically: readers see the old file or the whole new one, never a torn one.

Write under a ``*.partial`` name, fsync it, ``os.replace`` it into place, fsync the folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

from .format import PARTIAL_SUFFIX


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def publishing(final: str) -> Iterator[int]:
    """Yield the fd of a ``*.partial`` file beside ``final``; on success fsync and rename it into place."""
    folder = os.path.dirname(os.path.abspath(final))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(final)}.", suffix=PARTIAL_SUFFIX, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes 0600; give it the mode open() would
        yield fd
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, final)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        remove_quietly(tmp)
        raise
    fsync_dir(folder)


def write_json_atomic(path: str, obj: Any) -> None:
    with publishing(path) as fd:
        data = json.dumps(obj, indent=1).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
