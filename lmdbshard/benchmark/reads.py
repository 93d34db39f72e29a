"""Reads side by side: ``ds[i]`` and ``ShardStream`` against the plain loops, on the shards
that the conversion benchmark just wrote, in this one process.

The random passes use the read timer of ``lmdbshard bench-read`` over the same seeded random
indices (drawn with replacement). Each comparison group (stored records: ``txn.get`` and
``ds[i]`` of records and raw arrays; decoding: PIL, ``ds[i]`` and the ImageFolder-style reader)
is timed interleaved, 64 samples at a time in turn, so that load from elsewhere on the machine
slows all of its members alike. Each group is repeated on freshly opened datasets and the
median is reported. MB/s counts what each pass returns: stored bytes for ``decode=False`` and
``txn.get``, array bytes for decoded samples.

Steady state: before the clock, every record the pass will read is copied once on the same
open dataset, as an earlier epoch would have touched it in a training process. A fresh mapping
pays a page fault on the first touch of every page (readahead is off, so nothing is mapped
around it), which costs more than the rest of a zero-copy read: the "first touch" row shows it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from lmdbshard.tools.read_speed import measure, measure_interleaved
from lmdbshard.read.dataset import ShardedDataset
from lmdbshard.read.envs import registry
from lmdbshard.write.choices import Resample
from lmdbshard.write.listing import Listing
from lmdbshard.read.stream import ShardStream
from lmdbshard.benchmark.baselines import BareShards, imagefolder_read, pil_decode, source_files


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


def _warm(ds: ShardedDataset, indices) -> None:
    for i in indices:
        bytes(ds.raw(i))


def _records_group(jpeg_root: str, raw_root: str, indices: list[int], seconds: float) -> dict:
    with ShardedDataset(jpeg_root, decode=False) as records, ShardedDataset(raw_root, copy=False) as raw, \
            ShardedDataset(raw_root) as raw_copy:
        for ds in (records, raw):
            _warm(ds, indices)
        envs = [registry().open[ref.path].env for ref in records.shard_refs]
        bare = BareShards(envs, [ref.first_key for ref in records.shard_refs], records._ends)
        try:
            measure(bare.get, indices, seconds)
            steps = [bare.get, lambda i: records[i][0], lambda i: raw[i][0], lambda i: raw_copy[i][0]]
            got = measure_interleaved(steps, indices, 4 * seconds, size=_nbytes)
        finally:
            bare.close()
    return dict(zip(("get/bare", "get/ds", "raw/ds", "raw/ds-copy"), got))


def _decode_group(jpeg_root: str, indices: list[int], payloads: dict, files: list[str], seconds: float) -> dict:
    shorter, resample = _transform_of(jpeg_root)
    with ShardedDataset(jpeg_root) as ds:
        _warm(ds, indices)
        steps = [lambda i: pil_decode(payloads[i]), lambda i: ds[i][0],
                 lambda i: imagefolder_read(files[i % len(files)], shorter, resample)]
        got = measure_interleaved(steps, indices, 3 * seconds, size=_nbytes)
    return dict(zip(("jpeg/bare", "jpeg/ds", "imagefolder"), got))


def _first_touch(raw_root: str, indices: list[int], seconds: float) -> dict:
    with ShardedDataset(raw_root, copy=False) as ds:
        return {"raw/ds-first": measure(lambda i: ds[i][0], indices, seconds, size=_nbytes)}


def _stream(jpeg_root: str, seconds: float, decode: bool) -> dict:
    with ShardedDataset(jpeg_root, decode=decode) as ds:
        _warm(ds, range(len(ds)))
        samples: Iterator = iter(ShardStream(ds))
        got = measure(lambda s: s[0], samples, seconds, size=_nbytes)
    return {"stream/jpeg" if decode else "stream/records": got}


def run_reads(jpeg_root: str, raw_root: str, listing: Listing, samples: int, seconds: float, repeats: int,
              seed: int = 0) -> ReadTimes:
    n = len(ShardedDataset(jpeg_root))
    indices = np.random.default_rng(seed).integers(0, n, size=samples).tolist()
    with ShardedDataset(jpeg_root, decode=False) as ds:   # the stored JPEGs, for the bare decode
        payloads = {i: ds[i][0] for i in set(indices)}
    files = source_files(listing.root, listing.paths)
    groups = [lambda: _records_group(jpeg_root, raw_root, indices, seconds),
              lambda: _decode_group(jpeg_root, indices, payloads, files, seconds),
              lambda: _first_touch(raw_root, indices, seconds),
              lambda: _stream(jpeg_root, seconds, True),
              lambda: _stream(jpeg_root, seconds, False)]
    times = ReadTimes()
    for r in range(repeats):
        for group in (groups if r % 2 == 0 else groups[::-1]):
            for key, got in group().items():
                times.add(key, *got)
    return times


def _transform_of(root: str) -> tuple[int | None, str]:
    from lmdbshard.format.manifest import load_manifest
    t = load_manifest(root).data["config"]["transform"]
    return t.get("resize_shorter"), t.get("resample", Resample.bilinear)
