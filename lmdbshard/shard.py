"""Writing one shard: read, decode, transform, encode, append to LMDB, publish atomically.

The per-sample work (decode, transform, augment, encode) is ``pipeline.process``; this module
reads the inputs (files, or a python dataset's items), appends the values in key order and
publishes the file, plus the dual LMDB ``*-label.lmdb`` of Caffe Datum mode with masks.

``write_shard`` is plain Python, the body of a Ray task. It builds the LMDB on
node-local scratch (LMDB should not be written over network filesystems), in key
order with ``append=True`` and large transactions, growing the map when it is
full, then writes a compact copy next to the output as ``*.partial``, fsyncs it
and renames it into place. A crash at any point leaves no file under the final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import lmdb

from .atomic import disk_full_message, free_bytes, is_disk_full, publishing
from .config import AugmentConfig, StorageConfig, TransformConfig
from .datum import label_filename
from .errors import DiskFullError, SampleError, ShardError
from .format import RecordHasher, encode_key, shard_filename
from .pipeline import process
from .sources.python import PythonSource

STAGES = ("read", "decode", "transform", "encode", "write")
BATCH_BYTES = 32 << 20     # one write transaction holds about this much
BATCH_RECORDS = 4096
INITIAL_MAP = 256 << 20    # grows by doubling on MapFullError
PREFETCH = 8               # files read ahead of decoding, on I/O threads


@dataclass(frozen=True)
class ShardItem:
    """One planned sample: where it comes from and what it is."""

    source_index: int
    round: int
    path: str   # relative to the source root (a python source: the item's name)
    label: int  # -1: none, or known only once a python source's item is read
    mask_path: Optional[str] = None   # paired sources: the mask file, relative to the source root


@dataclass(frozen=True)
class ShardTask:
    """Everything a task needs to write shard ``index``: references, never image bytes."""

    index: int
    first_key: int
    source_root: str
    items: tuple[ShardItem, ...]
    python: Optional[PythonSource] = None   # set for python sources: the task builds the dataset itself


@dataclass(frozen=True)
class WriteOptions:
    """Per-job settings shared by every shard task."""

    out: str
    transform: TransformConfig
    storage: StorageConfig
    on_error: str = "skip"
    scratch_dir: Optional[str] = None
    initial_map_size: int = INITIAL_MAP
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0   # the job seed: augmentation draws from plan.sample_seed(seed, source_index, round)


@dataclass
class ShardReport:
    """What a finished shard task reports; persisted as JSON and summarised in the manifest."""

    index: int
    file: str            # relative to the output root
    first_key: int
    count: int           # records written; keys are first_key .. first_key+count-1, dense
    planned: int
    bytes: int
    sha256: str          # records checksum, see docs/FORMAT.md
    errors: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    passthrough: int = 0          # records that store the source file's bytes unchanged
    masks: int = 0                # records with a mask
    label_counts: dict[str, int] = field(default_factory=dict)   # records per label ("-1": none)
    label_file: Optional[str] = None      # dual LMDB (Datum mode with masks): same keys, the masks
    label_bytes: int = 0
    label_sha256: Optional[str] = None


def _read(root: str, item: ShardItem) -> tuple[tuple | None, str | None, float]:
    t = time.perf_counter()
    try:
        with open(os.path.join(root, item.path), "rb") as f:
            data = f.read()
        mask = None
        if item.mask_path is not None:
            with open(os.path.join(root, item.mask_path), "rb") as f:
                mask = f.read()
        return (data, mask), None, time.perf_counter() - t
    except OSError as exc:
        return None, f"cannot read {exc.filename or ''}: {exc.strerror or exc}", time.perf_counter() - t


def _fetched(task: ShardTask) -> Iterator[tuple[ShardItem, object, str | None, float]]:
    """A python source's items in item order: the task builds the dataset and indexes it."""
    dataset = task.python.open()
    for item in task.items:
        t = time.perf_counter()
        try:
            value, error = dataset[item.source_index], None
        except Exception as exc:   # the user's __getitem__: record what it raised, as for a bad file
            value, error = None, f"dataset[{item.source_index}] raised {type(exc).__name__}: {exc}"
        yield item, value, error, time.perf_counter() - t


def _prefetched(task: ShardTask) -> Iterator[tuple[ShardItem, object, str | None, float]]:
    """File contents in item order, read by a few threads ahead of the decoder."""
    if task.python is not None:
        yield from _fetched(task)
        return
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="lmdbshard-read") as pool:
        window: deque = deque()
        items = iter(task.items)
        for item in items:
            window.append((item, pool.submit(_read, task.source_root, item)))
            if len(window) >= PREFETCH:
                break
        while window:
            item, fut = window.popleft()
            nxt = next(items, None)
            if nxt is not None:
                window.append((nxt, pool.submit(_read, task.source_root, nxt)))
            yield (item, *fut.result())


class _ShardBuilder:
    """An LMDB being filled in key order on scratch disk.

    No ``writemap``: with it, a full disk kills the process with SIGBUS when a page of
    the sparse map is touched; without it, LMDB reports a write error that becomes a
    clear message. It costs about 0.5 ms per 1,000 records (measured), a rounding error.
    """

    def __init__(self, index: int, path: str, map_size: int, planned: int):
        self.index, self.path, self.planned = index, path, planned
        self.env = lmdb.open(path, subdir=False, map_size=map_size, meminit=False, metasync=False,
                             sync=False, lock=False, max_dbs=0)
        self.bytes_in = self.records = 0

    def put_batch(self, batch: list[tuple[bytes, bytes]]) -> None:
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    cur = txn.cursor()
                    added, _ = cur.putmulti(batch, append=True)
                    if added != len(batch):
                        raise ShardError(f"{self.path}: appended {added} of {len(batch)} records (keys out of order)")
                self.bytes_in += sum(len(v) for _, v in batch)
                self.records += len(batch)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except (lmdb.Error, OSError) as exc:
                per_record = (self.bytes_in + sum(len(v) for _, v in batch)) / (self.records + len(batch))
                raise _storage_error(exc, self.index, "building it on scratch disk", os.path.dirname(self.path),
                                     int(per_record * self.planned), "or set scratch_dir= to a larger disk") from exc

    def used_bytes(self) -> int:
        return (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]

    def publish(self, final: str) -> int:
        """Compact-copy to a ``*.partial`` beside ``final``, fsync, rename into place; returns the size."""
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        try:
            with publishing(final) as fd:
                self.env.copyfd(fd, compact=True)
        except (lmdb.Error, OSError) as exc:
            raise _storage_error(exc, self.index, f"copying it to {final}", folder, self.used_bytes(), "") from exc
        return os.path.getsize(final)

    def close(self) -> None:
        self.env.close()


def _storage_error(exc: BaseException, index: int, doing: str, folder: str, needed: int, hint: str) -> BaseException:
    """A DiskFullError when ``exc`` came from a full disk; otherwise ``exc`` itself, unchanged.

    LMDB reports a full disk as ENOSPC, or as EIO from a commit, so the free space decides."""
    if not (is_disk_full(exc) or ("Input/output error" in str(exc) and free_bytes(folder) < needed)):
        return exc
    return DiskFullError(f"shard {index}: {disk_full_message(folder, doing, needed, hint)}")


class _Output:
    """The LMDB(s) of one shard being filled: the main one and, for Datum masks, the dual ``*-label.lmdb``."""

    def __init__(self, task: ShardTask, opts: WriteOptions, scratch: str):
        self.task, self.opts, self.scratch = task, opts, scratch
        self.main = _ShardBuilder(task.index, os.path.join(scratch, shard_filename(task.index)),
                                  opts.initial_map_size, len(task.items))
        self.labels: Optional[_ShardBuilder] = None
        self.hashers = [RecordHasher(), RecordHasher()]
        self.batches: list[list[tuple[bytes, bytes]]] = [[], []]
        self.batch_bytes = self.count = 0

    def add(self, value: bytes, companion: Optional[bytes], seconds: dict[str, float]) -> None:
        if companion is not None and self.labels is None:
            if self.count:
                raise ShardError(f"shard {self.task.index}: record {self.count} has a mask but earlier ones do not")
            name = label_filename(shard_filename(self.task.index))
            self.labels = _ShardBuilder(self.task.index, os.path.join(self.scratch, name),
                                        self.opts.initial_map_size, len(self.task.items))
        if (companion is None) != (self.labels is None):
            raise ShardError(f"shard {self.task.index}: record {self.count} has no mask but earlier ones do")
        key = encode_key(self.task.first_key + self.count)
        for j, v in enumerate((value, companion)):
            if v is not None:
                self.hashers[j].update(key, v)
                self.batches[j].append((key, v))
                self.batch_bytes += len(v)
        self.count += 1
        if self.batch_bytes >= BATCH_BYTES or len(self.batches[0]) >= BATCH_RECORDS:
            seconds["write"] += _timed(self.flush)

    def flush(self) -> None:
        for builder, batch in zip((self.main, self.labels), self.batches):
            if batch:
                builder.put_batch(batch)
                batch.clear()
        self.batch_bytes = 0

    def publish(self, out: str) -> tuple[str, int, Optional[str], int]:
        """(file, bytes, label file or None, its bytes), relative to ``out``."""
        self.flush()
        rel = f"shards/{shard_filename(self.task.index)}"
        label_rel, label_size = None, 0
        if self.labels is not None:   # the companion first: the main file's presence marks the shard done
            label_rel = f"shards/{label_filename(shard_filename(self.task.index))}"
            label_size = self.labels.publish(os.path.join(out, label_rel))
        return rel, self.main.publish(os.path.join(out, rel)), label_rel, label_size

    def close(self) -> None:
        for builder in (self.main, self.labels):
            if builder is not None:
                builder.close()


def write_shard(task: ShardTask, opts: WriteOptions,
                progress: Optional[Callable[[int, int], None]] = None) -> ShardReport:
    """Write one shard; call ``progress(shard_index, done)`` now and then. Returns its report."""
    seconds = dict.fromkeys(STAGES, 0.0)
    errors: list[dict] = []
    counts: dict[str, int] = {}
    passthrough = masks = 0
    scratch = _scratch_dir(task.index, opts.scratch_dir)
    output = None
    try:
        output = _Output(task, opts, scratch)
        last_report = time.monotonic()
        for done, (item, data, read_error, read_s) in enumerate(_prefetched(task), 1):
            seconds["read"] += read_s
            try:
                if read_error:
                    raise SampleError(item.path, read_error)
                encoded = process(item, data, opts, seconds)
            except SampleError as exc:
                if opts.on_error == "fail":
                    raise
                errors.append({"position": task.first_key + done - 1, "source_index": item.source_index,
                               "round": item.round, "path": item.path, "reason": exc.reason})
                continue
            output.add(encoded.value, encoded.label_value, seconds)
            counts[str(encoded.label)] = counts.get(str(encoded.label), 0) + 1
            passthrough += encoded.passthrough
            masks += encoded.mask
            if progress is not None and time.monotonic() - last_report > 0.5:
                progress(task.index, done)
                last_report = time.monotonic()
        t = time.perf_counter()
        rel, size, label_rel, label_size = output.publish(opts.out)
        seconds["write"] += time.perf_counter() - t
        if progress is not None:
            progress(task.index, len(task.items))
    finally:
        if output is not None:
            output.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return ShardReport(task.index, rel, task.first_key, output.count, len(task.items), size,
                       output.hashers[0].hexdigest(), errors, {k: round(v, 6) for k, v in seconds.items()},
                       passthrough, masks, dict(sorted(counts.items())), label_rel, label_size,
                       output.hashers[1].hexdigest() if label_rel else None)


def _scratch_dir(index: int, parent: Optional[str]) -> str:
    """A fresh scratch folder for shard ``index``, after removing those that dead attempts at it left
    behind (a worker killed mid-shard cannot clean up; its retry lands on the same node's disk)."""
    parent = parent or tempfile.gettempdir()
    os.makedirs(parent, exist_ok=True)
    prefix = f"lmdbshard-{index:06d}-"
    for name in os.listdir(parent):
        if name.startswith(prefix):
            pid = name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _timed(fn: Callable, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t
