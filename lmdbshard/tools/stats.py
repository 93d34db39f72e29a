"""``lmdbshard stats``: the class histogram and the stored image-size distribution, as a PNG or as text.

Class counts come from the manifest (exact). Sizes come from the record headers
(the decoded shape and the stored bytes; no image is decoded) of the first
``samples`` records in stored order. The stored order is a uniform shuffle, so
that prefix is a uniform random sample of the dataset, and reading it is sequential.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lmdbshard.read.dataset import ShardedDataset
from lmdbshard.tools.draw import BACKGROUND, BAR_ALT, TEXT, MUTED, font, hbars, save_png, vbars
from lmdbshard.errors import ConfigError
from lmdbshard.format.record import unpack_record
from lmdbshard.read.roots import load_root
from lmdbshard.write.progress import plural

DEFAULT_SAMPLES = 100_000
BINS = 30
MAX_NAMED_CLASSES = 40     # more classes are drawn as unnamed columns
MAX_CLASS_LINES = 12       # --text lists each class up to this many, else the fewest and the most
EXTREMES = 3
WIDTH = 960


@dataclass(frozen=True)
class Histogram:
    edges: list[int]       # bin i holds values in [edges[i], edges[i+1])
    counts: list[int]

    @classmethod
    def of(cls, values: np.ndarray, bins: int = BINS) -> "Histogram":
        if len(values) == 0:
            return cls([0, 1], [0])
        lo, hi = int(values.min()), int(values.max()) + 1
        counts, edges = np.histogram(values, bins=min(bins, hi - lo), range=(lo, hi))
        return cls([int(round(e)) for e in edges], counts.tolist())


@dataclass(frozen=True)
class DatasetStats:
    root: str
    num_samples: int
    num_shards: int
    classes: list[str]
    class_counts: list[int]
    counts_exact: bool     # from the manifest; otherwise counted over the scanned records
    scanned: int
    widths: np.ndarray
    heights: np.ndarray
    nbytes: np.ndarray     # stored bytes of the image field


def collect(root: str, samples: int = DEFAULT_SAMPLES) -> DatasetStats:
    if samples <= 0:
        raise ConfigError(f"--samples must be a positive number of records, got {samples}")
    m = load_root(root)
    with ShardedDataset(root, decode=False) as ds:
        k = min(samples, len(ds))
        widths, heights, nbytes = (np.zeros(k, np.int64) for _ in range(3))
        labels = np.zeros(k, np.int64)
        for i in range(k):
            rec = unpack_record(ds.raw(i))
            f = rec.fields[ds.field]
            h, w = (f.shape[1], f.shape[2]) if f.layout == "CHW" else (f.shape[0], f.shape[1])
            widths[i], heights[i], nbytes[i], labels[i] = w, h, len(f.payload), rec.label
    counts = m.data.get("class_counts")
    exact = isinstance(counts, list) and len(counts) == len(m.classes)
    if not exact:
        counts = np.bincount(labels[labels >= 0], minlength=len(m.classes)).tolist()
    return DatasetStats(root, m.num_samples, len(m.shards), m.classes, list(counts), exact, k,
                        widths, heights, nbytes)


def _describe(values: np.ndarray) -> str:
    if len(values) == 0:
        return "no samples"
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return (f"min {values.min()}  p5 {p5:.0f}  median {p50:.0f}  p95 {p95:.0f}  max {values.max()}  "
            f"mean {values.mean():.1f}")


def _source(s: DatasetStats) -> str:
    if s.scanned == s.num_samples:
        return f"all {plural(s.scanned, 'sample')}" if s.scanned != 1 else "the only sample"
    return f"the first {s.scanned} of {s.num_samples} samples, a uniform sample since the stored order is shuffled"


def text_report(s: DatasetStats) -> str:
    """The plot's numbers in a few lines: classes (each one when there are few, else the extremes) and
    percentiles of the stored width, height and bytes. The histograms themselves are in the PNG."""
    where = "from the manifest" if s.counts_exact else f"counted over {_source(s)}"
    lines = [f"{s.root}: {plural(s.num_samples, 'sample')} in {plural(s.num_shards, 'shard')}, "
             f"{plural(len(s.classes), 'class', 'classes')}",
             f"samples per class ({where})"]
    c = np.asarray(s.class_counts)
    if len(s.classes) <= MAX_CLASS_LINES:
        width = max((len(name) for name in s.classes), default=0)
        lines += [f"  {i:>4}  {name:<{width}}  {n}" for i, (name, n) in enumerate(zip(s.classes, s.class_counts))]
    elif len(c):
        order = np.argsort(c, kind="stable")
        named = lambda idx: ", ".join(f"{s.classes[i]} {c[i]}" for i in idx)   # noqa: E731
        lines += [f"  fewest  {named(order[:EXTREMES])}", f"  most    {named(order[::-1][:EXTREMES])}"]
    if len(c):
        ratio = f"{c.max() / c.min():.2f}" if c.min() > 0 else "inf (a class is empty)"
        lines.append(f"  min {c.min()}  median {np.median(c):.0f}  max {c.max()}  max/min {ratio}")
    lines.append(f"stored image size ({_source(s)})")
    for name, values in (("width", s.widths), ("height", s.heights), ("bytes", s.nbytes)):
        lines.append(f"  {name:<7} {_describe(values)}")
    return "\n".join(lines)


def plot(s: DatasetStats) -> Image.Image:
    """Class histogram above, width / height / stored-bytes histograms below."""
    gap = 12
    named = len(s.classes) <= MAX_NAMED_CLASSES
    class_h = 44 + 18 * len(s.classes) if named else 260
    size_h = 240
    head = 52
    img = Image.new("RGB", (WIDTH, head + class_h + gap + size_h + gap), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((gap, 8), f"{os.path.basename(os.path.abspath(s.root))}: {plural(s.num_samples, 'sample')}, "
                        f"{plural(len(s.classes), 'class', 'classes')}, {plural(s.num_shards, 'shard')}", font=font(15), fill=TEXT)
    draw.text((gap, 30), f"image sizes over {_source(s)}", font=font(11), fill=MUTED)
    box = (gap, head, WIDTH - gap, head + class_h)
    title = "samples per class" + ("" if s.counts_exact else f" (over {s.scanned} scanned samples)")
    if named:
        hbars(draw, box, s.classes, s.class_counts, title)
    else:
        vbars(draw, box, s.class_counts, title + " (by label)", "label 0", f"label {len(s.classes) - 1}")
    panel_w = (WIDTH - 4 * gap) // 3
    y = head + class_h + gap
    for j, (name, values) in enumerate((("width (px)", s.widths), ("height (px)", s.heights),
                                        ("stored bytes per image", s.nbytes))):
        hist = Histogram.of(values)
        x = gap + j * (panel_w + gap)
        vbars(draw, (x, y, x + panel_w, y + size_h), hist.counts, name,
              str(hist.edges[0]), str(hist.edges[-1] - 1), color=BAR_ALT)
    return img


def stats_png(s: DatasetStats, out_png: str) -> str:
    return save_png(plot(s), out_png)
