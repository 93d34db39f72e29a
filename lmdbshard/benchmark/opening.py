"""Opening a dataset of many shards: the time and the memory it costs.

The dataset is written directly (``write_dataset``: one 2x2 raw image per shard, a real
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

from lmdbshard.format.record import MANIFEST_NAME, Field
from lmdbshard.write.direct import Sample, write_dataset


@dataclass
class OpenResult:
    shards: int
    seconds: float
    rss_growth_mb: float
    first_read_s: float


def make_many_shards(root: str, n: int) -> str:
    """``n`` one-sample shards under ``root`` (kept when a complete one is there already)."""
    try:
        with open(os.path.join(root, MANIFEST_NAME)) as f:
            if len(json.load(f)["shards"]) == n:
                return root
    except (OSError, ValueError, KeyError):
        pass
    image = Field("image", "raw", bytes(12), (2, 2, 3), "uint8", "HWC")
    return write_dataset(root, ([Sample([image], label=k % 2)] for k in range(n)), classes=["even", "odd"])


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
