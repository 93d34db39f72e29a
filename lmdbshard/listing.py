"""Listing a source tree: which files, in which order, with which labels.

ImageFolder semantics are torchvision's, exactly: class folders are the sorted
directory names under ``root`` (label = rank), images are found recursively with
symlinks followed, extensions matched case-insensitively, directories visited in
``sorted(os.walk(...))`` order and files sorted. Two deliberate differences, both
recorded as warnings: an empty class folder keeps its label instead of failing
the listing, and a directory reached twice through symlinks (a loop) is listed once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .errors import SourceError


@dataclass(frozen=True)
class Listing:
    """A deterministic, labelled source listing: item ``i`` is ``paths[i]`` (relative to ``root``, '/'
    separators) with ``labels[i]`` (-1: none) and, for paired sources, ``mask_paths[i]``.

    A python source has no files: ``paths`` name the items (``target[i]``) and ``identity`` stands in
    for the file names in the digest; its labels are known only once the workers read the items.
    """

    root: str
    classes: list[str]
    paths: Sequence[str]
    labels: Sequence[int]
    warnings: list[str] = field(default_factory=list)
    kind: str = "imagefolder"
    mask_paths: Optional[list[str]] = None
    identity: Optional[str] = None

    def __len__(self) -> int:
        return len(self.paths)

    def source_root(self) -> str:
        """Where the sources are: an absolute folder, or a python source's name."""
        return self.root if self.kind == "python" else os.path.abspath(self.root)

    def digest(self) -> str:
        """sha256 over (label, path[, mask]) in order: equal digests mean the same files and labels."""
        if self.identity is not None:
            return hashlib.sha256(f"{self.kind}\t{self.identity}\t{len(self)}".encode()).hexdigest()
        h = hashlib.sha256()
        masks = self.mask_paths or ()
        for i, (path, label) in enumerate(zip(self.paths, self.labels)):
            mask = b"\t" + os.fsencode(masks[i]) if masks else b""
            h.update(b"%d\t" % label + os.fsencode(path) + mask + b"\n")
        return h.hexdigest()


class IndexNames(Sequence[str]):
    """``name[0]``, ``name[1]``, ...: the item names of a python source, without storing them."""

    def __init__(self, name: str, n: int):
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return f"{self.name}[{i % self.n}]"


def list_imagefolder(root: str, extensions: list[str] | tuple[str, ...]) -> Listing:
    """List ``root/<class>/**/<file>`` the way torchvision's ImageFolder does."""
    if not os.path.isdir(root):
        raise SourceError(f"source root {root!r} is not a directory; pass source.root=/path/to/imagefolder")
    exts = tuple(e.lower() for e in extensions)
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise SourceError(f"source root {root!r} has no class folders; expected root/<class>/<image> files")
    paths: list[str] = []
    labels: list[int] = []
    warnings: list[str] = []
    # A symlink back to the root or into another class folder would list images under the wrong label.
    fenced = {_dir_id(root)} | {_dir_id(os.path.join(root, c)) for c in classes}
    for label, name in enumerate(classes):
        found = 0
        for dirpath, fnames in _walk_once(os.path.join(root, name), fenced, warnings):
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            for fname in sorted(fnames):
                if fname.lower().endswith(exts):
                    paths.append(f"{rel}/{fname}")
                    labels.append(label)
                    found += 1
        if not found:
            warnings.append(f"class folder {name!r} (label {label}) has no images with extensions {', '.join(exts)}")
    if not paths:
        raise SourceError(f"source root {root!r} has no images with extensions {', '.join(exts)}; "
                          "check source.root and source.extensions")
    return Listing(root, classes, paths, labels, warnings)


def _dir_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk_once(top: str, fenced: set, warnings: list[str]) -> list[tuple[str, list[str]]]:
    """``sorted(os.walk(top, followlinks=True))`` as (dirpath, files), entering each real directory
    once and never entering a ``fenced`` one (the root and the class folders) below ``top``."""
    seen = set(fenced)
    found = []
    for dirpath, dirnames, fnames in os.walk(top, followlinks=True,
                                             onerror=lambda e: warnings.append(f"cannot read {e.filename!r}: {e.strerror}")):
        keep = []
        for d in dirnames:
            try:
                st = os.stat(os.path.join(dirpath, d))
            except OSError as exc:
                warnings.append(f"cannot read {os.path.join(dirpath, d)!r}: {exc.strerror}")
                continue
            if (st.st_dev, st.st_ino) in seen:
                warnings.append(f"skipped {os.path.join(dirpath, d)!r}: a symlink loop, or a folder listed elsewhere")
                continue
            seen.add((st.st_dev, st.st_ino))
            keep.append(d)
        dirnames[:] = keep
        found.append((dirpath, fnames))
    return sorted(found)
