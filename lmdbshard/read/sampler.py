"""``ShardSampler``: exactly-once distributed sampling that keeps reads local. Numpy only; no torch import.

Each epoch visits the shards in a seeded order, and within each shard the blocks of
``block_size`` consecutive keys in a seeded order, shuffling the samples inside each
block. A rank therefore reads a few shards, one block at a time, instead of pages
scattered over every file. The epoch's sequence is cut into equal contiguous pieces,
one per rank (see ``partition.py``).
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np

from lmdbshard.errors import ResumeError
from lmdbshard.read.partition import BLOCKS, SAMPLES, check_ranks, per_rank, random_keys, rank_span, shard_order

_STATE_FORMAT = "lmdbshard.ShardSampler/1"


class ShardSampler:
    """Indices of one rank for one epoch; use it as a PyTorch ``DataLoader`` sampler.

    ``dataset`` is a :class:`ShardedDataset` (or any sequence of shard sizes). ``num_replicas``
    and ``rank`` default to ``torch.distributed``'s world size and rank when it is initialised.

    Guarantees, for every ``(seed, epoch)`` (call :meth:`set_epoch` before each epoch):

    - every rank yields ``len(sampler)`` indices, the same number on every rank;
    - with ``drop_last=True``, no index is yielded twice across ranks, and
      ``len(dataset) % num_replicas`` indices (different ones each epoch when shuffling) are left out;
    - with ``drop_last=False`` (the default), every index is yielded, and the epoch's sequence is
      padded to a multiple of ``num_replicas`` by repeating it from its start, like torch's
      ``DistributedSampler``: at most ``num_replicas - 1`` indices appear twice (more only when the
      dataset has fewer samples than ranks). The padding lands on the last ranks;
    - the order is a pure function of (seed, epoch, shard sizes, num_replicas, rank, block_size),
      identical on every machine and numpy version; ``shuffle=False`` gives plain index order,
      which is already shuffled, because keys were shuffled globally when the data were written.

    Resume: ``state_dict()`` records the epoch and how many indices this rank has handed out;
    ``load_state_dict()`` makes the next iteration continue right after them. A ``DataLoader``
    with workers draws indices ahead of training, so pass the number of samples the training
    loop actually consumed: ``sampler.state_dict(consumed=steps * batch_size)``.
    """

    def __init__(self, dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, block_size: Optional[int] = 1024):
        sizes = getattr(dataset, "shard_sizes", dataset)
        self.shard_sizes = np.asarray(list(sizes), dtype=np.int64)
        if self.shard_sizes.ndim != 1 or (self.shard_sizes < 0).any():
            raise ValueError("ShardSampler needs a ShardedDataset or a sequence of shard sizes >= 0")
        self.num_replicas, self.rank = _world(num_replicas, rank)
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed!r}")
        if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
            raise ValueError(f"block_size must be a positive integer or None (whole shards), got {block_size!r}")
        self.seed, self.shuffle, self.drop_last, self.block_size = int(seed), bool(shuffle), bool(drop_last), block_size
        self.num_samples = per_rank(int(self.shard_sizes.sum()), self.num_replicas, self.drop_last)
        self.epoch = 0
        self._resume = 0    # where the next iteration starts
        self._yielded = 0   # indices handed out in the current epoch

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's order. Keeps a loaded resume point when ``epoch`` is the saved epoch."""
        if int(epoch) != self.epoch:
            self._resume = self._yielded = 0
        self.epoch = int(epoch)

    def epoch_order(self) -> np.ndarray:
        """Every index of the dataset, in this epoch's order (before the split among ranks)."""
        sizes = self.shard_sizes
        n = int(sizes.sum())
        if not self.shuffle or n == 0:
            return np.arange(n, dtype=np.int64)
        k = len(sizes)
        shard_of = np.repeat(np.arange(k, dtype=np.int64), sizes)
        block = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        if self.block_size is not None:
            block //= self.block_size
        else:
            block[:] = 0
        visit = np.empty(k, dtype=np.int64)
        visit[shard_order(k, self.seed, self.epoch, True)] = np.arange(k)
        block_key = random_keys((shard_of << 32) | block, self.seed, self.epoch, BLOCKS)
        sample_key = random_keys(np.arange(n), self.seed, self.epoch, SAMPLES)
        # lexsort: the last key is primary: shard visit order, then block order, then samples in a block
        return np.lexsort((sample_key, block, block_key, visit[shard_of]))

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, including padding."""
        order = self.epoch_order()
        start, stop = rank_span(len(order), self.num_replicas, self.rank, self.drop_last)
        return order[np.arange(start, stop) % len(order)] if len(order) else order

    def __iter__(self) -> Iterator[int]:
        indices = self.indices()
        start, self._resume = self._resume, 0
        self._yielded = start
        for i in indices[start:].tolist():
            self._yielded += 1
            yield i

    # ------------------------------------------------------------ resume
    def _identity(self) -> dict:
        return {"seed": self.seed, "num_replicas": self.num_replicas, "rank": self.rank, "shuffle": self.shuffle,
                "drop_last": self.drop_last, "block_size": self.block_size,
                "num_shards": len(self.shard_sizes), "dataset_size": int(self.shard_sizes.sum())}

    def state_dict(self, consumed: Optional[int] = None) -> dict:
        """Plain data (JSON-safe) to save with a checkpoint. ``consumed`` overrides the count of
        indices handed out so far with what the training loop has actually processed."""
        yielded = self._yielded if consumed is None else int(consumed)
        if not 0 <= yielded <= self.num_samples:
            raise ValueError(f"consumed must be in [0, {self.num_samples}], got {consumed!r}")
        return {"format": _STATE_FORMAT, "epoch": self.epoch, "yielded": yielded, **self._identity()}

    def load_state_dict(self, state: dict) -> None:
        """Continue the saved epoch right after the indices it had handed out."""
        if state.get("format") != _STATE_FORMAT:
            raise ResumeError(f"not a ShardSampler state (format {state.get('format')!r}, expected {_STATE_FORMAT!r})")
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise ResumeError(f"sampler state was saved with {key}={state.get(key)!r}, this sampler has "
                                  f"{key}={value!r}; create the sampler with the saved settings to resume")
        yielded = int(state["yielded"])
        if not 0 <= yielded <= self.num_samples:
            raise ResumeError(f"sampler state says {yielded} samples were yielded, more than the epoch's "
                              f"{self.num_samples}; the state is damaged")
        self.epoch, self._resume, self._yielded = int(state["epoch"]), yielded, yielded

    def __repr__(self) -> str:
        return (f"ShardSampler(samples={self.num_samples}, rank={self.rank}/{self.num_replicas}, "
                f"epoch={self.epoch}, seed={self.seed}, shuffle={self.shuffle}, drop_last={self.drop_last})")


def _world(num_replicas: Optional[int], rank: Optional[int]) -> tuple[int, int]:
    """Explicit values, or torch.distributed's when it is initialised (imported only then)."""
    if num_replicas is None or rank is None:
        try:
            import torch.distributed as dist
        except ImportError:
            dist = None
        if dist is None or not dist.is_available() or not dist.is_initialized():
            raise ValueError("pass num_replicas and rank, or initialise torch.distributed before creating the sampler")
        num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
        rank = dist.get_rank() if rank is None else rank
    check_ranks(num_replicas, rank)
    return int(num_replicas), int(rank)
