"""The output folder and its state between runs: saved plan, shard reports, completeness.

Layout::

    out/plan.json                  the saved plan: sources, labels, seed, settings (written first)
    out/shards/shard-000007.lmdb   one LMDB file per shard (renamed into place when complete); in Caffe
                                   Datum mode a directory holding data.mdb, as Caffe and DALI open it
    out/reports/shard-000007.json  the task's report, written when its shard completes
    out/manifest.json              the index, written last and only when every shard is complete

A rerun reuses the saved plan; if the source listing or an output-affecting
setting changed, it stops before any work and says what changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Iterable

from lmdbshard.write.config import ConvertConfig
from lmdbshard.errors import ConfigError, FormatVersionError, PlanMismatchError
from lmdbshard.format.record import (
    FORMAT_VERSION, MANIFEST_NAME, PARTIAL_SUFFIX, PLAN_NAME, REPORT_DIR, SHARD_DIR, lmdb_data_file, shard_filename,
)
from lmdbshard.write.listing import Listing
from lmdbshard.format.manifest import DATUM_FORMAT, RECORD_FORMAT
from lmdbshard.write.atomic import remove_quietly, write_json_atomic
from lmdbshard.write.plan import Plan
from lmdbshard.write.task import ShardReport
from lmdbshard.read.verify import ShardExpectation, check_shards


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass
class OutputDir:
    root: str

    @property
    def plan_path(self) -> str:
        return os.path.join(self.root, PLAN_NAME)

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.root, MANIFEST_NAME)

    def report_path(self, index: int) -> str:
        return os.path.join(self.root, REPORT_DIR, shard_filename(index).replace(".lmdb", ".json"))

    def shard_path(self, index: int) -> str:
        return os.path.join(self.root, SHARD_DIR, shard_filename(index))

    # ------------------------------------------------------------ plan
    def prepare(self, cfg: ConvertConfig, listing: Listing, plan: Plan) -> None:
        """Check a saved plan against this job (or refuse a foreign folder), then save the plan."""
        os.makedirs(self.root, exist_ok=True)
        if os.path.exists(self.plan_path):
            if cfg.overwrite:
                self.clear()
            else:
                self._check_saved_plan(cfg, listing, plan)
        else:
            ours = {PLAN_NAME, MANIFEST_NAME, SHARD_DIR, REPORT_DIR}
            foreign = sorted(n for n in os.listdir(self.root) if n not in ours and not n.startswith("."))
            if foreign:
                raise ConfigError(f"out {self.root!r} is not empty and holds no lmdbshard plan "
                                  f"(found {foreign[0]!r}); pass out= a new or empty directory")
            if cfg.overwrite:
                self.clear()
        os.makedirs(os.path.join(self.root, SHARD_DIR), exist_ok=True)
        os.makedirs(os.path.join(self.root, REPORT_DIR), exist_ok=True)
        self._remove_partials()
        if not os.path.exists(self.plan_path):
            write_json_atomic(self.plan_path, self._plan_document(cfg, listing, plan))

    def _plan_document(self, cfg: ConvertConfig, listing: Listing, plan: Plan) -> dict:
        identity = cfg.output_identity()
        return {
            "format_version": FORMAT_VERSION,
            "plan_sha256": plan.digest(),
            "listing_sha256": listing.digest(),
            "identity": identity,
            "identity_sha256": identity_hash(identity),
            "seed": plan.seed,
            "shard_size": plan.shard_size,
            "rounds": plan.rounds,
            "num_sources": plan.num_sources,
            "num_shards": plan.num_shards,
            "source_kind": listing.kind,
            "source_root": listing.source_root(),
            "classes": listing.classes,
            # [path, label] per source index ([path, label, mask] for paired sources); a python source
            # has no files: its items are target[0..num_sources-1]
            "sources": None if listing.kind == "python" else [
                [p, lbl, *([listing.mask_paths[i]] if listing.mask_paths else [])]
                for i, (p, lbl) in enumerate(zip(listing.paths, listing.labels))],
        }

    def load_plan_document(self) -> dict:
        with open(self.plan_path) as f:
            return json.load(f)

    def _check_saved_plan(self, cfg: ConvertConfig, listing: Listing, plan: Plan) -> None:
        saved = self.load_plan_document()
        if saved.get("format_version", 0) > FORMAT_VERSION:
            raise FormatVersionError(self.plan_path, saved["format_version"], FORMAT_VERSION)
        fix = f"rerun with overwrite=true to discard {self.root!r} and start fresh, or pass a new out="
        changed = [f"{k} changed from {saved['identity'].get(k)!r} to {v!r}"
                   for k, v in cfg.output_identity().items() if saved["identity"].get(k) != v]
        if changed:
            raise PlanMismatchError(f"{self.root!r} was converted with other settings: {'; '.join(changed)}; {fix}")
        if saved["listing_sha256"] != listing.digest():
            if saved.get("sources") is None or listing.kind == "python":
                raise PlanMismatchError(f"the python source changed since {self.root!r} was planned (its target, "
                                        f"arguments or length differ); {fix}")
            old = {s[0]: s[1] for s in saved["sources"]}
            new = dict(zip(listing.paths, listing.labels))
            added = sorted(set(new) - set(old))
            removed = sorted(set(old) - set(new))
            relabelled = sorted(p for p in set(old) & set(new) if old[p] != new[p])
            parts = [f"{len(v)} {what} (e.g. {v[0]!r})" for what, v in
                     (("added", added), ("removed", removed), ("relabelled", relabelled)) if v]
            raise PlanMismatchError(f"the source listing changed since {self.root!r} was planned: "
                                    f"{', '.join(parts) or 'order or classes differ'}; {fix}")
        root = listing.source_root()
        if saved.get("source_root") not in (None, root):
            raise PlanMismatchError(f"source.root changed from {saved['source_root']!r} to {root!r} since "
                                    f"{self.root!r} was planned, and its files may differ; pass "
                                    f"source.root={saved['source_root']} to finish that job, or {fix}")
        if saved["plan_sha256"] != plan.digest():
            raise PlanMismatchError(f"the saved plan in {self.plan_path!r} differs from the plan this version "
                                    f"computes for the same inputs; {fix}")

    def clear(self) -> None:
        """Remove what a conversion wrote here (and nothing else)."""
        for name in (MANIFEST_NAME, PLAN_NAME):
            remove_quietly(os.path.join(self.root, name))
        for name in (SHARD_DIR, REPORT_DIR):
            shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def _remove_partials(self) -> None:
        for folder in (SHARD_DIR, REPORT_DIR, "."):
            path = os.path.join(self.root, folder)
            for name in os.listdir(path):
                if name.endswith(PARTIAL_SUFFIX):
                    if os.path.isdir(os.path.join(path, name)):   # a shard directory being published
                        shutil.rmtree(os.path.join(path, name))
                    else:
                        os.remove(os.path.join(path, name))

    # ------------------------------------------------------------ reports
    def save_report(self, report: ShardReport) -> None:
        write_json_atomic(self.report_path(report.index), dataclasses.asdict(report))

    def saved_report(self, index: int, planned: int, record_format: str = RECORD_FORMAT) -> dict | None:
        """The saved report of shard ``index`` if its LMDB is there, in the layout of ``record_format``
        (a directory in Caffe Datum mode, a file otherwise), with the reported size."""
        path = self.shard_path(index)
        if os.path.isdir(path) != (record_format == DATUM_FORMAT):
            return None
        try:
            with open(self.report_path(index)) as f:
                report = json.load(f)
            size = os.path.getsize(lmdb_data_file(path))
        except (OSError, ValueError):
            return None
        if report.get("index") != index or report.get("planned") != planned or report.get("bytes") != size:
            return None
        if report.get("label_file"):
            try:
                label_path = os.path.join(self.root, report["label_file"])
                if os.path.getsize(lmdb_data_file(label_path)) != report.get("label_bytes"):
                    return None
            except OSError:
                return None
        return report

    def complete_shards(self, plan: Plan, check: str = "checksum", rebuild: Iterable[int] = (),
                        record_format: str = RECORD_FORMAT) -> tuple[dict[int, dict], list[str]]:
        """Reports of the shards a rerun may keep, and why others are redone.

        A shard is kept when its report and file are there and, unless ``check`` is
        ``size``, it passes ``verify.check_shard`` (``full`` also decodes every record).
        Shards in ``rebuild`` are never kept.
        """
        rebuild = set(rebuild)
        kept = {}
        for k in range(plan.num_shards):
            start, stop = plan.shard_range(k)
            report = None if k in rebuild else self.saved_report(k, stop - start, record_format)
            if report is not None:
                kept[k] = report
        notes = [f"shard {k} is rebuilt on request (rebuild=...)" for k in sorted(rebuild)]
        if check != "size" and kept:
            expectations = [ShardExpectation(k, self.shard_path(k), r["first_key"], r["count"], r["sha256"],
                                             record_format) for k, r in kept.items()]
            expectations += [ShardExpectation(k, os.path.join(self.root, r["label_file"]), r["first_key"], r["count"],
                                              r["label_sha256"], record_format)
                             for k, r in kept.items() if r.get("label_file")]
            _, problems = check_shards(expectations, decode=check == "full")
            for p in problems:
                if kept.pop(p.shard, None) is not None:
                    notes.append(f"shard {p.shard} failed its {check} check and is rebuilt: {p.message}")
        return kept, notes
