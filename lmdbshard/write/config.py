"""Typed configuration of a conversion job, and its validation.

The library takes these dataclasses, never a Hydra DictConfig; each default is written here
once (conf/base.yaml holds only what differs). The choices of a setting are an Enum (``choices.py``) whose
members are plain strings, so ``cfg.storage.encoding == "raw"`` and ``StorageConfig(encoding="raw")`` work.
``parse_config`` builds the dataclasses from a plain mapping (a dict in a notebook) and refuses
unknown keys and wrong types with a one-line error naming the key and the fix, before any work
starts; ``jobs/`` registers the same dataclasses as Hydra's schema.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from lmdbshard.errors import ConfigError
from lmdbshard.storage.urls import check_url, is_url
from lmdbshard.write.choices import (
    AugmentKind, Encoding, Layout, MaskEncoding, OnError, ProgressMode, Resample, ResumeCheck, SourceKind,
)
from lmdbshard.write.parse import build
from lmdbshard.write.units import UNIT_ITEMS, UNIT_SECONDS

#: torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class SourceConfig:
    """Where the samples come from; ``kind`` picks the reader (see ``lmdbshard/sources/``).

    - ``imagefolder``: ``root/<class>/**/<image>``, labels as torchvision's ImageFolder.
    - ``imagenet_val``: a flat ``root`` of ``ILSVRC2012_val_*.JPEG`` plus ``labels_file``
      (``LOC_val_solution.csv``, or the devkit ground truth with ``synset_map``); class indices
      are those of ``classes_from`` (the train ImageFolder root, or a synset list file).
    - ``filelist``: ``list_file`` lines ``relative/path label`` (Caffe's convert_imageset), under ``root``.
    - ``paired``: ``root/<images_dir>/<stem>.*`` with ``root/<masks_dir>/<stem>.*``; the mask is a field.
    - ``python``: any indexable dataset, ``target: "package.module:Class"`` built with ``args``/``kwargs``
      inside each Ray task; ``dataset[i]`` returns an image (PIL or uint8 array) and a target.
    """

    root: Optional[str] = None
    kind: SourceKind = SourceKind.imagefolder
    extensions: list[str] = field(default_factory=lambda: list(IMG_EXTENSIONS))
    labels_file: Optional[str] = None      # imagenet_val: LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt
    synset_map: Optional[str] = None       # imagenet_val with a ground-truth file: line i = synset of ILSVRC2012_ID i
    classes_from: Optional[str] = None     # imagenet_val/filelist: train ImageFolder root, or a file of class names
    list_file: Optional[str] = None        # filelist: lines of "relative/path label"
    images_dir: str = "images"             # paired: folders under root, matched by file stem
    masks_dir: str = "masks"
    target: Optional[str] = None           # python: "package.module:Class" (or a function returning a dataset)
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransformConfig:
    """Deterministic per-image transform applied at write time."""

    resize_shorter: Optional[int] = None   # shorter side after resizing; None keeps the size
    center_crop: Optional[int] = None      # square center crop after resizing; None keeps all
    resample: Resample = Resample.bilinear
    draft: bool = True                     # let libjpeg decode at 1/2, 1/4, 1/8 scale when downscaling
    max_pixels: int = 178_956_970          # decompression-bomb limit (Pillow's default error threshold)
    max_file_bytes: int = 256 * 1024 ** 2  # larger source files are skipped as errors, never read whole


#: The parameters each augmentation op takes; any other parameter set on an op is refused.
OP_PARAMS = {
    AugmentKind.resize: ("size", "exact", "resample"),
    AugmentKind.center_crop: ("size",),
    AugmentKind.random_resized_crop: ("size", "scale", "ratio", "resample"),
    AugmentKind.hflip: ("p",),
    AugmentKind.color_jitter: ("brightness", "contrast", "saturation", "hue"),
}


@dataclass
class AugmentOp:
    """One write-time augmentation step; ``op`` names it and OP_PARAMS says which keys apply."""

    op: AugmentKind = AugmentKind.hflip
    size: Optional[int] = None             # resize: shorter side; center_crop, random_resized_crop: square side
    exact: Optional[list[int]] = None      # resize: exact [height, width] instead of a shorter side
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])      # random_resized_crop area fraction
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])   # random_resized_crop aspect range
    resample: Optional[Resample] = None   # None: transform.resample
    p: float = 0.5                         # hflip probability
    brightness: float = 0.0                # color_jitter: factors drawn from [max(0, 1-x), 1+x]
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0                       # color_jitter: hue shift drawn from [-x, x], x <= 0.5


@dataclass
class AugmentConfig:
    """Seeded write-time augmentation, applied after ``transform``, in list order, to every round."""

    ops: list[AugmentOp] = field(default_factory=list)
    rounds: int = 1                        # copies of every source sample, each augmented differently


@dataclass
class StorageConfig:
    """How each field is stored (see docs/FORMAT.md)."""

    encoding: Encoding = Encoding.jpeg
    quality: int = 90                      # JPEG quality, 1..100
    layout: Layout = Layout.HWC          # raw: axis order of the stored array
    mask_encoding: MaskEncoding = MaskEncoding.png   # the mask field of paired (and python) sources
    datum_encoded: bool = False            # caffe_datum: JPEG in Datum.data (encoded=true, what DALI reads)
                                           # instead of raw CHW BGR bytes (Caffe's default)


@dataclass
class RayConfig:
    """Where tasks run. ``address: null`` starts a local cluster; ``auto`` joins a running one."""

    address: Optional[str] = None
    num_cpus: Optional[int] = None         # local cluster size; None uses every core
    cpus_per_task: float = 1.0
    max_in_flight: Optional[int] = None    # work units submitted at once; None: 2 x cluster CPUs
    unit_size: int = UNIT_ITEMS            # items per work unit (a shard's units run on any CPUs); 0: one task per shard
    unit_seconds: float = UNIT_SECONDS     # units grow past unit_size until each takes this long (0: they don't)
    max_retries: int = 3                   # retries of a shard task whose worker or node died


@dataclass
class ConvertConfig:
    """A complete conversion job."""

    source: SourceConfig = field(default_factory=SourceConfig)
    out: Optional[str] = None
    shard_size: int = 1024
    seed: int = 0
    transform: TransformConfig = field(default_factory=TransformConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    on_error: OnError = OnError.skip             # a sample that cannot be decoded: record and go on, or stop
    max_error_rate: float = 0.01                 # the job fails if more than this fraction is skipped
    overwrite: bool = False                      # discard an existing output with a different plan
    scratch_dir: Optional[str] = None            # node-local folder to build shards in; None: system temp
    progress: ProgressMode = ProgressMode.auto
    log_interval_s: float = 10.0                 # seconds between progress lines when not on a TTY
    resume_check: ResumeCheck = ResumeCheck.checksum   # how a rerun checks shards before reusing them
    rebuild: Optional[list[int]] = None          # shard indices to rebuild on a rerun even though complete

    def validate(self) -> "ConvertConfig":
        """Check values and paths; raise ConfigError naming the key and the fix. Returns self."""
        root = _validate_source(self.source)
        _check(self.out not in (None, ""), "out is required; pass out=/path/to/output")
        if "://" in self.out or is_url(root):   # a URL (check_url refuses a scheme lmdbshard does not read)
            _check(check_url(self.out, "out").rstrip("/") != (root or "").rstrip("/"),
                   f"out {self.out!r} is the source root; pass a different out=")
            _check(not (is_url(self.out) and self.storage.encoding == "caffe_datum"),
                   f"storage.encoding=caffe_datum writes each shard as an LMDB directory, which an object store "
                   f"cannot hold; convert into a local out= and copy it, or use another encoding with out={self.out}")
        else:
            out = os.path.expanduser(self.out)
            _check(not (os.path.exists(out) and not os.path.isdir(out)),
                   f"out {self.out!r} is a file, not a directory; pass out= a new or existing directory")
            _check(root is None or os.path.realpath(out) != os.path.realpath(root),
                   f"out {self.out!r} is the source root; pass a different out=")
        _positive("shard_size", self.shard_size)
        _check(0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed!r}; set seed=0 or another integer")
        for name in ("resize_shorter", "center_crop"):
            value = getattr(self.transform, name)
            if value is not None:
                _positive(f"transform.{name}", value)
        _positive("transform.max_pixels", self.transform.max_pixels)
        _positive("transform.max_file_bytes", self.transform.max_file_bytes)
        _validate_augment(self.augment)
        _check(1 <= self.storage.quality <= 100,
               f"storage.quality must be in 1..100, got {self.storage.quality!r}; set storage.quality=90")
        _check(not (self.storage.encoding == "passthrough" and self.source.kind == "python"),
               "storage.encoding=passthrough needs source files, and a python source has none; "
               "use storage.encoding=jpeg, png or raw")
        _check(self.ray.unit_size >= 0, f"ray.unit_size must be >= 0 (0: one task per shard), got {self.ray.unit_size!r}")
        _check(self.ray.unit_seconds >= 0,
               f"ray.unit_seconds must be >= 0 (0: units keep ray.unit_size), got {self.ray.unit_seconds!r}")
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
            **_source_identity(self.source),
            "transform": dataclasses.asdict(self.transform),
            "augment": dataclasses.asdict(self.augment),
            "storage": dataclasses.asdict(self.storage),
        }


def _source_identity(src: SourceConfig) -> dict[str, Any]:
    """Source settings beyond the listing digest that decide the bytes (the listing covers files and labels)."""
    if src.kind == "paired":
        return {"source.masks": [src.images_dir, src.masks_dir]}
    if src.kind == "python":
        return {"source.python": [src.target, list(src.args), dict(src.kwargs)]}
    return {}


_NEEDS = {   # per kind: (key, what it is) that must be set
    SourceKind.imagefolder: (("root", "/path/to/imagefolder"),),
    SourceKind.imagenet_val: (("root", "/path/to/ILSVRC2012_val_folder"),
                              ("labels_file", "/path/to/LOC_val_solution.csv")),
    SourceKind.filelist: (("root", "/path/to/images"), ("list_file", "/path/to/list.txt")),
    SourceKind.paired: (("root", "/path/to/dataset_with_images_and_masks"),),
    SourceKind.python: (("target", "package.module:DatasetClass"),),
}


def _validate_source(src: SourceConfig) -> Optional[str]:
    """Check the source settings its kind needs; returns the expanded root (None for python)."""
    for key, example in _NEEDS[src.kind]:
        _check(getattr(src, key) not in (None, ""),
               f"source.{key} is required; pass source.{key}={example} (source.kind={src.kind} needs it)")
    _check(bool(src.extensions) and all(e.startswith(".") for e in src.extensions),
           f"source.extensions must be a non-empty list like ['.jpg', '.png'], got {src.extensions!r}")
    for key in ("labels_file", "synset_map", "list_file"):
        value = getattr(src, key)
        _check(value is None or "://" not in value,
               f"source.{key} {value!r} is a URL; it must be a local file (the driver reads it): copy it here "
               f"and pass source.{key}=/path/to/file (source.root may be a URL)")
        _check(value is None or os.path.isfile(os.path.expanduser(value)),
               f"source.{key} {value!r} is not a file; pass source.{key}=/path/to/file")
    if src.kind == "python":
        _check(src.target.startswith("<object ") or ":" in src.target and all(src.target.split(":", 1)),
               f"source.target must look like 'package.module:Name', got {src.target!r}")
        return None
    if is_url(src.root) or "://" in src.root:   # an object-store prefix: listed (and checked) by the source
        return check_url(src.root, "source.root")
    root = os.path.expanduser(src.root)
    _check(os.path.isdir(root), f"source.root {src.root!r} is not a directory; pass source.root={_NEEDS[src.kind][0][1]}")
    if src.kind == "paired":
        for key in ("images_dir", "masks_dir"):
            _check(os.path.isdir(os.path.join(root, getattr(src, key))),
                   f"source.{key} {getattr(src, key)!r} is not a folder under {src.root!r}; "
                   f"pass source.{key}=<folder name>")
    return root


def _validate_augment(aug: AugmentConfig) -> None:
    _positive("augment.rounds", aug.rounds)
    defaults = AugmentOp()
    for i, op in enumerate(aug.ops):
        name = f"augment.ops[{i}]"
        for key in {f.name for f in dataclasses.fields(AugmentOp)} - {"op", *OP_PARAMS[op.op]}:
            _check(getattr(op, key) == getattr(defaults, key),
                   f"{name}.{key} does not apply to op {op.op}; its keys are {', '.join(OP_PARAMS[op.op])}")
        if op.op == "resize":
            _check((op.size is None) != (op.exact is None),
                   f"{name} (resize) needs exactly one of size (shorter side) or exact [height, width]")
            _check(op.exact is None or (len(op.exact) == 2 and min(op.exact) > 0),
                   f"{name}.exact must be [height, width] with positive sides, got {op.exact!r}")
        if op.op in ("center_crop", "random_resized_crop") or op.size is not None:
            _check(op.size is not None and op.size > 0, f"{name}.size must be a positive integer, got {op.size!r}")
        if op.op == "random_resized_crop":
            _check(len(op.scale) == 2 and 0 < op.scale[0] <= op.scale[1] <= 1,
                   f"{name}.scale must be [lo, hi] with 0 < lo <= hi <= 1, got {op.scale!r}")
            _check(len(op.ratio) == 2 and 0 < op.ratio[0] <= op.ratio[1],
                   f"{name}.ratio must be [lo, hi] with 0 < lo <= hi, got {op.ratio!r}")
        _check(0.0 <= op.p <= 1.0, f"{name}.p must be in [0, 1], got {op.p!r}")
        for key in ("brightness", "contrast", "saturation"):
            _check(getattr(op, key) >= 0, f"{name}.{key} must be >= 0, got {getattr(op, key)!r}")
        _check(0.0 <= op.hue <= 0.5, f"{name}.hue must be in [0, 0.5], got {op.hue!r}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(name: str, value: int) -> None:
    _check(value > 0, f"{name} must be a positive integer, got {value!r}; set {name}=N with N > 0")



def parse_config(data: Mapping[str, Any], cls: Optional[type] = None) -> Any:
    """Build ``cls`` (default ``ConvertConfig``) from a nested mapping, refusing unknown keys and wrong
    types in one line (no path checks: ``validate()`` does those)."""
    return build(ConvertConfig if cls is None else cls, data)
