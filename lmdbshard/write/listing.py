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
from array import array
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Listing:
    """A deterministic, labelled source listing: item ``i`` is ``paths[i]`` (relative to ``root``, '/'
    separators) with ``labels[i]`` (-1: none) and, for paired sources, ``mask_paths[i]``.

    A python source has no files: ``paths`` name the items (``target[i]``) and ``identity`` stands in
    for the file names in the digest; its labels are known only once the workers read the items.
    """

    root: str
    classes: list[str]
    paths: Sequence[str]     # a PathTable (or IndexNames for a python source) once constructed
    labels: Sequence[int]    # an int32 array once constructed
    warnings: list[str] = field(default_factory=list)
    kind: str = "imagefolder"
    mask_paths: Optional[Sequence[str]] = None
    identity: Optional[str] = None
    _digest: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compact from the start: no per-sample Python objects are held for the whole run.
        if not isinstance(self.paths, (PathTable, IndexNames)):
            object.__setattr__(self, "paths", PathTable.of(self.paths))
        if self.mask_paths is not None and not isinstance(self.mask_paths, PathTable):
            object.__setattr__(self, "mask_paths", PathTable.of(self.mask_paths))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int32).reshape(-1))

    def __len__(self) -> int:
        return len(self.paths)

    def source_root(self) -> str:
        """Where the sources are: an absolute folder, an object-store URL, or a python source's name."""
        return self.root if self.kind == "python" or "://" in self.root else os.path.abspath(self.root)

    def digest(self) -> str:
        """sha256 over (label, path[, mask]) in order: equal digests mean the same files and labels.
        Computed once per listing."""
        if not self._digest:
            self._digest.append(self._compute_digest())
        return self._digest[0]

    def _compute_digest(self) -> str:
        if self.identity is not None:
            return hashlib.sha256(f"{self.kind}\t{self.identity}\t{len(self)}".encode()).hexdigest()
        h = hashlib.sha256()
        for start in range(0, len(self), DIGEST_CHUNK):
            stop = min(start + DIGEST_CHUNK, len(self))
            h.update(_digest_lines(self.labels[start:stop], self.paths, self.mask_paths, start, stop))
        return h.hexdigest()


DIGEST_CHUNK = 1 << 12   # items per block of digest lines (about 6 MB of index arrays)


def _segments(dst: np.ndarray, dst_starts: np.ndarray, src: np.ndarray, src_starts: np.ndarray,
              lengths: np.ndarray) -> None:
    """Copy ``src[src_starts[i] : +lengths[i]]`` to ``dst[dst_starts[i] : ...]`` for every i, vectorised."""
    total = int(lengths.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    dst[np.repeat(dst_starts, lengths) + within] = src[np.repeat(src_starts, lengths) + within]


def _digest_lines(labels: np.ndarray, paths: "PathTable", masks: Optional["PathTable"], start: int,
                  stop: int) -> bytes:
    """``b"%d\t%b\n" % (label, path)`` (``"%d\t%b\t%b\n"`` with masks) for items ``start .. stop-1``,
    joined: the digest's bytes, built with array operations instead of one format per item."""
    values, inverse = np.unique(labels, return_inverse=True)
    texts = [b"%d" % v for v in values.tolist()]
    text_len = np.array([len(t) for t in texts], dtype=np.int64)
    text_buf = np.frombuffer(b"".join(texts), dtype=np.uint8)
    text_at = np.cumsum(text_len) - text_len
    label_len = text_len[inverse]
    tables = [paths] + ([masks] if masks is not None else [])
    parts = [(t.offsets[start:stop], np.diff(t.offsets[start:stop + 1])) for t in tables]
    line_len = label_len + sum(n for _, n in parts) + len(parts) + 1   # separators and the newline
    line_at = np.cumsum(line_len) - line_len
    out = np.empty(int(line_len.sum()), dtype=np.uint8)
    _segments(out, line_at, text_buf, text_at[inverse], label_len)
    at = line_at + label_len
    for table, (offsets, lengths) in zip(tables, parts):
        out[at] = ord("\t")
        _segments(out, at + 1, table.data, offsets, lengths)
        at = at + 1 + lengths
    out[at] = ord("\n")
    return out.tobytes()


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


class PathTable(Sequence[str]):
    """Paths as one bytes buffer plus offsets: about 1 byte per path byte and 8 per path, no Python
    object per path. ``table[i]`` is the path as ``os.listdir`` returns it (``os.fsdecode`` of the
    exact bytes, so names that are not UTF-8 round-trip)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data = np.asarray(data, dtype=np.uint8).reshape(-1)       # every path's bytes, concatenated
        self.offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)  # len + 1 entries, offsets[0] == 0
        if len(self.offsets) == 0 or self.offsets[0] != 0 or self.offsets[-1] != len(self.data):
            raise ValueError(f"path table offsets must run from 0 to {len(self.data)}")

    @classmethod
    def of(cls, paths: Iterable[str]) -> "PathTable":
        return cls.from_bytes([os.fsencode(p) for p in paths])

    @classmethod
    def from_bytes(cls, raw: list[bytes]) -> "PathTable":
        lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
        offsets = np.zeros(len(raw) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.frombuffer(b"".join(raw), dtype=np.uint8), offsets)

    @classmethod
    def builder(cls) -> "PathTableBuilder":
        return PathTableBuilder()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> bytes:
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def raw_range(self, start: int, stop: int) -> list[bytes]:
        """The exact bytes of paths ``start .. stop-1``."""
        offsets = self.offsets[start:stop + 1].tolist()
        base = offsets[0]
        blob = self.data[base:offsets[-1]].tobytes()
        return [blob[a - base:b - base] for a, b in zip(offsets, offsets[1:])]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return os.fsdecode(self.raw(int(i) % n))

    def __iter__(self):
        step = 1 << 16
        for start in range(0, len(self), step):
            yield from map(os.fsdecode, self.raw_range(start, min(start + step, len(self))))

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.offsets.nbytes


class PathTableBuilder:
    """Paths appended a batch at a time into one growing buffer, so that a listing never holds its paths
    twice (large buffers grow in place) nor leaves a heap of freed per-folder pieces behind."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._lengths = array("q")

    def add(self, raw: list[bytes]) -> int:
        """Append paths given as exact bytes; returns how many."""
        self._data += b"".join(raw)
        self._lengths.extend(map(len, raw))
        return len(raw)

    def build(self) -> PathTable:
        offsets = np.zeros(len(self._lengths) + 1, dtype=np.int64)
        np.cumsum(np.frombuffer(self._lengths, dtype=np.int64), out=offsets[1:])
        self._lengths = array("q")
        return PathTable(np.frombuffer(self._data, dtype=np.uint8), offsets)
