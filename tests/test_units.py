"""Work units smaller than a shard: every CPU serves even a one-shard job, and the shard files are
byte for byte those of a job that ran one task per shard, also when a unit's or a writer's worker
is killed and Ray retries it.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import shutil
import signal
import threading

import pytest

from lmdbshard import RayConfig, SourceConfig, convert
from lmdbshard.read.verify import verify
from lmdbshard.write import units as units_module
from lmdbshard.write.units import (MAX_UNIT_RATE, MIN_TAIL_ITEMS, SIZING_UNITS, SIZING_WINDOW_S, UnitSizer,
                                   tapered_ranges, unit_ranges)
from lmdbshard.write.writer import scratch_owner

from faults import FifoImage, held_conversion, held_source, readers_of, wait_for
from helpers import job, make_tree

HELD = "dog/img_03.jpg"


def shard_hashes(out: str) -> dict[str, str]:
    """sha256 of every published shard file, by name."""
    files = sorted(glob.glob(os.path.join(out, "shards", "*")))
    return {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in files}


def units(size: int, **kw) -> RayConfig:
    return RayConfig(max_in_flight=4, unit_size=size, **kw)


def skipped(out: str) -> list:
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)["errors"]


@pytest.mark.parametrize("count,size", [(0, 4), (1, 4), (21, 4), (100, 64), (2560, 64), (7, 100)])
def test_unit_ranges_cover_the_shard_in_order_in_near_equal_units(count, size):
    ranges = unit_ranges(count, size)
    assert ranges[0][0] == 0 and ranges[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    lengths = [b - a for a, b in ranges]
    assert max(lengths) <= max(size, 1) and max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize("count,size,slots", [(2000, 64, 2), (2560, 64, 16), (100, 64, 2), (21, 16, 2), (5, 64, 2),
                                              (0, 64, 2), (2000, 4, 2)])
def test_the_last_shard_ends_in_units_that_shrink_so_its_slots_finish_together(count, size, slots):
    """The job's last shard: its last ``slots * size`` items in units that shrink toward MIN_TAIL_ITEMS
    (or ``size``, if smaller); the rest as ``unit_ranges`` cuts it. One slot: no taper (nothing to balance)."""
    ranges = tapered_ranges(count, size, slots)
    assert ranges[0][0] == 0 and ranges[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    tail = min(count, slots * size)
    assert max(b - a for a, b in ranges) <= max(size, 1)
    tapering = [b - a for a, b in ranges if a >= count - tail][:-1]   # the last may be what was left
    assert all(x >= y for x, y in zip(tapering, tapering[1:]))
    assert ranges[:-1] == [] or ranges[-2][1] - ranges[-2][0] <= max(min(MIN_TAIL_ITEMS, size), -(-tail // (2 * slots)))
    assert count - tail in [a for a, _ in ranges] + [count]   # the head is cut as before
    assert tapered_ranges(count, size, 1) == unit_ranges(count, size)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def finish(sizer: UnitSizer, clock: Clock, units: int, items: int, seconds: float) -> list:
    """``units`` units of ``items`` finishing evenly over ``seconds``; what ``finished`` returned, growths only."""
    grown = []
    for _ in range(units):
        clock.now += seconds / units
        grown += [g for g in [sizer.finished(items)] if g]
    return grown


def test_short_units_grow_once_a_window_shows_it_and_never_past_a_shard():
    """2 CPUs finishing units of 64 at 3,200 images/s: a unit takes 0.04 s, so after SIZING_WINDOW_S the
    next shards' units grow to last ray.unit_seconds=0.25 (400 images, and a quarter more: 504)."""
    clock = Clock()
    sizer = UnitSizer(64, slots=2, largest=2560, unit_seconds=0.25, clock=clock)
    assert finish(sizer, clock, 20, 64, 0.8 * SIZING_WINDOW_S) == [] and sizer.size == 64   # not a whole window yet
    grown = finish(sizer, clock, 20, 64, 0.4)
    assert len(grown) == 1 and grown[0][0] == sizer.size == 504 and grown[0][1] == pytest.approx(3200, rel=0.05)
    assert finish(sizer, clock, 20, 504, 3.15) == []   # 0.31 s each now: no further growth
    fast = UnitSizer(64, slots=2, largest=300, unit_seconds=0.25, clock=clock)
    finish(fast, clock, 400, 64, 8 * SIZING_WINDOW_S)
    assert fast.size == 300   # capped at the largest shard: a shard of one unit runs as one task


def test_units_long_enough_a_few_long_units_or_sizing_off_keep_their_size():
    """Photos (4.3 ms each: units of 64 take 0.275 s); seven units on 2 CPUs, too few to make a rate,
    however short; and ``ray.unit_seconds=0``."""
    clock = Clock()
    photos = UnitSizer(64, slots=2, largest=2560, unit_seconds=0.25, clock=clock)
    few = UnitSizer(64, slots=2, largest=2560, unit_seconds=0.25, clock=clock)
    off = UnitSizer(64, slots=2, largest=2560, unit_seconds=0, clock=clock)
    for sizer, units, items, seconds in ((photos, 50, 64, 50 * 0.275 / 2), (few, SIZING_UNITS * 2 - 1, 640, 1.0),
                                         (off, 50, 64, 0.5)):
        assert finish(sizer, clock, units, items, seconds) == [] and sizer.size == 64


def test_on_many_cpus_units_grow_until_the_driver_finishes_at_most_max_unit_rate_a_second():
    """500 CPUs at 2 ms per image: units of 125 would take 0.25 s, but 2,000 of them would finish a second;
    units grow to MAX_UNIT_RATE a second (and a quarter more)."""
    clock = Clock()
    sizer = UnitSizer(64, slots=500, largest=2560, unit_seconds=0.25, clock=clock)
    finish(sizer, clock, 2 * 3906, 64, 2.0)
    rate = 250_000 / MAX_UNIT_RATE
    assert rate * 1.25 <= sizer.size <= rate * 1.25 + MIN_TAIL_ITEMS


def test_short_units_grow_in_a_real_job_and_the_shards_keep_their_bytes(ray_local, tmp_path, caplog, monkeypatch):
    """Units of one small image each take a few ms: the driver grows them for the shards it opens next,
    says so in one line, and every shard file is byte for byte that of one task per shard. (The driver
    measures over 0.2 s here, not SIZING_WINDOW_S, so that a fast machine does not finish first.)"""
    monkeypatch.setattr(units_module, "SIZING_WINDOW_S", 0.2)
    tree = make_tree(str(tmp_path / "src"), per_class=300)
    reference, out = str(tmp_path / "reference"), str(tmp_path / "out")
    convert(job(tree.root, reference, shard_size=100, ray=units(0)))
    with caplog.at_level(logging.INFO, logger="lmdbshard"):
        result = convert(job(tree.root, out, shard_size=100, ray=units(1)))
    assert "work units grow from 1 to " in caplog.text
    assert (result.images_written, result.shards_built) == (900, 9)
    assert shard_hashes(out) == shard_hashes(reference) and len(shard_hashes(out)) == 9


@pytest.fixture(scope="module")
def whole(ray_local, tmp_path_factory):
    """A job of 3 shards, one with an unreadable file, each shard written by one task (unit_size=0)."""
    base = tmp_path_factory.mktemp("whole")
    tree = make_tree(str(base / "src"))
    with open(os.path.join(tree.root, "zebra", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    out = str(base / "out")
    convert(job(tree.root, out, shard_size=10, ray=units(0), max_error_rate=0.5))
    return tree.root, out


@pytest.mark.parametrize("size", [1, 3, 4])
def test_units_write_the_same_shard_files_as_one_task_per_shard(whole, tmp_path, size):
    src, reference = whole
    out = str(tmp_path / "out")
    result = convert(job(src, out, shard_size=10, ray=units(size), max_error_rate=0.5))
    assert (result.images_written, result.images_skipped, result.shards_built) == (21, 1, 3)
    assert shard_hashes(out) == shard_hashes(reference) and len(shard_hashes(out)) == 3
    assert skipped(out) == skipped(reference)   # the skipped sample keeps its position
    assert verify(out).ok


def test_a_one_shard_job_runs_its_units_on_both_cpus(ray_local, tmp_path):
    """Every item is held (tests/pydatasets.py ``Held``) until two processes read at the same time: the
    job of one shard finishes only if two of its units ran at once, on the cluster's two CPUs."""
    out, readers, release = tmp_path / "out", tmp_path / "readers", tmp_path / "release"
    source = SourceConfig(kind="python", target="pydatasets:Held", args=[8, str(readers), str(release), 120.0])
    cfg = dataclasses.replace(job("", str(out), shard_size=8, ray=units(2)), source=source)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=convert(cfg)))
    runner.start()
    try:
        pids = wait_for(lambda: len(os.listdir(readers)) >= 2 if readers.is_dir() else None, timeout=120,
                        what="two units of the one shard reading at the same time")
    finally:
        release.touch()
        runner.join(timeout=120)
    assert pids and outcome["result"].shards == 1 and outcome["result"].images_written == 8


@pytest.fixture(scope="module")
def held_reference(ray_local, tmp_path_factory):
    """The held test tree converted as one shard of 21 by a single task: (shard hashes, tree root)."""
    base = tmp_path_factory.mktemp("held")
    tree = make_tree(str(base / "src"))
    out = str(base / "out")
    convert(held_job(tree.root, out, 0))
    return shard_hashes(out), tree.root


def held_job(src: str, out: str, size: int, **kw):
    return dataclasses.replace(job(src, out, shard_size=21, ray=units(size), **kw), source=held_source(src))


def scratch_pids(scratch: str) -> list[int]:
    """Processes that hold a shard's scratch folder under ``scratch``: its writer."""
    names = os.listdir(scratch) if os.path.isdir(scratch) else []
    return [owner[1] for owner in map(scratch_owner, names) if owner is not None]


def test_a_tapered_last_shard_has_the_bytes_of_one_task(held_reference, tmp_path):
    """21 items in units of 16 on 2 CPUs: the one (so the last) shard is cut 8 + 8 + 5, not 10 + 11."""
    hashes, src = held_reference
    out = str(tmp_path / "out")
    assert [b - a for a, b in tapered_ranges(21, 16, 2)] == [8, 8, 5]
    result = convert(held_job(src, out, 16))
    assert (result.images_written, result.shards_built) == (21, 1) and shard_hashes(out) == hashes


@pytest.mark.parametrize("victim", ["unit", "writer"])
def test_a_killed_unit_or_writer_is_retried_and_the_shard_is_written_once(held_reference, tmp_path, victim):
    """A unit's worker is held reading a named pipe; the unit's, or the shard writer's (which waits for
    that unit), worker is killed. Ray retries it; the one shard is published once, with the same bytes."""
    hashes, src = held_reference
    src = shutil.copytree(src, str(tmp_path / "src"))
    out, scratch = str(tmp_path / "out"), str(tmp_path / "scratch")
    held = FifoImage(os.path.join(src, HELD))
    with held_conversion(held, lambda: convert(held_job(src, out, 4, scratch_dir=scratch))) as outcome:
        (reader,) = wait_for(lambda: readers_of(held.path), what="a unit to open the held image")
        (writer,) = wait_for(lambda: scratch_pids(scratch), what="the shard's writer to start")
        os.kill(reader if victim == "unit" else writer, signal.SIGKILL)
        if victim == "unit":
            wait_for(lambda: not readers_of(held.path), what="the killed unit's worker to go")
        else:
            wait_for(lambda: writer not in scratch_pids(scratch) or not os.path.exists(f"/proc/{writer}"),
                     what="the killed writer to go")
    result = outcome["result"]
    assert (result.images_written, result.images_skipped, result.shards_built) == (21, 0, 1)
    assert shard_hashes(out) == hashes
    assert not glob.glob(os.path.join(out, "**", "*partial*"), recursive=True) and verify(out).ok
    assert os.listdir(scratch) == []   # the dead attempt's scratch folder is gone


def test_progress_counts_images_of_finished_units(whole, tmp_path, caplog):
    """Without a progress actor, the log's image count comes from finished units, and ends at every image."""
    src, _ = whole
    caplog.set_level("INFO", logger="lmdbshard")
    cfg = dataclasses.replace(job(src, str(tmp_path / "out"), shard_size=22, ray=units(4), max_error_rate=0.5),
                              progress="log", log_interval_s=0.001)
    convert(cfg)
    counts = [int(r.getMessage().split()[1].split("/")[0]) for r in caplog.records
              if r.getMessage().startswith("progress ")]
    assert counts and counts == sorted(counts) and counts[-1] == 22
