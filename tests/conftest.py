"""Fixtures: real image trees made deterministically, and one small local Ray cluster.

Plain helpers live in helpers.py; a test module imports them from there, never from here.
Every test that uses a fixture which starts Ray is marked ``ray``, so ``pytest -m "not ray"``
is the fast loop of pure tests. A test that starts Ray another way (a job run in a subprocess)
carries ``@pytest.mark.ray`` itself.
"""

from __future__ import annotations

import os

import pytest

from helpers import Tree, job, make_tree

#: Fixtures that start (or join) a Ray cluster; a test using one, directly or through another, is ``ray``.
RAY_FIXTURES = {"ray_local", "cluster"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


@pytest.fixture
def tree(tmp_path) -> Tree:
    return make_tree(str(tmp_path / "src"))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster with 2 CPUs for the whole session (started on first use). ``address="local"``
    always starts a private one: with no address, Ray joins any cluster already running on the machine.
    Workers get this folder on their PYTHONPATH, so the python source tests' datasets import there."""
    import ray
    path = os.pathsep.join(filter(None, [os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH")]))
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             logging_level="WARNING", log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_out(ray_local, tmp_path_factory):
    """A converted copy of the test tree (jpeg, shard size 5), shared by read-only tests."""
    from lmdbshard import convert
    base = tmp_path_factory.mktemp("demo")
    t = make_tree(str(base / "src"))
    convert(job(t.root, str(base / "out")))
    return t, str(base / "out")
