"""Building one shard's LMDB file(s) on node-local scratch, and publishing them into the output.

``ShardOutput`` appends values in key order with ``append=True`` in large transactions
(checksumming them as it goes), grows the map when it is full, then compact-copies each file
next to the output as ``*.partial``, fsyncs it and renames it into place: a crash at any point
leaves no file under the final name. In Caffe Datum mode each LMDB is published as an environment
directory holding ``data.mdb`` (what Caffe and DALI's caffe reader open), the same way: the copy
goes into a ``*.partial`` directory, which is fsynced and renamed. Each published data file is
hashed whole (``file_sha256``) as the copy is written, so that a resume check is one sequential read
of the file (docs/FORMAT.md §6). A full disk becomes one
``DiskFullError`` line naming the shard, the space it needs and the space free.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from contextlib import suppress
from typing import Callable, Optional

import lmdb

from lmdbshard.write.atomic import (WriteBehind, disk_full_message, free_bytes, is_disk_full, publishing,
                                    publishing_dir)
from lmdbshard.format.datum import label_filename
from lmdbshard.errors import DiskFullError, ShardError
from lmdbshard.format.manifest import ShardEntry
from lmdbshard.storage import objects
from lmdbshard.storage.urls import filesystem, is_url, join
from lmdbshard.format.record import LMDB_DATA_FILE, SHARD_DIR, RecordHasher, encode_key, shard_filename

BATCH_BYTES = 4 << 20      # one write transaction holds about this much (the last is on a job's end)
BATCH_RECORDS = 4096
PIPE_BYTES = 1 << 20       # the compact copy's blocks: its pipe's size and the hash's reads
INITIAL_MAP = 64 << 30     # address space only (no writemap); doubles on MapFullError, which no real shard meets


class ShardBuilder:
    """An LMDB being filled in key order on scratch disk.

    No ``writemap``: with it, a full disk kills the process with SIGBUS when a page of
    the sparse map is touched; without it, LMDB reports a write error that becomes a
    clear message. It costs about 0.5 ms per 1,000 records (measured), a rounding error.

    Reproducible bytes: the published file is a function of the records alone (docs/FORMAT.md,
    "Reproducible files"). ``meminit=True`` zeroes the unused parts of new pages, which would
    otherwise carry whatever the worker's heap held into the file; the batching (BATCH_BYTES,
    BATCH_RECORDS) is fixed, since where transactions end decides which stale bytes the page
    gaps keep; the map starts large enough never to grow (a transaction aborted on
    ``MapFullError`` leaves pages in LMDB's page cache whose stale bytes end up in later page
    gaps, so a shard that grew its map differs from one that did not); and the map size LMDB
    writes into the copy's meta page is set to the pages in use, not to the 64 GiB reservation
    (a C reader such as Caffe maps the size the meta page names).
    """

    def __init__(self, index: int, path: str, map_size: int, planned: int):
        self.index, self.path, self.planned = index, path, planned
        self.env = lmdb.open(path, subdir=False, map_size=map_size, meminit=True, metasync=False,
                             sync=False, lock=False, max_dbs=0)
        self.bytes_in = self.records = 0

    def put_batch(self, batch: list[tuple[bytes, bytes]]) -> None:
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    cur = txn.cursor()
                    added, _ = cur.putmulti(batch, append=True)
                    if added != len(batch):
                        raise ShardError(f"{self.path}: appended {added} of {len(batch)} records (keys out of order)")
                self.bytes_in += sum(len(v) for _, v in batch)
                self.records += len(batch)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except (lmdb.Error, OSError) as exc:
                per_record = (self.bytes_in + sum(len(v) for _, v in batch)) / (self.records + len(batch))
                raise _storage_error(exc, self.index, "building it on scratch disk", os.path.dirname(self.path),
                                     int(per_record * self.planned), "or set scratch_dir= to a larger disk") from exc

    def used_bytes(self) -> int:
        return (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]

    def publish(self, final: str, directory: bool = False) -> tuple[int, str]:
        """Compact-copy to a ``*.partial`` beside ``final``, fsync, rename into place; returns the data file's
        size and SHA-256. ``directory``: publish ``final`` as an environment directory holding ``data.mdb``."""
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        try:
            self.env.set_mapsize(self.used_bytes())   # the copy's meta records it: one value for one set of records
            with publishing_dir(final, LMDB_DATA_FILE) if directory else publishing(final) as fd:
                size, sha256 = compact_copy(self.env, WriteBehind(fd))
        except (lmdb.Error, OSError) as exc:
            raise _storage_error(exc, self.index, f"copying it to {final}", folder, self.used_bytes(), "") from exc
        return size, sha256

    def upload(self, url: str) -> tuple[int, str]:
        """Upload the compact copy to the object ``url`` as LMDB writes it, the same bytes ``publish``
        writes to a file: no copy on scratch, no second read of it. Returns its size and SHA-256."""
        self.env.set_mapsize(self.used_bytes())
        with objects.writer(url) as send:
            return compact_copy(self.env, lambda block: send(bytes(block)))

    def close(self) -> None:
        self.env.close()


def compact_copy(env: lmdb.Environment, write: Callable[[memoryview], object]) -> tuple[int, str]:
    """Compact-copy ``env`` through ``write`` (called with each block, in order; the block's memory is
    reused after it returns); returns the bytes written and their SHA-256.

    LMDB writes the copy into a pipe, and this thread hashes each block and hands it to ``write``, so
    the hash needs no second read of the file and runs while LMDB walks the tree. Measured on an 86 MB
    shard: copy, fsync and hash 0.29-0.35 s before (the hash a separate read), 0.17-0.20 s this way."""
    r, w = os.pipe()
    with suppress(AttributeError, OSError):   # Linux: fewer, larger blocks through the pipe
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    failed: list[BaseException] = []

    def copy() -> None:
        try:
            env.copyfd(w, compact=True)
        except BaseException as exc:   # re-raised by the caller's thread below
            failed.append(exc)
        finally:
            os.close(w)

    copier = threading.Thread(target=copy, name=f"lmdbshard-copy-{os.getpid()}", daemon=True)
    copier.start()
    digest, size = hashlib.sha256(), 0
    buf = bytearray(PIPE_BYTES)
    view = memoryview(buf)
    try:
        with open(r, "rb", buffering=0) as pipe:   # closed on the way out: a copy still writing gets EPIPE
            while n := pipe.readinto(buf):
                digest.update(view[:n])
                write(view[:n])
                size += n
    finally:
        copier.join()
    if failed:
        raise failed[0]
    return size, digest.hexdigest()


def _storage_error(exc: BaseException, index: int, doing: str, folder: str, needed: int, hint: str) -> BaseException:
    """A DiskFullError when ``exc`` came from a full disk; otherwise ``exc`` itself, unchanged.

    LMDB reports a full disk as ENOSPC, or as EIO from a commit, so the free space decides."""
    if not (is_disk_full(exc) or ("Input/output error" in str(exc) and free_bytes(folder) < needed)):
        return exc
    return DiskFullError(f"shard {index}: {disk_full_message(folder, doing, needed, hint)}")


class ShardOutput:
    """The LMDB(s) of one shard being filled: the main one and, for Datum masks, the dual ``*-label.lmdb``.
    ``directories``: publish each as an environment directory holding ``data.mdb`` (Caffe Datum mode)."""

    def __init__(self, index: int, first_key: int, planned: int, map_size: int, scratch: str,
                 directories: bool = False):
        self.index, self.first_key, self.planned, self.map_size, self.scratch = index, first_key, planned, map_size, scratch
        self.directories = directories
        self.main = ShardBuilder(index, os.path.join(scratch, shard_filename(index)), map_size, planned)
        self.labels: Optional[ShardBuilder] = None
        self.hashers = [RecordHasher(), RecordHasher()]
        self.batches: list[list[tuple[bytes, bytes]]] = [[], []]
        self.batch_bytes = self.count = 0

    def add(self, value: bytes, companion: Optional[bytes], seconds: dict[str, float]) -> None:
        if companion is not None and self.labels is None:
            if self.count:
                raise ShardError(f"shard {self.index}: record {self.count} has a mask but earlier ones do not")
            name = label_filename(shard_filename(self.index))
            self.labels = ShardBuilder(self.index, os.path.join(self.scratch, name), self.map_size, self.planned)
        if (companion is None) != (self.labels is None):
            raise ShardError(f"shard {self.index}: record {self.count} has no mask but earlier ones do")
        key = encode_key(self.first_key + self.count)
        for j, v in enumerate((value, companion)):
            if v is not None:
                self.hashers[j].update(key, v)
                self.batches[j].append((key, v))
                self.batch_bytes += len(v)
        self.count += 1
        if self.batch_bytes >= BATCH_BYTES or len(self.batches[0]) >= BATCH_RECORDS:
            seconds["write"] += _timed(self.flush)

    def flush(self) -> None:
        for builder, batch in zip((self.main, self.labels), self.batches):
            if batch:
                builder.put_batch(batch)
                batch.clear()
        self.batch_bytes = 0

    def publish(self, out: str) -> ShardEntry:
        """Publish the file(s) under ``out``; returns the shard's manifest entry (paths relative to ``out``).
        An object-store ``out`` (a URL): each file is uploaded as its compact copy is made, the same bytes
        as in a local ``out`` (the SDK sends a large one in parts; the object appears complete or not at
        all). The driver's report, written after this returns, marks the shard complete."""
        self.flush()

        def put(builder: ShardBuilder, rel: str) -> tuple[int, str]:
            if is_url(out):
                return builder.upload(join(out, rel))
            return builder.publish(os.path.join(out, rel), self.directories)

        rel = f"{SHARD_DIR}/{shard_filename(self.index)}"
        label_rel, label_size, label_file_sha = None, 0, None
        if self.labels is not None:   # the companion first: the main file's presence marks the shard done
            label_rel = f"{SHARD_DIR}/{label_filename(shard_filename(self.index))}"
            label_size, label_file_sha = put(self.labels, label_rel)
        size, file_sha = put(self.main, rel)
        return ShardEntry(self.index, rel, self.first_key, self.count, size, self.hashers[0].hexdigest(),
                          label_rel, label_size, self.hashers[1].hexdigest() if label_rel else None,
                          file_sha, label_file_sha)

    def close(self) -> None:
        for builder in (self.main, self.labels):
            if builder is not None:
                builder.close()


def warm_client(out: str) -> None:
    """For an object-store ``out``: import and build the client on a thread now, while the shard's units
    run, so that its start-up in a fresh worker (measured 0.2-0.6 s) does not delay the upload."""
    if is_url(out):
        threading.Thread(target=filesystem, args=(out,), daemon=True, name="lmdbshard-client").start()


SCRATCH_PREFIX = "lmdbshard-"


def scratch_dir(index: int, parent: Optional[str]) -> str:
    """A fresh scratch folder for shard ``index``, named ``lmdbshard-<host>-<pid>-<index>-<random>``, after
    removing the folders that dead processes of this host left behind (a worker killed mid-shard, or a
    driver stopped by a signal, cannot clean up; a live process's folder is never touched)."""
    parent = parent or tempfile.gettempdir()
    os.makedirs(parent, exist_ok=True)
    remove_dead_scratch(parent)
    return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{_host()}-{os.getpid()}-{index:06d}-", dir=parent)


def remove_dead_scratch(parent: Optional[str]) -> list[str]:
    """Remove the scratch folders under ``parent`` that processes of this host no longer running made;
    returns their paths. Folders of other hosts (a shared ``scratch_dir``) are left to those hosts."""
    parent = parent or tempfile.gettempdir()
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return []
    host, removed = _host(), []
    for name in names:
        owner = scratch_owner(name)
        if owner is not None and owner[0] == host and not _alive(owner[1]):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(os.path.join(parent, name))
    return removed


def scratch_owner(name: str) -> Optional[tuple[str, int]]:
    """(host, pid) of a scratch folder's name, or None when the name is not one of ours."""
    if not name.startswith(SCRATCH_PREFIX):
        return None
    parts = name[len(SCRATCH_PREFIX):].rsplit("-", 3)   # the host may hold "-"; mkdtemp's suffix never does
    if len(parts) != 4 or not parts[0] or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return parts[0], int(parts[1])


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _timed(fn: Callable, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t
