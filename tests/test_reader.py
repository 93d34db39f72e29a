"""ShardedDataset as a training loop uses it: indices, pickling, fork, spawn, DataLoader workers."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest

from lmdbshard import ShardedDataset
from lmdbshard.errors import FormatError, FormatVersionError


def _checksum(args):
    ds, indices = args
    return [(i, int(ds[i][0].astype(np.int64).sum()), ds[i][1]) for i in indices]


def pixel_sum(a):
    return int(a.astype(np.int64).sum())


def expected(out):
    with ShardedDataset(out) as ds:
        return [(i, int(ds[i][0].astype(np.int64).sum()), ds[i][1]) for i in range(len(ds))]


def test_indices_behave_like_a_sequence(demo_out):
    _, out = demo_out
    with ShardedDataset(out) as ds:
        n = len(ds)
        assert np.array_equal(ds[-1][0], ds[n - 1][0]) and ds[-n][1] == ds[0][1]
        for bad in (n, -n - 1, 10**9):
            with pytest.raises(IndexError):
                ds[bad]
        with pytest.raises(TypeError):
            ds[1.5]
        assert sum(1 for _ in ds) == n


def test_decode_false_returns_the_stored_jpeg(demo_out):
    _, out = demo_out
    with ShardedDataset(out, decode=False) as raw, ShardedDataset(out) as ds:
        data, label = raw[3]
        assert isinstance(data, bytes) and data[:2] == b"\xff\xd8" and label == ds[3][1]


def test_transforms_are_applied(demo_out):
    _, out = demo_out
    with ShardedDataset(out, transform=lambda a: a.shape, target_transform=lambda y: f"c{y}") as ds:
        shape, label = ds[0]
        assert len(shape) == 3 and label.startswith("c")


def test_two_datasets_on_one_root_in_one_process(demo_out):
    _, out = demo_out
    a, b = ShardedDataset(out), ShardedDataset(out)
    assert np.array_equal(a[5][0], b[5][0])
    a.close()
    assert b[6][1] == ShardedDataset(out)[6][1]   # b still reads after a closed
    b.close()


def test_pickle_is_small_and_opens_nothing(demo_out):
    _, out = demo_out
    ds = ShardedDataset(out)
    ds[0]   # opens a shard in this process
    blob = pickle.dumps(ds)
    assert len(blob) < 4000
    clone = pickle.loads(blob)
    assert clone._txns == {} and np.array_equal(clone[0][0], ds[0][0])


def test_reader_creates_no_lock_files(demo_out):
    _, out = demo_out
    before = sorted(os.listdir(os.path.join(out, "shards")))
    with ShardedDataset(out) as ds:
        for i in range(len(ds)):
            ds[i]
    assert sorted(os.listdir(os.path.join(out, "shards"))) == before
    assert all(name.endswith(".lmdb") for name in before)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocess_pool_reads_every_sample(demo_out, method):
    """A dataset opened (and used) in the parent before fork works in the children."""
    _, out = demo_out
    want = expected(out)
    ds = ShardedDataset(out)
    ds[0]
    chunks = [(ds, list(range(i, len(ds), 3))) for i in range(3)]
    with mp.get_context(method).Pool(2) as pool:
        got = sorted(x for part in pool.map(_checksum, chunks) for x in part)
    assert got == want


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_torch_dataloader_with_workers(demo_out, method):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader
    _, out = demo_out
    want = expected(out)
    ds = ShardedDataset(out, transform=pixel_sum)
    ds[0]
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=method, shuffle=False)
    got = []
    for sums, labels in loader:
        got.extend(zip(sums.tolist(), labels.tolist()))
    assert [(i, s, y) for i, (s, y) in enumerate(got)] == want


def test_manifest_problems_are_refused(demo_out, tmp_path):
    import json, shutil
    _, out = demo_out
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    path = os.path.join(copy, "manifest.json")
    m = json.load(open(path))
    json.dump(dict(m, format_version=99), open(path, "w"))
    with pytest.raises(FormatVersionError, match="version 99.*up to 1"):
        ShardedDataset(copy)
    m["shards"][0]["file"] = "../../etc/passwd"
    json.dump(m, open(path, "w"))
    with pytest.raises(FormatError, match="escapes the dataset root"):
        ShardedDataset(copy)
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="not a complete lmdbshard dataset"):
        ShardedDataset(copy)


def _reader(ds, seed, barrier, results):
    """One of many reader processes: read, wait until every reader holds its shards open, read again."""
    try:
        rng = np.random.default_rng(seed)
        got = [(int(i), pixel_sum(ds[int(i)][0]), ds[int(i)][1]) for i in rng.integers(0, len(ds), 4)]
        barrier.wait(120)
        got += [(int(i), pixel_sum(ds[int(i)][0]), ds[int(i)][1]) for i in rng.integers(0, len(ds), 4)]
        results.put((seed, got))
    except Exception as exc:   # reported to the parent, which fails the test with it
        results.put((seed, repr(exc)))


def test_64_concurrent_reader_processes(demo_out):
    """64 processes forked from a parent that already reads the dataset hold every shard open at once:
    no MDB_READERS_FULL (no lock file, no reader slots) and every sample reads the same as in the parent."""
    _, out = demo_out
    want = {i: (s, y) for i, s, y in expected(out)}
    ds = ShardedDataset(out)
    for i in range(len(ds)):   # the parent holds every shard open before forking
        ds[i]
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(64), ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(ds, seed, barrier, results)) for seed in range(64)]
    for p in procs:
        p.start()
    reports = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
    errors = {seed: r for seed, r in reports.items() if isinstance(r, str)}
    assert not errors and len(reports) == 64
    assert all(want[i] == (s, y) for r in reports.values() for i, s, y in r)
    assert all(p.exitcode == 0 for p in procs)


def test_verify_while_a_reader_is_open_in_the_same_process(demo_out):
    """py-lmdb opens a file once per process: verify shares the readers' environments instead of reporting
    every open shard as unreadable, and the readers keep reading after it."""
    from lmdbshard import verify
    from lmdbshard.read.envs import registry
    _, out = demo_out
    with ShardedDataset(out) as ds:
        first = [label for _, label in ds]   # every shard open
        result = verify(out)
        assert result.ok, [str(p) for p in result.problems]
        assert [label for _, label in ds] == first
        assert len([e for e in registry().open.values() if e.path.startswith(out)]) == 5
    assert not [e for e in registry().held.values() if e.path.startswith(out)]
