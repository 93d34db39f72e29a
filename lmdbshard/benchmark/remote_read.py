"""The ``remote read`` section of ``make bench``: a dataset read from a local S3 server through the cache.

The benchmark's own conversion output is uploaded to a moto server started here (skipped, with
the reason, when moto is not installed), in the layout a conversion into a URL makes. Two
comparisons, each repeated and interleaved, the median reported:

- **Warm cache.** ``ds[i]`` (``decode=False``) over the same seeded random indices, through a
  cache that already holds every shard, against the local folder; both in page cache, timed
  interleaved 64 samples at a time (the ``bench-read`` timer).
- **First read.** The first ``ds[i]`` of the largest shard through an empty cache, in MB/s of the
  shard's size: the download (as the cache's ``downloads.log`` times it: the requests, the write
  and the rename) and the whole call (also the lock, the structure check and the open). Against
  two plain GETs of the same object from the same server, read whole into memory, all taking
  turns: one read through pyarrow (``objects.read_bytes``: the client lmdbshard uses, its HEAD
  included), on which the target is, and an unsigned ``urllib`` GET, which shows what the client
  library itself costs.

Each ratio is taken per repeat, and the median of the ratios reported: load from elsewhere on the
machine then moves both sides of a ratio alike.

    python -m lmdbshard.benchmark.remote_read [DATASET]   # this section alone (default: out/bench's)
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from lmdbshard.read.cache import DOWNLOADS_LOG, ShardCache
from lmdbshard.read.dataset import ShardedDataset
from lmdbshard.storage import objects
from lmdbshard.storage.urls import join
from lmdbshard.tools.read_speed import measure_interleaved
from lmdbshard.benchmark import s3server

WARM_TARGET = 0.95
FIRST_READ_TARGET = 0.5


@dataclass
class RemoteRead:
    skipped: Optional[str] = None        # why the section did not run
    shards: int = 0
    mb: float = 0.0                      # the dataset's shard bytes
    local_per_s: list[float] = field(default_factory=list)
    warm_per_s: list[float] = field(default_factory=list)
    shard_mb: float = 0.0                # the shard of the first-read rows
    get_mb_s: list[float] = field(default_factory=list)       # pyarrow: objects.read_bytes
    http_mb_s: list[float] = field(default_factory=list)      # urllib
    download_mb_s: list[float] = field(default_factory=list)
    first_read_mb_s: list[float] = field(default_factory=list)

    def warm_ratio(self) -> Optional[float]:
        return None if self.skipped else _median_ratio(self.warm_per_s, self.local_per_s)

    def download_ratio(self) -> Optional[float]:
        return None if self.skipped else _median_ratio(self.download_mb_s, self.get_mb_s)

    def rows(self) -> list[str]:
        if self.skipped:
            return [f"skipped: {self.skipped}"]
        med = statistics.median
        return [f"dataset: {self.shards} shards, {self.mb:.1f} MB, uploaded to a local moto server",
                f"ds[i], decode=False, local folder           {med(self.local_per_s):>10.0f} records/s",
                f"ds[i], decode=False, s3:// via warm cache   {med(self.warm_per_s):>10.0f} records/s  "
                f"{self.warm_ratio():.2f}x vs local  (target >= {WARM_TARGET}x: "
                f"{_verdict(self.warm_ratio(), WARM_TARGET)})",
                f"one {self.shard_mb:.1f} MB shard object, plain GET with urllib      {med(self.http_mb_s):>7.1f} MB/s",
                f"the same, one read through pyarrow (HEAD, GET) {med(self.get_mb_s):>7.1f} MB/s  "
                f"{_median_ratio(self.get_mb_s, self.http_mb_s):.2f}x vs urllib",
                f"first ds[i] of that shard, empty cache: download {med(self.download_mb_s):>5.1f} MB/s  "
                f"{self.download_ratio():.2f}x vs pyarrow GET (target >= {FIRST_READ_TARGET}x: "
                f"{_verdict(self.download_ratio(), FIRST_READ_TARGET)}), "
                f"{_median_ratio(self.download_mb_s, self.http_mb_s):.2f}x vs urllib",
                f"  the whole first ds[i] (lock, download, check, open) {med(self.first_read_mb_s):>5.1f} MB/s  "
                f"{_median_ratio(self.first_read_mb_s, self.get_mb_s):.2f}x vs pyarrow GET"]

    def as_json(self) -> dict:
        return asdict(self) | {"warm_ratio": self.warm_ratio(), "download_ratio": self.download_ratio(),
                               "rows": self.rows()}


def _median_ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(ours, theirs))


def _verdict(value: Optional[float], target: float) -> str:
    return "not measured" if value is None else ("PASS" if value >= target else "MISS")


def run_remote_read(root: str, samples: int = 4000, seconds: float = 2.0, repeats: int = 3) -> RemoteRead:
    """Both comparisons on the dataset at ``root`` (a local folder), against a moto server started here."""
    if not s3server.available():
        return RemoteRead(skipped="moto is not installed (pip install 'moto[server]'); no local S3 server to read from")
    work = tempfile.mkdtemp(prefix="lmdbshard-remote-bench-")
    try:
        with s3server.local_s3() as (endpoint, bucket):
            url = _upload(root, join(bucket, "dataset"))
            result = RemoteRead()
            with ShardedDataset(root, decode=False) as local:
                result.shards = len(local.shard_refs)
                result.mb = sum(ref.bytes for ref in local.shard_refs) / 1e6
                _warm_rows(result, local, url, os.path.join(work, "warm"), samples, seconds, repeats)
                _first_read_rows(result, local, root, endpoint, url, work, repeats)
            return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _upload(root: str, url: str) -> str:
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).split(os.sep)
            if rel[0] in ("shards", "manifest.json"):
                objects.upload(path, join(url, *rel), {"ACL": "public-read"})   # for the unsigned GET
    return url


def _warm_rows(result: RemoteRead, local: ShardedDataset, url: str, cache: str, samples: int, seconds: float,
               repeats: int) -> None:
    indices = np.random.default_rng(0).integers(0, len(local), samples).tolist()
    with ShardedDataset(url, decode=False, cache_dir=cache) as remote:
        for i in indices:   # steady state for both: every record read once (the cache filled), every shard open
            bytes(remote.raw(i))
            bytes(local.raw(i))
        for _ in range(repeats):
            (n_local, s_local, _), (n_warm, s_warm, _) = measure_interleaved(
                [lambda i: local[i][0], lambda i: remote[i][0]], indices, 2 * seconds)
            result.local_per_s.append(n_local / s_local)
            result.warm_per_s.append(n_warm / s_warm)


def _first_read_rows(result: RemoteRead, local: ShardedDataset, root: str, endpoint: str, url: str, work: str,
                     repeats: int) -> None:
    k = max(range(len(local.shard_refs)), key=lambda j: local.shard_refs[j].bytes)
    ref = local.shard_refs[k]
    name = os.path.relpath(ref.path, root).replace(os.sep, "/")
    result.shard_mb = ref.bytes / 1e6
    first = sum(local.shard_sizes[:k])
    plain = f"{endpoint}/{url[len('s3://'):]}/{name}"

    def http() -> float:
        t0 = time.perf_counter()
        with urllib.request.urlopen(plain) as response:
            got = len(response.read())
        if got != ref.bytes:
            raise RuntimeError(f"plain GET of {plain} returned {got} bytes, expected {ref.bytes}")
        return time.perf_counter() - t0

    def get() -> float:
        t0 = time.perf_counter()
        objects.read_bytes(join(url, name))
        return time.perf_counter() - t0

    downloads = []

    def first_read() -> float:
        cache = os.path.join(work, "cold")
        with ShardedDataset(url, decode=False, cache_dir=cache) as remote:
            t0 = time.perf_counter()
            remote[first]
            seconds = time.perf_counter() - t0
            with open(os.path.join(ShardCache(cache).folder(url), DOWNLOADS_LOG)) as log:
                downloads.append(float(log.read().split()[4]))   # the one line: time pid file bytes seconds
        shutil.rmtree(cache, ignore_errors=True)
        return seconds

    steps = [http, get, first_read]
    for r in range(2 * repeats + 1):   # taking turns, each going first as often: load elsewhere hits all alike
        times = {step: step() for step in steps[r % 3:] + steps[:r % 3]}
        result.http_mb_s.append(ref.bytes / 1e6 / times[http])
        result.get_mb_s.append(ref.bytes / 1e6 / times[get])
        result.first_read_mb_s.append(ref.bytes / 1e6 / times[first_read])
        result.download_mb_s.append(ref.bytes / 1e6 / max(downloads[-1], 1e-6))


def main(argv: list[str]) -> int:
    root = argv[0] if argv else os.path.join("out", "bench", "remote-read")
    if not argv and not os.path.exists(os.path.join(root, "manifest.json")):
        _make_dataset(root)
    result = run_remote_read(root, repeats=5)
    print("  remote read (s3:// through the local cache, against a local moto server)")
    print("\n".join(f"    {row}" for row in result.rows()))
    return 0


def _make_dataset(root: str, shards: int = 4, per_shard: int = 2000) -> None:
    """Four shards of 2,000 random 64x64 raw images (~25 MB each): incompressible, like JPEG bytes."""
    from lmdbshard.format.record import Field
    from lmdbshard.write.direct import Sample, write_dataset
    rng = np.random.default_rng(0)

    def shard(k: int) -> list[Sample]:
        return [Sample([Field("image", "raw", rng.integers(0, 256, (64, 64, 3), np.uint8).tobytes(), (64, 64, 3),
                              "uint8", "HWC")], label=(k + j) % 2) for j in range(per_shard)]
    write_dataset(root, (shard(k) for k in range(shards)), ["even", "odd"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
