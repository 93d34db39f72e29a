"""The ``imagefolder`` source: ``root/<class>/**/<image>``, listed in torchvision's ImageFolder order."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lmdbshard.write.listing import UNLISTED, Listing, PathTable
from lmdbshard.errors import SourceError

#: Class folders listed at once. ``os.scandir`` releases the GIL while it waits on the filesystem, so
#: threads overlap the round trips, which dominate on network filesystems.
LIST_THREADS = 16


def list_imagefolder(root: str, extensions: list[str] | tuple[str, ...]) -> Listing:
    """List ``root/<class>/**/<file>`` the way torchvision's ImageFolder does. A folder below a class
    that cannot be listed is an item of its own, ``<folder>/`` (see ``listing.UNLISTED``)."""
    if not os.path.isdir(root):
        raise SourceError(f"source root {root!r} is not a directory; pass source.root=/path/to/imagefolder")
    exts = tuple(e.lower() for e in extensions)
    try:
        classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    except OSError as exc:
        raise SourceError(f"source root {root!r} cannot be listed ({exc.strerror or exc}); make it readable") from None
    if not classes:
        raise SourceError(f"source root {root!r} has no class folders; expected root/<class>/<image> files")
    warnings: list[str] = []
    # A symlink back to the root or into another class folder would list images under the wrong label.
    fenced = {_dir_id(root)} | {_dir_id(os.path.join(root, c)) for c in classes}
    with ThreadPoolExecutor(max_workers=min(LIST_THREADS, len(classes)), thread_name_prefix="lmdbshard-list") as pool:
        found = list(pool.map(lambda c: _list_class(root, c, exts, fenced), classes))   # in class order
    for (table, notes), (label, name) in zip(found, enumerate(classes)):
        warnings += notes
        if not len(table):
            warnings.append(f"class folder {name!r} (label {label}) has no images with extensions {', '.join(exts)}")
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), [len(table) for table, _ in found])
    tables = [table for table, _ in found]
    del found
    paths = PathTable.concat(tables)
    if not paths:
        raise SourceError(f"source root {root!r} has no images with extensions {', '.join(exts)}; "
                          "check source.root and source.extensions")
    return Listing(root, classes, paths, labels, warnings)


def _list_class(root: str, name: str, exts: tuple[str, ...], fenced: set) -> tuple[PathTable, list[str]]:
    """The images of one class folder in listing order (as exact bytes), and the warnings of its walk."""
    warnings: list[str] = []
    raw: list[bytes] = []
    for dirpath, fnames in _walk_once(os.path.join(root, name), fenced, warnings):
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if fnames is None:   # could not be listed: an item that the shard task records as an error
            raw.append(os.fsencode(rel + UNLISTED))
            continue
        prefix = os.fsencode(rel) + b"/"
        raw += [prefix + os.fsencode(f) for f in sorted(fnames) if f.lower().endswith(exts)]
    return PathTable.from_bytes(raw), warnings


def _dir_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk_once(top: str, fenced: set, warnings: list[str]) -> list[tuple[str, list[str] | None]]:
    """``sorted(os.walk(top, followlinks=True))`` as (dirpath, files), entering each real directory
    once and never entering a ``fenced`` one (the root and the class folders) below ``top``.
    A folder that cannot be listed comes as (dirpath, None)."""
    seen = set(fenced)
    found: list[tuple[str, list[str] | None]] = []

    def unlisted(exc: OSError) -> None:
        found.append((exc.filename, None))

    for dirpath, dirnames, fnames in os.walk(top, followlinks=True, onerror=unlisted):
        keep = []
        for d in dirnames:
            try:
                st = os.stat(os.path.join(dirpath, d))
            except OSError:   # vanished, or a path too long to reach: cannot be listed
                found.append((os.path.join(dirpath, d), None))
                continue
            if (st.st_dev, st.st_ino) in seen:
                warnings.append(f"skipped {os.path.join(dirpath, d)!r}: a symlink loop, or a folder listed elsewhere")
                continue
            seen.add((st.st_dev, st.st_ino))
            keep.append(d)
        dirnames[:] = keep
        found.append((dirpath, fnames))
    return sorted(found, key=lambda entry: entry[0])
