"""``lmdbshard preview``: a contact sheet of random samples, to check images and labels at a glance.

Each cell shows one stored sample as the reader returns it (so orientation,
resizing and cropping are what training will see), captioned with its class
name, its dataset index and its stored size. A ``mask`` field, when records have
one, is overlaid in colour.

Sampling costs O(n) reads. With ``class_name`` it walks the stored order from a
seeded random start and keeps the first ``n`` samples of that class: because the
stored order is a uniform shuffle, they are a uniform sample of the class.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from lmdbshard.read.decode import decode_field
from lmdbshard.read.dataset import ShardedDataset
from lmdbshard.tools.draw import BACKGROUND, MUTED, PANEL, TEXT, fit, font, save_png
from lmdbshard.errors import ConfigError
from lmdbshard.format.record import NO_LABEL, unpack_record

MASK_FIELD = "mask"
MASK_ALPHA = 0.45
MASK_COLORS = np.array([(255, 64, 64), (64, 220, 96), (64, 128, 255), (255, 200, 40), (220, 80, 255),
                        (40, 220, 220)], np.float32)
CAPTION_H = 32
GAP = 6
HEADER_H = 30


@dataclass(frozen=True)
class PreviewOptions:
    n: int = 64
    seed: int = 0
    class_name: Optional[str] = None
    cell: int = 128          # each sample is fit into cell x cell pixels

    def validate(self) -> "PreviewOptions":
        if self.n <= 0:
            raise ConfigError(f"--n must be a positive number of samples, got {self.n}")
        if not 16 <= self.cell <= 1024:
            raise ConfigError(f"--cell must be 16..1024 pixels, got {self.cell}")
        return self


def class_label(classes: list[str], name: str) -> int:
    if name in classes:
        return classes.index(name)
    close = difflib.get_close_matches(name, classes, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"classes: {', '.join(classes[:10])}" + (
        " ..." if len(classes) > 10 else "")
    raise ConfigError(f"--class {name!r} is not a class of this dataset; {hint}")


def pick(ds: ShardedDataset, n: int, seed: int, label: Optional[int] = None) -> list[int]:
    """Up to ``n`` distinct dataset indices chosen with ``seed`` (of class ``label`` if given), ascending."""
    rng = np.random.default_rng(seed)
    total = len(ds)
    if total == 0:
        return []
    if label is None:
        return sorted(rng.choice(total, size=min(n, total), replace=False).tolist())
    start = int(rng.integers(total))
    found = []
    for j in range(total):
        i = (start + j) % total
        if unpack_record(ds.raw(i)).label == label:
            found.append(i)
            if len(found) == n:
                break
    return sorted(found)


def overlay_mask(img: Image.Image, mask: np.ndarray) -> Image.Image:
    """Colour the nonzero pixels of ``mask`` (one colour per value) over ``img``."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != (img.height, img.width):
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(img.size, Image.Resampling.NEAREST))
    rgb = np.asarray(img, np.float32).copy()
    on = mask > 0
    colors = MASK_COLORS[(mask[on].astype(np.int64) - 1) % len(MASK_COLORS)]
    rgb[on] = (1 - MASK_ALPHA) * rgb[on] + MASK_ALPHA * colors
    return Image.fromarray(rgb.round().astype(np.uint8), "RGB")


def _sample(ds: ShardedDataset, i: int, field: str) -> tuple[Image.Image, int]:
    rec = unpack_record(ds.raw(i))
    arr = decode_field(rec.fields[field])
    img = Image.fromarray(arr if arr.ndim == 2 or arr.shape[-1] == 3 else arr[..., 0]).convert("RGB")
    if MASK_FIELD in rec.fields:
        img = overlay_mask(img, decode_field(rec.fields[MASK_FIELD]))
    return img, rec.label


def contact_sheet(ds: ShardedDataset, indices: list[int], title: str, cell: int = 128,
                  field: str = "image") -> Image.Image:
    cols = max(1, min(len(indices), math.ceil(math.sqrt(len(indices)))))
    rows = max(1, math.ceil(len(indices) / cols))
    width = GAP + cols * (cell + GAP)
    sheet = Image.new("RGB", (max(width, 320), HEADER_H + rows * (cell + CAPTION_H + GAP) + GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP + 2, 8), fit(draw, title, sheet.width - 2 * GAP, 13), font=font(13), fill=TEXT)
    for slot, i in enumerate(indices):
        img, label = _sample(ds, i, field)
        size = f"{img.width}x{img.height}"
        img.thumbnail((cell, cell), Image.Resampling.BILINEAR)
        x = GAP + (slot % cols) * (cell + GAP)
        y = HEADER_H + (slot // cols) * (cell + CAPTION_H + GAP)
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=PANEL)
        sheet.paste(img, (x + (cell - img.width) // 2, y + (cell - img.height) // 2))
        name = ds.classes[label] if 0 <= label < len(ds.classes) else ("no label" if label == NO_LABEL
                                                                       else f"label {label}?")
        draw.text((x + 1, y + cell + 2), fit(draw, name, cell - 2, 12), font=font(12), fill=TEXT)
        draw.text((x + 1, y + cell + 17), fit(draw, f"#{i}  {size}", cell - 2, 11), font=font(11), fill=MUTED)
    return sheet


def default_preview_file(root: str) -> str:
    """``<dataset folder name>-preview.png`` in the current folder, e.g. ``demo-preview.png``."""
    return f"{os.path.basename(os.path.abspath(root)) or 'dataset'}-preview.png"


def preview(root: str, out_png: str, opts: PreviewOptions) -> tuple[str, int]:
    """Write the contact sheet of ``root`` to ``out_png``; returns (path, samples shown)."""
    opts.validate()
    with ShardedDataset(root, decode=False) as ds:
        label = class_label(ds.classes, opts.class_name) if opts.class_name is not None else None
        indices = pick(ds, opts.n, opts.seed, label)
        if not indices:
            what = f"class {opts.class_name!r}" if opts.class_name is not None else "the dataset"
            raise ConfigError(f"{what} has no samples in {root!r}; nothing to preview")
        where = f", class {opts.class_name}" if opts.class_name is not None else ""
        title = (f"{os.path.basename(os.path.abspath(root))}: {len(indices)} of {len(ds)} samples "
                 f"(seed {opts.seed}{where})")
        sheet = contact_sheet(ds, indices, title, opts.cell, ds.field)
    return save_png(sheet, out_png), len(indices)
