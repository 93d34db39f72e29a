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

import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from lmdbshard.write.writer import INITIAL_MAP, ShardOutput, scratch_dir
from lmdbshard.write.config import AugmentConfig, StorageConfig, TransformConfig
from lmdbshard.errors import SampleError
from lmdbshard.write.pipeline import process
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
class ShardTask:
    """Everything a task needs to write shard ``index``: references, never image bytes."""

    index: int
    first_key: int
    source_root: str
    items: tuple[ShardItem, ...]


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


def write_shard(task: ShardTask, opts: WriteOptions,
                progress: Optional[Callable[[int, int], None]] = None) -> ShardReport:
    """Write one shard; call ``progress(shard_index, done)`` now and then. Returns its report."""
    seconds = dict.fromkeys(STAGES, 0.0)
    errors: list[Skipped] = []
    counts: dict[str, int] = {}
    passthrough = masks = 0
    scratch = scratch_dir(task.index, opts.scratch_dir)
    output = None
    try:
        output = ShardOutput(task.index, task.first_key, len(task.items), opts.initial_map_size, scratch,
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
    entry = ShardEntry(task.index, rel, task.first_key, output.count, size, output.hashers[0].hexdigest(),
                       label_rel, label_size, output.hashers[1].hexdigest() if label_rel else None)
    return ShardReport(entry, len(task.items), errors, {k: round(v, 6) for k, v in seconds.items()},
                       passthrough, masks, dict(sorted(counts.items())))
