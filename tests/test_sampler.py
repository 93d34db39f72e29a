"""ShardSampler: exactly once across ranks, equal counts, seeded per epoch, local reads, resume mid-epoch."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lmdbshard import ResumeError, ShardedDataset, ShardSampler
from lmdbshard.read.partition import BLOCKS, SAMPLES, random_keys, rank_span, shard_order

from helpers import assert_exactly_once

shard_sizes = st.lists(st.integers(0, 40), min_size=1, max_size=12)


def reference_epoch(sizes, seed, epoch, shuffle, block_size) -> np.ndarray:
    """The definition of an epoch's order, computed the direct way over the whole epoch (the sampler's
    first implementation): sort every index by (shard visit, block key, block, sample key, index)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    if not shuffle or n == 0:
        return np.arange(n, dtype=np.int64)
    k = len(sizes)
    shard_of = np.repeat(np.arange(k, dtype=np.int64), sizes)
    block = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    block = block // block_size if block_size is not None else np.zeros(n, dtype=np.int64)
    visit = np.empty(k, dtype=np.int64)
    visit[shard_order(k, seed, epoch, True)] = np.arange(k)
    block_key = random_keys((shard_of << 32) | block, seed, epoch, BLOCKS)
    sample_key = random_keys(np.arange(n), seed, epoch, SAMPLES)
    return np.lexsort((sample_key, block, block_key, visit[shard_of]))


def reference_indices(sizes, replicas, rank, seed, epoch, shuffle, drop_last, block_size) -> np.ndarray:
    """One rank's contiguous piece of the reference epoch, padded by repeating it from its start."""
    order = reference_epoch(sizes, seed, epoch, shuffle, block_size)
    start, stop = rank_span(len(order), replicas, rank, drop_last)
    return order[np.arange(start, stop) % len(order)] if len(order) else order


def sampler(sizes, replicas, rank, seed, epoch, shuffle=True, drop_last=False, block_size=1024) -> ShardSampler:
    s = ShardSampler(sizes, replicas, rank, seed=seed, shuffle=shuffle, drop_last=drop_last, block_size=block_size)
    s.set_epoch(epoch)
    return s


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 90), min_size=1, max_size=14), replicas=st.integers(1, 9),
       drop_last=st.booleans(), shuffle=st.booleans(), block=st.sampled_from([None, 1, 2, 7, 16, 64]),
       seed=st.integers(0, 2**64 - 1), epoch=st.integers(0, 10**6))
def test_each_rank_computes_exactly_its_piece_of_the_defined_epoch(sizes, replicas, drop_last, shuffle, block,
                                                                    seed, epoch):
    for rank in range(replicas):
        got = sampler(sizes, replicas, rank, seed, epoch, shuffle, drop_last, block).indices()
        want = reference_indices(sizes, replicas, rank, seed, epoch, shuffle, drop_last, block)
        assert got.dtype == np.int64 and got.tolist() == want.tolist()
    s = sampler(sizes, replicas, 0, seed, epoch, shuffle, drop_last, block)
    assert s.epoch_order().tolist() == reference_epoch(sizes, seed, epoch, shuffle, block).tolist()


@pytest.mark.parametrize("block", [None, 1000, 4096])
def test_large_shards_keep_the_defined_order(block):
    sizes = [70001, 65536, 0, 3, 131073, 4095]   # blocks and ranks that straddle the shuffling chunks
    for rank in range(3):
        got = sampler(sizes, 3, rank, seed=11, epoch=4, block_size=block).indices()
        assert np.array_equal(got, reference_indices(sizes, 3, rank, 11, 4, True, False, block))


def test_one_rank_of_8_holds_little_more_than_its_indices():
    sizes = [2560] * 800                          # 2,048,000 samples; rank 0 of 8 gets 256,000
    s = sampler(sizes, 8, 0, seed=0, epoch=1)
    tracemalloc.start()
    try:
        indices = s.indices()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(indices) == sum(sizes) // 8
    assert peak <= 64 * len(indices)              # the whole epoch's order alone would take 8 * 8 = 64 B per index


@settings(max_examples=150, deadline=None)
@given(sizes=shard_sizes, replicas=st.integers(1, 8), drop_last=st.booleans(), shuffle=st.booleans(),
       block=st.sampled_from([None, 1, 3, 16]), seed=st.integers(0, 2**64 - 1), epoch=st.integers(0, 10**6))
def test_every_index_once_and_equal_counts(sizes, replicas, drop_last, shuffle, block, seed, epoch):
    def rank(r):
        s = ShardSampler(sizes, replicas, r, seed=seed, shuffle=shuffle, drop_last=drop_last, block_size=block)
        s.set_epoch(epoch)
        return s
    per_rank = [list(rank(r)) for r in range(replicas)]
    assert_exactly_once(per_rank, sum(sizes), drop_last)
    assert all(len(rank(r)) == len(per_rank[r]) for r in range(replicas))
    assert per_rank == [list(rank(r)) for r in range(replicas)]   # deterministic per (seed, epoch)
    if not drop_last:   # padding repeats the epoch's sequence from its start
        order = rank(0).epoch_order()
        flat = [i for r in per_rank for i in r]
        assert flat == [int(order[p % len(order)]) for p in range(len(flat))]


@settings(max_examples=100, deadline=None)
@given(sizes=shard_sizes, block=st.integers(1, 16), seed=st.integers(0, 2**32), epoch=st.integers(0, 100))
def test_reads_stay_local_one_shard_and_one_block_at_a_time(sizes, block, seed, epoch):
    s = ShardSampler(sizes, 1, 0, seed=seed, block_size=block)
    s.set_epoch(epoch)
    order = s.epoch_order()
    starts = np.cumsum(sizes) - sizes
    shard = np.searchsorted(np.cumsum(sizes), order, side="right")
    blocks = [(int(k), int(i - starts[k]) // block) for k, i in zip(shard, order)]
    runs = [b for j, b in enumerate(blocks) if j == 0 or b != blocks[j - 1]]
    assert len(runs) == len(set(runs))                          # each block is read in one run
    shard_runs = [k for j, (k, _) in enumerate(runs) if j == 0 or k != runs[j - 1][0]]
    assert len(shard_runs) == len(set(shard_runs))              # and each shard in one run


def test_epochs_and_seeds_give_different_orders():
    sizes = [64] * 8 + [13]
    def order(seed, epoch):
        s = ShardSampler(sizes, 2, 1, seed=seed)
        s.set_epoch(epoch)
        return list(s)
    assert order(0, 0) == order(0, 0)
    assert len({tuple(order(0, e)) for e in range(4)} | {tuple(order(1, 0))}) == 5
    plain = ShardSampler(sizes, 1, 0, shuffle=False)
    assert list(plain) == list(range(sum(sizes)))   # key order: already shuffled at write time


def test_resume_mid_epoch_yields_exactly_the_rest():
    sizes = [20, 20, 20, 7]
    s = ShardSampler(sizes, 3, 2, seed=5)
    s.set_epoch(3)
    full = list(s)
    it = iter(s)
    head = [next(it) for _ in range(9)]
    state = json.loads(json.dumps(s.state_dict()))   # plain data, safe in any checkpoint format
    assert state["epoch"] == 3 and state["yielded"] == 9 and state["seed"] == 5
    resumed = ShardSampler(sizes, 3, 2, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)   # a training loop calls this again on restart: the resume point is kept
    assert head + list(resumed) == full
    resumed.set_epoch(4)   # the next epoch starts from its beginning
    assert len(list(resumed)) == len(full)


@settings(max_examples=100, deadline=None)
@given(sizes=shard_sizes, replicas=st.integers(1, 5), drop_last=st.booleans(), block=st.sampled_from([None, 1, 3]),
       seed=st.integers(0, 2**32), epoch=st.integers(0, 100), data=st.data())
def test_resume_at_any_point_yields_exactly_the_rest(sizes, replicas, drop_last, block, seed, epoch, data):
    rank = data.draw(st.integers(0, replicas - 1))
    s = sampler(sizes, replicas, rank, seed, epoch, drop_last=drop_last, block_size=block)
    full = list(s)
    consumed = data.draw(st.integers(0, len(full)))
    state = json.loads(json.dumps(s.state_dict(consumed=consumed)))
    resumed = ShardSampler(sizes, replicas, rank, seed=seed, drop_last=drop_last, block_size=block)
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)
    assert list(resumed) == full[consumed:]
    assert resumed.state_dict()["yielded"] == len(full)


def test_resume_state_must_fit_the_sampler():
    s = ShardSampler([10, 10], 2, 0)
    state = s.state_dict()
    with pytest.raises(ResumeError, match="num_replicas=2.*num_replicas=4"):
        ShardSampler([10, 10], 4, 0).load_state_dict(state)
    with pytest.raises(ResumeError, match="dataset_size"):
        ShardSampler([10, 11], 2, 0).load_state_dict(state)


@pytest.mark.parametrize("bad", [dict(num_replicas=0, rank=0), dict(num_replicas=2, rank=2),
                                 dict(num_replicas=2, rank=0, block_size=0)])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        ShardSampler([4], **bad)


def test_needs_ranks_without_torch_distributed():
    with pytest.raises(ValueError, match="pass num_replicas and rank"):
        ShardSampler([4])


def pixel_sum(a):
    return int(a.astype(np.int64).sum())


def loader(ds, sampler):
    from torch.utils.data import DataLoader
    return DataLoader(ds, batch_size=3, sampler=sampler, num_workers=2, multiprocessing_context="fork")


def load(ds, sampler):
    return [(s, y) for sums, labels in loader(ds, sampler) for s, y in zip(sums.tolist(), labels.tolist())]


def test_dataloader_4_ranks_x_2_workers_read_the_dataset_exactly_once(demo_out):
    pytest.importorskip("torch")
    _, out = demo_out
    ds = ShardedDataset(out, transform=pixel_sum)
    want = [ds[i] for i in range(len(ds))]
    samplers = [ShardSampler(ds, 4, r, seed=1, drop_last=True) for r in range(4)]
    for s in samplers:
        s.set_epoch(2)
    got = [load(ds, s) for s in samplers]
    assert [len(g) for g in got] == [len(ds) // 4] * 4
    assert got == [[want[i] for i in s] for s in samplers]    # each rank reads its indices, in order
    assert_exactly_once([list(s) for s in samplers], len(ds), drop_last=True)


def test_dataloader_resumes_mid_epoch(demo_out):
    pytest.importorskip("torch")
    _, out = demo_out
    ds = ShardedDataset(out, transform=pixel_sum)
    s = ShardSampler(ds, 1, 0, seed=7)
    full = load(ds, s)
    first = []
    for step, (sums, labels) in enumerate(loader(ds, s), 1):   # the job stops after 2 batches of 3
        first.extend(zip(sums.tolist(), labels.tolist()))
        if step == 2:
            break
    assert s.state_dict()["yielded"] > 6   # the workers drew indices ahead of training
    state = s.state_dict(consumed=6)
    resumed = ShardSampler(ds, 1, 0, seed=7)
    resumed.load_state_dict(state)
    assert first + load(ds, resumed) == full


def test_scale_benchmark_reports_both_targets():
    from lmdbshard.benchmark.scale_sampler import measure
    result = measure(samples=100_000, shard_size=2560, replicas=8, repeats=1)
    assert (result.samples, result.shards, result.rank_samples) == (102_400, 40, 12_800)
    assert result.indices_s > 0 and result.permutation_s > 0
    assert result.memory_verdict == "PASS"
    rows = result.rows()
    assert len(rows) == 2 and all(row.endswith(("PASS", "MISS")) for row in rows)
