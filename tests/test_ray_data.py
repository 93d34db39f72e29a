"""Ray Data: ray_dataset(root) reads every sample once, with the same content as ds[i]."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from lmdbshard import ShardedDataset, ray_dataset


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


def test_one_read_task_per_shard_at_most_and_small_blocks(demo_out, ray_local):
    from lmdbshard.read.ray_data import ShardDatasource
    _, out = demo_out
    ds = ShardedDataset(out, fields="all")
    tasks = ShardDatasource(ds).get_read_tasks(100)
    assert len(tasks) == len(ds.shard_sizes)
    assert sum(t.metadata.num_rows for t in tasks) == len(ds)
    assert ray_dataset(out, rows_per_block=2).count() == len(ds)
