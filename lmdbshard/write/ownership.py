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
from typing import Any, Optional

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


def owned(store: Store, plan: Any = None, found: Optional[list[str]] = None,
          loaded: Optional[dict[int, ShardReport]] = None) -> set[str]:
    """Paths (relative to the root, '/' separators) that lmdbshard's records here name: the plan, the
    manifest, the lock, and the reports and shard files of every shard the plan or a record names.
    ``plan``: the plan document when already read (it is large for big datasets); ``found``: ``entries``
    when already listed (then records it does not hold are not looked up); ``loaded``: filled with the
    reports read on the way, by shard index, for a caller that reads them next."""
    own = {PLAN_NAME, LISTING_NAME, MANIFEST_NAME, LOCK_NAME, SHARD_DIR, REPORT_DIR}
    indices: set[int] = set()
    files: set[str] = set()
    for rel, given in ((PLAN_NAME, plan), (MANIFEST_NAME, None)):
        if given is None and found is not None and rel not in found:
            continue   # listed, and not there: no look-up
        try:
            doc = given if given is not None else load_json(store, rel)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and type(doc.get("num_shards")) is int:
            indices.update(range(doc["num_shards"]))
        for entry in doc.get("shards", []) if isinstance(doc, dict) else []:
            if isinstance(entry, dict) and type(entry.get("index")) is int:
                indices.add(entry["index"])
                files.update(f for f in (entry.get("file"), entry.get("label_file")) if isinstance(f, str))
    listed = set(store.listdir(REPORT_DIR)) if found is None else reports_in(found)
    for k in indices:
        own.add(report_rel(k))
        own.add(f"{SHARD_DIR}/{shard_filename(k)}")
        own.add(f"{SHARD_DIR}/{label_filename(shard_filename(k))}")

    def named(k: int) -> tuple[str | None, ...]:
        try:
            report = load_report(store, k)
        except (OSError, FormatError):
            return ()
        if loaded is not None:
            loaded[k] = report
        return report.entry.file, report.entry.label_file

    # an object store answers each read over the network: many at once
    with ThreadPoolExecutor(max_workers=LOOKUP_THREADS if store.remote else 1) as pool:
        for names in pool.map(named, sorted(k for k in indices if report_filename(k) in listed)):
            files.update(f for f in names if f)
    return own | {posixpath.normpath(f.replace("\\", "/")) for f in files}


def entries(store: Store) -> list[str]:
    """Everything in the root and in its shards/ and reports/ folders, relative, '/' separators. Those
    folders are listed only when the root holds them: on an object store each listing is a request, and
    a new output costs one."""
    top = store.listdir("")
    found = list(top)
    for folder in (SHARD_DIR, REPORT_DIR):
        if folder in top:
            found += [f"{folder}/{n}" for n in store.listdir(folder)]
    return found


def reports_in(found: list[str]) -> set[str]:
    """The report file names among ``entries``."""
    return {rel[len(REPORT_DIR) + 1:] for rel in found if rel.startswith(REPORT_DIR + "/")}


def scratchy(rel: str) -> bool:
    """Leftovers of an interrupted write: ``*.partial`` files and moved-aside stale locks."""
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(PARTIAL_SUFFIX) or name.startswith(f"{LOCK_NAME}.stale.")


def foreign_entry(store: Store, plan: Any = None, found: Optional[list[str]] = None,
                  loaded: Optional[dict[int, ShardReport]] = None) -> str | None:
    """The first path here that lmdbshard's records do not name, or None (``found``, ``loaded``: as for ``owned``)."""
    found = entries(store) if found is None else found
    if not found:
        return None
    own = owned(store, plan, found, loaded)
    return next((rel for rel in found if rel not in own and not scratchy(rel) and not is_lock(rel)), None)


def clear(store: Store, plan: Any = None, found: Optional[list[str]] = None) -> None:
    """Remove what lmdbshard's records here name (and leftovers), keeping the lock and claims; nothing else."""
    found = entries(store) if found is None else found
    own = owned(store, plan, found) - {LOCK_NAME, SHARD_DIR, REPORT_DIR}
    for rel in found:
        if rel in own or scratchy(rel):
            store.remove(rel)


def remove_leftovers(store: Store, found: Optional[list[str]] = None) -> None:
    for rel in entries(store) if found is None else found:
        if scratchy(rel):
            store.remove(rel)
