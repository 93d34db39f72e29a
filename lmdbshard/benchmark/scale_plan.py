"""The driver's per-sample costs at scale, with no image files, and the resume check's read speed.

For synthetic listings of 10⁶ and 10⁷ samples (1,000 ImageNet-like class folders, relative paths
``n01440764/n01440764_10026.JPEG``), each in a fresh subprocess: build the listing as the driver
holds it, its digest, the plan, the plan write (``plan.json`` + ``listing.npz``), a rerun's plan
check, a full listing load, and one shard's items as a task slices them. Prints seconds and bytes
per sample and the driver's peak RSS growth per sample. Then a resume check (``checksum``) of real
shard files out of page cache, against a plain sequential ``read()`` of the same files.

Targets: plan and listing files ≤ 16 B per sample plus the compressed path bytes; driver peak RSS
growth ≤ 100 B per sample; the resume check ≥ 0.5× the plain read's throughput.
``python -m lmdbshard.benchmark.scale_plan [--sizes 1000000]`` prints every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field

import numpy as np

FILE_BYTES_TARGET = 16.0    # plan + listing files per sample, beyond the compressed path bytes
RSS_BYTES_TARGET = 100.0    # driver peak RSS growth per sample
CHECK_RATIO_TARGET = 0.5    # resume check throughput / plain sequential read throughput
CLASSES = 1000
SHARD_SIZE = 2560


@dataclass(frozen=True)
class PlanScale:
    """One listing size, measured in a fresh process."""

    samples: int
    seconds: dict[str, float]   # listing, digest, plan, write, rerun_check, load, shard_items
    plan_bytes: int             # plan.json
    listing_bytes: int          # listing.npz
    path_bytes_compressed: int  # the ``paths`` member of listing.npz, deflated
    rss_growth: int             # peak RSS over the driver's steps (all but ``load``) minus RSS before them

    @property
    def file_bytes_per_sample(self) -> float:
        return (self.plan_bytes + self.listing_bytes - self.path_bytes_compressed) / self.samples

    @property
    def rss_per_sample(self) -> float:
        return self.rss_growth / self.samples

    def rows(self) -> list[str]:
        n = self.samples
        per = ", ".join(f"{k} {v:.2f} s ({v / n * 1e9:.0f} ns/sample)" if k != "shard_items"
                        else f"one shard's items {v * 1e3:.1f} ms" for k, v in self.seconds.items())
        files = (f"plan files at {n:,}: plan.json {self.plan_bytes:,} B + listing.npz {self.listing_bytes:,} B "
                 f"= {(self.plan_bytes + self.listing_bytes) / n:.2f} B/sample, of which compressed paths "
                 f"{self.path_bytes_compressed / n:.2f} B/sample; the rest {self.file_bytes_per_sample:.2f} "
                 f"B/sample, target <= {FILE_BYTES_TARGET:g}: "
                 f"{'PASS' if self.file_bytes_per_sample <= FILE_BYTES_TARGET else 'MISS'}")
        rss = (f"driver peak RSS growth at {n:,}: {self.rss_growth / 2**20:.0f} MiB = {self.rss_per_sample:.1f} "
               f"B/sample, target <= {RSS_BYTES_TARGET:g}: {'PASS' if self.rss_per_sample <= RSS_BYTES_TARGET else 'MISS'}")
        return [f"plan steps at {n:,}: {per}", files, rss]


@dataclass(frozen=True)
class CheckScale:
    """The resume check of real shard files out of page cache, against a plain read of the same files."""

    shards: int
    bytes: int
    check_s: float
    read_s: float
    warm_s: float   # the check with the files in page cache: its CPU ceiling (sha256 of each file)

    @property
    def ratio(self) -> float:
        return self.read_s / self.check_s   # throughput of the check relative to the read

    def rows(self) -> list[str]:
        mb = self.bytes / 1e6
        verdict = "PASS" if self.ratio >= CHECK_RATIO_TARGET else "MISS"
        return [f"resume check (checksum) out of page cache, {self.shards} shards, {mb:.0f} MB: "
                f"{mb / self.check_s:.0f} MB/s vs plain read() {mb / self.read_s:.0f} MB/s = {self.ratio:.2f}x, "
                f"target >= {CHECK_RATIO_TARGET:g}x: {verdict} (in page cache the check runs at "
                f"{mb / self.warm_s:.0f} MB/s: its CPU ceiling here)"]


@dataclass(frozen=True)
class ScaleReport:
    plans: list[PlanScale] = field(default_factory=list)
    check: CheckScale | None = None

    def rows(self) -> list[str]:
        return [r for p in self.plans for r in p.rows()] + (self.check.rows() if self.check else [])


# ---------------------------------------------------------------------------------------------- plan
def synthetic_listing(samples: int, seed: int = 0):
    """An ImageNet-like listing of ``samples`` paths in CLASSES folders, built one class at a time."""
    from lmdbshard.write.listing import Listing, PathTable
    rng = np.random.default_rng(seed)
    wnids = sorted(set(rng.integers(10**6, 10**8, size=2 * CLASSES).tolist()))[:CLASSES]
    per = np.full(CLASSES, samples // CLASSES)
    per[:samples % CLASSES] += 1
    builder = PathTable.builder()   # as list_imagefolder appends each class folder's paths
    for wnid, k in zip(wnids, per.tolist()):
        ids = np.sort(rng.choice(20 * max(k, 1), size=k, replace=False)) + 1
        builder.add([b"n%08d/n%08d_%d.JPEG" % (wnid, wnid, i) for i in ids.tolist()])
    labels = np.repeat(np.arange(CLASSES, dtype=np.int32), per)
    paths = builder.build()
    return Listing("/data/imagenet/train", [f"n{w:08d}" for w in wnids], paths, labels)


def _rss(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def measure_plan(samples: int, work: str) -> PlanScale:
    """Every step in this process (run it in a fresh one: ``plan_in_subprocess``)."""
    from lmdbshard.write.config import ConvertConfig, SourceConfig
    from lmdbshard.write.plan import make_plan
    from lmdbshard.write.resume import OutputDir
    from lmdbshard.write.stored_listing import LISTING_NAME, load_listing
    from lmdbshard.write.task import ItemTable

    start_rss = _rss("VmRSS")
    seconds: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        value = fn()
        seconds[name] = time.perf_counter() - t
        return value

    listing = timed("listing", lambda: synthetic_listing(samples))
    timed("digest", listing.digest)
    plan = timed("plan", lambda: make_plan(len(listing), 0, SHARD_SIZE))
    cfg = ConvertConfig(source=SourceConfig(root=listing.root), out=work, shard_size=SHARD_SIZE)
    timed("write", lambda: OutputDir(work).prepare(cfg, listing, plan))
    timed("rerun_check", lambda: OutputDir(work)._check_saved_plan(cfg, listing, plan))
    table = ItemTable.of(plan, listing)
    timed("shard_items", lambda: table.items(0, SHARD_SIZE))
    growth = _rss("VmHWM") - start_rss   # the driver's steps; a full load happens only to explain a change
    timed("load", lambda: load_listing(OutputDir(work).listing_path))
    with zipfile.ZipFile(os.path.join(work, LISTING_NAME)) as zf:
        paths_z = zf.getinfo("paths.npy").compress_size
    return PlanScale(samples, seconds, os.path.getsize(OutputDir(work).plan_path),
                     os.path.getsize(os.path.join(work, LISTING_NAME)), paths_z, growth)


def plan_in_subprocess(samples: int) -> PlanScale:
    """``measure_plan`` in a fresh interpreter, so that its peak RSS is this size's alone."""
    with tempfile.TemporaryDirectory(prefix="lmdbshard-scale-") as work:
        out = subprocess.run([sys.executable, "-m", "lmdbshard.benchmark.scale_plan", "--child", str(samples),
                              "--work", work], check=True, capture_output=True, text=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return PlanScale(**data)


# --------------------------------------------------------------------------------------------- check
def _drop_cache(paths: list[str]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _plain_read(paths: list[str]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def build_shards(work: str, images: int = 1000, shard_size: int = 100) -> tuple[str, list]:
    """Real shards of a demo corpus (photo-like JPEGs of ImageNet size, stored as they are), written by
    the shard task itself: returns the output folder and the shards' manifest entries."""
    from lmdbshard.tools.demo import DemoSpec, make_imagefolder
    from lmdbshard.write.config import StorageConfig, TransformConfig
    from lmdbshard.write.sources.imagefolder import list_imagefolder
    from lmdbshard.write.task import ItemTable, ShardTask, WriteOptions, write_shard
    from lmdbshard.write.plan import make_plan
    src = make_imagefolder(os.path.join(work, "src"), DemoSpec(classes=10, per_class=images // 10, detail=90),
                           processes=os.cpu_count() or 1)
    listing = list_imagefolder(src, [".jpg"])
    plan = make_plan(len(listing), 0, shard_size)
    out = os.path.join(work, "out")
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    opts = WriteOptions(out=out, transform=TransformConfig(), storage=StorageConfig(encoding="passthrough"),
                        items=ItemTable(plan.order, plan.num_sources, listing.paths, listing.labels))
    entries = []
    for k in range(plan.num_shards):
        start, stop = plan.shard_range(k)
        entries.append(write_shard(ShardTask(k, start, stop - start, listing.root), opts).entry)
    return out, entries


def measure_check(out: str, entries: list, repeats: int = 3) -> CheckScale:
    """A resume check (``checksum``) of the shards out of page cache, and a plain read of the same files out
    of page cache, alternately ``repeats`` times; the best time of each."""
    from lmdbshard.format.manifest import RECORD_FORMAT
    from lmdbshard.read.verify import check_shards, expectations
    from lmdbshard.format.record import lmdb_data_file
    shards, _ = expectations(out, entries, RECORD_FORMAT, walk=False)   # as resume_check=checksum does
    if not all(e.file_sha256 for e in shards):
        raise RuntimeError(f"{out}: shards without file_sha256 (written by an earlier version); convert afresh")
    files = [lmdb_data_file(e.path) for e in shards]
    check_s = read_s = float("inf")
    size = 0
    for _ in range(repeats):
        _drop_cache(files)
        t = time.perf_counter()
        _, problems = check_shards(shards, decode=False)
        check_s = min(check_s, time.perf_counter() - t)
        if problems:
            raise RuntimeError(f"the benchmark's shards failed their check: {problems[0]}")
        _drop_cache(files)
        t = time.perf_counter()
        size = _plain_read(files)
        read_s = min(read_s, time.perf_counter() - t)
    t = time.perf_counter()
    check_shards(shards, decode=False)   # the files are in page cache now
    return CheckScale(len(files), size, check_s, read_s, time.perf_counter() - t)


def run(sizes: tuple[int, ...] = (10**6, 10**7), check: bool = True, work: str | None = None) -> ScaleReport:
    plans = [plan_in_subprocess(n) for n in sizes]
    result = None
    if check:
        with tempfile.TemporaryDirectory(prefix="lmdbshard-scale-", dir=work) as tmp:
            result = measure_check(*build_shards(tmp))
    return ScaleReport(plans, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmdbshard.benchmark.scale_plan", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**6, 10**7], help="listing sizes (default 1e6 1e7)")
    parser.add_argument("--no-check", action="store_true", help="skip the resume check of real shards")
    parser.add_argument("--work", help="folder for the check's shards (default: system temp; use a real disk)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asdict(measure_plan(args.child, args.work))))
        return 0
    for row in run(tuple(args.sizes), not args.no_check, args.work).rows():
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
