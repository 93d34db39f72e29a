"""The package's architecture, checked: which part may import which, what reading loads, module sizes.

Imports are read with ``ast`` from the source (every import statement, also those inside functions);
what reading really loads is checked in a fresh Python process.
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from functools import lru_cache

import numpy as np
from PIL import Image

from lmdbshard.format.record import Field
from lmdbshard.write.direct import Sample, write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "lmdbshard")
TESTS = os.path.join(ROOT, "tests")

#: Modules allowed to talk to Ray: the conversion's session and runner, and the Ray Data reader.
RAY_MODULES = {"lmdbshard.write.session", "lmdbshard.write.runner", "lmdbshard.read.ray_data"}
#: Other modules that import Ray, and why.
RAY_EXCEPTIONS = {
    "lmdbshard.benchmark.conversion": "the benchmark warms Ray's workers before it times a conversion",
    "lmdbshard.benchmark.report": "the benchmark report records the Ray version it ran with",
}
MAX_LINES = 300
#: Modules allowed over MAX_LINES, and why. A module that shrinks must leave this list.
LONG_MODULES = {
    "lmdbshard/read/lmdbcheck.py": "6 lines over, with a 20-line docstring: one check of LMDB's page layout",
}


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


@lru_cache(maxsize=None)
def package_modules() -> dict[str, str]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                found[module_name(os.path.join(folder, name))] = os.path.join(folder, name)
    return found


def imported(path: str) -> set[str]:
    """The modules a file imports, anywhere in it: ``from a import b`` gives ``a``, and ``a.b`` when that
    is a module of the package; relative imports are resolved."""
    name = module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in package_modules())
    return names


def own(names: set[str]) -> set[str]:
    return {n for n in names if n == "lmdbshard" or n.startswith("lmdbshard.")}


def part(prefix: str) -> dict[str, str]:
    return {n: p for n, p in package_modules().items() if n == prefix or n.startswith(prefix + ".")}


def test_the_import_reader_sees_the_package():
    mods = package_modules()
    assert {"lmdbshard.format.record", "lmdbshard.read.dataset", "lmdbshard.write.runner"} <= set(mods)
    assert "lmdbshard.errors" in imported(mods["lmdbshard.format.manifest"])
    assert "lmdbshard.write.runner" in imported(mods["lmdbshard.write.coordinator"])


def test_format_imports_nothing_of_the_package_but_errors():
    bad = {name: sorted(n for n in own(imported(path)) if n != "lmdbshard.errors" and not n.startswith("lmdbshard.format"))
           for name, path in part("lmdbshard.format").items()}
    assert not {k: v for k, v in bad.items() if v}, "the format must stand alone (docs/FORMAT.md)"


def test_storage_imports_nothing_of_the_package_but_errors_and_itself():
    bad = {name: sorted(n for n in own(imported(path)) if n != "lmdbshard.errors" and not n.startswith("lmdbshard.storage"))
           for name, path in part("lmdbshard.storage").items()}
    assert not {k: v for k, v in bad.items() if v}, "storage/ is the layer below read/ and write/"


def test_read_never_imports_write_directly_or_through_another_module():
    """Following imports through the package (not through the top-level ``lmdbshard``, which a
    reading module must not import either: it pulls in the conversion's config)."""
    mods = package_modules()
    for name, path in part("lmdbshard.read").items():
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            for dep in own(imported(mods[current])) - seen:
                assert dep != "lmdbshard", f"{current} imports the top-level lmdbshard package"
                assert not dep.startswith("lmdbshard.write"), f"{name} imports {dep} (through {current})"
                seen.add(dep)
                if dep in mods:
                    todo.append(dep)


def ray_importers() -> set[str]:
    return {name for name, path in package_modules().items()
            if any(n == "ray" or n.startswith("ray.") for n in imported(path))}


def test_only_the_session_the_runner_and_ray_data_import_ray():
    assert ray_importers() == RAY_MODULES | set(RAY_EXCEPTIONS)


READ_PROBE = """
import json, sys
import lmdbshard
ds = lmdbshard.ShardedDataset(sys.argv[1])
image, label = ds[0]
assert image.shape == (16, 20, 3) and label == 1
assert len(list(ds)) == len(ds) == 3
sampler = lmdbshard.ShardSampler(ds, num_replicas=1, rank=0, seed=0)
assert sorted(sampler) == [0, 1, 2]
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "hydra", "omegaconf", "pyarrow"))))
"""


def test_reading_a_folder_loads_no_ray_hydra_omegaconf_or_pyarrow(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 20, 3), 90, np.uint8)).save(buf, "JPEG")
    image = Field("image", "jpeg", buf.getvalue(), (16, 20, 3), "uint8", "HWC")
    root = write_dataset(str(tmp_path / "ds"), [[Sample([image], 1), Sample([image], 0)], [Sample([image], 1)]],
                         ["a", "b"])
    proc = subprocess.run([sys.executable, "-c", READ_PROBE, root], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_a_conversion_jobs_start_imports_nothing_of_the_reading_side():
    """``import lmdbshard`` and a job's config (what every ``make convert`` pays before any work) leave the
    reader modules to their first use; the names still import from the package."""
    probe = ("import json, sys; sys.path.insert(0, 'jobs'); import hydra_app, lmdbshard; "
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('lmdbshard.read'))))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []
    from lmdbshard import ShardedDataset, ShardSampler, verify
    from lmdbshard.read.dataset import ShardedDataset as direct
    assert ShardedDataset is direct and callable(verify) and ShardSampler.__name__ == "ShardSampler"


def test_no_module_over_300_lines_but_the_listed_ones():
    lengths = {}
    for folder in (PACKAGE, os.path.join(ROOT, "jobs")):
        for dirpath, _, files in os.walk(folder):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    with open(path) as f:
                        lengths[os.path.relpath(path, ROOT)] = sum(1 for _ in f)
    long = {path: n for path, n in lengths.items() if n > MAX_LINES}
    assert set(long) == set(LONG_MODULES), (f"modules over {MAX_LINES} lines: {long}; split them, or list "
                                            "them in LONG_MODULES with the reason (and drop those that shrank)")


def test_test_modules_import_helpers_not_each_other():
    """Shared test code lives in helpers.py (and pydatasets.py, reference.py, faults.py), never in
    conftest or a test module: pytest imports test modules, they do not import each other."""
    bad = {}
    for name in sorted(os.listdir(TESTS)):
        if name.endswith(".py") and name != "conftest.py":
            tree = ast.parse(open(os.path.join(TESTS, name)).read())
            mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            wrong = sorted(m for m in mods if m.split(".")[0] == "conftest" or m.split(".")[0].startswith("test_"))
            if wrong:
                bad[name] = wrong
    assert not bad
