"""Hydra entry point: compose conf/<name>.yaml with overrides, build the typed config, convert.

    python jobs/convert.py --config-name imagenet source.root=/data/train out=/data/out
    python jobs/convert.py --config-name imagenet -m +split=train,val imagenet.root=/data/imagenet imagenet.out=/data/in1k
"""

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from lmdbshard import ConfigError, LmdbshardError, convert, parse_config
from lmdbshard.errors import JobInterrupted, exit_status
from lmdbshard.tools.demo import DemoSpec, make_imagefolder

log = logging.getLogger("lmdbshard")


@hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    demo = data.pop("demo", None)
    data.pop("imagenet", None)   # conf/imagenet.yaml's paths, already interpolated into source and out
    try:
        job = parse_config(data)
        if demo is not None:
            try:
                spec = DemoSpec(**demo)
            except TypeError as exc:   # an unknown demo.* key; any other TypeError is a bug and keeps its traceback
                raise ConfigError(f"demo: {exc}") from None
            make_imagefolder(job.source.root, spec)
        result = convert(job)
    except KeyboardInterrupt as exc:   # JobInterrupted says what is kept; a plain Ctrl-C came before any work
        print(f"lmdbshard: {exc if isinstance(exc, JobInterrupted) else 'interrupted; rerun the same command'}",
              file=sys.stderr)
        sys.exit(exit_status(exc))
    except (LmdbshardError, OSError) as exc:
        print(f"lmdbshard: error: {exc}", file=sys.stderr)
        sys.exit(exit_status(exc))
    print(result.summary())


if __name__ == "__main__":
    main()
