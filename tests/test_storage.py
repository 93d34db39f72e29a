"""Storage modes beyond jpeg/png/raw-HWC: passthrough, raw CHW; and temporary datasets."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from lmdbshard import ShardedDataset, SourceError, StorageConfig, TransformConfig, convert

from helpers import job, reference_rgb, sources


def test_passthrough_keeps_the_source_bytes_when_they_fit(ray_local, tree, tmp_path):
    out = str(tmp_path / "out")
    result = convert(job(tree.root, out, storage=StorageConfig(encoding="passthrough"),
                         transform=TransformConfig(resize_shorter=60)))
    fits = {rel for rel in tree.files if min(Image.open(os.path.join(tree.root, rel)).size) <= 60}
    assert 0 < len(fits) < len(tree.files)
    assert result.passthrough == len(fits) and f"passthrough     {len(fits)} of {len(tree.files)}" in result.summary()
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["stats"]["passthrough"] == len(fits) and m["fields"][0]["encoding"] == "passthrough"
    paths = sources(out)
    with ShardedDataset(out) as ds, ShardedDataset(out, decode=False) as stored:
        for i in range(len(ds)):
            rel = paths[ds.record(i).source_index]
            field = ds.record(i).fields["image"]
            source = open(os.path.join(tree.root, rel), "rb").read()
            if rel in fits:
                assert field.encoding == "passthrough" and stored[i][0] == source
                np.testing.assert_array_equal(ds[i][0], reference_rgb(os.path.join(tree.root, rel), None))
            else:   # too big: resized and re-encoded, PNG sources losslessly
                assert field.encoding == ("png" if rel.endswith(".png") else "jpeg")
                assert min(ds[i][0].shape[:2]) == 60
            assert tuple(field.shape) == ds[i][0].shape


def test_passthrough_without_a_transform_stores_every_file(ray_local, tree, tmp_path):
    out = str(tmp_path / "out")
    result = convert(job(tree.root, out, storage=StorageConfig(encoding="passthrough"), transform=TransformConfig()))
    assert result.passthrough == result.images_written == len(tree.files)


def test_raw_chw_returns_the_stored_layout(ray_local, tree, tmp_path):
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="raw", layout="CHW"), transform=TransformConfig(resize_shorter=24)))
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["fields"] == [{"name": "image", "encoding": "raw", "dtype": "uint8", "layout": "CHW"}]
    paths = sources(out)
    with ShardedDataset(out) as ds:
        for i in range(len(ds)):
            want = reference_rgb(os.path.join(tree.root, paths[ds.record(i).source_index]), 24)
            np.testing.assert_array_equal(ds[i][0], want.transpose(2, 0, 1))
            assert ds.record(i).fields["image"].layout == "CHW"


def test_temporary_dataset_is_removed_on_close_and_on_errors(ray_local, tree, tmp_path):
    parent = tmp_path / "experiments"
    cfg = job(tree.root, str(parent))
    with convert(cfg, temporary=True) as tmp:
        assert os.path.dirname(tmp.out) == str(parent) and len(tmp.dataset()) == len(tree.files)
        assert tmp.result.images_written == len(tree.files)
    assert not os.path.exists(tmp.out) and tmp.closed
    with pytest.raises(RuntimeError, match="boom"):
        with convert(cfg, temporary=True) as tmp:
            tmp.dataset()[0]
            raise RuntimeError("boom")
    assert not os.path.exists(tmp.out)
    os.makedirs(os.path.join(tree.root, "empty_class"))
    for rel in tree.files:
        os.remove(os.path.join(tree.root, rel))
    with pytest.raises(SourceError):                   # a failed conversion leaves nothing behind either
        convert(cfg, temporary=True)
    assert os.listdir(parent) == []
