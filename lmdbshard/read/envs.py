"""This process's open shard environments, shared by every reader in the process.

LMDB allows one environment per file per process, so readers share them through a
reference-counted registry. Each environment is opened read-only and without a lock
file (``lock=False``: no reader slots are used, so ``MDB_READERS_FULL`` cannot happen,
however many processes read), with one long-lived ``buffers=True`` read transaction,
whose values are zero-copy views of the read-only file mapping. Environments never
cross ``fork``: a child first drops what it inherited and opens its own.
"""

from __future__ import annotations

import os

import lmdb

from lmdbshard.errors import ShardError
from lmdbshard.format.record import lmdb_data_file


def open_shard(path: str) -> lmdb.Environment:
    """Open one shard file (or environment directory holding ``data.mdb``) read-only, without a lock file.
    Refuses a truncated file: touching its missing pages through the map would kill the process with
    SIGBUS instead of raising."""
    data = lmdb_data_file(path)
    env = lmdb.open(path, subdir=data != path, readonly=True, lock=False, readahead=False, meminit=False, max_dbs=0)
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.path.getsize(data)
    if size < need:
        env.close()
        raise ShardError(f"{data} is truncated ({size} bytes, its LMDB pages need {need}); check the dataset "
                         "with lmdbshard verify and rebuild the shard by rerunning its conversion command")
    return env


class _EnvRegistry:
    """path -> [env, read txn, users] for the current process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: dict[str, list] = {}

    def acquire(self, path: str) -> lmdb.Transaction:
        entry = self.open.get(path)
        if entry is None:
            env = open_shard(path)
            entry = self.open[path] = [env, env.begin(buffers=True), 0]
        entry[2] += 1
        return entry[1]

    def release(self, path: str) -> None:
        entry = self.open.get(path)
        if entry is not None:
            entry[2] -= 1
            if entry[2] <= 0:
                del self.open[path]
                entry[1].abort()
                entry[0].close()


_registry: _EnvRegistry | None = None
_forks = 0


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


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
    if _registry is not None and _registry.pid != os.getpid():
        for env, txn, _ in _registry.open.values():
            try:
                txn.abort()
                env.close()
            except lmdb.Error:
                pass
        _registry = None
    if _registry is None:
        _registry = _EnvRegistry()
    return _registry
