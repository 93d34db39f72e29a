"""This process's open shard environments, shared by every reader in the process.

Each environment is opened read-only and without a lock file (``lock=False``: no reader
slots are used, so ``MDB_READERS_FULL`` cannot happen, however many processes read), with
one long-lived ``buffers=True`` read transaction, whose values are zero-copy views of the
read-only file mapping. Readers share them through a reference-counted registry.

- **Checked before mapped.** ``open_shard`` runs ``lmdbcheck.check_lmdb_file`` first, so a
  damaged file raises ``ShardError`` naming it instead of killing the process with SIGBUS.
  The registry checks each file identity once per process tree (the set of checked
  identities holds no handles, so it survives ``fork``).
- **The file that is there.** An entry remembers the identity of the file it mapped (device,
  inode, size, mtime). When a reader opens a shard whose path now names another file (a
  rebuilt shard, an overwritten dataset), it gets a new environment on the new file; readers
  that hold the old one keep reading the old file, consistently, until they release it.
- **Never across fork.** A child first drops what it inherited and opens its own.
- **Cached copies held.** A shard of a URL root is opened from its copy in the local cache
  (``cache.py``): the entry downloads it first if need be, and holds it (a shared lock) until
  the environment closes, so that no process evicts or replaces it meanwhile.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import lmdb

from lmdbshard.errors import ShardError
from lmdbshard.format.record import lmdb_data_file
from lmdbshard.read import cache
from lmdbshard.read.lmdbcheck import check_lmdb_file

OPEN_ATTEMPTS = 3   # a file replaced between the check and the open is checked again


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path named: a rename over it changes the inode, a rewrite in place the size or mtime."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileIdentity":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


_checked: set[FileIdentity] = set()   # files that passed check_lmdb_file; survives fork on purpose


def open_shard(path: str) -> lmdb.Environment:
    """Open one shard file (or environment directory holding ``data.mdb``) read-only, without a lock
    file, after checking its structure. Raises ``ShardError`` naming the file when it is truncated or
    damaged: reading it could otherwise kill the process with SIGBUS. Within a process, prefer
    ``reading`` or the registry: py-lmdb refuses to open a file that is already open."""
    return _open(path, recheck=True)[0]


def _open(path: str, recheck: bool) -> tuple[lmdb.Environment, FileIdentity]:
    """The environment and the identity of the data file it maps, checked unless ``recheck`` is False
    and this identity passed before. The identity is taken before and after ``lmdb.open``: if they
    differ, the file was replaced meanwhile, and the new one is checked and opened instead."""
    data = lmdb_data_file(path)
    for _ in range(OPEN_ATTEMPTS):
        before = FileIdentity.of(os.stat(data))
        if recheck or before not in _checked:
            before = FileIdentity.of(check_lmdb_file(data))
        try:
            env = lmdb.open(path, subdir=data != path, readonly=True, lock=False, readahead=False, meminit=False,
                            max_dbs=0)
        except lmdb.Error as exc:
            raise ShardError(f"cannot open {path} as LMDB: {exc}; check the dataset with lmdbshard verify and "
                             "rebuild the shard by rerunning its conversion command") from exc
        if FileIdentity.of(os.stat(data)) == before:
            _checked.add(before)
            return env, before
        env.close()
    raise ShardError(f"{data} was replaced {OPEN_ATTEMPTS} times while it was being opened; open it again "
                     "once nothing writes to the dataset")


@dataclass(eq=False)
class _Entry:
    path: str
    identity: FileIdentity
    env: lmdb.Environment
    txn: lmdb.Transaction
    users: int = 0
    pin: Optional[cache.Pin] = None   # the cached copy it maps, held

    def close(self) -> None:
        self.txn.abort()
        self.env.close()
        if self.pin is not None:
            self.pin.close()


class _EnvRegistry:
    """The current file at each path, and every entry still held (by its transaction). Thread-safe:
    ``verify`` checks shards on threads while readers may hold the same files."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.open: dict[str, _Entry] = {}
        self.held: dict[int, _Entry] = {}   # id(txn) -> entry; includes files replaced on disk since

    def acquire(self, path: str, recheck: bool = False, remote: Optional[cache.CachedFile] = None
                ) -> lmdb.Transaction:
        """A read transaction on the file now at ``path``; give it back with ``release``. ``recheck``
        checks the file's structure even if this process checked it before (``verify``, resume).
        ``remote``: ``path`` is the cached copy of this object, fetched first if need be.

        py-lmdb refuses a second environment on one file in a process, so every reader of a file,
        ``verify`` included, shares its entry here."""
        pin = None
        if remote is not None and path not in self.open:   # fetched outside the lock: other shards' readers go on
            pin = cache.pin(remote)
        try:
            with self.lock:
                entry = self.open.get(path)
                if entry is not None:
                    data = lmdb_data_file(path)
                    now = FileIdentity.of(check_lmdb_file(data) if recheck else os.stat(data))
                    if now != entry.identity:
                        if (now.device, now.inode) == (entry.identity.device, entry.identity.inode):
                            raise ShardError(f"{path} was rewritten in place while this process reads it; close "
                                             "the datasets that use it and open it again (lmdbshard replaces shard "
                                             "files by renaming, never in place)")
                        del self.open[path]   # replaced on disk: its holders keep it until they release it
                        entry = None
                if entry is None:
                    if remote is not None and pin is None:
                        pin = cache.pin(remote)
                    env, identity = _open(path, recheck)
                    entry = _Entry(path, identity, env, env.begin(buffers=True), pin=pin)
                    pin = None
                    self.open[path] = self.held[id(entry.txn)] = entry
                entry.users += 1
                return entry.txn
        finally:
            if pin is not None:   # another thread opened it meanwhile, or the open failed
                pin.close()

    def release(self, txn: lmdb.Transaction) -> None:
        """Give back a transaction from ``acquire``; the environment closes with its last user."""
        with self.lock:
            entry = self.held.get(id(txn))
            if entry is None or entry.txn is not txn:
                return
            entry.users -= 1
            if entry.users <= 0:
                del self.held[id(txn)]
                if self.open.get(entry.path) is entry:
                    del self.open[entry.path]
                entry.close()


@contextmanager
def reading(path: str) -> Iterator[lmdb.Transaction]:
    """A read transaction on the file now at ``path``, its structure checked now (``verify`` and the
    resume check use it). It shares the environment of this process's readers of the same file:
    py-lmdb refuses to open one file twice in a process."""
    envs = registry()
    txn = envs.acquire(path, recheck=True)
    try:
        yield txn
    finally:
        envs.release(txn)


_registry: _EnvRegistry | None = None
_registry_lock = threading.RLock()   # reentrant: a dataset collected while it is held releases through it
_forks = 0


def _after_fork_in_child() -> None:
    global _forks, _registry_lock
    _forks += 1
    _registry_lock = threading.RLock()   # another thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def forks() -> int:
    """How many times this process's ancestry forked since import: a reader compares it per sample
    instead of calling ``os.getpid()`` (a system call, 0.26 us: 5% of a ``decode=False`` read)."""
    return _forks


def registry() -> _EnvRegistry:
    """The registry of the current process. A forked child first closes the handles it inherited:
    py-lmdb would otherwise refuse to reopen those files in the child ("already open in this
    process"). With ``lock=False`` closing touches only the child's own mappings, never the parent's."""
    global _registry
    current = _registry
    if current is not None and current.pid == os.getpid():
        return current
    with _registry_lock:
        if _registry is not None and _registry.pid != os.getpid():
            for entry in _registry.held.values():
                try:
                    entry.close()
                except lmdb.Error:
                    pass
            _registry = None
        if _registry is None:
            _registry = _EnvRegistry()
        return _registry
