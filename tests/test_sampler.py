"""ShardSampler: exactly once across ranks, equal counts, seeded per epoch, local reads, resume mid-epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lmdbshard import ResumeError, ShardedDataset, ShardSampler

from helpers import assert_exactly_once

shard_sizes = st.lists(st.integers(0, 40), min_size=1, max_size=12)


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
