"""``run_bench``: the whole ``make bench`` in order: corpus, conversions (Ray up), the raw
copy for the read rows, reads (Ray down, so its daemons do not share the read core), open,
scale, and reads from a local S3 server."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os

from lmdbshard.write.atomic import write_json_atomic
from lmdbshard.write.config import ConvertConfig, RayConfig, StorageConfig
from lmdbshard.tools.demo import DemoSpec, make_imagefolder
from lmdbshard.write.sources.imagefolder import list_imagefolder
from lmdbshard.benchmark.config import BenchConfig
from lmdbshard.benchmark.command import time_command
from lmdbshard.benchmark.conversion import conversion_dir, run_conversions
from lmdbshard.benchmark.opening import make_many_shards, time_open
from lmdbshard.benchmark.reads import run_reads
from lmdbshard.benchmark.remote_convert import run_remote_conversion
from lmdbshard.benchmark.remote_read import run_remote_read
from lmdbshard.benchmark.s3server import available, local_s3
from lmdbshard.benchmark.report import BenchReport, environment
from lmdbshard.benchmark.scale import run_scale
from lmdbshard.benchmark.small_images import run_small_images

log = logging.getLogger("lmdbshard")


def corpus_root(bench: BenchConfig) -> str:
    """The ImageFolder to benchmark: ``bench.source``, or the generated corpus (made once, then kept)."""
    if bench.source is not None:
        return os.path.abspath(os.path.expanduser(bench.source))
    return generated("corpus", bench.corpus_dir, bench.corpus)


def generated(what: str, folder: str, spec: DemoSpec) -> str:
    """The ImageFolder ``spec`` generates in ``folder``: made on first use on every core, then kept."""
    log.info("bench: %s %s (%d images; generated on first use)", what, folder, spec.classes * spec.per_class)
    return os.path.abspath(make_imagefolder(folder, spec, processes=os.cpu_count() or 1))


def run_bench(bench: BenchConfig, base: ConvertConfig) -> BenchReport:
    """Run every comparison; write the JSON when ``bench.json`` is set. ``base`` is the conversion under test."""
    from lmdbshard.write.coordinator import convert
    from lmdbshard.write.session import ray_session
    bench.validate()
    root = corpus_root(bench)
    listing = list_imagefolder(root, base.source.extensions)
    work = os.path.abspath(bench.work)
    os.makedirs(work, exist_ok=True)
    base = dataclasses.replace(base, source=dataclasses.replace(base.source, root=root))
    top = max(bench.workers)
    small_root = generated("small images", bench.small_corpus_dir, bench.small_corpus) if bench.small_images else None
    # the local S3 server of the remote_convert rows first: Ray's workers inherit its address
    with local_s3() if bench.remote_convert and available() else contextlib.nullcontext() as server, \
            ray_session(RayConfig(num_cpus=top)) as startup_s:
        conversion = run_conversions(base, listing, work, bench.workers, bench.shard_sizes, bench.repeats,
                                     bench.folder2lmdb, startup_s)
        small = run_small_images(base, small_root, work, top, bench.repeats,
                                 conversion.niceness) if small_root else None
        remote_convert = run_remote_conversion(dataclasses.replace(base, shard_size=bench.shard_sizes[-1]), work,
                                               bench.repeats, server) if bench.remote_convert else None
        raw_root = os.path.join(work, "read-raw")
        log.info("bench: converting the corpus once more as raw records for the raw read rows")
        convert(dataclasses.replace(base, out=raw_root, storage=StorageConfig(encoding="raw"), overwrite=True))
    command = time_command(root, work, len(listing)) if bench.command else None   # Ray down: it starts its own
    jpeg_root = conversion_dir(work, top, bench.shard_sizes[0])
    log.info("bench: reads")
    reads = run_reads(jpeg_root, raw_root, listing, bench.read_samples, bench.read_seconds, bench.read_repeats)
    log.info("bench: opening %d shards", bench.open_shards)
    opened = time_open(make_many_shards(os.path.join(work, f"open-{bench.open_shards}"), bench.open_shards))
    scale = run_scale(bench.scale, jpeg_root) if bench.scale else None
    remote_read = (run_remote_read(jpeg_root, bench.read_samples, bench.read_seconds, bench.read_repeats)
                   if bench.remote_read else None)
    sizes = [os.path.getsize(os.path.join(root, p)) for p in listing.paths]
    t = base.transform
    corpus = {"root": root, "images": len(listing), "classes": len(listing.classes), "mb": sum(sizes) / 1e6,
              "mean_kb": sum(sizes) / max(1, len(sizes)) / 1e3,
              "transform": f"read, decode, resize short side to {t.resize_shorter} ({t.resample}), "
                           f"encode {base.storage.encoding} q{base.storage.quality}; "
                           f"shard_size {', '.join(map(str, bench.shard_sizes))}; work units of {base.ray.unit_size}"}
    report = BenchReport(environment(bench.repeats), corpus, conversion, reads, opened, list(bench.workers),
                         list(bench.shard_sizes), command, scale, remote_convert=remote_convert,
                         remote_read=remote_read, small_images=small)
    if bench.json:
        path = os.path.abspath(bench.json)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, report.as_json())
    return report
