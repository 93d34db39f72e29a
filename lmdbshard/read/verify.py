"""Checking shards on disk against what was planned: keys, counts, checksums, record CRCs, decoding.

One function, ``check_shard``, serves both ``lmdbshard verify`` (every shard of a
finished dataset, every record decoded) and the resume path (each complete shard
of an interrupted job, checksum only), so a shard is "complete" by one definition.
Where the entry has a ``file_sha256`` (docs/FORMAT.md §6), the file's size and bytes are
checked first, with one sequential read; the resume check stops there (``walk=False``),
and only entries without it (written by earlier versions) have their records walked.
Checks run on threads: hashing and decoding release the GIL. A dataset at a URL is checked
in the local cache: each thread downloads its shard there first (``cache.py``), then checks it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional

import lmdb

from lmdbshard.read.decode import decode_field
from lmdbshard.read.cache import CachedFile, ShardCache, pin
from lmdbshard.read.envs import reading
from lmdbshard.read.roots import cached, load_root
from lmdbshard.errors import FormatError, ShardError
from lmdbshard.format.datum import datum_array, decode_datum
from lmdbshard.format.filehash import hash_file
from lmdbshard.format.record import RecordHasher, encode_key, lmdb_data_file, record_crc, unpack_record
from lmdbshard.format.manifest import RECORD_FORMAT, ShardEntry
from lmdbshard.storage.urls import is_url

MAX_PROBLEMS_PER_SHARD = 20


@dataclass(frozen=True)
class ShardExpectation:
    """What shard ``index`` must hold: keys first_key .. first_key+count-1 whose records hash to sha256."""

    index: int
    path: str
    first_key: int
    count: int
    sha256: str
    record_format: str = RECORD_FORMAT   # "caffe_datum": every value is a Datum, without a record CRC
    file_bytes: int = -1                 # the data file's size; -1: not known
    file_sha256: Optional[str] = None    # SHA-256 of the data file's bytes; None: not recorded
    walk: bool = True                    # False: a matching file_sha256 is enough, skip the record walk
    remote: Optional[CachedFile] = None  # ``path`` is the cached copy of this object: fetched before the check


def expectations(root: str, entries: Iterable[ShardEntry], record_format: str, walk: bool = True
                 ) -> tuple[list[ShardExpectation], list[ShardExpectation]]:
    """What each shard entry promises: (its LMDB files, the dual label LMDBs of Datum mode: same keys,
    their own checksums). The one place that turns manifest entries (or reports) into checks.
    ``walk=False``: entries with a ``file_sha256`` are checked by their file's bytes alone."""
    entries = list(entries)
    shards = [ShardExpectation(s.index, os.path.join(root, s.file), s.first_key, s.count, s.sha256, record_format,
                               s.bytes, s.file_sha256, walk) for s in entries]
    labels = [ShardExpectation(s.index, os.path.join(root, s.label_file), s.first_key, s.count,
                               s.label_sha256 or "", record_format, s.label_bytes, s.label_file_sha256, walk)
              for s in entries if s.label_file]
    return shards, labels


@dataclass(frozen=True)
class Problem:
    shard: Optional[int]   # None: the dataset as a whole
    key: Optional[str]     # the LMDB key of the bad record, or None for the shard as a whole
    message: str

    def __str__(self) -> str:
        where = "manifest" if self.shard is None else f"shard {self.shard}"
        where += f" key {self.key}" if self.key is not None else ""
        return f"{where}: {self.message}"


@dataclass
class VerifyResult:
    root: str
    shards: int
    records: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def broken_shards(self) -> list[int]:
        return sorted({p.shard for p in self.problems if p.shard is not None})


def check_shard(exp: ShardExpectation, decode: bool = True) -> tuple[int, list[Problem]]:
    """Re-read one shard; returns (records read, problems). An empty list means the shard is intact."""
    problems: list[Problem] = []

    def problem(key: Optional[bytes], message: str) -> None:
        if len(problems) < MAX_PROBLEMS_PER_SHARD:
            problems.append(Problem(exp.index, None if key is None else bytes(key).decode("ascii", "replace"),
                                    message))

    try:
        held = None if exp.remote is None else pin(exp.remote)
    except (ShardError, OSError) as exc:   # the object is missing, unreadable, or not what the manifest lists
        problem(None, str(exc))
        return 0, problems
    with held or nullcontext():
        if held is not None and held.fetched and exp.walk:   # its sha256 was checked as it downloaded
            exp = replace(exp, file_sha256=None)
        return _check_file(exp, decode, problem), problems


def _check_file(exp: ShardExpectation, decode: bool, problem: Callable[[Optional[bytes], str], None]) -> int:
    """Records read from the local shard file of ``exp``; each problem found goes to ``problem``."""
    if not os.path.isfile(lmdb_data_file(exp.path)):
        problem(None, f"file {lmdb_data_file(exp.path)} is missing")
        return 0
    changed = _file_problem(exp) if exp.file_sha256 else None
    if exp.file_sha256 and not exp.walk:   # the file is the one published, or it is not: enough for a resume
        if changed:
            problem(None, changed)
        return 0 if changed else exp.count
    hasher = RecordHasher()
    n = 0
    key = None
    _read_ahead(lmdb_data_file(exp.path))
    try:
        with reading(exp.path) as txn:   # checks the file's structure first: no SIGBUS below
            for key, value in txn.cursor():
                expected = encode_key(exp.first_key + n)
                n += 1
                hasher.update(key, value)
                if bytes(key) != expected:
                    problem(key, f"key out of place: expected {expected.decode()} at record {n - 1}")
                    continue
                problem_text = (_check_record(value, decode) if exp.record_format == RECORD_FORMAT
                                else _check_datum(value, decode))
                if problem_text:
                    problem(key, problem_text)
    except (ShardError, OSError) as exc:   # the file is damaged, or went away
        problem(None, str(exc))
    except lmdb.Error as exc:
        after = f" after key {bytes(key).decode('ascii', 'replace')}" if key is not None else ""
        problem(None, f"LMDB error{after}: {exc}")
    else:
        if n != exp.count:
            problem(None, f"holds {n} records, expected {exp.count}")
        if hasher.hexdigest() != exp.sha256:
            problem(None, f"records checksum {hasher.hexdigest()[:16]}... differs from the recorded "
                          f"{exp.sha256[:16]}...")
    if changed:   # after what the walk found, which says where
        problem(None, changed)
    return n


def _file_problem(exp: ShardExpectation) -> Optional[str]:
    """Why the data file is not the one published, or None: its size, then its bytes' SHA-256."""
    path = lmdb_data_file(exp.path)
    try:
        size = os.path.getsize(path)
        if exp.file_bytes >= 0 and size != exp.file_bytes:
            return f"file {path} has {size} bytes, expected {exp.file_bytes}"
        digest = hash_file(path)
    except OSError as exc:
        return f"cannot read {path}: {exc}"
    if digest != exp.file_sha256:
        return (f"file checksum {digest[:16]}... differs from the recorded {exp.file_sha256[:16]}...: "
                "its bytes changed on disk")
    return None


def _check_record(value: memoryview, decode: bool) -> Optional[str]:
    """Why a record is bad, or None: its CRC, its structure and (with ``decode``) every field's pixels."""
    try:
        stored, computed = record_crc(value)
        if stored != computed:
            return f"record CRC mismatch (stored {stored:08x}, computed {computed:08x}): its bytes changed on disk"
        if decode:
            for f in unpack_record(value).fields.values():
                decode_field(f)
    except (FormatError, OSError, ValueError, SyntaxError) as exc:   # PIL raises OSError/SyntaxError
        return f"does not decode: {exc}"
    return None


def _check_datum(value: memoryview, decode: bool) -> Optional[str]:
    """Why a Datum value is bad, or None: it parses and (with ``decode``) its image decodes."""
    try:
        d = decode_datum(value)
        if decode:
            datum_array(d)
    except (FormatError, OSError, ValueError, SyntaxError) as exc:
        return f"does not decode: {exc}"
    return None


def _read_ahead(path: str) -> None:
    """Ask the kernel to read the whole file ahead. Shards are mapped with readahead off (right for random
    reads in training), so a whole-shard scan out of page cache would fault in one page at a time:
    67 MB/s measured, against 279 MB/s with readahead. Best effort: nothing happens where unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return   # check_shard's open reports it
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass   # advice only
    finally:
        os.close(fd)


def check_shards(expectations: Iterable[ShardExpectation], decode: bool = True, workers: Optional[int] = None,
                 on_done: Optional[Callable[[ShardExpectation, list[Problem]], None]] = None
                 ) -> tuple[int, list[Problem]]:
    """Check many shards on a thread pool; returns (records read, problems in shard order)."""
    expectations = list(expectations)
    workers = workers or min(8, os.cpu_count() or 1)
    records, problems = 0, []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lmdbshard-verify") as pool:
        for exp, (n, found) in zip(expectations, pool.map(lambda e: check_shard(e, decode), expectations)):
            records += n
            problems += found
            if on_done is not None:
                on_done(exp, found)
    return records, problems


def verify(root: str, decode: bool = True, workers: Optional[int] = None,
           on_done: Optional[Callable[[ShardExpectation, list[Problem]], None]] = None,
           cache_dir: Optional[str] = None) -> VerifyResult:
    """Check every shard of a finished dataset against its manifest; a dataset at a URL is downloaded
    into ``cache_dir`` (see ``ShardedDataset``) and checked there."""
    m = load_root(root)
    if not is_url(m.root):
        shards, companions = expectations(m.root, m.shards, m.record_format)
    else:
        cache = ShardCache(cache_dir)
        shards, companions = expectations(cache.remember(m.root, m.data), m.shards, m.record_format)
        entries = {e.index: e for e in m.shards}
        shards = [replace(x, remote=cached(cache, m, entries[x.index].file, x.file_bytes, x.file_sha256, x.sha256))
                  for x in shards]
        companions = [replace(x, remote=cached(cache, m, entries[x.index].label_file, x.file_bytes, x.file_sha256,
                                               x.sha256)) for x in companions]
    problems = []   # overlapping key ranges and bad counts are refused by load_manifest already
    records, found = check_shards(shards, decode, workers, on_done)
    found += check_shards(companions, decode, workers)[1]
    problems += found
    if records != m.num_samples and not found:
        problems.append(Problem(None, None, f"manifest says {m.num_samples} samples, shards hold {records}"))
    return VerifyResult(root, len(shards), records, problems)

