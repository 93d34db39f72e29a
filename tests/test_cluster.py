"""A conversion on a multi-node Ray cluster, through the entry points a cluster user runs.

``ray.cluster_utils.Cluster`` starts a head and a second node as separate raylets on
this machine (the same processes ``ray start`` runs). The job joins it exactly as
docs/CLUSTER.md says: ``jobs/convert.py ... ray.address=ADDRESS``, and
``ray job submit ... -- python jobs/convert.py ... ray.address=auto``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys

import pytest

from lmdbshard import ShardedDataset

from faults import FifoImage, readers_of, wait_for
from helpers import make_tree

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
JOB = os.path.join(ROOT, "jobs", "convert.py")
HAS_DASHBOARD = importlib.util.find_spec("aiohttp") is not None   # ray[default]: the job server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    dashboard = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port(),
                 "dashboard_agent_listen_port": free_port()} if HAS_DASHBOARD else {"include_dashboard": False}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **dashboard})
    try:
        c.add_node(num_cpus=1, **({"dashboard_agent_listen_port": free_port()} if HAS_DASHBOARD else {}))
        c.wait_for_nodes()
        c.dashboard_url = f"http://127.0.0.1:{dashboard['dashboard_port']}" if HAS_DASHBOARD else None
        yield c
    finally:
        c.shutdown()


def job_args(src: str, out: str) -> list[str]:
    return ["--config-name", "imagenet", f"source.root={src}", f"out={out}", "shard_size=3",
            "transform.resize_shorter=24", "log_interval_s=0.5"]


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def check_output(out, proc_text: str, images: int) -> None:
    assert "Ray cluster: 2 node(s), 2 CPUs" in proc_text
    assert f"images written  {images}" in proc_text and "images skipped  0" in proc_text
    with ShardedDataset(str(out)) as ds:
        assert len(ds) == images and {ds[i][1] for i in range(len(ds))} == {0, 1, 2}


def test_job_joins_a_two_node_cluster_by_address(cluster, tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=4)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, JOB, *job_args(tree.root, str(out)), f"ray.address={cluster.address}"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    check_output(out, proc.stderr + proc.stdout, 12)


def held_until_two_workers_read(images: list[FifoImage]) -> list[int]:
    """Wait until two different processes are reading held images at once, then release them all.

    A shard task needs 1 CPU and each node has 1, so two tasks that run at the same time run on the
    two nodes: this proves the job used both, whatever order the scheduler picks. Returns the readers."""
    def two_readers() -> list[int] | None:
        pids = {pid for image in images for pid in readers_of(image.path)}
        return sorted(pids) if len(pids) >= 2 else None

    try:
        return wait_for(two_readers, timeout=120, what="shard tasks on both nodes reading at the same time")
    finally:
        for image in images:
            image.release()


@pytest.mark.skipif(not HAS_DASHBOARD, reason="ray job submit needs the Ray dashboard's job server, which "
                    "comes with ray[default]: pip install 'ray[default]' (part of the test extra)")
def test_ray_job_submit_runs_the_job_on_both_nodes(cluster, tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=3)
    out = tmp_path / "out"
    # Every image is a pipe that holds its reader: no task can finish until two tasks read at once.
    held = [FifoImage(os.path.join(tree.root, rel)) for rel in sorted(tree.files)]
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    log = tmp_path / "submit.log"
    try:
        with open(log, "w") as sink:
            proc = subprocess.Popen([ray_cli, "job", "submit", "--address", cluster.dashboard_url, "--",
                                     sys.executable, JOB, *job_args(tree.root, str(out)), "ray.address=auto"],
                                    stdout=sink, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=clean_env())
            try:
                readers = held_until_two_workers_read(held)
                returncode = proc.wait(timeout=180)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        for image in held:
            image.restore()
    text = log.read_text()
    assert returncode == 0 and "succeeded" in text, text[-3000:]
    check_output(out, text, 9)
    from ray.util.state import list_tasks
    tasks = list_tasks(address=cluster.dashboard_url, filters=[("func_or_class_name", "=", "_run_one")],
                       detail=True, raise_on_missing_output=False)
    assert len({t.node_id for t in tasks}) == 2, (readers, [(t.name, t.node_id, t.state) for t in tasks])
