"""Converting from and into an object store (a real S3 server on localhost, moto's server mode).

The output on ``s3://`` must be the output of a local conversion of the same tree: the same shard
entries and byte-identical shard files. Resume, the lock and bad input behave as locally.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from lmdbshard import SourceConfig, convert
from lmdbshard.errors import ConfigError
from lmdbshard.storage import objects
from lmdbshard.storage.urls import join
from lmdbshard.write.plan import make_plan
from lmdbshard.write.resume import OutputDir
from lmdbshard.write.sources import list_source
from lmdbshard.write.store import ObjectStore
from lmdbshard.write.writer import scratch_owner
from lmdbshard.write.lock import OutputLock, OutputLockedError

from helpers import job, make_tree
from faults import DRIVER_ARGS, REPO, env_with_tests, wait_for
from s3proxy import HoldingProxy


def upload_tree(root: str, url: str) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            objects.upload(path, join(url, os.path.relpath(path, root).replace(os.sep, "/")))


def manifest(out: str) -> dict:
    if out.startswith("s3://"):
        return json.loads(objects.read_bytes(join(out, "manifest.json")))
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def shard_entries(doc: dict) -> list[dict]:
    return [{k: v for k, v in s.items()} for s in doc["shards"]]


@pytest.fixture
def s3_tree(bucket, demo_out) -> str:   # demo_out: conftest's local conversion of the same tree
    tree, _ = demo_out
    upload_tree(tree.root, join(bucket, "src"))
    return join(bucket, "src")


def test_s3_to_s3_equals_a_local_conversion_byte_for_byte(s3_tree, bucket, demo_out, tmp_path):
    tree, local = demo_out
    out = join(bucket, "out")
    result = convert(job(s3_tree, out))
    assert (result.images_written, result.shards_built) == (21, 5)
    remote, here = manifest(out), manifest(local)
    assert shard_entries(remote) == shard_entries(here)
    assert remote["classes"] == here["classes"] and remote["errors"] == here["errors"] == []
    for entry in remote["shards"]:
        copy = str(tmp_path / f"{entry['index']}.lmdb")
        objects.download(join(out, entry["file"]), copy)
        with open(copy, "rb") as a, open(os.path.join(local, entry["file"]), "rb") as b:
            assert a.read() == b.read(), entry["file"]
    assert not lock_objects(out)
    assert sorted(n for n, _ in objects.walk(join(out, "reports"))) == [f"shard-{k:06d}.json" for k in range(5)]


def test_a_deleted_shard_object_is_rebuilt_alone(s3_tree, bucket):
    out = join(bucket, "out")
    convert(job(s3_tree, out))
    before = {k: objects.read_bytes(join(out, f"reports/shard-{k:06d}.json")) for k in range(5)}
    shards = {k: objects.read_bytes(join(out, f"shards/shard-{k:06d}.lmdb")) for k in range(5)}
    objects.remove(join(out, "shards/shard-000002.lmdb"))
    result = convert(job(s3_tree, out))
    assert (result.shards_built, result.shards_reused) == (1, 4)
    after = {k: objects.read_bytes(join(out, f"reports/shard-{k:06d}.json")) for k in range(5)}
    assert {k for k in range(5) if after[k] != before[k]} <= {2}   # only its report may be rewritten
    assert {k: objects.read_bytes(join(out, f"shards/shard-{k:06d}.lmdb")) for k in range(5)} == shards


def lock_objects(out: str) -> list[str]:
    return [name for name, _, _ in objects.listdir(out) if name.startswith("convert.lock")]


def test_a_second_driver_is_refused_by_the_lock_object(bucket):
    out = join(bucket, "locked")
    with OutputLock(out) as held:
        assert lock_objects(out) == [f"convert.lock.{held.holder.token}"]
        with pytest.raises(OutputLockedError, match="being written by another conversion"):
            OutputLock(out).acquire()
        assert lock_objects(out) == [f"convert.lock.{held.holder.token}"]   # the refused driver left nothing
    assert not lock_objects(out)
    with OutputLock(out) as lock:   # released: the next driver gets it
        assert lock.holder is not None


def test_of_two_drivers_writing_the_lock_object_at_once_one_proceeds(bucket):
    out = join(bucket, "race")
    outcomes: list = []

    def take() -> None:
        lock = OutputLock(out)
        try:
            lock.acquire()
            outcomes.append("held")
        except OutputLockedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["held", "refused", "refused", "refused"]
    assert len(lock_objects(out)) == 1


def test_a_bad_url_scheme_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="does not read"):
        convert(job(str(tmp_path), "http://example.com/out"))
    with pytest.raises(ConfigError, match="source.root 'ftp://host/x'.*does not read"):
        convert(job("ftp://host/x", str(tmp_path / "out")))
    with pytest.raises(ConfigError, match="source.list_file 's3://b/list.txt' is a URL; it must be a local file"):
        convert(dataclasses.replace(job("s3://b/x", str(tmp_path / "out")), source=SourceConfig(
            kind="filelist", root="s3://b/x", list_file="s3://b/list.txt")))
    assert not os.path.exists(tmp_path / "out")


def test_caffe_datum_into_an_object_store_is_refused(bucket, tmp_path):
    from lmdbshard import StorageConfig
    with pytest.raises(ConfigError, match="caffe_datum .*object store"):
        convert(job(str(tmp_path), join(bucket, "out"), storage=StorageConfig(encoding="caffe_datum")))


def test_a_missing_source_object_is_a_recorded_sample_error(s3_tree, bucket, demo_out, tmp_path):
    tree, _ = demo_out
    list_file = tmp_path / "list.txt"   # a file list may name objects that are not there
    list_file.write_text("".join(f"{rel} {label}\n" for rel, label in sorted(tree.files.items()))
                         + "cat/missing.jpg 0\n")
    cfg = job(s3_tree, join(bucket, "out"), max_error_rate=0.5)
    cfg.source = SourceConfig(kind="filelist", root=s3_tree, list_file=str(list_file))
    result = convert(cfg)
    assert (result.images_written, result.images_skipped) == (21, 1)
    (error,) = manifest(join(bucket, "out"))["errors"]
    assert error["path"] == "cat/missing.jpg" and "no object at" in error["reason"]


def test_a_worker_killed_mid_upload_leaves_no_shard_counted_complete(s3_tree, bucket, demo_out, tmp_path):
    _, local = demo_out
    out, scratch = join(bucket, "out"), str(tmp_path / "scratch")
    key = f"{out[len('s3://'):]}/shards/shard-000002.lmdb".encode()
    proxy = HoldingProxy(("127.0.0.1", int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])), key)
    driver = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "jobs", "convert.py"), "--config-name", "base", f"source.root={s3_tree}",
         f"out={out}", f"scratch_dir={scratch}", "ray.max_retries=0", f"hydra.run.dir={tmp_path / 'hydra'}",
         *DRIVER_ARGS], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**env_with_tests(), "AWS_ENDPOINT_URL": proxy.endpoint})
    try:
        wait_for(proxy.holding.is_set, timeout=240, what="the upload of shard 2 to start")
        # the shard's scratch folder is named after the process building it (the held upload's sender)
        (folder,) = glob.glob(os.path.join(scratch, "lmdbshard-*-000002-*"))
        _, victim = scratch_owner(os.path.basename(folder))
        os.kill(victim, signal.SIGKILL)
        wait_for(proxy.dropped.is_set, what="the cut upload to be dropped")
        log, _ = driver.communicate(timeout=240)
    finally:
        proxy.close()
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode != 0 and "shard 2" in log, log[-2000:]
    assert not objects.exists(join(out, "reports/shard-000002.json"))   # no report: not complete
    assert not objects.exists(join(out, "manifest.json"))
    result = convert(job(s3_tree, out))
    assert result.shards_built >= 1 and result.shards_built + result.shards_reused == 5
    assert shard_entries(manifest(out)) == shard_entries(manifest(local))
    for k in range(5):
        with open(os.path.join(local, f"shards/shard-{k:06d}.lmdb"), "rb") as f:
            assert objects.read_bytes(join(out, f"shards/shard-{k:06d}.lmdb")) == f.read()


def test_file_sources_on_an_object_store_list_as_the_same_tree_does_locally(bucket, tmp_path):
    from lmdbshard.write.sources import list_source
    root = tmp_path / "data"
    make_tree(str(root / "folder"), per_class=3)
    for rel in ("cat/a b/x.jpg", "cat/a/y.jpg", "cat/a.jpg", "cat/a-1/z.JPG", "dog/deep/er/w.png", "seg/images/s1.jpg",
                "seg/images/s0.jpg", "seg/images/sub/s2.jpg", "seg/images/orphan.jpg", "seg/masks/s0.png",
                "seg/masks/s1.png", "seg/masks/sub/s2.png", "val/ILSVRC2012_val_00000002.JPEG",
                "val/ILSVRC2012_val_00000001.JPEG", "val/notes.txt"):
        path = root / ("folder/" + rel if rel.count("/") and rel.split("/")[0] in ("cat", "dog") else rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded by a listing")
    (root / "loc.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n2 1\n"
                                  "ILSVRC2012_val_00000002,n1 1\n")
    upload_tree(str(root), join(bucket, "data"))
    configs = [SourceConfig(root="folder"), SourceConfig(kind="paired", root="seg"),
               SourceConfig(kind="imagenet_val", root="val", labels_file=str(root / "loc.csv"))]
    for cfg in configs:
        here = list_source(SourceConfig(**{**cfg.__dict__, "root": str(root / cfg.root)}))
        there = list_source(SourceConfig(**{**cfg.__dict__, "root": join(bucket, "data", cfg.root)}))
        assert list(there.paths) == list(here.paths) and list(there.labels) == list(here.labels), cfg.kind
        assert there.classes == here.classes and there.warnings == here.warnings
        assert (there.mask_paths is None) == (here.mask_paths is None)
        assert here.mask_paths is None or list(there.mask_paths) == list(here.mask_paths)
        assert there.source_root() == join(bucket, "data", cfg.root)


def test_overwrite_and_the_owned_objects_rule_on_an_object_store(s3_tree, bucket):
    out = join(bucket, "out")
    convert(job(s3_tree, out, shard_size=7))
    objects.write_bytes(join(out, "shards", "shard-000099.partial"), b"left by a killed upload")
    result = convert(job(s3_tree, out, shard_size=5, overwrite=True))   # a new plan: 5 shards, not 3
    assert result.shards_built == 5
    assert sorted(n for n, _ in objects.walk(join(out, "shards"))) == [f"shard-{k:06d}.lmdb" for k in range(5)]
    objects.write_bytes(join(out, "mine.txt"), b"a user's file")
    with pytest.raises(ConfigError, match="holds 'mine.txt', which lmdbshard did not write"):
        convert(job(s3_tree, out, overwrite=True))
    assert objects.exists(join(out, "manifest.json")) and objects.exists(join(out, "mine.txt"))


def test_a_dead_drivers_lock_object_from_this_host_is_taken_over(bucket):
    import socket
    out = join(bucket, "stale")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()   # a pid that no longer runs
    objects.write_bytes(join(out, "convert.lock"), json.dumps(
        {"host": socket.gethostname(), "pid": dead.pid, "started": 1.0, "pid_start": None, "token": "old"}).encode())
    with OutputLock(out) as lock:   # the lock object of an earlier version, then a claim
        assert lock_objects(out) == [f"convert.lock.{lock.holder.token}"]
        assert json.loads(objects.read_bytes(lock.path))["token"] == lock.holder.token
    objects.write_bytes(join(out, "convert.lock.c0ffee"), json.dumps(
        {"host": "another-host", "pid": 1, "started": 1.0, "pid_start": None, "token": "c0ffee"}).encode())
    with pytest.raises(OutputLockedError, match="locked by pid 1 on host another-host.*delete .*convert.lock.c0ffee"):
        OutputLock(out).acquire()
    assert lock_objects(out) == ["convert.lock.c0ffee"]


def test_on_a_cluster_the_resume_check_of_shard_objects_runs_as_ray_tasks(s3_tree, bucket, ray_local):
    from lmdbshard.write.plan import make_plan
    from lmdbshard.write.resume import OutputDir
    from lmdbshard.write.runner import check_objects_on_ray
    from lmdbshard.write.config import RayConfig
    out = join(bucket, "cluster")
    convert(job(s3_tree, out))
    url = join(out, "shards/shard-000001.lmdb")
    good = objects.read_bytes(url)
    objects.write_bytes(url, good[:100] + bytes([good[100] ^ 1]) + good[101:])   # same size, one bit off
    saved = json.loads(objects.read_bytes(join(out, "plan.json")))
    plan = make_plan(saved["num_sources"], saved["seed"], saved["shard_size"])
    kept, notes = OutputDir(out).complete_shards(plan, "checksum", object_checker=check_objects_on_ray)
    assert sorted(r.index for r in kept) == [0, 2, 3, 4]
    assert notes and notes[0].startswith("shard 1 failed its checksum check and is rebuilt")
    # with ray.address (a cluster) the rerun's check runs on Ray (the test session's cluster is up already)
    result = convert(job(s3_tree, out, ray=RayConfig(address="auto", max_in_flight=4)))
    assert (result.shards_built, result.shards_reused) == (1, 4)
    assert objects.read_bytes(url) == good


def test_a_shard_object_with_changed_bytes_fails_its_hash_and_is_rebuilt(s3_tree, bucket):
    out = join(bucket, "out")
    convert(job(s3_tree, out))
    url = join(out, "shards/shard-000003.lmdb")
    good = objects.read_bytes(url)
    objects.write_bytes(url, good[:-1] + bytes([good[-1] ^ 1]))   # same size, one bit off
    kept = convert(job(s3_tree, out, resume_check="size"))   # the size alone cannot tell
    assert (kept.shards_built, kept.shards_reused) == (0, 5)
    result = convert(job(s3_tree, out))
    assert (result.shards_built, result.shards_reused) == (1, 4)
    assert objects.read_bytes(url) == good
    assert all(e.get("file_sha256") for e in manifest(out)["shards"])


class CountingStore(ObjectStore):
    """The real object store, counting the operations (each one request or more) that the output's
    checks make, by kind and path."""

    def __init__(self, root: str):
        super().__init__(root)
        self.calls: collections.Counter = collections.Counter()

    def listdir(self, rel: str = "") -> list[str]:
        self.calls["list", rel] += 1
        return super().listdir(rel)

    def read_bytes(self, rel: str) -> bytes:
        self.calls["read", rel] += 1
        return super().read_bytes(rel)

    def size(self, rel: str):
        self.calls["size", rel] += 1
        return super().size(rel)


def checked_output(cfg) -> CountingStore:
    """A driver's look at ``cfg.out`` before its shards run (prepare, then the resume check), counted."""
    listing = list_source(cfg.source)
    plan = make_plan(len(listing), cfg.seed, cfg.shard_size)
    output = OutputDir(cfg.out)
    output.store = CountingStore(cfg.out)
    output.prepare(cfg, listing, plan)
    output.complete_shards(plan, "size")
    return output.store


def test_the_output_is_listed_once_and_each_report_read_once_before_a_job(s3_tree, bucket):
    # every request before the first shard runs is start-up time, and a rerun of a 40,000-shard job
    # reads 40,000 reports: what was listed or read once is not asked for again
    cfg = job(s3_tree, join(bucket, "out"))
    new = checked_output(cfg)
    assert new.calls == {("list", ""): 1}   # a new prefix: one listing, nothing looked up
    convert(cfg)
    rerun = checked_output(cfg)
    assert {k: n for k, n in rerun.calls.items() if k[0] == "list"} == {("list", ""): 1, ("list", "shards"): 1,
                                                                        ("list", "reports"): 1}
    reads = [rel for kind, rel in rerun.calls if kind == "read"]
    assert sorted(reads) == ["manifest.json", "plan.json"] + [f"reports/shard-{k:06d}.json" for k in range(5)]
    assert all(n == 1 for n in rerun.calls.values() if n)   # nothing twice
