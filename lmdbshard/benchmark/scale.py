"""The ``scale`` section of ``make bench``: what grows with the dataset, measured without image files.

For each synthetic listing size: the plan files and the driver's peak RSS per sample
(``scale_plan``), and one rank of 8's epoch order against a NumPy permutation of its share
(``scale_sampler``); once, the resume check of the benchmark's conversion output out of page cache
against a plain ``read()`` of the same files.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from lmdbshard.benchmark import scale_plan, scale_sampler
from lmdbshard.format.manifest import load_manifest

log = logging.getLogger("lmdbshard")


@dataclass(frozen=True)
class Scale:
    plans: scale_plan.ScaleReport
    samplers: list[scale_sampler.SamplerScale] = field(default_factory=list)

    def rows(self) -> list[str]:
        return self.plans.rows() + [row for s in self.samplers for row in s.rows()]

    def as_json(self) -> dict:
        return {"plans": [asdict(p) for p in self.plans.plans],
                "check": None if self.plans.check is None else asdict(self.plans.check),
                "samplers": [asdict(s) for s in self.samplers], "rows": self.rows()}


def run_scale(sizes: list[int], converted: str) -> Scale:
    """Every size through the plan steps (a fresh process each) and the sampler; then the resume check of
    ``converted`` (the benchmark's own conversion output) out of page cache."""
    log.info("bench: scale section at %s samples (no image files)", ", ".join(f"{n:,}" for n in sizes))
    plans = scale_plan.run(tuple(sizes), check=False)
    check = scale_plan.measure_check(converted, load_manifest(converted).shards)
    samplers = [scale_sampler.measure(samples=n) for n in sizes]
    return Scale(scale_plan.ScaleReport(plans.plans, check), samplers)
