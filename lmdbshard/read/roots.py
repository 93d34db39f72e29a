"""A dataset's roots: the manifest of a folder or of a URL, and the shards it lists, as a reader finds them.

A local root is read in place. A URL root (``s3://bucket/prefix``, ``gs://...``) has its manifest
read from the object store (nothing else is touched when the dataset opens); each of its shards
is read from its copy in the local cache (``cache.py``), which the first reader downloads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

from lmdbshard.format.manifest import DATUM_FORMAT, Manifest, load_manifest, parse_manifest
from lmdbshard.format.record import LMDB_DATA_FILE, MANIFEST_NAME
from lmdbshard.read.cache import CachedFile, ShardCache
from lmdbshard.storage import objects
from lmdbshard.storage.urls import check_url, is_url, join


@dataclass(frozen=True, slots=True)
class ShardRef:
    """One non-empty shard as a dataset reads it: where its LMDB is, its keys, how to read its values."""

    path: str                         # the LMDB: a file, or a directory holding data.mdb (Caffe Datum mode)
    first_key: int                    # keys first_key .. first_key+count-1, dense
    count: int
    bytes: int                        # of its LMDB data file, as the manifest records it
    label_map: int = 0                # its labels go through the dataset's label_maps[label_map] (one per root)
    datum: bool = False               # values are Caffe Datums (record_format caffe_datum)
    companion: Optional[str] = None   # the dual LMDB holding Datum masks under the same keys
    remote: Optional[CachedFile] = None             # a URL root's shard: the object ``path`` is a copy of
    companion_remote: Optional[CachedFile] = None   # ... and of its dual LMDB

    @property
    def evictable(self) -> bool:
        """A cached copy that a cache with a limit may evict once no reader holds it."""
        return self.remote is not None and self.remote.limit is not None


def load_root(root: str) -> Manifest:
    """The checked manifest of the dataset at ``root``: a folder, or a URL (one read from the object store)."""
    if not is_url(root):
        return load_manifest(root)
    url = check_url(root, "dataset root")
    where = join(url, MANIFEST_NAME)
    try:
        raw = objects.read_bytes(where)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where} not found: {url!r} is not a complete lmdbshard dataset (convert into "
                                "it first, or rerun an interrupted conversion)") from None
    return parse_manifest(raw, url, where)


def shard_refs(m: Manifest, label_map: int, cache: Optional[ShardCache]) -> list[ShardRef]:
    """The non-empty shards of ``m``; those of a URL root point into ``cache`` (remembering the root there)."""
    datum = m.record_format == DATUM_FORMAT
    if not is_url(m.root):
        return [ShardRef(m.shard_path(e), e.first_key, e.count, e.bytes, label_map, datum, m.label_path(e))
                for e in m.shards if e.count]
    if cache is None:
        cache = ShardCache()
    folder = cache.remember(m.root, m.data)
    refs = []
    for e in m.shards:
        if not e.count:
            continue
        data = cached(cache, m, e.file, e.bytes, e.file_sha256, e.sha256)
        label = (None if e.label_file is None else
                 cached(cache, m, e.label_file, e.label_bytes, e.label_file_sha256, e.label_sha256 or ""))
        refs.append(ShardRef(os.path.join(folder, *e.file.split("/")), e.first_key, e.count, e.bytes, label_map,
                             datum, None if e.label_file is None else os.path.join(folder, *e.label_file.split("/")),
                             data, label))
    return refs


def cached(cache: ShardCache, m: Manifest, file: str, size: int, sha256: Optional[str], records_sha256: str
           ) -> CachedFile:
    """The cached copy of the LMDB data file of ``file`` (in Caffe Datum mode a directory holding data.mdb)."""
    name = f"{file}/{LMDB_DATA_FILE}" if m.record_format == DATUM_FORMAT else file
    return cache.file(m.root, name, size, sha256, records_sha256)


def cumulative_counts(refs: Sequence[ShardRef]) -> list[int]:
    """The end of each shard's index range: shard k holds dataset indices [ends[k-1], ends[k])."""
    ends, total = [], 0
    for ref in refs:
        total += ref.count
        ends.append(total)
    return ends
