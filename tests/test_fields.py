"""What a sample returns: one field or several, decoded or stored bytes, copies or zero-copy views."""

from __future__ import annotations

import json
import os

import lmdb
import numpy as np
import pytest

from lmdbshard import ShardedDataset
from lmdbshard.format.record import Field, encode_key, pack_record, shard_filename


def image(i: int) -> np.ndarray:
    return (np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) + i).astype(np.uint8)


def depth(i: int) -> np.ndarray:
    return np.full((4, 5), i / 2, dtype=np.float32)


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> str:
    """An output whose records hold three fields, written with the format module (as another writer would)."""
    root = str(tmp_path_factory.mktemp("fields"))
    os.makedirs(os.path.join(root, "shards"))
    shards, key = [], 0
    for k, count in enumerate([4, 3]):
        rel = f"shards/{shard_filename(k)}"
        env = lmdb.open(os.path.join(root, rel), subdir=False, lock=False, map_size=1 << 22)
        with env.begin(write=True) as txn:
            for j in range(count):
                i = key + j
                txn.put(encode_key(i), pack_record([
                    Field("image", "raw", image(i).tobytes(), (4, 5, 3), "uint8", "HWC"),
                    Field("depth", "raw", depth(i).tobytes(), (4, 5), "float32"),
                    Field("caption", "raw", f"sample {i}".encode(), (len(f"sample {i}"),), "uint8"),
                ], label=i % 2, source_index=i))
        env.close()
        shards.append({"index": k, "file": rel, "first_key": key, "count": count, "bytes": 0, "sha256": ""})
        key += count
    manifest = {"format": "lmdbshard", "format_version": 1, "classes": ["even", "odd"], "num_samples": key,
                "shards": shards, "fields": [{"name": n} for n in ("image", "depth", "caption")]}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return root


def test_default_is_the_image_and_label(multi):
    with ShardedDataset(multi) as ds:
        img, label = ds[5]
        assert np.array_equal(img, image(5)) and label == 1 and img.flags.writeable


def test_all_fields_as_a_dict(multi):
    with ShardedDataset(multi, fields="all") as ds:
        sample, label = ds[6]
        assert list(sample) == ["image", "depth", "caption"] and label == 0
        assert np.array_equal(sample["depth"], depth(6)) and sample["depth"].dtype == np.float32
        assert bytes(sample["caption"]) == b"sample 6"


def test_chosen_fields_as_a_tuple_in_order(multi):
    with ShardedDataset(multi, fields=["depth", "image"]) as ds:
        (d, img), label = ds[2]
        assert np.array_equal(d, depth(2)) and np.array_equal(img, image(2)) and label == 0


def test_stored_bytes_per_field(multi):
    with ShardedDataset(multi, fields="all", decode=False) as ds:
        sample, _ = ds[3]
        assert all(isinstance(v, bytes) for v in sample.values())
        assert sample["image"] == image(3).tobytes() and sample["caption"] == b"sample 3"


def test_zero_copy_views_are_read_only_and_opt_in(multi):
    with ShardedDataset(multi, copy=False) as ds:
        img, _ = ds[4]
        assert np.array_equal(img, image(4)) and not img.flags.writeable and not img.flags.owndata
        with pytest.raises(ValueError):
            img[0, 0, 0] = 1   # the file mapping is read-only: a view can never corrupt the shard
    with ShardedDataset(multi, copy=False, decode=False) as ds:
        assert isinstance(ds[4][0], memoryview)


def test_iteration_uses_the_same_fields(multi):
    with ShardedDataset(multi, fields=["caption"], decode=False) as ds:
        assert [s[0] for s, _ in ds] == [f"sample {i}".encode() for i in range(7)]
        assert [s[0] for s, _ in ds.read_shard(1, 1, 3)] == [b"sample 5", b"sample 6"]


def test_unknown_fields_are_refused_when_opening(multi):
    with pytest.raises(ValueError, match="no field 'mask'; its fields are \\['image', 'depth', 'caption'\\]"):
        ShardedDataset(multi, fields=["image", "mask"])
    with pytest.raises(ValueError, match="fields must be 'all'"):
        ShardedDataset(multi, fields="image")
