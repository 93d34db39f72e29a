"""Fault injection with real processes: a Ray worker killed mid-shard, the driver killed mid-job,
a Ray node removed mid-job. Each run must end with exactly the bytes of an uninterrupted run.

A shard is held mid-way by a named pipe standing in for one of its images (tests/faults.py):
its task has the pipe open and waits, so the test knows which process to kill and when.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from lmdbshard import convert
from lmdbshard.read.verify import verify

from helpers import job, make_tree, stored_items
from faults import FifoImage, env_with_tests, held_conversion, held_source, readers_of, start_driver, wait_for

TESTS = os.path.dirname(os.path.abspath(__file__))
HELD = "dog/img_03.jpg"


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory):
    """An uninterrupted conversion of the test tree: (records, tree root to copy)."""
    base = tmp_path_factory.mktemp("reference")
    tree = make_tree(str(base / "src"))
    out = str(base / "out")
    convert(held_job(tree.root, out))
    return stored_items(out), tree.root


def held_job(src: str, out: str, **kw):
    """The test job over ``HeldFolder(src)``, whose file reads a FifoImage can hold."""
    return dataclasses.replace(job(src, out, **kw), source=held_source(src))


def no_partials(out: str) -> bool:
    return not glob.glob(os.path.join(out, "**", "*partial*"), recursive=True)


def test_worker_killed_mid_shard_is_retried_and_writes_the_shard_once(reference, tmp_path, ray_local):
    records, src = reference
    src = shutil.copytree(src, str(tmp_path / "src"))
    out, scratch = str(tmp_path / "out"), str(tmp_path / "scratch")
    held = FifoImage(os.path.join(src, HELD))
    with held_conversion(held, lambda: convert(held_job(src, out, scratch_dir=scratch))) as outcome:
        (victim,) = wait_for(lambda: readers_of(held.path), what="a worker to open the held image")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not readers_of(held.path), what="the killed worker to go")
    result = outcome["result"]
    assert held.serves >= 1   # the retried task read the image
    assert (result.images_written, result.images_skipped, result.shards_built) == (21, 0, 5)
    assert stored_items(out) == records
    assert no_partials(out) and verify(out).ok
    assert os.listdir(scratch) == []   # the retry removed the dead attempt's scratch folder


def test_driver_killed_mid_job_then_the_same_command_finishes_the_rest(reference, tmp_path):
    records, src = reference
    src = shutil.copytree(src, str(tmp_path / "src"))
    out = str(tmp_path / "out")
    held = FifoImage(os.path.join(src, HELD))
    driver = start_driver(src, out, f"hydra.run.dir={tmp_path / 'hydra'}")
    try:
        reports = os.path.join(out, "reports")
        wait_for(lambda: readers_of(held.path) and len(glob.glob(os.path.join(reports, "*.json"))) >= 3,
                 what="three shards done while a fourth is held")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
        # Ray reaps a dead driver's local cluster; its worker must be gone before the pipe closes,
        # or it would read an empty file.
        wait_for(lambda: not readers_of(held.path), what="the dead driver's workers to exit")
    finally:
        held.restore()   # the held worker sees the pipe close: its shard never completes
    # complete reports only: a driver killed while writing one leaves its ``.*.partial`` file beside them
    done_before = sorted(n for n in os.listdir(os.path.join(out, "reports")) if n.endswith(".json"))
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    rerun = start_driver(src, out, f"hydra.run.dir={tmp_path / 'hydra'}")
    log, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, log[-3000:]
    built = 5 - len(done_before)
    assert f"shards          5 ({built} built, {len(done_before)} reused)" in log
    assert stored_items(out) == records
    assert no_partials(out) and verify(out).ok


CLUSTER_SCRIPT = textwrap.dedent("""
    import dataclasses, json, os, sys, threading
    sys.path.insert(0, {tests!r})
    import ray
    from ray.cluster_utils import Cluster
    from helpers import job
    from faults import FifoImage, held_source, readers_of, wait_for
    from lmdbshard import RayConfig, convert

    src, out = {src!r}, {out!r}
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, _system_config=dict(
        health_check_initial_delay_ms=0, health_check_period_ms=500, health_check_failure_threshold=3)))
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    held = FifoImage(os.path.join(src, {held!r}))
    outcome = {{}}
    runner = threading.Thread(target=lambda: outcome.update(
        result=convert(dataclasses.replace(job(src, out, ray=RayConfig(max_in_flight=4, max_retries=3)),
                                           source=held_source(src)))))
    runner.start()
    (victim,) = wait_for(lambda: readers_of(held.path), what="a worker to open the held image")
    raylet_of = {{n.all_processes["raylet"][0].process.pid: n for n in nodes}}
    ppid = int(open(f"/proc/{{victim}}/stat").read().rsplit(")", 1)[1].split()[1])
    node = raylet_of[ppid]
    cluster.remove_node(node, allow_graceful=False)
    held.release()
    runner.join(timeout=240)
    held.restore()
    r = outcome["result"]
    wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 2, what="Ray to mark the node dead")
    with open({result!r}, "w") as f:
        json.dump(dict(written=r.images_written, built=r.shards_built, serves=held.serves,
                       alive=len([n for n in ray.nodes() if n["Alive"]])), f)
    ray.shutdown()
    cluster.shutdown()
""")


def test_node_removed_mid_job_its_shards_run_on_the_others(reference, tmp_path):
    records, src = reference
    src = shutil.copytree(src, str(tmp_path / "src"))
    out = str(tmp_path / "out")
    result_path = str(tmp_path / "result.json")
    script = CLUSTER_SCRIPT.format(tests=TESTS, src=src, out=out, held=HELD, result=result_path)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=400,
                         cwd=str(tmp_path), env=env_with_tests())
    assert run.returncode == 0, run.stderr[-3000:]
    with open(result_path) as f:
        result = json.load(f)
    assert result["written"] == 21 and result["built"] == 5 and result["serves"] >= 1
    assert result["alive"] == 2   # the head and the surviving worker node
    assert stored_items(out) == records
    assert no_partials(out) and verify(out).ok
