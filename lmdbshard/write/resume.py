"""The output (a folder, or an object-store prefix) and its state between runs: saved plan, shard
reports, completeness.

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
only what its own records name (ownership.py), and refuses a folder holding anything else.

On an object store (``out=s3://bucket/prefix``, store.py) the layout is the same, with object keys for
paths. There is no rename: a shard object is uploaded whole, then its report is written, and the
report is the commit mark. A shard counts as complete when its report names this plan and its object
has the reported size and (``resume_check`` other than ``size``) bytes that hash to the report's
``file_sha256`` (object_check.py).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import suppress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from lmdbshard.write.config import ConvertConfig
from lmdbshard.errors import ConfigError, FormatError, FormatVersionError, PlanMismatchError
from lmdbshard.format import names
from lmdbshard.format.record import MANIFEST_NAME, PLAN_NAME, REPORT_DIR, SHARD_DIR, shard_filename
from lmdbshard.write.listing import Listing
from lmdbshard.write.stored_listing import LISTING_NAME, changes, load_listing, save_listing
from lmdbshard.format.manifest import DATUM_FORMAT, RECORD_FORMAT
from lmdbshard.write.atomic import json_bytes
from lmdbshard.write import ownership
from lmdbshard.write.ownership import LOOKUP_THREADS, load_report, report_filename, report_rel
from lmdbshard.write.plan import Plan
from lmdbshard.write.report import ReportSet, ShardReport
from lmdbshard.write.store import output_store
from lmdbshard.write.object_check import check_objects
from lmdbshard.read.verify import check_shards, expectations

__all__ = ["OutputDir", "PLAN_VERSION", "identity_hash", "report_filename"]


#: ``plan.json``'s ``format_version``. 2: the listing is in ``listing.npz``; 1 (before): inline ``sources``.
PLAN_VERSION = 2


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass
class OutputDir:
    """An output (a local folder, or an ``s3://``/``gs://`` prefix) and its state between runs."""

    root: str
    _plan: Optional[dict] = field(default=None, init=False, repr=False, compare=False)
    # prepare's look at the output, for the complete_shards that follows: report names, reports read
    _listed_reports: Optional[set[str]] = field(default=None, init=False, repr=False, compare=False)
    _loaded: dict[int, ShardReport] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.store = output_store(self.root)

    @property
    def plan_path(self) -> str:
        return self.store.path(PLAN_NAME)

    @property
    def manifest_path(self) -> str:
        return self.store.path(MANIFEST_NAME)

    @property
    def listing_path(self) -> str:
        return self.store.path(LISTING_NAME)

    def report_path(self, index: int) -> str:
        return self.store.path(report_rel(index))

    def shard_path(self, index: int) -> str:
        return self.store.path(f"{SHARD_DIR}/{shard_filename(index)}")

    def has_plan(self) -> bool:
        return self.store.size(PLAN_NAME) is not None

    # ------------------------------------------------------------ plan
    def prepare(self, cfg: ConvertConfig, listing: Listing, plan: Plan) -> None:
        """Check a saved plan against this job (or clear it with overwrite=true), then save the plan.

        Refuses a folder holding anything lmdbshard's own records do not name, before deleting anything.
        What is there is listed once (on an object store, one request for a new output): the later
        steps here and ``complete_shards`` work from that listing, which nobody else changes while
        this driver holds the lock."""
        found = ownership.entries(self.store)
        if PLAN_NAME in found:
            with suppress(OSError, ValueError):   # read once, for the ownership check and the plan check
                self.load_plan_document()
        foreign = ownership.foreign_entry(self.store, self._plan, found, self._loaded)
        if foreign is not None:
            raise ConfigError(f"out {self.root!r} holds {foreign!r}, which lmdbshard did not write; move it "
                              "away or pass out= a new or empty directory (lmdbshard never deletes files it "
                              "did not write)")
        had_plan = PLAN_NAME in found and (self._plan is not None or self.has_plan())
        if cfg.overwrite:
            self.clear(found)
            found, had_plan = [], False
            self._loaded.clear()
        elif had_plan:
            self._check_saved_plan(cfg, listing, plan)
        self.store.makedirs(SHARD_DIR)
        self.store.makedirs(REPORT_DIR)
        ownership.remove_leftovers(self.store, found)
        self._listed_reports = ownership.reports_in(found)
        if not had_plan:
            if listing.kind != "python":   # the listing first: a plan.json present means both are
                self.store.write_file(LISTING_NAME, lambda path: save_listing(
                    path, listing.paths, listing.labels, listing.mask_paths))
            self.store.write_atomic(PLAN_NAME, json_bytes(self._plan_document(cfg, listing, plan)))

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
        with self.store.local_copy(LISTING_NAME) as path:
            return list(load_listing(path).paths)

    def load_plan_document(self) -> dict:
        """The saved plan.json, read once (it holds one entry per source: large for big datasets)."""
        if self._plan is None:
            self._plan = json.loads(self.store.read_bytes(PLAN_NAME))
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
            with self.store.local_copy(LISTING_NAME) as path:
                what = changes(load_listing(path), listing.paths, listing.labels)
            raise PlanMismatchError(f"the source listing changed since {self.root!r} was planned: {what}; {fix}")
        root = names.display(listing.source_root())
        if saved.get("source_root") not in (None, root):
            raise PlanMismatchError(f"source.root changed from {saved['source_root']!r} to {root!r} since "
                                    f"{self.root!r} was planned, and its files may differ; pass "
                                    f"source.root={saved['source_root']} to finish that job, or {fix}")
        if saved["plan_sha256"] != plan.digest():
            raise PlanMismatchError(f"the saved plan in {self.plan_path!r} differs from the plan this version "
                                    f"computes for the same inputs; {fix}")

    # ------------------------------------------------------------ what is ours (ownership.py)
    def clear(self, found: Optional[list[str]] = None) -> None:
        """Remove what lmdbshard's records here name (and ``*.partial``), keeping our lock; nothing else."""
        ownership.clear(self.store, self._plan, found)
        self._plan = None

    # ------------------------------------------------------------ reports
    def save_report(self, report: ShardReport) -> None:
        """Write shard ``report.index``'s report: on an object store, the mark that the shard is complete."""
        self.store.write_atomic(report_rel(report.index), json_bytes(report.to_json()))

    def save_manifest(self, manifest: dict) -> None:
        self.store.write_atomic(MANIFEST_NAME, json_bytes(manifest))

    def saved_report(self, index: int, planned: int, plan_sha256: str,
                     record_format: str = RECORD_FORMAT) -> ShardReport | None:
        """The saved report of shard ``index`` if it was built for this plan and its files have the reported
        sizes, in the layout of ``record_format`` (a directory in Caffe Datum mode, a file otherwise)."""
        if self._is_directory(index) != (record_format == DATUM_FORMAT):
            return None
        try:
            report = self._loaded.pop(index, None) or load_report(self.store, index)
            entry = report.entry
            if (entry.index, report.planned, report.plan_sha256) != (index, planned, plan_sha256):
                return None
            if self.store.size(entry.file) != entry.bytes:
                return None
            if entry.label_file and self.store.size(entry.label_file) != entry.label_bytes:
                return None
        except (OSError, FormatError):
            return None
        return report

    def _is_directory(self, index: int) -> bool:
        """Whether shard ``index`` is an LMDB directory (Caffe Datum mode); an object store holds files only."""
        return not self.store.remote and self.store.isdir(f"{SHARD_DIR}/{shard_filename(index)}")

    def complete_shards(self, plan: Plan, check: str = "checksum", rebuild: Iterable[int] = (),
                        record_format: str = RECORD_FORMAT, checker=check_shards,
                        object_checker=check_objects) -> tuple[ReportSet, list[str]]:
        """Reports of the shards a rerun may keep, and why others are redone.

        A shard is kept when its report names this plan and its file is there and, unless ``check`` is
        ``size``, it passes ``verify.check_shard``: ``checksum`` hashes the file against the report's
        ``file_sha256`` (walks the records if an older report lacks it); ``full`` decodes every record.
        Never shards in ``rebuild``. ``checker`` (``verify.check_shards``'s signature) and, on an object
        store, ``object_checker`` (``object_check.check_objects``'s): driver threads, or Ray.
        """
        rebuild = set(rebuild)
        digest = plan.digest()
        listed = self._listed_reports if self._listed_reports is not None else set(self.store.listdir(REPORT_DIR))
        self._listed_reports = None   # prepare's look serves the one check that follows it

        def saved(k: int) -> ShardReport | None:
            start, stop = plan.shard_range(k)
            if k in rebuild or report_filename(k) not in listed:
                return None
            return self.saved_report(k, stop - start, digest, record_format)

        # an object store answers each look-up over the network: many at once
        with ThreadPoolExecutor(max_workers=LOOKUP_THREADS if self.store.remote else 1) as pool:
            found = {k: r for k, r in zip(range(plan.num_shards), pool.map(saved, range(plan.num_shards))) if r}
        self._loaded.clear()
        notes = [f"shard {k} is rebuilt on request (rebuild=...)" for k in sorted(rebuild)]
        problems = []
        if check != "size" and found and self.store.remote:
            problems = object_checker([r.entry for r in found.values()], self.store, LOOKUP_THREADS)
        elif check != "size" and found:
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
