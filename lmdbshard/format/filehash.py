"""The SHA-256 of a whole file's bytes, read sequentially in large blocks; and of a stream of chunks.

A shard's ``file_sha256`` (docs/FORMAT.md §6) is this digest of its published LMDB data file. Checking
it is a plain sequential read: the kernel reads ahead (``POSIX_FADV_SEQUENTIAL``), there are no page
faults of a mapped file and no per-record work, and ``hashlib`` releases the GIL while it hashes a
block, so several files hash in parallel on threads.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterable

BLOCK_BYTES = 8 << 20   # one read() and one update() per 8 MiB


def hash_chunks(chunks: Iterable[bytes]) -> str:
    """Lowercase hex SHA-256 of the concatenation of ``chunks`` (bytes, bytearray or memoryview),
    for example the body of an object streamed over the network: the same digest ``hash_file`` gives
    for a file holding those bytes."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def hash_file(path: str) -> str:
    """Lowercase hex SHA-256 of the bytes of the file ``path``, read sequentially with readahead.
    Raises ``OSError`` (``FileNotFoundError`` and so on) when it cannot be read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        _advise(fd, 0, 0, "POSIX_FADV_SEQUENTIAL")   # readahead on for the whole file
        return hash_chunks(_blocks(fd))
    finally:
        os.close(fd)


def _blocks(fd: int) -> Iterable[memoryview]:
    """The file's bytes, one reused buffer of BLOCK_BYTES at a time (no allocation per block). Before
    each block is handed out to be hashed, the kernel is asked to start reading the next one, so the
    disk reads while the CPU hashes."""
    buf = bytearray(BLOCK_BYTES)
    view = memoryview(buf)
    offset = 0
    with open(fd, "rb", buffering=0, closefd=False) as f:
        while n := f.readinto(buf):
            offset += n
            _advise(fd, offset, BLOCK_BYTES, "POSIX_FADV_WILLNEED")
            yield view[:n]


def _advise(fd: int, offset: int, length: int, advice: str) -> None:
    """``posix_fadvise`` where there is one. Advice only: nothing happens where unsupported."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, getattr(os, advice))
        except OSError:
            pass
