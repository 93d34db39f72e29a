"""The index manifest: the commit record of a conversion, and the only file a reader must open.

Written last, atomically (temp file, fsync, rename, fsync of the directory), and only
when every planned shard is complete. Readers refuse a newer format version and any
shard path that escapes the dataset root.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

from lmdbshard.errors import FormatError, FormatVersionError
from lmdbshard.format.record import FORMAT_VERSION, KEY_WIDTH, MANIFEST_NAME

FORMAT_NAME = "lmdbshard"
RECORD_FORMAT = "lmdbshard-record"
#: Every value is a serialized Caffe Datum (see datum.py); masks live in the dual ``*-label.lmdb``.
DATUM_FORMAT = "caffe_datum"


@dataclass(frozen=True)
class ShardEntry:
    index: int
    file: str
    first_key: int
    count: int
    bytes: int
    sha256: str
    label_file: Optional[str] = None    # the dual LMDB of Datum mode with masks: same keys
    label_bytes: int = 0
    label_sha256: Optional[str] = None


@dataclass(frozen=True)
class Manifest:
    root: str
    version: int
    classes: list[str]
    num_samples: int
    shards: list[ShardEntry]
    data: dict[str, Any]   # the whole JSON document

    def shard_path(self, entry: ShardEntry) -> str:
        return os.path.join(self.root, entry.file)

    def label_path(self, entry: ShardEntry) -> Optional[str]:
        return None if entry.label_file is None else os.path.join(self.root, entry.label_file)

    @property
    def record_format(self) -> str:
        return self.data.get("record_format", RECORD_FORMAT)


def class_counts(labels: list[int], num_classes: int, rounds: int, reports) -> list[int]:
    """Records stored per class: every planned sample of the class, less the skipped ones."""
    counts = [0] * num_classes
    for label in labels:
        if label >= 0:
            counts[label] += rounds
    for r in reports:
        for e in r["errors"]:
            if labels[e["source_index"]] >= 0:
                counts[labels[e["source_index"]]] -= 1
    return counts


def build_manifest(*, config: dict, identity_hash: str, seed: int, plan_hash: str, listing_hash: str,
                   shard_size: int, classes: list[str], class_counts: list[int], fields: list[dict],
                   reports: list[dict], warnings: list[str], stats: dict, library_version: str, rounds: int = 1,
                   source_kind: str = "imagefolder", record_format: str = RECORD_FORMAT) -> dict:
    """The manifest document from the shard reports (sorted by shard index)."""
    reports = sorted(reports, key=lambda r: r["index"])
    errors = [dict(e, shard=r["index"]) for r in reports for e in r["errors"]]
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "lmdbshard_version": library_version,
        "record_format": record_format,
        "key_width": KEY_WIDTH,
        "seed": seed,
        "shard_size": shard_size,
        "rounds": rounds,
        "source_kind": source_kind,
        "plan_sha256": plan_hash,
        "listing_sha256": listing_hash,
        "identity_sha256": identity_hash,   # of the output-deciding settings, as in plan.json
        "config": config,
        "num_samples": sum(r["count"] for r in reports),
        "num_planned": sum(r["planned"] for r in reports),
        "num_errors": len(errors),
        "classes": classes,
        "class_counts": class_counts,
        "fields": fields,
        "shards": [_shard_entry(r) for r in reports],
        "errors": errors,
        "warnings": warnings,
        "stats": stats,
    }


def _shard_entry(r: dict) -> dict:
    entry = {k: r[k] for k in ("index", "file", "first_key", "count", "bytes", "sha256")}
    if r.get("label_file"):
        entry.update({k: r[k] for k in ("label_file", "label_bytes", "label_sha256")})
    return entry


def load_manifest(root: str) -> Manifest:
    """Read and check ``root``/manifest.json. Cost: one small file, O(number of shards)."""
    path = os.path.join(root, MANIFEST_NAME)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: {root!r} is not a complete lmdbshard dataset "
                                "(convert into it first, or rerun an interrupted conversion)") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path} is not valid JSON ({exc}); rerun the conversion to rewrite it") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise FormatError(f"{path} is not an lmdbshard manifest (no \"format\": \"{FORMAT_NAME}\")")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise FormatError(f"{path} has no integer format_version")
    if version > FORMAT_VERSION:
        raise FormatVersionError(path, version, FORMAT_VERSION)
    if data.get("record_format", RECORD_FORMAT) not in (RECORD_FORMAT, DATUM_FORMAT):
        raise FormatError(f"{path} has record_format {data.get('record_format')!r}, which this lmdbshard does not "
                          "know; upgrade lmdbshard to read it")
    real_root = os.path.realpath(root)
    shards = []
    for s in data["shards"]:
        entry = ShardEntry(int(s["index"]), str(s["file"]), int(s["first_key"]), int(s["count"]),
                           int(s["bytes"]), str(s["sha256"]), s.get("label_file"), int(s.get("label_bytes", 0)),
                           s.get("label_sha256"))
        for file in filter(None, (entry.file, entry.label_file)):
            target = os.path.realpath(os.path.join(root, file))
            if os.path.isabs(file) or os.path.commonpath([real_root, target]) != real_root:
                raise FormatError(f"{path}: shard file {file!r} escapes the dataset root; refusing to read it")
        shards.append(entry)
    return Manifest(root, version, list(data["classes"]), int(data["num_samples"]), shards, data)
