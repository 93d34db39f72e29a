"""The plain loops that set the limits, written the way one would without lmdbshard.

Conversion: the bare chain (read, decode, resize, encode; no LMDB, no Ray) in a
``multiprocessing.Pool``, and the common single-process folder2lmdb recipe (the same
transform, then ``pickle`` into one LMDB). Reads: a ``txn.get`` loop over the same
shards, a PIL decode of the same bytes, and an ImageFolder-style reader that opens,
decodes and resizes the source file on every access. Each does exactly the work of
the lmdbshard path it is compared with, and nothing else.
"""

from __future__ import annotations

import bisect
import io
import multiprocessing
import os
import pickle
from typing import Optional, Sequence

import lmdb
import numpy as np
from PIL import Image

from lmdbshard.write.config import TransformConfig
from lmdbshard.write.image import RESAMPLE, REDUCING_GAP, resized_size
from lmdbshard.format.record import KEY_FORMAT
from lmdbshard.write.progress import SteadyRate

_chain: tuple[TransformConfig, int] | None = None   # (transform, JPEG quality) in a pool process


def chain_one(path: str, transform: TransformConfig, quality: int) -> tuple[int, int]:
    """Read, decode (drafted), resize the short side, encode JPEG: the conversion's work for one image.
    Returns (source bytes, output bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    img = Image.open(io.BytesIO(data))
    if transform.draft and transform.resize_shorter and img.format == "JPEG":
        img.draft("RGB", resized_size(img.width, img.height, transform.resize_shorter))
    if img.mode != "RGB":
        img = img.convert("RGB")
    if transform.resize_shorter:
        size = resized_size(img.width, img.height, transform.resize_shorter)
        if size != img.size:
            img = img.resize(size, RESAMPLE[transform.resample], reducing_gap=REDUCING_GAP)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return len(data), len(out.getvalue())


def _init_chain(transform: TransformConfig, quality: int, niceness: int) -> None:
    global _chain
    _chain = (transform, quality)
    os.nice(niceness - os.nice(0))


def _chain_task(path: str) -> tuple[int, int]:
    return chain_one(path, *_chain)


class BarePool:
    """``multiprocessing.Pool(processes)`` running the bare chain. Its processes start (spawned, so
    they never inherit a Ray connection) and import before the clock, as Ray's workers do, and run
    at ``niceness``: Ray runs its workers at 15, and on a machine shared with other work a plain
    Pool at 0 would win CPU that Ray's workers lose, which is no measure of lmdbshard."""

    def __init__(self, processes: int, transform: TransformConfig, quality: int, niceness: int = 0):
        self.processes = processes
        self.pool = multiprocessing.get_context("spawn").Pool(processes, _init_chain, (transform, quality, niceness))
        self.pool.map(_noop, range(processes * 4), chunksize=1)

    def folder2lmdb(self, paths: Sequence[str], labels: Sequence[int], out: str) -> int:
        """The folder2lmdb recipe in one of this pool's processes (same niceness), timed by the caller."""
        return self.pool.apply(_folder2lmdb_task, (list(paths), list(labels), out))

    def run(self, paths: Sequence[str]) -> tuple[int, Optional[float]]:
        """Transform every path once; returns the source bytes read and the images/s from 10% to 90% of
        the images done, timed as results come back (``SteadyRate``, as lmdbshard's progress times units)."""
        chunk = max(1, min(16, len(paths) // (self.processes * 8)))
        steady, total, done = SteadyRate(len(paths)), 0, 0
        for n, _ in self.pool.imap_unordered(_chain_task, paths, chunksize=chunk):
            total, done = total + n, done + 1
            steady.add(done)
        return total, steady.rate()

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def _noop(_: int) -> None:
    return None


def _folder2lmdb_task(paths: list[str], labels: list[int], out: str) -> int:
    return folder2lmdb(paths, labels, out, *_chain)


def folder2lmdb(paths: Sequence[str], labels: Sequence[int], out: str, transform: TransformConfig,
                quality: int, commit_every: int = 1000) -> int:
    """The common recipe: one process, one LMDB, ``pickle.dumps((image, label))`` under key ``str(i)``,
    a commit every ``commit_every`` images. Returns the source bytes read."""
    env = lmdb.open(out, subdir=False, map_size=64 << 30, meminit=False, map_async=True, lock=False)
    total = 0
    try:
        txn = env.begin(write=True)
        for i, (path, label) in enumerate(zip(paths, labels)):
            with open(path, "rb") as f:
                data = f.read()
            total += len(data)
            img = Image.open(io.BytesIO(data)).convert("RGB")
            img = img.resize(resized_size(img.width, img.height, transform.resize_shorter or min(img.size)),
                             RESAMPLE[transform.resample])
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
            txn.put(str(i).encode(), pickle.dumps((buf.getvalue(), label)))
            if (i + 1) % commit_every == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(b"__len__", pickle.dumps(len(paths)))
        txn.commit()
        env.sync(True)
    finally:
        env.close()
    return total


class BareShards:
    """The same shard files read as a plain LMDB user would: one ordinary (copying) read transaction
    per shard, index -> (shard, key) by bisection. LMDB allows one environment per file per process,
    so it takes the environments already open (read-only, no lock file, readahead off)."""

    def __init__(self, envs: Sequence[lmdb.Environment], first_keys: Sequence[int], ends: Sequence[int]):
        self.txns = [env.begin() for env in envs]
        self.first_keys, self.ends = list(first_keys), list(ends)

    def get(self, i: int) -> bytes:
        k = bisect.bisect_right(self.ends, i)
        return self.txns[k].get(KEY_FORMAT % (self.first_keys[k] + i - (self.ends[k - 1] if k else 0)))

    def close(self) -> None:
        for txn in self.txns:
            txn.abort()


def pil_decode(data: bytes) -> np.ndarray:
    """A bare PIL decode of JPEG bytes into an HWC uint8 array."""
    return np.asarray(Image.open(io.BytesIO(data)))


def imagefolder_read(path: str, shorter: int | None, resample: str) -> np.ndarray:
    """torchvision ImageFolder's way: open the file, decode to RGB, resize the short side, per access."""
    with open(path, "rb") as f:
        img = Image.open(f).convert("RGB")
    if shorter:
        img = img.resize(resized_size(img.width, img.height, shorter), RESAMPLE[resample])
    return np.asarray(img)


def source_files(root: str, paths: Sequence[str]) -> list[str]:
    return [os.path.join(root, p) for p in paths]
