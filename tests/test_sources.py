"""Every source kind end to end: list, convert on Ray, read back, compare with what the test made."""

from __future__ import annotations

import glob
import json
import os
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from lmdbshard import (
    AugmentConfig, AugmentOp, ConvertConfig, JobFailedError, RayConfig, ShardedDataset, SourceConfig, SourceError,
    StorageConfig, TransformConfig, convert,
)
from lmdbshard.write.sources.imagefolder import list_imagefolder
from lmdbshard.write.sources import list_source

import reference as ref
from helpers import pixels
from helpers import reference_rgb, sources

SYNSETS = ["n01440764", "n01443537", "n01484850"]
#: The devkit numbers synsets by ILSVRC2012_ID, not in sorted order.
DEVKIT_IDS = {1: "n01484850", 2: "n01440764", 3: "n01443537"}


def run(source: SourceConfig, out: str, **kw) -> ConvertConfig:
    cfg = ConvertConfig(source=source, out=out, shard_size=4, progress="none", ray=RayConfig(max_in_flight=4),
                        **{"storage": StorageConfig(encoding="raw"), **kw})
    convert(cfg)
    return cfg


def save(path: str, arr: np.ndarray, fmt: str = "JPEG") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, fmt, quality=95)


@pytest.fixture
def imagenet(tmp_path):
    """train/<synset>/ folders, a flat val folder, LOC_val_solution.csv and the devkit ground truth."""
    root = tmp_path / "imagenet"
    for label, synset in enumerate(SYNSETS):
        save(str(root / "train" / synset / f"{synset}_1.JPEG"), pixels(label, 0, (30, 26)))
    truth = {}
    for i in range(1, 8):
        synset = SYNSETS[(i * 2) % 3]
        truth[f"ILSVRC2012_val_{i:08d}"] = synset
        save(str(root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG"), pixels(i % 3, i, (24 + i, 20 + 2 * i)))
    with open(root / "LOC_val_solution.csv", "w") as f:
        f.write("ImageId,PredictionString\n")
        for image_id, synset in sorted(truth.items(), key=lambda kv: kv[1]):   # rows in any order
            f.write(f"{image_id},{synset} 1 2 20 18 {synset} 3 4 10 12\n")
    ids = {s: i for i, s in DEVKIT_IDS.items()}
    (root / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{ids[truth[k]]}\n" for k in sorted(truth)))
    (root / "devkit_synsets.txt").write_text("".join(f"{DEVKIT_IDS[i]} words for {i}\n" for i in (1, 2, 3)))
    return root, truth


def test_imagenet_val_labels_agree_with_the_train_imagefolder(ray_local, imagenet, tmp_path):
    root, truth = imagenet
    train_classes = list_imagefolder(str(root / "train"), [".JPEG"]).classes
    out = str(tmp_path / "val")
    run(SourceConfig(kind="imagenet_val", root=str(root / "val"), labels_file=str(root / "LOC_val_solution.csv"),
                     classes_from=str(root / "train")), out)
    ds = ShardedDataset(out)
    assert ds.classes == train_classes == SYNSETS and len(ds) == len(truth)
    paths = sources(out)
    for i in range(len(ds)):
        image, label = ds[i]
        name = paths[ds.record(i).source_index]
        assert label == train_classes.index(truth[name[:-len(".JPEG")]])
        np.testing.assert_array_equal(image, reference_rgb(str(root / "val" / name), None))


def test_imagenet_val_devkit_ground_truth_lists_the_same_labels(imagenet):
    root, truth = imagenet
    csv = list_source(SourceConfig(kind="imagenet_val", root=str(root / "val"),
                                   labels_file=str(root / "LOC_val_solution.csv"), classes_from=str(root / "train")))
    devkit = list_source(SourceConfig(kind="imagenet_val", root=str(root / "val"),
                                      labels_file=str(root / "ILSVRC2012_validation_ground_truth.txt"),
                                      synset_map=str(root / "devkit_synsets.txt")))
    assert devkit.classes == csv.classes == SYNSETS     # the synset map's synsets, sorted as ImageFolder does
    assert list(devkit.paths) == list(csv.paths) and list(devkit.labels) == list(csv.labels)
    with pytest.raises(SourceError, match="pass source.synset_map="):
        list_source(SourceConfig(kind="imagenet_val", root=str(root / "val"),
                                 labels_file=str(root / "ILSVRC2012_validation_ground_truth.txt")))


def test_filelist_as_caffe_convert_imageset_reads_it(ray_local, tmp_path):
    root = tmp_path / "imgs"
    lines = {}
    for i in range(6):
        rel = f"part {i % 2}/img {i}.png" if i % 3 == 0 else f"part{i % 2}/img_{i}.jpg"   # spaces in paths
        save(str(root / rel), pixels(i % 4, i, (22 + i, 30)), "PNG" if rel.endswith(".png") else "JPEG")
        lines[rel] = (i * 5) % 4
    (tmp_path / "train.txt").write_text("".join(f"{p} {lbl}\n" for p, lbl in lines.items()) + "\n")
    out = str(tmp_path / "out")
    run(SourceConfig(kind="filelist", root=str(root), list_file=str(tmp_path / "train.txt")), out,
        transform=TransformConfig(resize_shorter=20))
    ds = ShardedDataset(out)
    assert ds.classes == ["0", "1", "2", "3"] and len(ds) == 6
    paths = sources(out)
    for i in range(len(ds)):
        rel = paths[ds.record(i).source_index]
        assert ds[i][1] == lines[rel]
        np.testing.assert_array_equal(ds[i][0], reference_rgb(str(root / rel), 20))


def test_a_long_filelist_is_listed_compactly_with_every_line_in_order(tmp_path):
    """More lines than one batch of the compact table (65,536): the listing holds each line's path and
    label in file order, and its digest is the one of the same lines given as Python lists."""
    from lmdbshard.write.listing import Listing, PathTable
    lines = [(f"d{i % 7}/img {i}.jpg", i % 11) for i in range(70_001)]
    (tmp_path / "big.txt").write_text("".join(f"{p} {lbl}\n" for p, lbl in lines))
    listing = list_source(SourceConfig(kind="filelist", root=str(tmp_path), list_file=str(tmp_path / "big.txt")))
    assert isinstance(listing.paths, PathTable) and listing.labels.dtype == np.int32
    assert list(listing.paths) == [p for p, _ in lines] and listing.labels.tolist() == [lbl for _, lbl in lines]
    assert listing.classes == [str(k) for k in range(11)]
    same = Listing(str(tmp_path), listing.classes, [p for p, _ in lines], [lbl for _, lbl in lines], kind="filelist")
    assert listing.digest() == same.digest()


def test_paired_masks_follow_the_geometry_nearest_neighbour(ray_local, tmp_path):
    root = tmp_path / "seg"
    masks = {}
    for i in range(5):
        size = (30 + 3 * i, 24 + 2 * i)
        save(str(root / "images" / f"s{i}.jpg"), pixels(0, i, size))
        mask = ((np.add.outer(np.arange(size[1]), np.arange(size[0])) // 7 + i) % 6).astype(np.uint8)
        img = Image.fromarray(mask, "L")
        if i == 2:   # a palette mask keeps its indices
            img = img.convert("P")
            img.putpalette([v for k in range(256) for v in (k, 255 - k, 0)])
        os.makedirs(root / "masks", exist_ok=True)
        img.save(root / "masks" / f"s{i}.png")
        masks[f"images/s{i}.jpg"] = mask
    save(str(root / "images" / "orphan.jpg"), pixels(0, 9, (20, 20)))   # no mask: left out, warned
    out = str(tmp_path / "out")
    cfg = run(SourceConfig(kind="paired", root=str(root)), out, seed=3, transform=TransformConfig(resize_shorter=16),
              augment=AugmentConfig(ops=[AugmentOp(op="hflip", p=0.5), AugmentOp(op="color_jitter", brightness=0.5)]))
    ds = ShardedDataset(out, fields="all")
    assert len(ds) == 5 and ds.classes == []
    paths = sources(out)
    for i in range(len(ds)):
        sample, label = ds[i]
        rec = ds.record(i)
        rel = paths[rec.source_index]
        assert label == -1 and sample["mask"].dtype == np.uint8 and sample["mask"].ndim == 2
        h, w = sample["image"].shape[:2]
        want = np.asarray(Image.fromarray(masks[rel]).resize((w, h), Image.Resampling.NEAREST))
        flip = ref.flipped(ref.Stream(cfg.seed, rec.source_index, rec.round, 0), 0.5)
        np.testing.assert_array_equal(sample["mask"], ref.hflip(want) if flip else want)   # no jitter on masks
    raw = ShardedDataset(out, fields="all", decode=False)[0][0]
    assert raw["mask"][:8] == b"\x89PNG\r\n\x1a\n" and isinstance(raw["image"], bytes)


def test_python_dataset_by_import_path_with_labels(ray_local, tmp_path):
    from pydatasets import Squares
    out = str(tmp_path / "out")
    run(SourceConfig(kind="python", target="pydatasets:Squares", args=[11]), out)
    ds = ShardedDataset(out)
    assert len(ds) == 11 and ds.classes == ["a", "b", "c"]
    for i in range(len(ds)):
        s = ds.record(i).source_index
        arr, label = Squares(11)[s]
        np.testing.assert_array_equal(ds[i][0], arr)
        assert ds[i][1] == label


def test_python_dataset_object_with_masks(ray_local, tmp_path):
    from pydatasets import Squares
    out = str(tmp_path / "out")
    data = Squares(6, masks=True)
    convert(ConvertConfig(source=SourceConfig(kind="python"), out=out, shard_size=4, progress="none",
                          storage=StorageConfig(encoding="png", mask_encoding="raw")), dataset=data)
    ds = ShardedDataset(out, fields=["image", "mask"])
    for i in range(len(ds)):
        (image, mask), label = ds[i]
        img, want = data[ds.record(i).source_index]
        np.testing.assert_array_equal(image, np.asarray(img))
        np.testing.assert_array_equal(mask, want)
        assert label == -1


def test_python_dataset_errors_are_one_clear_line(ray_local, tmp_path):
    # importable on the driver only: the workers cannot import it
    (tmp_path / "driver_only_mod.py").write_text("from pydatasets import Squares as Here\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(JobFailedError, match=r"source.target 'driver_only_mod:Here' cannot be imported on a "
                                                 r"Ray worker \(ModuleNotFoundError.*\); install it on every node"):
            run(SourceConfig(kind="python", target="driver_only_mod:Here", args=[3]), str(tmp_path / "a"))
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(SourceError, match=r"source.target 'pydatasets:Broken' failed to build on the driver "
                                          r"\(RuntimeError: no data here\)"):
        run(SourceConfig(kind="python", target="pydatasets:Broken"), str(tmp_path / "b"))
    with pytest.raises(SourceError, match=r"cannot be imported on the driver"):
        run(SourceConfig(kind="python", target="no_such_module_here:X"), str(tmp_path / "c"))

    class Locked(list):
        lock = threading.Lock()
    with pytest.raises(SourceError, match=r"the dataset object Locked cannot be pickled for the Ray workers .*"
                                          r"pass source.target="):
        convert(ConvertConfig(source=SourceConfig(kind="python"), out=str(tmp_path / "d"), progress="none"),
                dataset=Locked([np.zeros((4, 4, 3), np.uint8)]))


def test_a_rerun_with_another_dataset_object_of_the_same_shape_is_refused(ray_local, tmp_path):
    from lmdbshard import PlanMismatchError
    from pydatasets import Squares
    out = str(tmp_path / "out")
    cfg = ConvertConfig(source=SourceConfig(kind="python"), out=out, shard_size=4, progress="none")
    convert(cfg, dataset=Squares(6))
    assert convert(cfg, dataset=Squares(6)).shards_reused == 2          # the same contents: resumable
    with pytest.raises(PlanMismatchError, match=r"source.python changed from .*sha256:.* to .*sha256:.*overwrite=true"):
        convert(cfg, dataset=Squares(6, masks=True))                      # same class, same length


def test_python_items_that_are_bytes_are_skipped_with_the_fix(ray_local, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(JobFailedError, match="max_error_rate"):
        convert(ConvertConfig(source=SourceConfig(kind="python", target="pydatasets:EncodedBytes"), out=out,
                              progress="none"))
    reasons = {json.load(open(p))["errors"][0]["reason"] for p in glob.glob(os.path.join(out, "reports", "*.json"))}
    assert reasons and all("the image is a bytes; return a PIL image or a uint8 array" in r for r in reasons)
