"""The bad-input matrix: every odd or broken file a real image tree holds, in one real conversion.

Odd but valid images must come out as the pixels an independent reference computes (raw storage,
no resize, so equality is exact). Broken ones are skipped and recorded with path, reason and
position, and the job goes on. Each case is its own test over one shared conversion.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

from lmdbshard import StorageConfig, TransformConfig, convert
from lmdbshard.format.record import raw_array, unpack_record
from lmdbshard.write.resume import OutputDir

from helpers import job, make_tree, pixels

TESTS = os.path.dirname(os.path.abspath(__file__))
NON_UTF8 = os.fsdecode(b"dog/caf\xe9_latin1.png")     # a Latin-1 file name: not valid UTF-8


def _jpeg(arr_or_img, **kw) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of ``width`` x ``height`` blank pixels: a few KB that would decode to far more."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    row = b"\0" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def odd_files() -> dict[str, tuple[bytes, np.ndarray]]:
    """Valid images in unusual forms: relative path -> (file bytes, the RGB pixels they must give)."""
    base = pixels(1, 5, (48, 40))                                   # 40 rows x 48 columns
    files = {}
    cmyk = Image.fromarray(base).convert("CMYK")
    data = _jpeg(cmyk)
    files["cat/cmyk.jpg"] = (data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    gray = base[..., 1]
    data = _jpeg(Image.fromarray(gray))
    files["cat/gray.jpg"] = (data, np.repeat(np.asarray(Image.open(io.BytesIO(data)))[..., None], 3, axis=2))
    bits = (base[..., 0] > 128)
    files["cat/onebit.png"] = (_png(Image.fromarray(bits).convert("1")),
                               np.repeat((bits * 255).astype(np.uint8)[..., None], 3, axis=2))
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250]], np.uint8)
    index = (np.arange(40 * 48).reshape(40, 48) % 4).astype(np.uint8)
    pal = Image.frombytes("P", (48, 40), index.tobytes())
    pal.putpalette(palette.flatten().tolist())
    files["dog/palette_alpha.png"] = (_png(pal, transparency=bytes([255, 0, 255, 128])), palette[index])
    deep = (np.arange(40 * 48).reshape(40, 48) * 33).astype(np.uint16)
    files["dog/sixteen.png"] = (_png(Image.fromarray(deep)),
                                np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, axis=2))
    exif = Image.Exif()
    exif[0x0112] = 6   # Orientation: the stored picture must be turned 90 degrees clockwise to be upright
    data = _jpeg(base, exif=exif.tobytes())
    stored = np.asarray(Image.open(io.BytesIO(data)))
    files["dog/rotated.jpg"] = (data, np.rot90(stored, k=-1))
    files["zebra/really_a_png.JPEG"] = (_png(Image.fromarray(base)), base)
    files[NON_UTF8] = (_png(Image.fromarray(base[::-1].copy())), base[::-1])
    return files


BROKEN = {   # relative path -> words the recorded reason must contain
    "cat/truncated.jpg": "truncated",
    "cat/empty.jpg": "empty file",
    "dog/text.jpg": "not an image",
    "zebra/bomb.png": "decompression-bomb limit",
    "zebra/loop.jpg": "Too many levels of symbolic links",
}


@pytest.fixture(scope="module")
def matrix(ray_local, tmp_path_factory):
    """One conversion of a tree holding every case: (tree, odd files, manifest, {path: stored pixels})."""
    base = tmp_path_factory.mktemp("matrix")
    tree = make_tree(str(base / "src"), per_class=3)
    odd = odd_files()
    for rel, (data, _) in odd.items():
        with open(os.path.join(tree.root, rel), "wb") as f:
            f.write(data)
    good = open(os.path.join(tree.root, "cat/img_00.jpg"), "rb").read()
    for rel, data in {"cat/truncated.jpg": good[: len(good) // 2], "cat/empty.jpg": b"",
                      "dog/text.jpg": b"GIF? no: just some notes\n", "zebra/bomb.png": _png_bomb(20000, 10000)}.items():
        with open(os.path.join(tree.root, rel), "wb") as f:
            f.write(data)
    os.symlink("loop.jpg", os.path.join(tree.root, "zebra/loop.jpg"))            # a file symlink loop
    os.symlink("..", os.path.join(tree.root, "zebra/up"))                         # a directory symlink loop
    os.makedirs(os.path.join(tree.root, "empty_class"))                           # a class with no images
    out = str(base / "out")
    result = convert(job(tree.root, out, transform=TransformConfig(), storage=StorageConfig(encoding="raw"),
                         max_error_rate=0.5))
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    sources = OutputDir(out).source_paths()
    import lmdb
    stored = {}
    for shard in manifest["shards"]:
        env = lmdb.open(os.path.join(out, shard["file"]), subdir=False, readonly=True, lock=False)
        with env.begin() as txn:
            for _, value in txn.cursor():
                rec = unpack_record(value)
                stored[sources[rec.source_index]] = (rec.label, raw_array(rec.fields["image"]).copy())
        env.close()
    return tree, odd, manifest, stored, result


@pytest.mark.parametrize("rel", sorted(odd_files()))
def test_odd_but_valid_image_gives_the_reference_pixels(matrix, rel):
    tree, odd, _, stored, _ = matrix
    label, arr = stored[rel]
    assert label == ["cat", "dog", "empty_class", "zebra"].index(rel.split("/")[0])
    np.testing.assert_array_equal(arr, odd[rel][1])


@pytest.mark.parametrize("rel", sorted(BROKEN))
def test_broken_file_is_skipped_and_recorded(matrix, rel):
    _, _, manifest, stored, _ = matrix
    errors = {e["path"]: e for e in manifest["errors"]}
    assert rel not in stored
    assert BROKEN[rel].lower() in errors[rel]["reason"].lower()
    assert isinstance(errors[rel]["position"], int) and isinstance(errors[rel]["shard"], int)


def test_every_other_image_is_present_once(matrix):
    tree, odd, manifest, stored, result = matrix
    assert set(stored) == set(tree.files) | set(odd)
    assert result.images_skipped == len(BROKEN) == manifest["num_errors"]


def test_directory_symlink_loop_and_empty_class_are_warnings(matrix):
    _, _, manifest, stored, _ = matrix
    warnings = " ".join(manifest["warnings"])
    assert "symlink loop" in warnings and "'empty_class' (label 2) has no images" in warnings
    assert manifest["classes"] == ["cat", "dog", "empty_class", "zebra"]
    assert not [p for p in stored if "/up/" in p]


UNREADABLE_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from lmdbshard import StorageConfig, TransformConfig
    from lmdbshard.write.task import ShardItem, ShardTask, WriteOptions, write_shard
    items = (ShardItem(0, 0, "cat/ok.png", 0), ShardItem(1, 0, "cat/secret.png", 0))
    report = write_shard(ShardTask.of_items(0, 0, {root!r}, items),
                         WriteOptions(out={out!r}, transform=TransformConfig(), storage=StorageConfig(encoding="raw")))
    print(json.dumps(report.to_json()))
""")


def test_file_without_read_permission_is_skipped_and_recorded():
    """Permission bits do not bind root, so as root the shard is written without CAP_DAC_OVERRIDE."""
    work = tempfile.mkdtemp(prefix="lmdbshard-perm-")
    try:
        root = os.path.join(work, "src")
        os.makedirs(os.path.join(root, "cat"))
        for name in ("ok.png", "secret.png"):
            Image.fromarray(pixels(0, 1, (20, 16))).save(os.path.join(root, "cat", name))
        os.chmod(os.path.join(root, "cat", "secret.png"), 0)
        script = UNREADABLE_SCRIPT.format(tests=TESTS, root=root, out=os.path.join(work, "out"))
        prefix = []
        if os.geteuid() == 0:   # keep root, but without the capabilities that override permission bits
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv: permission bits cannot be made to bind")
            prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
        run = subprocess.run([*prefix, sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                             cwd=work)
        assert run.returncode == 0, run.stderr[-2000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["count"] == 1
        (error,) = result["errors"]
        assert error["path"] == "cat/secret.png" and "Permission denied" in error["reason"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
