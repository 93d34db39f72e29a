"""``convert``: a source folder in, a globally shuffled sharded LMDB dataset out.

The coordinator: validate the config, list the source, make the plan, check the
output folder (resume or refuse), run the missing shards on Ray, record each
report as it lands, and commit the manifest only when every shard is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Iterator

import PIL
import lmdb
from PIL import features

from lmdbshard import __version__
from lmdbshard.write.config import ConvertConfig
from lmdbshard.errors import ConfigError, JobFailedError
from lmdbshard.write.listing import Listing
from lmdbshard.write.atomic import write_json_atomic
from lmdbshard.format.manifest import DATUM_FORMAT, RECORD_FORMAT, build_manifest, class_counts
from lmdbshard.write.resume import OutputDir, identity_hash
from lmdbshard.write.plan import Plan, make_plan
from lmdbshard.write.progress import Progress, stage_fractions, stage_shares
from lmdbshard.write.runner import pickle_for_workers, ray_session, run_shards
from lmdbshard.write.task import STAGES, ShardItem, ShardTask, WriteOptions
from lmdbshard.write.sources import list_source
from lmdbshard.write.sources.python import python_source

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
            f"  throughput      {self.images_per_s:.1f} images/s (built shards, Ray start-up excluded)"
            if self.shards_built else "  throughput      n/a (every shard was reused)",
            f"  stage time      {self.stage_shares()}",
            *([f"  passthrough     {self.passthrough} of {self.images_written} stored as their source file's bytes "
               "(they already fit; the rest were re-encoded)"] if self.passthrough else []),
            f"  output          {self.out}",
        ]
        lines += [f"  warning         {w}" for w in self.warnings[:10]]
        if len(self.warnings) > 10:
            lines.append(f"  warning         ... and {len(self.warnings) - 10} more in manifest.json")
        return "\n".join(lines)


def _tasks(plan: Plan, listing: Listing, todo: list[int]) -> Iterator[ShardTask]:
    """Shard tasks built one at a time, so the driver never holds every item at once."""
    masks = listing.mask_paths
    root = listing.source_root()
    for k in todo:
        sources, rounds = plan.shard_items(k)
        items = tuple(ShardItem(s, r, listing.paths[s], listing.labels[s], masks[s] if masks else None)
                      for s, r in zip(sources.tolist(), rounds.tolist()))
        yield ShardTask(k, plan.shard_range(k)[0], root, items)


def _fields(cfg: ConvertConfig, reports) -> list[dict]:
    """The manifest's ``fields``: what every record holds."""
    st = cfg.storage
    has_mask = any(r.get("masks", 0) for r in reports)
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


def _record_format(cfg: ConvertConfig) -> str:
    return DATUM_FORMAT if cfg.storage.encoding == "caffe_datum" else RECORD_FORMAT


def _class_counts(listing: Listing, rounds: int, reports: list[dict]) -> list[int]:
    """Records per class; python sources learn their labels in the tasks, so their reports count them."""
    if listing.kind != "python":
        return class_counts(listing.labels, len(listing.classes), rounds, reports)
    counts = [0] * len(listing.classes)
    for r in reports:
        for label, n in r.get("label_counts", {}).items():
            if 0 <= int(label) < len(counts):
                counts[int(label)] += n
    return counts


def _stage_seconds(reports) -> dict[str, float]:
    """Seconds per stage summed over shard reports (over every worker that built them)."""
    reports = list(reports)
    return {s: round(sum(r["seconds"].get(s, 0.0) for r in reports), 3) for s in STAGES}


def convert(cfg: ConvertConfig, dataset: object | None = None) -> ConvertResult:
    """Run a conversion job to completion; raises before any work on a bad config or plan mismatch.
    ``dataset``: an in-memory dataset object for ``source.kind=python`` instead of ``source.target``."""
    t0 = time.monotonic()
    python = None
    if dataset is not None:
        if cfg.source.kind != "python" or cfg.source.target not in (None, "", "???"):
            raise ConfigError("a dataset object needs source.kind=python and no source.target; "
                              "pass one or the other")
        python = python_source(cfg.source, dataset, dumps=pickle_for_workers)
        # Named by its pickle's hash, so that a rerun with other contents (say, another split) is refused.
        name = (f"<object {type(dataset).__module__}.{type(dataset).__qualname__} "
                f"sha256:{hashlib.sha256(python.pickled).hexdigest()[:16]}>")
        cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, target=name))
    cfg.validate()
    out = os.path.abspath(os.path.expanduser(cfg.out))
    if cfg.source.kind == "python" and python is None:
        python = python_source(cfg.source)
    listing = list_source(cfg.source, dataset)
    plan = make_plan(len(listing), cfg.seed, cfg.shard_size, cfg.augment.rounds)
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
    reports, notes = output.complete_shards(plan, cfg.resume_check, cfg.rebuild or (), _record_format(cfg))
    todo = [k for k in range(plan.num_shards) if k not in reports]
    reused = len(reports)
    if reused:
        log.info("kept %d complete shards from an earlier run (checked by %s in %.1f s); %d to build",
                 reused, cfg.resume_check, time.monotonic() - t_check, len(todo))
    for note in notes:
        log.warning("%s", note)

    opts = WriteOptions(out=out, transform=cfg.transform, storage=cfg.storage, on_error=cfg.on_error,
                        scratch_dir=cfg.scratch_dir, augment=cfg.augment, seed=cfg.seed, python=python)

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
    passthrough = sum(r.get("passthrough", 0) for r in reports.values())
    wall = time.monotonic() - t0
    result = ConvertResult(
        out=out, source=listing.source_root(), images_written=written, images_skipped=skipped,
        shards=plan.num_shards, shards_built=len(built), shards_reused=reused,
        bytes=sum(r["bytes"] for r in reports.values()), wall_s=wall, ray_startup_s=ray_s,
        images_per_s=built_images / run_s if built and run_s > 0 else 0.0,
        stage_seconds=stage_seconds, warnings=list(listing.warnings), passthrough=passthrough)

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
        class_counts=_class_counts(listing, plan.rounds, list(reports.values())),
        fields=_fields(cfg, reports.values()), reports=list(reports.values()), warnings=listing.warnings,
        library_version=__version__, rounds=plan.rounds, source_kind=listing.kind,
        record_format=_record_format(cfg),
        stats={"images_written": written, "images_skipped": skipped, "bytes": result.bytes,
               "passthrough": passthrough,
               "stage_seconds": all_stages, "stage_shares": stage_fractions(all_stages),
               "last_run": {"wall_s": round(wall, 3), "ray_startup_s": round(ray_s, 3),
                            "images_per_s": round(result.images_per_s, 2), "shards_built": len(built),
                            "shards_reused": reused}})
    write_json_atomic(output.manifest_path, manifest)
    return result
