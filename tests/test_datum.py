"""Caffe Datum mode: values parse with a Datum class built from caffe.proto's field definitions by the
protobuf library itself, masks go to a dual LMDB with identical keys, every LMDB is published as the
environment directory (holding data.mdb) that Caffe and DALI open, and everything reads back."""

from __future__ import annotations

import glob
import io
import hashlib
import json
import os
import shutil

import lmdb
import numpy as np
import pytest
from PIL import Image

from lmdbshard import ShardedDataset, SourceConfig, StorageConfig, TransformConfig, convert, verify

from helpers import job, pixels, reference_rgb, sources


@pytest.fixture(scope="module")
def Datum():
    """caffe.proto's ``message Datum``, compiled at run time from its field definitions (no protoc)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="caffe_datum_test.proto", package="caffe", syntax="proto2")
    msg = fdp.message_type.add(name="Datum")
    for name, number, kind in [("channels", 1, F.TYPE_INT32), ("height", 2, F.TYPE_INT32), ("width", 3, F.TYPE_INT32),
                               ("data", 4, F.TYPE_BYTES), ("label", 5, F.TYPE_INT32)]:
        msg.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
    msg.field.add(name="float_data", number=6, type=F.TYPE_FLOAT, label=F.LABEL_REPEATED)
    msg.field.add(name="encoded", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL, default_value="false")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.Datum"))


def values(path: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the LMDB environment directory ``path``, opened as Caffe and DALI open it."""
    assert os.listdir(path) == ["data.mdb"]
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        items = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    env.close()
    return items


def test_raw_datums_parse_with_protobuf_and_hold_chw_bgr(ray_local, tree, tmp_path, Datum):
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="caffe_datum"), transform=TransformConfig(resize_shorter=20)))
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["record_format"] == "caffe_datum" and m["fields"][0]["channel_order"] == "BGR"
    paths = sources(out)
    stored = [kv for shard in m["shards"] for kv in values(os.path.join(out, shard["file"]))]
    ds = ShardedDataset(out)
    for key, value in stored:
        d = Datum()
        d.ParseFromString(value)
        assert d.SerializeToString() == value              # the bytes protobuf itself writes (unknown fields kept)
        assert d.channels == 3 and not d.encoded and len(d.data) == 3 * d.height * d.width
        assert d.HasField("encoded")                       # false written out, as Caffe's CVMatToDatum does
        chw_bgr = np.frombuffer(d.data, np.uint8).reshape(3, d.height, d.width)
        rec = ds.record(int(key))
        rgb = reference_rgb(os.path.join(tree.root, paths[rec.source_index]), 20)
        np.testing.assert_array_equal(chw_bgr, rgb[:, :, ::-1].transpose(2, 0, 1))
        assert d.label == tree.files[paths[rec.source_index]] == rec.label
        image, label = ds[int(key)]
        np.testing.assert_array_equal(image, rgb)          # the reader returns HWC RGB, as in every mode
        assert label == d.label
    ds.close()
    assert len(stored) == len(tree.files)
    assert verify(out).ok


def test_encoded_datums_hold_a_jpeg(ray_local, tree, tmp_path, Datum):
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="caffe_datum", datum_encoded=True, quality=95)))
    ds = ShardedDataset(out)
    key, value = values(glob.glob(os.path.join(out, "shards", "*.lmdb"))[0])[0]
    d = Datum()
    d.ParseFromString(value)
    assert d.encoded and d.data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(d.data)) as img:
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), ds[int(key)][0])
    assert ds[int(key)][0].shape[2] == 3 and min(ds[int(key)][0].shape[:2]) == 32
    assert isinstance(ShardedDataset(out, decode=False)[0][0], bytes)


def test_masks_go_to_a_dual_lmdb_with_identical_keys(ray_local, tmp_path, Datum):
    root = tmp_path / "seg"
    for d in ("images", "masks"):
        os.makedirs(root / d)
    want = {}
    for i in range(7):
        Image.fromarray(pixels(1, i, (21 + i, 17))).save(root / "images" / f"{i:03d}.png")
        mask = (np.arange(17 * (21 + i)).reshape(17, 21 + i) % (i + 2)).astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
        want[f"images/{i:03d}.png"] = mask
    out = str(tmp_path / "out")
    cfg = job(str(root), out, storage=StorageConfig(encoding="caffe_datum"), transform=TransformConfig())
    cfg.source = SourceConfig(kind="paired", root=str(root))
    convert(cfg)
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert [f["name"] for f in m["fields"]] == ["image", "mask"]
    paths = sources(out)
    with ShardedDataset(out, fields="all") as ds:
        for i in range(len(ds)):
            sample, _ = ds[i]
            np.testing.assert_array_equal(sample["mask"], want[paths[ds.record(i).source_index]])
    for shard in m["shards"]:
        images, labels = (values(os.path.join(out, shard[k])) for k in ("file", "label_file"))
        assert [k for k, _ in images] == [k for k, _ in labels] and len(images) == shard["count"]
        for _, value in labels:
            d = Datum()
            d.ParseFromString(value)
            assert d.channels == 1 and len(d.data) == d.height * d.width and not d.HasField("label")
        for k, digest in (("file", "file_sha256"), ("label_file", "label_file_sha256")):   # of each data.mdb
            with open(os.path.join(out, shard[k], "data.mdb"), "rb") as f:
                assert shard[digest] == hashlib.sha256(f.read()).hexdigest()
    assert verify(out).ok
    result = convert(cfg)                                 # a rerun keeps every shard: both files checked
    assert result.shards_reused == len(m["shards"]) and result.shards_built == 0
    with open(os.path.join(out, m["shards"][1]["label_file"], "data.mdb"), "r+b") as f:
        f.seek(-100, os.SEEK_END)                         # one byte of the companion changed, same size
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert convert(cfg).shards_built == 1                  # its file checksum sends the shard back
    shutil.rmtree(os.path.join(out, m["shards"][0]["label_file"]))
    assert [p.shard for p in verify(out).problems] == [0]
    assert convert(cfg).shards_built == 1                  # a missing companion is rebuilt with its shard


def test_shards_are_environment_directories_that_plain_lmdb_opens(ray_local, tree, tmp_path):
    out = str(tmp_path / "out")
    convert(job(tree.root, out, storage=StorageConfig(encoding="caffe_datum")))
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert sorted(os.listdir(os.path.join(out, "shards"))) == [f"shard-{k:06d}.lmdb" for k in range(len(m["shards"]))]
    for shard in m["shards"]:
        path = os.path.join(out, shard["file"])
        assert os.path.isdir(path) and os.listdir(path) == ["data.mdb"]      # no lock.mdb is published
        assert shard["bytes"] == os.path.getsize(os.path.join(path, "data.mdb"))
        env = lmdb.open(path, readonly=True, lock=False)                     # the default subdir=True
        assert env.stat()["entries"] == shard["count"]
        env.close()
    with ShardedDataset(out) as ds:
        assert len(ds) == len(tree.files) and sorted(label for _, label in ds) == sorted(tree.files.values())


def test_older_one_file_datum_shards_still_read_and_a_rerun_republishes_them(ray_local, tree, tmp_path):
    """Outputs written before shards became directories hold one file per shard: they read and verify as
    before, and a rerun of the same command rebuilds those shards as directories (what DALI can open)."""
    out = str(tmp_path / "out")
    cfg = job(tree.root, out, storage=StorageConfig(encoding="caffe_datum"))
    convert(cfg)
    with ShardedDataset(out) as ds:
        before = [(image.tobytes(), label) for image, label in ds]
    shards = glob.glob(os.path.join(out, "shards", "*.lmdb"))
    for path in shards:                                                      # the older layout: the file itself
        os.rename(os.path.join(path, "data.mdb"), path + ".file")
        os.rmdir(path)
        os.rename(path + ".file", path)
    with ShardedDataset(out) as ds:
        assert [(image.tobytes(), label) for image, label in ds] == before
    assert verify(out).ok
    partial = os.path.join(out, "shards", ".shard-000000.lmdb.k3j9.partial")   # a publish cut short
    os.makedirs(partial)
    open(os.path.join(partial, "data.mdb"), "wb").close()
    result = convert(cfg)
    assert result.shards_built == len(shards) and all(os.path.isdir(p) for p in shards)
    assert not os.path.exists(partial)
    with ShardedDataset(out) as ds:
        assert [(image.tobytes(), label) for image, label in ds] == before
    assert verify(out).ok


def test_a_directory_is_published_whole_or_not_at_all(tmp_path):
    from lmdbshard.write.atomic import publishing_dir
    final = str(tmp_path / "shard-000000.lmdb")
    with pytest.raises(OSError, match="copy failed"):
        with publishing_dir(final, "data.mdb") as fd:
            os.write(fd, b"half")
            raise OSError("copy failed")
    assert os.listdir(tmp_path) == []                                        # no final name, no .partial left
    for content in (b"first", b"second"):                                    # the second replaces the first
        with publishing_dir(final, "data.mdb") as fd:
            os.write(fd, content)
        assert os.listdir(tmp_path) == ["shard-000000.lmdb"] and os.listdir(final) == ["data.mdb"]
        assert open(os.path.join(final, "data.mdb"), "rb").read() == content
    assert oct(os.stat(final).st_mode & 0o777) == oct(0o777 & ~_umask())     # not mkdtemp's 0700


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
