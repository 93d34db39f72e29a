"""Small images side by side: work units that grow against units fixed at ``ray.unit_size``.

A corpus of CIFAR-sized JPEGs (``bench.small_corpus``, 32x32), stored as they are (no resize), in one
job of 2,560-image shards on every worker of the bench's Ray cluster: the bare chain in a Pool, lmdbshard
with units fixed at 64 (``ray.unit_seconds=0``) and with the default, units that grow until each takes
``ray.unit_seconds``. Interleaved (order reversed on odd repeats); ratios are the median of per-repeat
ratios, so that load from elsewhere moves both runs of a repeat alike.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field

from lmdbshard.write.config import ConvertConfig, SourceConfig
from lmdbshard.write.sources.imagefolder import list_imagefolder
from lmdbshard.benchmark.baselines import BarePool, source_files

log = logging.getLogger("lmdbshard")

SHARD_SIZE = 2560
FIXED_UNITS = 64


@dataclass
class SmallImages:
    images: int = 0
    side: int = 0
    workers: int = 0
    seconds: dict[str, list[float]] = field(default_factory=dict)   # "bare", "fixed", "grown": one per repeat

    def per_s(self, key: str) -> float:
        return self.images / statistics.median(self.seconds[key])

    def ratio(self, key: str, vs: str) -> float:
        return statistics.median(b / a for a, b in zip(self.seconds[key], self.seconds[vs]))

    def title(self) -> str:
        return (f"small images ({self.images:,} JPEGs of {self.side}x{self.side}, stored as they are; shard_size "
                f"{SHARD_SIZE}; {self.workers} workers)")

    def rows(self) -> list[str]:
        rows = [(f"bare chain, Pool({self.workers})", "bare", ""),
                (f"lmdbshard, units fixed at {FIXED_UNITS} (ray.unit_seconds=0)", "fixed",
                 f"  {self.ratio('fixed', 'bare'):.2f}x vs bare"),
                ("lmdbshard, units that grow (the default)", "grown",
                 f"  {self.ratio('grown', 'bare'):.2f}x vs bare, {self.ratio('grown', 'fixed'):.2f}x vs units fixed "
                 f"at {FIXED_UNITS}")]
        return [f"{name:<50} {self.per_s(key):>8,.0f} images/s{ratio}" for name, key, ratio in rows]

    def as_json(self) -> dict:
        return dataclasses.asdict(self) | {"grown_vs_fixed": self.ratio("grown", "fixed"),
                                           "grown_vs_bare": self.ratio("grown", "bare")}


def run_small_images(base: ConvertConfig, root: str, work: str, workers: int, repeats: int, niceness: int) -> SmallImages:
    """The three pipelines over the ImageFolder ``root`` of small images, Ray up with ``workers`` CPUs."""
    from lmdbshard.write.coordinator import convert
    listing = list_imagefolder(root, base.source.extensions)
    paths = source_files(listing.root, listing.paths)
    transform = dataclasses.replace(base.transform, resize_shorter=None, center_crop=None)
    cfg = dataclasses.replace(base, source=SourceConfig(root=root), transform=transform, shard_size=SHARD_SIZE,
                              out=os.path.join(work, "small-images"), overwrite=False)
    fixed = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, unit_size=FIXED_UNITS, unit_seconds=0.0))
    pool = BarePool(workers, transform, base.storage.quality, niceness)
    found = SmallImages(len(paths), _side(paths[0]), workers)
    steps = [("bare", None), ("fixed", fixed), ("grown", cfg)]
    log.info("bench: %d small images, %d repeats", len(paths), repeats)
    try:
        for r in range(repeats):
            for key, job in (steps if r % 2 == 0 else steps[::-1]):
                shutil.rmtree(cfg.out, ignore_errors=True)
                t = time.perf_counter()
                if job is None:
                    pool.run(paths)
                else:
                    convert(job)
                found.seconds.setdefault(key, []).append(time.perf_counter() - t)
    finally:
        pool.close()
    shutil.rmtree(cfg.out, ignore_errors=True)
    return found


def _side(path: str) -> int:
    from PIL import Image
    with Image.open(path) as img:
        return min(img.size)
