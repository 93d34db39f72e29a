"""Hydra entry point of ``make convert``: compose conf/<name>.yaml with overrides, build the typed config, convert.

    python jobs/convert.py --config-name imagenet source.root=/data/train out=/data/out
    python jobs/convert.py --config-name imagenet -m +split=train,val imagenet.root=/data/imagenet imagenet.out=/data/in1k
"""

import sys

import hydra
from omegaconf import DictConfig

from hydra_app import (ConvertJob, check_command_line, compose_once, composed, conversion, conversion_configs, finish,
                       reported)
from lmdbshard import convert
from lmdbshard.tools.demo import make_imagefolder

DEFAULT = "demo"


@hydra.main(version_base="1.3", config_path="../conf", config_name=DEFAULT)
def main(cfg: DictConfig) -> None:
    with reported():
        job: ConvertJob = composed(cfg)
        if job.demo is not None and job.source.root:
            make_imagefolder(job.source.root, job.demo)
        result = convert(conversion(job))
    print(result.summary())


if __name__ == "__main__":
    with reported():
        check_command_line(sys.argv[1:], ConvertJob, conversion_configs(), DEFAULT)
        compose_once(sys.argv[1:])
    main()
    finish()
