"""`make bench` end to end at tiny sizes: every row and target is printed and written as JSON.
Nothing here asserts a speed: timings on a shared test machine mean nothing."""

import json
import os
import subprocess
import sys

import pytest

from lmdbshard import parse_config
from lmdbshard.benchmark import BenchConfig
from lmdbshard.errors import ConfigError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

ROWS = ["bare chain, multiprocessing.Pool(1)", "lmdbshard, 1 Ray worker, shard_size 40",
        "lmdbshard, 1 Ray worker, shard_size 8", "bare chain, multiprocessing.Pool(2)",
        "lmdbshard, 2 Ray workers, shard_size 40", "lmdbshard, 2 Ray workers, shard_size 8", "folder2lmdb recipe",
        "whole command (jobs/convert.py", "fixed: interpreter, imports, Hydra", "fixed: listing, plan, output", "import ray", "txn.get loop over the same shards",
        "ds[i], decode=False", "PIL decode of the same bytes", "ds[i], jpeg decoded", "ds[i], raw, copy=False",
        "ShardStream, jpeg decoded", "ImageFolder-style", "ShardedDataset(root) over 20 shards"]


@pytest.mark.ray   # the job starts its own Ray cluster
def test_bench_job_prints_every_row_and_target(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "jobs", "benchmark.py"), f"bench.corpus_dir={tmp_path / 'corpus'}",
         "bench.corpus.classes=4", "bench.corpus.per_class=10", "bench.corpus.short_side=[120,160]",
         f"bench.work={tmp_path / 'work'}", f"bench.json={out}", "bench.repeats=1", "bench.read_repeats=1",
         "bench.read_samples=50", "bench.read_seconds=0.2", "bench.open_shards=20", "bench.shard_sizes=[40,8]",
         "bench.scale=[20000]", f"bench.small_corpus_dir={tmp_path / 'small'}", "bench.small_corpus.per_class=30",
         "transform.resize_shorter=64"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for row in ROWS:
        assert row in table, row
    assert "Ray start-up" in table and "libjpeg-turbo" in table and " cores; " in table
    doc = json.loads(out.read_text())
    assert doc["corpus"]["images"] == 40 and doc["environment"]["lmdb"] and doc["environment"]["pillow"]
    assert set(doc["conversion"]) == {"bare/1", "bare/2", "lmdbshard/1/40", "lmdbshard/2/40", "lmdbshard/1/8",
                                      "lmdbshard/2/8", "folder2lmdb/1"}
    assert doc["command"]["images"] == 40 and len(doc["command"]["fixed"]) == 3
    assert doc["open"]["shards"] == 20
    targets = {t["name"]: t["verdict"] for t in doc["targets"]}
    assert len(targets) == 12 and all(v in ("PASS", "MISS", "not measured") for v in targets.values())
    assert targets["conversion, shard_size 40, 16 workers vs 1 worker, steady state"] == "not measured"
    # The steady state, from 10% to 90% of the images done, of runs with several updates: the bare Pool
    # (chunks of 2 images) and 5 shards of 8; the targets against the bare chain compare those.
    for key in ("bare/2", "lmdbshard/2/8"):
        assert doc["conversion"][key]["steady_images_per_s"] > 0, key
    assert targets["conversion, shard_size 8, 2 workers vs bare chain, steady state"] in ("PASS", "MISS")
    assert "conversion, steady state (10% to 90% done)" in table
    assert targets["whole command: fixed costs beyond Ray's import, start-up and shutdown"] in ("PASS", "MISS")
    for t in doc["targets"]:
        assert t["name"] in table
    scale = doc["scale"]   # the scale section, at 20,000 synthetic samples
    assert [p["samples"] for p in scale["plans"]] == [20000]
    assert scale["samplers"][0]["samples"] == 20480   # whole shards of 2,560
    assert scale["check"]["shards"] == 1 and scale["check"]["bytes"] > 0
    for row in scale["rows"]:
        assert row in table
    assert sum(": PASS" in row or ": MISS" in row for row in scale["rows"]) == 5
    converted = doc["remote_convert"]   # into s3:// (a local S3 server) against into a local folder
    assert converted["images"] == 40 and len(converted["s3_s"]) == len(converted["local_s"]) == 1
    assert converted["ratio"] > 0 and "s3:// vs local folder" in table
    remote = doc["remote_read"]   # the conversion output read from a local S3 server through the cache
    assert remote["skipped"] is None and remote["shards"] == 1
    assert all(row in table for row in remote["rows"])
    assert sum(": PASS" in row or ": MISS" in row for row in remote["rows"]) == 2
    small = doc["small_images"]   # 300 images of 32x32: the bare Pool, units fixed at 64, units that grow
    assert small["images"] == 300 and small["side"] == 32
    assert {k: len(v) for k, v in small["seconds"].items()} == {"bare": 1, "fixed": 1, "grown": 1}
    assert small["grown_vs_fixed"] > 0 and "small images (300 JPEGs of 32x32" in table and "units that grow" in table


@pytest.mark.parametrize("data, match", [
    ({"workers": []}, "bench.workers must be a non-empty list"),
    ({"workers": [1, 4096]}, "a scaling curve needs one core per worker"),
    ({"repeats": 0}, "bench.repeats must be a positive integer"),
    ({"source": "/no/such/folder"}, "is not a directory"),
    ({"read_seconds": 0}, "bench.read_seconds must be > 0"),
    ({"shard_sizes": [0]}, "bench.shard_sizes must be a non-empty list of positive integers"),
    ({"scale": [1000, 0]}, r"bench.scale must list positive sample counts \(or be \[\]\), got \[1000, 0\]"),
    ({"corpus": {"short_side": [300]}}, r"bench.corpus.short_side must be \[low, high\] with 0 < low <= high, got \[300\]"),
    ({"corpus": {"classes": 0}}, "bench.corpus.classes must be a positive integer, got 0"),
    ({"small_corpus": {"per_class": -1}}, "bench.small_corpus.per_class must be a positive integer, got -1"),
])
def test_bench_config_is_refused_before_any_work(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(data, BenchConfig).validate()


def test_unknown_bench_key_is_refused():
    with pytest.raises(ConfigError, match="did you mean repeats"):
        parse_config({"repeat": 2}, BenchConfig)
    with pytest.raises(ConfigError, match=r"^unknown config key 'corpus.dir'; known keys: aspect, classes, detail, per_class, quality, seed, short_side$"):
        parse_config({"corpus": {"dir": "x"}}, BenchConfig)


def test_bench_job_refuses_a_typo_before_any_work():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "benchmark.py"), "bench.worker=[1]"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["lmdbshard: error: unknown config key 'bench.worker'; did you mean bench.workers?"]
