"""Encoding an image into a record field, and decoding a field back into an array."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from .config import StorageConfig
from .format import Field, raw_array
from .image import to_rgb


def encode_image(img: Image.Image, storage: StorageConfig, name: str = "image") -> Field:
    """Encode an RGB image as ``storage.encoding``; the field's shape is the decoded HWC shape."""
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


def decode_field(field: Field, copy: bool = True) -> np.ndarray:
    """Decoded array of a field. ``raw`` is zero-copy when ``copy`` is false (valid while the value is) and
    keeps its stored layout (HWC or CHW). ``passthrough`` (a source file) is decoded as the converter
    decodes sources: EXIF orientation applied, 8-bit RGB."""
    if field.encoding == "raw":
        arr = raw_array(field)
        return arr.copy() if copy else arr
    if field.encoding == "passthrough":
        with Image.open(io.BytesIO(field.payload)) as img:
            return np.array(to_rgb(ImageOps.exif_transpose(img)))
    with Image.open(io.BytesIO(field.payload)) as img:
        return np.array(img)   # writable, like raw copies (torch.from_numpy warns on read-only arrays)
