"""Where a conversion's output lives: a local folder or an object-store prefix, behind one interface.

``OutputDir`` (resume.py) and ownership.py keep their logic once and call these few operations on paths
relative to the output root ('/' separators). ``LocalStore`` is the folder as before: files are
published atomically (``*.partial``, fsync, rename, fsync of the folder). ``ObjectStore`` is an
``s3://`` or ``gs://`` prefix: a PUT makes an object appear whole or not at all, so a small file is
written in one request, and a file built locally (a shard, ``listing.npz``) is uploaded whole. An
object store has no rename; what marks a shard complete there is its report, written after the
upload (resume.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Union

from lmdbshard.format.record import lmdb_data_file
from lmdbshard.storage import objects
from lmdbshard.storage.urls import is_url, join
from lmdbshard.write.atomic import write_bytes_atomic


class LocalStore:
    """An output folder on a local or shared POSIX filesystem."""

    remote = False

    def __init__(self, root: str):
        self.root = root

    def path(self, rel: str = "") -> str:
        return os.path.join(self.root, *rel.split("/")) if rel else self.root

    def size(self, rel: str) -> Optional[int]:
        """Bytes of the file ``rel`` (of an LMDB directory: its ``data.mdb``); None when there is none."""
        try:
            return os.path.getsize(lmdb_data_file(self.path(rel)))
        except OSError:
            return None

    def isdir(self, rel: str) -> bool:
        return os.path.isdir(self.path(rel))

    def listdir(self, rel: str = "") -> list[str]:
        """Sorted names directly under ``rel``; [] when it is not a folder."""
        path = self.path(rel)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def read_bytes(self, rel: str) -> bytes:
        with open(self.path(rel), "rb") as f:
            return f.read()

    def write_atomic(self, rel: str, data: bytes) -> None:
        write_bytes_atomic(self.path(rel), data)

    def write_file(self, rel: str, write: Callable[[str], object]) -> None:
        """``write(path)`` makes the file ``rel`` (atomically, itself)."""
        write(self.path(rel))

    @contextmanager
    def local_copy(self, rel: str) -> Iterator[str]:
        yield self.path(rel)

    def makedirs(self, rel: str = "") -> None:
        os.makedirs(self.path(rel), exist_ok=True)

    def remove(self, rel: str) -> None:
        """Delete the file or folder ``rel``; a missing one is no error."""
        path = self.path(rel)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


class ObjectStore:
    """An output prefix on an object store (``s3://bucket/prefix``)."""

    remote = True

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def path(self, rel: str = "") -> str:
        return join(self.root, rel) if rel else self.root

    def size(self, rel: str) -> Optional[int]:
        return objects.size(self.path(rel))

    def isdir(self, rel: str) -> bool:
        return bool(objects.listdir(self.path(rel)))

    def listdir(self, rel: str = "") -> list[str]:
        return [name for name, _, _ in objects.listdir(self.path(rel))]

    def read_bytes(self, rel: str) -> bytes:
        return objects.read_bytes(self.path(rel))

    def write_atomic(self, rel: str, data: bytes) -> None:
        objects.write_bytes(self.path(rel), data)

    def write_file(self, rel: str, write: Callable[[str], object]) -> None:
        """``write(path)`` makes the file in a local temporary folder; it is then uploaded whole."""
        with tempfile.TemporaryDirectory(prefix="lmdbshard-upload-") as tmp:
            local = os.path.join(tmp, rel.rsplit("/", 1)[-1])
            write(local)
            objects.upload(local, self.path(rel))

    @contextmanager
    def local_copy(self, rel: str) -> Iterator[str]:
        """The object ``rel`` downloaded into a temporary file, removed on leaving."""
        with tempfile.TemporaryDirectory(prefix="lmdbshard-download-") as tmp:
            local = os.path.join(tmp, rel.rsplit("/", 1)[-1])
            objects.download(self.path(rel), local)
            yield local

    def makedirs(self, rel: str = "") -> None:
        """Nothing to do: a prefix exists once an object is below it."""

    def remove(self, rel: str) -> None:
        objects.remove(self.path(rel))


Store = Union[LocalStore, ObjectStore]


def output_store(root: str) -> Store:
    """The store of the output ``root``: an object-store prefix for a URL, else a local folder."""
    return ObjectStore(root) if is_url(root) else LocalStore(root)
