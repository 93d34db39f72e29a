"""Crafting real damage in a real shard file: single edits of LMDB page structures, written with
plain file I/O at the offsets LMDB 0.9's on-disk format defines (lmdbshard.read.lmdbcheck)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from lmdbshard.read.lmdbcheck import F_BIGDATA, NODE_HEADER, PAGE_HEADER, PGNO, current_meta

FAR_PAGE = 1 << 24   # a page number far past the end of any test shard


@dataclass(frozen=True)
class LeafNode:
    page: int
    offset: int          # of the node header, in the file
    key: bytes
    size: int            # the value's size
    overflow: int | None  # first overflow page, or None for a value stored in the leaf page


def _layout(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        meta = current_meta(fd)[0]
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        return meta, f.read()


def _nodes(data: bytes, psize: int, pgno: int) -> list[int]:
    """File offsets of the nodes of page ``pgno``."""
    base = pgno * psize
    lower = PAGE_HEADER.unpack_from(data, base)[3]
    n = (lower - PAGE_HEADER.size) // 2
    return [base + off for off in struct.unpack_from(f"<{n}H", data, base + PAGE_HEADER.size)]


def leaf_nodes(path: str) -> list[LeafNode]:
    """Every record's leaf node in the main database, in key order."""
    meta, data = _layout(path)
    psize, depth = meta.page_size, meta.main.depth
    found, stack = [], [(meta.main.root, 1)]
    while stack:
        pgno, level = stack.pop()
        if level < depth:
            kids = []
            for at in _nodes(data, psize, pgno):
                lo, hi, flags, _ = NODE_HEADER.unpack_from(data, at)
                kids.append((lo | hi << 16 | flags << 32, level + 1))
            stack.extend(reversed(kids))
            continue
        for at in _nodes(data, psize, pgno):
            lo, hi, flags, ksize = NODE_HEADER.unpack_from(data, at)
            key = data[at + NODE_HEADER.size: at + NODE_HEADER.size + ksize]
            overflow = PGNO.unpack_from(data, at + NODE_HEADER.size + ksize)[0] if flags & F_BIGDATA else None
            found.append(LeafNode(pgno, at, key, lo | hi << 16, overflow))
    return found


def _write(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def raise_value_size(path: str, overflow: bool) -> bytes:
    """The 2-byte fault: raise the high half of one leaf node's data size so that its value runs 1 MiB past
    the end of the file. Picks the value stored last in the file, on overflow pages or in its leaf page.
    Returns the record's key."""
    meta, data = _layout(path)
    nodes = [n for n in leaf_nodes(path) if (n.overflow is not None) == overflow]
    assert nodes, f"{path} has no {'overflow' if overflow else 'inline'} value to damage"
    node = max(nodes, key=lambda n: (n.overflow or 0, n.offset))
    if overflow:
        start = node.overflow * meta.page_size + PAGE_HEADER.size
    else:
        start = node.offset + NODE_HEADER.size + len(node.key)
    size = len(data) - start + (1 << 20)
    _write(path, node.offset + 2, struct.pack("<H", (size >> 16) + 1))
    return node.key


def move_overflow_value(path: str) -> bytes:
    """Point one value stored on overflow pages at a page far past the end of the file. Returns its key."""
    node = next((n for n in leaf_nodes(path) if n.overflow is not None), None)
    assert node is not None, f"{path} has no value on overflow pages"
    _write(path, node.offset + NODE_HEADER.size + len(node.key), PGNO.pack(FAR_PAGE))
    return node.key


def move_branch_child(path: str) -> None:
    """Point the root branch page's last child at a page far past the end of the file."""
    meta, data = _layout(path)
    assert meta.main.depth >= 2, f"{path} has no branch page"
    at = _nodes(data, meta.page_size, meta.main.root)[-1]
    ksize = NODE_HEADER.unpack_from(data, at)[3]
    _write(path, at, NODE_HEADER.pack(FAR_PAGE & 0xFFFF, FAR_PAGE >> 16 & 0xFFFF, FAR_PAGE >> 32, ksize))


def mark_overflow_page_as_leaf(path: str) -> bytes:
    """Change the flags of one value's first overflow page to a leaf page's: LMDB refuses to read that value
    (MDB_CORRUPTED), while the value's extent still lies inside the file. Returns its key."""
    meta, _ = _layout(path)
    node = next((n for n in leaf_nodes(path) if n.overflow is not None), None)
    assert node is not None, f"{path} has no value on overflow pages"
    _write(path, node.overflow * meta.page_size + 10, struct.pack("<H", 0x02))
    return node.key
