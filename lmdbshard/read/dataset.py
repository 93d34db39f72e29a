"""``ShardedDataset``: every shard of one or more outputs as one indexable dataset.

Opening reads the manifests and nothing else (O(shards)). Each process opens a
shard's LMDB lazily through the per-process registry in ``envs.py`` (read-only,
no lock file, one long-lived zero-copy read transaction per shard), and never
uses an environment across ``fork``. Pickling carries paths, counts and the small
per-root label maps only, never keys.
"""

from __future__ import annotations

import bisect
import operator
import os
from itertools import islice
from typing import Any, Callable, Iterator, Optional, Sequence

import lmdb
import numpy as np

from lmdbshard.read import envs
from lmdbshard.read.classes import combine_classes
from lmdbshard.read.decode import decode_field
from lmdbshard.format.datum import datum_array, decode_datum
from lmdbshard.read.envs import registry
from lmdbshard.errors import FormatError, ShardError
from lmdbshard.format.record import (
    DTYPE_NAMES, ENCODING_NAMES, ENCODINGS, Field, encode_key, find_field, unpack_record,
)
from lmdbshard.format.manifest import DATUM_FORMAT, load_manifest

_RAW = ENCODINGS["raw"]
_NUMPY_DTYPES = {code: np.dtype(name) for code, name in DTYPE_NAMES.items()}

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
    """

    def __init__(self, roots: PathLike | Sequence[PathLike], transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None, decode: bool = True, field: str = "image", *,
                 fields: Optional[str | Sequence[str]] = None, copy: bool = True, classes=None,
                 label_offsets: Optional[Sequence[int]] = None):
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        manifests = [load_manifest(os.fspath(r)) for r in roots]
        if not manifests:
            raise ValueError("ShardedDataset needs at least one dataset root")
        self.roots = [m.root for m in manifests]   # not the manifests: pickles stay small
        self.classes, self._label_maps = combine_classes(self.roots, [m.classes for m in manifests],
                                                         classes, label_offsets)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.transform = transform
        self.target_transform = target_transform
        self.decode = decode
        self.copy = copy
        self.field = field
        encoded = field.encode("utf-8", "replace")   # as a field header stores it; never matches if it cannot
        self._name16 = encoded.ljust(16, b"\0") if len(encoded) <= 16 else b""
        self.fields = fields if fields is None or isinstance(fields, str) else tuple(fields)
        if isinstance(self.fields, str) and self.fields != "all":
            raise ValueError(f"fields must be 'all' or a list of field names, got {fields!r}")
        for m in manifests:
            _check_fields(m.root, m.data.get("fields", []), [field] if fields is None else self.fields)
        self._paths: list[str] = []
        self._first_keys: list[int] = []
        self._ends: list[int] = []     # cumulative counts: shard k holds [ends[k-1], ends[k])
        self._map_of: list[int] = []   # shard k's labels go through _label_maps[_map_of[k]]
        self._datum: list[bool] = []   # shard k holds Caffe Datum values (record_format caffe_datum)
        self._companions: list[Optional[str]] = []   # shard k's dual LMDB (Datum masks), same keys
        total = 0
        for j, m in enumerate(manifests):
            for entry in m.shards:
                if entry.count == 0:
                    continue
                total += entry.count
                self._paths.append(m.shard_path(entry))
                self._first_keys.append(entry.first_key)
                self._ends.append(total)
                self._map_of.append(j)
                self._datum.append(m.record_format == DATUM_FORMAT)
                self._companions.append(m.label_path(entry))
        self._len = total
        self._pid = os.getpid()
        self._forks = envs.forks()
        self._txns: dict[int, lmdb.Transaction] = {}

    # ------------------------------------------------------------ sequence protocol
    def __len__(self) -> int:
        return self._len

    @property
    def shard_sizes(self) -> list[int]:
        """Samples per shard, in index order (shards without samples are left out)."""
        return [e - s for s, e in zip([0] + self._ends[:-1], self._ends)]

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
        if self._datum[k]:
            from lmdbshard.format.datum import datum_record
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
            value = txn.get(b"%010d" % (self._first_keys[k] + offset))
        except lmdb.Error as exc:
            raise self._unreadable(self._paths[k], exc) from exc
        if value is None:
            raise self._damaged(k, offset)
        return self._sample(value, k, offset)

    def read_shard(self, k: int, start: int = 0, stop: Optional[int] = None) -> Iterator[tuple[Any, Any]]:
        """Samples ``start..stop-1`` of shard ``k``, read with one cursor in key order: the fast path.
        Keys were shuffled globally at write time, so this order is already a shuffled one."""
        if not 0 <= k < len(self._paths):
            raise IndexError(f"shard {k} out of range; this dataset has {len(self._paths)} non-empty shards")
        count = self._ends[k] - (self._ends[k - 1] if k else 0)
        stop = count if stop is None else stop
        if not 0 <= start <= stop <= count:
            raise IndexError(f"range [{start}, {stop}) is outside shard {k} of {count} samples")
        if start == stop:
            return
        try:
            cursor = self._txn(k).cursor()
            if not cursor.set_key(encode_key(self._first_keys[k] + start)):
                raise self._damaged(k, start)
            values = islice(cursor.iternext(keys=False, values=True), stop - start)
            n = 0
            for value in values:
                yield self._sample(value, k, start + n)
                n += 1
        except lmdb.Error as exc:
            raise self._unreadable(self._paths[k], exc) from exc
        if n != stop - start:
            raise self._damaged(k, start + n)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for k in range(len(self._paths)):
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
        new._paths = self._paths + other._paths
        new._first_keys = self._first_keys + other._first_keys
        new._ends = self._ends + [e + self._len for e in other._ends]
        new._label_maps = self._label_maps + other._label_maps
        new._map_of = self._map_of + [j + len(self._label_maps) for j in other._map_of]
        new._datum = self._datum + other._datum
        new._companions = self._companions + other._companions
        new._len = self._len + other._len
        return new

    # ------------------------------------------------------------ samples
    def _sample(self, value, k: int, offset: int) -> tuple[Any, Any]:
        plain = self.fields is None and not self._datum[k] and self._companions[k] is None
        hit = find_field(value, self._name16) if plain else None
        if hit is None or hit[1] not in ENCODING_NAMES or hit[2] not in _NUMPY_DTYPES:
            sample, label = self._fields_of(value, k, offset)
        else:   # one field, read straight from the headers: no Record or Field objects
            label, enc, dt, shape, off, length = hit
            if not self.decode:
                sample = bytes(value[off:off + length]) if self.copy else value[off:off + length]
            elif enc == _RAW:
                dtype = _NUMPY_DTYPES[dt]
                sample = np.frombuffer(value, dtype, length // dtype.itemsize, off).reshape(shape)
                if self.copy:
                    sample = sample.copy()
            else:
                sample = decode_field(Field(self.field, ENCODING_NAMES[enc], value[off:off + length], shape,
                                            DTYPE_NAMES[dt]), copy=self.copy)
        label_map = self._label_maps[self._map_of[k]]
        if label_map is not None and label >= 0:
            label = label_map[label]
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return sample, label

    def _fields_of(self, value, k: int, offset: int) -> tuple[Any, int]:
        """The general path: every field parsed (Datum values and dual LMDB masks included)."""
        if self._datum[k]:
            fields, label = self._datum_fields(value, k, offset)
        else:
            rec = unpack_record(value)
            fields, label = rec.fields, rec.label
        if self.fields is None:
            return self._value(fields, self.field), label
        if self.fields == "all":
            return {name: self._value(fields, name) for name in fields}, label
        return tuple(self._value(fields, name) for name in self.fields), label

    def _datum_fields(self, value, k: int, offset: int) -> tuple[dict[str, Any], int]:
        """name -> serialized Datum (``image``; ``mask`` from the dual LMDB), and the label."""
        fields = {"image": value}
        companion = self._companion(k, offset)
        if companion is not None:
            fields["mask"] = companion
        return fields, decode_datum(value).label

    def _value(self, fields: dict[str, Any], name: str) -> Any:
        fld = fields.get(name)
        if fld is None:
            raise FormatError(f"record has no field {name!r} (it has {sorted(fields)}); pick one with field=/fields=")
        if not isinstance(fld, Field):   # a Caffe Datum: decoded to HWC RGB (HxW for one channel)
            if self.decode:
                return datum_array(decode_datum(fld), copy=self.copy)
            return bytes(fld) if self.copy else fld
        if self.decode:
            return decode_field(fld, copy=self.copy)
        return bytes(fld.payload) if self.copy else fld.payload

    def _options(self) -> tuple:
        return (self.transform, self.target_transform, self.decode, self.field, self.fields, self.copy)

    # ------------------------------------------------------------ environments
    def _txn(self, k: int, path: Optional[str] = None) -> lmdb.Transaction:
        """The read transaction of shard ``k``'s file (or of ``path`` beside it: the dual LMDB)."""
        if self._forks != envs.forks() or self._pid != os.getpid():   # forked: never touch the parent's envs
            self._txns, self._pid, self._forks = {}, os.getpid(), envs.forks()
        slot = k if path is None else ("label", k)
        txn = self._txns.get(slot)
        if txn is None:
            txn = self._txns[slot] = registry().acquire(self._paths[k] if path is None else path)
        return txn

    def _get(self, k: int, offset: int) -> memoryview:
        try:
            value = self._txn(k).get(encode_key(self._first_keys[k] + offset))
        except lmdb.Error as exc:
            raise self._unreadable(self._paths[k], exc) from exc
        if value is None:
            raise self._damaged(k, offset)
        return value

    def _companion(self, k: int, offset: int) -> Optional[memoryview]:
        """The dual LMDB's value under sample ``offset``'s key, or None when shard ``k`` has no companion."""
        path = self._companions[k]
        if path is None:
            return None
        try:
            value = self._txn(k, path).get(encode_key(self._first_keys[k] + offset))
        except lmdb.Error as exc:
            raise self._unreadable(path, exc) from exc
        if value is None:
            raise FormatError(f"{path}: key {self._first_keys[k] + offset} is missing from the dual LMDB; "
                              "rerun the conversion with rebuild=[...] naming this shard")
        return value

    def _damaged(self, k: int, offset: int) -> FormatError:
        return FormatError(f"{self._paths[k]}: key {self._first_keys[k] + offset} is missing: the shard "
                           "was damaged or replaced; delete it and rerun the conversion to rebuild it")

    @staticmethod
    def _unreadable(path: str, exc: lmdb.Error) -> ShardError:
        return ShardError(f"{path}: LMDB cannot read it ({exc}); the shard is damaged: check the dataset with "
                          "lmdbshard verify and rebuild the shard by rerunning its conversion command")

    def close(self) -> None:
        """Release this dataset's shards; an environment closes when no dataset in the process uses it.
        Zero-copy views returned earlier become invalid."""
        if self._pid == os.getpid():
            envs = registry()
            for txn in self._txns.values():
                envs.release(txn)
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
        return f"ShardedDataset({roots!r}, samples={self._len}, shards={len(self._paths)}, classes={len(self.classes)})"


def _check_fields(root: str, declared: list, wanted) -> None:
    """Refuse, at open time, a field name the manifest does not declare."""
    names = [f.get("name") for f in declared if isinstance(f, dict)]
    if wanted == "all" or not names:
        return
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(f"{root!r} has no field {missing[0]!r}; its fields are {names}")
