"""The bundled demo source: real, deterministic JPEGs, and never a hazard to a user's folder."""

import hashlib
import os

import pytest
from PIL import Image

from lmdbshard.tools.demo import DemoSpec, make_imagefolder
from lmdbshard.errors import ConfigError, SourceError

SPEC = DemoSpec(classes=3, per_class=4)


def digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode() + open(os.path.join(dirpath, f), "rb").read())
    return h.hexdigest()


def test_same_spec_same_bytes_and_varied_real_jpegs(tmp_path):
    a = make_imagefolder(str(tmp_path / "a"), SPEC)
    b = make_imagefolder(str(tmp_path / "b"), SPEC)
    assert digest(a) == digest(b)
    sizes = set()
    for cls in sorted(os.listdir(a)):
        if cls.startswith("."):
            continue
        for f in os.listdir(os.path.join(a, cls)):
            with Image.open(os.path.join(a, cls, f)) as img:
                assert img.format == "JPEG" and img.mode == "RGB"
                sizes.add(img.size)
    assert len(sizes) == 12 and len({w / h > 1 for w, h in sizes}) == 2   # varied sizes, both orientations


def test_regenerates_only_when_the_spec_changes(tmp_path):
    root = make_imagefolder(str(tmp_path / "d"), SPEC)
    stamp = os.path.getmtime(os.path.join(root, "amber_circles", "amber_circles_0000.jpg"))
    make_imagefolder(root, SPEC)
    assert os.path.getmtime(os.path.join(root, "amber_circles", "amber_circles_0000.jpg")) == stamp
    make_imagefolder(root, DemoSpec(classes=2, per_class=2))
    assert sorted(d for d in os.listdir(root) if not d.startswith(".")) == ["amber_circles", "azure_squares"]


def test_never_replaces_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "photos" / "cats"
    mine.mkdir(parents=True)
    (mine / "precious.jpg").write_bytes(b"family photo")
    with pytest.raises(SourceError, match="not made by the demo generator; refusing.*CONF=imagenet"):
        make_imagefolder(str(tmp_path / "photos"), SPEC)
    assert (mine / "precious.jpg").read_bytes() == b"family photo"


@pytest.mark.parametrize("spec, match", [
    (DemoSpec(classes=0), r"demo.classes must be a positive integer, got 0"),
    (DemoSpec(short_side=[300, 200]), r"demo.short_side must be \[low, high\] with 0 < low <= high"),
    (DemoSpec(quality=[90, 101]), r"demo.quality must be within \[1, 100\]"),
])
def test_a_bad_spec_is_refused_before_anything_is_written(tmp_path, spec, match):
    with pytest.raises(ConfigError, match=match):
        make_imagefolder(str(tmp_path / "d"), spec)
    assert not (tmp_path / "d").exists()
