"""ShardStream: ranks x workers split the shards exactly once, each streams with a cursor in key order."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lmdbshard import ShardedDataset
from lmdbshard.read.partition import segments, shard_order
from lmdbshard.read.stream import ShardStream

from helpers import assert_exactly_once


class Sizes:
    """Just the shard sizes: enough for planning a stream without any files."""

    def __init__(self, sizes):
        self.shard_sizes = list(sizes)

    def __len__(self):
        return sum(self.shard_sizes)


def indices(stream: ShardStream, sizes, workers: int) -> list[int]:
    starts = np.cumsum(sizes) - sizes
    return [int(starts[k]) + o for w in range(workers) for k, a, b in stream.runs(w, workers) for o in range(a, b)]


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=10), replicas=st.integers(1, 6),
       workers=st.integers(1, 4), drop_last=st.booleans(), shuffle=st.booleans(), epoch=st.integers(0, 99))
def test_ranks_x_workers_cover_every_sample_once(sizes, replicas, workers, drop_last, shuffle, epoch):
    per_rank = []
    for r in range(replicas):
        s = ShardStream(Sizes(sizes), replicas, r, shuffle_shards=shuffle, seed=3, drop_last=drop_last)
        s.set_epoch(epoch)
        per_rank.append(indices(s, sizes, workers))
        assert len(per_rank[-1]) == len(s)
        runs = [run for w in range(workers) for run in s.runs(w, workers)]
        assert all(a < b for _, a, b in runs)   # no empty runs: a worker never opens a shard for nothing
    assert_exactly_once(per_rank, sum(sizes), drop_last)


def reference_segments(sizes, order, start, stop):
    """Positions [start, stop) of the sequence visiting shards in ``order``, wrapping past its end, walked
    one position at a time: the definition the vectorised runs must match."""
    sequence = [(int(k), o) for k in order for o in range(sizes[k])]
    out = []
    for p in range(start, stop):
        k, o = sequence[p % len(sequence)]
        if out and out[-1][0] == k and out[-1][2] == o:
            out[-1] = (k, out[-1][1], o + 1)
        else:
            out.append((k, o, o + 1))
    return out


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 12), min_size=1, max_size=8).filter(sum), shuffle=st.booleans(),
       seed=st.integers(0, 2**64 - 1), epoch=st.integers(0, 99), data=st.data())
def test_runs_are_the_positions_of_the_sequence(sizes, shuffle, seed, epoch, data):
    start = data.draw(st.integers(0, 3 * sum(sizes)))
    stop = data.draw(st.integers(start, start + 2 * sum(sizes) + 1))
    order = shard_order(len(sizes), seed, epoch, shuffle)
    assert segments(sizes, order, start, stop) == reference_segments(sizes, order, start, stop)


def test_a_rank_plans_a_huge_epoch_in_o_shards():
    sizes = [2560] * 3907                           # 10,001,920 samples
    s = ShardStream(Sizes(sizes), 8, 3, shuffle_shards=True, seed=1)
    runs = [run for w in range(4) for run in s.runs(w, 4)]
    assert sum(b - a for _, a, b in runs) == len(s) == sum(sizes) // 8
    assert len({k for k, _, _ in runs}) <= len(sizes) // 8 + 5   # about an eighth of the shards, each once or split


def test_shard_order_changes_per_epoch_only_when_asked():
    sizes = [5] * 12
    def first_shards(shuffle, epoch):
        s = ShardStream(Sizes(sizes), shuffle_shards=shuffle, seed=1)
        s.set_epoch(epoch)
        return [k for k, _, _ in s.runs()]
    assert first_shards(False, 0) == first_shards(False, 1) == list(range(12))
    assert first_shards(True, 0) != first_shards(True, 1)
    assert sorted(first_shards(True, 1)) == list(range(12)) and first_shards(True, 1) == first_shards(True, 1)


def pixel_sum(a):
    return int(a.astype(np.int64).sum())


def test_stream_reads_the_same_samples_as_indexing_in_key_order(demo_out):
    _, out = demo_out
    with ShardedDataset(out, transform=pixel_sum) as ds:
        s = ShardStream(ds)
        assert list(s) == [ds[i] for i in range(len(ds))]


def loaded(stream, method):
    from torch.utils.data import DataLoader
    loader = DataLoader(stream, batch_size=2, num_workers=2, multiprocessing_context=method)
    return [(x, y) for sums, labels in loader for x, y in zip(sums.tolist(), labels.tolist())]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_dataloader_workers_split_the_stream(demo_out, method):
    pytest.importorskip("torch")
    _, out = demo_out
    ds = ShardedDataset(out, transform=pixel_sum)
    want = Counter(ds[i] for i in range(len(ds)))
    got = loaded(ShardStream(ds, shuffle_shards=True, seed=2), method)
    assert Counter(got) == want


def test_dataloader_4_ranks_x_2_workers_read_the_dataset_exactly_once(demo_out):
    pytest.importorskip("torch")
    _, out = demo_out
    ds = ShardedDataset(out, transform=pixel_sum)
    want = Counter(ds[i] for i in range(len(ds)))
    streams = [ShardStream(ds, 4, r, shuffle_shards=True, seed=9) for r in range(4)]
    for s in streams:
        s.set_epoch(1)
    got = [loaded(s, "fork") for s in streams]
    assert [len(g) for g in got] == [len(streams[0])] * 4 == [-(-len(ds) // 4)] * 4
    union = Counter(x for g in got for x in g)
    padding = union - want
    assert union - padding == want and sum(padding.values()) == 4 * len(streams[0]) - len(ds)
