"""``ShardSampler``: exactly-once distributed sampling that keeps reads local. Numpy only; no torch import.

Each epoch visits the shards in a seeded order, and within each shard the blocks of
``block_size`` consecutive keys in a seeded order, shuffling the samples inside each
block. A rank therefore reads a few shards, one block at a time, instead of pages
scattered over every file. The epoch's sequence is cut into equal contiguous pieces,
one per rank (see ``partition.py``). A rank computes only its own piece: the shard order, then the
blocks of the shards its piece overlaps, so its cost is O(shards + N / num_replicas).
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from lmdbshard.errors import ResumeError
from lmdbshard.read.partition import (BLOCKS, SAMPLES, Runs, check_ranks, per_rank, random_keys, ranges,
                                      rank_span, runs, shard_order)

_STATE_FORMAT = "lmdbshard.ShardSampler/1"
_ITER_CHUNK = 4096       # indices turned into Python ints at a time while iterating
_SORT_CHUNK = 1 << 16    # samples shuffled per step: bounds the temporaries whatever the rank's share


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
        """Every index of the dataset, in this epoch's order (before the split among ranks). O(N); a rank
        needs only :meth:`indices`, which costs O(N / num_replicas)."""
        return self._positions(0, int(self.shard_sizes.sum()))

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, including padding: a compact int64 array."""
        return self._rank_indices(0)

    def _rank_indices(self, skip: int) -> np.ndarray:
        """This rank's indices after the first ``skip`` of them; only this part of the epoch is computed."""
        start, stop = rank_span(int(self.shard_sizes.sum()), self.num_replicas, self.rank, self.drop_last)
        return self._positions(start + skip, stop)

    def _positions(self, start: int, stop: int) -> np.ndarray:
        """The indices at positions ``[start, stop)`` of the epoch's sequence (wrapping past its end)."""
        sizes = self.shard_sizes
        n = int(sizes.sum())
        if n == 0 or start >= stop:
            return np.zeros(0, dtype=np.int64)
        if not self.shuffle:
            return np.arange(start, stop, dtype=np.int64) % n
        pieces = runs(sizes, shard_order(len(sizes), self.seed, self.epoch, True), start, stop)
        return block_shuffled(sizes, pieces, self.seed, self.epoch, self.block_size)

    def __iter__(self) -> Iterator[int]:
        indices = self._rank_indices(self._resume)
        self._yielded, self._resume = self._resume, 0
        for lo in range(0, len(indices), _ITER_CHUNK):   # Python ints a chunk at a time, not a list of them all
            for i in indices[lo:lo + _ITER_CHUNK].tolist():
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


def block_shuffled(sizes: np.ndarray, pieces: Runs, seed: int, epoch: int, block_size: Optional[int]) -> np.ndarray:
    """The indices at ``pieces`` of the epoch's sequence, where each shard's sequence visits its blocks of
    ``block_size`` consecutive indices (``None``: the whole shard) in a seeded order and each block's indices
    in a seeded order.

    Only the blocks of the pieces' shards are ordered and only the blocks that overlap a piece are shuffled,
    so the cost is O(samples asked for + blocks of their shards). The block of index ``i`` of shard ``k`` is
    ``b = (i - first index of k) // block_size``; blocks are sorted by ``random_keys((k << 32) | b, BLOCKS)``,
    indices within a block by ``random_keys(i, SAMPLES)``. ``mix64`` is a bijection and the items differ,
    so no two keys tie and any sort algorithm gives the same order.
    """
    first_index = np.cumsum(sizes) - sizes
    size = sizes[pieces.shard]
    step = size if block_size is None else np.full(len(size), block_size, dtype=np.int64)
    count = -(-size // step)                                  # blocks of each piece's shard (size > 0)
    piece = np.repeat(np.arange(len(pieces), dtype=np.int64), count)
    block = np.arange(len(piece), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    keys = random_keys((pieces.shard[piece] << 32) | block, seed, epoch, BLOCKS)
    visit = np.lexsort((keys, piece))                         # each piece's shard's blocks, in their seeded order
    piece, block = piece[visit], block[visit]
    step = step[piece]
    length = np.minimum(step, size[piece] - block * step)
    end = np.cumsum(length)
    begin = end - length - (end - length)[np.cumsum(count) - count][piece]   # block's start within its shard's sequence
    lo = np.clip(pieces.start[piece] - begin, 0, length)      # the part of each block that lies in its piece
    hi = np.clip(pieces.stop[piece] - begin, 0, length)
    used = lo < hi
    return _shuffle_blocks(first_index[pieces.shard[piece]][used] + block[used] * step[used], length[used],
                           lo[used], hi[used], seed, epoch)


def _shuffle_blocks(first: np.ndarray, length: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    seed: int, epoch: int) -> np.ndarray:
    """Positions ``[lo, hi)`` of each block ``[first, first + length)`` shuffled by its samples' keys, concatenated.
    Works through ``_SORT_CHUNK`` samples at a time, so temporaries stay small next to the result."""
    out = np.empty(int((hi - lo).sum()), dtype=np.int64)
    begin = np.cumsum(length) - length
    bounds = np.flatnonzero(np.diff(begin // _SORT_CHUNK)) + 1
    written = 0
    for i, j in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [len(first)]))):
        shuffled = _shuffle_whole(first[i:j], length[i:j], seed, epoch)
        if (lo[i:j] == 0).all() and (hi[i:j] == length[i:j]).all():
            part = shuffled
        else:   # the first or last block of a piece: keep only its part inside the piece
            part = shuffled[ranges(begin[i:j] - begin[i] + lo[i:j], hi[i:j] - lo[i:j])]
        out[written:written + len(part)] = part
        written += len(part)
    return out


def _shuffle_whole(first: np.ndarray, length: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Blocks ``[first, first + length)``, each in the order of its samples' keys, concatenated.
    Blocks of one length are sorted together as the rows of a matrix."""
    lengths = np.unique(length)
    if len(lengths) == 1:
        return _sort_rows(first, int(lengths[0]), seed, epoch).ravel()
    out = np.empty(int(length.sum()), dtype=np.int64)
    begin = np.cumsum(length) - length
    for size in lengths.tolist():
        rows = np.flatnonzero(length == size)
        out[(begin[rows, None] + np.arange(size)).ravel()] = _sort_rows(first[rows], size, seed, epoch).ravel()
    return out


def _sort_rows(first: np.ndarray, size: int, seed: int, epoch: int) -> np.ndarray:
    """Row ``r``: ``first[r] + arange(size)`` sorted by the samples' keys."""
    index = first[:, None] + np.arange(size, dtype=np.int64)
    return first[:, None] + np.argsort(random_keys(index, seed, epoch, SAMPLES), axis=1)
