"""Reading a shard's inputs: regular files only, within a size limit, a few ahead of the decoder.

Every file is treated as possibly hostile. ``read_regular`` opens it non-blocking and checks the
opened descriptor, so a FIFO cannot hang a task and a device (a ``.jpg`` link to ``/dev/zero``) is
never read; a file over ``transform.max_file_bytes`` is refused from its size, and at most that
many bytes (plus one) are ever read. Whatever goes wrong is the item's ``SampleError``, which the
shard task records; a task never fails, hangs or grows without bound because of one input.

``prefetched`` reads files in the task's own thread while they come fast (the page cache, a local SSD),
and from the SLOW_READS-th read slower than SLOW_READ_S on (a network filesystem, a cold disk) up to
PREFETCH files ahead on READ_THREADS threads; reading ahead stops while PREFETCH_BYTES wait, so a task holds at
most about PREFETCH_BYTES plus READ_THREADS + 1 files of ``max_file_bytes`` at once. A python source's
items come from the dataset, in order.
A source on an object store (a URL root) is read object by object (``read_object``); each read is a
network round trip, so they go ahead on the threads from the first.
"""

from __future__ import annotations

import os
import stat
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

from lmdbshard.errors import SampleError
from lmdbshard.storage import objects
from lmdbshard.storage.urls import is_url, join
from lmdbshard.write.listing import UNLISTED, unlisted_reason
from lmdbshard.write.sources.python import PythonSource

if TYPE_CHECKING:
    from lmdbshard.write.task import ShardItem, ShardTask

PREFETCH = 8               # files read ahead of decoding, on I/O threads
PREFETCH_BYTES = 64 << 20  # stop reading ahead while this many bytes wait
READ_THREADS = 4
#: SLOW_READS reads slower than SLOW_READ_S turn reading ahead on for the rest of the items. Below it,
#: read-ahead threads cost more CPU than they hide: 5-7% of a unit's CPU time on page-cached JPEGs of
#: ~100 KB (measured; a read then takes ~30 us, and each file's hand-over between threads costs more).
#: One slow read alone is more often the task losing its CPU mid-read than a slow filesystem: about one
#: read in 1,000 of page-cached 32x32 JPEGs took over 2 ms on 2 busy cores, which turns the threads on
#: in some 4 units in 10 of ~500 of them (1 - 0.999^500), and the hand-overs then took 16% of all units'
#: time (py-spy). Three in one unit: in none of 1,250 units of 64, and in one of ~40 units of ~500.
#: Photos read from disk still turn them on (23 of ~70 units of 64 here).
SLOW_READ_S = 0.002
SLOW_READS = 3


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _regular(rel: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise SampleError(rel, f"{kind}, not a regular file; only regular files are read")


def read_regular(root: str, rel: str, limit: int) -> bytes:
    """The bytes of the regular file ``root/rel``, if it holds at most ``limit`` bytes; else SampleError.

    Checked before opening (stat), opened non-blocking, so that a FIFO cannot hang the open, and checked
    again on the opened descriptor (fstat), so that a path swapped for a device or a pipe in between is
    refused too. At most ``limit + 1`` bytes are read: a file that grows past the limit is refused."""
    if rel.endswith(UNLISTED):
        raise SampleError(rel, unlisted_reason(os.path.join(root, rel)))
    path = os.path.join(root, rel)
    try:   # a device is refused before it is opened: opening some (a watchdog, a tape) acts
        _regular(rel, os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise SampleError(rel, f"cannot read {exc.filename or rel}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        _regular(rel, st)   # again on what was opened: the path may have been swapped since
        if st.st_size > limit:
            raise SampleError(rel, f"{st.st_size} bytes, over transform.max_file_bytes={limit}; "
                                   "raise transform.max_file_bytes to read it")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(max(st.st_size + 1, 1 << 16), limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise SampleError(rel, f"grew past transform.max_file_bytes={limit} while being read")
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as exc:
        raise SampleError(rel, f"cannot read {rel}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_object(root: str, rel: str, limit: int) -> bytes:
    """The bytes of the object ``root/rel`` (``root`` a URL), if it holds at most ``limit`` bytes; else
    SampleError. A missing or unreadable object is the item's error too; transient errors were already
    retried by the SDK (storage/urls.py, MAX_ATTEMPTS)."""
    try:
        return objects.read_bytes(join(root, rel), limit=limit)
    except FileNotFoundError:
        raise SampleError(rel, f"no object at {join(root, rel)}") from None
    except ValueError as exc:
        raise SampleError(rel, f"{exc}; raise transform.max_file_bytes to read it") from None
    except OSError as exc:
        raise SampleError(rel, str(exc)) from None


def _read(root: str, item: ShardItem, limit: int) -> tuple[tuple | None, SampleError | None, float]:
    t = time.perf_counter()
    read = read_object if is_url(root) else read_regular
    try:
        data = read(root, item.path, limit)
        try:
            mask = None if item.mask_path is None else read(root, item.mask_path, limit)
        except SampleError as exc:   # recorded under the image's path: name the mask
            raise SampleError(item.path, f"its mask {item.mask_path}: {exc.reason}") from None
        return (data, mask), None, time.perf_counter() - t
    except SampleError as exc:
        return None, exc, time.perf_counter() - t
    except Exception as exc:   # whatever else reading one file raises is that file's error, not the shard's
        return None, SampleError(item.path, f"cannot read: {type(exc).__name__}: {exc}"), time.perf_counter() - t


def _fetched(items: Iterable[ShardItem], python: PythonSource) -> Iterator[tuple[ShardItem, object, SampleError | None, float]]:
    """A python source's items in item order: the task builds the dataset and indexes it."""
    dataset = python.open()
    for item in items:
        t = time.perf_counter()
        try:
            value, error = dataset[item.source_index], None
        except Exception as exc:   # the user's __getitem__: record what it raised, as for a bad file
            value = None
            error = SampleError(item.path, f"dataset[{item.source_index}] raised {type(exc).__name__}: {exc}")
        yield item, value, error, time.perf_counter() - t


def _buffered(window: deque) -> int:
    """Bytes read ahead and waiting in ``window``."""
    total = 0
    for _, fut in window:
        if fut.done() and fut.result()[0] is not None:
            data, mask = fut.result()[0]
            total += len(data) + len(mask or b"")
    return total


def prefetched(task: ShardTask, python: Optional[PythonSource], limit: int,
               items: Optional[Iterable[ShardItem]] = None) -> Iterator[tuple[ShardItem, object, SampleError | None, float]]:
    """File contents in item order (``items``, by default the task's), read in this thread while reads are
    fast, then by a few threads ahead of the decoder (or a python source's items). Reading ahead stops at
    PREFETCH files or PREFETCH_BYTES waiting, so large files cannot pile up."""
    items = task.item_range(0, task.count) if items is None else items
    if python is not None:
        yield from _fetched(items, python)
        return
    items = iter(items)
    slow = SLOW_READS if is_url(task.source_root) else 0
    while slow < SLOW_READS:   # fast reads in this thread, until enough are slow
        item = next(items, None)
        if item is None:
            return
        result = _read(task.source_root, item, limit)
        yield (item, *result)
        slow += result[2] > SLOW_READ_S
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="lmdbshard-read") as pool:
        window: deque = deque()

        def refill() -> None:
            while len(window) < PREFETCH and _buffered(window) < PREFETCH_BYTES:
                nxt = next(items, None)
                if nxt is None:
                    return
                window.append((nxt, pool.submit(_read, task.source_root, nxt, limit)))

        refill()
        while window:
            item, fut = window.popleft()
            result = fut.result()
            refill()
            yield (item, *result)
