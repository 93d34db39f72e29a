"""One training rank's epoch at scale, with no image files: ``ShardSampler.indices()`` for rank 0 of 8
over 10⁷ samples, timed against a NumPy permutation of the rank's N/8 samples in the same process,
and its peak memory growth (numpy's allocations, as ``tracemalloc`` traces them).

Targets: ``indices()`` within 25× the permutation's time, and peak growth within 64 B per sample of
the rank. ``python -m lmdbshard.benchmark.scale_sampler`` prints both rows.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from lmdbshard.read.sampler import ShardSampler

TIME_RATIO_TARGET = 25.0     # indices() time / permutation time, at most
BYTES_PER_SAMPLE_TARGET = 64.0  # peak memory growth per sample of the rank, at most


@dataclass(frozen=True)
class SamplerScale:
    samples: int            # N, the whole epoch
    shards: int
    replicas: int
    rank_samples: int       # what rank 0 gets: N / replicas
    indices_s: float        # best of the repeats
    permutation_s: float    # best of the repeats, np.random.default_rng(0).permutation(N // replicas)
    peak_bytes: int         # peak traced memory growth during indices()

    @property
    def ratio(self) -> float:
        return self.indices_s / self.permutation_s

    @property
    def bytes_per_sample(self) -> float:
        return self.peak_bytes / self.rank_samples

    @property
    def time_verdict(self) -> str:
        return "PASS" if self.ratio <= TIME_RATIO_TARGET else "MISS"

    @property
    def memory_verdict(self) -> str:
        return "PASS" if self.bytes_per_sample <= BYTES_PER_SAMPLE_TARGET else "MISS"

    def rows(self) -> list[str]:
        who = f"rank 0 of {self.replicas}, {self.samples:,} samples in {self.shards:,} shards"
        return [f"sampler indices(), {who}: {self.indices_s:.3f} s = {self.ratio:.1f}x a permutation of "
                f"{self.rank_samples:,} ({self.permutation_s:.3f} s); target <= {TIME_RATIO_TARGET:g}x: "
                f"{self.time_verdict}",
                f"sampler indices() peak memory growth: {self.peak_bytes / 2**20:.1f} MiB = "
                f"{self.bytes_per_sample:.1f} B per sample of the rank; target <= {BYTES_PER_SAMPLE_TARGET:g} B: "
                f"{self.memory_verdict}"]


def shard_sizes(samples: int = 10**7, shard_size: int = 2560) -> list[int]:
    """Equal shards of ``shard_size`` covering at least ``samples``: 3,907 shards of 2,560 for 10⁷."""
    return [shard_size] * -(-samples // shard_size)


def measure(samples: int = 10**7, shard_size: int = 2560, replicas: int = 8, repeats: int = 3) -> SamplerScale:
    """Time rank 0's ``indices()`` and the permutation alternately, ``repeats`` times each, and trace one
    more ``indices()`` for its peak memory."""
    sizes = shard_sizes(samples, shard_size)
    sampler = ShardSampler(sizes, replicas, 0, seed=0)
    sampler.set_epoch(1)
    rank_samples = len(sampler)
    indices_s = permutation_s = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sampler.indices()
        indices_s = min(indices_s, time.perf_counter() - t)
        t = time.perf_counter()
        np.random.default_rng(0).permutation(rank_samples)
        permutation_s = min(permutation_s, time.perf_counter() - t)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sampler.indices()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return SamplerScale(samples=sum(sizes), shards=len(sizes), replicas=replicas, rank_samples=rank_samples,
                        indices_s=indices_s, permutation_s=permutation_s, peak_bytes=peak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10**7)
    parser.add_argument("--shard-size", type=int, default=2560)
    parser.add_argument("--replicas", type=int, default=8)
    args = parser.parse_args(argv)
    result = measure(args.samples, args.shard_size, args.replicas)
    print("\n".join(result.rows()))
    return 0 if result.time_verdict == result.memory_verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
