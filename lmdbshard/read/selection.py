"""Field selection: which fields of a stored value a reader returns, and in what form.

A ``FieldSelection`` turns one LMDB value (an lmdbshard record, or a Caffe Datum with its
dual-LMDB mask) into the sample a reader returns: one field (``field="image"``), a tuple of
fields, or a dict of every field; decoded arrays, or the stored bytes; copies, or zero-copy
views. It holds options only, so it pickles in a few bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from lmdbshard.errors import FormatError
from lmdbshard.format.datum import datum_array, decode_datum
from lmdbshard.format.record import DTYPE_NAMES, ENCODING_NAMES, ENCODINGS, Field, find_field, unpack_record
from lmdbshard.read.decode import decode_field

_RAW = ENCODINGS["raw"]
_NUMPY_DTYPES = {code: np.dtype(name) for code, name in DTYPE_NAMES.items()}


@dataclass(frozen=True)
class FieldSelection:
    """``fields`` (``"all"`` or names) takes precedence over ``field``; ``decode=False`` returns stored bytes;
    ``copy=False`` returns read-only views that stay valid while the value's transaction is open."""

    field: str = "image"
    fields: Optional[str | tuple[str, ...]] = None
    decode: bool = True
    copy: bool = True

    def __post_init__(self) -> None:
        if self.fields is not None and not isinstance(self.fields, str):
            object.__setattr__(self, "fields", tuple(self.fields))
        if isinstance(self.fields, str) and self.fields != "all":
            raise ValueError(f"fields must be 'all' or a list of field names, got {self.fields!r}")
        encoded = self.field.encode("utf-8", "replace")   # as a field header stores it; never matches if it cannot
        object.__setattr__(self, "_name16", encoded.ljust(16, b"\0") if len(encoded) <= 16 else b"")

    def check(self, root: str, declared: list) -> None:
        """Refuse, at open time, a field name that the manifest of ``root`` does not declare."""
        names = [f.get("name") for f in declared if isinstance(f, dict)]
        wanted = [self.field] if self.fields is None else self.fields
        if wanted == "all" or not names:
            return
        missing = [w for w in wanted if w not in names]
        if missing:
            raise ValueError(f"{root!r} has no field {missing[0]!r}; its fields are {names}")

    def pick(self, value, datum: bool = False, companion=None) -> tuple[Any, int]:
        """(sample, stored label) of one value; ``datum``: a Caffe Datum, ``companion``: its dual-LMDB mask."""
        hit = None
        if self.fields is None and not datum and companion is None:
            hit = find_field(value, self._name16)
        if hit is None or hit[1] not in ENCODING_NAMES or hit[2] not in _NUMPY_DTYPES:
            return self._general(value, datum, companion)
        label, enc, dt, shape, off, length = hit   # one field, read straight from the headers: no Record objects
        if not self.decode:
            return (bytes(value[off:off + length]) if self.copy else value[off:off + length]), label
        if enc == _RAW:
            dtype = _NUMPY_DTYPES[dt]
            sample = np.frombuffer(value, dtype, length // dtype.itemsize, off).reshape(shape)
            return (sample.copy() if self.copy else sample), label
        fld = Field(self.field, ENCODING_NAMES[enc], value[off:off + length], shape, DTYPE_NAMES[dt])
        return decode_field(fld, copy=self.copy), label

    def _general(self, value, datum: bool, companion) -> tuple[Any, int]:
        """Every field parsed: name -> Field, or name -> serialized Datum (``image``; ``mask`` from the dual LMDB)."""
        if datum:
            fields = {"image": value} if companion is None else {"image": value, "mask": companion}
            label = decode_datum(value).label
        else:
            rec = unpack_record(value)
            fields, label = rec.fields, rec.label
        if self.fields is None:
            return self._value(fields, self.field), label
        if self.fields == "all":
            return {name: self._value(fields, name) for name in fields}, label
        return tuple(self._value(fields, name) for name in self.fields), label

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
