"""Listing a source that is an object-store prefix (``source.root=s3://bucket/prefix``).

An object store has keys, not folders: a "folder" is a common prefix of keys. The listings here
give the same items, in the same order and with the same labels, as the local listing of the same
tree: ``walk_files`` orders the objects below a prefix as ``sorted(os.walk(...))`` visits files
(folder by folder in sorted folder-path order, files sorted within each). An ImageFolder's class
prefixes are listed on LIST_THREADS threads at once (each listing is paginated by the SDK), and
appended in class order. Symlinks, unreadable folders and special files do not exist on an object
store, so those local cases do not arise.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lmdbshard.errors import SourceError
from lmdbshard.storage import objects
from lmdbshard.storage.urls import join
from lmdbshard.write.listing import Listing, PathTable

#: Class prefixes listed at once (each a round trip, or several for a large class).
LIST_THREADS = 32


def _listed(url: str) -> list[tuple[str, bool, int]]:
    try:
        return objects.listdir(url)
    except OSError as exc:
        raise SourceError(f"source.root {url!r} cannot be listed ({exc}); check the URL and the credentials "
                          "(AWS_* environment variables)") from None


def walk_files(url: str) -> list[str]:
    """Paths (relative to ``url``) of every object below it, in ``sorted(os.walk)`` order."""
    try:
        found = objects.walk(url)
    except OSError as exc:
        raise SourceError(f"{url!r} cannot be listed ({exc})") from None
    split = [rel.rpartition("/") for rel, _ in found]
    return [f"{folder}/{name}" if folder else name for folder, _, name in sorted(split)]


def list_names(url: str) -> list[str]:
    """Names of the objects directly under ``url`` (not of the prefixes below it)."""
    return [name for name, is_dir, _ in _listed(url) if not is_dir]


def list_imagefolder_url(root: str, extensions: list[str] | tuple[str, ...]) -> Listing:
    """``root/<class>/**/<file>`` on an object store, listed as ``list_imagefolder`` lists a folder."""
    exts = tuple(e.lower() for e in extensions)
    classes = [name for name, is_dir, _ in _listed(root) if is_dir]
    if not classes:
        raise SourceError(f"source root {root!r} has no class prefixes; expected root/<class>/<image> objects")
    builder = PathTable.builder()
    counts, warnings = [], []
    with ThreadPoolExecutor(max_workers=LIST_THREADS, thread_name_prefix="lmdbshard-list") as pool:
        listed = pool.map(lambda c: walk_files(join(root, c)), classes)   # in class order
        for label, (name, rels) in enumerate(zip(classes, listed)):
            raw = [f"{name}/{rel}".encode("utf-8", "surrogateescape") for rel in rels if rel.lower().endswith(exts)]
            counts.append(builder.add(raw))
            if not counts[-1]:
                warnings.append(f"class folder {name!r} (label {label}) has no images with extensions {', '.join(exts)}")
    paths = builder.build()
    if not paths:
        raise SourceError(f"source root {root!r} has no images with extensions {', '.join(exts)}; "
                          "check source.root and source.extensions")
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), counts)
    return Listing(root, classes, paths, labels, warnings)
