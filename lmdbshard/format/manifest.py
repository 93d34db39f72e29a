"""The index manifest: the commit record of a conversion, and the only file a reader must open.

Written last, atomically (temp file, fsync, rename, fsync of the directory), and only
when every planned shard is complete. ``load_manifest`` reads it from a folder and
``parse_manifest`` checks the document (read from anywhere): every key a reader
relies on and refuses a malformed file with one ``FormatError`` line naming the file
and the problem; it also refuses a newer format version and any shard path that
escapes the dataset root.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from lmdbshard.errors import FormatError, FormatVersionError
from lmdbshard.format import names
from lmdbshard.format.record import FORMAT_VERSION, KEY_WIDTH, MANIFEST_NAME
from lmdbshard.format.schema import Fields, exact_int, optional_str

FORMAT_NAME = "lmdbshard"
RECORD_FORMAT = "lmdbshard-record"
#: Every value is a serialized Caffe Datum (see datum.py); masks live in the dual ``*-label.lmdb``.
DATUM_FORMAT = "caffe_datum"


@dataclass(frozen=True)
class ShardEntry:
    """One published shard, as the manifest lists it (and as its report records it)."""

    index: int
    file: str
    first_key: int
    count: int
    bytes: int
    sha256: str
    label_file: Optional[str] = None    # the dual LMDB of Datum mode with masks: same keys
    label_bytes: int = 0
    label_sha256: Optional[str] = None
    # SHA-256 of the published data file's bytes (filehash.py); None in manifests and reports of
    # earlier versions, which lack the key
    file_sha256: Optional[str] = None
    label_file_sha256: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "file": self.file, "first_key": self.first_key,
                             "count": self.count, "bytes": self.bytes, "sha256": self.sha256}
        if self.file_sha256:
            d["file_sha256"] = self.file_sha256
        if self.label_file:
            d.update(label_file=self.label_file, label_bytes=self.label_bytes, label_sha256=self.label_sha256)
            if self.label_file_sha256:
                d["label_file_sha256"] = self.label_file_sha256
        return d

    @classmethod
    def from_json(cls, d: Fields) -> "ShardEntry":
        label_file = d.opt("label_file", str)
        return cls(d.count("index"), d.get("file", str), d.count("first_key"), d.count("count"),
                   d.count("bytes"), d.get("sha256", str), label_file,
                   d.count("label_bytes") if label_file else 0,
                   d.get("label_sha256", str) if label_file else None,
                   _hex_digest(d, "file_sha256"), _hex_digest(d, "label_file_sha256") if label_file else None)


def _hex_digest(d: Fields, key: str) -> Optional[str]:
    """An optional SHA-256 key: absent (None), or 64 lowercase hex digits."""
    value = d.opt(key, str)
    if value is not None and (len(value) != 64 or value.strip("0123456789abcdef")):
        d.fail(f"{key} must be 64 lowercase hex digits, got {value!r:.70}")
    return value


@dataclass(frozen=True)
class Skipped:
    """A planned sample that is not stored: where it was planned, which source, and why."""

    shard: int
    position: int
    source_index: int
    round: int
    path: str      # relative to the source root; not necessarily UTF-8 (see names.py)
    reason: str

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"position": self.position, "source_index": self.source_index, "round": self.round,
                             "path": names.display(self.path), "reason": names.display(self.reason),
                             "shard": self.shard}
        b64 = names.exact_b64(self.path)
        if b64 is not None:
            d["path_b64"] = b64
        return d

    @classmethod
    def from_json(cls, d: Fields) -> "Skipped":
        b64 = d.opt("path_b64", str)
        path = d.get("path", str) if b64 is None else d.b64("path_b64")
        return cls(d.count("shard"), d.count("position"), d.count("source_index"), d.count("round"), path,
                   d.get("reason", str))


@dataclass(frozen=True)
class DatasetFacts:
    """Everything in the manifest besides its shards, errors and statistics: what the job decided."""

    classes: list[str]
    fields: list[dict[str, Any]]
    shard_size: int
    library_version: str
    record_format: str = RECORD_FORMAT
    seed: int = 0
    rounds: int = 1
    source_kind: str = "imagefolder"
    plan_sha256: str = ""
    listing_sha256: str = ""
    identity_sha256: str = ""    # of the output-deciding settings, as in plan.json
    config: dict[str, Any] = field(default_factory=dict)
    class_counts: Optional[list[int]] = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Manifest:
    root: str
    version: int
    classes: list[str]
    num_samples: int
    shards: list[ShardEntry]
    data: dict[str, Any]   # the whole JSON document
    errors: list[Skipped] = field(default_factory=list)

    def shard_path(self, entry: ShardEntry) -> str:
        return os.path.join(self.root, entry.file)

    def label_path(self, entry: ShardEntry) -> Optional[str]:
        return None if entry.label_file is None else os.path.join(self.root, entry.label_file)

    @property
    def record_format(self) -> str:
        return self.data.get("record_format", RECORD_FORMAT)


def class_counts(labels: Sequence[int], num_classes: int, rounds: int, skipped: Sequence[Skipped]) -> list[int]:
    """Records stored per class: every planned sample of the class, less the skipped ones."""
    counts = [0] * num_classes
    for label in labels:
        if label >= 0:
            counts[label] += rounds
    for s in skipped:
        if labels[s.source_index] >= 0:
            counts[labels[s.source_index]] -= 1
    return counts


def build_manifest(facts: DatasetFacts, shards: Sequence[ShardEntry], errors: Sequence[Skipped],
                   num_planned: int, stats: dict[str, Any]) -> dict[str, Any]:
    """The manifest document: ``facts`` plus the shards (sorted by index), the skipped samples and ``stats``."""
    shards = sorted(shards, key=lambda s: s.index)
    errors = sorted(errors, key=lambda e: e.position)
    exact = {str(i): b for i, b in enumerate(map(names.exact_b64, facts.classes)) if b is not None}
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "lmdbshard_version": facts.library_version,
        "record_format": facts.record_format,
        "key_width": KEY_WIDTH,
        "seed": facts.seed,
        "shard_size": facts.shard_size,
        "rounds": facts.rounds,
        "source_kind": facts.source_kind,
        "plan_sha256": facts.plan_sha256,
        "listing_sha256": facts.listing_sha256,
        "identity_sha256": facts.identity_sha256,
        "config": names.strict(facts.config),
        "num_samples": sum(s.count for s in shards),
        "num_planned": num_planned,
        "num_errors": len(errors),
        "classes": [names.display(c) for c in facts.classes],
        **({"classes_b64": exact} if exact else {}),
        **({"class_counts": facts.class_counts} if facts.class_counts is not None else {}),
        "fields": facts.fields,
        "shards": [s.to_json() for s in shards],
        "errors": [e.to_json() for e in errors],
        "warnings": [names.display(w) for w in facts.warnings],
        "stats": stats,
    }
    return doc


def load_manifest(root: str) -> Manifest:
    """Read and check ``root``/manifest.json. Cost: one small file, O(number of shards)."""
    path = os.path.join(root, MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: {root!r} is not a complete lmdbshard dataset "
                                "(convert into it first, or rerun an interrupted conversion)") from None
    m = parse_manifest(raw, root, path)
    real_root = os.path.realpath(root)
    for entry in m.shards:   # the files as they are on disk: a symbolic link must not lead out either
        for file in filter(None, (entry.file, entry.label_file)):
            target = os.path.realpath(os.path.join(root, file))
            if os.path.commonpath([real_root, target]) != real_root:
                raise FormatError(f"{path}: shard file {file!r} escapes the dataset root; refusing to read it")
    return m


def parse_manifest(raw: bytes | dict, root: str, path: str) -> Manifest:
    """Check the manifest document ``raw`` (its bytes, or the parsed JSON) of the dataset at ``root``;
    ``path`` names it in errors. Refuses a shard file whose name leads out of ``root``."""
    if isinstance(raw, dict):
        data: Any = raw
    else:
        try:
            data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path} is not valid JSON ({exc}); rerun the conversion to rewrite it") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise FormatError(f"{path} is not an lmdbshard manifest (no \"format\": \"{FORMAT_NAME}\")")
    doc = Fields(data, path)
    version = exact_int(data.get("format_version"))
    if version is None:
        raise FormatError(f"{path}: format_version must be an integer, got {data.get('format_version')!r}; "
                          "the file is damaged or not written by lmdbshard")
    if version > FORMAT_VERSION:
        raise FormatVersionError(path, version, FORMAT_VERSION)
    record_format = optional_str(data, "record_format", path) or RECORD_FORMAT
    if record_format not in (RECORD_FORMAT, DATUM_FORMAT):
        raise FormatError(f"{path} has record_format {record_format!r}, which this lmdbshard does not "
                          "know; upgrade lmdbshard to read it")
    classes = _classes(doc)
    shards = [ShardEntry.from_json(s) for s in doc.objects("shards")]
    errors = [Skipped.from_json(e) for e in doc.objects("errors", optional=True)]
    _check_consistent(doc, classes, shards)
    for entry in shards:
        for file in filter(None, (entry.file, entry.label_file)):
            normal = posixpath.normpath(file.replace(os.sep, "/"))
            if os.path.isabs(file) or posixpath.isabs(normal) or normal == ".." or normal.startswith("../"):
                raise FormatError(f"{path}: shard file {file!r} escapes the dataset root; refusing to read it")
    return Manifest(root, version, classes, doc.count("num_samples"), shards, data, errors)


def _classes(doc: Fields) -> list[str]:
    classes = doc.get("classes", list)
    if not all(isinstance(c, str) for c in classes):
        doc.fail("classes must be a list of strings")
    exact = doc.opt("classes_b64", dict) or {}
    for key in exact:
        i = exact_int(int(key)) if str(key).isdigit() else None
        if i is None or i >= len(classes) or not isinstance(exact[key], str):
            doc.fail(f"classes_b64 key {key!r} is not the index of a class")
        classes[i] = doc.sub(exact, "classes_b64").b64(key)
    return classes


def _check_consistent(doc: Fields, classes: list[str], shards: list[ShardEntry]) -> None:
    """Counts and shard entries that agree with each other: what a reader's indexing relies on."""
    indices = [s.index for s in shards]
    if indices != list(range(len(shards))):
        dup = sorted({k for k in indices if indices.count(k) > 1})
        missing = sorted(set(range(len(shards))) - set(indices))
        what = (f"shard {dup[0]} is listed twice" if dup else
                f"shard {missing[0]} is missing" if missing else "shards are not in ascending index order")
        doc.fail(f"{what} (shards must list indices 0..{len(shards) - 1} once each, in order)")
    shard_size = doc.count("shard_size") if "shard_size" in doc.data else None
    end = 0
    for s in shards:
        if s.first_key < end:
            doc.fail(f"shard {s.index} starts at key {s.first_key}, inside the previous shard (which ends at {end - 1})")
        if shard_size is not None and s.count > shard_size:
            doc.fail(f"shard {s.index} has count {s.count}, more than shard_size {shard_size}")
        end = s.first_key + s.count
    stored = sum(s.count for s in shards)
    if doc.count("num_samples") != stored:
        doc.fail(f"num_samples is {doc.data['num_samples']}, but the shards hold {stored} records")
    counts = doc.opt("class_counts", list)
    if counts is not None:
        if len(counts) > len(classes):
            doc.fail(f"class_counts counts {len(counts)} labels, but classes names only {len(classes)}")
        if len(counts) != len(classes) or any(exact_int(n) is None or n < 0 for n in counts):
            doc.fail(f"class_counts must be {len(classes)} non-negative integers, one per class, got {counts!r:.60}")
        if sum(counts) > stored:
            doc.fail(f"class_counts add up to {sum(counts)}, more than the {stored} records stored")
