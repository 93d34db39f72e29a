"""Opening a dataset of many shards: the time and the memory it costs.

The dataset is built directly in the shard format (one 2x2 raw image per shard, a real
LMDB file each, and a manifest), not through Ray: ten thousand one-sample conversion tasks
would time Ray, not opening. It is kept between runs. The open is timed in a fresh Python
process, after its imports, so the RSS growth is that of ``ShardedDataset(root)`` alone;
one sample of the first and of the last shard is then read to show the shards open lazily.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import lmdb

from lmdbshard import __version__
from lmdbshard.write.atomic import write_json_atomic
from lmdbshard.format.record import (
    MANIFEST_NAME, SHARD_DIR, Field, RecordHasher, encode_key, pack_record, shard_filename,
)
from lmdbshard.format.manifest import DatasetFacts, ShardEntry, build_manifest


@dataclass
class OpenResult:
    shards: int
    seconds: float
    rss_growth_mb: float
    first_read_s: float


def make_many_shards(root: str, n: int) -> str:
    """``n`` one-sample shards under ``root`` (kept when a complete one is there already)."""
    manifest = os.path.join(root, MANIFEST_NAME)
    try:
        with open(manifest) as f:
            if len(json.load(f)["shards"]) == n:
                return root
    except (OSError, ValueError, KeyError):
        pass
    os.makedirs(os.path.join(root, SHARD_DIR), exist_ok=True)
    entries = []
    for k in range(n):
        key, value = encode_key(k), pack_record([Field("image", "raw", bytes(12), (2, 2, 3), "uint8", "HWC")],
                                                label=k % 2, source_index=k, round=0)
        rel = f"{SHARD_DIR}/{shard_filename(k)}"
        env = lmdb.open(os.path.join(root, rel), subdir=False, map_size=1 << 20, lock=False, sync=False,
                        metasync=False, meminit=False)
        with env.begin(write=True) as txn:
            txn.put(key, value, append=True)
        env.close()
        hasher = RecordHasher()
        hasher.update(key, value)
        entries.append(ShardEntry(k, rel, k, 1, os.path.getsize(os.path.join(root, rel)), hasher.hexdigest()))
    facts = DatasetFacts(classes=["even", "odd"], class_counts=[(n + 1) // 2, n // 2], shard_size=1,
                         fields=[{"name": "image", "encoding": "raw", "dtype": "uint8", "layout": "HWC"}],
                         config={"transform": {}}, library_version=__version__)
    doc = build_manifest(facts, entries, [], n, {})
    write_json_atomic(manifest, doc)
    return root


_PROBE = """
import json, sys, time
from lmdbshard import ShardedDataset

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

before = rss()
t = time.perf_counter()
ds = ShardedDataset(sys.argv[1])
seconds = time.perf_counter() - t
grown = rss() - before
t = time.perf_counter()
ds[0], ds[len(ds) - 1]
print(json.dumps({"shards": len(ds.shard_sizes), "seconds": seconds, "rss": grown,
                  "first_read_s": time.perf_counter() - t}))
"""


def time_open(root: str) -> OpenResult:
    out = subprocess.run([sys.executable, "-c", _PROBE, root], check=True, capture_output=True, text=True)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return OpenResult(d["shards"], d["seconds"], d["rss"] / 1e6, d["first_read_s"])
