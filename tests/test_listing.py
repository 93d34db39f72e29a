"""ImageFolder listing: torchvision's semantics, exactly, plus safe handling of odd trees."""

import os
import shutil

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


UNREADABLE_SCRIPT = """
import json, sys
from lmdbshard.write.config import IMG_EXTENSIONS
from lmdbshard.write.listing import unlisted_reason
from lmdbshard.write.sources.imagefolder import list_imagefolder
from lmdbshard.write.sources.paired import list_paired
from lmdbshard.write.config import SourceConfig
folder = list_imagefolder(sys.argv[1] + "/tree", IMG_EXTENSIONS)
paired = list_paired(SourceConfig(kind="paired", root=sys.argv[1] + "/seg"))
print(json.dumps(dict(paths=list(folder.paths), labels=folder.labels.tolist(), warnings=folder.warnings,
                      reason=unlisted_reason(sys.argv[1] + "/tree/dog/private"),
                      paired=list(paired.paths), masks=list(paired.mask_paths))))
"""


def test_a_folder_that_cannot_be_listed_is_an_item_not_a_warning(tmp_path):
    """chmod 000 on a folder; as root, the listing runs without the capabilities that override it."""
    import json
    import subprocess
    import sys
    from PIL import Image
    from helpers import pixels
    tree = make_tree(str(tmp_path / "tree"), per_class=2)
    private = os.path.join(tree.root, "dog", "private")
    os.makedirs(private)
    Image.fromarray(pixels(1, 5, (20, 16))).save(os.path.join(private, "hidden.png"))
    for sub in ("images", "masks"):
        os.makedirs(tmp_path / "seg" / sub / "locked")
        Image.fromarray(pixels(0, 1, (20, 16))).save(tmp_path / "seg" / sub / "a.png")
    os.chmod(private, 0)
    os.chmod(tmp_path / "seg" / "masks" / "locked", 0)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: permission bits cannot be made to bind")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    try:
        run = subprocess.run([*prefix, sys.executable, "-c", UNREADABLE_SCRIPT, str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    finally:
        os.chmod(private, 0o755)
        os.chmod(tmp_path / "seg" / "masks" / "locked", 0o755)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    items = dict(zip(got["paths"], got["labels"]))
    assert items.pop("dog/private/") == 1                       # an item of its class, ending in "/"
    assert items == tree.files and not any("private" in w for w in got["warnings"])
    assert got["reason"].startswith("cannot list this folder (Permission denied), so the images in it are missing")
    assert got["paired"] == ["images/a.png", "masks/locked/"] and got["masks"] == ["masks/a.png", "masks/locked/"]
