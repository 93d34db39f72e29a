"""One sample through the write pipeline: decode, transform, augment, encode into the LMDB value(s).

``process`` is called by the shard task for each planned item with what the read stage got (the
file's bytes and its mask's, or a python dataset's item) and returns the value to store, plus the
companion value of a dual LMDB (Caffe Datum mode with masks). Stage times are added to ``seconds``.

Passthrough: with ``storage.encoding: passthrough`` the source file's bytes are stored unchanged
when the pipeline would not change the image (no augmentation ops, no center crop, and no resize or
a shorter side already <= ``transform.resize_shorter``: passthrough never upscales). The file is
validated by parsing its header (format, size, EXIF orientation) without decoding the pixels.
Otherwise the image is decoded, resized and re-encoded: PNG sources as PNG, all others as JPEG
(PNG too when JPEG cannot hold the size: over 65,500 pixels per side).

Limits: every stage checks sizes before it allocates (the source's header against
``transform.max_pixels``, each resize's output, each augment op's output, the encoder's own limits,
see ``encode.py``), and any exception a stage raises is the sample's error, never the shard's.
"""

from __future__ import annotations

import dataclasses
import io
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from lmdbshard.write.augment import augment
from lmdbshard.write.encode import check_encodable, encode_image, fits_jpeg
from lmdbshard.format.datum import datum_of
from lmdbshard.errors import SampleError
from lmdbshard.format.record import Field, pack_record
from lmdbshard.read.decode import to_rgb
from lmdbshard.write.image import TooLarge, check_pixels, decode_rgb, transform
from lmdbshard.format.splitmix import sample_seed
from lmdbshard.write.sources.python import split_item

PASSTHROUGH_FORMATS = {"JPEG": "jpeg", "PNG": "png"}
_ROTATED = (5, 6, 7, 8)   # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Encoded:
    value: bytes                       # the LMDB value: an lmdbshard record, or a Caffe Datum
    label_value: Optional[bytes]       # the dual LMDB's value under the same key (Datum mode with a mask)
    label: int
    passthrough: bool = False
    mask: bool = False                 # the sample has a mask (a field, or the dual LMDB's value)


def process(item, payload: Any, opts, seconds: dict[str, float]) -> Encoded:
    """``payload``: (image bytes, mask bytes or None) for file sources, ``dataset[i]`` for python ones.

    Whatever goes wrong in a stage is this sample's ``SampleError`` (its path, the stage and the reason),
    never the shard's: the shard task records it under ``on_error=skip``."""
    t0 = time.perf_counter()
    storage, cfg = opts.storage, opts.transform
    label = item.label
    with _stage(item.path, "decode"):
        if opts.python is None:   # a file source: (image bytes, mask bytes or None)
            data, mask_data = payload
            if storage.encoding == "passthrough":
                shape = _fits(data, opts)
                if shape is not None:
                    fields = [Field("image", "passthrough", data, shape, "uint8", "HWC")]
                    if mask_data is not None:
                        mask = decode_mask(mask_data, item.mask_path, (shape[1], shape[0]))
                        fields.append(encode_mask(mask, storage.mask_encoding))
                    seconds["decode"] += time.perf_counter() - t0
                    return Encoded(pack_record(fields, label, item.source_index, item.round), None, label, True,
                                   mask_data is not None)
            img = decode_rgb(data, item.path, cfg if mask_data is None else dataclasses.replace(cfg, draft=False))
            mask = None if mask_data is None else decode_mask(mask_data, item.mask_path, img.size)
        else:
            img, mask, label = split_item(payload, item.path)
            check_pixels(img.size, cfg.max_pixels, "storing the dataset's item")
            img = to_rgb(img)
            mask = None if mask is None else _mask_mode(mask, item.path, img.size)
    t1 = time.perf_counter()
    with _stage(item.path, "transform"):
        img = transform(img, cfg)
        mask = None if mask is None else transform(mask, cfg, Image.Resampling.NEAREST)
    ta = time.perf_counter()
    if opts.augment.ops:
        with _stage(item.path, "augment"):
            seed = sample_seed(opts.seed, item.source_index, item.round)
            img, mask = augment(img, mask, opts.augment.ops, seed, cfg.resample, cfg.max_pixels)
    t2 = time.perf_counter()
    with _stage(item.path, "encode"):
        encoded = _encode(img, mask, label, item, storage, payload)
    seconds["decode"] += t1 - t0
    seconds["transform"] += ta - t1
    seconds["augment"] += t2 - ta if opts.augment.ops else 0.0   # no augmentation: no share of the time
    seconds["encode"] += time.perf_counter() - t2
    return encoded


@contextmanager
def _stage(path: str, stage: str) -> Iterator[None]:
    """Turn any exception of one sample's ``stage`` into its SampleError: a hostile file may make Pillow,
    numpy or the user's dataset raise anything, and it must cost that sample, not the shard."""
    try:
        yield
    except SampleError:
        raise
    except TooLarge as exc:
        raise SampleError(path, f"cannot {stage}: {exc}") from None
    except Exception as exc:   # deliberately broad: see above; the reason keeps the type and message
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise SampleError(path, f"cannot {stage}: {why}") from None


def _encode(img, mask, label, item, storage, payload) -> Encoded:
    if storage.encoding == "caffe_datum":
        check_encodable(img, "caffe_datum", storage.datum_encoded)
        value = datum_of(img, label, item.source_index, item.round, storage.datum_encoded, storage.quality)
        companion = None if mask is None else datum_of(mask, -1, item.source_index, item.round)
        return Encoded(value, companion, label, mask=mask is not None)
    if storage.encoding == "passthrough":   # the source did not fit: re-encode, lossless stays lossless
        png = isinstance(payload, tuple) and isinstance(payload[0], bytes) and payload[0][:8] == b"\x89PNG\r\n\x1a\n"
        storage = dataclasses.replace(storage, encoding="png" if png or not fits_jpeg(*img.size) else "jpeg")
    fields = [encode_image(img, storage)]
    if mask is not None:
        fields.append(encode_mask(mask, storage.mask_encoding))
    return Encoded(pack_record(fields, label, item.source_index, item.round), None, label, mask=mask is not None)


def _fits(data: bytes, opts) -> Optional[tuple[int, int, int]]:
    """The decoded (H, W, 3) shape when the file can be stored as it is, else None (header only)."""
    t, aug = opts.transform, opts.augment
    if aug.ops or t.center_crop:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            fmt = img.format
            orientation = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None   # the full decode that follows reports the reason
    if fmt not in PASSTHROUGH_FORMATS or w * h > t.max_pixels or (t.resize_shorter and min(w, h) > t.resize_shorter):
        return None
    return (w, h, 3) if orientation in _ROTATED else (h, w, 3)


def decode_mask(data: bytes, path: str, size: tuple[int, int]) -> Image.Image:
    """A mask file as an 8-bit label image ("L"; palette images keep their indices) or RGB."""
    if not data:
        raise SampleError(path, "empty mask file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        if img.size != size:   # before its pixels are decoded: its image already passed the size limits
            raise SampleError(path, f"mask is {img.width}x{img.height} but its image is {size[0]}x{size[1]}")
        img.load()
    except SampleError:
        raise
    except UnidentifiedImageError:
        raise SampleError(path, "mask is not an image Pillow can identify") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise SampleError(path, f"cannot decode mask: {exc}") from None
    return _mask_mode(img, path, size)


def _mask_mode(img: Image.Image, path: str, size: tuple[int, int]) -> Image.Image:
    if img.mode in ("1", "L", "P"):
        img = Image.fromarray(np.asarray(img).astype(np.uint8), "L") if img.mode != "L" else img
    elif img.mode != "RGB":
        raise SampleError(path, f"mask mode {img.mode} is not supported; save masks as 8-bit (L or P) or RGB PNG")
    if img.size != size:
        raise SampleError(path, f"mask is {img.width}x{img.height} but its image is {size[0]}x{size[1]}")
    return img


def encode_mask(mask: Image.Image, encoding: str) -> Field:
    arr = np.asarray(mask)
    layout = "HWC" if arr.ndim == 3 else "none"
    if encoding == "raw":
        return Field("mask", "raw", arr.tobytes(), arr.shape, "uint8", layout)
    buf = io.BytesIO()
    mask.save(buf, "PNG", compress_level=3)
    return Field("mask", "png", buf.getvalue(), arr.shape, "uint8", layout)

