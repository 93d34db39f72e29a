"""Reruns, selective rebuilds, `lmdbshard verify`, and storage faults (map full, disk full) on real files."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap

import lmdb
import pytest

from lmdbshard import ConfigError, DiskFullError, JobFailedError, StorageConfig, convert
from lmdbshard.write.plan import make_plan
from lmdbshard.write.task import ShardItem, ShardTask, WriteOptions, write_shard
from lmdbshard.read.verify import verify

from helpers import job
from helpers import stored_items

TESTS = os.path.dirname(os.path.abspath(__file__))


def flip_byte_in_record(shard: str, nth: int = 2, into: int = 120) -> str:
    """Flip one byte ``into`` bytes deep in the ``nth`` record's value, in the file itself; returns its key."""
    env = lmdb.open(shard, subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        key, value = list(txn.cursor())[nth]
    env.close()
    with open(shard, "r+b") as f:
        data = f.read()
        at = data.index(value) + into
        assert data.count(value) == 1
        f.seek(at)
        f.write(bytes([data[at] ^ 0x5A]))
    return key.decode()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmdbshard.tools.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def copy(demo_out, tmp_path):
    """A private copy of the converted test tree: (tree, out)."""
    tree, out = demo_out
    return tree, shutil.copytree(out, str(tmp_path / "copy"))


def test_verify_passes_on_a_good_dataset(copy):
    _, out = copy
    run = cli("verify", out, "--progress", "none")
    assert run.returncode == 0, run.stderr
    assert "OK: 5 shards, 21 records" in run.stdout and "decoded every record" in run.stdout


def test_verify_names_the_shard_and_key_of_a_flipped_byte(copy):
    _, out = copy
    key = flip_byte_in_record(os.path.join(out, "shards", "shard-000002.lmdb"))
    run = cli("verify", out, "--progress", "none")
    assert run.returncode == 1
    assert f"shard 2 key {key}: record CRC mismatch" in run.stdout
    assert "shard 2: records checksum" in run.stdout
    assert "FAILED" in run.stdout and "in shard 2;" in run.stdout
    data = json.loads(cli("verify", out, "--json", "--no-decode", "--progress", "none").stdout)
    assert data["ok"] is False and data["broken_shards"] == [2]
    assert {p["key"] for p in data["problems"]} == {key, None}


def test_verify_reports_missing_and_truncated_shards(copy):
    _, out = copy
    os.remove(os.path.join(out, "shards", "shard-000001.lmdb"))
    path = os.path.join(out, "shards", "shard-000004.lmdb")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    result = verify(out)
    assert result.broken_shards == [1, 4]
    assert any("missing" in p.message for p in result.problems if p.shard == 1)


def test_rerun_rebuilds_exactly_the_shard_that_fails_its_checksum(copy, ray_local):
    tree, out = copy
    before = stored_items(out)
    flip_byte_in_record(os.path.join(out, "shards", "shard-000003.lmdb"))
    result = convert(job(tree.root, out))
    assert (result.shards_reused, result.shards_built) == (4, 1)
    assert stored_items(out) == before
    assert verify(out).ok


def test_size_check_trusts_the_reports(copy, ray_local):
    """resume_check=size skips re-hashing: fast, and a changed byte goes unnoticed (documented)."""
    tree, out = copy
    flip_byte_in_record(os.path.join(out, "shards", "shard-000003.lmdb"))
    result = convert(job(tree.root, out, resume_check="size"))
    assert (result.shards_reused, result.shards_built) == (5, 0)
    assert verify(out).broken_shards == [3]


def test_rebuild_redoes_chosen_shards_to_the_same_bytes(copy, ray_local):
    tree, out = copy
    before = stored_items(out)
    stamps = {p: os.stat(p).st_ino for p in glob.glob(os.path.join(out, "shards", "*.lmdb"))}
    result = convert(job(tree.root, out, rebuild=[1, 3]))
    assert (result.shards_reused, result.shards_built) == (3, 2)
    changed = sorted(os.path.basename(p) for p, ino in stamps.items() if os.stat(p).st_ino != ino)
    assert changed == ["shard-000001.lmdb", "shard-000003.lmdb"]
    assert stored_items(out) == before


def test_rebuild_outside_the_plan_is_refused_before_work(copy, ray_local):
    tree, out = copy
    stamp = os.path.getmtime(os.path.join(out, "manifest.json"))
    with pytest.raises(ConfigError, match=r"rebuild names shard 9, but the plan has 5 shards \(0..4\)"):
        convert(job(tree.root, out, rebuild=[9]))
    assert os.path.getmtime(os.path.join(out, "manifest.json")) == stamp


def _task(tree, index: int = 0, shard_size: int = 21):
    paths = sorted(tree.files)
    plan = make_plan(len(paths), 0, shard_size)
    sources, rounds = plan.shard_items(index)
    items = tuple(ShardItem(int(s), int(r), paths[s], tree.files[paths[s]]) for s, r in zip(sources, rounds))
    return ShardTask.of_items(index, plan.shard_range(index)[0], tree.root, items)


def test_map_full_grows_the_map_and_writes_everything(tree, tmp_path):
    task = _task(tree)
    small = WriteOptions(out=str(tmp_path / "small"), transform=job(tree.root, "x").transform,
                         storage=StorageConfig(encoding="raw"), initial_map_size=64 << 10)
    roomy = WriteOptions(out=str(tmp_path / "roomy"), transform=small.transform, storage=small.storage)
    a, b = write_shard(task, small), write_shard(task, roomy)
    assert a.entry.count == b.entry.count == 21 and a.entry.sha256 == b.entry.sha256
    assert stored_items(small.out) == stored_items(roomy.out)


# ------------------------------------------------------------------ disk full
DISK_FULL_SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys
    sys.path.insert(0, {tests!r})
    from helpers import job
    from lmdbshard import LmdbshardError, RayConfig, StorageConfig, convert
    src, out, mnt = {src!r}, {out!r}, {mnt!r}
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], check=True)
    filler = os.path.join(mnt, "filler")
    with open(filler, "wb") as f:     # leave room for a few shards, not all of them
        f.write(bytes(1024 * 1024 - 160 * 1024))
    cfg = job(src, out, storage=StorageConfig(encoding="raw"), shard_size=3, ray=RayConfig(num_cpus=1))
    result = {{}}
    try:
        convert(cfg)
        result["first"] = "completed"
    except LmdbshardError as exc:
        result["first"] = str(exc)
    result["after_failure"] = sorted(os.listdir(os.path.join(out, "shards")))
    os.remove(filler)
    result["second"] = convert(cfg).summary()
    result["shards"] = sorted(os.listdir(os.path.join(out, "shards")))
    print(json.dumps(result))
""")


def _namespace_prefix() -> list[str] | None:
    """A command prefix that gives a private mount namespace in which we may mount a tmpfs, if any."""
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        try:
            ok = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                                capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return prefix
    return None


def test_disk_full_names_the_shard_leaves_no_partial_and_a_rerun_completes(tree, tmp_path, ray_local):
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("this machine allows no private tmpfs mount (unshare -m / -rm); "
                    "test_disk_full_on_publish_is_a_clear_error covers the message with /dev/full")
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    out = str(mnt / "out")
    script = DISK_FULL_SCRIPT.format(tests=TESTS, src=tree.root, out=out, mnt=str(mnt))
    run = subprocess.run([*prefix, sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "no space left on the disk holding" in result["first"] and "needs about" in result["first"]
    assert "rerun the same command" in result["first"]
    assert not [n for n in result["after_failure"] if "partial" in n]
    assert len(result["after_failure"]) < 7
    assert "(7 built" not in result["second"] and "images written  21" in result["second"]
    assert result["shards"] == [f"shard-{k:06d}.lmdb" for k in range(7)]


def test_disk_full_on_publish_is_a_clear_error(tree, tmp_path, monkeypatch):
    """The same path on any machine: the copy into the output goes to /dev/full, which answers ENOSPC."""
    import contextlib
    import lmdbshard.write.writer as builder_module

    @contextlib.contextmanager
    def full_device(final):
        fd = os.open("/dev/full", os.O_WRONLY)
        try:
            yield fd
        finally:
            os.close(fd)

    monkeypatch.setattr(builder_module, "publishing", full_device)
    opts = WriteOptions(out=str(tmp_path / "out"), transform=job(tree.root, "x").transform,
                        storage=StorageConfig(encoding="raw"))
    with pytest.raises(DiskFullError, match=r"shard 0: no space left on the disk holding .* needs about"):
        write_shard(_task(tree), opts)
    assert not os.path.exists(os.path.join(opts.out, "shards", "shard-000000.lmdb"))


def test_after_a_shard_task_raises_the_rerun_keeps_what_was_done(tree, tmp_path, ray_local):
    reference = str(tmp_path / "reference")
    convert(job(tree.root, reference))
    broken = os.path.join(tree.root, "zebra", "img_04.jpg")
    good = open(broken, "rb").read()
    with open(broken, "wb") as f:
        f.write(b"garbage")
    out = str(tmp_path / "out")
    with pytest.raises(JobFailedError, match="zebra/img_04.jpg"):
        convert(job(tree.root, out, on_error="fail"))
    kept = len(os.listdir(os.path.join(out, "reports")))
    with open(broken, "wb") as f:   # the cause fixed, the listing unchanged
        f.write(good)
    result = convert(job(tree.root, out, on_error="fail"))
    assert (result.shards_reused, result.shards_built) == (kept, 5 - kept) and kept < 5
    assert stored_items(out) == stored_items(reference)


def test_reader_refuses_a_truncated_shard_instead_of_crashing(copy):
    from lmdbshard import ShardedDataset, ShardError
    _, out = copy
    path = os.path.join(out, "shards", "shard-000004.lmdb")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with ShardedDataset(out) as ds:
        assert ds[0] is not None   # other shards still read
        with pytest.raises(ShardError, match="truncated.*lmdbshard verify"):
            ds[len(ds) - 1]


def test_a_rerun_from_another_source_root_is_refused_before_work(copy, tmp_path, ray_local):
    from lmdbshard import PlanMismatchError
    tree, out = copy
    moved = shutil.copytree(tree.root, str(tmp_path / "elsewhere"))   # same paths and labels, other files
    with pytest.raises(PlanMismatchError, match=r"source.root changed from .* to .*elsewhere.*overwrite=true"):
        convert(job(moved, out))


# ------------------------------------------------------------------ overwrite deletes only what lmdbshard wrote
def test_overwrite_refuses_a_folder_holding_a_users_files_and_deletes_nothing(copy, ray_local):
    tree, out = copy
    users = {os.path.join(out, "shards", "wds-000000.tar"): b"a user's webdataset shard",
             os.path.join(out, "reports", "q3.txt"): b"a user's quarterly report"}
    for path, data in users.items():
        with open(path, "wb") as f:
            f.write(data)
    ours = [p for p in glob.glob(os.path.join(out, "**", "*"), recursive=True) if os.path.isfile(p)]
    stamps = {p: os.path.getmtime(p) for p in ours if p not in users}
    with pytest.raises(ConfigError, match=r"holds 'shards/wds-000000.tar', which lmdbshard did not write"):
        convert(job(tree.root, out, overwrite=True))
    os.remove(os.path.join(out, "shards", "wds-000000.tar"))
    with pytest.raises(ConfigError, match=r"holds 'reports/q3.txt', which lmdbshard did not write"):
        convert(job(tree.root, out, overwrite=True, seed=3))
    with pytest.raises(ConfigError, match=r"holds 'reports/q3.txt'"):   # a resume refuses it too
        convert(job(tree.root, out))
    assert open(os.path.join(out, "reports", "q3.txt"), "rb").read() == b"a user's quarterly report"
    assert {p: os.path.getmtime(p) for p in stamps} == stamps and len(stamps) == 3 + 5 + 5   # all untouched (plan, listing, manifest)


def test_overwrite_deletes_every_file_its_records_name_and_only_those(copy, ray_local):
    tree, out = copy                                   # 5 shards of 5
    leftover = os.path.join(out, "shards", ".shard-000001.lmdb.x1y2.partial")
    open(leftover, "wb").close()
    result = convert(job(tree.root, out, shard_size=8, overwrite=True))   # 3 shards of 8
    assert result.shards_built == 3 and result.shards_reused == 0
    assert sorted(os.listdir(os.path.join(out, "shards"))) == [f"shard-00000{k}.lmdb" for k in range(3)]
    assert sorted(os.listdir(os.path.join(out, "reports"))) == [f"shard-00000{k}.json" for k in range(3)]
    assert sorted(os.listdir(out)) == ["listing.npz", "manifest.json", "plan.json", "reports", "shards"]
    assert verify(out).ok


def test_a_shard_built_for_another_plan_is_never_reused(copy, ray_local):
    tree, out = copy
    path = os.path.join(out, "reports", "shard-000002.json")
    report = json.load(open(path))
    report["plan_sha256"] = "0" * 64                  # as a report of another plan would read
    with open(path, "w") as f:
        json.dump(report, f)
    os.remove(os.path.join(out, "manifest.json"))
    result = convert(job(tree.root, out))
    assert (result.shards_built, result.shards_reused) == (1, 4)
    assert json.load(open(path))["plan_sha256"] == json.load(open(os.path.join(out, "plan.json")))["plan_sha256"]
