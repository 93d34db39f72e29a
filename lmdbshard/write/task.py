"""Writing one shard: read, decode, transform, augment, encode, append to LMDB, publish atomically.

The per-sample work (decode, transform, augment, encode) is ``pipeline.process``, reading the inputs
(files, or a python dataset's items) is ``reading.prefetched``; this module appends the values in key
order and publishes the file, plus the dual LMDB ``*-label.lmdb`` of Caffe Datum mode with masks.
A sample that fails is recorded in the report (``on_error=skip``) or fails the shard (``fail``).

``write_shard`` is plain Python, the body of a Ray task. It builds the LMDB on
node-local scratch (LMDB should not be written over network filesystems) and
publishes it atomically, through ``builder.ShardOutput``.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from lmdbshard.write.writer import INITIAL_MAP, ShardOutput, scratch_dir
from lmdbshard.write.config import AugmentConfig, StorageConfig, TransformConfig
from lmdbshard.errors import SampleError
from lmdbshard.write.listing import Listing
from lmdbshard.write.pipeline import process
from lmdbshard.write.plan import Plan
from lmdbshard.write.reading import prefetched
from lmdbshard.write.report import ShardReport
from lmdbshard.format.manifest import ShardEntry, Skipped
from lmdbshard.write.sources.python import PythonSource

STAGES = ("read", "decode", "transform", "augment", "encode", "write")


@dataclass(frozen=True)
class ShardItem:
    """One planned sample: where it comes from and what it is."""

    source_index: int
    round: int
    path: str   # relative to the source root (a python source: the item's name)
    label: int  # -1: none, or known only once a python source's item is read
    mask_path: Optional[str] = None   # paired sources: the mask file, relative to the source root


@dataclass(frozen=True)
class ItemTable:
    """Every planned item of a job, as compact arrays, shared once with every task (``WriteOptions.items``):
    ``order[p]`` is the item at plan position ``p`` (plan.py); item ``i`` is source ``i % num_sources`` in
    round ``i // num_sources``, whose path, label and mask path are ``paths``/``labels``/``mask_paths``
    at the source index. Tasks slice it by position, so the driver builds no per-item objects."""

    order: np.ndarray                     # int64 (int32 below 2**31 items)
    num_sources: int
    paths: Sequence[str]                  # a PathTable (a python source: IndexNames)
    labels: np.ndarray                    # int32, per source (-1: none)
    mask_paths: Optional[Sequence[str]] = None

    @classmethod
    def of(cls, plan: Plan, listing: Listing) -> "ItemTable":
        order = plan.order.astype(np.int32) if plan.num_samples < 2**31 else plan.order
        return cls(order, plan.num_sources, listing.paths, listing.labels, listing.mask_paths)

    def items(self, start: int, stop: int) -> tuple[ShardItem, ...]:
        """The items at plan positions ``start .. stop-1``."""
        ids = self.order[start:stop].astype(np.int64)
        sources, rounds = (ids % self.num_sources).tolist(), (ids // self.num_sources).tolist()
        masks = self.mask_paths
        return tuple(ShardItem(s, r, self.paths[s], int(self.labels[s]), masks[s] if masks is not None else None)
                     for s, r in zip(sources, rounds))


@dataclass(frozen=True)
class ItemList:
    """Items given one by one (tests, tools): positions ``first_key ..`` are ``items``."""

    first_key: int
    listed: tuple[ShardItem, ...]

    def items(self, start: int, stop: int) -> tuple[ShardItem, ...]:
        return self.listed[start - self.first_key:stop - self.first_key]


@dataclass(frozen=True)
class ShardTask:
    """Everything a task needs to write shard ``index``: its plan positions, never items or image bytes.
    The items come from the job's shared ``ItemTable`` (``table``, bound in the worker by ``write_shard``)."""

    index: int
    first_key: int          # the plan position of the shard's first item
    count: int              # items planned for the shard
    source_root: str
    table: Optional[ItemTable | ItemList] = field(default=None, compare=False, repr=False)

    @classmethod
    def of_items(cls, index: int, first_key: int, source_root: str, items: Sequence[ShardItem]) -> "ShardTask":
        """A task over items given one by one."""
        return cls(index, first_key, len(items), source_root, ItemList(first_key, tuple(items)))

    def bind(self, table: Optional[ItemTable]) -> "ShardTask":
        return self if self.table is not None or table is None else dataclasses.replace(self, table=table)

    def item_range(self, start: int, stop: int) -> tuple[ShardItem, ...]:
        """The items at offsets ``start .. stop-1`` within the shard (a work unit's slice)."""
        if self.table is None:
            raise ValueError(f"shard task {self.index} has no item table; bind it first (ShardTask.bind)")
        if not 0 <= start <= stop <= self.count:
            raise IndexError(f"item range [{start}, {stop}) outside shard {self.index}'s [0, {self.count})")
        return self.table.items(self.first_key + start, self.first_key + stop)


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
    python: Optional[PythonSource] = None   # python sources: each task builds (or unpickles) the dataset
    # Every item of the job, compact. The runner ``ray.put``s the options once per job, so the arrays
    # reach each node once and tasks map them without copying (NumPy arrays are zero-copy in Ray).
    items: Optional[ItemTable] = None


def write_shard(task: ShardTask, opts: WriteOptions,
                progress: Optional[Callable[[int, int], None]] = None) -> ShardReport:
    """Write one shard; call ``progress(shard_index, done)`` now and then. Returns its report."""
    task = task.bind(opts.items)
    seconds = dict.fromkeys(STAGES, 0.0)
    errors: list[Skipped] = []
    counts: dict[str, int] = {}
    count_labels = opts.python is not None   # file sources: the listing has the labels (report.py)
    passthrough = masks = 0
    scratch = scratch_dir(task.index, opts.scratch_dir)
    output = None
    try:
        output = ShardOutput(task.index, task.first_key, task.count, opts.initial_map_size, scratch,
                             directories=opts.storage.encoding == "caffe_datum")
        last_report = time.monotonic()
        limit = opts.transform.max_file_bytes
        for done, (item, data, read_error, read_s) in enumerate(prefetched(task, opts.python, limit), 1):
            seconds["read"] += read_s
            try:
                if read_error is not None:
                    raise read_error
                encoded = process(item, data, opts, seconds)   # any failure of one sample is its SampleError
            except SampleError as exc:
                if opts.on_error == "fail":
                    raise
                errors.append(Skipped(task.index, task.first_key + done - 1, item.source_index, item.round,
                                      item.path, exc.reason))
                continue
            output.add(encoded.value, encoded.label_value, seconds)
            if count_labels:
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
            progress(task.index, task.count)
    finally:
        if output is not None:
            output.close()
        shutil.rmtree(scratch, ignore_errors=True)
    entry = ShardEntry(task.index, rel, task.first_key, output.count, size, output.hashers[0].hexdigest(),
                       label_rel, label_size, output.hashers[1].hexdigest() if label_rel else None)
    return ShardReport(entry, task.count, errors, {k: round(v, 6) for k, v in seconds.items()},
                       passthrough, masks, dict(sorted(counts.items())))
