"""``ray_dataset``: the shards as a ``ray.data.Dataset``, read by parallel Ray tasks, for Ray Train.

``ShardDatasource`` gives Ray Data one read task per group of consecutive shards (as many
groups as Ray asks for, at most one per shard). A task streams its shards with a cursor in
key order, as ``ShardStream`` does, and yields blocks of ``rows_per_block`` rows, each row
a dict: one column per record field (``image``, ...) and ``label``. Tasks carry a pickled
``ShardedDataset`` (paths and counts), never sample data. Importing this module imports Ray Data.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional

import numpy as np
import ray.data
from ray.data import Datasource, ReadTask
from ray.data.block import Block, BlockAccessor, BlockMetadata

from lmdbshard.read.dataset import ShardedDataset


class ShardDatasource(Datasource):
    """Ray Data source over the shards of a :class:`ShardedDataset` opened with ``fields=`` set."""

    def __init__(self, dataset: ShardedDataset, rows_per_block: int = 256):
        if dataset.fields is None:
            raise ValueError("ShardDatasource needs a dataset opened with fields='all' or a list of fields")
        if dataset.transform is not None or dataset.target_transform is not None:
            raise ValueError("ShardDatasource reads stored samples; apply transforms with Dataset.map_batches")
        if rows_per_block < 1:
            raise ValueError(f"rows_per_block must be >= 1, got {rows_per_block!r}")
        self._dataset = dataset
        self._rows_per_block = rows_per_block

    def estimate_inmemory_data_size(self) -> Optional[int]:
        return None   # decoded sizes are unknown before reading; the file sizes are a lower bound

    def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None, **_) -> list[ReadTask]:
        ds = self._dataset
        sizes = ds.shard_sizes
        groups = [g for g in np.array_split(np.arange(len(sizes)), max(1, min(parallelism, len(sizes)))) if len(g)]
        tasks = []
        for group in groups:
            shards = [int(k) for k in group]
            files = [ds.shard_refs[k].path for k in shards]
            meta = _metadata(num_rows=sum(sizes[k] for k in shards),
                             size_bytes=sum(ds.shard_refs[k].bytes for k in shards),
                             input_files=files)
            extra = {} if per_task_row_limit is None else {"per_task_row_limit": per_task_row_limit}
            tasks.append(ReadTask(lambda shards=shards: _read(ds, shards, self._rows_per_block), meta, **extra))
        return tasks

    def get_name(self) -> str:
        return "LmdbShards"


def ray_dataset(roots, *, decode: bool = True, fields="all", classes=None, label_offsets=None,
                rows_per_block: int = 256, cache_dir=None, cache_limit=None, **read_args: Any) -> "ray.data.Dataset":
    """A ``ray.data.Dataset`` of the shards of ``roots``: rows ``{"image": HWC uint8 array, ..., "label": int}``.

    ``decode=False`` gives the stored bytes (for example JPEG) per field. ``fields`` picks the
    columns (``"all"`` or a list of names). ``classes`` / ``label_offsets`` combine several roots
    as in :class:`ShardedDataset`. A root may be a URL: each read task downloads its shards into ``cache_dir``
    on its node, once per node (``cache_dir``, ``cache_limit``: as in :class:`ShardedDataset`; the folder is
    resolved on the driver). Other keyword arguments go to ``ray.data.read_datasource``
    (for example ``override_num_blocks`` or ``ray_remote_args``).
    """
    if fields != "all" and isinstance(fields, str):
        fields = [fields]
    ds = ShardedDataset(roots, decode=decode, fields=fields, classes=classes, label_offsets=label_offsets,
                        cache_dir=cache_dir, cache_limit=cache_limit)
    if fields != "all" and "label" in fields:
        raise ValueError("a field named 'label' would clash with the label column; leave it out of fields=")
    return ray.data.read_datasource(ShardDatasource(ds, rows_per_block), **read_args)


def _read(ds: ShardedDataset, shards: list[int], rows_per_block: int) -> Iterator[Block]:
    """The body of one read task: its shards in key order, as blocks."""
    columns: dict[str, list] = {}
    labels: list[int] = []
    for k in shards:
        for sample, label in ds.read_shard(k):
            values = sample if isinstance(sample, dict) else dict(zip(ds.fields, sample))
            for name, value in values.items():
                columns.setdefault(name, []).append(value)
            labels.append(label)
            if len(labels) == rows_per_block:
                yield _block(columns, labels)
                columns, labels = {}, []
    if labels:
        yield _block(columns, labels)
    ds.close()


def _block(columns: dict[str, list], labels: list[int]) -> Block:
    if "label" in columns:
        raise ValueError("records have a field named 'label', which would clash with the label column; "
                         "pick the other fields with fields=[...]")
    batch = {}
    for name, values in columns.items():
        col = np.empty(len(values), dtype=object)   # images may differ in shape: Ray picks the tensor type
        col[:] = values
        batch[name] = col
    batch["label"] = np.asarray(labels, dtype=np.int64)
    return BlockAccessor.batch_to_block(batch)


def _metadata(**values: Any) -> BlockMetadata:
    """BlockMetadata across Ray versions: older ones also require ``schema`` and ``exec_stats``."""
    names = {f.name for f in dataclasses.fields(BlockMetadata)}
    values.update({name: None for name in ("schema", "exec_stats") if name in names})
    return BlockMetadata(**values)
