"""``convert``: a source folder in, a globally shuffled sharded LMDB dataset out.

The coordinator: validate the config, list the source, make the plan, check the
output folder (resume or refuse), run the missing shards on Ray, record each
report as it lands, and commit the manifest only when every shard is complete.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Iterator

import PIL
import lmdb
from PIL import features

from . import __version__
from .config import ConvertConfig
from .errors import ConfigError, JobFailedError
from .listing import Listing, list_imagefolder
from .atomic import write_json_atomic
from .manifest import build_manifest, class_counts
from .output import OutputDir, identity_hash
from .plan import Plan, make_plan
from .progress import Progress, stage_fractions, stage_shares
from .runner import ray_session, run_shards
from .shard import STAGES, ShardItem, ShardTask, WriteOptions

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
            f"  bytes           {self.bytes} ({mb:.1f} MB)",
            f"  wall time       {self.wall_s:.1f} s (of which Ray start-up {self.ray_startup_s:.1f} s)",
            f"  throughput      {self.images_per_s:.1f} images/s (built shards, Ray start-up excluded)",
            f"  stage time      {self.stage_shares()}",
            f"  output          {self.out}",
        ]
        lines += [f"  warning         {w}" for w in self.warnings[:10]]
        if len(self.warnings) > 10:
            lines.append(f"  warning         ... and {len(self.warnings) - 10} more in manifest.json")
        return "\n".join(lines)


def _tasks(plan: Plan, listing: Listing, todo: list[int]) -> Iterator[ShardTask]:
    """Shard tasks built one at a time, so the driver never holds every item at once."""
    for k in todo:
        sources, rounds = plan.shard_items(k)
        items = tuple(ShardItem(int(s), int(r), listing.paths[s], listing.labels[s])
                      for s, r in zip(sources.tolist(), rounds.tolist()))
        yield ShardTask(k, plan.shard_range(k)[0], os.path.abspath(listing.root), items)


def _stage_seconds(reports) -> dict[str, float]:
    """Seconds per stage summed over shard reports (over every worker that built them)."""
    reports = list(reports)
    return {s: round(sum(r["seconds"].get(s, 0.0) for r in reports), 3) for s in STAGES}


def convert(cfg: ConvertConfig) -> ConvertResult:
    """Run a conversion job to completion; raises before any work on a bad config or plan mismatch."""
    t0 = time.monotonic()
    cfg.validate()
    out = os.path.abspath(os.path.expanduser(cfg.out))
    listing = list_imagefolder(os.path.expanduser(cfg.source.root), cfg.source.extensions)
    plan = make_plan(len(listing), cfg.seed, cfg.shard_size)
    outside = sorted(k for k in cfg.rebuild or () if k >= plan.num_shards)
    if outside:
        raise ConfigError(f"rebuild names shard {outside[0]}, but the plan has {plan.num_shards} shards "
                          f"(0..{plan.num_shards - 1}); pass rebuild=[...] with indices in that range")
    output = OutputDir(out)
    output.prepare(cfg, listing, plan)
    log.info("listed %d images in %d classes under %s; %d shards of %d; Pillow %s (libjpeg-turbo: %s), lmdb %s",
             len(listing), len(listing.classes), listing.root, plan.num_shards, plan.shard_size,
             PIL.__version__, features.check_feature("libjpeg_turbo"), lmdb.__version__)
    for w in listing.warnings:
        log.warning("%s", w)

    t_check = time.monotonic()
    reports, notes = output.complete_shards(plan, cfg.resume_check, cfg.rebuild or ())
    todo = [k for k in range(plan.num_shards) if k not in reports]
    reused = len(reports)
    if reused:
        log.info("kept %d complete shards from an earlier run (checked by %s in %.1f s); %d to build",
                 reused, cfg.resume_check, time.monotonic() - t_check, len(todo))
    for note in notes:
        log.warning("%s", note)

    opts = WriteOptions(out=out, transform=cfg.transform, storage=cfg.storage, on_error=cfg.on_error,
                        scratch_dir=cfg.scratch_dir)

    def record(report) -> None:
        output.save_report(report)
        reports[report.index] = dataclasses.asdict(report)
        progress.add_stage_seconds(report.seconds)

    ray_s = 0.0
    t_run = time.monotonic()
    with Progress(plan.num_samples, plan.num_shards, cfg.progress, cfg.log_interval_s) as progress:
        progress.reuse(sum(r["planned"] for r in reports.values()), reused)
        progress.skipped = sum(len(r["errors"]) for r in reports.values())
        if todo:
            with ray_session(cfg.ray) as ray_s:
                t_run = time.monotonic()
                progress.restart_clock()
                failures = run_shards(_tasks(plan, listing, todo), opts, cfg.ray, progress, record)
            if failures:
                first = failures[0]
                raise JobFailedError(
                    f"{len(failures)} shard(s) failed (first: shard {first.index}: {first.message}); "
                    f"{len(reports)} of {plan.num_shards} shards are complete and kept: fix the cause and "
                    "rerun the same command to redo only the rest")
    run_s = time.monotonic() - t_run

    built = [reports[k] for k in todo]
    written = sum(r["count"] for r in reports.values())
    skipped = sum(len(r["errors"]) for r in reports.values())
    stage_seconds = _stage_seconds(built)
    built_images = sum(r["planned"] for r in built)
    wall = time.monotonic() - t0
    result = ConvertResult(
        out=out, source=os.path.abspath(listing.root), images_written=written, images_skipped=skipped,
        shards=plan.num_shards, shards_built=len(built), shards_reused=reused,
        bytes=sum(r["bytes"] for r in reports.values()), wall_s=wall, ray_startup_s=ray_s,
        images_per_s=built_images / run_s if built and run_s > 0 else 0.0,
        stage_seconds=stage_seconds, warnings=list(listing.warnings))

    if plan.num_samples and skipped / plan.num_samples > cfg.max_error_rate:
        raise JobFailedError(
            f"{skipped} of {plan.num_samples} images could not be read ({skipped / plan.num_samples:.1%}), over "
            f"max_error_rate={cfg.max_error_rate}; see {out}/reports/*.json for the files and reasons; rerun "
            "with a higher max_error_rate to accept them, or fix the files and rerun with overwrite=true")

    all_stages = _stage_seconds(reports.values())   # every shard, earlier runs' too
    config = dataclasses.asdict(cfg)
    identity = cfg.output_identity()
    manifest = build_manifest(
        config=config, identity_hash=identity_hash(identity), seed=cfg.seed, plan_hash=plan.digest(),
        listing_hash=listing.digest(), shard_size=plan.shard_size, classes=listing.classes,
        class_counts=class_counts(listing.labels, len(listing.classes), plan.rounds, reports.values()),
        fields=[{"name": "image", "encoding": cfg.storage.encoding, "dtype": "uint8", "layout": "HWC"}],
        reports=list(reports.values()), warnings=listing.warnings, library_version=__version__,
        stats={"images_written": written, "images_skipped": skipped, "bytes": result.bytes,
               "stage_seconds": all_stages, "stage_shares": stage_fractions(all_stages),
               "last_run": {"wall_s": round(wall, 3), "ray_startup_s": round(ray_s, 3),
                            "images_per_s": round(result.images_per_s, 2), "shards_built": len(built),
                            "shards_reused": reused}})
    write_json_atomic(output.manifest_path, manifest)
    return result
