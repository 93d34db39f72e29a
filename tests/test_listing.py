"""ImageFolder listing: torchvision's semantics, exactly, plus safe handling of odd trees."""

import os

import pytest

from lmdbshard.write.config import IMG_EXTENSIONS
from lmdbshard.errors import SourceError
from lmdbshard.write.sources.imagefolder import list_imagefolder

from helpers import make_tree


def torchvision_make_dataset(root):
    """torchvision.datasets.folder.make_dataset, restated from its documented behaviour."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    out = []
    for label, c in enumerate(classes):
        for dirpath, _, fnames in sorted(os.walk(os.path.join(root, c), followlinks=True)):
            for f in sorted(fnames):
                if f.lower().endswith(IMG_EXTENSIONS):
                    out.append((os.path.relpath(os.path.join(dirpath, f), root), label))
    return classes, out


def test_matches_torchvision_order_and_labels(tmp_path):
    tree = make_tree(str(tmp_path / "src"))
    os.makedirs(tmp_path / "src" / "cat" / "a-b")           # '-' sorts before '/': walk order matters
    (tmp_path / "src" / "cat" / "a-b" / "x.PNG").write_bytes(b"")
    os.makedirs(tmp_path / "src" / "cat" / "a" / "z")
    (tmp_path / "src" / "cat" / "a" / "z" / "y.webp").write_bytes(b"")
    listing = list_imagefolder(tree.root, IMG_EXTENSIONS)
    classes, samples = torchvision_make_dataset(tree.root)
    assert listing.classes == classes == ["cat", "dog", "zebra"]
    assert list(zip(listing.paths, listing.labels)) == samples
    assert "cat/notes.txt" not in listing.paths and "cat/sub/deeper/img_02.JPEG" in listing.paths


def test_symlink_loop_is_listed_once(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=3)
    os.symlink("..", os.path.join(tree.root, "dog", "loop"))             # back to the root
    os.symlink(".", os.path.join(tree.root, "cat", "sub", "self"))       # to itself
    os.symlink("../../zebra", os.path.join(tree.root, "cat", "sub", "z"))  # into another class
    listing = list_imagefolder(tree.root, IMG_EXTENSIONS)
    assert sorted(zip(listing.paths, listing.labels)) == sorted(tree.files.items())
    assert sum("symlink loop" in w for w in listing.warnings) == 3


def test_empty_class_keeps_its_label_and_warns(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=2)
    os.makedirs(os.path.join(tree.root, "ant"))
    listing = list_imagefolder(tree.root, IMG_EXTENSIONS)
    assert listing.classes[0] == "ant" and 0 not in listing.labels
    assert any("'ant'" in w and "no images" in w for w in listing.warnings)


def test_digest_changes_with_files_and_labels(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=2)
    a = list_imagefolder(tree.root, IMG_EXTENSIONS).digest()
    assert a == list_imagefolder(tree.root, IMG_EXTENSIONS).digest()
    os.rename(os.path.join(tree.root, "cat", "img_00.jpg"), os.path.join(tree.root, "dog", "img_00.jpg"))
    assert list_imagefolder(tree.root, IMG_EXTENSIONS).digest() != a


@pytest.mark.parametrize("setup, match", [
    (lambda p: None, "no class folders"),
    (lambda p: os.makedirs(p / "cat"), "no images"),
])
def test_unusable_roots_are_refused(tmp_path, setup, match):
    root = tmp_path / "src"
    root.mkdir()
    setup(root)
    with pytest.raises(SourceError, match=match):
        list_imagefolder(str(root), IMG_EXTENSIONS)
