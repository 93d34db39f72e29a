"""Caffe ``Datum`` values: the protobuf wire format of caffe.proto's ``message Datum``, by hand.

    message Datum {
      optional int32 channels = 1;  optional int32 height = 2;  optional int32 width = 3;
      optional bytes data = 4;      optional int32 label = 5;   repeated float float_data = 6;
      optional bool encoded = 7 [default = false];
    }

With ``storage.encoding: caffe_datum`` every LMDB value is one serialized Datum, so Caffe's Data
layer and NVIDIA DALI's caffe reader read the shards directly. ``data`` holds, as Caffe's
``CVMatToDatum`` writes it, the uint8 pixels in CHW order with channels in **BGR** order; or, with
``encoded`` true (what ``convert_imageset --encoded`` writes, and what DALI decodes), a JPEG file.
A mask is a 1-channel Datum of the label matrix, stored in the companion ``*-label.lmdb`` under the
same key. ``encoded`` is always written, false included, as Caffe's ``CVMatToDatum`` does: DALI
treats a Datum without it as encoded, and returns raw pixels as a flat buffer instead of an
(H, W, C)-shaped one. Two extension fields, which Caffe and DALI skip as unknown fields, keep what
lmdbshard records hold in their header: ``source_index = 100`` and ``round = 101`` (both varint).
Each shard's LMDB (and dual LMDB) is published as an environment directory holding ``data.mdb``,
which is what Caffe's and DALI's LMDB readers open.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
import numpy as np
from PIL import Image

from lmdbshard.errors import FormatError
from lmdbshard.format.record import Field, Record

SOURCE_INDEX_FIELD = 100
ROUND_FIELD = 101


@dataclass(frozen=True)
class Datum:
    channels: int = 0
    height: int = 0
    width: int = 0
    data: bytes | memoryview = b""
    label: int = 0
    encoded: bool = False
    source_index: int = 0
    round: int = 0


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1            # int32 negatives are sign-extended to 10 bytes, as protobuf does
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def encode_datum(d: Datum, with_label: bool = True) -> bytes:
    """Serialize in field-number order, as protobuf does; ``label`` is left out when ``with_label`` is false."""
    parts = [_key(1, 0), _varint(d.channels), _key(2, 0), _varint(d.height), _key(3, 0), _varint(d.width),
             _key(4, 2), _varint(len(d.data)), bytes(d.data)]
    if with_label:
        parts += [_key(5, 0), _varint(d.label)]
    parts += [_key(7, 0), b"\x01" if d.encoded else b"\x00"]   # always, as Caffe's CVMatToDatum sets it
    parts += [_key(SOURCE_INDEX_FIELD, 0), _varint(d.source_index), _key(ROUND_FIELD, 0), _varint(d.round)]
    return b"".join(parts)


def datum_of(img: Image.Image, label: int, source_index: int, round: int, encoded: bool = False,
             quality: int = 90) -> bytes:
    """The Datum of an RGB image (CHW BGR bytes, or a JPEG when ``encoded``) or of a mask ("L", one channel)."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    if encoded:
        buf = io.BytesIO()
        img.save(buf, "JPEG" if c == 3 else "PNG", quality=quality)
        data = buf.getvalue()
    else:
        data = np.ascontiguousarray(arr[:, :, ::-1].transpose(2, 0, 1) if c == 3 else arr.transpose(2, 0, 1)).tobytes()
    d = Datum(c, h, w, data, max(label, 0), encoded, source_index, round)
    return encode_datum(d, with_label=label >= 0)


def decode_datum(value: bytes | memoryview) -> Datum:
    """Parse a Datum value (unknown fields are skipped, as protobuf parsers do)."""
    view = memoryview(value)
    pos, n = 0, len(view)
    fields: dict = {}

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= n or shift > 63:
                raise FormatError("Datum value is truncated inside a varint")
            b = view[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    while pos < n:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields[number] = varint()
        elif wire == 2:
            length = varint()
            if pos + length > n:
                raise FormatError("Datum value is truncated inside a bytes field")
            fields[number] = view[pos:pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise FormatError(f"Datum value has an unsupported wire type {wire} (field {number})")
    if pos != n:
        raise FormatError("Datum value is truncated")
    label = fields.get(5, -1)   # absent: no label (-1, as in lmdbshard records; Caffe reads it as 0)
    label = label - (1 << 64) if label >= 1 << 63 else label
    return Datum(fields.get(1, 0), fields.get(2, 0), fields.get(3, 0), fields.get(4, b""), label,
                 bool(fields.get(7, 0)), fields.get(SOURCE_INDEX_FIELD, 0), fields.get(ROUND_FIELD, 0))


def datum_array(d: Datum, copy: bool = True) -> np.ndarray:
    """The Datum's image as lmdbshard returns every image: HWC RGB uint8 (HxW for one channel)."""
    if d.encoded:
        with Image.open(io.BytesIO(d.data)) as img:
            arr = np.array(img)
        return arr
    if len(d.data) != d.channels * d.height * d.width:
        raise FormatError(f"Datum data is {len(d.data)} bytes, not channels*height*width = "
                          f"{d.channels}*{d.height}*{d.width}")
    chw = np.frombuffer(d.data, dtype=np.uint8).reshape(d.channels, d.height, d.width)
    if d.channels == 1:
        return chw[0].copy() if copy else chw[0]
    return np.ascontiguousarray(chw[::-1].transpose(1, 2, 0))


def datum_record(value: bytes | memoryview, companion: bytes | memoryview | None = None) -> Record:
    """A Datum (and its dual LMDB companion) as a Record: ``image`` (raw CHW BGR, or the JPEG when
    encoded) and ``mask`` fields, with the label, source index and round the Datum holds."""
    fields = {}
    for name, v in (("image", value), ("mask", companion)):
        if v is not None:
            d = decode_datum(v)
            shape = (d.channels, d.height, d.width)
            fields[name] = (Field(name, "jpeg", d.data, shape, "uint8", "CHW") if d.encoded
                            else Field(name, "raw", d.data, shape, "uint8", "CHW"))
            if name == "image":
                head = d
    return Record(head.label, head.source_index, head.round, fields)


def label_filename(shard_file: str) -> str:
    """``shard-000007.lmdb`` -> ``shard-000007-label.lmdb``: the dual LMDB companion, same keys."""
    return shard_file[:-len(".lmdb")] + "-label.lmdb"

