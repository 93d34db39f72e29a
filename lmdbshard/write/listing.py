"""Listing a source tree: which files, in which order, with which labels.

ImageFolder semantics are torchvision's, exactly: class folders are the sorted
directory names under ``root`` (label = rank), images are found recursively with
symlinks followed, extensions matched case-insensitively, directories visited in
``sorted(os.walk(...))`` order and files sorted. Two deliberate differences, both
recorded as warnings: an empty class folder keeps its label instead of failing
the listing, and a directory reached twice through symlinks (a loop) is listed once.

A folder that cannot be listed (permissions, a path too long, a folder that vanished) is not
a warning: its images would be missing from a job that "succeeded". It is listed as an item
of its own, its path ending in ``/`` (``UNLISTED``), which the shard task records as that
item's error, like a file it cannot read: it is in the manifest's ``errors`` with the reason,
and it counts towards ``max_error_rate`` (and fails the job under ``on_error=fail``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence


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


#: The end of a listed path that names a folder the listing could not enter (see the module doc).
UNLISTED = "/"


def unlisted_reason(path: str) -> str:
    """Why the folder ``path`` could not be listed (asked again now: the shard task's reason)."""
    try:
        with os.scandir(path):
            return ("this folder could not be listed when the job started, so the images in it are missing; "
                    "rerun with overwrite=true to include them")
    except OSError as exc:
        return (f"cannot list this folder ({exc.strerror or exc}), so the images in it are missing; "
                "make it readable, then rerun with overwrite=true")


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
