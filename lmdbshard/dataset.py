"""``ShardedDataset``: every shard of one or more outputs as one indexable dataset.

Opening reads the manifests and nothing else (O(shards)). Each process opens a
shard's LMDB lazily, read-only and without a lock file (so no reader slots are
used and MDB_READERS_FULL cannot happen), with one long-lived zero-copy read
transaction per shard. LMDB allows one environment per file per process, so
environments live in a per-process, reference-counted registry that every
dataset in the process shares. Environments are never used across ``fork``: a
changed pid drops them and the child opens its own. Pickling carries paths and
counts only.
"""

from __future__ import annotations

import bisect
import operator
import os
from typing import Any, Callable, Optional, Sequence

import lmdb

from .codec import decode_field
from .errors import FormatError
from .format import Record, encode_key, unpack_record
from .manifest import Manifest, load_manifest

PathLike = str | os.PathLike


class _EnvRegistry:
    """This process's open shard environments: path -> [env, read txn, users]."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: dict[str, list] = {}

    def acquire(self, path: str) -> lmdb.Transaction:
        entry = self.open.get(path)
        if entry is None:
            env = lmdb.open(path, subdir=False, readonly=True, lock=False, readahead=False,
                            meminit=False, max_dbs=0)
            entry = self.open[path] = [env, env.begin(buffers=True), 0]
        entry[2] += 1
        return entry[1]

    def release(self, path: str) -> None:
        entry = self.open.get(path)
        if entry is not None:
            entry[2] -= 1
            if entry[2] <= 0:
                del self.open[path]
                entry[1].abort()
                entry[0].close()


_registry: _EnvRegistry | None = None


def _envs() -> _EnvRegistry:
    """The registry of the current process. A forked child first closes the handles it inherited:
    py-lmdb would otherwise refuse to reopen those files in the child ("already open in this
    process"). With ``lock=False`` closing touches only the child's own mappings, never the parent's."""
    global _registry
    if _registry is not None and _registry.pid != os.getpid():
        for env, txn, _ in _registry.open.values():
            try:
                txn.abort()
                env.close()
            except lmdb.Error:
                pass
        _registry = None
    if _registry is None:
        _registry = _EnvRegistry()
    return _registry


class ShardedDataset:
    """A map-style dataset over converted shards: ``ds[i] -> (HWC uint8 array, label)``.

    ``decode=False`` returns the stored bytes of the image field instead of an array.
    ``transform`` and ``target_transform`` are applied as in torchvision.
    """

    def __init__(self, roots: PathLike | Sequence[PathLike], transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None, decode: bool = True, field: str = "image"):
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        manifests = [load_manifest(os.fspath(r)) for r in roots]
        if not manifests:
            raise ValueError("ShardedDataset needs at least one dataset root")
        self.classes = _common_classes(manifests)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.roots = [m.root for m in manifests]   # not the manifests: pickles stay small
        self.transform = transform
        self.target_transform = target_transform
        self.decode = decode
        self.field = field
        self._paths: list[str] = []
        self._first_keys: list[int] = []
        self._ends: list[int] = []   # cumulative counts: shard k holds [ends[k-1], ends[k])
        total = 0
        for m in manifests:
            for entry in m.shards:
                if entry.count == 0:
                    continue
                total += entry.count
                self._paths.append(m.shard_path(entry))
                self._first_keys.append(entry.first_key)
                self._ends.append(total)
        self._len = total
        self._pid = os.getpid()
        self._txns: dict[int, lmdb.Transaction] = {}

    # ------------------------------------------------------------ sequence protocol
    def __len__(self) -> int:
        return self._len

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, offset within shard) of ``index``; negative indices count from the end."""
        i = operator.index(index)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {index} out of range for a dataset of {self._len} samples")
        k = bisect.bisect_right(self._ends, i)
        return k, i - (self._ends[k - 1] if k else 0)

    def raw(self, index: int) -> memoryview:
        """The stored record value of sample ``index`` (a view valid while this dataset is open)."""
        k, offset = self.locate(index)
        value = self._txn(k).get(encode_key(self._first_keys[k] + offset))
        if value is None:
            raise FormatError(f"{self._paths[k]}: key {self._first_keys[k] + offset} is missing: the shard "
                              "was damaged or replaced; delete it and rerun the conversion to rebuild it")
        return value

    def record(self, index: int) -> Record:
        """The parsed record of sample ``index`` with every field, label, source index and round."""
        return unpack_record(bytes(self.raw(index)))

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        rec = unpack_record(self.raw(index))
        fld = rec.fields[self.field]
        sample = decode_field(fld) if self.decode else bytes(fld.payload)
        label = rec.label
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return sample, label

    def __iter__(self):
        for i in range(self._len):
            yield self[i]

    # ------------------------------------------------------------ environments
    def _txn(self, k: int) -> lmdb.Transaction:
        if self._pid != os.getpid():   # forked: never touch the parent's environments
            self._txns, self._pid = {}, os.getpid()
        txn = self._txns.get(k)
        if txn is None:
            txn = self._txns[k] = _envs().acquire(self._paths[k])
        return txn

    def close(self) -> None:
        """Release this dataset's shards; an environment closes when no dataset in the process uses it.
        Zero-copy views returned earlier become invalid."""
        if self._pid == os.getpid():
            registry = _envs()
            for k in self._txns:
                registry.release(self._paths[k])
        self._txns = {}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:   # interpreter shutdown: modules may already be gone
            pass

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_txns"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __enter__(self) -> "ShardedDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        roots = ", ".join(self.roots)
        return f"ShardedDataset({roots!r}, samples={self._len}, shards={len(self._paths)}, classes={len(self.classes)})"


def _common_classes(manifests: list[Manifest]) -> list[str]:
    first = manifests[0].classes
    for m in manifests[1:]:
        if m.classes != first:
            raise ValueError(f"class lists differ between {manifests[0].root!r} and {m.root!r}; "
                             "labels would mix silently, so open them as separate datasets")
    return list(first)
