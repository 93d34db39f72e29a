"""Encoding an image into a record field (read.decode turns it back into an array)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lmdbshard.write.config import StorageConfig
from lmdbshard.format.record import Field


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
