"""What the two Hydra jobs share (``jobs/convert.py``, ``jobs/benchmark.py``).

- The schema: the library's config dataclasses, registered with Hydra's ConfigStore in the group
  ``schema`` (conf/base.yaml picks ``convert``, conf/benchmark.yaml ``benchmark``), so OmegaConf refuses
  unknown keys and wrong types in the YAML files, and every default is the dataclass's.
- ``check_command_line``: the config name and each ``key=value`` checked against that schema before
  Hydra composes, so a typo gets one line with the closest key instead of Hydra's advice to append it.
- ``composed``: the composed config as dataclasses; a value left at ``???`` (MISSING) is unset.
- ``compose_once``: Hydra composes a run's config twice, once only to read ``hydra.mode``; lmdbshard's
  configs never set it, so for them the first composition (0.1-0.2 s) is skipped.
- ``finish``: end the process once the job is done, skipping the interpreter's teardown of every module.
- ``reported``: any lmdbshard or OS error as one line ``lmdbshard: error: ...`` and ``exit_status``;
  Ctrl-C as its message alone, status 130.

The library never imports this module, nor Hydra.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import difflib
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from hydra._internal.hydra import Hydra
from hydra._internal.utils import get_args_parser   # Hydra's own command-line parser, so flags mean the same
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException
from omegaconf import MISSING, DictConfig, OmegaConf

from lmdbshard.benchmark.config import BenchConfig
from lmdbshard.errors import ConfigError, JobInterrupted, LmdbshardError, exit_status
from lmdbshard.tools.demo import DemoSpec
from lmdbshard.write.config import ConvertConfig
from lmdbshard.write.parse import coerce, setting_type

CONF = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf"))
BENCHMARK = "benchmark"   # conf/benchmark.yaml configures make bench; it is not a conversion


@dataclass
class ImagenetPaths:
    """conf/imagenet.yaml's ``imagenet:`` section: the paths conf/split/*.yaml build source.root and out from."""

    root: Optional[str] = MISSING   # holds train/<synset>/, val/ILSVRC2012_val_*.JPEG, LOC_val_solution.csv
    out: Optional[str] = MISSING    # gets train/ and val/


@dataclass
class ConvertJob(ConvertConfig):
    """A conversion, plus what a config may add around it."""

    demo: Optional[DemoSpec] = None           # conf/demo.yaml: generate source.root before converting
    imagenet: Optional[ImagenetPaths] = None  # conf/imagenet.yaml with +split=train,val


@dataclass
class BenchmarkJob(ConvertConfig):
    """``make bench``: the conversion under test, and what to compare it with."""

    bench: BenchConfig = field(default_factory=BenchConfig)


def _register() -> None:
    store = ConfigStore.instance()
    store.store(group="schema", name="convert", node=ConvertJob, package="_global_")
    store.store(group="schema", name=BENCHMARK, node=BenchmarkJob, package="_global_")
    OmegaConf.register_new_resolver("lmdbshard_configs", lambda: ", ".join(conversion_configs()), replace=True)
    OmegaConf.register_new_resolver("lmdbshard_groups", _groups_help, replace=True)


def conversion_configs() -> list[str]:
    """The names ``--config-name`` (``make convert CONF=``) takes: conf/*.yaml but the benchmark's."""
    return sorted(n[:-5] for n in os.listdir(CONF) if n.endswith(".yaml") and n[:-5] != BENCHMARK)


def _group_options(group: str) -> list[str]:
    return sorted(n[:-5] for n in os.listdir(os.path.join(CONF, group)) if n.endswith(".yaml"))


def _groups() -> list[str]:
    return sorted(d for d in os.listdir(CONF) if os.path.isdir(os.path.join(CONF, d)))


def _groups_help() -> str:
    return "\n".join(f"{g}: {', '.join(_group_options(g))}" for g in _groups())


def conversion(job: ConvertConfig) -> ConvertConfig:
    """The plain ``ConvertConfig`` of a job (what the manifest records), without demo/imagenet/bench."""
    return ConvertConfig(**{f.name: getattr(job, f.name) for f in dataclasses.fields(ConvertConfig)})


def check_command_line(argv: list[str], schema: type, configs: list[str], default: str) -> None:
    """Refuse an unknown config name, group option or key, or a value of the wrong type, in one line."""
    args = get_args_parser().parse_args(argv)   # a bad flag: argparse's usage and status 2, as Hydra's
    own = bool(args.config_dir or args.config_path)   # the user's own configs: names and options are theirs
    name = args.config_name or default
    if name not in configs and not own:
        what = f"{name!r} is make bench's config, not a conversion" if name == BENCHMARK else f"no config {name!r}"
        raise ConfigError(f"{what}; the configs are {', '.join(configs)} "
                          f"(conf/NAME.yaml, chosen with --config-name NAME or make convert CONF=NAME)")
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException as exc:
        raise ConfigError(f"cannot read the override: {str(exc).splitlines()[0]}") from None
    for override in overrides:
        _check_override(override, schema, own)


def compose_once(argv: list[str]) -> None:
    """Skip the composition Hydra makes before a run only to read ``hydra.mode`` (``Hydra.get_mode``): with
    lmdbshard's own configs and no ``hydra.mode`` override it is unset, and Hydra then takes the mode from
    ``-m``/``--multirun``, as it does when ``get_mode`` finds none. Configs of the user's own (``--config-dir``,
    ``--config-path``) may set it, so for those Hydra composes twice as usual."""
    args = get_args_parser().parse_args(argv)
    if args.config_dir or args.config_path or any("hydra.mode" in o or o.startswith("hydra/") for o in args.overrides):
        return
    Hydra.get_mode = _no_mode


def _no_mode(self: Hydra, config_name: Optional[str], overrides: list[str]) -> None:
    return None   # what Hydra.get_mode returns for a config that does not set hydra.mode


def _check_override(o: Override, schema: type, own: bool = False) -> None:
    key = o.key_or_group
    if key == "hydra" or key.startswith("hydra.") or o.package is not None:
        return   # Hydra's own settings, and group@package: Hydra checks those
    if o.is_sweep_override() and not o.is_discrete_sweep():
        values: list[Any] = []   # glob or interval sweeps: checked when composed
    else:
        values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
    if key in _groups() and all(isinstance(v, str) for v in values):
        options = _group_options(key)
        for v in values:
            if v not in options and not (o.is_delete() or own):
                close = difflib.get_close_matches(v, options, n=1)
                hint = f"did you mean {key}={close[0]}? " if close else ""
                raise ConfigError(f"unknown {key} option {v!r}; {hint}the options are {', '.join(options)} "
                                  f"(conf/{key}/)")
        return
    tp = setting_type(schema, key)
    if o.is_add() and tp is not Any:
        raise ConfigError(f"{key} is a setting already; drop the '+': {key}={o.get_value_element_as_str()}")
    if o.is_delete():
        return
    for value in values:
        if not (isinstance(value, str) and "${" in value):   # an interpolation is checked when composed
            coerce(tp, value, key)


def composed(cfg: DictConfig) -> Any:
    """The composed config as its schema's dataclasses. A value left at ``???`` is unset (None), and
    ``validate()`` names what a job needs; an interpolation that reads an unset value is refused here."""
    for key, text in _interpolations(OmegaConf.to_container(cfg, resolve=False)):
        for ref in re.findall(r"\$\{([\w.]+)\}", text):
            parent, _, name = ref.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if isinstance(node, DictConfig) and name in node.keys() and OmegaConf.is_missing(node, name):
                raise ConfigError(f"{ref} is required: {key} is {text}; pass {ref}=...")
    OmegaConf.resolve(cfg)
    for key in OmegaConf.missing_keys(cfg):
        OmegaConf.update(cfg, key, None)
    return OmegaConf.to_object(cfg)


def _interpolations(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, text) of every value that interpolates another."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, str) and "${" in value:
            yield f"{prefix}{key}", value
        else:
            yield from _interpolations(value, f"{prefix}{key}.")


def finish() -> None:
    """End a job that has finished: run the exit handlers (Ray's, logging's), flush the output, and exit with
    status 0 without the interpreter's teardown of every module, which takes 0.2-0.5 s once Ray has been
    imported and used (measured from the last exit handler to the process's end)."""
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Print an error as one line on stderr and exit with ``exit_status``; Ctrl-C prints its message alone."""
    try:
        yield
    except KeyboardInterrupt as exc:   # JobInterrupted says what was kept; a bare Ctrl-C says nothing
        message = str(exc) if isinstance(exc, JobInterrupted) and str(exc) else "interrupted"
        print(message, file=sys.stderr)
        sys.exit(exit_status(exc))
    except (LmdbshardError, OSError) as exc:
        print(f"lmdbshard: error: {exc}", file=sys.stderr)
        sys.exit(exit_status(exc))


_register()
