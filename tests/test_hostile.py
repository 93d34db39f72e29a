"""Hostile files: one file must never stop, hang or exhaust a job.

Each fault is real: a 70000x10 PNG (over JPEG's 65,500 px per side), a 1x100000 PNG that a resize
would blow up to billions of pixels, a FIFO and a /dev/zero symlink named .jpg, a 10 GB (sparse)
file, and a folder that cannot be listed even by root (its path is over PATH_MAX). A real conversion
on Ray must finish, store every good image once, and record each bad one with its path and reason;
the shard task, run alone under a hard memory limit, must do the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from lmdbshard.write.resume import OutputDir
from lmdbshard import ShardedDataset, StorageConfig, TransformConfig, convert
from lmdbshard.write.augment import augment
from lmdbshard.write.config import AugmentOp
from lmdbshard.write.image import TooLarge

from helpers import job, make_tree, pixels

TESTS = os.path.dirname(os.path.abspath(__file__))
DEEP_NAME = "d" * 250           # 17 of these nest past PATH_MAX (4096): the folder cannot be listed
TOO_DEEP = "/".join([DEEP_NAME] * 17)

#: relative path -> words its recorded reason must hold, without and with resize_shorter=256
HOSTILE = {
    "cat/wide.png": ("cannot encode: 70000x10 is over JPEG's limit of 65500 pixels per side",
                     "cannot transform: transform.resize_shorter=256 would make it 1792000x256 = 458752000 pixels"),
    "dog/tall.png": ("cannot encode: 1x100000 is over JPEG's limit of 65500 pixels per side",
                     "cannot transform: transform.resize_shorter=256 would make it 256x25600000 = 6553600000 pixels"),
    "zebra/fifo.jpg": ("a FIFO (named pipe), not a regular file",) * 2,
    "zebra/zero.jpg": ("a character device, not a regular file",) * 2,
    "cat/sparse_10gb.jpg": ("10737418240 bytes, over transform.max_file_bytes=268435456",) * 2,
    "cat/deep/.../": ("cannot list this folder (File name too long)",) * 2,
}


def _key(path: str) -> str:
    """The HOSTILE key of a recorded path (which level of the deep folder fails depends on tmp's path)."""
    return "cat/deep/.../" if path.startswith(f"cat/deep/{DEEP_NAME}/") and path.endswith("/") else path


def _deep_image(top: str) -> None:
    """``top/TOO_DEEP/hidden.png``, made with descriptors relative to each level (no long paths)."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(17):
            os.mkdir(DEEP_NAME, dir_fd=fd)
            nxt = os.open(DEEP_NAME, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        out = os.open("hidden.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        with os.fdopen(out, "wb") as f:
            Image.fromarray(pixels(0, 9, (20, 16))).save(f, "PNG")
    finally:
        os.close(fd)


def hostile_tree(root: str):
    """A small good tree plus every hostile entry of HOSTILE."""
    tree = make_tree(root, per_class=3)
    Image.new("RGB", (70000, 10), (200, 30, 30)).save(os.path.join(root, "cat/wide.png"))
    Image.new("RGB", (1, 100000), (30, 200, 30)).save(os.path.join(root, "dog/tall.png"))
    os.mkfifo(os.path.join(root, "zebra/fifo.jpg"))
    os.symlink("/dev/zero", os.path.join(root, "zebra/zero.jpg"))
    with open(os.path.join(root, "cat/sparse_10gb.jpg"), "wb") as f:
        f.truncate(10 << 30)   # 10 GB of zeros that take no disk: reading it whole would need 10 GB of memory
    os.makedirs(os.path.join(root, "cat/deep"))
    _deep_image(os.path.join(root, "cat/deep"))
    return tree


@pytest.fixture(scope="module")
def hostile(ray_local, tmp_path_factory):
    """(tree, {resize_shorter: (result, manifest, out)}) of two real conversions of one hostile tree."""
    base = tmp_path_factory.mktemp("hostile")
    tree = hostile_tree(str(base / "src"))
    runs = {}
    for shorter in (None, 256):
        out = str(base / f"out{shorter}")
        result = convert(job(tree.root, out, transform=TransformConfig(resize_shorter=shorter),
                             storage=StorageConfig(encoding="jpeg"), max_error_rate=0.5))
        runs[shorter] = (result, json.load(open(os.path.join(out, "manifest.json"))), out)
    return tree, runs


@pytest.mark.parametrize("shorter", [None, 256])
def test_the_job_finishes_with_every_good_image_once(hostile, shorter):
    tree, runs = hostile
    result, manifest, out = runs[shorter]
    ds = ShardedDataset(out)
    sources = OutputDir(out).source_paths()
    stored = [sources[ds.record(i).source_index] for i in range(len(ds))]
    assert sorted(stored) == sorted(tree.files)                     # each good image exactly once
    assert result.images_skipped == manifest["num_errors"] == len(HOSTILE)


@pytest.mark.parametrize("shorter", [None, 256])
@pytest.mark.parametrize("rel", sorted(HOSTILE))
def test_each_hostile_entry_is_recorded_with_its_path_and_reason(hostile, shorter, rel):
    _, runs = hostile
    _, manifest, _ = runs[shorter]
    errors = {_key(e["path"]): e["reason"] for e in manifest["errors"]}
    assert HOSTILE[rel][shorter is not None] in errors[rel]


def test_a_folder_that_cannot_be_listed_counts_towards_max_error_rate(ray_local, tmp_path):
    """Not a warning that lets the job succeed without the folder's images."""
    from lmdbshard import JobFailedError
    tree = make_tree(str(tmp_path / "src"), per_class=3)
    os.makedirs(os.path.join(tree.root, "cat/deep"))
    _deep_image(os.path.join(tree.root, "cat/deep"))
    with pytest.raises(JobFailedError, match=r"1 of 10 images could not be read .* over max_error_rate=0.05"):
        convert(job(tree.root, str(tmp_path / "out"), max_error_rate=0.05))


TASK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, {tests!r})
    resource.setrlimit(resource.RLIMIT_DATA, ({limit}, {limit}))
    from lmdbshard import StorageConfig, TransformConfig
    from lmdbshard.write.listing import Listing
    from lmdbshard.write.sources.imagefolder import list_imagefolder
    from lmdbshard.write.task import ShardItem, ShardTask, WriteOptions, write_shard
    listing = list_imagefolder({root!r}, [".jpg", ".jpeg", ".png"])
    items = tuple(ShardItem(i, 0, p, l) for i, (p, l) in enumerate(zip(listing.paths, listing.labels)))
    report = write_shard(ShardTask.of_items(0, 0, listing.root, items),
                         WriteOptions(out={out!r}, transform=TransformConfig(resize_shorter=256),
                                      storage=StorageConfig(encoding="jpeg")))
    # VmHWM: this process's own peak. ru_maxrss would also count the parent's peak at the fork (Linux
    # keeps it across exec), so a big pytest process would show as this task's memory.
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps(dict(count=report.entry.count, errors=[e.to_json() for e in report.errors], peak=peak)))
""")


def test_one_shard_task_stays_under_a_hard_memory_limit(tmp_path):
    """The task alone, with its heap capped (RLIMIT_DATA): before the limits, /dev/zero, the 10 GB file
    or the 1x100000 resize each needed gigabytes, and the FIFO hung the task."""
    tree = hostile_tree(str(tmp_path / "src"))
    limit = 1 << 30
    script = TASK_SCRIPT.format(tests=TESTS, limit=limit, root=tree.root, out=str(tmp_path / "out"))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["count"] == len(tree.files)
    assert sorted(_key(e["path"]) for e in result["errors"]) == sorted(HOSTILE)
    assert result["peak"] < 600 << 20, f"peak RSS {result['peak'] >> 20} MiB"


def test_each_augment_op_is_checked_before_it_allocates():
    img = Image.fromarray(pixels(0, 1, (40, 30)))
    huge = AugmentOp(op="resize", exact=[100_000, 100_000])      # 30 GB of RGB if it ran
    with pytest.raises(TooLarge, match=r"augment.ops\[1\] \(resize\) would make it 100000x100000"):
        augment(img, None, [AugmentOp(op="hflip"), huge], 7, max_pixels=178_956_970)
    small, _ = augment(img, None, [AugmentOp(op="resize", exact=[64, 48])], 7, max_pixels=64 * 48)
    assert small.size == (48, 64)


def test_passthrough_stores_what_jpeg_cannot_hold_as_png(tmp_path):
    """A BMP is never stored as it is; at 70000x10 JPEG cannot hold it either, so it falls back to PNG."""
    import io
    from lmdbshard.format.record import unpack_record
    from lmdbshard.write.pipeline import process
    from lmdbshard.write.task import STAGES, ShardItem, WriteOptions
    buf = io.BytesIO()
    Image.new("RGB", (70000, 10), (1, 2, 3)).save(buf, "BMP")
    opts = WriteOptions(out=str(tmp_path), transform=TransformConfig(), storage=StorageConfig(encoding="passthrough"))
    encoded = process(ShardItem(0, 0, "cat/wide.bmp", 0), (buf.getvalue(), None), opts, dict.fromkeys(STAGES, 0.0))
    field = unpack_record(encoded.value).fields["image"]
    assert field.encoding == "png" and tuple(field.shape) == (10, 70000, 3) and not encoded.passthrough
