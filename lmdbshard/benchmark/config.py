"""Typed settings of ``make bench`` (the ``bench:`` section of conf/bench.yaml).

The conversion settings under test are an ordinary ``ConvertConfig`` (the rest of
conf/bench.yaml); these say what to compare, on which corpus, how often and where.
Both are parsed with ``lmdbshard.parse_config``: unknown keys and wrong types are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from lmdbshard.errors import ConfigError


@dataclass
class CorpusConfig:
    """The generated ImageNet-like corpus (used when ``bench.source`` is null)."""

    dir: str = "data/bench"
    classes: int = 20
    per_class: int = 100
    seed: int = 0
    short_side: list[int] = field(default_factory=lambda: [300, 500])
    aspect: list[float] = field(default_factory=lambda: [0.75, 1.33])
    quality: list[int] = field(default_factory=lambda: [75, 95])
    detail: float = 90.0        # fine grain: ~100 KB files at these sizes


@dataclass
class BenchConfig:
    """What ``make bench`` measures."""

    source: Optional[str] = None    # an ImageFolder to benchmark; null generates corpus.dir
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    work: str = "out/bench"         # conversions, the read datasets and the 10,000-shard dataset go here
    json: Optional[str] = "out/bench/bench.json"   # null: print the table only
    workers: list[int] = field(default_factory=lambda: [1, 2])   # conversion worker counts (all <= cores)
    repeats: int = 3                # interleaved repeats per conversion row; the median is reported
    read_samples: int = 4000        # random indices per read row (drawn with replacement)
    read_seconds: float = 2.0       # each read pass stops after this long
    read_repeats: int = 3
    open_shards: int = 10_000       # shards in the open test
    folder2lmdb: bool = True        # time the single-process pickle recipe ("before" row)

    def validate(self) -> "BenchConfig":
        if not self.workers or any(w <= 0 for w in self.workers):
            raise ConfigError(f"bench.workers must be a non-empty list of positive integers, got {self.workers!r}")
        cores = os.cpu_count() or 1
        if max(self.workers) > cores:
            raise ConfigError(f"bench.workers={self.workers} asks for {max(self.workers)} workers, but this machine "
                              f"has {cores} cores; a scaling curve needs one core per worker")
        for name in ("repeats", "read_samples", "read_repeats", "open_shards"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"bench.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.read_seconds <= 0:
            raise ConfigError(f"bench.read_seconds must be > 0, got {self.read_seconds!r}")
        if self.source is not None and not os.path.isdir(os.path.expanduser(self.source)):
            raise ConfigError(f"bench.source {self.source!r} is not a directory; pass bench.source=/path/to/imagefolder")
        c = self.corpus
        if len(c.short_side) != 2 or len(c.aspect) != 2 or len(c.quality) != 2:
            raise ConfigError("bench.corpus.short_side, aspect and quality must each be [low, high]")
        return self
