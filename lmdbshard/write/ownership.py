"""What in an output lmdbshard wrote, and may therefore delete: the owned-files-only rule.

lmdbshard deletes only what its own records (plan, manifest, shard reports) name, plus the
leftovers of an interrupted write (``*.partial`` files, moved-aside stale locks), and refuses an
output holding anything else. The same rule holds for a local folder and an object-store prefix:
it is written once, over the store operations of store.py.
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lmdbshard.errors import FormatError
from lmdbshard.format.datum import label_filename
from lmdbshard.format.record import MANIFEST_NAME, PARTIAL_SUFFIX, PLAN_NAME, REPORT_DIR, SHARD_DIR, shard_filename
from lmdbshard.write.lock import LOCK_NAME, is_lock
from lmdbshard.write.report import ShardReport
from lmdbshard.write.store import Store
from lmdbshard.write.stored_listing import LISTING_NAME

#: Concurrent reads of reports and objects when the output is on an object store.
LOOKUP_THREADS = 16


def report_filename(index: int) -> str:
    return shard_filename(index).replace(".lmdb", ".json")


def report_rel(index: int) -> str:
    return f"{REPORT_DIR}/{report_filename(index)}"


def load_report(store: Store, index: int) -> ShardReport:
    """Shard ``index``'s saved report; OSError when there is none, FormatError when it is damaged."""
    path = store.path(report_rel(index))
    try:
        data = json.loads(store.read_bytes(report_rel(index)))
    except ValueError as exc:
        raise FormatError(f"{path} is not valid JSON ({exc})") from None
    return ShardReport.from_json(data, path)


def load_json(store: Store, rel: str) -> Any:
    return json.loads(store.read_bytes(rel))


def owned(store: Store, plan: Any = None) -> set[str]:
    """Paths (relative to the root, '/' separators) that lmdbshard's records here name: the plan, the
    manifest, the lock, and the reports and shard files of every shard the plan or a record names.
    ``plan``: the plan document when already read (it is large for big datasets)."""
    own = {PLAN_NAME, LISTING_NAME, MANIFEST_NAME, LOCK_NAME, SHARD_DIR, REPORT_DIR}
    indices: set[int] = set()
    files: set[str] = set()
    for rel in (PLAN_NAME, MANIFEST_NAME):
        try:
            doc = plan if rel == PLAN_NAME and plan is not None else load_json(store, rel)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and type(doc.get("num_shards")) is int:
            indices.update(range(doc["num_shards"]))
        for entry in doc.get("shards", []) if isinstance(doc, dict) else []:
            if isinstance(entry, dict) and type(entry.get("index")) is int:
                indices.add(entry["index"])
                files.update(f for f in (entry.get("file"), entry.get("label_file")) if isinstance(f, str))
    listed = set(store.listdir(REPORT_DIR))
    for k in indices:
        own.add(report_rel(k))
        own.add(f"{SHARD_DIR}/{shard_filename(k)}")
        own.add(f"{SHARD_DIR}/{label_filename(shard_filename(k))}")

    def named(k: int) -> tuple[str | None, ...]:
        try:
            entry = load_report(store, k).entry
        except (OSError, FormatError):
            return ()
        return entry.file, entry.label_file

    # an object store answers each read over the network: many at once
    with ThreadPoolExecutor(max_workers=LOOKUP_THREADS if store.remote else 1) as pool:
        for names in pool.map(named, sorted(k for k in indices if report_filename(k) in listed)):
            files.update(f for f in names if f)
    return own | {posixpath.normpath(f.replace("\\", "/")) for f in files}


def entries(store: Store) -> list[str]:
    """Everything in the root and in its shards/ and reports/ folders, relative, '/' separators."""
    found = []
    for folder in ("", SHARD_DIR, REPORT_DIR):
        found += [f"{folder}/{n}" if folder else n for n in store.listdir(folder)]
    return found


def scratchy(rel: str) -> bool:
    """Leftovers of an interrupted write: ``*.partial`` files and moved-aside stale locks."""
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(PARTIAL_SUFFIX) or name.startswith(f"{LOCK_NAME}.stale.")


def foreign_entry(store: Store, plan: Any = None) -> str | None:
    """The first path here that lmdbshard's records do not name, or None."""
    found = entries(store)
    if not found:
        return None
    own = owned(store, plan)
    return next((rel for rel in found if rel not in own and not scratchy(rel) and not is_lock(rel)), None)


def clear(store: Store, plan: Any = None) -> None:
    """Remove what lmdbshard's records here name (and leftovers), keeping the lock and claims; nothing else."""
    own = owned(store, plan) - {LOCK_NAME, SHARD_DIR, REPORT_DIR}
    for rel in entries(store):
        if rel in own or scratchy(rel):
            store.remove(rel)


def remove_leftovers(store: Store) -> None:
    for rel in entries(store):
        if scratchy(rel):
            store.remove(rel)
