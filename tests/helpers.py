"""Helpers shared by the test modules (test modules never import each other, nor conftest).

Other plain helper modules, each one concept: ``pydatasets.py`` (datasets that Ray workers import by
module name), ``reference.py`` (independent re-implementations of SplitMix64 and the augmentation ops),
``faults.py`` (holding a worker mid-shard to kill it).
"""

from __future__ import annotations

import glob
import os
import shutil
from collections import Counter
from dataclasses import dataclass

import lmdb
import numpy as np
from PIL import Image, ImageOps

from lmdbshard import ConvertConfig, RayConfig, SourceConfig, StorageConfig, TransformConfig
from lmdbshard.write.resume import OutputDir

from pydatasets import pixels

__all__ = ["CLASSES", "Tree", "make_tree", "job", "copytree", "assert_exactly_once", "pixels",
           "reference_rgb", "stored_items", "sources", "upload_tree"]

CLASSES = ["cat", "dog", "zebra"]


@dataclass
class Tree:
    root: str
    files: dict[str, int]   # relative path -> label, for every valid image


def make_tree(root: str, per_class: int = 7, classes=CLASSES) -> Tree:
    """root/<class>/img_NN.jpg (varied sizes and aspect ratios), plus a PNG, an upper-case extension
    and a nested folder in each class."""
    files = {}
    for label, name in enumerate(classes):
        for i in range(per_class):
            size = (40 + 13 * ((i * 7 + label) % 9), 36 + 11 * ((i * 5 + label * 3) % 8))
            arr = pixels(label, i, size)
            if i == 1:
                rel = f"{name}/img_{i:02d}.png"
            elif i == 2:
                rel = f"{name}/sub/deeper/img_{i:02d}.JPEG"
            else:
                rel = f"{name}/img_{i:02d}.jpg"
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(arr).save(path, "PNG" if rel.endswith(".png") else "JPEG", quality=92)
            files[rel] = label
        with open(os.path.join(root, name, "notes.txt"), "w") as f:   # not an image extension: ignored
            f.write("not an image")
    return Tree(root, files)


def job(src: str, out: str, **kw) -> ConvertConfig:
    """A conversion config for tests: small shards, quiet progress, the shared Ray cluster."""
    transform = kw.pop("transform", TransformConfig(resize_shorter=32))
    storage = kw.pop("storage", StorageConfig(encoding="jpeg", quality=90))
    ray = kw.pop("ray", RayConfig(max_in_flight=4))
    return ConvertConfig(source=SourceConfig(root=src), out=out, transform=transform, storage=storage,
                         ray=ray, progress="none", **{"shard_size": 5, **kw})


def upload_tree(local: str, url: str) -> str:
    """Every file under ``local`` to ``url``/<same relative path>: the layout a conversion into a URL makes."""
    from lmdbshard.storage import objects
    from lmdbshard.storage.urls import join
    for folder, _, files in os.walk(local):
        for name in files:
            path = os.path.join(folder, name)
            objects.upload(path, join(url, *os.path.relpath(path, local).split(os.sep)))
    return url


def copytree(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def assert_exactly_once(per_rank: list[list[int]], n: int, drop_last: bool) -> None:
    """The split promise: equal counts per rank; every index once; padding only as documented."""
    counts = {len(r) for r in per_rank}
    assert len(counts) <= 1, f"ranks got different counts: {[len(r) for r in per_rank]}"
    m = counts.pop() if counts else 0
    seen = Counter(i for r in per_rank for i in r)
    assert set(seen) <= set(range(n))
    if drop_last:
        assert m == n // len(per_rank) and max(seen.values(), default=1) == 1
    else:
        assert m == -(-n // len(per_rank)) and set(seen) == set(range(n))
        assert sum(seen.values()) - n == m * len(per_rank) - n   # only the padding repeats


def reference_rgb(path: str, shorter: int | None, crop: int | None = None,
                  resample=Image.Resampling.BILINEAR) -> np.ndarray:
    """The documented pipeline written out with plain Pillow calls: draft, EXIF, RGB, resize, crop."""
    img = Image.open(path)
    w, h = img.size
    if shorter:
        size = (shorter, round(h * shorter / w)) if w <= h else (round(w * shorter / h), shorter)
        if img.format == "JPEG":
            img.draft("RGB", size)
    img = ImageOps.exif_transpose(img).convert("RGB")
    if shorter:
        w, h = img.size
        size = (shorter, round(h * shorter / w)) if w <= h else (round(w * shorter / h), shorter)
        if size != img.size:
            img = img.resize(size, resample, reducing_gap=3.0)
    if crop:
        left, top = int(round((img.width - crop) / 2.0)), int(round((img.height - crop) / 2.0))
        img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img)


def stored_items(out: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of every shard, in shard then key order, read with plain lmdb."""
    items = []
    for path in sorted(glob.glob(os.path.join(out, "shards", "*.lmdb"))):
        env = lmdb.open(path, subdir=False, readonly=True, lock=False)
        with env.begin() as txn:
            items.extend((bytes(k), bytes(v)) for k, v in txn.cursor())
        env.close()
    return items


def sources(out: str) -> list[str]:
    """Source paths by source index, from plan.json."""
    return OutputDir(out).source_paths()
