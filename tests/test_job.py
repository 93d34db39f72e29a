"""The Hydra job as `make convert` runs it, in a subprocess: summary on success, one-line errors."""

import os
import subprocess
import sys

import pytest

from helpers import make_tree

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def run_job(*overrides, config="imagenet"):
    return subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "convert.py"), "--config-name", config,
                           *overrides], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.ray   # the job starts its own Ray cluster
def test_job_converts_and_prints_summary(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=4)
    out = tmp_path / "out"
    proc = run_job(f"source.root={tree.root}", f"out={out}", "shard_size=5", "ray.num_cpus=2",
                   "transform.resize_shorter=24", "log_interval_s=0.2")
    assert proc.returncode == 0, proc.stderr
    for line in ("images written  12", "images skipped  0", "shards          3 (3 built, 0 reused)",
                 "images/s", f"output          {out}"):
        assert line in proc.stdout
    # not a TTY: plain progress lines with images, rate, ETA, shards, skips and the stage shares
    last = [ln for ln in proc.stderr.splitlines() if " progress 12/12 images (100.0%)" in ln][-1]
    assert "img/s ETA" in last and "shards 3/3 reused 0 failed 0 skipped 0 stages " in last
    assert all(f"{stage} " in last.split(" stages ")[1] for stage in ("read", "decode", "transform", "encode", "write"))
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr            # no tqdm bar
    assert "Ray cluster: 1 node(s), 2 CPUs" in proc.stderr
    shares = [ln for ln in proc.stdout.splitlines() if ln.startswith("  stage time")][0]
    assert all(stage in shares for stage in ("read", "decode", "transform", "encode", "write"))
    assert (out / "manifest.json").exists()


@pytest.mark.parametrize("overrides, match", [
    (["out=/tmp/x"], "source.root is required"),
    (["+shard_sise=4", "source.root=/tmp", "out=/tmp/x"], "unknown config key 'shard_sise'; did you mean shard_size?"),
    (["shard_size=abc", "source.root=/tmp", "out=/tmp/x"], "shard_size must be an integer, got 'abc'"),
])
def test_bad_config_is_refused_in_one_line(overrides, match):
    proc = run_job(*overrides)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"lmdbshard: error: {lines[0].split('error: ', 1)[1]}"] and match in lines[0]


def test_out_that_is_a_file_is_refused_before_work(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=2)
    target = tmp_path / "file"
    target.write_text("precious")
    proc = run_job(f"source.root={tree.root}", f"out={target}")
    assert proc.returncode == 2 and "is a file, not a directory" in proc.stderr
    assert target.read_text() == "precious"


def test_help_explains_usage():
    proc = run_job("--help")
    assert proc.returncode == 0
    for text in ("make convert CONF=imagenet", "source.root", "shard_size", "ShardedDataset"):
        assert text in proc.stdout


@pytest.mark.ray   # the job starts its own Ray cluster
def test_error_rate_over_the_limit_exits_non_zero_in_one_line(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=2)
    (tmp_path / "src" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    proc = run_job(f"source.root={tree.root}", f"out={tmp_path / 'out'}", "ray.num_cpus=2", "max_error_rate=0")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lmdbshard: error: 1 of 7 images could not be read") and "max_error_rate=0.0" in last
    assert not (tmp_path / "out" / "manifest.json").exists()
