"""Reading a dataset at an s3:// URL through the local shard cache, against a real S3-protocol server."""

from __future__ import annotations

import json
import os
import pickle
import time

import numpy as np
import pytest

from lmdbshard import ShardedDataset, ShardSampler
from lmdbshard.format.record import Field
from lmdbshard.read.cache import DOWNLOADS_LOG, ShardCache, parse_limit
from lmdbshard.read.stream import ShardStream
from lmdbshard.storage import objects
from lmdbshard.storage.urls import join
from lmdbshard.tools.cli import main
from lmdbshard.write.direct import Sample, write_dataset

from helpers import job, upload_tree

SHARDS = 4
PER_SHARD = 6


def image(i: int) -> Field:
    arr = np.full((8, 10, 3), i % 251, np.uint8)
    arr[0, 0] = (i % 256, i // 7 % 256, 3)
    return Field("image", "raw", arr.tobytes(), (8, 10, 3), "uint8", "HWC")


@pytest.fixture
def local_ds(tmp_path) -> str:
    shards = [[Sample([image(k * PER_SHARD + j)], (k + j) % 3) for j in range(PER_SHARD)] for k in range(SHARDS)]
    return write_dataset(str(tmp_path / "local"), shards, ["a", "b", "c"])


@pytest.fixture
def remote_ds(local_ds, bucket) -> str:
    return upload_tree(local_ds, join(bucket, "datasets", "small"))


def downloads(cache_dir: str, url: str) -> list[str]:
    """The shard files downloaded for ``url``, one entry per download, from the cache's log."""
    log = os.path.join(ShardCache(cache_dir).folder(url), DOWNLOADS_LOG)
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [line.split()[2] for line in f]


def samples(ds) -> list[tuple[bytes, int]]:
    return [(np.asarray(x).tobytes(), y) for x, y in ds]


def shard_names() -> list[str]:
    return [f"shards/shard-{k:06d}.lmdb" for k in range(SHARDS)]


def test_a_remote_dataset_reads_the_same_samples_as_the_local_one(local_ds, remote_ds, tmp_path):
    cache = str(tmp_path / "cache")
    local = ShardedDataset(local_ds)
    remote = ShardedDataset(remote_ds, cache_dir=cache)
    assert downloads(cache, remote_ds) == []   # opening reads the manifest only
    assert len(remote) == len(local) and remote.classes == local.classes
    assert samples(remote) == samples(local)
    order = [17, 3, 22, 0, 9]
    assert [(remote[i][0].tobytes(), remote[i][1]) for i in order] == [(local[i][0].tobytes(), local[i][1])
                                                                       for i in order]
    assert sorted(downloads(cache, remote_ds)) == shard_names()   # a cold read: each shard downloaded once
    again = pickle.loads(pickle.dumps(remote))   # a worker's copy: same URL, same cache
    assert again.roots == [remote_ds] and samples(again) == samples(local)
    assert sorted(downloads(cache, remote_ds)) == shard_names()
    folder = ShardCache(cache).folder(remote_ds)
    assert open(os.path.join(folder, "url")).read().strip() == remote_ds
    assert json.load(open(os.path.join(folder, "manifest.json")))["num_samples"] == len(local)


def test_the_default_cache_dir_comes_from_the_environment(remote_ds, tmp_path, monkeypatch):
    monkeypatch.setenv("LMDBSHARD_CACHE", str(tmp_path / "env-cache"))
    ds = ShardedDataset(remote_ds)
    ds[0]
    assert downloads(str(tmp_path / "env-cache"), remote_ds) == shard_names()[:1]


def test_dataloader_workers_share_one_cache_and_download_each_shard_once(local_ds, remote_ds, tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader
    cache = str(tmp_path / "cache")
    ds = ShardedDataset(remote_ds, cache_dir=cache, transform=lambda x: int(x.sum()))
    want = [ShardedDataset(local_ds, transform=lambda x: int(x.sum()))[i] for i in range(len(ds))]
    # batch_size 1, index order: both workers read every shard, at the same time
    loader = DataLoader(ds, batch_size=1, num_workers=2, persistent_workers=True,
                        sampler=ShardSampler(ds, num_replicas=1, rank=0, shuffle=False))
    for _ in range(2):
        got = [(int(x), int(y)) for x, y in loader]
        assert got == want
    assert sorted(downloads(cache, remote_ds)) == shard_names()
    log = open(os.path.join(ShardCache(cache).folder(remote_ds), DOWNLOADS_LOG)).read().split("\n")
    assert str(os.getpid()) not in {line.split()[1] for line in log if line}   # the workers downloaded
    assert isinstance(torch.__version__, str)


def read_all(ds: ShardedDataset) -> list[tuple[bytes, int]]:
    return samples(ds)


def test_processes_racing_for_the_same_shards_download_each_once(local_ds, remote_ds, tmp_path):
    import multiprocessing
    cache = str(tmp_path / "cache")
    ds = ShardedDataset(remote_ds, cache_dir=cache)
    with multiprocessing.get_context("spawn").Pool(2) as pool:   # each reads every shard, at the same time
        got = pool.map(read_all, [ds] * 2, chunksize=1)
    assert got == [samples(ShardedDataset(local_ds))] * 2
    assert sorted(downloads(cache, remote_ds)) == shard_names()


def test_a_stream_larger_than_cache_limit_reads_everything_and_stays_within_it(local_ds, remote_ds, tmp_path):
    cache = str(tmp_path / "cache")
    sizes = [e["bytes"] for e in json.load(open(os.path.join(local_ds, "manifest.json")))["shards"]]
    limit = max(sizes) * 2 + 1
    ds = ShardedDataset(remote_ds, cache_dir=cache, cache_limit=limit)
    stream = ShardStream(ds)
    assert samples(stream) == samples(ShardedDataset(local_ds))
    ds.close()
    held = [os.path.getsize(os.path.join(ShardCache(cache).folder(remote_ds), n)) for n in shard_names()
            if os.path.exists(os.path.join(ShardCache(cache).folder(remote_ds), n))]
    assert sum(held) <= limit and len(held) < SHARDS


def test_cache_limit_evicts_the_least_recently_used_but_never_a_shard_in_use(remote_ds, tmp_path):
    cache = str(tmp_path / "cache")
    folder = ShardCache(cache).folder(remote_ds)
    probe = ShardedDataset(remote_ds, cache_dir=cache)
    sizes = [ref.bytes for ref in probe.shard_refs]
    limit = sizes[0] + sizes[1] + sizes[3] + 1   # room for three of the four shards, not all of them

    def present() -> set[int]:
        return {k for k, n in enumerate(shard_names()) if os.path.exists(os.path.join(folder, n))}

    holder = ShardedDataset(remote_ds, cache_dir=cache, cache_limit=limit)
    holder[0]                               # shard 0: oldest, but held open all along
    for k in (1, 2, 1):                     # then 1, 2, and 1 again: 2 is now the least recently used
        time.sleep(0.05)
        with ShardedDataset(remote_ds, cache_dir=cache, cache_limit=limit) as reader:
            reader[k * PER_SHARD]
    assert present() == {0, 1, 2}
    time.sleep(0.05)
    with ShardedDataset(remote_ds, cache_dir=cache, cache_limit=limit) as reader:
        reader[3 * PER_SHARD]               # needs room: shard 2 goes, not 0 (in use) nor 1 (used lately)
    assert present() == {0, 1, 3}
    assert holder[1][1] == probe[1][1]      # shard 0 still reads
    assert sorted(downloads(cache, remote_ds)) == shard_names()


def test_a_cached_copy_of_the_wrong_size_is_downloaded_again(local_ds, remote_ds, tmp_path):
    cache = str(tmp_path / "cache")
    with ShardedDataset(remote_ds, cache_dir=cache) as ds:
        ds[0]
    copy = os.path.join(ShardCache(cache).folder(remote_ds), shard_names()[0])
    with open(copy, "r+b") as f:
        f.truncate(os.path.getsize(copy) // 2)
    with ShardedDataset(remote_ds, cache_dir=cache) as ds:
        assert samples(ds) == samples(ShardedDataset(local_ds))
    assert sorted(downloads(cache, remote_ds)) == sorted([shard_names()[0]] + shard_names())


def test_a_dataset_converted_again_into_the_same_url_is_not_read_from_stale_copies(local_ds, bucket, tmp_path):
    cache = str(tmp_path / "cache")
    url = upload_tree(local_ds, join(bucket, "ds"))
    assert samples(ShardedDataset(url, cache_dir=cache)) == samples(ShardedDataset(local_ds))
    shards = [[Sample([image(1000 + k * PER_SHARD + j)], j % 3) for j in range(PER_SHARD)] for k in range(SHARDS)]
    again = write_dataset(str(tmp_path / "again"), shards, ["a", "b", "c"])   # same shard sizes, other records
    assert [os.path.getsize(os.path.join(again, n)) for n in shard_names()] == \
        [os.path.getsize(os.path.join(local_ds, n)) for n in shard_names()]
    upload_tree(again, url)
    assert samples(ShardedDataset(url, cache_dir=cache)) == samples(ShardedDataset(again))
    assert sorted(downloads(cache, url)) == sorted(shard_names() * 2)


def test_cache_limit_takes_bytes_or_sizes():
    assert parse_limit(None) is None and parse_limit(1000) == 1000
    assert parse_limit("50GB") == 50 * 10**9 and parse_limit("1.5 GiB") == 3 * 2**29 and parse_limit("20m") == 20e6
    with pytest.raises(ValueError, match="cache_limit must be"):
        parse_limit("lots")


def test_a_missing_manifest_at_a_url_is_one_line_naming_it(bucket, tmp_path, capsys):
    url = join(bucket, "not-converted")
    with pytest.raises(FileNotFoundError, match=r"manifest.json not found: .* is not a complete lmdbshard dataset"):
        ShardedDataset(url, cache_dir=str(tmp_path / "cache"))
    assert main(["info", url]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{url}/manifest.json not found" in err


def test_tools_accept_urls(remote_ds, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMDBSHARD_CACHE", str(tmp_path / "cache"))
    assert main(["info", remote_ds]) == 0
    assert f"{SHARDS * PER_SHARD}" in capsys.readouterr().out
    assert main(["verify", "--progress", "none", remote_ds]) == 0
    assert "OK: 4 shards, 24 records" in capsys.readouterr().out
    assert sorted(downloads(str(tmp_path / "cache"), remote_ds)) == shard_names()
    assert main(["stats", "--text", remote_ds]) == 0
    assert main(["preview", "--n", "4", "-o", str(tmp_path / "p.png"), remote_ds]) == 0
    assert os.path.getsize(tmp_path / "p.png") > 0
    assert main(["bench-read", "--n", "8", "--max-seconds", "1", remote_ds]) == 0


def test_verify_of_a_url_reports_a_damaged_object(local_ds, bucket, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMDBSHARD_CACHE", str(tmp_path / "cache"))
    url = upload_tree(local_ds, join(bucket, "ds"))
    objects.write_bytes(join(url, shard_names()[2]), b"not an lmdb")
    assert main(["verify", "--progress", "none", url]) == 1
    out = capsys.readouterr().out
    assert "shard 2" in out and "FAILED" in out and "shard 1:" not in out


def test_verify_of_a_url_hashes_a_fresh_download_once_and_a_kept_copy_again(remote_ds, tmp_path, monkeypatch):
    from lmdbshard.format import filehash
    from lmdbshard.read import verify as verifying
    cache = str(tmp_path / "cache")
    hashed: list[str] = []
    real = filehash.hash_file
    monkeypatch.setattr(verifying, "hash_file", lambda path: hashed.append(path) or real(path))
    assert verifying.verify(remote_ds, cache_dir=cache).ok
    assert hashed == [] and sorted(downloads(cache, remote_ds)) == shard_names()   # checked while downloading
    copy = os.path.join(ShardCache(cache).folder(remote_ds), shard_names()[1])
    with open(copy, "r+b") as f:   # the kept copy rots, in a value: the same size, its records still parse
        f.seek(os.path.getsize(copy) - 5000)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = verifying.verify(remote_ds, cache_dir=cache)
    assert len(hashed) == SHARDS and sorted(downloads(cache, remote_ds)) == shard_names()   # kept copies: hashed
    assert result.broken_shards == [1]


def test_ray_dataset_reads_a_url_through_each_node_cache(local_ds, remote_ds, tmp_path, ray_local):
    from lmdbshard import ray_dataset
    cache = str(tmp_path / "cache")
    rows = ray_dataset(remote_ds, cache_dir=cache, override_num_blocks=2).take_all()
    want = sorted((x.tobytes(), y) for x, y in ShardedDataset(local_ds))
    assert sorted((np.asarray(r["image"]).tobytes(), int(r["label"])) for r in rows) == want
    assert sorted(downloads(cache, remote_ds)) == shard_names()


def test_caffe_datum_shards_are_directories_on_the_store_too(ray_local, tree, bucket, tmp_path):
    from lmdbshard import StorageConfig, convert
    out = str(tmp_path / "datum")
    convert(job(tree.root, out, storage=StorageConfig(encoding="caffe_datum")))
    url = upload_tree(out, join(bucket, "datum"))   # shards/shard-000000.lmdb/data.mdb, ...
    cache = str(tmp_path / "cache")
    remote = ShardedDataset(url, cache_dir=cache)
    assert samples(remote) == samples(ShardedDataset(out))
    assert all(name.endswith("/data.mdb") for name in downloads(cache, url))
    from lmdbshard.read.verify import verify
    result = verify(url, cache_dir=cache)
    assert result.ok and result.records == len(remote)


def test_a_download_is_checked_against_the_sha256_the_manifest_lists(bucket, tmp_path, monkeypatch):
    import hashlib
    from lmdbshard.errors import ShardError
    from lmdbshard.read import cache as shard_cache
    data = os.urandom(10_000)
    objects.write_bytes(join(bucket, "ds", "shards", "x.lmdb"), data)
    monkeypatch.setattr(shard_cache, "DOWNLOAD_CHUNK", 4096)   # several requests: hashed while downloading
    store = ShardCache(str(tmp_path / "cache"))
    good = store.file(join(bucket, "ds"), "shards/x.lmdb", len(data), hashlib.sha256(data).hexdigest(), "v1")
    with shard_cache.pin(good):
        assert open(good.path, "rb").read() == data
    bad = store.file(join(bucket, "ds"), "shards/x.lmdb", len(data), "0" * 64, "v2")
    with pytest.raises(ShardError, match=r"x.lmdb has a sha256 other than the manifest's 0000"):
        shard_cache.pin(bad)
    assert not [n for n in os.listdir(os.path.dirname(good.path)) if ".partial" in n or ".download" in n]
