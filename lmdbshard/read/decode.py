"""Decoding a stored field back into an array, and the one conversion of any image to 8-bit RGB.

The converter uses ``to_rgb`` on sources too, so that a ``passthrough`` field (a source file's own
bytes) decodes to exactly the pixels the converter would have stored.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from lmdbshard.format.record import Field, raw_array


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any mode. 16-bit and 32-bit integer images keep their top 8 bits."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        shift = 8 if img.mode.startswith("I;16") or arr.max(initial=0) <= 0xFFFF else 24
        img = Image.fromarray((arr >> shift).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB") if img.mode != "RGB" else img


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
