"""The shuffle plan: a pure function from (number of sources, seed, shard size, rounds) to positions.

Item ``i`` stands for source ``i % num_sources`` in augmentation round ``i // num_sources``.
``order[p]`` is the item at global position ``p``; shard ``k`` holds positions
``[k*S, (k+1)*S)``. The permutation sorts items by a SplitMix64 hash of
(seed, item), so it is reproducible by any implementation and never changes
with the numpy version (numpy's Generator streams are not guaranteed stable).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from lmdbshard.format.splitmix import mix64


KEY_CHUNK = 1 << 20   # sort keys computed per chunk of items


def sources_and_rounds(items: np.ndarray, num_sources: int) -> tuple[np.ndarray, np.ndarray]:
    """(source index, augmentation round) of each item id: item ``i`` is source ``i % num_sources`` in round
    ``i // num_sources``. The one place that mapping is written."""
    items = np.asarray(items, dtype=np.int64)
    return items % num_sources, items // num_sources


@dataclass(frozen=True)
class Plan:
    num_sources: int
    seed: int
    shard_size: int
    rounds: int
    order: np.ndarray  # int64, order[p] = item id at global position p
    _digest: list = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def num_samples(self) -> int:
        return self.num_sources * self.rounds

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_range(self, k: int) -> tuple[int, int]:
        if not 0 <= k < self.num_shards:
            raise IndexError(f"shard {k} out of range [0, {self.num_shards})")
        start = k * self.shard_size
        return start, min(start + self.shard_size, self.num_samples)

    def shard_items(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(source indices, rounds) of shard ``k``'s positions, in position (= key) order."""
        start, stop = self.shard_range(k)
        return sources_and_rounds(self.order[start:stop], self.num_sources)

    def digest(self) -> str:
        """sha256 over the inputs and the order (computed once: 80 MB of order to hash at 10⁷ items)."""
        if not self._digest:
            self._digest.append(self._compute_digest())
        return self._digest[0]

    def _compute_digest(self) -> str:
        h = hashlib.sha256(b"lmdbshard-plan-v1")
        h.update(np.asarray([self.num_sources, self.seed, self.shard_size, self.rounds], dtype="<u8").tobytes())
        h.update(self.order.astype("<i8").tobytes())
        return h.hexdigest()


def make_plan(num_sources: int, seed: int, shard_size: int, rounds: int = 1) -> Plan:
    if num_sources <= 0 or shard_size <= 0 or rounds <= 0:
        raise ValueError(f"plan needs positive sizes, got sources={num_sources}, shard_size={shard_size}, rounds={rounds}")
    n = num_sources * rounds
    salt = mix64(seed)
    keys = np.empty(n, dtype=np.uint64)
    for start in range(0, n, KEY_CHUNK):   # in chunks: the temporaries of mix64 stay small
        stop = min(start + KEY_CHUNK, n)
        with np.errstate(over="ignore"):
            keys[start:stop] = mix64(np.arange(start, stop, dtype=np.uint64) ^ salt)
    order = np.argsort(keys, kind="stable").astype(np.int64, copy=False)
    return Plan(num_sources, seed, shard_size, rounds, order)
