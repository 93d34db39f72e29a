"""The whole command, interpreter start to summary: ``jobs/convert.py --config-name imagenet`` over
the corpus in a subprocess, and what it pays beyond the shards' own work, item by item.

- interpreter, imports and Hydra: ``jobs/convert.py ... --cfg job`` (composes, prints, exits);
  this and Ray's import are the median of three runs;
- listing, plan and output preparation: ``convert``'s start, timed in this process;
- importing Ray (the job imports it only once it runs shards): ``python -c "import ray"`` less ``python -c pass``,
  each ending as the job does, without the interpreter's teardown (``os._exit``);
- Ray start-up, shards and Ray shutdown: the job's own ``timings:`` log line;
- the rest (the output lock, the manifest, the summary, the interpreter's exit): the command's time less
  all of the above.
The fixed costs are every item but Ray's (import, start-up, shutdown) and the shards.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("lmdbshard")

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TIMINGS = re.compile(r"timings: Ray start-up ([\d.]+) s, shards ([\d.]+) s, Ray shutdown ([\d.]+) s")


@dataclass
class CommandTimes:
    images: int
    wall_s: float
    ray_startup_s: float
    shards_s: float
    ray_shutdown_s: float
    ray_import_s: float
    fixed: dict[str, float] = field(default_factory=dict)   # fixed cost -> seconds

    @property
    def fixed_s(self) -> float:
        return sum(self.fixed.values())


def _job(root: str, out: str, *extra: str) -> list[str]:
    return [sys.executable, os.path.join(_REPO, "jobs", "convert.py"), "--config-name", "imagenet",
            f"source.root={root}", f"out={out}", "progress=log", *extra]


def _timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=_REPO, timeout=900)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:3])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return seconds, proc.stdout + proc.stderr


def _median(cmd: list[str], times: int = 3) -> float:
    """The median of ``times`` runs: a short command's one run is at the mercy of other work on the machine."""
    return statistics.median(_timed(cmd)[0] for _ in range(times))


def _listing_and_plan(root: str, out: str) -> float:
    """``convert``'s start (config check, listing, plan) and the output's preparation, in this process."""
    from lmdbshard.write.config import ConvertConfig, SourceConfig
    from lmdbshard.write.coordinator import _start
    cfg = ConvertConfig(source=SourceConfig(root=root), out=out, shard_size=2560)
    t = time.perf_counter()
    job = _start(cfg, None)
    os.makedirs(job.out, exist_ok=True)
    job.output.prepare(job.cfg, job.listing, job.plan)
    return time.perf_counter() - t


def time_command(root: str, work: str, images: int) -> CommandTimes:
    """Run the whole command once (Ray down: it starts its own cluster) and take its time apart."""
    out = os.path.join(work, "command")
    shutil.rmtree(out, ignore_errors=True)
    startup_s = _median(_job(root, out, "--cfg", "job"))
    listing_s = _listing_and_plan(root, os.path.join(work, "command-plan"))
    bare = _median([sys.executable, "-c", "import os; os._exit(0)"])
    ray_import_s = max(0.0, _median([sys.executable, "-c", "import os, ray; os._exit(0)"]) - bare)
    wall_s, text = _timed(_job(root, out))
    found = _TIMINGS.search(text)
    if found is None:
        raise RuntimeError(f"jobs/convert.py printed no timings line: {text[-2000:]}")
    ray_up, shards, ray_down = (float(x) for x in found.groups())
    fixed = {"interpreter, imports, Hydra": startup_s, "listing, plan, output": listing_s}
    ray_s = ray_import_s + ray_up + ray_down
    fixed["the rest (lock, manifest, summary, exit)"] = max(0.0, wall_s - ray_s - shards - sum(fixed.values()))
    times = CommandTimes(images, wall_s, ray_up, shards, ray_down, ray_import_s, fixed)
    log.info("bench: whole command %.2f s: import ray %.2f s, Ray start-up %.2f s, shards %.2f s, Ray shutdown "
             "%.2f s, fixed %s", wall_s, ray_import_s, ray_up, shards, ray_down,
             ", ".join(f"{k} {v:.2f} s" for k, v in fixed.items()))
    return times
