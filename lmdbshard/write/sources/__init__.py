"""Sources: one module per kind of input, each turning a ``SourceConfig`` into a ``Listing``.

Every kind feeds the same plan and the same shard task. File sources (``imagefolder``,
``imagenet_val``, ``filelist``, ``paired``) list relative paths and labels (and mask paths);
shard tasks read the files. A ``python`` source lists indices; each shard task builds the
dataset itself and fetches its items, so no sample passes through the driver.
"""

from __future__ import annotations

import os
from typing import Optional

from lmdbshard.write.config import SourceConfig
from lmdbshard.errors import SourceError
from lmdbshard.write.listing import Listing
from lmdbshard.write.sources.imagefolder import list_imagefolder
from lmdbshard.storage.urls import check_url, is_url


def list_source(cfg: SourceConfig, dataset: Optional[object] = None) -> Listing:
    """The listing of ``cfg`` (``dataset``: an in-memory dataset object for ``kind=python``)."""
    if cfg.kind == "imagefolder" and is_url(cfg.root):
        from lmdbshard.write.sources.remote import list_imagefolder_url
        return list_imagefolder_url(check_url(cfg.root, "source.root"), cfg.extensions)
    if cfg.kind == "imagefolder":
        return list_imagefolder(os.path.expanduser(cfg.root), cfg.extensions)
    if cfg.kind == "imagenet_val":
        from lmdbshard.write.sources.imagenet_val import list_imagenet_val
        return list_imagenet_val(cfg)
    if cfg.kind == "filelist":
        from lmdbshard.write.sources.filelist import list_filelist
        return list_filelist(cfg)
    if cfg.kind == "paired":
        from lmdbshard.write.sources.paired import list_paired
        return list_paired(cfg)
    from lmdbshard.write.sources.python import list_python
    return list_python(cfg, dataset)


def source_root(root: str) -> str:
    """``source.root`` as the listing holds it: a URL unchanged (no trailing '/'), a local path expanded."""
    return check_url(root, "source.root") if is_url(root) else os.path.expanduser(root)


def read_classes(spec: str) -> list[str]:
    """Class names from a train ImageFolder root (its sorted folder names, as ImageFolder numbers
    them) or from a text file (first word of each line, e.g. LOC_synset_mapping.txt), sorted likewise."""
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        names = [e.name for e in os.scandir(path) if e.is_dir()]
    elif os.path.isfile(path):
        with open(path) as f:
            names = [line.split()[0] for line in f if line.strip()]
    else:
        raise SourceError(f"source.classes_from {spec!r} is neither a folder nor a file; pass the train "
                          "ImageFolder root or a file with one class name per line")
    if not names:
        raise SourceError(f"source.classes_from {spec!r} names no classes")
    return sorted(set(names))
