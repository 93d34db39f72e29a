"""Whole-object operations on object-store URLs: size, read, write, upload, download, list, delete.

An object store has no rename and no partial objects: a PUT (or a completed multipart upload) makes
an object appear whole, or not at all. ``upload`` streams a local file (the SDK splits large ones
into a multipart upload); ``download`` writes ``<dest>.partial-<pid>`` and renames it into place,
so a reader never sees half a file under the final name. Errors are ``OSError``s that name the URL.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from lmdbshard.storage.urls import filesystem, join

#: Bytes moved per read or write call.
CHUNK = 16 << 20
#: A download in progress is ``<dest>.partial-<pid>``.
PARTIAL = ".partial-"


def size(url: str) -> Optional[int]:
    """The object's size in bytes, or None when there is no object at ``url``."""
    import pyarrow.fs as pafs
    fs, path = filesystem(url)
    info = _call(url, "look up", fs.get_file_info, path)
    return info.size if info.type == pafs.FileType.File else None


def exists(url: str) -> bool:
    return size(url) is not None


def read_bytes(url: str, limit: Optional[int] = None) -> bytes:
    """The object's bytes; ``limit``: refuse (ValueError) an object larger than this, before reading it."""
    fs, path = filesystem(url)
    with _call(url, "open", fs.open_input_file, path) as f:
        n = f.size()
        if limit is not None and n > limit:
            raise ValueError(f"{url} holds {n} bytes, over the limit of {limit}")
        return _call(url, "read", f.read, n)


def write_bytes(url: str, data: bytes) -> None:
    """Store ``data`` at ``url`` in one request: the object appears whole or not at all."""
    fs, path = filesystem(url)
    stream = _call(url, "create", fs.open_output_stream, path, metadata={})
    try:
        stream.write(data)
    finally:
        _call(url, "write", stream.close)


def upload(local: str, url: str, metadata: Optional[dict[str, str]] = None) -> int:
    """Copy the local file ``local`` to ``url`` (multipart when large); returns the bytes sent.
    ``metadata``: pyarrow's object metadata, e.g. ``{"ACL": "public-read"}``."""
    sent = 0
    with open(local, "rb") as src, writer(url, metadata) as write:
        while chunk := src.read(CHUNK):
            write(chunk)
            sent += len(chunk)
    return sent


@contextmanager
def writer(url: str, metadata: Optional[dict[str, str]] = None) -> Iterator[Callable[[bytes], object]]:
    """``with writer(url) as write:`` each ``write(data)`` is sent on (the SDK buffers a part, and sends
    a large object as a multipart upload); the object appears when the block ends, whole. An exception
    abandons the upload and leaves no object. ``data`` must not change afterwards (``bytes``): the SDK
    may keep a reference to a large block until its part is sent."""
    fs, path = filesystem(url)
    stream = _call(url, "create", fs.open_output_stream, path, metadata=metadata or {})
    try:
        yield stream.write
    except BaseException:
        _abandon(stream, fs, path)
        raise
    _call(url, "upload", stream.close)


def chunks(url: str, chunk: int = CHUNK) -> Iterator[memoryview]:
    """The object's bytes in order, ``chunk`` at a time (one ranged request each), as views of buffers that
    are not copied again. The next chunk's request runs on a thread while the caller uses this one: a download
    writes and hashes while the next bytes arrive. At most two chunks are in memory when the caller drops each
    one before asking for the next."""
    fs, path = filesystem(url)
    with _call(url, "open", fs.open_input_file, path) as f, ThreadPoolExecutor(1, "lmdbshard-get") as ahead:
        total = f.size()

        def get(offset: int):   # on the one thread: seek, then a buffer that is not copied into bytes
            if offset >= total:
                return None
            f.seek(offset)
            return _call(url, "read", f.read_buffer, min(chunk, total - offset))

        offset, pending = 0, ahead.submit(get, 0)
        while offset < total:
            data = pending.result()
            if not data:
                raise OSError(f"{url} ended at byte {offset} of {total} while being read")
            offset += len(data)
            pending = ahead.submit(get, offset)
            yield memoryview(data)


def download(url: str, dest: str, chunk: int = CHUNK, on_chunk: Optional[Callable[[memoryview], object]] = None,
             check: Optional[Callable[[int], object]] = None, durable: bool = True) -> int:
    """Copy the object at ``url`` to the local file ``dest``, atomically; returns its size.

    ``on_chunk(data)`` sees each chunk as it arrives; ``check(size)`` runs once every byte is written and
    before the rename, and refuses the copy by raising. ``durable``: fsync the copy before the rename."""
    tmp = f"{dest}{PARTIAL}{os.getpid()}"
    n = 0
    try:
        with open(tmp, "wb") as out:
            for data in chunks(url, chunk):
                if on_chunk is not None:
                    on_chunk(data)
                out.write(data)
                n += len(data)
                del data   # let go before asking for the next chunk: two chunks in memory, never three
            if durable:
                out.flush()
                os.fsync(out.fileno())
        if check is not None:
            check(n)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    return n


def listdir(url: str) -> list[tuple[str, bool, int]]:
    """(name, is_folder, size) of what lies directly under the prefix ``url``, sorted by name; [] if none."""
    import pyarrow.fs as pafs
    fs, path = filesystem(url)
    infos = _call(url, "list", fs.get_file_info, pafs.FileSelector(path, allow_not_found=True))
    return sorted((i.base_name, i.type == pafs.FileType.Directory, i.size or 0) for i in infos)


def walk(url: str) -> list[tuple[str, int]]:
    """(path relative to ``url``, size) of every object below the prefix ``url``, sorted (one paginated
    listing: the SDK pages through it)."""
    import pyarrow.fs as pafs
    fs, path = filesystem(url)
    infos = _call(url, "list", fs.get_file_info, pafs.FileSelector(path, recursive=True, allow_not_found=True))
    cut = len(path.rstrip("/")) + 1
    return sorted((i.path[cut:], i.size) for i in infos if i.type == pafs.FileType.File)


def delete(url: str) -> None:
    """Delete the one object at ``url`` (a key, not a prefix), without first looking up what it is;
    a missing one is no error."""
    fs, path = filesystem(url)
    try:
        _call(url, "delete", fs.delete_file, path)
    except FileNotFoundError:
        pass


def remove(url: str) -> None:
    """Delete the object at ``url``, or every object below the prefix ``url``; a missing one is no error."""
    import pyarrow.fs as pafs
    fs, path = filesystem(url)
    info = _call(url, "look up", fs.get_file_info, path)
    if info.type == pafs.FileType.File:
        _call(url, "delete", fs.delete_file, path)
    elif info.type == pafs.FileType.Directory:
        _call(url, "delete", fs.delete_dir, path)


def _abandon(stream, fs, path: str) -> None:
    """Abandon a half-written upload. pyarrow has no abort: closing completes what was sent, so the
    truncated object is deleted again (this key has one writer: the output's lock holder's task)."""
    try:
        stream.close()
        fs.delete_file(path)
    except OSError:
        pass


def _call(url: str, doing: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no object at {url}") from exc
    except OSError as exc:
        raise OSError(f"cannot {doing} {url}: {_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


__all__ = ["CHUNK", "PARTIAL", "chunks", "delete", "download", "exists", "join", "listdir", "read_bytes", "remove", "size", "upload",
           "walk", "write_bytes", "writer"]
