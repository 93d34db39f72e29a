"""The manifest format, pinned: a fixed tiny conversion compared key by key with tests/golden/manifest.json.

Everything deterministic is compared exactly: keys and their order, the plan and listing digests,
every shard's index, file, keys, count and record checksum, the classes (one of them a Latin-1
folder name), the skipped sample with its exact path bytes. Volatile values are masked explicitly,
by ``MASKS``; a change to the format shows up here as a diff to review (and a format_version question).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from PIL import Image

from lmdbshard import StorageConfig, TransformConfig, convert
from lmdbshard.format.manifest import load_manifest
from lmdbshard.write.resume import OutputDir

from helpers import job

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "manifest.json")


def _mask(what: str, check=lambda v: True):
    def mask(value):
        assert check(value), f"{what}: unexpected {value!r}"
        return f"<{what}>"
    return mask


def _positive(v) -> bool:
    return type(v) is int and v > 0


#: key path (with "*" for every list item or every key of an object) -> masking function
MASKS = {
    ("lmdbshard_version",): _mask("package version", lambda v: isinstance(v, str) and v),
    ("identity_sha256",): _mask("sha256 of the settings: changes when a setting is added",
                                lambda v: isinstance(v, str) and len(v) == 64),
    ("config",): _mask("the job's configuration, informational", lambda v: isinstance(v, dict) and "source" in v),
    ("shards", "*", "bytes"): _mask("file size: depends on the lmdb version", _positive),
    ("shards", "*", "file_sha256"): _mask("sha256 of the file: depends on the lmdb version",
                                          lambda v: isinstance(v, str) and len(v) == 64),
    ("errors", "*", "reason"): _mask("Pillow's words", lambda v: isinstance(v, str) and v),
    ("stats", "stage_seconds", "*"): _mask("seconds", lambda v: isinstance(v, (int, float)) and v >= 0),
    ("stats", "stage_shares"): _mask("shares of the stage time", lambda v: isinstance(v, dict)),
    ("stats", "bytes"): _mask("file sizes: depend on the lmdb version", _positive),
    ("stats", "last_run", "wall_s"): _mask("seconds", lambda v: v > 0),
    ("stats", "last_run", "ray_startup_s"): _mask("seconds", lambda v: v >= 0),
    ("stats", "last_run", "images_per_s"): _mask("rate", lambda v: v > 0),
}


def masked(value, path=()):
    for pattern, mask in MASKS.items():
        if len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path)):
            return mask(value)
    if isinstance(value, dict):
        return {k: masked(v, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, path + ("*",)) for v in value]
    return value


def make_source(root: str) -> None:
    """Two classes of three PNGs whose pixels follow from (class, index); one class folder and one
    broken file have Latin-1 names, which are not UTF-8."""
    for label, folder in enumerate([b"cat", b"\xe9t\xe9"]):
        base = os.path.join(os.fsencode(root), folder)
        os.makedirs(base)
        for i in range(3):
            arr = np.zeros((6 + i, 5 + label, 3), np.uint8)
            arr[..., 0], arr[..., 1], arr[..., 2] = 40 * i, 100 * label, np.arange(5 + label) * 9
            Image.fromarray(arr).save(os.path.join(base, b"img_%d.png" % i))
    with open(os.path.join(os.fsencode(root), b"\xe9t\xe9", b"caf\xe9.png"), "wb") as f:
        f.write(b"not a png")


def golden_manifest(tmp_path) -> dict:
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    make_source(src)
    convert(job(src, out, shard_size=4, seed=7, max_error_rate=0.5, transform=TransformConfig(),
                storage=StorageConfig(encoding="raw")))
    with open(os.path.join(out, "manifest.json"), "rb") as f:
        text = f.read().decode("utf-8")       # strict UTF-8 ...
    assert "\\udc" not in text                 # ... with no lone surrogates
    plan = open(os.path.join(out, "plan.json"), "rb").read().decode("utf-8")
    assert "\\udc" not in plan and os.fsdecode(b"\xe9t\xe9/caf\xe9.png") in OutputDir(out).source_paths()
    m = load_manifest(out)                     # the exact names come back from their bytes
    assert m.classes == ["cat", os.fsdecode(b"\xe9t\xe9")]
    assert [os.fsencode(e.path) for e in m.errors] == [b"\xe9t\xe9/caf\xe9.png"]
    for e in m.shards:                         # file_sha256 is the file's own digest
        with open(m.shard_path(e), "rb") as f:
            assert e.file_sha256 == hashlib.sha256(f.read()).hexdigest()
    return masked(json.loads(text))


def test_manifest_matches_the_golden_file(ray_local, tmp_path):
    got = golden_manifest(tmp_path)
    if os.environ.get("LMDBSHARD_WRITE_GOLDEN"):   # after a deliberate format change: rewrite, then review the diff
        with open(GOLDEN, "w") as f:
            json.dump(got, f, indent=1, ensure_ascii=False)
            f.write("\n")
    with open(GOLDEN, encoding="utf-8") as f:
        expected = json.load(f)
    assert list(got) == list(expected)                  # the keys, in order
    for key in expected:
        assert got[key] == expected[key], key
