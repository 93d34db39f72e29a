"""How an epoch's samples are ordered and divided among ranks: pure functions over shard sizes.

Both readers for training use these, so the map-style ``ShardSampler`` and the
iterable ``ShardStream`` follow one set of rules:

- **Order.** Shard ``k`` holds the consecutive sample indices ``[start_k, start_k + size_k)``.
  An epoch visits whole shards one after another, in index order or in a seeded
  per-epoch permutation.
- **Ranks.** The epoch's sequence of ``n`` samples is cut into ``num_replicas`` equal,
  contiguous pieces of ``per_rank`` samples, so each rank reads few shards (locality) and
  every rank gets the same count (DDP never waits at the end of an epoch). With
  ``drop_last`` the last ``n % num_replicas`` samples of the sequence are left out;
  otherwise the sequence is padded by repeating it from its start, as torch's
  ``DistributedSampler`` does: position ``p`` stands for sample ``p % n``.

Random keys are the plan's SplitMix64 ``mix64`` of (seed, epoch, item), sorted stably,
rather than numpy's ``Generator``: numpy allows ``Generator.permutation`` streams to
change between releases, and a resumed epoch must reproduce the order it was saved
with on any machine, or it repeats and skips samples. ``mix64`` is integer arithmetic
that never changes, and any language can reproduce an epoch's order from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lmdbshard.format.splitmix import mix64

#: Salts that keep the random keys of shards, blocks and samples independent.
SHARDS, BLOCKS, SAMPLES = 1, 2, 3


def epoch_key(seed: int, epoch: int, salt: int) -> np.uint64:
    """The 64-bit key of one random choice of one epoch."""
    with np.errstate(over="ignore"):
        return mix64(mix64(mix64(np.uint64(seed)) ^ np.uint64(epoch)) ^ np.uint64(salt))


def random_keys(items: np.ndarray, seed: int, epoch: int, salt: int) -> np.ndarray:
    """One uint64 key per item; sorting by them gives a seeded permutation."""
    return mix64(np.asarray(items, dtype=np.uint64) ^ epoch_key(seed, epoch, salt))


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The order in which an epoch visits the shards."""
    if not shuffle:
        return np.arange(num_shards, dtype=np.int64)
    return np.argsort(random_keys(np.arange(num_shards), seed, epoch, SHARDS), kind="stable")


def check_ranks(num_replicas: int, rank: int) -> None:
    if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
        raise ValueError(f"num_replicas must be an integer >= 1, got {num_replicas!r}")
    if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas}), got {rank!r}")


def per_rank(n: int, num_replicas: int, drop_last: bool) -> int:
    """Samples each rank gets in one epoch."""
    return n // num_replicas if drop_last else -(-n // num_replicas)


def rank_span(n: int, num_replicas: int, rank: int, drop_last: bool) -> tuple[int, int]:
    """Positions ``[start, stop)`` of ``rank``'s piece of the (padded) epoch sequence."""
    m = per_rank(n, num_replicas, drop_last)
    return rank * m, (rank + 1) * m


def split_span(start: int, stop: int, parts: int, part: int) -> tuple[int, int]:
    """Part ``part`` of ``parts`` near-equal contiguous parts of ``[start, stop)``."""
    length = stop - start
    return start + length * part // parts, start + length * (part + 1) // parts


@dataclass(frozen=True)
class Runs:
    """Pieces of an epoch's sequence, in order: piece ``i`` is positions ``[start[i], stop[i])`` of
    shard ``shard[i]``'s own sequence (int64 arrays, ``start < stop``)."""

    shard: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    def __len__(self) -> int:
        return len(self.shard)


def runs(sizes: Sequence[int], order: np.ndarray, start: int, stop: int) -> Runs:
    """Positions ``[start, stop)`` of the sequence that visits shards in ``order``, as runs within shards;
    positions past the end wrap to its start (padding). O(shards) plus the runs, whatever ``stop - start``."""
    sizes = np.asarray(sizes, dtype=np.int64)
    order = np.asarray(order, dtype=np.int64)
    ends = np.cumsum(sizes[order])
    n = int(ends[-1]) if len(ends) else 0
    pieces = []
    pos = start
    while pos < stop and n:
        first, last = pos % n, min(n, pos % n + stop - pos)   # one lap: positions [first, last) of the sequence
        j = np.arange(np.searchsorted(ends, first, side="right"), np.searchsorted(ends, last - 1, side="right") + 1)
        begins = ends[j] - sizes[order[j]]
        a, b = np.maximum(first, begins) - begins, np.minimum(last, ends[j]) - begins
        keep = a < b                                          # empty shards hold no positions
        pieces.append((order[j][keep], a[keep], b[keep]))
        pos += last - first
    if not pieces:
        empty = np.zeros(0, dtype=np.int64)
        return Runs(empty, empty, empty)
    return Runs(*(np.concatenate(column) for column in zip(*pieces)))


def segments(sizes: Sequence[int], order: np.ndarray, start: int, stop: int) -> list[tuple[int, int, int]]:
    """:func:`runs` as ``(shard, first offset, stop offset)`` tuples of Python ints."""
    r = runs(sizes, order, start, stop)
    return list(zip(r.shard.tolist(), r.start.tolist(), r.stop.tolist()))


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + l) for s, l in zip(starts, lengths)])``, without the Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    return np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
