"""``convert``: a source folder in, a globally shuffled sharded LMDB dataset out.

The coordinator, in phases:

- ``_start``: validate the config, list the source, make the plan (no side effects);
- under the output lock (lock.py): ``OutputDir.prepare`` checks the folder (resume, clear or refuse);
- ``_reuse``: keep the complete shards an earlier run left for this plan;
- ``_run``: build the missing shards on Ray, saving each report as it lands;
- ``_commit``: check the error rate, then write the manifest, last and atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional

import PIL
import lmdb
import numpy as np
from PIL import features

from lmdbshard import __version__
from lmdbshard.write.config import ConvertConfig
from lmdbshard.errors import ConfigError, JobFailedError
from lmdbshard.write.listing import Listing
from lmdbshard.format.manifest import DATUM_FORMAT, RECORD_FORMAT, DatasetFacts, build_manifest
from lmdbshard.write.lock import OutputLock
from lmdbshard.write.report import ReportSet, ShardReport, stage_seconds
from lmdbshard.write.resume import OutputDir, identity_hash
from lmdbshard.write.plan import Plan, make_plan
from lmdbshard.write.progress import Progress, plural, stage_fractions, stage_shares
from lmdbshard.write.runner import check_objects_on_ray, check_shards_on_ray, pickle_for_workers, run_shards
from lmdbshard.write.session import ray_session
from lmdbshard.write.task import STAGES, ItemTable, ShardTask, WriteOptions
from lmdbshard.write.sources import list_source
from lmdbshard.write.sources.python import PythonSource, python_source
from lmdbshard.storage.urls import check_url, is_url

log = logging.getLogger("lmdbshard")


@dataclass
class ConvertResult:
    out: str
    source: str
    images_written: int
    images_skipped: int
    shards: int
    shards_built: int
    shards_reused: int
    bytes: int
    wall_s: float
    ray_startup_s: float
    images_per_s: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    passthrough: int = 0   # records that store their source file's bytes unchanged
    check_s: float = 0.0   # the resume check of an earlier run's shards (resume_check)
    steady_images_per_s: Optional[float] = None   # from 10% to 90% of the images built (progress.SteadyRate)

    def stage_shares(self) -> str:
        """e.g. ``decode 61%, encode 22%, read 5%, write 4%`` (summed over workers)."""
        if self.shards_built == 0:
            return "n/a (every shard was reused)"
        return stage_shares(self.stage_seconds)

    def summary(self) -> str:
        mb = self.bytes / 1e6
        lines = [
            f"lmdbshard: converted {self.source} -> {self.out}",
            f"  images written  {self.images_written}",
            f"  images skipped  {self.images_skipped}" + (" (see \"errors\" in manifest.json)" if self.images_skipped else ""),
            f"  shards          {self.shards} ({self.shards_built} built, {self.shards_reused} reused)",
            *([f"  resume check    {self.check_s:.1f} s"] if self.check_s else []),
            f"  bytes           {self.bytes} ({mb:.1f} MB)",
            f"  wall time       {self.wall_s:.1f} s (of which Ray start-up {self.ray_startup_s:.1f} s)",
            f"  throughput      {self.images_per_s:.1f} images/s (built shards, Ray start-up excluded)" + (
                f"; {self.steady_images_per_s:.1f} from 10% to 90% of them" if self.steady_images_per_s else "")
            if self.shards_built else "  throughput      n/a (every shard was reused)",
            f"  stage time      {self.stage_shares()}",
            *([f"  passthrough     {self.passthrough} of {self.images_written} stored as their source file's bytes "
               "(they already fit; the rest were re-encoded)"] if self.passthrough else []),
            f"  output          {self.out}",
        ]
        more = [f"... and {len(self.warnings) - 10} more in manifest.json"] if len(self.warnings) > 10 else []
        lines += [f"  warning         {w}" for w in self.warnings[:10] + more]
        return "\n".join(lines)


@dataclass(frozen=True)
class Job:
    """What ``_start`` decides before touching the output: the checked config, listing, plan and folder."""

    cfg: ConvertConfig
    out: str
    listing: Listing
    plan: Plan
    output: OutputDir
    python: Optional[PythonSource]

    @property
    def record_format(self) -> str:
        return DATUM_FORMAT if self.cfg.storage.encoding == "caffe_datum" else RECORD_FORMAT


@dataclass(frozen=True)
class RunTimes:
    built: list[int]      # shards this run built
    ray_startup_s: float
    run_s: float          # building, Ray start-up excluded
    steady_rate: Optional[float] = None   # images/s from 10% to 90% of them


def _tasks(plan: Plan, listing: Listing, todo: list[int]) -> Iterator[ShardTask]:
    """Shard tasks: positions only (a few dozen bytes each); the items come from ``ItemTable.of``."""
    for k in todo:
        start, stop = plan.shard_range(k)
        yield ShardTask(k, start, stop - start, listing.source_root())


def _fields(cfg: ConvertConfig, has_mask: bool) -> list[dict]:
    """The manifest's ``fields``: what every record holds."""
    st = cfg.storage
    if st.encoding == "caffe_datum":
        image = {"name": "image", "encoding": "caffe_datum", "dtype": "uint8", "layout": "CHW",
                 "channel_order": "BGR", "datum_encoded": st.datum_encoded}
        mask = {"name": "mask", "encoding": "caffe_datum", "dtype": "uint8", "layout": "CHW", "database": "label"}
        return [image, mask] if has_mask else [image]
    image = {"name": "image", "encoding": st.encoding, "dtype": "uint8", "layout": st.layout if st.encoding == "raw" else "HWC"}
    if st.encoding == "passthrough":
        image["fallback"] = "jpeg (png for PNG sources, and over 65,500 px per side) when the source does not fit"
    mask = {"name": "mask", "encoding": st.mask_encoding, "dtype": "uint8", "layout": "none"}
    return [image, mask] if has_mask else [image]


def _class_counts(listing: Listing, rounds: int, reports: ReportSet) -> list[int]:
    """Records per class; python sources learn their labels in the tasks, so their reports count them."""
    n = len(listing.classes)
    if listing.kind != "python":
        labels = listing.labels
        counts = np.bincount(labels[labels >= 0], minlength=n)[:n] * rounds
        skipped = labels[np.asarray([s.source_index for s in reports.skipped], dtype=np.int64)]
        counts -= np.bincount(skipped[skipped >= 0], minlength=n)[:n]
        return counts.tolist()
    counts = [0] * n
    for label, k in reports.label_counts.items():
        if 0 <= int(label) < n:
            counts[int(label)] += k
    return counts


def _python_config(cfg: ConvertConfig, dataset: object | None) -> tuple[ConvertConfig, Optional[PythonSource]]:
    """An in-memory dataset object: the config names it by its pickle's hash, so that a rerun with other
    contents (say, another split) is refused."""
    if dataset is None:
        return cfg, None
    if cfg.source.kind != "python" or cfg.source.target not in (None, ""):
        raise ConfigError("a dataset object needs source.kind=python and no source.target; "
                          "pass one or the other")
    python = python_source(cfg.source, dataset, dumps=pickle_for_workers)
    name = (f"<object {type(dataset).__module__}.{type(dataset).__qualname__} "
            f"sha256:{hashlib.sha256(python.pickled).hexdigest()[:16]}>")
    return dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, target=name)), python


def _start(cfg: ConvertConfig, dataset: object | None) -> Job:
    """Validate, list and plan: everything that can refuse the job before the output folder is touched."""
    cfg, python = _python_config(cfg, dataset)
    cfg.validate()
    out = check_url(cfg.out, "out") if is_url(cfg.out) else os.path.abspath(os.path.expanduser(cfg.out))
    if cfg.source.kind == "python" and python is None:
        python = python_source(cfg.source)
    listing = list_source(cfg.source, dataset)
    plan = make_plan(len(listing), cfg.seed, cfg.shard_size, cfg.augment.rounds)
    outside = sorted(k for k in cfg.rebuild or () if k >= plan.num_shards)
    if outside:
        raise ConfigError(f"rebuild names shard {outside[0]}, but the plan has {plan.num_shards} shards "
                          f"(0..{plan.num_shards - 1}); pass rebuild=[...] with indices in that range")
    return Job(cfg, out, listing, plan, OutputDir(out), python)


def _reuse(job: Job) -> tuple[ReportSet, float]:
    """The complete shards an earlier run left for this plan (checked by ``cfg.resume_check``)."""
    listing, plan, cfg = job.listing, job.plan, job.cfg
    log.info("listed %s in %s under %s; %s of %d; Pillow %s (libjpeg-turbo: %s), lmdb %s",
             plural(len(listing), "image"), plural(len(listing.classes), "class", "classes"), listing.root,
             plural(plan.num_shards, "shard"), plan.shard_size,
             PIL.__version__, features.check_feature("libjpeg_turbo"), lmdb.__version__)
    for w in listing.warnings:
        log.warning("%s", w)
    t = time.monotonic()   # the check: Ray tasks spread over a cluster's nodes, or driver threads
    ray_checks = dict(checker=check_shards_on_ray, object_checker=check_objects_on_ray) if _checks_on_ray(job) else {}
    reports, notes = job.output.complete_shards(plan, cfg.resume_check, cfg.rebuild or (), job.record_format, **ray_checks)
    if reports:
        log.info("kept %s from an earlier run (checked by %s in %.1f s); %d to build",
                 plural(len(reports), "complete shard"), cfg.resume_check, time.monotonic() - t, plan.num_shards - len(reports))
    for note in notes:
        log.warning("%s", note)
    return reports, (time.monotonic() - t) if len(reports) else 0.0   # timed only when it kept shards


def _checks_on_ray(job: Job) -> bool:   # a rerun's check, on a cluster (ray.address given)
    return (job.cfg.ray.address is not None and job.cfg.resume_check != "size"
            and job.output.has_plan() and not job.cfg.overwrite)


def _run(job: Job, reports: ReportSet) -> RunTimes:
    """Build every shard not in ``reports`` on Ray; each report is stamped with the plan and saved as it lands."""
    cfg, plan = job.cfg, job.plan
    todo = [k for k in range(plan.num_shards) if k not in reports]
    opts = WriteOptions(out=job.out, transform=cfg.transform, storage=cfg.storage, on_error=cfg.on_error,
                        scratch_dir=cfg.scratch_dir, augment=cfg.augment, seed=cfg.seed, python=job.python,
                        items=ItemTable.of(plan, job.listing) if todo else None)
    digest = plan.digest()

    def record(report: ShardReport) -> None:
        report = dataclasses.replace(report, plan_sha256=digest)
        job.output.save_report(report)
        reports.add(report)
        progress.add_stage_seconds(report.seconds)

    ray_s = 0.0
    with Progress(plan.num_samples, plan.num_shards, cfg.progress, cfg.log_interval_s) as progress:
        progress.reuse(reports.planned, len(reports))
        progress.skipped = len(reports.skipped)
        if todo:
            with ray_session(cfg.ray, cfg.scratch_dir) as ray_s:
                progress.restart_clock()
                failures, t = run_shards(_tasks(plan, job.listing, todo), opts, cfg.ray, progress, record), time.monotonic()
            log.info("timings: Ray start-up %.2f s, shards %.2f s, Ray shutdown %.2f s", ray_s, progress.elapsed(), time.monotonic() - t)
            if failures:
                first = failures[0]
                raise JobFailedError(
                    f"{plural(len(failures), 'shard')} failed (first: shard {first.index}: {first.message}); "
                    f"{len(reports)} of {plural(plan.num_shards, 'shard')} complete and kept: fix the cause and "
                    "rerun the same command to redo only the rest")
    return RunTimes(todo, ray_s, progress.elapsed(), progress.steady.rate())   # the bar's time: its final rate is the summary's


def _result(job: Job, reports: ReportSet, times: RunTimes, wall_s: float, check_s: float) -> ConvertResult:
    built = reports.of(times.built)
    built_images = sum(r.planned for r in built)
    return ConvertResult(
        out=job.out, source=job.listing.source_root(), images_written=reports.written,
        images_skipped=len(reports.skipped), shards=job.plan.num_shards, shards_built=len(built),
        shards_reused=len(reports) - len(built), bytes=reports.bytes, wall_s=wall_s, ray_startup_s=times.ray_startup_s,
        images_per_s=built_images / times.run_s if built and times.run_s > 0 else 0.0,
        stage_seconds=stage_seconds(built, STAGES), warnings=list(job.listing.warnings),
        passthrough=reports.passthrough, check_s=check_s, steady_images_per_s=times.steady_rate)


def _commit(job: Job, reports: ReportSet, result: ConvertResult) -> None:
    """Refuse an error rate over the limit; otherwise write the manifest, the job's commit record."""
    cfg, plan, listing = job.cfg, job.plan, job.listing
    skipped = result.images_skipped
    if plan.num_samples and skipped / plan.num_samples > cfg.max_error_rate:
        raise JobFailedError(
            f"{skipped} of {plan.num_samples} images could not be read ({skipped / plan.num_samples:.1%}), over "
            f"max_error_rate={cfg.max_error_rate}; see {job.out}/reports/*.json for the files and reasons; rerun "
            "with a higher max_error_rate to accept them, or fix the files and rerun with overwrite=true")
    all_stages = stage_seconds(reports, STAGES)   # every shard, earlier runs' too
    facts = DatasetFacts(
        classes=listing.classes, fields=_fields(cfg, reports.has_masks), shard_size=plan.shard_size,
        library_version=__version__, record_format=job.record_format, seed=cfg.seed, rounds=plan.rounds,
        source_kind=listing.kind, plan_sha256=plan.digest(), listing_sha256=listing.digest(),
        identity_sha256=identity_hash(cfg.output_identity()), config=dataclasses.asdict(cfg),
        class_counts=_class_counts(listing, plan.rounds, reports), warnings=listing.warnings)
    stats = {"images_written": result.images_written, "images_skipped": skipped, "bytes": result.bytes,
             "passthrough": result.passthrough, "stage_seconds": all_stages,
             "stage_shares": stage_fractions(all_stages),
             "last_run": {"wall_s": round(result.wall_s, 3), "ray_startup_s": round(result.ray_startup_s, 3),
                          "images_per_s": round(result.images_per_s, 2), "shards_built": result.shards_built,
                          "shards_reused": result.shards_reused}}
    manifest = build_manifest(facts, [r.entry for r in reports], reports.skipped, plan.num_samples, stats)
    job.output.save_manifest(manifest)


def convert(cfg: ConvertConfig, dataset: object | None = None) -> ConvertResult:
    """Run a conversion job to completion; raises before any work on a bad config or plan mismatch, or
    when another driver is writing the same ``out``.
    ``dataset``: an in-memory dataset object for ``source.kind=python`` instead of ``source.target``."""
    t0 = time.monotonic()
    job = _start(cfg, dataset)
    job.output.store.makedirs()
    with OutputLock(job.out):
        resuming = _checks_on_ray(job)   # before prepare writes the plan
        job.output.prepare(job.cfg, job.listing, job.plan)
        # Joined once for the check and the run (ray_session does not restart a session that is up).
        with ray_session(job.cfg.ray, job.cfg.scratch_dir) if resuming else contextlib.nullcontext():
            reports, check_s = _reuse(job)
            times = _run(job, reports)
        result = _result(job, reports, times, time.monotonic() - t0, check_s)
        _commit(job, reports, result)
    return result
