"""The ``remote_convert`` section of ``make bench``: conversion into an object store against a local folder.

The object store is a local S3 server (moto's server mode, ``s3server.local_s3``) that the benchmark
starts before Ray, when ``moto`` is importable, so that the tasks that upload shards inherit its
address; else the section says it is skipped.
The same conversion (``bench.shard_sizes``' last size, all workers) runs into a fresh local folder
and into a fresh ``s3://`` prefix, taking turns at going first, ``bench.repeats`` times; the median of
the per-repeat ratios is reported (target: into s3:// at least 0.9x into a local folder).

    python -m lmdbshard.benchmark.remote_convert /path/to/imagefolder [work folder] [repeats]   # this section alone
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from lmdbshard.benchmark.s3server import available, local_s3
from lmdbshard.write.config import ConvertConfig

log = logging.getLogger("lmdbshard")

#: Conversion into s3:// against into a local folder: the target ratio of their throughputs.
CONVERSION_TARGET = 0.9


def server_cpu_s(endpoint: str) -> float:
    """CPU seconds used so far by the local S3 server at ``endpoint`` (``s3server.local_s3``'s process, a
    child of this one); it shares this machine's cores with the conversion."""
    port = endpoint.rsplit(":", 1)[1]
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            if b"moto.server" not in args or port.encode() not in args:
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            continue
    return 0.0


@dataclass
class RemoteConversion:
    """Seconds per repeat of one conversion into a local folder and into s3:// (``skipped``: why not run),
    and the CPU seconds the local S3 server used during each s3:// conversion."""

    images: int = 0
    shards: int = 0
    local_s: list[float] = field(default_factory=list)
    s3_s: list[float] = field(default_factory=list)
    server_cpu_s: list[float] = field(default_factory=list)
    skipped: Optional[str] = None

    def ratio(self) -> float:
        """The median of the per-repeat ratios: load from elsewhere on the machine moves both runs of a
        repeat alike."""
        return statistics.median(local / s3 for local, s3 in zip(self.local_s, self.s3_s))

    def conversion_rows(self) -> list[str]:
        if self.skipped:
            return [f"conversion into s3://: skipped ({self.skipped})"]
        local, s3 = (self.images / statistics.median(s) for s in (self.local_s, self.s3_s))
        verdict = "PASS" if self.ratio() >= CONVERSION_TARGET else "MISS"
        return [f"conversion into a local folder ({self.shards} shards): {local:,.0f} images/s",
                f"conversion into s3:// (local S3 server): {s3:,.0f} images/s; the server used "
                f"{statistics.median(self.server_cpu_s):.1f} CPU-s of this machine's cores per run",
                f"s3:// vs local folder: {self.ratio():.2f}x (target >= {CONVERSION_TARGET}x): {verdict}"]

    def as_json(self) -> dict:
        return dataclasses.asdict(self) | ({} if self.skipped else {"ratio": self.ratio()})


def run_remote_conversion(base: ConvertConfig, work: str, repeats: int, server: Optional[tuple[str, str]]
                          ) -> RemoteConversion:
    """``base`` (source set, Ray up) into ``work/remote-local`` and into the bucket of ``server``
    (``s3server.local_s3``'s (endpoint, bucket URL), entered before Ray started), interleaved, each into a
    fresh output; ``server`` None: moto is not installed, and the section says so."""
    if server is None:
        return RemoteConversion(skipped="moto is not installed; pip install 'moto[server]'")
    from lmdbshard.storage import objects
    from lmdbshard.write.coordinator import convert
    endpoint, bucket = server
    found = RemoteConversion()
    local = os.path.join(os.path.abspath(work), "remote-local")
    log.info("bench: conversion into a local folder and into s3:// (a local S3 server), %d repeats", repeats)
    for i in range(repeats):
        shutil.rmtree(local, ignore_errors=True)
        url = f"{bucket}/convert-{i}"
        pair = ((local, found.local_s), (url, found.s3_s))
        for out, times in (pair if i % 2 == 0 else pair[::-1]):   # each goes first as often
            t, cpu = time.perf_counter(), server_cpu_s(endpoint)
            result = convert(dataclasses.replace(base, out=out))
            times.append(time.perf_counter() - t)
            if out == url:
                found.server_cpu_s.append(server_cpu_s(endpoint) - cpu)
            found.images, found.shards = result.images_written, result.shards
        objects.remove(url)
    shutil.rmtree(local, ignore_errors=True)
    return found


def main(argv: list[str]) -> int:
    """This section alone, over the ImageFolder ``argv[0]`` (its own Ray cluster; bench defaults)."""
    from lmdbshard.benchmark.config import BenchConfig
    from lmdbshard.write.config import RayConfig, SourceConfig, TransformConfig
    from lmdbshard.write.session import ray_session
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bench = BenchConfig()
    root, work = argv[0], argv[1] if len(argv) > 1 else bench.work
    base = ConvertConfig(source=SourceConfig(root=os.path.abspath(root)), shard_size=bench.shard_sizes[-1],
                         transform=TransformConfig(resize_shorter=256), progress="none")
    with local_s3() if available() else contextlib.nullcontext() as server, \
            ray_session(RayConfig(num_cpus=max(bench.workers))):
        found = run_remote_conversion(base, work, int(argv[2]) if len(argv) > 2 else bench.repeats, server)
    print("\n".join(found.conversion_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
