"""Checking that a shard's LMDB file is structurally sound before it is mapped.

LMDB trusts the file it maps. It checks every page number against the last page the meta
page names (``MDB_PAGE_NOTFOUND``), but not the size of a value: a leaf node whose data size
runs past the end of the file (a 2-byte edit) makes ``txn.get`` touch pages beyond the file,
and the process dies with SIGBUS or SIGSEGV inside the call, before any value is returned.
Checking values after the read is therefore impossible; this module checks the file before.

``check_lmdb_file`` reads the two meta pages and every branch and leaf page of both databases
(about one page in 130 for 30 KB values; overflow pages are never read) and proves that every
byte a read can reach through them lies inside the file: page numbers below the meta's next
page, which itself lies inside the file; node offsets, keys and inline values inside their
page; every overflow value's extent ``[pgno, pgno + pages)`` inside the file. It also checks
what costs nothing more: stored page numbers, page kinds per level, no page reached twice, and
the meta's page and entry counts. Cost: about 40 ms per GB of 30 KB records, once per file
identity per process (see ``envs.py``).

The layout is LMDB 0.9's on-disk format (``MDB_DATA_VERSION`` 1) for 64-bit little-endian
builds, the one every lmdbshard shard uses (see docs/FORMAT.md, "File validity").
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from lmdbshard.errors import ShardError

PAGE_HEADER = struct.Struct("<QHHHH")   # pgno, pad, flags, lower, upper (overflow pages: lower|upper<<16 pages)
NODE_HEADER = struct.Struct("<HHHH")    # lo, hi, flags, ksize; leaf: size lo|hi<<16; branch: page lo|hi<<16|flags<<32
DB_RECORD = struct.Struct("<IHHQQQQQ")  # pad (free DB: page size), flags, depth, branch, leaf, overflow, entries, root
META_HEAD = struct.Struct("<IIQQ")      # magic, version, address, map size
META_TAIL = struct.Struct("<QQ")        # last page number, txnid
PGNO = struct.Struct("<Q")

MAGIC, DATA_VERSION = 0xBEEFC0DE, 1
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_DIRTY, P_LEAF2 = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
PAGE_KINDS = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_DIRTY | P_LEAF2
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
MDB_DUPSORT = 0x04
NO_ROOT = (1 << 64) - 1
FREE_DB, MAIN_DB = 0, 1
MAX_DEPTH = 32   # LMDB's cursor stack
LEAF_BATCH = 4096   # leaf pages checked together: 16 MiB of 4 KiB pages


@dataclass(frozen=True)
class Database:
    """One ``MDB_db`` record of a meta page."""

    flags: int
    depth: int
    branch_pages: int
    leaf_pages: int
    overflow_pages: int
    entries: int
    root: int


@dataclass(frozen=True)
class Meta:
    """The fields of a meta page that a reader uses."""

    page_size: int
    map_size: int
    last_pgno: int
    txnid: int
    free: Database
    main: Database


def read_meta(fd: int, offset: int) -> Meta | None:
    """The meta page at ``offset`` of an open file, or None when it is not an LMDB 0.9 meta page."""
    buf = os.pread(fd, PAGE_HEADER.size + META_HEAD.size + 2 * DB_RECORD.size + META_TAIL.size, offset)
    if len(buf) < PAGE_HEADER.size + META_HEAD.size + 2 * DB_RECORD.size + META_TAIL.size:
        return None
    flags = PAGE_HEADER.unpack_from(buf)[2]
    magic, version, _address, map_size = META_HEAD.unpack_from(buf, PAGE_HEADER.size)
    if magic != MAGIC or version != DATA_VERSION or not flags & P_META:
        return None
    at = PAGE_HEADER.size + META_HEAD.size
    (page_size, *free), (_, *main) = (DB_RECORD.unpack_from(buf, at + i * DB_RECORD.size) for i in range(2))
    last_pgno, txnid = META_TAIL.unpack_from(buf, at + 2 * DB_RECORD.size)
    return Meta(page_size, map_size, last_pgno, txnid, Database(*free), Database(*main))


def current_meta(fd: int) -> tuple[Meta, Meta] | None:
    """(meta LMDB reads, meta 0) of an open file, or None when either meta page is not one. LMDB refuses
    a file unless both are meta pages, and then uses the one with the higher txnid (meta 0 on a tie)."""
    first = read_meta(fd, 0)
    if first is None or not _valid_page_size(first.page_size):
        return None
    second = read_meta(fd, first.page_size)
    if second is None:
        return None
    return (second if second.txnid > first.txnid else first), first


def check_lmdb_file(path: str) -> os.stat_result:
    """Raise ``ShardError`` naming ``path`` unless reading it with LMDB cannot touch bytes outside the file.
    Returns the ``fstat`` of the file that was checked."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        _Walk(path, fd, st.st_size).run()
        return st
    finally:
        os.close(fd)


def _valid_page_size(size: int) -> bool:
    return 512 <= size <= 65536 and size & (size - 1) == 0


class _Walk:
    def __init__(self, path: str, fd: int, file_size: int):
        self.path, self.fd, self.file_size = path, fd, file_size
        self.page_size = self.next_pgno = 0
        self.seen = bytearray()

    def fail(self, detail: str) -> NoReturn:
        raise ShardError(f"{self.path} is damaged: {detail}; check the dataset with lmdbshard verify and rebuild "
                         "the shard by rerunning its conversion command")

    def run(self) -> None:
        if self.file_size < 2 * 512:
            self.fail(f"{self.file_size} bytes is too short for an LMDB file")
        metas = current_meta(self.fd)
        if metas is None:
            self.fail("its first two pages are not LMDB 0.9 meta pages (64-bit, little-endian)")
        meta = metas[0]
        self.page_size, self.next_pgno = meta.page_size, meta.last_pgno + 1
        need = self.next_pgno * self.page_size
        if need > self.file_size:
            raise ShardError(f"{self.path} is truncated ({self.file_size} bytes, its LMDB pages need {need}); "
                             "check the dataset with lmdbshard verify and rebuild the shard by rerunning its "
                             "conversion command")
        self.seen = bytearray(self.next_pgno)
        self.walk("free", meta.free)
        self.walk("main", meta.main)

    def page(self, pgno: int, db: str) -> tuple[bytes, int, int, int]:
        if self.seen[pgno]:
            self.fail(f"{db} DB page {pgno} is reached twice")
        self.seen[pgno] = 1
        buf = os.pread(self.fd, self.page_size, pgno * self.page_size)
        stored, _, flags, lower, upper = PAGE_HEADER.unpack_from(buf)
        if stored != pgno:
            self.fail(f"page {pgno} says it is page {stored}")
        if not PAGE_HEADER.size <= lower <= upper <= self.page_size or lower & 1:
            self.fail(f"page {pgno} has lower/upper bounds {lower}/{upper} outside its {self.page_size} bytes")
        return buf, flags & PAGE_KINDS, lower, upper

    def walk(self, db: str, rec: Database) -> None:
        """Every branch and leaf page of one database, depth first; compares the counts with the meta's.
        Branch pages are checked one by one, leaf pages in batches (``LeafBatch``)."""
        if rec.root == NO_ROOT:
            if rec.entries or rec.branch_pages or rec.leaf_pages or rec.overflow_pages:
                self.fail(f"{db} DB has no root page but counts {rec.entries} entries")
            return
        if rec.flags & MDB_DUPSORT or not 1 <= rec.depth <= MAX_DEPTH:
            self.fail(f"{db} DB has flags {rec.flags:#x} and depth {rec.depth}, which lmdbshard never writes")
        branches = leaves = overflow = entries = 0
        pending: list[int] = []
        stack = [(rec.root, 1)]
        while stack or pending:
            if pending and (not stack or len(pending) >= LEAF_BATCH):
                pages, nodes = self.leaf_batch(db, pending)
                leaves, overflow, entries = leaves + len(pending), overflow + pages, entries + nodes
                pending = []
                continue
            pgno, level = stack.pop()
            if level == rec.depth:
                pending.append(pgno)
                continue
            buf, offsets, upper = self.checked_page(db, pgno, P_BRANCH)
            branches += 1
            stack.extend(reversed(self.children(pgno, buf, offsets, upper, level)))
        counts = (branches, leaves, overflow, entries)
        expected = (rec.branch_pages, rec.leaf_pages, rec.overflow_pages, rec.entries)
        if counts != expected:
            self.fail(f"{db} DB has {counts} (branch, leaf, overflow pages, entries), its meta says {expected}")

    def checked_page(self, db: str, pgno: int, kind: int) -> tuple[bytes, tuple, int]:
        """A page of the given kind, read and checked: (its bytes, its node offsets, its upper bound)."""
        if not 2 <= pgno < self.next_pgno:
            self.fail(f"{db} DB page number {pgno} is outside the file's pages 2..{self.next_pgno - 1}")
        buf, found, lower, upper = self.page(pgno, db)
        if found != kind:
            self.fail(f"page {pgno} has flags {found:#x}, but holds {'leaf' if kind == P_LEAF else 'branch'} nodes "
                      "by its place in the tree")
        n = (lower - PAGE_HEADER.size) >> 1
        if n == 0:
            self.fail(f"page {pgno} has no nodes")
        return buf, struct.unpack_from(f"<{n}H", buf, PAGE_HEADER.size), upper

    def leaf_batch(self, db: str, pgnos: list[int]) -> tuple[int, int]:
        """Checks leaf pages; returns (overflow pages their values use, nodes). Vectorised; when a page
        fails, the pages are checked again one by one, which names the page and node."""
        batch = LeafBatch(self, pgnos)
        if batch.ok:
            return batch.overflow_pages, batch.nodes
        pages = nodes = 0
        for pgno in pgnos:
            buf, offsets, upper = self.checked_page(db, pgno, P_LEAF)
            pages, nodes = pages + self.leaf(pgno, buf, offsets, upper), nodes + len(offsets)
        return pages, nodes

    def node(self, pgno: int, i: int, buf: bytes, off: int, upper: int) -> tuple[int, int, int, int]:
        if off < upper or off + NODE_HEADER.size > self.page_size or off & 1:
            self.fail(f"page {pgno} node {i} starts at byte {off}, outside {upper}..{self.page_size}")
        lo, hi, flags, ksize = NODE_HEADER.unpack_from(buf, off)
        if off + NODE_HEADER.size + ksize > self.page_size:
            self.fail(f"page {pgno} node {i} has a key of {ksize} bytes that runs past its page")
        return lo, hi, flags, off + NODE_HEADER.size + ksize

    def children(self, pgno: int, buf: bytes, offsets: tuple, upper: int, level: int) -> list[tuple[int, int]]:
        kids = []
        for i, off in enumerate(offsets):
            lo, hi, flags, _ = self.node(pgno, i, buf, off, upper)
            child = lo | hi << 16 | flags << 32
            if not 2 <= child < self.next_pgno:
                self.fail(f"branch page {pgno} node {i} points to page {child}, outside the file's pages "
                          f"2..{self.next_pgno - 1}")
            kids.append((child, level + 1))
        return kids

    def leaf(self, pgno: int, buf: bytes, offsets: tuple, upper: int) -> int:
        """Checks one leaf page's nodes; returns how many overflow pages its values use."""
        psize, next_pgno, header = self.page_size, self.next_pgno, PAGE_HEADER.size
        pages = 0
        for i, off in enumerate(offsets):
            lo, hi, flags, data = self.node(pgno, i, buf, off, upper)
            size = lo | hi << 16
            if flags & (F_SUBDATA | F_DUPDATA):
                self.fail(f"leaf page {pgno} node {i} has flags {flags:#x}, which lmdbshard never writes")
            if not flags & F_BIGDATA:
                if data + size > psize:
                    self.fail(f"leaf page {pgno} node {i}: its value of {size} bytes runs past its page")
                continue
            if data + PGNO.size > psize:
                self.fail(f"leaf page {pgno} node {i}: its overflow page number runs past its page")
            first = PGNO.unpack_from(buf, data)[0]
            span = (header - 1 + size) // psize + 1   # LMDB's OVPAGES
            if first < 2 or first + span > next_pgno:
                self.fail(f"leaf page {pgno} node {i}: its value of {size} bytes at page {first} runs past the "
                          f"file's last page {next_pgno - 1}")
            pages += span
        return pages


class LeafBatch:
    """The checks of ``_Walk.leaf`` and ``_Walk.checked_page`` on many leaf pages at once, with numpy: about
    50 ns per node instead of 1.5 us, which matters for small records (a GB of 1 KB records has a million).
    ``ok`` is False when any page fails (or was reached before); the caller then finds which."""

    def __init__(self, walk: _Walk, pgnos: list[int]):
        self.ok, self.overflow_pages, self.nodes = False, 0, 0
        pg = np.array(pgnos, dtype=np.int64)
        seen = np.frombuffer(walk.seen, np.uint8)
        if not (((pg >= 2) & (pg < walk.next_pgno)).all() and not seen[pg].any() and np.unique(pg).size == pg.size):
            return
        if self.check(self.read(walk.fd, pg, walk.page_size), pg, walk.page_size, walk.next_pgno):
            seen[pg] = 1
            self.ok = True

    @staticmethod
    def read(fd: int, pg: np.ndarray, psize: int) -> np.ndarray:
        """The pages, one row each, read in runs of consecutive page numbers."""
        cuts = np.flatnonzero(np.diff(pg) != 1) + 1
        runs = zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [pg.size])))
        data = b"".join(os.pread(fd, int(stop - start) * psize, int(pg[start]) * psize) for start, stop in runs)
        return np.frombuffer(data, np.uint8).reshape(pg.size, psize)

    def check(self, pages: np.ndarray, pg: np.ndarray, psize: int, next_pgno: int) -> bool:
        words = pages.view("<u2")
        stored = np.ascontiguousarray(pages[:, :8]).view("<u8").ravel()
        lower, upper = words[:, 6].astype(np.int64), words[:, 7].astype(np.int64)
        if not ((stored == pg).all() and ((words[:, 5] & PAGE_KINDS) == P_LEAF).all()
                and (PAGE_HEADER.size < lower).all() and (lower <= upper).all() and (upper <= psize).all()
                and not (lower & 1).any()):
            return False
        count = (lower - PAGE_HEADER.size) >> 1
        page = np.repeat(np.arange(pg.size), count)
        slot = np.arange(page.size) - np.repeat(np.cumsum(count) - count, count)
        off = words[page, PAGE_HEADER.size // 2 + slot].astype(np.int64)
        if not ((off >= upper[page]).all() and (off + NODE_HEADER.size <= psize).all() and not (off & 1).any()):
            return False
        half = off >> 1
        flags, ksize = words[page, half + 2], words[page, half + 3].astype(np.int64)
        size = words[page, half].astype(np.int64) | words[page, half + 1].astype(np.int64) << 16
        data = off + NODE_HEADER.size + ksize
        big = (flags & F_BIGDATA) != 0
        if not ((data <= psize).all() and not (flags & (F_SUBDATA | F_DUPDATA)).any()
                and (data[~big] + size[~big] <= psize).all() and (data[big] + PGNO.size <= psize).all()):
            return False
        first = pages[page[big][:, None], data[big][:, None] + np.arange(PGNO.size)].view("<u8").ravel()
        span = ((PAGE_HEADER.size - 1 + size[big]) // psize + 1).astype(np.uint64)
        if not ((first >= 2) & (first < next_pgno) & (first + span <= next_pgno)).all():
            return False
        self.overflow_pages, self.nodes = int(span.sum()), int(page.size)
        return True
