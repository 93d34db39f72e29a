"""Hydra entry point of ``make bench``: compose conf/benchmark.yaml with overrides, build the typed
configs, run the benchmark, print the table.

    python jobs/benchmark.py bench.workers=[1,2,4,8,16] bench.source=/data/imagenet/train
"""

import sys

import hydra
from omegaconf import DictConfig

from hydra_app import (BENCHMARK, BenchmarkJob, check_command_line, compose_once, composed, conversion, finish,
                       reported)
from lmdbshard.benchmark import run_bench


@hydra.main(version_base="1.3", config_path="../conf", config_name=BENCHMARK)
def main(cfg: DictConfig) -> None:
    with reported():
        job: BenchmarkJob = composed(cfg)
        report = run_bench(job.bench, conversion(job))
    print(report.table())
    if job.bench.json:
        print(f"\n  JSON: {job.bench.json}")


if __name__ == "__main__":
    with reported():
        check_command_line(sys.argv[1:], BenchmarkJob, [BENCHMARK], BENCHMARK)
        compose_once(sys.argv[1:])
    main()
    finish()
