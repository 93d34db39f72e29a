"""NVIDIA DALI's caffe reader on Caffe Datum output: the pipeline of docs/CAFFE_DALI.md, run with DALI's CPU
reader, returns for every sample the label and CHW BGR pixels (and mask) that ShardedDataset returns.

Opt-in: ``make test DALI=1`` (or ``DALI=1 pytest tests/test_dali.py`` with nvidia-dali-cuda120 installed),
because the DALI wheel is about 1 GB."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import Image

from helpers import job, pixels

if os.environ.get("DALI", "") in ("", "0"):
    pytest.skip("DALI's caffe reader runs only with DALI=1 (make test DALI=1 installs nvidia-dali-cuda120, "
                "about 1 GB)", allow_module_level=True)
pytest.importorskip("nvidia.dali", reason="DALI=1 but nvidia-dali-cuda120 is not installed; "
                                          "pip install nvidia-dali-cuda120 (or run make test DALI=1)")

from lmdbshard import ShardedDataset, SourceConfig, StorageConfig, TransformConfig, convert  # noqa: E402

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "CAFFE_DALI.md")


def doc_blocks() -> list[str]:
    with open(DOC) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.fixture(scope="module")
def doc():
    """The names the first Python block of docs/CAFFE_DALI.md defines (shard_dirs, caffe_pipeline)."""
    names: dict = {}
    exec(compile(doc_blocks()[0], DOC, "exec"), names)
    return names


def read_all(doc, out: str, n: int, batch_size: int = 4) -> list[tuple]:
    """The first ``n`` samples the documented pipeline yields, each a tuple of numpy arrays."""
    pipe = doc["caffe_pipeline"](out, batch_size=batch_size, num_threads=1, device_id=None, seed=0)
    pipe.build()
    assert pipe.epoch_size("images") == n
    samples = []
    while len(samples) < n:
        outputs = pipe.run()
        samples += [tuple(np.array(o.at(i)) for o in outputs) for i in range(len(outputs[0]))]
    return samples[:n]


def test_the_documented_example_runs(ray_local, tree, tmp_path, doc):
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="caffe_datum")))
    names = dict(doc)
    second = doc_blocks()[1]
    exec(compile(second.replace('"out/demo"', repr(out)), DOC, "exec"), names)
    with ShardedDataset(out) as ds:
        image, label = ds[0]
        np.testing.assert_array_equal(np.array(names["images"].at(0)), image[:, :, ::-1].transpose(2, 0, 1))
        assert np.array(names["labels"].at(0)).tolist() == [label]


def test_labels_and_chw_bgr_pixels_of_every_sample(ray_local, tree, tmp_path, doc):
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="caffe_datum"), transform=TransformConfig(resize_shorter=20)))
    with ShardedDataset(out) as ds:
        got = read_all(doc, out, len(ds))
        assert len(ds) == len(tree.files)
        for i, (chw_bgr, label) in enumerate(got):
            image, want = ds[i]
            assert chw_bgr.shape == (3, *image.shape[:2]) and chw_bgr.dtype == np.uint8
            np.testing.assert_array_equal(chw_bgr, image[:, :, ::-1].transpose(2, 0, 1))
            assert label.tolist() == [want]


def test_masks_from_the_dual_label_lmdb(ray_local, tmp_path, doc):
    root = tmp_path / "seg"
    for d in ("images", "masks"):
        os.makedirs(root / d)
    for i in range(9):
        Image.fromarray(pixels(2, i, (19 + i, 15))).save(root / "images" / f"{i:03d}.png")
        mask = (np.arange(15 * (19 + i)).reshape(15, 19 + i) % (i + 3)).astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    out = str(tmp_path / "out")
    cfg = job(str(root), out, storage=StorageConfig(encoding="caffe_datum"), transform=TransformConfig(), shard_size=4)
    cfg.source = SourceConfig(kind="paired", root=str(root))
    convert(cfg)
    with ShardedDataset(out, fields=["image", "mask"]) as ds:
        got = read_all(doc, out, len(ds), batch_size=3)
        for i, (chw_bgr, _, mask) in enumerate(got):
            (image, want_mask), _ = ds[i]
            np.testing.assert_array_equal(chw_bgr, image[:, :, ::-1].transpose(2, 0, 1))
            np.testing.assert_array_equal(mask, want_mask[None])


def test_encoded_datums_decode_in_dali(ray_local, tree, tmp_path):
    from nvidia.dali import fn, pipeline_def, types
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="caffe_datum", datum_encoded=True, quality=95)))

    @pipeline_def
    def decoded(paths):
        data, labels = fn.readers.caffe(path=paths, name="images")
        return fn.decoders.image(data, device="cpu", output_type=types.RGB), labels

    with ShardedDataset(out) as ds:
        paths = [ref.path for ref in ds.shard_refs]
        pipe = decoded(paths, batch_size=len(ds), num_threads=1, device_id=None)
        pipe.build()
        images, labels = pipe.run()
        for i in range(len(ds)):
            image, label = ds[i]
            got = np.array(images.at(i))
            assert got.shape == image.shape and np.array(labels.at(i)).tolist() == [label]
            assert np.abs(got.astype(int) - image).mean() < 1.0   # two JPEG decoders: equal up to rounding
