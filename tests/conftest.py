"""Shared fixtures: real image trees made deterministically, and one small local Ray cluster."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest
from PIL import Image

from pydatasets import pixels  # noqa: F401  (one definition: Ray workers import pydatasets, not conftest)

from lmdbshard import ConvertConfig, RayConfig, SourceConfig, StorageConfig, TransformConfig

CLASSES = ["cat", "dog", "zebra"]


@dataclass
class Tree:
    root: str
    files: dict[str, int]   # relative path -> label, for every valid image


def make_tree(root: str, per_class: int = 7, classes=CLASSES) -> Tree:
    """root/<class>/img_NN.jpg (varied sizes and aspect ratios), plus a PNG, an upper-case extension
    and a nested folder in each class."""
    files = {}
    for label, name in enumerate(classes):
        for i in range(per_class):
            size = (40 + 13 * ((i * 7 + label) % 9), 36 + 11 * ((i * 5 + label * 3) % 8))
            arr = pixels(label, i, size)
            if i == 1:
                rel = f"{name}/img_{i:02d}.png"
            elif i == 2:
                rel = f"{name}/sub/deeper/img_{i:02d}.JPEG"
            else:
                rel = f"{name}/img_{i:02d}.jpg"
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(arr).save(path, "PNG" if rel.endswith(".png") else "JPEG", quality=92)
            files[rel] = label
        with open(os.path.join(root, name, "notes.txt"), "w") as f:   # not an image extension: ignored
            f.write("not an image")
    return Tree(root, files)


@pytest.fixture
def tree(tmp_path) -> Tree:
    return make_tree(str(tmp_path / "src"))


def job(src: str, out: str, **kw) -> ConvertConfig:
    """A conversion config for tests: small shards, quiet progress, the shared Ray cluster."""
    transform = kw.pop("transform", TransformConfig(resize_shorter=32))
    storage = kw.pop("storage", StorageConfig(encoding="jpeg", quality=90))
    ray = kw.pop("ray", RayConfig(max_in_flight=4))
    return ConvertConfig(source=SourceConfig(root=src), out=out, transform=transform, storage=storage,
                         ray=ray, progress="none", **{"shard_size": 5, **kw})


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


def copytree(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def assert_exactly_once(per_rank: list[list[int]], n: int, drop_last: bool) -> None:
    """The split promise: equal counts per rank; every index once; padding only as documented."""
    from collections import Counter
    counts = {len(r) for r in per_rank}
    assert len(counts) <= 1, f"ranks got different counts: {[len(r) for r in per_rank]}"
    m = counts.pop() if counts else 0
    seen = Counter(i for r in per_rank for i in r)
    assert set(seen) <= set(range(n))
    if drop_last:
        assert m == n // len(per_rank) and max(seen.values(), default=1) == 1
    else:
        assert m == -(-n // len(per_rank)) and set(seen) == set(range(n))
        assert sum(seen.values()) - n == m * len(per_rank) - n   # only the padding repeats
