"""Drawing for the pictures lmdbshard writes (contact sheets, stats plots), with Pillow only.

Text uses Pillow's bundled scalable font (``ImageFont.load_default(size=...)``,
Pillow 10.1 or newer with FreeType) and falls back to its small bitmap font.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (22, 24, 29)
PANEL = (34, 37, 44)
TEXT = (232, 234, 238)
MUTED = (150, 155, 166)
GRID = (60, 64, 74)
BAR = (84, 160, 232)
BAR_ALT = (236, 148, 72)


@lru_cache(maxsize=None)
def font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):   # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int = 12) -> str:
    """``text`` shortened with an ellipsis so that it is at most ``width`` pixels wide."""
    f = font(size)
    if draw.textlength(text, font=f) <= width:
        return text
    while text and draw.textlength(text + "…", font=f) > width:
        text = text[:-1]
    return text + "…"


def save_png(img: Image.Image, path: str) -> str:
    """Write ``img`` as PNG; a missing folder is one clear error, not a traceback."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: folder {folder!r} does not exist; create it or pass "
                                "another -o")
    img.save(path, "PNG", optimize=True)
    return path


def _nice(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


def vbars(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], values: Sequence[float], title: str,
          left_label: str = "", right_label: str = "", color=BAR) -> None:
    """A column chart in ``box``: one bar per value, y from 0 to the maximum, labels under the ends."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=PANEL)
    draw.text((x0 + 8, y0 + 6), title, font=font(13), fill=TEXT)
    top, bottom, left, right = y0 + 40, y1 - 24, x0 + 44, x1 - 10
    peak = max(values, default=0) or 1
    for frac in (0.0, 0.5, 1.0):
        y = bottom - frac * (bottom - top)
        draw.line((left, y, right, y), fill=GRID)
        draw.text((x0 + 6, y - 7), _nice(round(peak * frac)), font=font(11), fill=MUTED)
    n = max(1, len(values))
    step = (right - left) / n
    gap = 1 if step >= 3 else 0
    for i, v in enumerate(values):
        if v <= 0:
            continue
        bx0 = left + i * step
        bx1 = max(bx0, left + (i + 1) * step - gap - 1)
        draw.rectangle((bx0, bottom - v / peak * (bottom - top), bx1, bottom), fill=color)
    draw.text((left, bottom + 5), left_label, font=font(11), fill=MUTED)
    if right_label:
        w = draw.textlength(right_label, font=font(11))
        draw.text((right - w, bottom + 5), right_label, font=font(11), fill=MUTED)


def hbars(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], names: Sequence[str], values: Sequence[float],
          title: str, row: int = 18, color=BAR) -> None:
    """A bar per named value, one row each, name on the left and the value at the bar's end."""
    x0, y0, x1, _ = box
    draw.rectangle(box, fill=PANEL)
    draw.text((x0 + 8, y0 + 6), title, font=font(13), fill=TEXT)
    name_w = min(220, max((int(draw.textlength(n, font=font(12))) for n in names), default=0) + 12)
    left, right = x0 + 8 + name_w, x1 - 60
    peak = max(values, default=0) or 1
    for i, (name, v) in enumerate(zip(names, values)):
        y = y0 + 32 + i * row
        draw.text((x0 + 8, y + 1), fit(draw, name, name_w - 10), font=font(12), fill=TEXT)
        end = left + v / peak * (right - left)
        if v > 0:
            draw.rectangle((left, y + 3, end, y + row - 3), fill=color)
        draw.text((end + 6, y + 1), _nice(v), font=font(12), fill=MUTED)
