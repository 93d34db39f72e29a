"""Reads side by side: ``ds[i]`` and ``ShardStream`` against the plain loops, on the shards
that the conversion benchmark just wrote, in this one process.

Every pass uses the read timer of ``lmdbshard bench-read`` (``bench.measure``) over the
same seeded random indices (drawn with replacement), opens its dataset afresh and closes
it after; the passes are interleaved and repeated, and the median is reported. MB/s counts
what each pass returns: stored bytes for ``decode=False`` and ``txn.get``, array bytes for
decoded samples.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from ..bench import measure
from ..dataset import ShardedDataset
from ..listing import Listing
from ..stream import ShardStream
from .baselines import BareShards, imagefolder_read, pil_decode, source_files


@dataclass
class ReadTimes:
    samples: dict[str, list[int]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    bytes: dict[str, list[int]] = field(default_factory=dict)

    def add(self, key: str, n: int, seconds: float, nbytes: int) -> None:
        self.samples.setdefault(key, []).append(n)
        self.seconds.setdefault(key, []).append(seconds)
        self.bytes.setdefault(key, []).append(nbytes)

    def per_s(self, key: str) -> float:
        return statistics.median(n / s for n, s in zip(self.samples[key], self.seconds[key]))

    def mb_per_s(self, key: str) -> float:
        return statistics.median(b / 1e6 / s for b, s in zip(self.bytes[key], self.seconds[key]))


def _nbytes(x) -> int:
    return x.nbytes if isinstance(x, np.ndarray) else len(x)


def _dataset_pass(root: str, indices: list[int], seconds: float, **options) -> tuple[int, float, int]:
    with ShardedDataset(root, **options) as ds:
        return measure(lambda i: ds[i][0], indices, seconds, size=_nbytes)


def _stream_pass(root: str, seconds: float, **options) -> tuple[int, float, int]:
    with ShardedDataset(root, **options) as ds:
        samples: Iterator = iter(ShardStream(ds))
        return measure(lambda s: s[0], samples, seconds, size=_nbytes)


def _bare_get_pass(root: str, indices: list[int], seconds: float) -> tuple[int, float, int]:
    with ShardedDataset(root) as ds:   # only for the shard list; its environments are never opened
        bare = BareShards(ds._paths, ds._first_keys, ds._ends)
    try:
        return measure(bare.get, indices, seconds)
    finally:
        bare.close()


def run_reads(jpeg_root: str, raw_root: str, listing: Listing, samples: int, seconds: float, repeats: int,
              seed: int = 0) -> ReadTimes:
    n = len(ShardedDataset(jpeg_root))
    indices = np.random.default_rng(seed).integers(0, n, size=samples).tolist()
    with ShardedDataset(jpeg_root, decode=False) as ds:   # the stored JPEGs, for the bare decode
        payloads = {i: ds[i][0] for i in set(indices)}
    files = source_files(listing.root, listing.paths)
    folder_indices = np.random.default_rng(seed).integers(0, len(files), size=samples).tolist()
    shorter, resample = _transform_of(jpeg_root)
    passes: dict[str, Callable[[], tuple[int, float, int]]] = {
        "get/bare": lambda: _bare_get_pass(jpeg_root, indices, seconds),
        "get/ds": lambda: _dataset_pass(jpeg_root, indices, seconds, decode=False),
        "jpeg/bare": lambda: measure(lambda i: pil_decode(payloads[i]), indices, seconds, size=_nbytes),
        "jpeg/ds": lambda: _dataset_pass(jpeg_root, indices, seconds),
        "raw/ds": lambda: _dataset_pass(raw_root, indices, seconds, copy=False),
        "raw/ds-copy": lambda: _dataset_pass(raw_root, indices, seconds),
        "stream/jpeg": lambda: _stream_pass(jpeg_root, seconds),
        "stream/records": lambda: _stream_pass(jpeg_root, seconds, decode=False),
        "imagefolder": lambda: measure(lambda i: imagefolder_read(files[i], shorter, resample),
                                       folder_indices, seconds, size=_nbytes),
    }
    times = ReadTimes()
    order = list(passes)
    for r in range(repeats):
        for key in (order if r % 2 == 0 else order[::-1]):
            times.add(key, *passes[key]())
    return times


def _transform_of(root: str) -> tuple[int | None, str]:
    from ..manifest import load_manifest
    t = load_manifest(root).data["config"]["transform"]
    return t.get("resize_shorter"), t.get("resample", "bilinear")


def read_keys() -> Iterable[str]:
    return ("get/bare", "get/ds", "jpeg/bare", "jpeg/ds", "raw/ds", "raw/ds-copy", "stream/jpeg",
            "stream/records", "imagefolder")
