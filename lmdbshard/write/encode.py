"""Encoding an image into a record field (read.decode turns it back into an array).

Each encoding's own limits are checked before encoding, so that an image it cannot hold is that
sample's error with a reason (``image.TooLarge``), not a failed shard:

- JPEG (``jpeg``, and Caffe Datum's ``datum_encoded``): at most 65,500 pixels per side (libjpeg);
- ``raw``: a field's payload length is a u32 in the record header (docs/FORMAT.md);
- a raw Caffe Datum: protobuf, and Caffe's parser, refuse messages of 2 GiB or more;
- ``png`` stores any size up to ``transform.max_pixels``. ``passthrough`` stores a source file
  unchanged; one that must be re-encoded falls back to PNG when JPEG cannot hold it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lmdbshard.format.record import Field
from lmdbshard.write.config import StorageConfig
from lmdbshard.write.image import TooLarge

JPEG_MAX_SIDE = 65_500        # libjpeg's JPEG_MAX_DIMENSION
FIELD_MAX_BYTES = 2**32 - 1   # the record header's u32 payload length
DATUM_MAX_BYTES = 2**31 - 1   # protobuf's message size limit


def fits_jpeg(width: int, height: int) -> bool:
    return max(width, height) <= JPEG_MAX_SIDE


def check_encodable(img: Image.Image, encoding: str, datum_encoded: bool = False) -> None:
    """Raise ``TooLarge`` when ``encoding`` cannot hold ``img``; the message says what to change."""
    w, h = img.size
    if (encoding == "jpeg" or (encoding == "caffe_datum" and datum_encoded)) and not fits_jpeg(w, h):
        fix = "storage.datum_encoded=false" if encoding == "caffe_datum" else "storage.encoding=png"
        raise TooLarge(f"{w}x{h} is over JPEG's limit of {JPEG_MAX_SIDE} pixels per side; set "
                       f"transform.resize_shorter to shrink it, or store it losslessly with {fix}")
    size = w * h * len(img.getbands())
    limit = DATUM_MAX_BYTES if encoding == "caffe_datum" else FIELD_MAX_BYTES
    if encoding in ("raw", "caffe_datum") and size > limit:
        raise TooLarge(f"{w}x{h} is {size} bytes uncompressed, over the {limit} a {encoding} value can hold; "
                       "lower transform.max_pixels or set transform.resize_shorter")


def encode_image(img: Image.Image, storage: StorageConfig, name: str = "image") -> Field:
    """Encode an RGB image as ``storage.encoding``; the field's shape is the decoded HWC shape."""
    check_encodable(img, storage.encoding)
    shape = (img.height, img.width, len(img.getbands()))
    if storage.encoding == "raw":
        if storage.layout == "CHW":
            chw = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))
            return Field(name, "raw", chw.tobytes(), chw.shape, "uint8", "CHW")
        return Field(name, "raw", img.tobytes(), shape, "uint8", "HWC")
    buf = io.BytesIO()
    if storage.encoding == "jpeg":
        img.save(buf, "JPEG", quality=storage.quality)
    else:
        img.save(buf, "PNG", compress_level=3)
    return Field(name, storage.encoding, buf.getvalue(), shape, "uint8", "HWC")
