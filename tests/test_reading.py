"""Reading a shard's inputs: every file's bytes in item order, each unreadable file as its own error,
whether the reads are fast (read in the task's thread) or slow (read ahead on threads), and the read
stage timed as the wait on the critical path."""

from __future__ import annotations

import os
import threading
import time

import pytest

from lmdbshard.write import reading
from lmdbshard.write.config import StorageConfig, TransformConfig
from lmdbshard.write.task import ShardItem, ShardTask, WriteOptions, encode_unit

from helpers import make_tree


@pytest.fixture
def folder(tmp_path):
    """30 files of distinct bytes, a FIFO, a folder named like an image and a file over the size limit."""
    root = tmp_path / "src"
    root.mkdir()
    names = []
    for i in range(30):
        (root / f"{i:02d}.jpg").write_bytes(bytes([i]) * (1000 + i))
        names.append(f"{i:02d}.jpg")
    os.mkfifo(root / "fifo.jpg")
    (root / "folder.jpg").mkdir()
    (root / "big.jpg").write_bytes(b"x" * 5000)
    names[5:5] = ["fifo.jpg"]
    names[12:12] = ["folder.jpg"]
    names.append("big.jpg")
    return str(root), names


@pytest.mark.parametrize("slow_after", [None, -1.0], ids=["fast reads inline", "slow reads ahead on threads"])
def test_inputs_come_in_item_order_with_each_bad_file_as_its_error(folder, monkeypatch, slow_after):
    root, names = folder
    if slow_after is not None:   # every read counts as slow: read-ahead from the SLOW_READS-th file on
        monkeypatch.setattr(reading, "SLOW_READ_S", slow_after)
    items = [ShardItem(i, 0, name, 0) for i, name in enumerate(names)]
    task = ShardTask.of_items(0, 0, root, items)
    got = list(reading.prefetched(task, None, limit=4096))
    assert [item.path for item, *_ in got] == names
    for item, data, error, seconds in got:
        if item.path in ("fifo.jpg", "folder.jpg", "big.jpg"):
            assert data is None and error is not None and error.path == item.path
        else:
            i = int(item.path[:2])
            assert error is None and data == (bytes([i]) * (1000 + i), None)
        assert seconds >= 0


@pytest.mark.parametrize("slow_after", [60.0, -1.0], ids=["fast reads", "slow reads"])
def test_reads_go_ahead_on_threads_only_after_several_slow_ones(folder, monkeypatch, slow_after):
    """Fast reads stay in the task's thread; once SLOW_READS reads were slow, the rest go ahead on the
    read threads (one slow read is more often a lost CPU than a slow filesystem)."""
    root, names = folder
    monkeypatch.setattr(reading, "SLOW_READ_S", slow_after)   # every read fast, or every read slow
    read, where = reading._read, {}

    def noting(root, item, limit):
        where[item.path] = threading.current_thread().name
        return read(root, item, limit)

    monkeypatch.setattr(reading, "_read", noting)
    task = ShardTask.of_items(0, 0, root, [ShardItem(i, 0, name, 0) for i, name in enumerate(names)])
    assert [item.path for item, *_ in reading.prefetched(task, None, limit=4096)] == names
    inline = reading.SLOW_READS if slow_after < 0 else len(names)
    assert {where[n] for n in names[:inline]} == {threading.current_thread().name}
    assert all(where[n].startswith("lmdbshard-read") for n in names[inline:])


def test_stage_times_of_a_unit_with_slow_reads_add_up_to_no_more_than_its_time(tmp_path, monkeypatch):
    """Reads of 30 ms each (a network filesystem) go ahead on READ_THREADS threads; a unit's ``read`` is
    the time it waited for its next file, so its stage times add up to at most the unit's own time. The
    threads' summed read time (21 x 30 ms) is well over that time: counting it was the old, dishonest share."""
    tree = make_tree(str(tmp_path / "src"))
    delay, read = 0.03, reading.read_regular

    def slow(root, rel, limit):
        time.sleep(delay)
        return read(root, rel, limit)

    monkeypatch.setattr(reading, "read_regular", slow)
    paths = sorted(tree.files)
    task = ShardTask.of_items(0, 0, tree.root, [ShardItem(i, 0, p, tree.files[p]) for i, p in enumerate(paths)])
    opts = WriteOptions(out=str(tmp_path / "out"), transform=TransformConfig(resize_shorter=32), storage=StorageConfig())
    t = time.perf_counter()
    unit = encode_unit(task, 0, task.count, opts)
    wall = time.perf_counter() - t
    assert len(unit.values) == len(paths) and not unit.errors
    assert sum(unit.seconds.values()) <= wall
    assert unit.seconds["read"] < 0.8 * len(paths) * delay
