"""End to end on a real local Ray cluster: source folder -> shards -> manifest -> reader."""

from __future__ import annotations

import glob
import json
import os

import lmdb
import numpy as np
import pytest
from PIL import Image

from lmdbshard import JobFailedError, PlanMismatchError, ShardedDataset, StorageConfig, TransformConfig, convert
from lmdbshard.format.record import decode_key
from lmdbshard.format.record import RecordHasher

from helpers import job, reference_rgb, sources, stored_items


def test_every_image_once_with_its_label(demo_out):
    tree, out = demo_out
    ds = ShardedDataset(out)
    assert len(ds) == len(tree.files) == 21
    assert ds.classes == ["cat", "dog", "zebra"] and ds.class_to_idx == {"cat": 0, "dog": 1, "zebra": 2}
    paths = sources(out)
    seen = [paths[ds.record(i).source_index] for i in range(len(ds))]
    assert sorted(seen) == sorted(tree.files)                       # every file exactly once
    for i, rel in enumerate(seen):
        image, label = ds[i]
        assert label == tree.files[rel] == ds.classes.index(rel.split("/")[0])
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) == 32


def test_jpeg_pixels_match_reference_pipeline(demo_out):
    tree, out = demo_out
    ds = ShardedDataset(out)
    paths = sources(out)
    for i in range(len(ds)):
        image, _ = ds[i]
        ref = reference_rgb(os.path.join(tree.root, paths[ds.record(i).source_index]), 32)
        assert image.shape == ref.shape
        mse = np.mean((image.astype(float) - ref.astype(float)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 28   # q90 re-encode of tiny, sharp images scores 31-40 dB


@pytest.mark.parametrize("crop", [None, 24])
def test_raw_pixels_equal_reference_exactly(ray_local, tree, tmp_path, crop):
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="raw"),
                transform=TransformConfig(resize_shorter=30, center_crop=crop)))
    ds = ShardedDataset(out)
    paths = sources(out)
    for i in range(len(ds)):
        image, _ = ds[i]
        ref = reference_rgb(os.path.join(tree.root, paths[ds.record(i).source_index]), 30, crop)
        np.testing.assert_array_equal(image, ref)
        if crop:
            assert image.shape == (crop, crop, 3)


def test_bicubic_resample_is_honoured(ray_local, tree, tmp_path):
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="raw"),
                transform=TransformConfig(resize_shorter=30, resample="bicubic")))
    ds = ShardedDataset(out)
    paths = sources(out)
    differs = 0
    for i in range(len(ds)):
        path = os.path.join(tree.root, paths[ds.record(i).source_index])
        np.testing.assert_array_equal(ds[i][0], reference_rgb(path, 30, resample=Image.Resampling.BICUBIC))
        differs += not np.array_equal(ds[i][0], reference_rgb(path, 30))
    assert differs > len(ds) // 2     # the filter really changes the pixels


def test_png_storage_is_lossless(ray_local, tree, tmp_path):
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="png"), transform=TransformConfig()))
    ds = ShardedDataset(out)
    paths = sources(out)
    for i in range(len(ds)):
        path = os.path.join(tree.root, paths[ds.record(i).source_index])
        np.testing.assert_array_equal(ds[i][0], reference_rgb(path, None))


def test_two_runs_write_identical_records(demo_out, tmp_path, ray_local):
    tree, out = demo_out
    again = str(tmp_path / "again")
    convert(job(tree.root, again))
    assert stored_items(again) == stored_items(out)
    m1, m2 = (json.load(open(os.path.join(d, "manifest.json"))) for d in (out, again))
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    assert m1["plan_sha256"] == m2["plan_sha256"]


def test_keys_are_dense_sorted_and_order_is_shuffled(demo_out):
    tree, out = demo_out
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    keys = [decode_key(k) for k, _ in stored_items(out)]
    assert keys == list(range(len(tree.files)))       # no errors: dense keys across all shards
    ds = ShardedDataset(out)
    order = [ds.record(i).source_index for i in range(len(ds))]
    assert order != sorted(order)                       # stored order differs from source order
    for s in manifest["shards"][:-1]:                   # every full shard mixes classes
        labels = {ds[i][1] for i in range(s["first_key"], s["first_key"] + s["count"])}
        assert len(labels) >= 2, s


def test_manifest_is_complete_and_checksums_hold(demo_out):
    tree, out = demo_out
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["format"] == "lmdbshard" and m["format_version"] == 1 and m["lmdbshard_version"]
    assert m["stats"]["images_written"] == 21 and m["stats"]["stage_seconds"]["decode"] > 0
    assert m["num_samples"] == len(tree.files) and m["num_errors"] == 0 and m["errors"] == []
    assert m["classes"] == ["cat", "dog", "zebra"] and m["seed"] == 0 and m["shard_size"] == 5
    assert m["class_counts"] == [7, 7, 7]
    shares = m["stats"]["stage_shares"]
    assert set(shares) == set(m["stats"]["stage_seconds"]) and abs(sum(shares.values()) - 1) < 1e-3
    assert list(shares.values()) == sorted(shares.values(), reverse=True)   # the bounding stage first
    assert m["config"]["storage"]["encoding"] == "jpeg" and m["config"]["shard_size"] == 5
    assert len(m["shards"]) == 5 and sum(s["count"] for s in m["shards"]) == 21
    for k, s in enumerate(m["shards"]):
        path = os.path.join(out, s["file"])
        assert s["index"] == k and s["first_key"] == 5 * k and os.path.getsize(path) == s["bytes"]
        env = lmdb.open(path, subdir=False, readonly=True, lock=False)
        h = RecordHasher()
        with env.begin() as txn:
            for key, value in txn.cursor():
                h.update(key, value)
            assert txn.stat()["entries"] == s["count"]
        env.close()
        assert h.hexdigest() == s["sha256"]
    leftovers = [p for p in glob.glob(os.path.join(out, "**", "*"), recursive=True) if "partial" in p]
    assert leftovers == [] and not glob.glob(os.path.join(out, "shards", "*-lock"))


def test_corrupt_files_are_skipped_and_recorded(ray_local, tree, tmp_path):
    bad = {
        "cat/truncated.jpg": open(os.path.join(tree.root, "cat/img_00.jpg"), "rb").read()[:300],
        "dog/empty.jpg": b"",
        "zebra/text.jpg": b"this is not an image\n",
    }
    for rel, data in bad.items():
        with open(os.path.join(tree.root, rel), "wb") as f:
            f.write(data)
    out = str(tmp_path / "out")
    result = convert(job(tree.root, out, max_error_rate=0.5))
    assert result.images_skipped == 3 and result.images_written == len(tree.files)
    assert "images skipped  3" in result.summary()
    assert "resume check" not in result.summary()   # a first run kept nothing, so checked nothing
    m = json.load(open(os.path.join(out, "manifest.json")))
    errors = {e["path"]: e for e in m["errors"]}
    assert set(errors) == set(bad) and m["num_errors"] == 3
    assert m["class_counts"] == [7, 7, 7]     # 8 planned per class, 1 skipped in each
    assert "empty" in errors["dog/empty.jpg"]["reason"]
    assert "identify" in errors["zebra/text.jpg"]["reason"]
    assert all(isinstance(e["position"], int) and isinstance(e["shard"], int) for e in m["errors"])
    with ShardedDataset(out) as ds:
        paths = sources(out)
        assert sorted(paths[ds.record(i).source_index] for i in range(len(ds))) == sorted(tree.files)
    for shard in m["shards"]:   # keys stay dense inside each shard after skips
        env = lmdb.open(os.path.join(out, shard["file"]), subdir=False, readonly=True, lock=False)
        with env.begin() as txn:
            keys = [decode_key(k) for k, _ in txn.cursor()]
        env.close()
        assert keys == list(range(shard["first_key"], shard["first_key"] + shard["count"]))


def test_error_rate_over_limit_fails_without_manifest(ray_local, tree, tmp_path):
    with open(os.path.join(tree.root, "cat/broken.jpg"), "wb") as f:
        f.write(b"garbage")
    out = str(tmp_path / "out")
    with pytest.raises(JobFailedError, match="max_error_rate"):
        convert(job(tree.root, out, max_error_rate=0.0))
    assert not os.path.exists(os.path.join(out, "manifest.json"))


def test_on_error_fail_stops_and_keeps_no_manifest(ray_local, tree, tmp_path):
    with open(os.path.join(tree.root, "dog/broken.jpg"), "wb") as f:
        f.write(b"garbage")
    out = str(tmp_path / "out")
    with pytest.raises(JobFailedError, match=r"1 shard failed.*dog/broken.jpg.*rerun"):
        convert(job(tree.root, out, on_error="fail"))
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    assert not glob.glob(os.path.join(out, "shards", "*partial*"))


def test_rerun_reuses_complete_shards_and_rebuilds_missing_ones(demo_out, tmp_path, ray_local):
    tree, out = demo_out
    import shutil
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    before = stored_items(copy)
    result = convert(job(tree.root, copy))
    assert (result.shards_reused, result.shards_built) == (5, 0)
    assert "throughput      n/a (every shard was reused)" in result.summary()
    os.remove(os.path.join(copy, "shards", "shard-000003.lmdb"))
    os.remove(os.path.join(copy, "manifest.json"))
    result = convert(job(tree.root, copy))
    assert (result.shards_reused, result.shards_built) == (4, 1)
    assert "1 built, 4 reused" in result.summary()
    assert stored_items(copy) == before


def test_changed_settings_or_source_are_refused_before_work(demo_out, tmp_path, ray_local):
    tree, out = demo_out
    import shutil
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    stamp = os.path.getmtime(os.path.join(copy, "manifest.json"))
    with pytest.raises(PlanMismatchError, match=r"storage.*quality.*90.*80.*overwrite=true"):
        convert(job(tree.root, copy, storage=StorageConfig(quality=80)))
    src2 = str(tmp_path / "src2")
    shutil.copytree(tree.root, src2)
    os.remove(os.path.join(src2, "dog", "img_03.jpg"))
    with pytest.raises(PlanMismatchError, match=r"1 removed \(e.g. 'dog/img_03.jpg'\)"):
        convert(job(src2, copy))
    assert os.path.getmtime(os.path.join(copy, "manifest.json")) == stamp
    result = convert(job(src2, copy, overwrite=True))   # on purpose: start fresh
    assert result.images_written == len(tree.files) - 1 and result.shards_reused == 0
