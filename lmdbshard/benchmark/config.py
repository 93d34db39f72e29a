"""Typed settings of ``make bench`` (the ``bench:`` section of conf/benchmark.yaml).

The conversion settings under test are an ordinary ``ConvertConfig`` (the rest of
conf/benchmark.yaml); these say what to compare, on which corpus, how often and where.
The generated corpus is a ``DemoSpec``, the demo generator's settings, at ImageNet-like sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from lmdbshard.errors import ConfigError
from lmdbshard.tools.demo import DemoSpec


def imagenet_like() -> DemoSpec:
    """2,000 JPEGs of ImageNet's sizes and ~100 KB (fine grain), in 20 classes."""
    return DemoSpec(classes=20, per_class=100, short_side=[300, 500], aspect=[0.75, 1.33], quality=[75, 95],
                    detail=90.0)


def cifar_like() -> DemoSpec:
    """20,000 JPEGs of 32x32 in 10 classes: images whose units are short."""
    return DemoSpec(classes=10, per_class=2000, short_side=[32, 32], aspect=[1.0, 1.0], quality=[90, 95])


@dataclass
class BenchConfig:
    """What ``make bench`` measures."""

    source: Optional[str] = None    # an ImageFolder to benchmark; null generates corpus in corpus_dir
    corpus: DemoSpec = field(default_factory=imagenet_like)
    corpus_dir: str = "data/bench"  # made on first use, then kept while corpus is unchanged
    work: str = "out/bench"         # conversions, the read datasets and the 10,000-shard dataset go here
    json: Optional[str] = "out/bench/bench.json"   # null: print the table only
    workers: list[int] = field(default_factory=lambda: [1, 2])   # conversion worker counts (all <= cores)
    shard_sizes: list[int] = field(default_factory=lambda: [2560, 100])   # each conversion row at each shard size
    command: bool = True            # time the whole jobs/convert.py command and report its fixed costs
    repeats: int = 3                # interleaved repeats per conversion row; the median is reported
    read_samples: int = 4000        # random indices per read row (drawn with replacement)
    read_seconds: float = 2.0       # each read pass stops after this long
    read_repeats: int = 3
    open_shards: int = 10_000       # shards in the open test
    folder2lmdb: bool = True        # time the single-process pickle recipe ("before" row)
    scale: list[int] = field(default_factory=lambda: [1_000_000, 10_000_000])   # synthetic listing sizes of the
                                    # scale section (plan files, driver RSS, one rank's epoch); [] skips it
    remote_convert: bool = True     # conversion into s3:// (a local S3 server, moto) vs a local folder; needs moto
    remote_read: bool = True        # read the conversion output from a local S3 server (moto) through the cache
    small_images: bool = True       # small images: work units that grow vs units fixed at 64, and the bare Pool
    small_corpus: DemoSpec = field(default_factory=cifar_like)
    small_corpus_dir: str = "data/bench-small"

    def validate(self) -> "BenchConfig":
        if not self.workers or any(w <= 0 for w in self.workers):
            raise ConfigError(f"bench.workers must be a non-empty list of positive integers, got {self.workers!r}")
        cores = os.cpu_count() or 1
        if max(self.workers) > cores:
            raise ConfigError(f"bench.workers={self.workers} asks for {max(self.workers)} workers, but this machine "
                              f"has {cores} cores; a scaling curve needs one core per worker")
        if not self.shard_sizes or any(s <= 0 for s in self.shard_sizes):
            raise ConfigError(f"bench.shard_sizes must be a non-empty list of positive integers, got {self.shard_sizes!r}")
        for name in ("repeats", "read_samples", "read_repeats", "open_shards"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"bench.{name} must be a positive integer, got {getattr(self, name)!r}")
        if any(n <= 0 for n in self.scale):
            raise ConfigError(f"bench.scale must list positive sample counts (or be []), got {self.scale!r}")
        if self.read_seconds <= 0:
            raise ConfigError(f"bench.read_seconds must be > 0, got {self.read_seconds!r}")
        if self.source is not None and not os.path.isdir(os.path.expanduser(self.source)):
            raise ConfigError(f"bench.source {self.source!r} is not a directory; pass bench.source=/path/to/imagefolder")
        self.corpus.validate("bench.corpus")
        self.small_corpus.validate("bench.small_corpus")
        return self
