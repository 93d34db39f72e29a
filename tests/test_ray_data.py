"""Ray Data: ray_dataset(root) reads every sample once, with the same content as ds[i], in the blocks it promises."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from lmdbshard import ShardedDataset, ray_dataset
from lmdbshard.format.record import Field
from lmdbshard.write.direct import Sample, write_dataset


def digest(sample) -> str:
    data = sample.tobytes() if isinstance(sample, np.ndarray) else bytes(sample)
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("decode", [True, False])
def test_rows_match_the_dataset(demo_out, ray_local, decode):
    _, out = demo_out
    rows = ray_dataset(out, decode=decode, override_num_blocks=3).take_all()
    with ShardedDataset(out, decode=decode) as ds:
        want = Counter((digest(img), label) for img, label in ds)
    assert len(rows) == sum(want.values())
    assert Counter((digest(r["image"]), int(r["label"])) for r in rows) == want
    if decode:
        assert all(r["image"].dtype == np.uint8 and r["image"].ndim == 3 for r in rows)


def image(i: int) -> np.ndarray:
    return np.full((3, 4, 3), i, np.uint8)


@pytest.fixture(scope="module")
def three_shards(tmp_path_factory) -> str:
    """Shards of 5, 5 and 3 samples; sample ``i`` is an image filled with ``i``, label ``i % 2``."""
    def sample(i: int) -> Sample:
        return Sample([Field("image", "raw", image(i).tobytes(), (3, 4, 3), "uint8", "HWC")], label=i % 2)
    shards = [[sample(i) for i in range(a, b)] for a, b in ((0, 5), (5, 10), (10, 13))]
    return write_dataset(str(tmp_path_factory.mktemp("three")), shards, ["even", "odd"])


def test_one_read_task_per_shard_at_most(three_shards):
    from lmdbshard.read.ray_data import ShardDatasource
    ds = ShardedDataset(three_shards, fields="all")
    assert [t.metadata.num_rows for t in ShardDatasource(ds).get_read_tasks(100)] == [5, 5, 3]
    assert [t.metadata.num_rows for t in ShardDatasource(ds).get_read_tasks(2)] == [10, 3]   # whole shards


def test_read_tasks_yield_blocks_of_rows_per_block_in_key_order(three_shards):
    """The tasks Ray Data runs, called here directly: each block holds ``rows_per_block`` rows (the
    last of a task fewer), and the rows follow the keys. Ray Data may still re-bundle blocks downstream."""
    from lmdbshard.read.ray_data import ShardDatasource
    ds = ShardedDataset(three_shards, fields="all")
    tasks = ShardDatasource(ds, rows_per_block=2).get_read_tasks(100)
    blocks = [list(task()) for task in tasks]
    assert [[b.num_rows for b in task] for task in blocks] == [[2, 2, 1], [2, 2, 1], [2, 1]]
    rows = [(np.asarray(r["image"]), r["label"]) for task in blocks for b in task for r in b.to_pylist()]
    assert [int(img.flat[0]) for img, _ in rows] == list(range(13)) and [lb for _, lb in rows] == [i % 2 for i in range(13)]
    assert all(np.array_equal(img, image(i)) for i, (img, _) in enumerate(rows))
    blocks = [list(task()) for task in ShardDatasource(ds, rows_per_block=4).get_read_tasks(1)]
    assert [[b.num_rows for b in task] for task in blocks] == [[4, 4, 4, 1]]   # blocks run across shards


def test_rows_per_block_end_to_end(demo_out, ray_local):
    _, out = demo_out
    with ShardedDataset(out) as ds:
        assert ray_dataset(out, rows_per_block=2).count() == len(ds)
