"""Publishing files atomically: readers see the old file or the whole new one, never a torn one.

Write under a ``*.partial`` name, fsync it, ``os.replace`` it into place, fsync the folder.
A directory (an LMDB environment holding ``data.mdb``) is published the same way: its file is
written inside a ``*.partial`` directory, fsynced with it, and the directory is renamed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from lmdbshard.errors import DiskFullError
from lmdbshard.format import names
from lmdbshard.format.record import PARTIAL_SUFFIX


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


@contextmanager
def publishing_dir(final: str, name: str) -> Iterator[int]:
    """Yield the fd of file ``name`` inside a ``*.partial`` directory beside ``final``; on success fsync both
    and rename the directory to ``final``. An earlier ``final`` (directory, or file of an older layout) is
    moved aside first and then removed: a reader in between finds no shard, never a torn one."""
    folder = os.path.dirname(os.path.abspath(final))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.", suffix=PARTIAL_SUFFIX, dir=folder)
    fd = -1
    try:
        os.chmod(tmp, 0o777 & ~_umask())   # mkdtemp makes 0700; give it the mode mkdir() would
        fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        yield fd
        os.fsync(fd)
        os.close(fd)
        fd = -1
        fsync_dir(tmp)
        if os.path.lexists(final):
            old = tmp[:-len(PARTIAL_SUFFIX)] + ".old" + PARTIAL_SUFFIX
            os.rename(final, old)
            if os.path.isdir(old):
                shutil.rmtree(old)
            else:
                os.remove(old)
        os.rename(tmp, final)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder)


def is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)


def free_bytes(folder: str) -> int:
    return shutil.disk_usage(folder).free


def disk_full_message(folder: str, doing: str, needed: int, hint: str = "") -> str:
    """One line for a full disk: where, while doing what, how much is needed and free, and the fix."""
    return (f"no space left on the disk holding {folder} while {doing}: it needs about {needed / 1e6:.1f} MB, "
            f"{free_bytes(folder) / 1e6:.1f} MB is free; free some space{' ' + hint if hint else ''} and rerun "
            "the same command (complete shards are kept)")


def json_bytes(obj: Any) -> bytes:
    """``obj`` as strict JSON: a string holding undecodable file-name bytes (lone surrogates, which
    ``json.dumps`` would write as ``\\udcXX``) is written valid, as ``names.strict`` shows it."""
    text = json.dumps(obj, indent=1, allow_nan=False)
    if "\\ud" in text:   # surrogates, lone or paired: only lone ones change
        text = json.dumps(names.strict(obj), indent=1, allow_nan=False)
    return text.encode("ascii") + b"\n"


def write_json_atomic(path: str, obj: Any) -> None:
    write_bytes_atomic(path, json_bytes(obj))


def write_all(fd: int, view: memoryview) -> None:
    """Write every byte of ``view`` to ``fd`` (``os.write`` may write fewer than asked)."""
    while view:
        view = view[os.write(fd, view):]


#: Bytes a ``WriteBehind`` writes between asking the kernel to start writing them to disk.
WRITE_BEHIND_BYTES = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2   # start writeback of the range's dirty pages; do not wait


def _sync_file_range() -> Optional[Callable[..., int]]:
    """Linux's ``sync_file_range(2)`` through libc, or None where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint], ctypes.c_int
    return fn


_start_writeback = _sync_file_range()


class WriteBehind:
    """``write_all`` to ``fd``, asking the kernel every ``WRITE_BEHIND_BYTES`` to start writing what came
    before to disk, without waiting: the fsync that publishes the file then waits for its last few MB,
    not for all of it (on the 86 MB shard of ``make bench``, 0.06-0.08 s of fsync at the end of a job).
    Where ``sync_file_range`` is missing, it is a plain ``write_all``."""

    def __init__(self, fd: int):
        self.fd, self.written, self.started = fd, 0, 0

    def __call__(self, view: memoryview) -> None:
        write_all(self.fd, view)
        self.written += len(view)
        if _start_writeback is not None and self.written - self.started >= WRITE_BEHIND_BYTES:
            _start_writeback(self.fd, self.started, self.written - self.started, _SYNC_FILE_RANGE_WRITE)
            self.started = self.written


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Publish ``data`` as the file ``path`` (``publishing``); a full disk is one ``DiskFullError`` line."""
    try:
        with publishing(path) as fd:
            write_all(fd, memoryview(data))
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(disk_full_message(os.path.dirname(os.path.abspath(path)),
                                                  f"writing {os.path.basename(path)}", len(data))) from exc
        raise
