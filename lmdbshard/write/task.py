"""Writing one shard: read, decode, transform, augment, encode, append to LMDB, publish atomically.

The work is split in two so that several CPUs can serve one shard: ``encode_unit`` turns the items
at offsets ``[start, stop)`` of a shard into their LMDB values (a work unit, any worker can run it),
and ``write_units`` appends the units' values in key order and publishes the file (the shard stays
the unit of commit). The values, their order and the transaction batching do not depend on how
the shard was cut into units, so the file's bytes do not either. ``write_shard`` does both in one
process, unit after unit.

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
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from lmdbshard.write.writer import INITIAL_MAP, ShardOutput, scratch_dir, warm_client
from lmdbshard.write.config import AugmentConfig, StorageConfig, TransformConfig
from lmdbshard.errors import SampleError, ShardError
from lmdbshard.write.listing import Listing
from lmdbshard.write.pipeline import process
from lmdbshard.write.plan import Plan, sources_and_rounds
from lmdbshard.write.reading import prefetched
from lmdbshard.write.report import ShardReport
from lmdbshard.write.units import UNIT_ITEMS, unit_ranges
from lmdbshard.format.manifest import Skipped
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
        sources, rounds = (a.tolist() for a in sources_and_rounds(self.order[start:stop], self.num_sources))
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


@dataclass
class UnitResult:
    """The LMDB values of one work unit, in item order, and what it recorded on the way."""

    start: int
    stop: int
    values: list[tuple[bytes, Optional[bytes]]] = field(default_factory=list)   # (value, dual LMDB's value)
    errors: list[Skipped] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    labels: list[int] = field(default_factory=list)   # per stored value
    passthrough: int = 0
    masks: int = 0


def encode_unit(task: ShardTask, start: int, stop: int, opts: WriteOptions) -> UnitResult:
    """Read, decode, transform, augment and encode the items at offsets ``[start, stop)`` of ``task``.

    ``read`` is the time this loop waited for its next input (the read-ahead threads' own time
    overlaps decoding and is not on the critical path), so stage shares add up to the unit's time."""
    task = task.bind(opts.items)
    unit = UnitResult(start, stop)
    seconds = unit.seconds
    limit = opts.transform.max_file_bytes
    inputs = prefetched(task, opts.python, limit, task.item_range(start, stop))
    offset = start
    while True:
        t = time.perf_counter()
        nxt = next(inputs, None)
        seconds["read"] += time.perf_counter() - t
        if nxt is None:
            break
        item, data, read_error, _ = nxt
        offset += 1
        try:
            if read_error is not None:
                raise read_error
            encoded = process(item, data, opts, seconds)   # any failure of one sample is its SampleError
        except SampleError as exc:
            if opts.on_error == "fail":
                raise
            unit.errors.append(Skipped(task.index, task.first_key + offset - 1, item.source_index, item.round,
                                       item.path, exc.reason))
            continue
        unit.values.append((encoded.value, encoded.label_value))
        unit.labels.append(encoded.label)
        unit.passthrough += encoded.passthrough
        unit.masks += encoded.mask
    return unit


def write_units(task: ShardTask, opts: WriteOptions, units: Iterable[UnitResult],
                progress: Optional[Callable[[int, int], None]] = None) -> ShardReport:
    """Append the values of ``units`` (in offset order, covering the shard) and publish the shard; call
    ``progress(shard_index, done)`` after each unit. Returns its report, with every unit's stage times."""
    task = task.bind(opts.items)
    seconds = dict.fromkeys(STAGES, 0.0)
    errors: list[Skipped] = []
    counts: dict[str, int] = {}
    count_labels = opts.python is not None   # file sources: the listing has the labels (report.py)
    passthrough = masks = 0
    scratch = scratch_dir(task.index, opts.scratch_dir)
    warm_client(opts.out)
    output = None
    planned = task.count
    try:
        output = ShardOutput(task.index, task.first_key, planned, opts.initial_map_size, scratch,
                             directories=opts.storage.encoding == "caffe_datum")
        expected = 0
        for unit in units:
            if unit.start != expected:
                raise ShardError(f"shard {task.index}: unit at offset {unit.start} arrived, expected {expected}")
            expected = unit.stop
            for stage, s in unit.seconds.items():
                seconds[stage] += s
            for (value, companion), label in zip(unit.values, unit.labels):
                output.add(value, companion, seconds)
                if count_labels:
                    counts[str(label)] = counts.get(str(label), 0) + 1
            errors.extend(unit.errors)
            passthrough += unit.passthrough
            masks += unit.masks
            if progress is not None:
                progress(task.index, unit.stop)
        if expected != planned:
            raise ShardError(f"shard {task.index}: units covered {expected} of {planned} items")
        t = time.perf_counter()
        entry = output.publish(opts.out)
        seconds["write"] += time.perf_counter() - t
    finally:
        if output is not None:
            output.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return ShardReport(entry, planned, errors, {k: round(v, 6) for k, v in seconds.items()},
                       passthrough, masks, dict(sorted(counts.items())))


def write_shard(task: ShardTask, opts: WriteOptions,
                progress: Optional[Callable[[int, int], None]] = None,
                unit_size: int = UNIT_ITEMS) -> ShardReport:
    """Write one shard in this process, one unit of ``unit_size`` items at a time (bounded memory);
    call ``progress(shard_index, done)`` after each unit. Returns its report."""
    units: Iterator[UnitResult] = (encode_unit(task, a, b, opts) for a, b in unit_ranges(task.count, unit_size))
    return write_units(task, opts, units, progress)
