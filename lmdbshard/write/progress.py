"""Progress of a long job: a live bar on a terminal, plain periodic log lines elsewhere."""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from typing import Mapping, Optional

log = logging.getLogger("lmdbshard")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def plural(n: float, noun: str, nouns: Optional[str] = None) -> str:
    """``1 shard``, ``0 shards``, ``2 shards``, ``1.5 CPUs``, ``3 classes``: a count with its noun."""
    number = f"{n:g}" if isinstance(n, float) else str(n)
    return f"{number} {noun if n == 1 else nouns or noun + 's'}"


def stage_fractions(seconds: Mapping[str, float]) -> dict[str, float]:
    """Each stage's share of the summed stage time, largest first; empty when nothing was timed."""
    total = sum(seconds.values())
    if total <= 0:
        return {}
    ranked = sorted(seconds.items(), key=lambda kv: -kv[1])
    return {k: round(v / total, 4) for k, v in ranked}


def stage_shares(seconds: Mapping[str, float]) -> str:
    """Which stage bounds a job, e.g. ``decode 61%, encode 22%, read 9%, write 4%, transform 4%``.

    Stages that round to 0% are left out (``augment`` when there is no augmentation, say); the manifest's
    ``stage_shares`` keeps every stage."""
    fractions = stage_fractions(seconds)
    if not fractions:
        return "n/a (no shard was built)"
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in fractions.items() if v >= 0.005) or "n/a"


@functools.lru_cache(maxsize=None)
def _bar_class() -> type:
    """tqdm, with a final rate and time that can be pinned, so that the bar's last word is the job's own
    images/s (tqdm's is a smoothed recent rate, and Ray's shutdown is not the job's time). Imported on
    first use: only a terminal needs it."""
    from tqdm import tqdm

    class PinnedRateBar(tqdm):
        final: Optional[tuple[float, float]] = None   # (rate, elapsed) of the finished work

        @property
        def format_dict(self):
            d = super().format_dict
            if self.final is not None:
                d["rate"], d["elapsed"] = self.final[0] or None, self.final[1]
            return d

    return PinnedRateBar


class SteadyRate:
    """Images/s between the moments a run had done ``low`` and ``high`` of its ``total`` images (10% and
    90%): the rate a longer job of the same kind sustains, without its start-up (listing, plan, the
    first tasks) or its end (the last units and the last shards' publish). ``rate()`` is None when a
    run is too short to cross the two in separate updates."""

    def __init__(self, total: int, low: float = 0.1, high: float = 0.9):
        self.bounds = (max(1, math.ceil(low * total)), max(1, math.ceil(high * total)))
        self.marks: list[tuple[float, int]] = []   # (time, done) at the first update at or past each bound

    def add(self, done: int, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        while len(self.marks) < 2 and done >= self.bounds[len(self.marks)]:
            self.marks.append((now, done))   # one update past both marks both: no time between, no rate

    def rate(self) -> Optional[float]:
        if len(self.marks) < 2:
            return None
        (t0, d0), (t1, d1) = self.marks
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


class Progress:
    """Images done of ``total``, images/s, ETA, shards done/reused/failed, skipped samples, and
    the stage shares of the shards finished so far (summed over workers).

    ``mode``: ``bar`` (tqdm), ``log`` (a line every ``interval`` seconds), ``none``,
    or ``auto`` (bar on a terminal, log lines otherwise). Nothing is drawn before the first
    ``update`` or ``restart_clock``, so that what start-up prints (Ray's notices) never lands
    inside the bar. When a run builds nothing (every shard was complete), it says so in one line.
    """

    def __init__(self, total: int, shards: int, mode: str = "auto", interval: float = 10.0,
                 stream=None, desc: str = "converting", unit: str = "img"):
        self.total, self.shards = total, shards
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        self.mode, self.interval, self.desc, self.unit = mode, interval, desc, unit
        self.done = self.shards_done = self.reused = self.failed = self.skipped = 0
        self._start = time.monotonic()
        self._end: Optional[float] = None   # set by stop_clock or close: the rate is frozen there
        self._closed = False
        self._base = 0          # images reused from earlier runs: not counted in the rate
        self._last_line = self._start
        self._started = False   # update or restart_clock was called: this run does work
        self.stage_seconds: dict[str, float] = {}
        self._bar = None
        self.steady = SteadyRate(total)   # over this run's images, from restart_clock

    def _draw(self) -> None:
        self._started = True
        if self.mode == "bar" and self._bar is None:
            self._bar = _bar_class()(total=self.total, initial=self.done, unit=self.unit, file=self.stream,
                             dynamic_ncols=True, smoothing=0.1, desc=self.desc)

    def restart_clock(self) -> None:
        """Start measuring the rate now (after start-up costs such as starting Ray), and start drawing."""
        self._start = self._last_line = time.monotonic()
        self._base = self.done
        self.steady = SteadyRate(self.total - self._base)
        self._draw()

    def reuse(self, images: int, shards: int) -> None:
        """Count shards kept from an earlier run (done before this run started)."""
        self.reused += shards
        self._base += images
        self.done = min(self.done + images, self.total)
        self.shards_done += shards

    def add_stage_seconds(self, seconds: Mapping[str, float]) -> None:
        """Add the per-stage seconds of one finished shard."""
        for k, v in seconds.items():
            self.stage_seconds[k] = self.stage_seconds.get(k, 0.0) + v

    def update(self, done: int, shards_done: int, skipped: int, failed: int = 0) -> None:
        self._draw()
        done = min(done, self.total)
        if self._bar is not None:
            self._bar.update(done - self.done)
            text = self._postfix(shards_done, skipped, failed)
            top = next(iter(stage_fractions(self.stage_seconds).items()), None)
            if top is not None:   # the stage that bounds the job so far
                text += f" | {top[0]} {100 * top[1]:.0f}%"
            self._bar.set_postfix_str(text, refresh=False)
        self.done, self.shards_done, self.skipped, self.failed = done, shards_done, skipped, failed
        self.steady.add(done - self._base)
        if self.mode == "log" and time.monotonic() - self._last_line >= self.interval:
            self._line()

    def _postfix(self, shards_done: int, skipped: int, failed: int) -> str:
        return f"shards {shards_done}/{self.shards} reused {self.reused} failed {failed} skipped {skipped}"

    def elapsed(self) -> float:
        """Seconds since ``restart_clock``, until ``stop_clock`` or ``close``."""
        return (self._end or time.monotonic()) - self._start

    def rate(self) -> float:
        """Images/s built by this run since ``restart_clock`` (until ``stop_clock`` or ``close``)."""
        elapsed = self.elapsed()
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

    def stop_clock(self) -> None:
        """The work is over (Ray's shutdown is not part of the rate)."""
        if self._end is None:
            self._end = time.monotonic()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_clock()
        if not self._started:
            if self.mode != "none" and self.shards and self.reused == self.shards:
                log.info("nothing to build: all %s were complete already", plural(self.shards, "shard"))
        elif self._bar is not None:
            self._bar.final = (self.rate(), self._end - self._start)
            self._bar.close()
        elif self.mode == "log":
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
