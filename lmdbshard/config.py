"""Typed configuration of a conversion job, and its validation.

The library takes these dataclasses, never a Hydra DictConfig. ``parse_config``
builds them from a plain mapping (what Hydra composes, or a dict in a notebook)
and refuses unknown keys and wrong types with a one-line error naming the key
and the fix, before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

from .errors import ConfigError

#: torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class SourceConfig:
    """Where the images come from. ``imagefolder``: ``root/<class>/**/<image>``, labels as torchvision."""

    root: Optional[str] = None
    kind: Literal["imagefolder"] = "imagefolder"
    extensions: list[str] = field(default_factory=lambda: list(IMG_EXTENSIONS))


@dataclass
class TransformConfig:
    """Deterministic per-image transform applied at write time."""

    resize_shorter: Optional[int] = None   # shorter side after resizing; None keeps the size
    center_crop: Optional[int] = None      # square center crop after resizing; None keeps all
    resample: Literal["bilinear", "bicubic", "lanczos"] = "bilinear"   # torchvision Resize's default
    draft: bool = True                     # let libjpeg decode at 1/2, 1/4, 1/8 scale when downscaling
    max_pixels: int = 178_956_970          # decompression-bomb limit (Pillow's default error threshold)


@dataclass
class StorageConfig:
    """How the image field is stored."""

    encoding: Literal["jpeg", "png", "raw"] = "jpeg"
    quality: int = 90                      # JPEG quality, 1..100


@dataclass
class RayConfig:
    """Where tasks run. ``address: null`` starts a local cluster; ``auto`` joins a running one."""

    address: Optional[str] = None
    num_cpus: Optional[int] = None         # local cluster size; None uses every core
    cpus_per_task: float = 1.0
    max_in_flight: Optional[int] = None    # shard tasks submitted at once; None: 2 x cluster CPUs
    max_retries: int = 3                   # retries of a shard task whose worker or node died


@dataclass
class ConvertConfig:
    """A complete conversion job."""

    source: SourceConfig = field(default_factory=SourceConfig)
    out: Optional[str] = None
    shard_size: int = 1024
    seed: int = 0
    transform: TransformConfig = field(default_factory=TransformConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    on_error: Literal["skip", "fail"] = "skip"   # a sample that cannot be decoded: record and go on, or stop
    max_error_rate: float = 0.01                 # the job fails if more than this fraction is skipped
    overwrite: bool = False                      # discard an existing output with a different plan
    scratch_dir: Optional[str] = None            # node-local folder to build shards in; None: system temp
    progress: Literal["auto", "bar", "log", "none"] = "auto"
    log_interval_s: float = 10.0                 # seconds between progress lines when not on a TTY
    resume_check: Literal["checksum", "full", "size"] = "checksum"   # how a rerun checks shards before reusing them
    rebuild: Optional[list[int]] = None          # shard indices to rebuild on a rerun even though complete

    def validate(self) -> "ConvertConfig":
        """Check values and paths; raise ConfigError naming the key and the fix. Returns self."""
        _check(self.source.root not in (None, "", "???"), "source.root is required; pass source.root=/path/to/imagefolder")
        root = os.path.expanduser(self.source.root)
        _check(os.path.isdir(root), f"source.root {self.source.root!r} is not a directory; "
                                    "pass source.root=/path/to/imagefolder")
        _check(self.out not in (None, "", "???"), "out is required; pass out=/path/to/output")
        out = os.path.expanduser(self.out)
        _check(not (os.path.exists(out) and not os.path.isdir(out)),
               f"out {self.out!r} is a file, not a directory; pass out= a new or existing directory")
        _check(os.path.realpath(out) != os.path.realpath(root),
               f"out {self.out!r} is the source root; pass a different out=")
        _positive("shard_size", self.shard_size)
        _check(0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed!r}; set seed=0 or another integer")
        _check(bool(self.source.extensions) and all(e.startswith(".") for e in self.source.extensions),
               f"source.extensions must be a non-empty list like ['.jpg', '.png'], got {self.source.extensions!r}")
        for name in ("resize_shorter", "center_crop"):
            value = getattr(self.transform, name)
            if value is not None:
                _positive(f"transform.{name}", value)
        _positive("transform.max_pixels", self.transform.max_pixels)
        _check(1 <= self.storage.quality <= 100,
               f"storage.quality must be in 1..100, got {self.storage.quality!r}; set storage.quality=90")
        _check(self.ray.cpus_per_task > 0, f"ray.cpus_per_task must be > 0, got {self.ray.cpus_per_task!r}")
        for name in ("num_cpus", "max_in_flight"):
            value = getattr(self.ray, name)
            if value is not None:
                _positive(f"ray.{name}", value)
        _check(self.ray.max_retries >= 0, f"ray.max_retries must be >= 0, got {self.ray.max_retries!r}")
        _check(0.0 <= self.max_error_rate <= 1.0,
               f"max_error_rate must be in [0, 1], got {self.max_error_rate!r}; set max_error_rate=0.01")
        _check(self.log_interval_s > 0, f"log_interval_s must be > 0, got {self.log_interval_s!r}")
        _check(all(k >= 0 for k in self.rebuild or ()),
               f"rebuild must list shard indices >= 0, got {self.rebuild!r}; e.g. rebuild=[3,17]")
        return self

    def output_identity(self) -> dict[str, Any]:
        """The settings that decide the output bytes: a rerun must match them to reuse shards."""
        return {
            "shard_size": self.shard_size,
            "seed": self.seed,
            "source.kind": self.source.kind,
            "source.extensions": sorted(e.lower() for e in self.source.extensions),
            "transform": dataclasses.asdict(self.transform),
            "storage": dataclasses.asdict(self.storage),
        }


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(name: str, value: int) -> None:
    _check(value > 0, f"{name} must be a positive integer, got {value!r}; set {name}=N with N > 0")


# ---------------------------------------------------------------- mapping -> dataclasses
def parse_config(data: Mapping[str, Any], cls: type = ConvertConfig) -> Any:
    """Build ``cls`` from a nested mapping, refusing unknown keys and wrong types (no path checks)."""
    return _build(cls, data, "")


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown config key '{prefix}{key}'; {hint}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, name)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}; write {name}=[a,b]")
        return [_coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{name}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}; set {name}=N")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}; set {name}=X")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {name}")  # a bug in the schema, not user input
