"""A file list as Caffe's ``convert_imageset`` reads it: lines ``relative/path label`` under a root.

As in Caffe, the label is the text after the last space, so paths may contain spaces. The
listing keeps the file's order (the plan shuffles). Classes come from ``classes_from`` when
given, otherwise they are the label numbers as text ("0", "1", ...).
"""

from __future__ import annotations

import os
from array import array

import numpy as np

from lmdbshard.write.config import SourceConfig
from lmdbshard.errors import SourceError
from lmdbshard.write.listing import Listing, PathTable
from lmdbshard.write.sources import read_classes, source_root


BATCH_LINES = 65536   # paths are appended to the compact table this many at a time


def list_filelist(cfg: SourceConfig) -> Listing:
    """The listing, built compactly: a ``PathTable`` and an int32 label array, with no Python object per
    line held beyond one batch of ``BATCH_LINES``."""
    path = os.path.expanduser(cfg.list_file)
    builder = PathTable.builder()
    labels = array("i")
    batch: list[bytes] = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            rel, _, label = line.rpartition(" ")
            if not rel or not label.lstrip("-").isdigit() or int(label) < 0:
                raise SourceError(f"{path}:{n}: expected 'relative/path label' with an integer label >= 0, "
                                  f"got {line!r}")
            batch.append(os.fsencode(rel.strip().replace(os.sep, "/")))
            labels.append(int(label))
            if len(batch) >= BATCH_LINES:
                builder.add(batch)
                batch = []
    builder.add(batch)
    if not labels:
        raise SourceError(f"source.list_file {cfg.list_file!r} lists no images; expected lines 'path label'")
    top = max(labels)
    classes = read_classes(cfg.classes_from) if cfg.classes_from else [str(i) for i in range(top + 1)]
    if top >= len(classes):
        raise SourceError(f"{path}: label {top} is out of range for the {len(classes)} classes of "
                          f"{cfg.classes_from!r}")
    return Listing(source_root(cfg.root), classes, builder.build(), np.frombuffer(labels, dtype=np.int32),
                   [], kind="filelist")
