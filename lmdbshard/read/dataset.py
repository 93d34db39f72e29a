"""``ShardedDataset``: every shard of one or more outputs as one indexable dataset.

Opening reads the manifests and nothing else (O(shards)); a root may be a URL, whose shards
are downloaded into a local cache on first use (``roots.py``, ``cache.py``). Each process opens
a shard's LMDB lazily through the per-process registry in ``envs.py`` (read-only, no lock file,
one long-lived zero-copy read transaction per shard), and never uses an environment across
``fork``. Pickling carries paths, counts and the small per-root label maps only, never keys.
"""

from __future__ import annotations

import bisect
import operator
import os
from dataclasses import replace
from itertools import islice
from typing import Any, Callable, Iterator, Optional, Sequence

import lmdb

from lmdbshard.errors import FormatError, ShardError
from lmdbshard.format.datum import datum_record
from lmdbshard.format.record import KEY_FORMAT, encode_key, unpack_record
from lmdbshard.read import envs
from lmdbshard.read.classes import combine_classes
from lmdbshard.read.envs import registry
from lmdbshard.read.cache import ShardCache
from lmdbshard.read.roots import cumulative_counts, load_root, shard_refs
from lmdbshard.read.selection import FieldSelection

PathLike = str | os.PathLike


class ShardedDataset:
    """A map-style dataset over converted shards: ``ds[i] -> (sample, label)``.

    The sample is the ``field`` field (``"image"``) decoded to an HWC uint8 array, or:

    - ``fields=["image", "mask"]``: a tuple of those fields, in that order;
    - ``fields="all"``: a dict of every field of the record, by name;
    - ``decode=False``: the stored bytes (for example the JPEG file) instead of arrays.

    ``fields`` takes precedence over ``field``.

    ``transform`` receives the sample and ``target_transform`` the label, as in torchvision.
    ``copy=False`` returns zero-copy, read-only views for ``raw`` fields (and memoryviews with
    ``decode=False``); they stay valid until this dataset is closed, so use them only where the
    sample is consumed or copied first (a transform, a collate function). The default copies.

    Several roots read as one dataset must share their class list, or say how to combine
    labels: ``classes="merge"``, ``classes=[names]`` or ``label_offsets=[...]`` (see ``classes.py``).

    A root may be a URL (``s3://bucket/prefix``): a shard is downloaded whole into ``cache_dir`` when first
    read (``cache.py``). With ``cache_limit`` (bytes, or ``"50GB"``) and ``copy=True``, only the ``OPEN_REMOTE``
    last opened remote shards stay open (none after ``read_shard``), so that the cache may evict the others.
    """

    OPEN_REMOTE = 2

    def __init__(self, roots: PathLike | Sequence[PathLike], transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None, decode: bool = True, field: str = "image", *,
                 fields: Optional[str | Sequence[str]] = None, copy: bool = True, classes=None,
                 label_offsets: Optional[Sequence[int]] = None, cache_dir: Optional[PathLike] = None,
                 cache_limit: int | str | None = None):
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        cache = ShardCache(cache_dir, cache_limit)
        manifests = [load_root(os.fspath(r)) for r in roots]
        if not manifests:
            raise ValueError("ShardedDataset needs at least one dataset root")
        self.roots = [m.root for m in manifests]   # not the manifests: pickles stay small
        self.classes, self._label_maps = combine_classes(self.roots, [m.classes for m in manifests],
                                                         classes, label_offsets)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.transform = transform
        self.target_transform = target_transform
        self._pick = FieldSelection(field, fields, decode, copy)
        for m in manifests:
            self._pick.check(m.root, m.data.get("fields", []))
        #: The non-empty shards in index order (paths, counts, label maps: never keys).
        self.shard_refs = tuple(ref for j, m in enumerate(manifests) for ref in shard_refs(m, j, cache))
        self._ends = cumulative_counts(self.shard_refs)   # shard k holds [ends[k-1], ends[k]): the index of bisect
        self._len = self._ends[-1] if self._ends else 0
        self._pid = os.getpid()
        self._forks = envs.forks()
        self._txns: dict = {}

    field = property(lambda self: self._pick.field, doc="The field returned when ``fields`` is None.")
    fields = property(lambda self: self._pick.fields, doc="None, ``\"all\"`` or a tuple of field names.")
    decode = property(lambda self: self._pick.decode, doc="False: samples are the stored bytes.")
    copy = property(lambda self: self._pick.copy, doc="False: samples are zero-copy views.")

    # ------------------------------------------------------------ sequence protocol
    def __len__(self) -> int:
        return self._len

    @property
    def shard_sizes(self) -> list[int]:
        """Samples per shard, in index order (shards without samples are left out)."""
        return [ref.count for ref in self.shard_refs]

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
        return self._get(*self.locate(index))

    def record(self, index: int):
        """The parsed record of sample ``index`` with every field, its stored label, source index and round.
        A Caffe Datum reads as a record whose fields are the Datum's data (CHW, BGR) and the dual LMDB's mask."""
        k, offset = self.locate(index)
        value = bytes(self._get(k, offset))
        if self.shard_refs[k].datum:
            companion = self._companion(k, offset)
            return datum_record(value, None if companion is None else bytes(companion))
        return unpack_record(value)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        # locate() and _get() inlined: this is the per-sample path of every map-style loader.
        i = operator.index(index)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {index} out of range for a dataset of {self._len} samples")
        k = bisect.bisect_right(self._ends, i)
        txn = self._txns.get(k) if self._forks == envs.forks() else None
        if txn is None:
            txn = self._txn(k)
        offset = i - (self._ends[k - 1] if k else 0)
        try:
            value = txn.get(KEY_FORMAT % (self.shard_refs[k].first_key + offset))
        except lmdb.Error as exc:
            raise _unreadable(self.shard_refs[k].path, exc) from exc
        if value is None:
            raise self._damaged(k, offset)
        return self._sample(value, k, offset)

    def read_shard(self, k: int, start: int = 0, stop: Optional[int] = None) -> Iterator[tuple[Any, Any]]:
        """Samples ``start..stop-1`` of shard ``k``, read with one cursor in key order: the fast path.
        Keys were shuffled globally at write time, so this order is already a shuffled one."""
        if not 0 <= k < len(self.shard_refs):
            raise IndexError(f"shard {k} out of range; this dataset has {len(self.shard_refs)} non-empty shards")
        count = self.shard_refs[k].count
        stop = count if stop is None else stop
        if not 0 <= start <= stop <= count:
            raise IndexError(f"range [{start}, {stop}) is outside shard {k} of {count} samples")
        if start == stop:
            return
        try:
            cursor = self._txn(k).cursor()
            if not cursor.set_key(encode_key(self.shard_refs[k].first_key + start)):
                raise self._damaged(k, start)
            n = 0
            for value in islice(cursor.iternext(keys=False, values=True), stop - start):
                yield self._sample(value, k, start + n)
                n += 1
        except lmdb.Error as exc:
            raise _unreadable(self.shard_refs[k].path, exc) from exc
        if n != stop - start:
            raise self._damaged(k, start + n)
        if self.shard_refs[k].evictable and self.copy:   # done with this run: the cache may evict the shard
            self._release_remote_beyond(0)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for k in range(len(self.shard_refs)):
            yield from self.read_shard(k)

    def __add__(self, other: "ShardedDataset") -> "ShardedDataset":
        """One dataset over both: ``other``'s samples follow ``self``'s. Same classes and options required."""
        if not isinstance(other, ShardedDataset):
            return NotImplemented
        combine_classes([" + ".join(self.roots), " + ".join(other.roots)], [self.classes, other.classes])
        if self._options() != other._options():
            raise ValueError("cannot add datasets read with different options (transform, decode, field(s), copy); "
                             "open the roots together with ShardedDataset([...], ...) instead")
        new = object.__new__(ShardedDataset)
        new.__setstate__(self.__getstate__())
        new.roots = self.roots + other.roots
        shift = len(self._label_maps)
        new.shard_refs = self.shard_refs + tuple(replace(r, label_map=r.label_map + shift)
                                                 for r in other.shard_refs)
        new._label_maps = self._label_maps + other._label_maps
        new._ends = cumulative_counts(new.shard_refs)
        new._len = self._len + other._len
        return new

    # ------------------------------------------------------------ samples
    def _sample(self, value, k: int, offset: int) -> tuple[Any, Any]:
        ref = self.shard_refs[k]
        companion = None if ref.companion is None else self._companion(k, offset)
        sample, label = self._pick.pick(value, ref.datum, companion)
        label_map = self._label_maps[ref.label_map]
        if label_map is not None and label >= 0:
            label = label_map[label]
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return sample, label

    def _options(self) -> tuple:
        return (self.transform, self.target_transform, self._pick)

    # ------------------------------------------------------------ environments
    def _txn(self, k: int, companion: bool = False) -> lmdb.Transaction:
        """The read transaction of shard ``k``'s LMDB (or of its dual LMDB)."""
        if self._forks != envs.forks() or self._pid != os.getpid():   # forked: never touch the parent's envs
            self._txns, self._pid, self._forks = {}, os.getpid(), envs.forks()
        slot = ("label", k) if companion else k
        txn = self._txns.get(slot)
        if txn is None:
            ref = self.shard_refs[k]
            if ref.evictable and self.copy:
                self._release_remote_beyond(self.OPEN_REMOTE - 1)
            txn = self._txns[slot] = registry().acquire(ref.companion if companion else ref.path, remote=(
                ref.companion_remote if companion else ref.remote))
        return txn

    def _release_remote_beyond(self, keep: int) -> None:
        """Release all but the last ``keep`` remote shards opened (samples are copies: nothing refers to them)."""
        remote = [slot for slot in self._txns if self.shard_refs[slot[1] if isinstance(slot, tuple) else slot].remote]
        for slot in remote[:max(0, len(remote) - keep)]:
            registry().release(self._txns.pop(slot))

    def _get(self, k: int, offset: int) -> memoryview:
        try:
            value = self._txn(k).get(encode_key(self.shard_refs[k].first_key + offset))
        except lmdb.Error as exc:
            raise _unreadable(self.shard_refs[k].path, exc) from exc
        if value is None:
            raise self._damaged(k, offset)
        return value

    def _companion(self, k: int, offset: int) -> Optional[memoryview]:
        """The dual LMDB's value under sample ``offset``'s key, or None when shard ``k`` has no companion."""
        ref = self.shard_refs[k]
        if ref.companion is None:
            return None
        try:
            value = self._txn(k, companion=True).get(encode_key(ref.first_key + offset))
        except lmdb.Error as exc:
            raise _unreadable(ref.companion, exc) from exc
        if value is None:
            raise FormatError(f"{ref.companion}: key {ref.first_key + offset} is missing from the dual LMDB; "
                              "rerun the conversion with rebuild=[...] naming this shard")
        return value

    def _damaged(self, k: int, offset: int) -> FormatError:
        ref = self.shard_refs[k]
        return FormatError(f"{ref.path}: key {ref.first_key + offset} is missing: the shard "
                           "was damaged or replaced; delete it and rerun the conversion to rebuild it")

    def close(self) -> None:
        """Release this dataset's shards; an environment closes when no dataset in the process uses it.
        Zero-copy views returned earlier become invalid."""
        if self._pid == os.getpid():
            open_envs = registry()
            for txn in self._txns.values():
                open_envs.release(txn)
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
        self._pid, self._forks = os.getpid(), envs.forks()

    def __enter__(self) -> "ShardedDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        roots = ", ".join(self.roots)
        return (f"ShardedDataset({roots!r}, samples={self._len}, shards={len(self.shard_refs)}, "
                f"classes={len(self.classes)})")


def _unreadable(path: str, exc: lmdb.Error) -> ShardError:
    return ShardError(f"{path}: LMDB cannot read it ({exc}); the shard is damaged: check the dataset with "
                      "lmdbshard verify and rebuild the shard by rerunning its conversion command")
