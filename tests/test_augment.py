"""Write-time augmentation end to end: seeded ops, rounds, and pixels equal to an independent reference."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from lmdbshard import AugmentConfig, AugmentOp, ConfigError, ShardedDataset, StorageConfig, TransformConfig, convert
from lmdbshard import parse_config

import reference as ref
from helpers import job, reference_rgb, sources, stored_items

OPS = [AugmentOp(op="random_resized_crop", size=24, scale=[0.3, 1.0]),
       AugmentOp(op="hflip", p=0.5),
       AugmentOp(op="color_jitter", brightness=0.4, contrast=0.3, saturation=0.5)]


@pytest.fixture(scope="module")
def augmented(ray_local, tmp_path_factory):
    from helpers import make_tree
    base = tmp_path_factory.mktemp("aug")
    tree = make_tree(str(base / "src"), per_class=4)
    out = str(base / "out")
    cfg = job(tree.root, out, seed=7, storage=StorageConfig(encoding="raw"), transform=TransformConfig(resize_shorter=40),
              augment=AugmentConfig(ops=OPS, rounds=3))
    result = convert(cfg)
    return tree, out, cfg, result


def test_rounds_write_every_source_k_times_shuffled_together(augmented):
    tree, out, _, _ = augmented
    ds = ShardedDataset(out)
    n = len(tree.files)
    assert len(ds) == 3 * n
    pairs = [(ds.record(i).source_index, ds.record(i).round) for i in range(len(ds))]
    assert sorted(pairs) == [(s, r) for s in range(n) for r in range(3)]
    rounds_in_first_shard = {r for _, r in pairs[:5]}
    assert len(rounds_in_first_shard) >= 2 or len({r for _, r in pairs[5:10]}) >= 2   # shuffled together
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["rounds"] == 3 and m["class_counts"] == [12, 12, 12] and m["num_planned"] == 3 * n


def test_pixels_equal_an_independent_reference(augmented):
    tree, out, cfg, _ = augmented
    ds = ShardedDataset(out)
    paths = sources(out)
    flips = 0
    for i in range(len(ds)):
        rec = ds.record(i)
        img = Image.fromarray(reference_rgb(os.path.join(tree.root, paths[rec.source_index]), 40))
        img = ref.rrc(img, 24, (0.3, 1.0), (3 / 4, 4 / 3), ref.Stream(7, rec.source_index, rec.round, 0),
                      Image.Resampling.BILINEAR)
        if ref.flipped(ref.Stream(7, rec.source_index, rec.round, 1), 0.5):
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            flips += 1
        img = ref.jitter(img, ref.Stream(7, rec.source_index, rec.round, 2), 0.4, 0.3, 0.5)
        np.testing.assert_array_equal(ds[i][0], np.asarray(img))
    assert 0.2 * len(ds) < flips < 0.8 * len(ds)


def test_rounds_differ_and_a_rerun_writes_the_same_bytes(augmented, tmp_path):
    tree, out, cfg, _ = augmented
    with ShardedDataset(out) as ds:
        by_item = {(ds.record(i).source_index, ds.record(i).round): ds[i][0] for i in range(len(ds))}
    differs = sum(not np.array_equal(by_item[(s, 0)], by_item[(s, 1)]) for s in range(len(tree.files)))
    assert differs == len(tree.files)
    again = str(tmp_path / "again")
    convert(job(tree.root, again, seed=7, storage=cfg.storage, transform=cfg.transform, augment=cfg.augment))
    assert stored_items(again) == stored_items(out)


@pytest.mark.parametrize("ops, match", [
    ([{"op": "hflip", "size": 3}], r"augment.ops\[0\].size does not apply to op hflip"),
    ([{"op": "resize"}], r"augment.ops\[0\] \(resize\) needs exactly one of size"),
    ([{"op": "random_resized_crop", "size": 8, "scale": [0.5, 2]}], r"augment.ops\[0\].scale must be"),
    ([{"op": "color_jitter", "hue": 0.9}], r"augment.ops\[0\].hue must be in \[0, 0.5\]"),
    ([{"op": "rotate"}], r"augment.ops\[0\].op must be one of"),
])
def test_bad_ops_are_refused_before_work(tmp_path, ops, match):
    (tmp_path / "src" / "a").mkdir(parents=True)
    data = {"source": {"root": str(tmp_path / "src")}, "out": str(tmp_path / "out"), "augment": {"ops": ops}}
    with pytest.raises(ConfigError, match=match):
        parse_config(data).validate()


def test_augmentation_has_its_own_stage_in_the_telemetry(augmented):
    *_, result = augmented
    assert result.stage_seconds["augment"] > 0 and "augment" in result.stage_shares()
