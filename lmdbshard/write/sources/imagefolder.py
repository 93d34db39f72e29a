"""The ``imagefolder`` source: ``root/<class>/**/<image>``, listed in torchvision's ImageFolder order."""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lmdbshard.write.listing import UNLISTED, Listing, PathTable
from lmdbshard.errors import SourceError

#: Class folders listed at once where the filesystem is slow. ``os.scandir`` releases the GIL while it
#: waits, so threads overlap the round trips that dominate on network filesystems. Where an entry costs
#: less than FAST_ENTRY_S (local disk, cached), listing is CPU-bound and threads only contend for the
#: GIL (1,000 x 1,000 files, cached: 1.3 s on one thread, 2.3 s on 16), so it stays on one thread.
LIST_THREADS = 16
FAST_ENTRY_S = 5e-6


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
    builder = PathTable.builder()
    counts = []
    t = time.perf_counter()
    first = _list_class(root, classes[0], exts, fenced)   # timed: is this filesystem slow?
    slow = (time.perf_counter() - t) / (len(first[0]) + 1) > FAST_ENTRY_S
    with ThreadPoolExecutor(max_workers=LIST_THREADS if slow else 1, thread_name_prefix="lmdbshard-list") as pool:
        rest = pool.map(lambda c: _list_class(root, c, exts, fenced), classes[1:])   # in class order
        for (label, name), (raw, notes) in zip(enumerate(classes), itertools.chain([first], rest)):
            first = None
            warnings += notes
            counts.append(builder.add(raw))
            del raw   # each folder's paths are held only until they are appended
            if not counts[-1]:
                warnings.append(f"class folder {name!r} (label {label}) has no images with extensions {', '.join(exts)}")
    paths = builder.build()
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), counts)
    if not paths:
        raise SourceError(f"source root {root!r} has no images with extensions {', '.join(exts)}; "
                          "check source.root and source.extensions")
    return Listing(root, classes, paths, labels, warnings)


def _list_class(root: str, name: str, exts: tuple[str, ...], fenced: set) -> tuple[list[bytes], list[str]]:
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
    return raw, warnings


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
