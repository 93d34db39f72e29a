"""A conversion on a multi-node Ray cluster, through the entry points a cluster user runs.

``ray.cluster_utils.Cluster`` starts a head and a second node as separate raylets on
this machine (the same processes ``ray start`` runs). The job joins it exactly as
docs/CLUSTER.md says: ``jobs/convert.py ... ray.address=ADDRESS``, and
``ray job submit ... -- python jobs/convert.py ... ray.address=auto``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys

import pytest

from lmdbshard import ShardedDataset

from faults import wait_for
from helpers import make_tree

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
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
    assert "Ray cluster: 2 nodes, 2 CPUs" in proc_text
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


def two_readers(folder) -> list[str] | None:
    """The process ids that ``Held`` samples noted in ``folder``, once there are two or more."""
    pids = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return pids if len(pids) >= 2 else None


@pytest.mark.skipif(not HAS_DASHBOARD, reason="ray job submit needs the Ray dashboard's job server, which "
                    "comes with ray[default]: pip install 'ray[default]' (part of the test extra)")
def test_ray_job_submit_runs_the_job_on_both_nodes(cluster, tmp_path):
    """Every sample is held (tests/pydatasets.py ``Held``) until two processes read at the same time.
    A shard task needs 1 CPU and each node has 1, so two tasks that run at once run on the two nodes:
    the job used both, whatever order the scheduler picks."""
    out, readers, release = tmp_path / "out", tmp_path / "readers", tmp_path / "release"
    args = ["--config-name", "imagenet", "source=python", "source.target=pydatasets:Held",
            f"source.args=[9,'{readers}','{release}']", f"out={out}", "shard_size=3",
            "transform.resize_shorter=24", "log_interval_s=0.5", "ray.address=auto"]
    workers_path = {"env_vars": {"PYTHONPATH": os.pathsep.join([TESTS, ROOT])}}   # pydatasets, on every node
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    log = tmp_path / "submit.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([ray_cli, "job", "submit", "--address", cluster.dashboard_url,
                                 "--runtime-env-json", json.dumps(workers_path), "--", sys.executable, JOB, *args],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=clean_env())
        try:
            pids = wait_for(lambda: two_readers(readers), timeout=120,
                            what="shard tasks on both nodes reading at the same time")
            release.touch()
            returncode = proc.wait(timeout=180)
        finally:
            release.touch()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert pids and returncode == 0 and "succeeded" in text, text[-3000:]
    check_output(out, text, 9)
    from ray.util.state import list_tasks
    tasks = list_tasks(address=cluster.dashboard_url, filters=[("func_or_class_name", "=", "_run_one")],
                       detail=True, raise_on_missing_output=False)
    assert len({t.node_id for t in tasks}) == 2, [(t.name, t.node_id, t.state) for t in tasks]
