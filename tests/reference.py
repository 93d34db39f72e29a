"""Independent re-implementations for the tests: SplitMix64 draws and the augmentation ops, in plain
Python and Pillow, written from the documented algorithm (docs/FORMAT.md, augment.py's docstring)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance

M = 2**64 - 1


def mix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def sample_seed(seed: int, source_index: int, rnd: int) -> int:
    return mix64(mix64(mix64(seed) ^ source_index) ^ rnd)


class Stream:
    """Uniform numbers of op ``j`` of a sample."""

    def __init__(self, seed: int, source_index: int, rnd: int, j: int):
        self.base = mix64(sample_seed(seed, source_index, rnd) ^ j)
        self.i = 0

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        x = mix64((self.base + self.i) & M) >> 11
        self.i += 1
        return lo + (hi - lo) * x / 2.0**53

    def integer(self, lo: int, hi: int) -> int:
        return lo + min(hi - lo, int(self.u() * (hi - lo + 1)))


def rrc(img: Image.Image, size: int, scale, ratio, s: Stream, resample) -> Image.Image:
    W, H = img.size
    for _ in range(10):
        area = W * H * s.u(*scale)
        aspect = math.exp(s.u(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= W and 0 < h <= H:
            top = s.integer(0, H - h)
            left = s.integer(0, W - w)
            return img.crop((left, top, left + w, top + h)).resize((size, size), resample)
    in_ratio = W / H   # ten misses: torchvision's central crop, the aspect ratio clamped into ``ratio``
    if in_ratio < min(ratio):
        w, h = W, round(W / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(H * max(ratio)), H
    else:
        w, h = W, H
    top, left = (H - h) // 2, (W - w) // 2
    return img.crop((left, top, left + w, top + h)).resize((size, size), resample)


def jitter(img: Image.Image, s: Stream, b: float, c: float, sat: float) -> Image.Image:
    fb, fc, fs = s.u(1 - b, 1 + b), s.u(1 - c, 1 + c), s.u(1 - sat, 1 + sat)
    img = ImageEnhance.Brightness(img).enhance(fb)
    img = ImageEnhance.Contrast(img).enhance(fc)
    return ImageEnhance.Color(img).enhance(fs)


def flipped(s: Stream, p: float) -> bool:
    return s.u() < p


def hflip(arr: np.ndarray) -> np.ndarray:
    return arr[:, ::-1]
