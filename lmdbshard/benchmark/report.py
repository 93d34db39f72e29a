"""The ``make bench`` table and JSON: rows with images/s, MB/s and ratios, and every target
with its measured value and PASS or MISS (or "not measured", with the reason)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional

from lmdbshard.benchmark.command import CommandTimes
from lmdbshard.benchmark.conversion import ConversionTimes
from lmdbshard.benchmark.opening import OpenResult
from lmdbshard.benchmark.reads import ReadTimes
from lmdbshard.benchmark.remote_convert import RemoteConversion
from lmdbshard.benchmark.remote_read import RemoteRead
from lmdbshard.benchmark.scale import Scale
from lmdbshard.benchmark.small_images import SmallImages


@dataclass
class Row:
    section: str
    name: str
    per_s: Optional[float] = None
    mb_per_s: Optional[float] = None
    ratio: Optional[float] = None
    vs: str = ""


@dataclass
class Target:
    name: str
    value: Optional[float]
    threshold: float
    unit: str               # "x" (a ratio), "images/s", "s", "MB"
    at_least: bool = True   # False: the value must stay under the threshold
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        ok = self.value >= self.threshold if self.at_least else self.value < self.threshold
        return "PASS" if ok else "MISS"


@dataclass
class BenchReport:
    environment: dict
    corpus: dict
    conversion: ConversionTimes
    reads: ReadTimes
    opened: OpenResult
    workers: list[int]
    shard_sizes: list[int]
    command: Optional[CommandTimes] = None
    scale: Optional[Scale] = None
    remote_convert: Optional[RemoteConversion] = None
    remote_read: Optional[RemoteRead] = None
    small_images: Optional[SmallImages] = None

    # -------------------------------------------------------------- rows
    def rows(self) -> list[Row]:
        c, r = self.conversion, self.reads
        rows = []
        pipelines = self._pipelines()
        for name, key, vs, vs_name in pipelines:
            rows.append(Row("conversion", name, c.per_s(key), c.mb_per_s(key),
                            c.per_s(key) / c.per_s(vs) if vs else None, vs_name))
        if "folder2lmdb/1" in c.seconds:
            top, size = max(self.workers), self.shard_sizes[0]
            rows.append(Row("conversion", "folder2lmdb recipe (1 process, pickle, one LMDB)", c.per_s("folder2lmdb/1"),
                            c.mb_per_s("folder2lmdb/1"), c.per_s("folder2lmdb/1") / c.per_s(f"lmdbshard/{top}/{size}"),
                            f"lmdbshard, {top} worker(s)"))
        for name, key, vs, vs_name in pipelines:   # the targets' rates
            rows.append(Row("conversion, steady state (10% to 90% done)", name, c.steady_per_s(key),
                            c.steady_mb_per_s(key), self._steady_ratio(key, vs) if vs else None, vs_name))
        names = {
            "get/bare": ("txn.get loop over the same shards", None),
            "get/ds": ("ds[i], decode=False", "get/bare"),
            "jpeg/bare": ("PIL decode of the same bytes", None),
            "jpeg/ds": ("ds[i], jpeg decoded", "jpeg/bare"),
            "raw/ds": ("ds[i], raw, copy=False (zero-copy)", "imagefolder"),
            "raw/ds-copy": ("ds[i], raw, copy=True", "imagefolder"),
            "raw/ds-first": ("ds[i], raw, copy=False, first touch", "imagefolder"),
            "imagefolder": ("ImageFolder-style (open, decode, resize)", "jpeg/ds"),
            "stream/jpeg": ("ShardStream, jpeg decoded", "jpeg/bare"),
            "stream/records": ("ShardStream, decode=False", "get/bare"),
        }
        for key, (name, vs) in names.items():
            if key not in r.samples:
                continue
            ratio = r.per_s(key) / r.per_s(vs) if vs else None
            rows.append(Row("random reads, 1 process" if not key.startswith("stream") else "sequential reads, 1 process",
                            name, r.per_s(key), r.mb_per_s(key), ratio, names[vs][0] if vs else ""))
        return rows

    def _pipelines(self) -> list[tuple[str, str, Optional[str], str]]:
        """(row name, key, the bare Pool's key it is compared with, its name) of each conversion, in table order."""
        found = []
        for w in self.workers:
            found.append((f"bare chain, multiprocessing.Pool({w})", f"bare/{w}", None, ""))
            found += [(f"lmdbshard, {w} Ray worker{'s' if w > 1 else ''}, shard_size {size}", f"lmdbshard/{w}/{size}",
                       f"bare/{w}", f"bare Pool({w})") for size in self.shard_sizes]
        return found

    def _steady_ratio(self, key: str, vs: str) -> Optional[float]:
        """``key``'s steady-state images/s over ``vs``'s; None unless both were measured."""
        a, b = self.conversion.steady_per_s(key), self.conversion.steady_per_s(vs)
        return a / b if a is not None and b else None

    # -------------------------------------------------------------- targets
    def targets(self) -> list[Target]:
        c, r, o = self.conversion, self.reads, self.opened
        top = max(self.workers)
        cores = self.environment["cpus"]
        # On 16 cores and more the bar is 0.9x (the 50,000-image run of bench.corpus.per_class=2500), else 0.95x.
        t = [Target(f"conversion, shard_size {size}, {top} workers vs bare chain, steady state",
                    self._steady_ratio(f"lmdbshard/{top}/{size}", f"bare/{top}"), 0.9 if top >= 16 else 0.95, "x")
             for size in self.shard_sizes]
        first = self.shard_sizes[0]
        one, two = f"lmdbshard/1/{first}", f"lmdbshard/2/{first}"
        both = one in c.seconds and two in c.seconds
        pools = self._steady_ratio("bare/2", "bare/1") if both else None
        t.append(Target(f"conversion, shard_size {first}, 2 workers vs 1 worker, steady state",
                        self._steady_ratio(two, one) if both else None, 1.85, "x",
                        # what the machine's cores give the bare chain itself: the ceiling of this ratio
                        note=f"the bare chain on these cores: Pool(2) {pools:.2f}x Pool(1)" if pools
                        else "needs bench.workers to hold 1 and 2"))
        sixteen = f"lmdbshard/16/{first}"
        t.append(Target(f"conversion, shard_size {first}, 16 workers vs 1 worker, steady state",
                        self._steady_ratio(sixteen, one),
                        14.0, "x", note="" if sixteen in c.seconds else
                        f"this machine has {cores} cores; run bench.workers=[1,2,4,8,16] on one with 16 or more"))
        cmd = self.command
        t.append(Target("whole command: fixed costs beyond Ray's import, start-up and shutdown", cmd.fixed_s if cmd else None,
                        1.0, "s", at_least=False, note="" if cmd else "bench.command=false"))
        t += [
            Target("random ds[i], decode=False, vs txn.get loop", r.per_s("get/ds") / r.per_s("get/bare"), 0.7, "x"),
            Target("random ds[i], jpeg decoded, vs PIL decode", r.per_s("jpeg/ds") / r.per_s("jpeg/bare"), 0.95, "x"),
            Target("random ds[i], raw, one core", r.per_s("raw/ds"), 100_000, "images/s"),
            Target("random ds[i], jpeg decoded, vs ImageFolder-style",
                   r.per_s("jpeg/ds") / r.per_s("imagefolder"), 5.0, "x"),
            Target("random ds[i], raw, vs ImageFolder-style", r.per_s("raw/ds") / r.per_s("imagefolder"), 50.0, "x"),
            Target(f"open {o.shards} shards, time", o.seconds, 1.0, "s", at_least=False),
            Target(f"open {o.shards} shards, RSS growth", o.rss_growth_mb, 100.0, "MB", at_least=False),
        ]
        return t

    # -------------------------------------------------------------- output
    def table(self) -> str:
        e, corpus, c = self.environment, self.corpus, self.conversion
        lines = [
            f"lmdbshard bench: {corpus['root']}",
            f"  corpus: {corpus['images']} images in {corpus['classes']} classes, {corpus['mb']:.1f} MB "
            f"({corpus['mean_kb']:.0f} KB each); {corpus['transform']}",
            f"  machine: {e['cpus']} cores; Python {e['python']}, Pillow {e['pillow']} (libjpeg-turbo: "
            f"{e['libjpeg_turbo']}), lmdb {e['lmdb']}, Ray {e['ray']}",
            f"  median of {e['repeats']} interleaved repeats; Ray start-up {c.ray_startup_s:.1f} s, reported "
            "apart and not counted;",
            f"  conversions: the bare Pool and folder2lmdb run at the niceness of Ray's workers ({c.niceness})",
        ]
        section = None
        for row in self.rows():
            if row.section != section:
                section = row.section
                lines += ["", f"  {section:<52} {'images/s':>10} {'MB/s':>9}  ratio"]
            ratio = f"{row.ratio:6.2f}x vs {row.vs}" if row.ratio is not None else ""
            rate = "-" if row.per_s is None else f"{row.per_s:.0f}"
            mb = "-" if row.mb_per_s is None else f"{row.mb_per_s:.1f}"
            lines.append(f"    {row.name:<50} {rate:>10} {mb:>9}  {ratio}".rstrip())
        cmd = self.command
        if cmd is not None:
            lines += ["", f"  whole command (jobs/convert.py --config-name imagenet, {cmd.images} images): {cmd.wall_s:.2f} s",
                      f"    import ray {cmd.ray_import_s:.2f} s, Ray start-up {cmd.ray_startup_s:.2f} s, shards {cmd.shards_s:.2f} s "
                      f"({cmd.images / max(cmd.shards_s, 1e-9):.0f} images/s), Ray shutdown {cmd.ray_shutdown_s:.2f} s"]
            lines += [f"    fixed: {name:<44} {seconds:6.2f} s" for name, seconds in cmd.fixed.items()]
        o = self.opened
        lines += ["", "  open", f"    ShardedDataset(root) over {o.shards} shards: {o.seconds:.3f} s, RSS "
                  f"+{o.rss_growth_mb:.1f} MB; first read of two shards {o.first_read_s * 1e3:.1f} ms",
                  ""]
        small = self.small_images
        if small is not None:
            lines += [f"  {small.title()}"] + [f"    {row}" for row in small.rows()] + [""]
        if self.scale is not None:
            lines += ["  scale (synthetic listings, no image files)"] + [f"    {row}" for row in self.scale.rows()] + [""]
        if self.remote_convert is not None:
            lines += ["  object store (a local S3 server)"] + [f"    {row}" for row in self.remote_convert.conversion_rows()] + [""]
        if self.remote_read is not None:
            lines += ["  remote read (s3:// through the local cache, against a local moto server)"]
            lines += [f"    {row}" for row in self.remote_read.rows()] + [""]
        lines += [f"  {'targets':<60} {'measured':>12} {'target':>12}"]
        for t in self.targets():
            value = "-" if t.value is None else _fmt(t.value, t.unit)
            goal = ("≥ " if t.at_least else "< ") + _fmt(t.threshold, t.unit)
            lines.append(f"    {t.name:<58} {value:>12} {goal:>12}  {t.verdict}" + (f" ({t.note})" if t.note else ""))
        return "\n".join(lines)

    def as_json(self) -> dict:
        c, r = self.conversion, self.reads
        return {
            "environment": self.environment, "corpus": self.corpus, "ray_startup_s": c.ray_startup_s,
            "niceness": c.niceness,
            "conversion": {k: {"seconds": v, "images_per_s": c.per_s(k), "mb_per_s": c.mb_per_s(k),
                               "steady_images_per_s": c.steady_per_s(k)}
                           for k, v in c.seconds.items()},
            "reads": {k: {"samples": r.samples[k], "seconds": r.seconds[k], "per_s": r.per_s(k),
                          "mb_per_s": r.mb_per_s(k)} for k in r.samples},
            "open": asdict(self.opened),
            "command": None if self.command is None else asdict(self.command) | {"fixed_s": self.command.fixed_s},
            "rows": [asdict(row) for row in self.rows()],
            "targets": [asdict(t) | {"verdict": t.verdict} for t in self.targets()],
            "scale": None if self.scale is None else self.scale.as_json(),
            "remote_convert": None if self.remote_convert is None else self.remote_convert.as_json(),
            "remote_read": None if self.remote_read is None else self.remote_read.as_json(),
            "small_images": None if self.small_images is None else self.small_images.as_json(),
        }


def _fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "images/s":
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:.1f} {unit}"


def environment(repeats: int) -> dict:
    import platform

    import ray

    from lmdbshard.tools.read_speed import environment as read_environment
    return read_environment() | {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                                 "repeats": repeats}
