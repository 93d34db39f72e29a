"""What a sample returns: one field or several, decoded or stored bytes, copies or zero-copy views."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lmdbshard import ShardedDataset
from lmdbshard.format.record import Field
from lmdbshard.write.direct import Sample, write_dataset


def image(i: int) -> np.ndarray:
    return (np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) + i).astype(np.uint8)


def depth(i: int) -> np.ndarray:
    return np.full((4, 5), i / 2, dtype=np.float32)


def fields(i: int) -> list[Field]:
    caption = f"sample {i}".encode()
    return [Field("image", "raw", image(i).tobytes(), (4, 5, 3), "uint8", "HWC"),
            Field("depth", "raw", depth(i).tobytes(), (4, 5), "float32"),
            Field("caption", "raw", caption, (len(caption),), "uint8")]


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> str:
    """An output whose records hold three fields, in two shards of 4 and 3 samples."""
    shards = [[Sample(fields(i), label=i % 2) for i in range(4)], [Sample(fields(i), label=i % 2) for i in range(4, 7)]]
    return write_dataset(str(tmp_path_factory.mktemp("fields")), shards, ["even", "odd"])


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


def test_a_dataset_written_directly_has_real_checksums_and_counts(multi):
    from lmdbshard import verify
    result = verify(multi, workers=1)
    assert result.ok, result
    with ShardedDataset(multi) as ds:
        assert ds.shard_sizes == [4, 3] and ds.classes == ["even", "odd"]
    with open(os.path.join(multi, "manifest.json")) as f:
        assert all(len(s["sha256"]) == 64 for s in json.load(f)["shards"])   # checked by verify above


def test_write_dataset_refuses_mixed_fields_and_unknown_labels(tmp_path):
    a, b = fields(0), fields(1)[:1]
    with pytest.raises(ValueError, match=r"sample 1 has fields \['image'\], the first had"):
        write_dataset(str(tmp_path / "mixed"), [[Sample(a), Sample(b)]], ["x"])
    with pytest.raises(ValueError, match="sample 0 has label 3; labels must index classes"):
        write_dataset(str(tmp_path / "labels"), [[Sample(a, label=3)]], ["x"])
