"""``ShardStream``: the iterable view, the fastest way to read shards for training.

Every rank x DataLoader worker walks its own runs of shards with one LMDB cursor per
shard, in key order: no index lookups, sequential pages. Keys were shuffled globally
when the data were written, so the stream is already a shuffled one; ``shuffle_shards``
adds a seeded per-epoch permutation of the shard order on top.

Division (see ``partition.py``): the epoch's shard sequence is cut at sample granularity
into ``num_replicas`` equal contiguous pieces, so every rank gets exactly ``len(stream)``
samples even when shard sizes differ; each rank's piece is cut again into near-equal
contiguous parts, one per DataLoader worker. A worker thus reads whole shards except at
most one partial shard at each end of its part. No sample is read twice and none is
missed, apart from the ``drop_last`` / padding rule shared with ``ShardSampler``.

Importing this module imports torch when it is installed, so that a ``DataLoader``
recognises the stream as an ``IterableDataset``; ``import lmdbshard`` alone does not.
"""

from __future__ import annotations

from typing import Any, Iterator

from lmdbshard.read.partition import check_ranks, per_rank, rank_span, segments, shard_order, split_span

try:
    from torch.utils.data import IterableDataset as _Base
    from torch.utils.data import get_worker_info as _torch_worker_info
except ImportError:   # works without torch; DataLoader integration needs it
    _Base = object
    _torch_worker_info = None


class ShardStream(_Base):
    """Iterable view of a :class:`ShardedDataset` for one rank: yields ``(sample, label)`` as ``ds[i]`` does.

    Use it as a ``DataLoader`` dataset (no sampler, no ``shuffle=``); call :meth:`set_epoch`
    before each epoch when ``shuffle_shards`` is on (with ``persistent_workers=False``, so the
    workers see the new epoch). Outside PyTorch, iterate :meth:`worker_iter` per worker.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle_shards: bool = False,
                 seed: int = 0, drop_last: bool = False):
        check_ranks(num_replicas, rank)
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle_shards, self.seed, self.drop_last = bool(shuffle_shards), int(seed), bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Samples this rank yields per epoch (summed over its workers); equal on every rank."""
        return per_rank(len(self.dataset), self.num_replicas, self.drop_last)

    def runs(self, worker_id: int = 0, num_workers: int = 1) -> list[tuple[int, int, int]]:
        """This worker's ``(shard, start offset, stop offset)`` runs for the current epoch, in reading order."""
        check_ranks(num_workers, worker_id)
        sizes = self.dataset.shard_sizes
        start, stop = rank_span(sum(sizes), self.num_replicas, self.rank, self.drop_last)
        start, stop = split_span(start, stop, num_workers, worker_id)
        return segments(sizes, shard_order(len(sizes), self.seed, self.epoch, self.shuffle_shards), start, stop)

    def worker_iter(self, worker_id: int = 0, num_workers: int = 1) -> Iterator[tuple[Any, Any]]:
        """The samples of one worker of this rank."""
        for shard, start, stop in self.runs(worker_id, num_workers):
            yield from self.dataset.read_shard(shard, start, stop)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        info = _torch_worker_info() if _torch_worker_info is not None else None
        if info is None:
            return self.worker_iter(0, 1)
        return self.worker_iter(info.id, info.num_workers)

    def __repr__(self) -> str:
        return (f"ShardStream({self.dataset!r}, rank={self.rank}/{self.num_replicas}, epoch={self.epoch}, "
                f"shuffle_shards={self.shuffle_shards}, drop_last={self.drop_last})")
