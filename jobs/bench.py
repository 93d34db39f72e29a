"""Hydra entry point of ``make bench``: compose conf/bench.yaml with overrides, build the typed
configs, run the benchmark, print the table.

    python jobs/bench.py bench.workers=[1,2,4,8,16] bench.source=/data/imagenet/train
"""

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from lmdbshard import LmdbshardError, parse_config
from lmdbshard.benchmark import BenchConfig, run_bench

log = logging.getLogger("lmdbshard")


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    try:
        bench = parse_config(data.pop("bench"), BenchConfig)
        report = run_bench(bench, parse_config(data))
    except (LmdbshardError, OSError, TypeError) as exc:
        print(f"lmdbshard bench: error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, (ValueError, TypeError)) else 1)
    print(report.table())
    if bench.json:
        print(f"\n  JSON: {bench.json}")


if __name__ == "__main__":
    main()
