"""Every ```python block of README.md and docs/*.md runs, on a small real converted dataset.

How a document's blocks are run:

- The blocks of one document run in order, in one namespace, as a reader types them from top to
  bottom (TRAINING.md's later examples use the dataset and loader of its first one).
- A block right after the line ``<!-- not run: REASON -->`` is not run; the reason shows in the
  test run's warnings summary. Keep such blocks few (a block that needs a cluster, say).
- Placeholder paths are substituted before a block runs (``substitute``): the datasets the
  examples name (``DATASET_PLACEHOLDERS``: "/data/in1k-train", "/data/in1k-train-more",
  "/data/extra", "out/demo") become the dataset converted here; "/data/my-images" the image folder
  it was converted from; "/data/scratch" a fresh folder; "/shared/ray-results" (Ray Train's
  storage) a folder in the working folder; "s3://my-bucket/in1k-train" a copy of the dataset
  uploaded to the local S3 server (read through a cache in the test's folder). Any other quoted
  "/data/..." or "/shared/..." path fails the test: add it to ``substitute``.
- Sizes are shrunk so that the examples finish in seconds (``SHRINK``): 90 epochs become 2, 8
  DataLoader workers 2, batches of 256 batches of 4, a checkpoint every 1000 batches one every 5,
  and Ray Train runs one epoch on one CPU worker instead of eight GPU workers. A rule that no
  longer matches any example fails the test, so the list stays true.
- FORMAT.md's fragments use names that its prose defines: the test provides ``txn`` (shard 0 of
  the dataset, open read-only), ``shard`` (its manifest entry), ``num_sources``, ``seed``,
  ``rounds``, ``hashlib``, and ``Field`` and ``pack_record`` from ``lmdbshard.format.record``.
- Each document gets its own copy of the dataset. Its blocks run in a fresh working folder, in a
  one-rank ``torch.distributed`` environment (the variables torchrun sets), on the session's local
  Ray cluster. Then a check asserts what its examples promise (batch shapes, labels, the plan's
  test vector, the minimal reader agreeing with ``ShardedDataset``, ...).

The documents in ``RUN_ELSEWHERE`` have their own test, which needs their own data. A document
whose examples import an optional package that is not installed (torch with
``make test TORCH=``, or NVIDIA DALI) is skipped. Shell blocks are not run.
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from lmdbshard import ShardedDataset, TransformConfig, convert

from helpers import copytree, job, make_tree, upload_tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_ELSEWHERE = {"docs/CAFFE_DALI.md": "tests/test_dali.py, with DALI's reader on Datum output (make test DALI=1)"}
ALL_DOCS = ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
DOCS = [doc for doc in ALL_DOCS if doc not in RUN_ELSEWHERE]
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
DATASET_PLACEHOLDERS = ("/data/in1k-train", "/data/in1k-train-more", "/data/extra", "out/demo")
REMOTE_PLACEHOLDER = "s3://my-bucket/in1k-train"
OPTIONAL = re.compile(r"^\s*(?:import|from)\s+(torch|nvidia\.dali)\b", re.M)   # skip the document without it
SHRINK = [   # (pattern, replacement): applied in this order to every block
    (r"ScalingConfig\(num_workers=8, use_gpu=True\)", "ScalingConfig(num_workers=1, use_gpu=False)"),
    (r"train_loop_config=\{\"epochs\": epochs\}", 'train_loop_config={"epochs": 1}'),
    (r"\bepochs = 90\b", "epochs = 2"),
    (r"\bnum_workers=8\b", "num_workers=2"),
    (r"\bbatch_size=256\b", "batch_size=4"),
    (r"\bcheckpoint_every = 1000\b", "checkpoint_every = 5"),
]


@dataclass
class Block:
    doc: str
    line: int          # 1-based line of the opening fence
    code: str
    skip: str | None   # the reason from a `not run` marker, or None


def blocks(doc: str, text: str | None = None) -> list[Block]:
    if text is None:
        text = open(os.path.join(REPO, doc), encoding="utf-8").read()
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            marker = NOT_RUN.search(lines[start - 1]) if start else None
            found.append(Block(doc, start + 1, "\n".join(body) + "\n", marker.group(1) if marker else None))
        i += 1
    return found


@dataclass
class Paths:
    dataset: str
    images: str
    scratch: str
    remote: str = REMOTE_PLACEHOLDER   # the URL of an uploaded copy, where a document reads one


def substitute(code: str, paths: Paths, where: str) -> str:
    mapping = {p: paths.dataset for p in DATASET_PLACEHOLDERS}
    mapping.update({"/data/my-images": paths.images, "/data/scratch": paths.scratch,
                    "/shared/ray-results": os.path.abspath("ray-results")})

    def replace(m: re.Match) -> str:
        path = m.group(2)
        if path in mapping:
            return f"{m.group(1)}{mapping[path]}{m.group(1)}"
        if path.startswith(("/data/", "/shared/")):
            raise AssertionError(f"{where}: unknown placeholder path {path!r}; add it to PLACEHOLDERS in test_docs.py")
        return m.group(0)

    code = re.sub(r"""(["'])(/data/[^"']*|/shared/[^"']*|out/demo)\1""", replace, code)
    code = code.replace(f'"{REMOTE_PLACEHOLDER}"', f'"{paths.remote}"')
    for pattern, replacement in SHRINK:
        code = re.sub(pattern, replacement, code)
    return code


@pytest.fixture(scope="module")
def paths(ray_local, tmp_path_factory) -> Paths:
    """The test image tree converted with a short side of 224, so the examples' 224-pixel crops fit."""
    base = tmp_path_factory.mktemp("docs")
    tree = make_tree(str(base / "images"))
    convert(job(tree.root, str(base / "dataset"), transform=TransformConfig(resize_shorter=224)))
    os.makedirs(base / "scratch")
    return Paths(str(base / "dataset"), tree.root, str(base / "scratch"))


def test_markers_and_placeholders_are_applied_as_documented():
    text = ('Intro\n```python\nds = ShardedDataset("/data/in1k-train")\n```\n'
            '<!-- not run: needs a Ray cluster -->\n```python\nray.init("auto")\n```\n'
            '```bash\nmake convert\n```\n```python\nopen("/data/unknown")\n```\n')
    first, marked, unknown = blocks("X.md", text)
    assert (first.line, first.skip, marked.skip, unknown.skip) == (2, None, "needs a Ray cluster", None)
    paths = Paths("/tmp/ds", "/tmp/images", "/tmp/scratch")
    assert substitute(first.code, paths, "X.md:2") == 'ds = ShardedDataset("/tmp/ds")\n'
    with pytest.raises(AssertionError, match="unknown placeholder path '/data/unknown'"):
        substitute(unknown.code, paths, "X.md:11")


def test_documents_run_elsewhere_are_run_there():
    for doc, test in RUN_ELSEWHERE.items():
        assert os.path.exists(os.path.join(REPO, doc)), f"{doc} is gone: remove it from RUN_ELSEWHERE"
        test_file = os.path.join(REPO, test.split(",")[0])
        assert os.path.basename(doc) in open(test_file).read(), f"{test_file} does not run {doc}'s examples"


def test_every_shrink_rule_still_matches_a_document():
    code = "".join(b.code for doc in DOCS for b in blocks(doc) if not b.skip)
    stale = [p for p, _ in SHRINK if not re.search(p, code)]
    assert not stale, f"SHRINK rules that match no example any more (remove them): {stale}"


def test_documents_have_examples_and_few_are_not_run():
    found = [b for doc in DOCS for b in blocks(doc)]
    assert {"README.md", "docs/TRAINING.md", "docs/CONVERTING.md", "docs/FORMAT.md"} <= {b.doc for b in found}
    skipped = [f"{b.doc}:{b.line} ({b.skip})" for b in found if b.skip]
    assert len(skipped) <= 3, f"too many examples are not run: {skipped}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def format_namespace(paths: Paths) -> dict:
    import hashlib
    import lmdb
    from lmdbshard.format.record import Field, pack_record
    shard = json.load(open(os.path.join(paths.dataset, "manifest.json")))["shards"][0]
    env = lmdb.open(os.path.join(paths.dataset, shard["file"]), subdir=False, readonly=True, lock=False)
    return {"_env": env, "txn": env.begin(), "shard": shard, "hashlib": hashlib, "Field": Field,
            "pack_record": pack_record, "num_sources": 10, "seed": 0, "rounds": 1}


def check_readme(ns: dict, paths: Paths, original: Paths) -> None:
    assert len(ns["ds"]) == 21 and ns["img"].dtype == np.uint8 and ns["img"].ndim == 3
    assert ns["images"].shape[1:] == (3, 224, 224) and str(ns["images"].dtype) == "torch.uint8"
    assert 0.0 <= float(ns["x"].min()) and float(ns["x"].max()) <= 1.0
    seen = sum(len(labels) for _, labels in ns["loader"])   # the last loader: over the remote copy
    assert seen == 21 - 21 % 4   # drop_last: every full batch of the dataset
    local = ShardedDataset(original.dataset, decode=False)
    remote = ShardedDataset(paths.remote, decode=False)   # the uploaded copy, through the same cache
    assert [bytes(remote[i][0]) for i in range(21)] == [bytes(local[i][0]) for i in range(21)]


def check_converting(ns: dict, paths: Paths, original: Paths) -> None:
    assert ns["tmp"].closed and not os.path.exists(ns["tmp"].out)
    assert set(ns["sample"]) == {"image"} and ns["sample"]["image"].shape[2] == 3
    assert min(ns["sample"]["image"].shape[:2]) == 64
    assert os.listdir(paths.scratch) == []   # the temporary folder went away with the block


def check_training(ns: dict, paths: Paths, original: Paths) -> None:
    import torch
    assert ns["images"].shape[1:] == (3, 224, 224)
    state = torch.load("checkpoint.pt")["sampler"]
    assert (state["epoch"], state["yielded"]) == (1, 20)   # the last save: 5 batches of 4 into the last epoch
    assert ns["result"].error is None and os.path.isdir(os.path.join("ray-results", "in1k"))
    assert len(ns["ds"]) == 42 and ns["ds"].classes == ShardedDataset(original.dataset).classes


def check_format(ns: dict, paths: Paths, original: Paths) -> None:
    assert ns["order"] == [1, 4, 5, 7, 6, 9, 0, 3, 2, 8]   # the test vector FORMAT.md gives for N = 10, seed 0
    ns["_env"].close()   # the fragments' txn; the minimal reader opens every shard of this copy itself
    reader = ns["Reader"](paths.dataset)
    ds = ShardedDataset(original.dataset, decode=False)
    assert len(reader) == len(ds)
    for i in range(len(ds)):
        payload, enc, shape, label = reader[i]
        stored, want_label = ds[i]
        assert (bytes(payload), label) == (bytes(stored), want_label)


CHECKS = {"README.md": check_readme, "docs/CONVERTING.md": check_converting,
          "docs/TRAINING.md": check_training, "docs/FORMAT.md": check_format}


@pytest.mark.parametrize("doc", [doc for doc in DOCS if blocks(doc)])
def test_examples_run(doc, paths, ray_local, tmp_path, monkeypatch, request):
    found = blocks(doc)
    runnable = [b for b in found if not b.skip]
    if not runnable:
        pytest.skip(f"{doc}: every python example is marked not run")
    for module in sorted({m for b in runnable for m in OPTIONAL.findall(b.code)}):
        pytest.importorskip(module, reason=f"{doc}'s examples need {module}, an optional install")
    monkeypatch.chdir(tmp_path)
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
                        "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    # each document reads its own copy: py-lmdb refuses to open a file twice in one process, and FORMAT.md's
    # reader opens the shards with plain lmdb.open while earlier documents' datasets may hold them open
    original, paths = paths, Paths(copytree(paths.dataset, str(tmp_path / "dataset")), paths.images, paths.scratch)
    if any(REMOTE_PLACEHOLDER in b.code for b in runnable):   # a copy on the local S3 server, read through a cache here
        paths.remote = upload_tree(original.dataset, f"{request.getfixturevalue('bucket')}/in1k-train")
        monkeypatch.setenv("LMDBSHARD_CACHE", str(tmp_path / "cache"))
    ns = format_namespace(paths) if doc == "docs/FORMAT.md" else {}
    ns["__name__"] = "__main__"   # as in a script: Ray pickles functions defined here by value
    try:
        for b in runnable:
            where = f"{doc}:{b.line}"
            code = compile(substitute(b.code, paths, where), where, "exec")
            exec(code, ns)
        if doc in CHECKS:
            CHECKS[doc](ns, paths, original)
    finally:
        if "torch.distributed" in sys.modules:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
    for b in found:
        if b.skip:
            warnings.warn(f"{doc}:{b.line}: example not run: {b.skip}")
