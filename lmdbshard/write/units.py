"""How a shard is cut into work units, and how big the units are.

A unit is ``unit_ranges``' slice of a shard; the job's last shard ends in smaller ones
(``tapered_ranges``). Units start at ``ray.unit_size`` items and grow (``UnitSizer``) when the finished
ones show that they are short: each task costs Ray some 2-5 ms of CPU between the driver, the raylet
and the worker (measured), which is a visible share of a unit of small images (32x32 PNGs: 64 of them
take ~20 ms), and the driver, which spends ~1 ms of CPU on each unit, must keep up with hundreds of
CPUs. How a shard is cut never changes its file's bytes, so units may change size mid-job.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

#: Items per work unit when a shard is cut into units, to begin with; see ``unit_ranges``.
UNIT_ITEMS = 64
#: A unit should take at least this long on its CPU (``ray.unit_seconds``), so that Ray's cost per task is ~1%.
UNIT_SECONDS = 0.25
#: The driver should finish at most this many units per second (~1 ms of its CPU each): on 500 CPUs,
#: units of photos that take 0.25 s would be 2,000 a second.
MAX_UNIT_RATE = 500
#: The driver sizes the units again once it has counted this many seconds of finished units, and at
#: least SIZING_UNITS per slot (so that a few long units never make a rate).
SIZING_WINDOW_S = 0.5
SIZING_UNITS = 4
#: Units grow when they would need to be this many times larger, and then by that much more.
GROW_AT = 1.25
#: The smallest unit of a tapered tail (``tapered_ranges``): about 40 ms of work for a photo. Grown units
#: are multiples of it.
MIN_TAIL_ITEMS = 8


def unit_ranges(count: int, unit_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` offsets cutting ``count`` items into units of at most ``unit_size``, of near
    equal size (100 items at 64: 50 + 50, not 64 + 36; 21 at 4: 3 + 3 + 4 + 3 + 4 + 4). Always at least one unit."""
    n = max(1, -(-count // max(1, unit_size)))
    bounds = [i * count // n for i in range(n + 1)]
    return list(zip(bounds, bounds[1:]))


def tapered_ranges(count: int, unit_size: int, slots: int) -> list[tuple[int, int]]:
    """``unit_ranges`` for the job's last shard, run on ``slots`` units at a time: its last ``slots *
    unit_size`` items go in units that shrink as the end nears (each a ``2 * slots``-th of what is left,
    at least ``MIN_TAIL_ITEMS``), so that the slots finish within a small unit of each other instead of
    one slot idling for most of a whole unit while another ends the job."""
    tail = min(count, slots * unit_size) if slots > 1 else 0
    if not tail:
        return unit_ranges(count, unit_size)
    ranges = unit_ranges(count - tail, unit_size) if count > tail else []
    start = count - tail
    while start < count:
        size = min(unit_size, max(MIN_TAIL_ITEMS, -(-(count - start) // (2 * slots))))
        ranges.append((start, min(count, start + size)))
        start = ranges[-1][1]
    return ranges


def needed_unit_size(items_per_s: float, slots: int, unit_seconds: float) -> int:
    """Items per unit for units of at least ``unit_seconds`` each on ``slots`` CPUs finishing
    ``items_per_s`` together, and at most ``MAX_UNIT_RATE`` units a second."""
    return math.ceil(max(unit_seconds * items_per_s / max(1, slots), items_per_s / MAX_UNIT_RATE))


class UnitSizer:
    """The size of the units of the shards opened next: ``size`` to begin with, grown to
    ``needed_unit_size`` (and GROW_AT more; a multiple of MIN_TAIL_ITEMS, at most ``largest``: a shard)
    whenever the units finished in the last window (SIZING_WINDOW_S) are GROW_AT times too short; never
    shrunk. Idle slots (the start of a job) make the measured rate low, so units never grow for lack of
    work. ``unit_seconds=0``: a fixed size; ``size=0`` (one task per shard): no units to size."""

    def __init__(self, size: int, slots: int, largest: int, unit_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.size, self.slots, self.largest, self.unit_seconds = size, slots, largest, unit_seconds
        self.clock = clock
        self.since: Optional[float] = None   # the window's start: the first finished unit's time
        self.items = self.units = 0          # items and units finished in the window

    def finished(self, items: int) -> Optional[tuple[int, float]]:
        """Count a finished unit of ``items``. Returns (the new size, items/s measured) when units grow."""
        if not self.unit_seconds or not self.size or self.size >= self.largest:
            return None
        now = self.clock()
        if self.since is None:
            self.since = now
            return None
        self.items += items
        self.units += 1
        if now - self.since < SIZING_WINDOW_S or self.units < SIZING_UNITS * self.slots:
            return None
        rate = self.items / (now - self.since)
        self.since, self.items, self.units = now, 0, 0
        need = needed_unit_size(rate, self.slots, self.unit_seconds)
        if need < GROW_AT * self.size:
            return None
        # Past what was measured: larger units cost less per image, so the rate, and the need, go up a little.
        self.size = min(self.largest, -(-int(need * GROW_AT) // MIN_TAIL_ITEMS) * MIN_TAIL_ITEMS)
        return self.size, rate
