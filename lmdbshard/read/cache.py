"""The local cache of remote shards: each shard of a dataset at a URL, downloaded whole on first use.

LMDB maps a local file, so a shard of ``s3://bucket/prefix`` is read from its copy in the cache:

    <cache_dir>/<first 16 hex digits of sha256(root URL)>/
        url                          the root URL, for people looking at the cache
        manifest.json                a copy of the manifest last read from the URL
        downloads.log                one line per shard downloaded: time, pid, file, bytes, seconds
        shards/shard-000000.lmdb     a shard, under its name in the manifest
        shards/shard-000000.lmdb.lock

``cache_dir`` defaults to ``$LMDBSHARD_CACHE``, else ``~/.cache/lmdbshard``. Every process of a
node (DataLoader workers, ranks, Ray tasks) may share one cache: each shard's lock file
coordinates them with ``fcntl.flock``.

- **Downloaded once.** A reader that finds no copy takes the lock exclusively and downloads
  (``<file>.partial-<pid>``, size and, when the manifest has it, sha256 checked, then renamed
  into place); the others wait for the lock, then find the copy there.
- **Checked on open.** A copy whose size differs from the manifest's, or downloaded for another
  records checksum (the lock file records the one of its download), is downloaded again.
- **Never evicted while read.** A process holds the lock shared while it has the shard open.
- **Least recently used goes first.** The lock file's modification time is set on each open and
  close. With ``cache_limit``, before each download, the least recently used shards that no
  process holds are deleted until the whole ``cache_dir`` (every dataset in it) fits the limit
  with the new shard; shards in use are skipped, so the cache outgrows the limit only while the
  shards in use alone exceed it.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Optional

from lmdbshard.errors import ShardError
from lmdbshard.storage import objects

log = logging.getLogger("lmdbshard")

ENV_VAR = "LMDBSHARD_CACHE"
DEFAULT_DIR = os.path.join("~", ".cache", "lmdbshard")
LOCK_SUFFIX = ".lock"
DOWNLOADS_LOG = "downloads.log"
DOWNLOAD_CHUNK = 64 << 20   # bytes per request while downloading; two chunks in memory at most
PIN_ATTEMPTS = 5   # a copy evicted between its download and the reader's shared lock is fetched again
RETRY_S = 0.01     # between looks at a copy whose lock another process holds

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def default_cache_dir() -> str:
    """``$LMDBSHARD_CACHE``, else ``~/.cache/lmdbshard``, as an absolute path."""
    return os.path.abspath(os.path.expanduser(os.environ.get(ENV_VAR) or DEFAULT_DIR))


def parse_limit(limit: int | str | None) -> Optional[int]:
    """Bytes from ``limit``: None, a number of bytes, or a size such as ``"50GB"`` or ``"1.5TiB"``."""
    if limit is None:
        return None
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", limit, re.I) if isinstance(limit, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"cache_limit must be a positive number of bytes or a size such as '50GB' or '200GiB', "
                         f"got {limit!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


@dataclass(frozen=True)
class CachedFile:
    """One remote shard file and its copy in the cache: what a reader needs to fetch and check it."""

    url: str                 # the object
    path: str                # its copy
    bytes: int               # its size, as the manifest lists it
    sha256: Optional[str]    # of its bytes, when the manifest lists it
    folder: str              # the dataset's folder in the cache
    cache_dir: str
    limit: Optional[int]     # cache_limit in bytes
    version: str = ""        # the manifest's records checksum of the shard: which shard this copy must be


class ShardCache:
    """Where the copies of remote datasets go (``cache_dir``) and how much room they may take (``cache_limit``)."""

    def __init__(self, cache_dir: Optional[str | os.PathLike] = None, cache_limit: int | str | None = None):
        self.dir = os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else default_cache_dir()
        self.limit = parse_limit(cache_limit)
        self._folders: dict[str, str] = {}

    def folder(self, url: str) -> str:
        """The folder of the dataset at ``url`` (one string object per URL: pickles of many shards share it)."""
        folder = self._folders.get(url)
        if folder is None:
            folder = self._folders[url] = os.path.join(self.dir, hashlib.sha256(url.encode()).hexdigest()[:16])
        return folder

    def remember(self, url: str, manifest: dict) -> str:
        """Create the folder of the dataset at ``url``, with its URL and a copy of its manifest; returns it."""
        folder = self.folder(url)
        os.makedirs(folder, exist_ok=True)
        _write_atomic(os.path.join(folder, "url"), url.encode() + b"\n")
        _write_atomic(os.path.join(folder, "manifest.json"), json.dumps(manifest, indent=1).encode())
        return folder

    def file(self, url: str, name: str, size: int, sha256: Optional[str] = None, version: str = "") -> CachedFile:
        """The cached copy of the object ``url``/``name`` (``name``: '/'-separated, inside the dataset)."""
        folder = self.folder(url)
        return CachedFile(f"{url}/{name}", os.path.join(folder, *name.split("/")), size, sha256, folder, self.dir,
                          self.limit, version)


class Pin:
    """A shared lock on one cached copy: while any process holds one, the copy is neither evicted nor replaced.
    ``fetched``: this ``pin`` downloaded a copy (whose size and sha256 were checked as it arrived)."""

    def __init__(self, fd: int, lock_path: str, fetched: bool = False):
        self._fd, self._lock_path = fd, lock_path
        self.fetched = fetched

    def close(self) -> None:
        """Let go. Only the descriptor is closed, never ``LOCK_UN``: a forked child closing the descriptor
        it inherited must not release its parent's lock (flock locks belong to the shared open file)."""
        if self._fd is not None:
            _touch(self._lock_path)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Pin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pin(f: CachedFile) -> Pin:
    """Make sure the copy of ``f`` is in the cache (downloading it at most once per node at a time) and hold it."""
    lock_path = f.path + LOCK_SUFFIX
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fetched = 0
    try:
        while fetched < PIN_ATTEMPTS:
            fcntl.flock(fd, fcntl.LOCK_SH)   # waits while another process downloads (it holds the lock exclusively)
            if _present(f, fd):
                _touch(lock_path)
                return Pin(fd, lock_path, fetched > 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            # Never wait for the exclusive lock: a reader that pins the copy just downloaded by another
            # process would hold its shared lock for as long as it reads, and the wait would never end.
            # Held: another process downloads (the shared lock above waits for it), or readers hold an
            # older copy (wait until they let go); either way, look again.
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(RETRY_S)
                continue
            if not _present(f, fd):   # one downloader at a time
                os.ftruncate(fd, 0)   # the lock file records which shard the copy is (see _present): none now
                _fetch(f)
                fetched += 1
                os.pwrite(fd, f.version.encode(), 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    raise ShardError(f"{f.path} was evicted {PIN_ATTEMPTS} times right after its download; raise cache_limit "
                     f"(the shards in use need more room than it leaves)")


def _present(f: CachedFile, lock_fd: int) -> bool:
    """Whether the copy is the shard the manifest lists: its size, and the records checksum that the lock
    file recorded at its download (a dataset converted again into the same URL may keep the sizes)."""
    try:
        if os.stat(f.path).st_size != f.bytes:
            return False
    except FileNotFoundError:
        return False
    return os.pread(lock_fd, 256, 0) == f.version.encode()


def _fetch(f: CachedFile) -> None:
    """Download ``f`` into place, checked; the caller holds its lock exclusively.

    Big requests (``DOWNLOAD_CHUNK``): an S3 server serves one large GET far faster than many ranged
    ones. No fsync: a copy can be fetched again. After a power loss, a copy cut short has the wrong size and
    is downloaded again; one whose bytes were lost at its full size reads as a damaged local shard would (the
    structure check before mapping, ``lmdbshard verify``): delete it to download it again."""
    for stale in glob.glob(glob.escape(f.path + objects.PARTIAL) + "*"):   # left by a killed downloader
        os.remove(stale)
    if f.limit is not None:
        evict(f.cache_dir, f.limit, need=f.bytes)
    start = time.monotonic()
    digest = hashlib.sha256() if f.sha256 else None

    def check(n: int) -> None:
        problem = _problem(f, n, digest)
        if problem:
            raise ShardError(f"{f.url} {problem}: the object changed after the manifest was written, or is "
                             "damaged; rerun the conversion into that URL to rebuild it")

    # each chunk is hashed and written while the next one downloads (objects.chunks reads one ahead): two
    # chunks in memory at most. Measured: filling a mapped file instead cost 1.5x the time, a page fault per page
    objects.download(f.url, f.path, DOWNLOAD_CHUNK, check=check, durable=False,
                     on_chunk=None if digest is None else digest.update)
    seconds = time.monotonic() - start
    with open(os.path.join(f.folder, DOWNLOADS_LOG), "a") as out:   # one short append: whole lines
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {os.getpid()} {os.path.relpath(f.path, f.folder)} "
                  f"{f.bytes} {seconds:.4f}\n")


def _problem(f: CachedFile, n: int, digest) -> Optional[str]:
    """What is wrong with a downloaded copy of ``n`` bytes whose sha256 is ``digest`` (None: not hashed)."""
    if n != f.bytes:
        return f"holds {n} bytes, but the manifest lists {f.bytes}"
    if digest is not None and digest.hexdigest() != f.sha256:
        return f"has a sha256 other than the manifest's {f.sha256[:16]}..."
    return None


def cached_files(cache_dir: str) -> list[tuple[int, str, int]]:
    """(last use in ns, path, bytes) of every shard copy under ``cache_dir``, least recently used first."""
    found = []
    for folder, _, files in os.walk(cache_dir):
        names = set(files)
        for name in files:
            if name.endswith(LOCK_SUFFIX) and name[:-len(LOCK_SUFFIX)] in names:
                path = os.path.join(folder, name[:-len(LOCK_SUFFIX)])
                try:
                    found.append((os.stat(path + LOCK_SUFFIX).st_mtime_ns, path, os.stat(path).st_size))
                except FileNotFoundError:   # evicted meanwhile
                    pass
    return sorted(found)


def evict(cache_dir: str, limit: int, need: int = 0) -> list[str]:
    """Delete the least recently used copies that no process holds until the cache plus ``need`` bytes
    fits ``limit``; returns the paths deleted."""
    files = cached_files(cache_dir)
    total = sum(size for _, _, size in files)
    evicted = []
    for _, path, size in files:
        if total + need <= limit:
            break
        if _remove_unused(path):
            total -= size
            evicted.append(path)
    if total + need > limit:
        log.warning("cache %s: %.1f MB in use, over cache_limit %.1f MB: the shards open now need more room",
                    cache_dir, (total + need) / 1e6, limit / 1e6)
    return evicted


def _remove_unused(path: str) -> bool:
    try:
        fd = os.open(path + LOCK_SUFFIX, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:   # held: open in some reader, or being downloaded
        os.close(fd)
        return False
    try:
        os.remove(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except OSError:
        pass   # recency is advice; a read-only cache still reads


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.partial-{os.getpid()}"
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
