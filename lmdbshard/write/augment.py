"""Write-time augmentation: an ordered list of ops, seeded per sample, applied to an image and its mask.

Seeding. Sample ``(source_index, round)`` has the seed ``plan.sample_seed(seed, source_index, round)``.
Op ``j`` of the list draws from its own stream: ``op_seed = mix64_int(sample_seed ^ j)``, and its ``i``-th
uniform number is ``(mix64_int(op_seed + i mod 2**64) >> 11) * 2**-53`` (SplitMix64, as the plan uses).
So a retried, resumed or rebuilt shard writes the same bytes on any machine and numpy version, an op's
draws do not depend on the ops before it, and a record's augmentation can be recomputed from its
``source_index`` and ``round`` alone. (seed, source index, round) identifies a sample as well as
(seed, global position, round) does, and it does not change when the shard size changes.

Geometric ops (``resize``, ``center_crop``, ``random_resized_crop``, ``hflip``) move the mask with the
image, resampled nearest-neighbour; ``color_jitter`` leaves the mask alone. Each op's output size is
checked against ``max_pixels`` before the op runs (``image.TooLarge`` names the op).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from PIL import Image, ImageEnhance

from lmdbshard.write.choices import Resample
from lmdbshard.write.config import AugmentOp
from lmdbshard.write.image import RESAMPLE, center_crop_box, check_pixels, resized_size
from lmdbshard.format.splitmix import MASK64, mix64_int


class Draws:
    """The uniform numbers of one op of one sample: a counter-based SplitMix64 stream."""

    def __init__(self, sample_seed: int, op_index: int):
        self.seed = mix64_int(sample_seed ^ op_index)
        self.i = 0

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        u = (mix64_int((self.seed + self.i) & MASK64) >> 11) * 2.0 ** -53
        self.i += 1
        return lo + (hi - lo) * u

    def randint(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi], both included."""
        return lo + min(hi - lo, int(self.uniform() * (hi - lo + 1)))


def augment(img: Image.Image, mask: Optional[Image.Image], ops: Sequence[AugmentOp], sample_seed: int,
            resample: str = Resample.bilinear, max_pixels: Optional[int] = None) -> tuple[Image.Image, Optional[Image.Image]]:
    """Apply ``ops`` in order; returns the new image and mask. An op that would make an image over
    ``max_pixels`` (None: no limit) raises ``TooLarge`` before it allocates it."""
    for j, op in enumerate(ops):
        draws = Draws(sample_seed, j)
        if op.op == "color_jitter":
            img = color_jitter(img, jitter_factors(op, draws))
            continue
        box, size = _geometry(op, img.size, draws)
        if max_pixels is not None:
            check_pixels(_output_size(img.size, box, size), max_pixels, f"augment.ops[{j}] ({op.op})")
        flt = RESAMPLE[op.resample or resample]
        img = _move(img, box, size, flt)
        if mask is not None:
            mask = _move(mask, box, size, Image.Resampling.NEAREST)
    return img, mask


def _geometry(op: AugmentOp, size: tuple[int, int], draws: Draws):
    """(crop box or None or "flip", output size or None) of a geometric op on an image of ``size``."""
    w, h = size
    if op.op == "resize":
        return None, (op.exact[1], op.exact[0]) if op.exact else resized_size(w, h, op.size)
    if op.op == "center_crop":
        return center_crop_box(w, h, op.size), None
    if op.op == "random_resized_crop":
        return rrc_box(w, h, op.scale, op.ratio, draws), (op.size, op.size)
    return ("flip" if draws.uniform() < op.p else None), None   # hflip


def _output_size(size: tuple[int, int], box, out) -> tuple[int, int]:
    """The (width, height) ``_move`` returns for an image of ``size``."""
    if out is not None:
        return tuple(out)
    if box is not None and box != "flip":
        return box[2] - box[0], box[3] - box[1]
    return size


def _move(img: Image.Image, box, size, flt) -> Image.Image:
    if box == "flip":
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if box is not None:
        img = img.crop(box)
    if size is not None and tuple(size) != img.size:
        img = img.resize(tuple(size), flt)
    return img


def rrc_box(width: int, height: int, scale, ratio, draws: Draws) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (10 tries, then a central crop), as a box."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * draws.uniform(scale[0], scale[1])
        aspect = math.exp(draws.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = draws.randint(0, height - h)
            left = draws.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def jitter_factors(op: AugmentOp, draws: Draws) -> dict[str, Optional[float]]:
    """Drawn in this order, each only when its strength is > 0: brightness, contrast, saturation, hue."""
    out: dict[str, Optional[float]] = {}
    for name in ("brightness", "contrast", "saturation"):
        x = getattr(op, name)
        out[name] = draws.uniform(max(0.0, 1.0 - x), 1.0 + x) if x > 0 else None
    out["hue"] = draws.uniform(-op.hue, op.hue) if op.hue > 0 else None
    return out


def color_jitter(img: Image.Image, factors: dict[str, Optional[float]]) -> Image.Image:
    """Brightness, contrast, saturation (Pillow's ImageEnhance), then a hue shift in HSV, in that order."""
    for name, enhancer in (("brightness", ImageEnhance.Brightness), ("contrast", ImageEnhance.Contrast),
                           ("saturation", ImageEnhance.Color)):
        if factors[name] is not None:
            img = enhancer(img).enhance(factors[name])
    if factors["hue"] is not None:
        h, s, v = img.convert("HSV").split()
        shift = int(round(factors["hue"] * 255))
        h = h.point(lambda x: (x + shift) % 256)
        img = Image.merge("HSV", (h, s, v)).convert("RGB")
    return img
