"""Temporary datasets for experiments: convert into a fresh folder that is removed when closed.

    with lmdbshard.convert(cfg, temporary=True) as tmp:
        ds = tmp.dataset()          # a ShardedDataset over tmp.out
        ...
    # the folder is gone, also when the block raised

The folder is created under ``cfg.out`` when that is set (as a parent folder), else under
``cfg.scratch_dir``, else the system temp folder. A failed conversion removes it before the error
propagates; a TemporaryDataset that is never closed is removed when it is garbage collected.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import weakref
from typing import Any, Optional

from lmdbshard.errors import ConfigError
from lmdbshard.write.config import ConvertConfig


class TemporaryDataset:
    """A converted dataset in a temporary folder: ``out``, ``result``, ``dataset()``, ``cleanup()``."""

    def __init__(self, out: str, result: Any):
        self.out = out
        self.result = result
        self._opened: list = []
        self._finalizer = weakref.finalize(self, shutil.rmtree, out, True)

    def dataset(self, **kwargs: Any):
        """A ShardedDataset over this folder (closed by ``cleanup``); kwargs as for ShardedDataset."""
        from lmdbshard.read.dataset import ShardedDataset
        ds = ShardedDataset(self.out, **kwargs)
        self._opened.append(ds)
        return ds

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def cleanup(self) -> None:
        """Close the datasets opened through ``dataset()`` and remove the folder (idempotent)."""
        for ds in self._opened:
            ds.close()
        self._opened.clear()
        self._finalizer()

    def __enter__(self) -> "TemporaryDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"TemporaryDataset({self.out!r}{', removed' if self.closed else ''})"


def convert_temporary(cfg: ConvertConfig, dataset: Optional[object] = None) -> TemporaryDataset:
    from lmdbshard.write.coordinator import convert
    parent = cfg.out if cfg.out not in (None, "") else cfg.scratch_dir
    if parent and "://" in parent:
        raise ConfigError(f"temporary=True converts into a local temporary folder, but out={parent!r} is a URL; "
                          "pass out= a local parent folder (or none), or convert without temporary=True")
    if parent:
        os.makedirs(os.path.expanduser(parent), exist_ok=True)
    out = tempfile.mkdtemp(prefix="lmdbshard-tmp-", dir=os.path.expanduser(parent) if parent else None)
    try:
        result = convert(dataclasses.replace(cfg, out=out, overwrite=False), dataset)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return TemporaryDataset(out, result)
