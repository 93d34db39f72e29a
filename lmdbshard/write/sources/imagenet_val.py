"""ImageNet validation as distributed: a flat folder of ``ILSVRC2012_val_NNNNNNNN.JPEG`` plus labels.

Labels come from either file ImageNet ships:

- ``LOC_val_solution.csv`` (header ``ImageId,PredictionString``; the first word of the prediction
  string is the image's synset, e.g. ``ILSVRC2012_val_00000001,n01751748 43 39 412 486``);
- the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (line ``i`` holds the 1-based ILSVRC2012_ID
  of image ``i``) with ``synset_map``: line ``j`` holds the synset of ILSVRC2012_ID ``j`` (``n01751748``
  or ``n01751748 sea snake``), or lines ``ID synset`` in any order.

Class indices are the positions of the synsets in the sorted class list (``classes_from``: the train
ImageFolder root or a synset file), which is how torchvision's ImageFolder numbers the train split,
so train and val labels agree.
"""

from __future__ import annotations

import csv
import os
import re

from lmdbshard.write.config import SourceConfig
from lmdbshard.errors import SourceError
from lmdbshard.write.listing import Listing
from lmdbshard.storage.urls import is_url
from lmdbshard.write.sources import read_classes, source_root
from lmdbshard.write.sources.remote import list_names

_NAME = re.compile(r"^(ILSVRC2012_val_(\d+))\.[A-Za-z]+$")


def list_imagenet_val(cfg: SourceConfig) -> Listing:
    root = source_root(cfg.root)
    exts = tuple(e.lower() for e in cfg.extensions)
    try:
        names = list_names(root) if is_url(root) else os.listdir(root)
    except OSError as exc:
        raise SourceError(f"source.root {cfg.root!r} cannot be listed ({exc.strerror or exc}); "
                          "make it readable") from None
    files = sorted(n for n in names if _NAME.match(n) and n.lower().endswith(exts))
    if not files:
        raise SourceError(f"source.root {cfg.root!r} holds no ILSVRC2012_val_*.JPEG files; pass the flat "
                          "validation folder as source.root")
    synset_of = _read_labels(os.path.expanduser(cfg.labels_file), cfg.synset_map)
    if cfg.classes_from:
        classes = read_classes(cfg.classes_from)
    elif cfg.synset_map:
        classes = sorted(set(_read_synset_map(cfg.synset_map).values()))
    else:
        classes = sorted(set(synset_of.values()))
    index = {name: i for i, name in enumerate(classes)}
    paths, labels, warnings = [], [], []
    unlabelled = []
    for name in files:
        image_id = _NAME.match(name).group(1)
        synset = synset_of.get(image_id)
        if synset is None:
            unlabelled.append(name)
            continue
        if synset not in index:
            raise SourceError(f"{name} is labelled {synset!r}, which is not among the {len(classes)} classes of "
                              f"{cfg.classes_from or cfg.labels_file!r}; pass source.classes_from=<train root>")
        paths.append(name)
        labels.append(index[synset])
    if unlabelled:
        warnings.append(f"{len(unlabelled)} images have no label in {cfg.labels_file!r} and are left out "
                        f"(e.g. {unlabelled[0]!r})")
    if not paths:
        raise SourceError(f"no image in {cfg.root!r} has a label in {cfg.labels_file!r}; check source.labels_file")
    missing = len(synset_of) - len(paths)
    if missing > 0:
        warnings.append(f"{missing} labelled images of {cfg.labels_file!r} are not in {cfg.root!r}")
    return Listing(root, classes, paths, labels, warnings, kind="imagenet_val")


def _read_labels(path: str, synset_map: str | None) -> dict[str, str]:
    """ImageId (``ILSVRC2012_val_00000001``) -> synset, from either labels file."""
    with open(path, newline="") as f:
        first = f.readline()
        f.seek(0)
        if first.startswith("ImageId"):
            out = {}
            for n, row in enumerate(csv.DictReader(f), 2):
                words = (row.get("PredictionString") or "").split()
                if not row.get("ImageId") or not words:
                    raise SourceError(f"{path}:{n}: expected 'ImageId,synset ...', got {row!r}")
                out[row["ImageId"].strip()] = words[0]
            return out
        ids = [line.strip() for line in f if line.strip()]
    if synset_map is None:
        raise SourceError(f"{path} is a ground-truth file of ILSVRC2012_IDs; pass source.synset_map= the file "
                          "mapping each ILSVRC2012_ID to its synset")
    synsets = _read_synset_map(synset_map)
    out = {}
    for n, value in enumerate(ids, 1):
        if not value.isdigit() or int(value) not in synsets:
            raise SourceError(f"{path}:{n}: {value!r} is not an ILSVRC2012_ID listed in {synset_map!r}")
        out[f"ILSVRC2012_val_{n:08d}"] = synsets[int(value)]
    return out


def _read_synset_map(path: str) -> dict[int, str]:
    """ILSVRC2012_ID -> synset: lines ``synset [words]`` (line number = ID) or ``ID synset [words]``."""
    out = {}
    with open(os.path.expanduser(path)) as f:
        lines = [line.split() for line in f if line.strip()]
    for n, words in enumerate(lines, 1):
        if words[0].isdigit() and len(words) > 1:
            out[int(words[0])] = words[1]
        else:
            out[n] = words[0]
    return out
