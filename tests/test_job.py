"""The Hydra job as `make convert` runs it, in a subprocess: summary on success, one-line errors."""

import os
import signal
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
    assert "Ray cluster: 1 node, 2 CPUs" in proc.stderr
    shares = [ln for ln in proc.stdout.splitlines() if ln.startswith("  stage time")][0]
    assert all(stage in shares for stage in ("read", "decode", "transform", "encode", "write"))
    assert (out / "manifest.json").exists()


@pytest.mark.parametrize("overrides, config, message", [
    (["out=/tmp/x"], "imagenet",
     "source.root is required; pass source.root=/path/to/imagefolder (source.kind=imagefolder needs it)"),
    (["shard_sise=100"], "demo", "unknown config key 'shard_sise'; did you mean shard_size?"),
    (["transform.resize_shortr=1"], "demo", "unknown config key 'transform.resize_shortr'; did you mean transform.resize_shorter?"),
    (["shard_size=abc", "source.root=/tmp", "out=/tmp/x"], "imagenet", "shard_size must be an integer, got 'abc'; set shard_size=N"),
    (["+split=val", "imagenet.out=/tmp/x"], "imagenet",
     "imagenet.root is required: source.root is ${imagenet.root}/val; pass imagenet.root=..."),
    ([], "doesnotexist", "no config 'doesnotexist'; the configs are base, demo, imagenet "
                         "(conf/NAME.yaml, chosen with --config-name NAME or make convert CONF=NAME)"),
])
def test_bad_config_is_refused_in_one_line(overrides, config, message):
    proc = run_job(*overrides, config=config)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"lmdbshard: error: {message}"] and proc.stdout == ""


def test_out_that_is_a_file_is_refused_before_work(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=2)
    target = tmp_path / "file"
    target.write_text("precious")
    proc = run_job(f"source.root={tree.root}", f"out={target}")
    assert proc.returncode == 2 and "is a file, not a directory" in proc.stderr
    assert target.read_text() == "precious"


def test_help_explains_usage_and_lists_every_config_and_group():
    proc = run_job("--help")
    assert proc.returncode == 0
    for text in ("make convert CONF=imagenet", "source.root", "shard_size", "ShardedDataset",
                 "\nbase, demo, imagenet\n", "source: filelist, imagefolder, imagenet_val, paired, python\n",
                 "storage: caffe_datum, jpeg, passthrough, png, raw\n", "augment: flip, imagenet_train, none\n"):
        assert text in proc.stdout, text
    assert "benchmark" not in proc.stdout and "schema" not in proc.stdout


@pytest.mark.ray   # the job starts its own Ray cluster
def test_error_rate_over_the_limit_exits_non_zero_in_one_line(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=2)
    (tmp_path / "src" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    proc = run_job(f"source.root={tree.root}", f"out={tmp_path / 'out'}", "ray.num_cpus=2", "max_error_rate=0")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lmdbshard: error: 1 of 7 images could not be read") and "max_error_rate=0.0" in last
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.ray   # the job starts its own Ray cluster
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "jobs", "convert.py"), "--config-name", "demo",
                             f"source.root={tmp_path / 'demo'}", "demo.per_class=60", f"out={tmp_path / 'out'}",
                             "ray.num_cpus=1", "progress=log", "log_interval_s=0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stderr:   # the job is under way: Ctrl-C now
        if " progress " in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and out == ""
    assert err.strip().splitlines()[-1].startswith("interrupted")
    assert not (tmp_path / "out" / "manifest.json").exists()
