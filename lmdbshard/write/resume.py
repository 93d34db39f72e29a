"""The output folder and its state between runs: saved plan, shard reports, completeness.

Layout::

    out/plan.json                  the saved plan: seed, settings, digests, classes (written first)
    out/listing.npz                the saved listing: source paths and labels, compact (stored_listing.py)
    out/shards/shard-000007.lmdb   one LMDB file per shard (renamed into place when complete); in Caffe
                                   Datum mode a directory holding data.mdb, as Caffe and DALI open it
    out/reports/shard-000007.json  the task's report, written when its shard completes
    out/manifest.json              the index, written last and only when every shard is complete
    out/convert.lock               held by the driver writing the folder (lock.py)

A rerun reuses the saved plan; if the source listing or an output-affecting
setting changed, it stops before any work and says what changed. A shard is
reused only when its report names this plan (``plan_sha256``). lmdbshard deletes
only what its own records name (``owned``), and refuses a folder holding anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from lmdbshard.write.config import ConvertConfig
from lmdbshard.errors import ConfigError, FormatError, FormatVersionError, PlanMismatchError
from lmdbshard.format import names
from lmdbshard.format.datum import label_filename
from lmdbshard.format.record import (
    MANIFEST_NAME, PARTIAL_SUFFIX, PLAN_NAME, REPORT_DIR, SHARD_DIR, lmdb_data_file, shard_filename,
)
from lmdbshard.write.listing import Listing
from lmdbshard.write.stored_listing import LISTING_NAME, changes, load_listing, save_listing
from lmdbshard.format.manifest import DATUM_FORMAT, RECORD_FORMAT
from lmdbshard.write.atomic import write_json_atomic
from lmdbshard.write.lock import LOCK_NAME
from lmdbshard.write.plan import Plan
from lmdbshard.write.report import ReportSet, ShardReport
from lmdbshard.read.verify import check_shards, expectations


#: ``plan.json``'s ``format_version``. 2: the listing is in ``listing.npz``; 1 (before): inline ``sources``.
PLAN_VERSION = 2


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass
class OutputDir:
    root: str
    _plan: Optional[dict] = field(default=None, init=False, repr=False, compare=False)

    @property
    def plan_path(self) -> str:
        return os.path.join(self.root, PLAN_NAME)

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.root, MANIFEST_NAME)

    def report_path(self, index: int) -> str:
        return os.path.join(self.root, REPORT_DIR, report_filename(index))

    def shard_path(self, index: int) -> str:
        return os.path.join(self.root, SHARD_DIR, shard_filename(index))

    # ------------------------------------------------------------ plan
    def prepare(self, cfg: ConvertConfig, listing: Listing, plan: Plan) -> None:
        """Check a saved plan against this job (or clear it with overwrite=true), then save the plan.

        Refuses a folder holding anything lmdbshard's own records do not name, before deleting anything."""
        foreign = self.foreign_entry()
        if foreign is not None:
            raise ConfigError(f"out {self.root!r} holds {foreign!r}, which lmdbshard did not write; move it "
                              "away or pass out= a new or empty directory (lmdbshard never deletes files it "
                              "did not write)")
        if cfg.overwrite:
            self.clear()
        elif os.path.exists(self.plan_path):
            self._check_saved_plan(cfg, listing, plan)
        os.makedirs(os.path.join(self.root, SHARD_DIR), exist_ok=True)
        os.makedirs(os.path.join(self.root, REPORT_DIR), exist_ok=True)
        self._remove_partials()
        if not os.path.exists(self.plan_path):
            if listing.kind != "python":   # the listing first: a plan.json present means both are
                save_listing(self.listing_path, listing.paths, listing.labels, listing.mask_paths)
            write_json_atomic(self.plan_path, self._plan_document(cfg, listing, plan))

    @property
    def listing_path(self) -> str:
        return os.path.join(self.root, LISTING_NAME)

    def _plan_document(self, cfg: ConvertConfig, listing: Listing, plan: Plan) -> dict:
        identity = cfg.output_identity()
        return {   # file names that are not UTF-8 are written with U+FFFD (write_json_atomic, names.py)
            "format_version": PLAN_VERSION,
            "plan_sha256": plan.digest(),
            "listing_sha256": listing.digest(),
            "identity": identity,
            "identity_sha256": identity_hash(identity),
            "seed": plan.seed, "shard_size": plan.shard_size, "rounds": plan.rounds,
            "num_sources": plan.num_sources, "num_shards": plan.num_shards,
            "source_kind": listing.kind, "source_root": listing.source_root(), "classes": listing.classes,
            # the sources: listing.npz beside this file; a python source has none (dataset[0..num_sources-1])
            "listing": None if listing.kind == "python" else LISTING_NAME,
        }

    def source_paths(self) -> list[str]:
        """The saved plan's source paths by source index, exactly as listed (a python source: none)."""
        if self.load_plan_document().get("listing") is None:
            return []
        return list(load_listing(self.listing_path).paths)

    def load_plan_document(self) -> dict:
        """The saved plan.json, read once (it holds one entry per source: large for big datasets)."""
        if self._plan is None:
            with open(self.plan_path, encoding="utf-8") as f:
                self._plan = json.load(f)
        return self._plan

    def _check_saved_plan(self, cfg: ConvertConfig, listing: Listing, plan: Plan) -> None:
        saved = self.load_plan_document()
        if saved.get("format_version", 0) > PLAN_VERSION:
            raise FormatVersionError(self.plan_path, saved["format_version"], PLAN_VERSION)
        fix = f"rerun with overwrite=true to discard {self.root!r} and start fresh, or pass a new out="
        if saved.get("format_version", 0) < PLAN_VERSION or "sources" in saved:
            raise PlanMismatchError(f"{self.plan_path!r} is a plan of an earlier lmdbshard (plan format "
                                    f"{saved.get('format_version', 0)}, sources inline; this version writes "
                                    f"format {PLAN_VERSION}); finish that job with the version that started "
                                    f"it, or {fix}")
        identity = names.strict(cfg.output_identity())
        changed = [f"{k} changed from {saved['identity'].get(k)!r} to {v!r}"
                   for k, v in identity.items() if saved["identity"].get(k) != v]
        if changed:
            raise PlanMismatchError(f"{self.root!r} was converted with other settings: {'; '.join(changed)}; {fix}")
        if saved["listing_sha256"] != listing.digest():
            if saved.get("listing") is None or listing.kind == "python":
                raise PlanMismatchError(f"the python source changed since {self.root!r} was planned (its target, "
                                        f"arguments or length differ); {fix}")
            # only now: a rerun of an unchanged listing never reads the saved one
            raise PlanMismatchError(f"the source listing changed since {self.root!r} was planned: "
                                    f"{changes(load_listing(self.listing_path), listing.paths, listing.labels)}; {fix}")
        root = names.display(listing.source_root())
        if saved.get("source_root") not in (None, root):
            raise PlanMismatchError(f"source.root changed from {saved['source_root']!r} to {root!r} since "
                                    f"{self.root!r} was planned, and its files may differ; pass "
                                    f"source.root={saved['source_root']} to finish that job, or {fix}")
        if saved["plan_sha256"] != plan.digest():
            raise PlanMismatchError(f"the saved plan in {self.plan_path!r} differs from the plan this version "
                                    f"computes for the same inputs; {fix}")

    # ------------------------------------------------------------ what is ours
    def owned(self) -> set[str]:
        """Paths (relative to the root, '/' separators) that lmdbshard's records here name: the plan, the
        manifest, the lock, and the reports and shard files of every shard the plan or a record names."""
        own = {PLAN_NAME, LISTING_NAME, MANIFEST_NAME, LOCK_NAME, SHARD_DIR, REPORT_DIR}
        indices: set[int] = set()
        files: set[str] = set()
        for load in (self.load_plan_document, self._load_manifest_document):
            try:
                doc = load()
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and type(doc.get("num_shards")) is int:
                indices.update(range(doc["num_shards"]))
            for entry in doc.get("shards", []) if isinstance(doc, dict) else []:
                if isinstance(entry, dict) and type(entry.get("index")) is int:
                    indices.add(entry["index"])
                    files.update(f for f in (entry.get("file"), entry.get("label_file")) if isinstance(f, str))
        for k in indices:
            own.add(f"{REPORT_DIR}/{report_filename(k)}")
            own.add(f"{SHARD_DIR}/{shard_filename(k)}")
            own.add(f"{SHARD_DIR}/{label_filename(shard_filename(k))}")
            try:
                report = ShardReport.load(self.report_path(k))
            except (OSError, FormatError):
                continue
            files.update(f for f in (report.entry.file, report.entry.label_file) if f)
        return own | {os.path.normpath(f).replace(os.sep, "/") for f in files}

    def _load_manifest_document(self) -> Any:
        with open(self.manifest_path, encoding="utf-8") as f:
            return json.load(f)

    def _entries(self) -> list[str]:
        """Everything in the root and in its shards/ and reports/ folders, relative, '/' separators."""
        found = []
        for folder in ("", SHARD_DIR, REPORT_DIR):
            path = os.path.join(self.root, folder)
            if folder and not os.path.isdir(path) or not os.path.exists(path):
                continue
            found += [f"{folder}/{n}" if folder else n for n in sorted(os.listdir(path))]
        return found

    @staticmethod
    def _scratchy(rel: str) -> bool:
        """Leftovers of an interrupted write: ``*.partial`` files and moved-aside stale locks."""
        name = rel.rsplit("/", 1)[-1]
        return name.endswith(PARTIAL_SUFFIX) or name.startswith(f"{LOCK_NAME}.stale.")

    def foreign_entry(self) -> str | None:
        """The first path here that lmdbshard's records do not name, or None."""
        if not os.path.isdir(self.root):
            return None
        own = self.owned()
        for rel in self._entries():
            if rel not in own and not self._scratchy(rel):
                return rel
        return None

    def clear(self) -> None:
        """Remove what lmdbshard's records here name (and ``*.partial``), keeping our lock; nothing else."""
        own = self.owned() - {LOCK_NAME, SHARD_DIR, REPORT_DIR}
        for rel in self._entries():
            if rel in own or self._scratchy(rel):
                _remove(os.path.join(self.root, rel))
        self._plan = None

    def _remove_partials(self) -> None:
        for rel in self._entries():
            if self._scratchy(rel):
                _remove(os.path.join(self.root, rel))

    # ------------------------------------------------------------ reports
    def save_report(self, report: ShardReport) -> None:
        write_json_atomic(self.report_path(report.index), report.to_json())

    def saved_report(self, index: int, planned: int, plan_sha256: str,
                     record_format: str = RECORD_FORMAT) -> ShardReport | None:
        """The saved report of shard ``index`` if it was built for this plan and its files have the reported
        sizes, in the layout of ``record_format`` (a directory in Caffe Datum mode, a file otherwise)."""
        if os.path.isdir(self.shard_path(index)) != (record_format == DATUM_FORMAT):
            return None
        try:
            report = ShardReport.load(self.report_path(index))
            entry = report.entry
            if (entry.index, report.planned, report.plan_sha256) != (index, planned, plan_sha256):
                return None
            if _size(os.path.join(self.root, entry.file)) != entry.bytes:
                return None
            if entry.label_file and _size(os.path.join(self.root, entry.label_file)) != entry.label_bytes:
                return None
        except (OSError, FormatError):
            return None
        return report

    def complete_shards(self, plan: Plan, check: str = "checksum", rebuild: Iterable[int] = (),
                        record_format: str = RECORD_FORMAT, checker=check_shards) -> tuple[ReportSet, list[str]]:
        """Reports of the shards a rerun may keep, and why others are redone.

        A shard is kept when its report names this plan and its file is there and, unless ``check`` is
        ``size``, it passes ``verify.check_shard``: ``checksum`` hashes the file against the report's
        ``file_sha256`` (walks the records if an older report lacks it); ``full`` decodes every record.
        Never shards in ``rebuild``. ``checker`` (``verify.check_shards``'s signature): driver threads, or Ray.
        """
        rebuild = set(rebuild)
        digest = plan.digest()
        found: dict[int, ShardReport] = {}
        for k in range(plan.num_shards):
            start, stop = plan.shard_range(k)
            report = None if k in rebuild else self.saved_report(k, stop - start, digest, record_format)
            if report is not None:
                found[k] = report
        notes = [f"shard {k} is rebuilt on request (rebuild=...)" for k in sorted(rebuild)]
        if check != "size" and found:
            entries = [r.entry for r in found.values()]
            shards, labels = expectations(self.root, entries, record_format, walk=check == "full")
            _, problems = checker(shards + labels, decode=check == "full")
            for p in problems:
                if found.pop(p.shard, None) is not None:
                    notes.append(f"shard {p.shard} failed its {check} check and is rebuilt: {p.message}")
        kept = ReportSet()
        for report in found.values():
            kept.add(report)
        return kept, notes


def report_filename(index: int) -> str:
    return shard_filename(index).replace(".lmdb", ".json")


def _size(path: str) -> int:
    """Bytes of a shard's LMDB data: the file, or ``data.mdb`` of a shard directory (a ``lock.mdb`` that
    Caffe may create beside it does not count)."""
    return os.path.getsize(lmdb_data_file(path))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
