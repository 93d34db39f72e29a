"""A complete dataset written straight from records in memory: no source, no plan, no Ray.

For data that is already decoded (benchmarks, tests, another program's arrays): one LMDB file
per shard, keys dense from 0 across the shards, real checksums, and the manifest written last.
The shard files are not fsynced (the manifest is); use ``convert`` for data that must survive a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import lmdb

from lmdbshard import __version__
from lmdbshard.format.filehash import hash_file
from lmdbshard.format.manifest import DatasetFacts, ShardEntry, build_manifest
from lmdbshard.format.record import (MANIFEST_NAME, NO_LABEL, SHARD_DIR, Field, RecordHasher, encode_key,
                                     pack_record, shard_filename)
from lmdbshard.write.atomic import write_json_atomic

_PAGE = 4096


@dataclass(frozen=True)
class Sample:
    """One record to write: its fields (the first one is what ``ds[i]`` returns) and its label."""

    fields: Sequence[Field]
    label: int = NO_LABEL
    source_index: Optional[int] = None   # None: the sample's position


def write_dataset(root: str, shards: Iterable[Sequence[Sample]], classes: Sequence[str] = (),
                  config: Optional[dict] = None) -> str:
    """Write ``shards`` (each a sequence of samples, in key order) under ``root`` and return ``root``.

    The manifest describes the fields of the first sample; every sample must have the same names.
    """
    os.makedirs(os.path.join(root, SHARD_DIR), exist_ok=True)
    entries, counts, names, key = [], [0] * len(classes), None, 0
    for k, samples in enumerate(shards):
        if not samples:
            raise ValueError(f"shard {k} has no samples; every shard must hold at least one")
        rel = f"{SHARD_DIR}/{shard_filename(k)}"
        values = []
        for j, s in enumerate(samples):
            if names is None:
                names = [f.name for f in s.fields]
                fields = [{"name": f.name, "encoding": f.encoding, "dtype": f.dtype, "layout": f.layout}
                          for f in s.fields]
            elif [f.name for f in s.fields] != names:
                raise ValueError(f"sample {key + j} has fields {[f.name for f in s.fields]}, the first had "
                                 f"{names}; give every sample the same fields")
            if not (s.label == NO_LABEL or 0 <= s.label < len(classes)):
                raise ValueError(f"sample {key + j} has label {s.label}; labels must index classes "
                                 f"(0..{len(classes) - 1}) or be {NO_LABEL} (none)")
            if s.label != NO_LABEL:
                counts[s.label] += 1
            source = key + j if s.source_index is None else s.source_index
            values.append(pack_record(s.fields, label=s.label, source_index=source))
        entries.append(_write_shard(root, rel, k, key, values))
        key += len(values)
    if names is None:
        raise ValueError("no shards given; a dataset needs at least one shard")
    facts = DatasetFacts(classes=list(classes), fields=fields, shard_size=max(e.count for e in entries),
                         library_version=__version__, config=config or {}, class_counts=counts)
    doc = build_manifest(facts, entries, [], key, {})
    write_json_atomic(os.path.join(root, MANIFEST_NAME), doc)
    return root


def _write_shard(root: str, rel: str, index: int, first_key: int, values: list[bytes]) -> ShardEntry:
    """One shard file of ``values`` under keys ``first_key...``, appended in order; its manifest entry."""
    path = os.path.join(root, rel)
    if os.path.exists(path):   # left by an earlier, unfinished write: start the file afresh
        os.remove(path)
    pages = sum((len(v) + 64) // _PAGE + 2 for v in values)   # overflow pages plus the tree, generously
    env = lmdb.open(path, subdir=False, map_size=2 * pages * _PAGE + (1 << 20), lock=False, sync=False,
                    metasync=False, meminit=False)
    hasher = RecordHasher()
    try:
        with env.begin(write=True) as txn:
            for j, value in enumerate(values):
                key = encode_key(first_key + j)
                txn.put(key, value, append=True)
                hasher.update(key, value)
    finally:
        env.close()
    return ShardEntry(index, rel, first_key, len(values), os.path.getsize(path), hasher.hexdigest(),
                      file_sha256=hash_file(path))
