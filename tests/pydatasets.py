"""Small indexable datasets for the python source tests, importable by Ray workers (see conftest)."""

from __future__ import annotations

import os
import time

import numpy as np
from PIL import Image


def pixels(label: int, index: int, size: tuple[int, int]) -> np.ndarray:
    """Image content that follows from (label, index): smooth gradients plus a class-coloured block.
    The tests' one definition; it lives here because Ray workers import this file, not conftest."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)),
                    np.full_like(xx, (37 * index) % 256)], axis=-1).astype(np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = [(80 * label) % 256, 200, 40 + 10 * index % 200]
    return img


class Squares:
    """``n`` items: (uint8 HxWx3 array, label i % 3), or (PIL image, 2-D mask array) with ``masks``."""

    classes = ["a", "b", "c"]

    def __init__(self, n: int, masks: bool = False):
        self.n, self.masks = n, masks

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        arr = pixels(i % 3, i, (20 + i % 5, 18 + i % 4))
        if self.masks:
            mask = (np.arange(arr.shape[0] * arr.shape[1]).reshape(arr.shape[:2]) % 5).astype(np.uint8)
            return Image.fromarray(arr), mask
        return arr, i % 3


class Held(Squares):
    """``n`` Squares whose every read waits until the file ``release`` exists. Before it waits, a read
    leaves an empty file named after its process id in the folder ``readers``, so that a test sees
    which processes read at the same time. A read that waits ``timeout`` seconds fails."""

    def __init__(self, n: int, readers: str, release: str, timeout: float = 300.0):
        super().__init__(n)
        self.readers, self.release, self.timeout = readers, release, timeout

    def __getitem__(self, i: int):
        os.makedirs(self.readers, exist_ok=True)
        open(os.path.join(self.readers, str(os.getpid())), "w").close()
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(self.release):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.release} did not appear within {self.timeout:.0f} s")
            time.sleep(0.02)
        return super().__getitem__(i)


class Broken:
    """Fails to build: the error must reach the user in one line."""

    def __init__(self):
        raise RuntimeError("no data here")


class EncodedBytes:
    """Items of (JPEG bytes, label): bytes are not an image; each sample must be skipped with the fix."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return b"\xff\xd8\xff\xe0 not decoded", i % 2
