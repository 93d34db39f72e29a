"""SplitMix64, the one source of randomness in the format: plan order, augmentation seeds, epoch orders.

docs/FORMAT.md specifies these functions so that another implementation reproduces the same
permutations; ``mix64`` is the vectorised form of ``mix64_int``, and tests pin both to the same vectors.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray | int) -> np.ndarray:
    """SplitMix64 finaliser over uint64 (vectorised, wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


MASK64 = (1 << 64) - 1


def mix64_int(z: int) -> int:
    """``mix64`` of one value, on Python ints: no numpy scalars on per-sample paths."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def sample_seed(seed: int, source_index: int, round: int) -> int:
    """Seed of one sample's random augmentation: the same on every retry, worker and resume."""
    return mix64_int(mix64_int(mix64_int(seed) ^ source_index) ^ round)
