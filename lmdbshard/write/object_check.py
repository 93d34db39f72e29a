"""The resume check of shards on an object store: each object's bytes hashed against its report.

Locally a rerun opens each kept shard with LMDB (read/verify.py). An object store cannot be mapped,
so there the check streams each shard object in large ranged reads (``objects.chunks``) and
compares the sha256 of its bytes with the report's ``file_sha256``, several objects at once; both
``resume_check=checksum`` and ``full`` do this (decoding would need the whole shard downloaded).
A report without ``file_sha256`` (written before it was recorded) is checked by size only.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from lmdbshard.format.filehash import hash_chunks
from lmdbshard.format.manifest import ShardEntry
from lmdbshard.read.verify import Problem
from lmdbshard.storage import objects


def check_objects(entries: Iterable[ShardEntry], store, threads: int) -> list[Problem]:
    """Problems of the shard objects of ``entries`` (under ``store``'s root), in shard order."""
    entries = list(entries)

    def check(entry: ShardEntry) -> list[Problem]:
        found = []
        for rel, want in ((entry.file, entry.file_sha256), (entry.label_file, entry.label_file_sha256)):
            if not rel or not want:
                continue
            try:
                got = hash_chunks(objects.chunks(store.path(rel)))
            except OSError as exc:
                found.append(Problem(entry.index, None, f"{rel} cannot be read: {exc}"))
                continue
            if got != want:
                found.append(Problem(entry.index, None, f"{rel} has sha256 {got[:16]}..., its report says "
                                                        f"{want[:16]}..."))
        return found

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="lmdbshard-check") as pool:
        return [p for found in pool.map(check, entries) for p in found]
