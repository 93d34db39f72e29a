"""A file list as Caffe's ``convert_imageset`` reads it: lines ``relative/path label`` under a root.

As in Caffe, the label is the text after the last space, so paths may contain spaces. The
listing keeps the file's order (the plan shuffles). Classes come from ``classes_from`` when
given, otherwise they are the label numbers as text ("0", "1", ...).
"""

from __future__ import annotations

import os

from lmdbshard.write.config import SourceConfig
from lmdbshard.errors import SourceError
from lmdbshard.write.listing import Listing
from lmdbshard.write.sources import read_classes, source_root


def list_filelist(cfg: SourceConfig) -> Listing:
    path = os.path.expanduser(cfg.list_file)
    paths, labels = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            rel, _, label = line.rpartition(" ")
            if not rel or not label.lstrip("-").isdigit() or int(label) < 0:
                raise SourceError(f"{path}:{n}: expected 'relative/path label' with an integer label >= 0, "
                                  f"got {line!r}")
            paths.append(rel.strip().replace(os.sep, "/"))
            labels.append(int(label))
    if not paths:
        raise SourceError(f"source.list_file {cfg.list_file!r} lists no images; expected lines 'path label'")
    classes = read_classes(cfg.classes_from) if cfg.classes_from else [str(i) for i in range(max(labels) + 1)]
    if max(labels) >= len(classes):
        raise SourceError(f"{path}: label {max(labels)} is out of range for the {len(classes)} classes of "
                          f"{cfg.classes_from!r}")
    return Listing(source_root(cfg.root), classes, paths, labels, [], kind="filelist")
