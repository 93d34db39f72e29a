"""A deterministic ImageFolder of real, photo-like JPEG files, for the demo, tests and benchmarks.

Each class has its own palette and motif, drawn over smooth gradients with
multi-scale texture, so decode cost is realistic and a contact sheet shows at a
glance which class a sample belongs to. Same arguments, same bytes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lmdbshard.errors import ConfigError, SourceError

CLASS_NAMES = ["amber_circles", "azure_squares", "coral_triangles", "forest_stripes", "golden_rings",
               "indigo_checks", "lime_dots", "rose_diamonds", "slate_waves", "teal_crosses"]
_PALETTE = [(230, 150, 30), (40, 120, 230), (240, 110, 90), (30, 120, 50), (220, 180, 40),
            (70, 50, 160), (150, 220, 60), (220, 90, 150), (100, 110, 130), (30, 160, 150)]
MARKER = ".lmdbshard-demo.json"


@dataclass
class DemoSpec:
    """What to generate: the ``demo:`` section of conf/demo.yaml and ``bench.corpus`` of conf/benchmark.yaml."""

    classes: int = 10
    per_class: int = 30
    seed: int = 0
    short_side: list[int] = field(default_factory=lambda: [160, 360])   # [low, high] pixels
    aspect: list[float] = field(default_factory=lambda: [0.6, 1.6])     # [low, high] width / height
    quality: list[int] = field(default_factory=lambda: [80, 95])        # [low, high] JPEG quality
    detail: float = 0.0   # strength of fine photo-like grain; ~90 gives ImageNet-sized files (~100 KB at 400 px)

    def validate(self, name: str = "demo") -> "DemoSpec":
        """Raise ConfigError naming ``name.key`` and the fix; returns self."""
        for key in ("classes", "per_class"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{name}.{key} must be a positive integer, got {getattr(self, key)!r}")
        for key in ("short_side", "aspect", "quality"):
            pair = getattr(self, key)
            if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
                raise ConfigError(f"{name}.{key} must be [low, high] with 0 < low <= high, got {pair!r}")
        if not self.quality[1] <= 100:
            raise ConfigError(f"{name}.quality must be within [1, 100], got {self.quality!r}")
        return self


def class_name(i: int) -> str:
    base = CLASS_NAMES[i % len(CLASS_NAMES)]
    return base if i < len(CLASS_NAMES) else f"{base}_{i // len(CLASS_NAMES)}"


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-scale smooth noise in [-1, 1]: large blobs plus fine grain."""
    out = np.zeros((h, w), np.float32)
    for cells, weight in ((4, 0.5), (16, 0.3), (64, 0.15)):
        small = rng.standard_normal((max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w))))
        img = Image.fromarray(small.astype(np.float32), "F").resize((w, h), Image.Resampling.BICUBIC)
        out += weight * np.asarray(img)
    out += 0.05 * rng.standard_normal((h, w)).astype(np.float32)
    return np.clip(out, -1, 1)


def make_image(label: int, index: int, spec: DemoSpec) -> tuple[Image.Image, int]:
    """The ``index``-th image of class ``label``, and the JPEG quality to save it with."""
    rng = np.random.default_rng([spec.seed, label, index])
    short = int(rng.integers(spec.short_side[0], spec.short_side[1] + 1))
    aspect = float(rng.uniform(*spec.aspect))
    w, h = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
    color = np.array(_PALETTE[label % len(_PALETTE)], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)[..., None]
    other = rng.uniform(40, 220, 3).astype(np.float32)
    base = other * (1 - 0.5 * ramp) + 0.25 * color * ramp
    base += 40 * _texture(rng, h, w)[..., None]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    motif = label % len(CLASS_NAMES)
    fill = tuple(int(c) for c in np.clip(color + rng.uniform(-25, 25, 3), 0, 255))
    for _ in range(int(rng.integers(2, 6))):
        r = int(rng.uniform(0.08, 0.25) * min(w, h))
        cx, cy = int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r))
        box = (cx - r, cy - r, cx + r, cy + r)
        if motif in (0, 6):
            draw.ellipse(box, fill=fill) if motif == 0 else draw.ellipse((cx - r // 3, cy - r // 3, cx + r // 3, cy + r // 3), fill=fill)
        elif motif == 1:
            draw.rectangle(box, fill=fill)
        elif motif == 2:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        elif motif == 3:
            for x in range(cx - r, cx + r, max(4, r // 3)):
                draw.line([(x, 0), (x + r, h)], fill=fill, width=max(2, r // 6))
        elif motif == 4:
            draw.ellipse(box, outline=fill, width=max(3, r // 4))
        elif motif == 5:
            s = max(4, r // 2)
            for i in range(4):
                for j in range(4):
                    if (i + j) % 2 == 0:
                        draw.rectangle((cx - r + i * s, cy - r + j * s, cx - r + (i + 1) * s, cy - r + (j + 1) * s), fill=fill)
        elif motif == 7:
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
        elif motif == 8:
            pts = [(x, cy + r * np.sin(x / max(1, r) * 3)) for x in range(0, w, 4)]
            draw.line(pts, fill=fill, width=max(3, r // 5))
        else:
            draw.rectangle((cx - r, cy - r // 4, cx + r, cy + r // 4), fill=fill)
            draw.rectangle((cx - r // 4, cy - r, cx + r // 4, cy + r), fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    quality = int(rng.integers(spec.quality[0], spec.quality[1] + 1))
    if spec.detail > 0:
        img = _add_detail(img, np.random.default_rng([spec.seed, label, index, 1]), spec.detail)
    return img, quality


def _add_detail(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Fine, slightly colour-tinted grain at three scales plus sensor-like noise: the high-frequency
    content that makes real photos ~100 KB and costly to decode, which smooth drawings lack."""
    w, h = img.size
    fine = np.zeros((h, w), np.float32)
    for cells in (96, 192, 384):
        small = rng.standard_normal((max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w))))
        fine += 0.4 * np.asarray(Image.fromarray(small.astype(np.float32), "F").resize((w, h), Image.Resampling.BILINEAR))
    grain = fine[..., None] * strength * np.array([1.0, 0.9, 1.1], np.float32)
    grain += 6 * rng.standard_normal((h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8), "RGB")


def _write_image(args: tuple[str, int, int, DemoSpec]) -> None:
    folder, label, i, spec = args
    img, quality = make_image(label, i, spec)
    img.save(os.path.join(folder, f"{class_name(label)}_{i:04d}.jpg"), "JPEG", quality=quality)


def make_imagefolder(root: str, spec: DemoSpec | None = None, processes: int = 1) -> str:
    """Create ``root/<class>/<class>_NNNN.jpg`` (idempotent: kept if already made with the same spec),
    drawing the images in ``processes`` processes (same bytes whatever the number)."""
    spec = (DemoSpec() if spec is None else spec).validate()
    marker = os.path.join(root, MARKER)
    want = asdict(spec)
    try:
        with open(marker) as f:
            if json.load(f) == json.loads(json.dumps(want)):
                return root
    except (OSError, ValueError):
        pass
    if os.path.isdir(root) and os.listdir(root) and not os.path.exists(marker):
        raise SourceError(f"{root!r} exists and was not made by the demo generator; refusing to replace it. "
                          "To convert your own images use CONF=imagenet (or drop the demo: section)")
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".demo-", dir=parent)
    try:
        jobs = []
        for label in range(spec.classes):
            folder = os.path.join(tmp, class_name(label))
            os.makedirs(folder)
            jobs += [(folder, label, i, spec) for i in range(spec.per_class)]
        if processes > 1:
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                pool.map(_write_image, jobs, chunksize=16)
        else:
            for job in jobs:
                _write_image(job)
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump(want, f)
        if os.path.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
