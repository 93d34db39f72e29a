"""The resume check of shards on an object store: each object's bytes hashed against its report.

Locally a rerun opens each kept shard with LMDB (read/verify.py). An object store cannot be mapped,
so there the check streams each shard object in large ranged reads (``objects.chunks``) and
compares the sha256 of its bytes with the report's ``file_sha256``, several objects at once.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from lmdbshard.format.manifest import ShardEntry
from lmdbshard.read.verify import Problem
from lmdbshard.storage import objects


def object_sha256(url: str) -> str:
    h = hashlib.sha256()
    for chunk in objects.chunks(url):
        h.update(chunk)
    return h.hexdigest()


def check_objects(store, entries: Iterable[ShardEntry], threads: int) -> list[Problem]:
    """Problems of the shard objects of ``entries`` (under ``store``'s root), in shard order."""
    entries = list(entries)

    def check(entry: ShardEntry) -> list[Problem]:
        found = []
        for rel, want in ((entry.file, getattr(entry, "file_sha256", None)),
                          (entry.label_file, getattr(entry, "label_file_sha256", None))):
            if not rel or not want:
                continue
            try:
                got = object_sha256(store.path(rel))
            except OSError as exc:
                found.append(Problem(entry.index, None, f"{rel} cannot be read: {exc}"))
                continue
            if got != want:
                found.append(Problem(entry.index, None, f"{rel} has sha256 {got[:16]}..., its report says "
                                                        f"{want[:16]}..."))
        return found

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="lmdbshard-check") as pool:
        return [p for found in pool.map(check, entries) for p in found]
