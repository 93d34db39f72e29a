"""Progress of a long job: a live bar on a terminal, plain periodic log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from typing import Mapping

log = logging.getLogger("lmdbshard")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def stage_fractions(seconds: Mapping[str, float]) -> dict[str, float]:
    """Each stage's share of the summed stage time, largest first; empty when nothing was timed."""
    total = sum(seconds.values())
    if total <= 0:
        return {}
    ranked = sorted(seconds.items(), key=lambda kv: -kv[1])
    return {k: round(v / total, 4) for k, v in ranked}


def stage_shares(seconds: Mapping[str, float]) -> str:
    """Which stage bounds a job, e.g. ``decode 61%, encode 22%, read 9%, write 4%, transform 4%``."""
    fractions = stage_fractions(seconds)
    if not fractions:
        return "n/a (no shard was built)"
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in fractions.items())


class Progress:
    """Images done of ``total``, images/s, ETA, shards done/reused/failed, skipped samples, and
    the stage shares of the shards finished so far (summed over workers).

    ``mode``: ``bar`` (tqdm), ``log`` (a line every ``interval`` seconds), ``none``,
    or ``auto`` (bar on a TTY, log lines otherwise).
    """

    def __init__(self, total: int, shards: int, mode: str = "auto", interval: float = 10.0,
                 stream=None, desc: str = "converting"):
        self.total, self.shards = total, shards
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        self.mode, self.interval = mode, interval
        self.done = self.shards_done = self.reused = self.failed = self.skipped = 0
        self._start = time.monotonic()
        self._base = 0          # images reused from earlier runs: not counted in the rate
        self._last_line = self._start
        self.stage_seconds: dict[str, float] = {}
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit="img", file=self.stream, dynamic_ncols=True,
                             smoothing=0.1, desc=desc)

    def restart_clock(self) -> None:
        """Start measuring the rate now (after start-up costs such as starting Ray)."""
        self._start = self._last_line = time.monotonic()
        self._base = self.done

    def reuse(self, images: int, shards: int) -> None:
        """Count shards kept from an earlier run (done before this run started)."""
        self.reused += shards
        self._base += images
        self.update(self.done + images, self.shards_done + shards, self.skipped)

    def add_stage_seconds(self, seconds: Mapping[str, float]) -> None:
        """Add the per-stage seconds of one finished shard."""
        for k, v in seconds.items():
            self.stage_seconds[k] = self.stage_seconds.get(k, 0.0) + v

    def update(self, done: int, shards_done: int, skipped: int, failed: int = 0) -> None:
        done = min(done, self.total)
        if self._bar is not None:
            self._bar.update(done - self.done)
            text = self._postfix(shards_done, skipped, failed)
            top = next(iter(stage_fractions(self.stage_seconds).items()), None)
            if top is not None:   # the stage that bounds the job so far
                text += f" | {top[0]} {100 * top[1]:.0f}%"
            self._bar.set_postfix_str(text, refresh=False)
        self.done, self.shards_done, self.skipped, self.failed = done, shards_done, skipped, failed
        if self.mode == "log" and time.monotonic() - self._last_line >= self.interval:
            self._line()

    def _postfix(self, shards_done: int, skipped: int, failed: int) -> str:
        return f"shards {shards_done}/{self.shards} reused {self.reused} failed {failed} skipped {skipped}"

    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return (self.done - self._base) / elapsed if elapsed > 0 else 0.0

    def _line(self) -> None:
        self._last_line = time.monotonic()
        rate = self.rate()
        remaining = self.total - self.done
        eta = _duration(remaining / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        stages = f" stages {stage_shares(self.stage_seconds)}" if self.stage_seconds else ""
        log.info("progress %d/%d images (%.1f%%) %.1f img/s ETA %s %s%s", self.done, self.total, pct, rate, eta,
                 self._postfix(self.shards_done, self.skipped, self.failed), stages)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log":
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
