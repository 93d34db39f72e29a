"""Damaged shard files are errors, never crashes; identical jobs publish identical bytes; readers
read the files that are there. Every fault is a real edit of a real converted shard."""

from __future__ import annotations

import glob
import logging
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import lmdbfaults
from helpers import job, make_tree

from lmdbshard import RayConfig, ShardedDataset, ShardError, StorageConfig, TransformConfig, convert, verify
from lmdbshard.read.envs import registry
from lmdbshard.read.lmdbcheck import check_lmdb_file, current_meta
from lmdbshard.write.writer import INITIAL_MAP, ShardOutput


def raw_job(src: str, out: str, **kw):
    """Raw 18-pixel records: some on overflow pages and some in their leaf page, two leaf pages under a
    branch page per shard of 5: every structure a fault can hit."""
    return job(src, out, storage=StorageConfig(encoding="raw"), transform=TransformConfig(resize_shorter=18), **kw)


@pytest.fixture(scope="module")
def raw_out(ray_local, tmp_path_factory):
    base = tmp_path_factory.mktemp("integrity")
    tree = make_tree(str(base / "src"))
    convert(raw_job(tree.root, str(base / "out")))
    return tree, str(base / "out")


@pytest.fixture
def raw_copy(raw_out, tmp_path):
    tree, out = raw_out
    return tree, shutil.copytree(out, str(tmp_path / "copy"))


def shard(out: str, k: int) -> str:
    return os.path.join(out, "shards", f"shard-{k:06d}.lmdb")


def digests(out: str) -> dict[str, str]:
    """``sha256sum shards/*``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "shards", "*"))):
        with open(path, "rb") as f:
            found[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
    return found


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmdbshard.tools.cli", *args], capture_output=True, text=True,
                          timeout=120)


# ------------------------------------------------------------------ a damaged shard is an error
FAULTS = {   # shard -> (the edit, what the check says)
    0: (lambda p: lmdbfaults.raise_value_size(p, overflow=True), "runs past the file's last page"),
    1: (lmdbfaults.move_overflow_value, "at page 16777216 runs past the file's last page"),
    2: (lmdbfaults.move_branch_child, "points to page 16777216"),
    3: (lambda p: lmdbfaults.raise_value_size(p, overflow=False), "runs past its page"),
}


def test_damaged_shards_are_named_refused_and_rebuilt(raw_copy, ray_local, caplog):
    """Each edit used to kill verify, the reader and the resume check (SIGBUS for a value size past the
    file's end); now verify names the shards and exits 1, the reader raises ShardError naming the file,
    and a rerun rebuilds exactly those shards, to the bytes they had."""
    tree, out = raw_copy
    before = digests(out)
    for k, (damage, _) in FAULTS.items():
        damage(shard(out, k))
    assert [name for name in before if digests(out)[name] != before[name]] == [
        f"shard-{k:06d}.lmdb" for k in FAULTS]

    run = cli("verify", out, "--progress", "none")
    assert run.returncode == 1, run.stderr
    assert "FAILED" in run.stdout and "in shards 0, 1, 2, 3;" in run.stdout
    for k, (_, says) in FAULTS.items():
        assert f"shard {k}: {shard(out, k)} is damaged: " in run.stdout and says in run.stdout

    with ShardedDataset(out) as ds:
        assert ds[len(ds) - 1][0].shape[0] == 18   # shard 4 is intact and reads
        for k in FAULTS:
            start = sum(ds.shard_sizes[:k])
            with pytest.raises(ShardError, match=rf"^{shard(out, k)} is damaged: .*rebuild the shard"):
                ds[start]
            with pytest.raises(ShardError, match=rf"^{shard(out, k)} is damaged"):
                next(ds.read_shard(k))

    with caplog.at_level(logging.WARNING):
        result = convert(raw_job(tree.root, out))
    assert (result.shards_reused, result.shards_built) == (1, 4)
    for k in FAULTS:
        assert f"shard {k} failed its checksum check and is rebuilt: file checksum" in caplog.text
    assert digests(out) == before
    assert verify(out).ok


def test_lmdb_errors_while_reading_name_the_file(raw_copy):
    """Damage the structural check lets through (it reads no overflow page) but LMDB refuses: the reader
    raises ShardError naming the file, not a bare lmdb error, and verify reports it."""
    _, out = raw_copy
    key = lmdbfaults.mark_overflow_page_as_leaf(shard(out, 1))
    check_lmdb_file(shard(out, 1))
    with ShardedDataset(out) as ds:
        index = int(key)   # no sample was skipped: keys are indices
        assert ds.locate(index)[0] == 1
        with pytest.raises(ShardError, match=rf"^{shard(out, 1)}: LMDB cannot read it \(.*CORRUPTED"):
            ds[index]
        with pytest.raises(ShardError, match=rf"^{shard(out, 1)}: LMDB cannot read it"):
            list(ds.read_shard(1))
        assert np.array_equal(ds[0][0], ds[0][0])   # the other shards still read
    result = verify(out)
    assert result.broken_shards == [1] and "CORRUPTED" in str(result.problems[0])


def test_the_check_reads_what_a_converted_shard_holds(raw_out):
    """The check passes every shard the converter wrote, and its reading of the meta page matches LMDB's."""
    _, out = raw_out
    for k in range(5):
        st = check_lmdb_file(shard(out, k))
        fd = os.open(shard(out, k), os.O_RDONLY)
        try:
            meta = current_meta(fd)[0]
        finally:
            os.close(fd)
        assert (meta.last_pgno + 1) * meta.page_size == st.st_size   # a compact copy: no free pages
        assert meta.map_size <= INITIAL_MAP and meta.main.entries == (5 if k < 4 else 1)


# ------------------------------------------------------------------ reproducible bytes
def test_two_clean_runs_and_a_resumed_run_publish_identical_files(demo_out, tmp_path, ray_local):
    """``sha256sum shards/*`` is the same for a clean run, another clean run (other scheduling) and a rerun
    that rebuilds two shards and builds one an interrupted run never finished."""
    tree, first = demo_out
    second = str(tmp_path / "second")
    convert(job(tree.root, second, ray=RayConfig(max_in_flight=1)))
    resumed = shutil.copytree(first, str(tmp_path / "resumed"))
    os.remove(shard(resumed, 2))
    os.remove(os.path.join(resumed, "reports", "shard-000002.json"))
    os.remove(os.path.join(resumed, "manifest.json"))
    result = convert(job(tree.root, resumed, rebuild=[1, 3]))
    assert (result.shards_reused, result.shards_built) == (2, 3)
    assert digests(first) == digests(second) == digests(resumed)
    assert len(digests(first)) == 5


def test_published_files_hold_no_worker_memory(tmp_path):
    """Freed heap memory full of a marker is what LMDB's page buffers get next; none of it may reach the
    published file (with meminit=False, 36,409 markers did)."""
    os.makedirs(tmp_path / "scratch")
    marker = b"HEAP-MARKER-7f3a"
    junk = [marker * (4096 // len(marker)) * k for k in (1, 1, 2, 3, 8) for _ in range(200)]
    del junk[::2]   # every other block freed: they cannot merge back into the top of the heap
    output = ShardOutput(0, 0, 400, INITIAL_MAP, str(tmp_path / "scratch"))
    seconds = {"write": 0.0}
    for i in range(400):
        output.add(bytes([i % 251]) * (100 + 37 * i % 9000), None, seconds)
    entry = output.publish(str(tmp_path / "out"))
    output.close()
    with open(tmp_path / "out" / entry.file, "rb") as f:
        data = f.read()
    assert len(data) == entry.bytes and marker[:8] not in data
    assert entry.file_sha256 == hashlib.sha256(data).hexdigest()
    del junk


def test_the_map_reservation_leaves_no_trace_in_the_file(tmp_path):
    """The meta page records the pages in use, not the map the builder reserved: two reservations, one file
    (a C reader that maps the size the meta page names maps the file's size)."""
    files = []
    for initial in (256 << 20, INITIAL_MAP):
        scratch = tmp_path / str(initial)
        os.makedirs(scratch)
        output = ShardOutput(0, 0, 3000, initial, str(scratch))
        for i in range(3000):
            output.add(i.to_bytes(4, "little") * (50 + i % 700), None, {"write": 0.0})
        entry = output.publish(str(scratch / "out"))
        output.close()
        files.append(str(scratch / "out" / entry.file))
    with open(files[0], "rb") as a, open(files[1], "rb") as b:
        assert a.read() == b.read()
    fd = os.open(files[0], os.O_RDONLY)
    try:
        meta = current_meta(fd)[0]
    finally:
        os.close(fd)
    assert os.path.getsize(files[0]) <= meta.map_size < os.path.getsize(files[0]) + (1 << 20)


# ------------------------------------------------------------------ readers see the files that are there
def test_a_dataset_opened_after_an_overwrite_reads_the_new_files(raw_copy, ray_local):
    """A reader opened before ``overwrite=true`` keeps reading the old files it opened, consistently; one
    opened after reads the new files; verify, called meanwhile in the same process, passes."""
    tree, out = raw_copy
    old = ShardedDataset(out)
    before = [(s.copy(), label) for s, label in old]   # opens every shard
    convert(raw_job(tree.root, out, seed=7, overwrite=True))
    new = ShardedDataset(out)
    after = [(s.copy(), label) for s, label in new]
    assert len(before) == len(after) == 21
    changed = [i for i in range(21) if not np.array_equal(before[i][0], after[i][0])]
    assert len(changed) > 15   # another seed, another order
    assert all(np.array_equal(old[i][0], before[i][0]) for i in range(21))   # the old reader: the old files
    with ShardedDataset(out) as fresh:
        assert all(np.array_equal(fresh[i][0], after[i][0]) for i in range(21))
    assert verify(out).ok
    inodes = {os.stat(shard(out, k)).st_ino for k in range(5)}
    envs = registry()
    assert {e.identity.inode for e in envs.open.values() if e.path.startswith(out)} == inodes
    old.close()
    new.close()
    assert not [e for e in envs.held.values() if e.path.startswith(out)]   # every environment closed


def test_a_dataset_opened_after_a_rebuild_maps_the_new_file(raw_copy, ray_local):
    tree, out = raw_copy
    old = ShardedDataset(out)
    first = old[7][0].copy()   # shard 1
    inode = os.stat(shard(out, 1)).st_ino
    convert(raw_job(tree.root, out, rebuild=[1]))
    assert os.stat(shard(out, 1)).st_ino != inode
    with ShardedDataset(out) as new:
        assert np.array_equal(new[7][0], first)
        assert registry().open[shard(out, 1)].identity.inode == os.stat(shard(out, 1)).st_ino
    assert np.array_equal(old[7][0], first)
    old.close()
