"""``lmdbshard bench-read``: sequential and random read throughput of one dataset, on this machine.

Four passes in one process, each on a freshly opened dataset (so opening the
shards is part of the cost): stored bytes in index order, stored bytes in random
order, then the same two orders decoded into arrays as ``ds[i]`` returns them.
Index order is the fast order and, because the samples were shuffled when
written, it is already a shuffled stream. The page cache is left as it is: the
first pass reads from disk unless the shards were read recently.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import lmdb
import numpy as np
import PIL
from PIL import features

from lmdbshard.read.decode import decode_field
from lmdbshard.read.dataset import ShardedDataset
from lmdbshard.errors import ConfigError
from lmdbshard.format.record import unpack_record
from lmdbshard.read.roots import load_root
from lmdbshard.write.progress import plural


@dataclass(frozen=True)
class Pass:
    order: str             # sequential | random
    decode: bool
    samples: int
    seconds: float
    bytes: int             # stored record bytes read

    @property
    def per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        what = f"{self.order} {'read+decode' if self.decode else 'read'}"
        unit = "images/s" if self.decode else "records/s"
        return (f"  {what:<22} {self.samples:>7} samples {self.seconds:>8.3f} s {self.per_s:>10.0f} {unit:<9} "
                f"{self.mb_per_s:>8.1f} MB/s")


CHECK_EVERY = 64   # samples between looks at the clock, so the clock costs nothing per sample


def measure(step: Callable[[int], object], indices: Iterable[int], max_seconds: float,
            size: Callable[[object], int] = len) -> tuple[int, float, int]:
    """Call ``step(i)`` for each index until done or past ``max_seconds``; returns (calls, seconds,
    sum of ``size`` of the results). The one read timer of ``bench-read`` and ``make bench``."""
    n = nbytes = 0
    t0 = time.perf_counter()
    deadline = t0 + max_seconds
    for i in indices:
        nbytes += size(step(i))
        n += 1
        if n % CHECK_EVERY == 0 and time.perf_counter() > deadline:
            break
    return n, time.perf_counter() - t0, nbytes


def measure_interleaved(steps: Sequence[Callable[[int], object]], indices: Sequence[int], max_seconds: float,
                        size: Callable[[object], int] = len) -> list[tuple[int, float, int]]:
    """``measure`` for several steps over the same indices, taking turns chunk by chunk (the first in
    each turn rotating), so that load from elsewhere on the machine slows each of them alike; stops
    when their summed time passes ``max_seconds``. One (calls, seconds, bytes) per step.

    Step ``j`` walks the indices rotated by ``j / len(steps)`` of their length, so steps that read the
    same records never read them straight after one another (the second would find them in CPU cache)."""
    totals = [[0, 0.0, 0] for _ in steps]
    shift = len(indices) // max(1, len(steps))
    orders = [list(indices[j * shift:]) + list(indices[:j * shift]) for j in range(len(steps))]
    spent = 0.0
    for c, start in enumerate(range(0, len(indices), CHECK_EVERY)):
        for j in range(len(steps)):
            slot = (j + c) % len(steps)
            n, seconds, nbytes = measure(steps[slot], orders[slot][start:start + CHECK_EVERY], float("inf"), size)
            totals[slot][0] += n
            totals[slot][1] += seconds
            totals[slot][2] += nbytes
            spent += seconds
        if spent > max_seconds:
            break
    return [tuple(t) for t in totals]


def _timed_pass(root: str, order: str, indices: Iterable[int], decode: bool, max_seconds: float) -> Pass:
    t0 = time.perf_counter()
    with ShardedDataset(root) as ds:
        if decode:   # what ds[i] does
            def step(i: int) -> int:
                value = ds.raw(i)
                decode_field(unpack_record(value).fields[ds.field])
                return len(value)
        else:
            def step(i: int) -> int:
                return len(bytes(ds.raw(i)))   # the copy a consumer outside the read transaction makes
        n, _, nbytes = measure(step, indices, max_seconds - (time.perf_counter() - t0), size=int)
    return Pass(order, decode, n, time.perf_counter() - t0, nbytes)


def bench_read(root: str, n: int = 2000, seed: int = 0, max_seconds: float = 10.0) -> list[Pass]:
    """Run the four passes over up to ``n`` samples each, each stopped after ``max_seconds``."""
    if n <= 0:
        raise ConfigError(f"--n must be a positive number of samples, got {n}")
    if max_seconds <= 0:
        raise ConfigError(f"--max-seconds must be > 0, got {max_seconds}")
    total = len(ShardedDataset(root))
    if total == 0:
        raise ConfigError(f"{root!r} holds no samples; nothing to read")
    k = min(n, total)
    rng = np.random.default_rng(seed)
    random_order = rng.choice(total, size=k, replace=False).tolist()
    passes = []
    for decode in (False, True):
        passes.append(_timed_pass(root, "sequential", range(k), decode, max_seconds))
        passes.append(_timed_pass(root, "random", random_order, decode, max_seconds))
    return passes


def environment() -> dict:
    return {"cpus": os.cpu_count(), "lmdb": lmdb.__version__, "pillow": PIL.__version__,
            "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo"))}


def report(root: str, passes: list[Pass]) -> str:
    m = load_root(root)
    size = sum(s.bytes for s in m.shards)
    enc = ", ".join(f["encoding"] for f in m.data.get("fields", []))
    env = environment()
    lines = [f"bench-read {root}: {plural(m.num_samples, 'sample')} in {plural(len(m.shards), 'shard')} ({size / 1e6:.1f} MB, {enc}); "
             f"1 process on {env['cpus']} CPUs, lmdb {env['lmdb']}, Pillow {env['pillow']} "
             f"(libjpeg-turbo: {env['libjpeg_turbo']})"]
    lines += [p.line() for p in passes]
    lines.append("  (sequential = index order, already shuffled; the first pass may read from disk, "
                 "later ones from the page cache)")
    return "\n".join(lines)


def as_json(root: str, passes: list[Pass]) -> dict:
    return {"root": root, "environment": environment(),
            "passes": [asdict(p) | {"per_s": round(p.per_s, 1), "mb_per_s": round(p.mb_per_s, 2)} for p in passes]}
