"""The whole-file checksum of a shard (``file_sha256``): what it hashes, and the resume check built on it."""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import sys

import lmdb
import pytest

from helpers import job, stored_items
from lmdbshard import convert
from lmdbshard.errors import FormatError
from lmdbshard.format.filehash import BLOCK_BYTES, hash_chunks, hash_file
from lmdbshard.format.manifest import ShardEntry, load_manifest
from lmdbshard.format.schema import Fields
from lmdbshard.read.verify import verify


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _flip_value_byte(shard: str, nth: int = 1, into: int = 50) -> None:
    """Flip one byte ``into`` bytes deep in the ``nth`` record's value, in place: the file keeps its size."""
    env = lmdb.open(shard, subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        value = bytes(list(txn.cursor())[nth][1])
    env.close()
    size = os.path.getsize(shard)
    with open(shard, "r+b") as f:
        data = f.read()
        at = data.index(value) + into
        f.seek(at)
        f.write(bytes([data[at] ^ 0x5A]))
    assert os.path.getsize(shard) == size


@pytest.fixture
def copy(demo_out, tmp_path):
    tree, out = demo_out
    return tree, shutil.copytree(out, str(tmp_path / "copy"))


@pytest.mark.parametrize("size", [0, 1, 4097, BLOCK_BYTES, BLOCK_BYTES + 3])
def test_hash_file_and_hash_chunks_are_the_sha256_of_the_bytes(tmp_path, size):
    data = os.urandom(size)
    path = str(tmp_path / "f")
    with open(path, "wb") as f:
        f.write(data)
    assert hash_file(path) == hashlib.sha256(data).hexdigest()
    pieces = [data[i:i + 1000] for i in range(0, size, 1000)]
    assert hash_chunks(pieces) == hash_chunks([memoryview(data)]) == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError):
        hash_file(str(tmp_path / "missing"))


def test_every_shard_and_report_records_its_files_sha256(copy):
    _, out = copy
    m = load_manifest(out)
    for entry in m.shards:
        assert entry.file_sha256 == _sha(m.shard_path(entry))
        report = json.load(open(os.path.join(out, "reports", os.path.basename(entry.file)[:-5] + ".json")))
        assert report["file_sha256"] == entry.file_sha256


def test_a_malformed_file_sha256_is_refused_in_one_line():
    doc = {"index": 0, "file": "shards/shard-000000.lmdb", "first_key": 0, "count": 1, "bytes": 8192,
           "sha256": "0" * 64, "file_sha256": "XYZ"}
    with pytest.raises(FormatError, match="file_sha256 must be 64 lowercase hex digits"):
        ShardEntry.from_json(Fields(doc, "manifest.json"))
    del doc["file_sha256"]   # written by an earlier version: accepted, nothing to compare
    assert ShardEntry.from_json(Fields(doc, "manifest.json")).file_sha256 is None


def test_a_shard_whose_file_bytes_changed_is_rebuilt_by_its_file_checksum(copy, ray_local, caplog):
    tree, out = copy
    before = stored_items(out)
    files = sorted(glob.glob(os.path.join(out, "shards", "*.lmdb")))
    digests = [_sha(p) for p in files]
    _flip_value_byte(files[3])
    with caplog.at_level(logging.WARNING):
        result = convert(job(tree.root, out))
    assert (result.shards_reused, result.shards_built) == (4, 1)
    assert "shard 3 failed its checksum check and is rebuilt: file checksum" in caplog.text
    assert [_sha(p) for p in files] == digests   # the rebuilt file is the published one again
    assert stored_items(out) == before and verify(out).ok


def test_verify_says_the_file_changed_and_which_record(copy):
    _, out = copy
    _flip_value_byte(os.path.join(out, "shards", "shard-000002.lmdb"))
    messages = [p.message for p in verify(out).problems]
    assert any(m.startswith("file checksum") and "its bytes changed on disk" in m for m in messages)
    assert any("record CRC mismatch" in m for m in messages)


def test_reports_without_file_sha256_resume_by_their_records(copy, ray_local, caplog):
    """Reports of an earlier version (no file_sha256): the rerun walks their records, keeps the intact
    shards and rebuilds the damaged one."""
    tree, out = copy
    before = stored_items(out)
    for path in glob.glob(os.path.join(out, "reports", "*.json")):
        with open(path) as f:
            report = json.load(f)
        del report["file_sha256"]
        with open(path, "w") as f:
            json.dump(report, f)
    _flip_value_byte(os.path.join(out, "shards", "shard-000001.lmdb"))
    with caplog.at_level(logging.WARNING):
        result = convert(job(tree.root, out))
    assert (result.shards_reused, result.shards_built) == (4, 1)
    assert "shard 1 failed its checksum check and is rebuilt: record CRC mismatch" in caplog.text
    m = load_manifest(out)
    assert [e.file_sha256 is not None for e in m.shards] == [False, True, False, False, False]
    assert stored_items(out) == before and verify(out).ok


def test_the_compact_copy_hashes_exactly_the_bytes_it_writes_behind(tmp_path):
    """As ``publish`` writes it: through ``WriteBehind``, which starts the writeback every 8 MiB."""
    from lmdbshard.write.atomic import WRITE_BEHIND_BYTES, WriteBehind
    from lmdbshard.write.writer import PIPE_BYTES, compact_copy
    env = lmdb.open(str(tmp_path / "src.lmdb"), subdir=False, map_size=1 << 30, lock=False)
    with env.begin(write=True) as txn:   # several pipe blocks, with a freed page or two to compact away
        for i in range(600):
            txn.put(b"%08d" % i, os.urandom(20_000))
        txn.delete(b"%08d" % 7)
    reference = str(tmp_path / "reference")
    with open(reference, "wb") as f:
        env.copyfd(f.fileno(), compact=True)
    assert os.path.getsize(reference) > max(3 * PIPE_BYTES, WRITE_BEHIND_BYTES)
    with open(tmp_path / "copy", "wb") as f:
        behind = WriteBehind(f.fileno())
        size, sha = compact_copy(env, behind)
    assert open(tmp_path / "copy", "rb").read() == open(reference, "rb").read()
    assert (size, sha) == (os.path.getsize(reference), _sha(reference)) and behind.written == size
    assert behind.started >= WRITE_BEHIND_BYTES or not sys.platform.startswith("linux")
    with open(tmp_path / "copy", "rb") as f, pytest.raises(OSError):   # a write that fails stops the copy too
        compact_copy(env, WriteBehind(f.fileno()))
    env.close()
