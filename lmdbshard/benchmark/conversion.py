"""Conversion side by side: lmdbshard on Ray against the bare chain in a Pool, and the
single-process folder2lmdb recipe, on one corpus, interleaved, repeated.

Each run gives two rates: the whole run's (images over its time) and the steady state's, the images/s
from the moment 10% of the images were done to the moment 90% were (``progress.SteadyRate``), which
leaves out the start-up (listing, plan, the first tasks) and the end (the last units, the last
shards' publish), as a longer job of the same kind would. lmdbshard's progress times its finished
units in the driver; the bare Pool's results are timed as they come back to the parent.

One local Ray cluster of ``max(workers)`` CPUs serves every lmdbshard run; its start-up is
timed once and reported apart. lmdbshard with ``w`` workers is the same cluster with
``cpus_per_task = cpus / w``, so Ray runs exactly ``w`` shard tasks at a time; the bare
chain with ``w`` workers is ``Pool(w)``. Each lmdbshard run is a whole ``convert()`` into
an empty folder (listing, plan, shards, manifest), timed end to end.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional

from lmdbshard.write.config import ConvertConfig
from lmdbshard.write.listing import Listing
from lmdbshard.benchmark.baselines import BarePool, source_files

log = logging.getLogger("lmdbshard")


@dataclass
class ConversionTimes:
    images: int
    source_bytes: int
    ray_startup_s: float
    niceness: int           # of Ray's workers, and so of the bare loops' processes
    seconds: dict[str, list[float]] = field(default_factory=dict)   # "lmdbshard/2" -> one time per repeat
    steady: dict[str, list[float]] = field(default_factory=dict)    # images/s from 10% to 90% of the images

    def add(self, key: str, seconds: float, steady: Optional[float] = None) -> None:
        self.seconds.setdefault(key, []).append(seconds)
        if steady is not None:
            self.steady.setdefault(key, []).append(steady)

    def steady_per_s(self, key: str) -> Optional[float]:
        """The median steady-state images/s; None when no run of ``key`` was long enough to measure it."""
        return statistics.median(self.steady[key]) if self.steady.get(key) else None

    def steady_mb_per_s(self, key: str) -> Optional[float]:
        """The source MB/s at ``key``'s steady-state rate."""
        rate = self.steady_per_s(key)
        return None if rate is None else rate * self.source_bytes / self.images / 1e6

    def median(self, key: str) -> float:
        return statistics.median(self.seconds[key])

    def per_s(self, key: str) -> float:
        return self.images / self.median(key)

    def mb_per_s(self, key: str) -> float:
        return self.source_bytes / 1e6 / self.median(key)


def _warm_ray_workers(n: int) -> int:
    """Have Ray start, before the clock, the worker processes a conversion uses, each importing the shard
    writer (as the Pool's processes start and import): ``n`` for the work units, and ``n + 1`` for the
    shards' writers (no CPU reserved; at most that many shards are open at once). The private cluster
    keeps idle workers, so they serve every run. Returns the niceness Ray runs its workers at."""
    import ray

    @ray.remote(num_cpus=1)
    def _import() -> int:
        from lmdbshard.write import task as shard  # noqa: F401
        return os.nice(0)

    @ray.remote(num_cpus=0)
    def _writer_slot() -> int:
        from lmdbshard.write import task as shard  # noqa: F401
        time.sleep(1.0)   # held, so that each slot is a process of its own
        return os.nice(0)

    return max(ray.get([_import.remote() for _ in range(2 * n)] + [_writer_slot.remote() for _ in range(n + 1)]))


def _lmdbshard_once(base: ConvertConfig, out: str, cpus: int, workers: int, shard_size: int) -> tuple[float, Optional[float]]:
    from lmdbshard.write.coordinator import convert
    shutil.rmtree(out, ignore_errors=True)
    cfg = dataclasses.replace(base, out=out, overwrite=False, shard_size=shard_size,
                              ray=dataclasses.replace(base.ray, cpus_per_task=cpus / workers, max_in_flight=None))
    t = time.perf_counter()
    result = convert(cfg)
    seconds = time.perf_counter() - t
    if result.images_skipped:
        log.warning("bench: lmdbshard skipped %d images of the corpus", result.images_skipped)
    return seconds, result.steady_images_per_s


def conversion_dir(work: str, workers: int, shard_size: int) -> str:
    return os.path.join(work, f"convert-{workers}-s{shard_size}")


def run_conversions(base: ConvertConfig, listing: Listing, work: str, workers: list[int], shard_sizes: list[int],
                    repeats: int, with_folder2lmdb: bool, ray_startup_s: float) -> ConversionTimes:
    """Every pipeline ``repeats`` times, interleaved (order reversed on odd repeats); lmdbshard at each
    of ``shard_sizes`` (key ``lmdbshard/<workers>/<shard size>``). Ray must be up, with ``max(workers)``
    CPUs; it took ``ray_startup_s`` to start."""
    paths = source_files(listing.root, listing.paths)
    source_bytes = sum(os.path.getsize(p) for p in paths)
    cpus = max(workers)
    quality = base.storage.quality
    niceness = _warm_ray_workers(cpus)
    pools = {w: BarePool(w, base.transform, quality, niceness) for w in workers}
    try:
        times = ConversionTimes(len(paths), source_bytes, ray_startup_s, niceness)
        steps = [(kind, w, size) for w in workers
                 for kind, size in [("bare", 0)] + [("lmdbshard", size) for size in shard_sizes]]
        if with_folder2lmdb:
            steps.append(("folder2lmdb", 1, 0))
        for r in range(repeats):
            for kind, w, size in (steps if r % 2 == 0 else steps[::-1]):
                steady = None
                if kind == "bare":
                    t = time.perf_counter()
                    _, steady = pools[w].run(paths)
                    seconds = time.perf_counter() - t
                elif kind == "lmdbshard":
                    seconds, steady = _lmdbshard_once(base, conversion_dir(work, w, size), cpus, w, size)
                else:
                    db = os.path.join(work, "folder2lmdb.lmdb")
                    for p in (db, db + "-lock"):
                        if os.path.exists(p):
                            os.remove(p)
                    t = time.perf_counter()
                    pools[min(workers)].folder2lmdb(paths, listing.labels, db)
                    seconds = time.perf_counter() - t
                key = f"{kind}/{w}/{size}" if kind == "lmdbshard" else f"{kind}/{w}"
                times.add(key, seconds, steady)
                log.info("bench: repeat %d/%d %s: %.2f s (%.0f images/s; steady state %s)", r + 1, repeats, key,
                         seconds, len(paths) / seconds, "-" if steady is None else f"{steady:.0f}/s")
    finally:
        for pool in pools.values():
            pool.close()
    return times
