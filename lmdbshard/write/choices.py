"""The choices of each setting that takes one of a few names, each list written once.

Members are plain strings (``str`` mixed in): ``Encoding.raw == "raw"``, ``f"{Encoding.raw}"`` is ``raw``
and JSON writes ``"raw"``, so code and files that hold the names keep working. OmegaConf (the Hydra
schema in ``jobs/``) and ``parse_config`` both refuse any other value.
"""

from __future__ import annotations

import enum


class Choice(str, enum.Enum):
    """A setting's choices: members are their own string values (``f"{m}"`` and JSON give the value)."""

    __str__ = str.__str__
    __format__ = str.__format__


class SourceKind(Choice):
    imagefolder = "imagefolder"
    imagenet_val = "imagenet_val"
    filelist = "filelist"
    paired = "paired"
    python = "python"


class Resample(Choice):
    bilinear = "bilinear"      # torchvision Resize's default
    bicubic = "bicubic"
    lanczos = "lanczos"


class AugmentKind(Choice):
    resize = "resize"
    center_crop = "center_crop"
    random_resized_crop = "random_resized_crop"
    hflip = "hflip"
    color_jitter = "color_jitter"


class Encoding(Choice):
    jpeg = "jpeg"
    png = "png"
    raw = "raw"
    passthrough = "passthrough"
    caffe_datum = "caffe_datum"


class Layout(Choice):
    HWC = "HWC"
    CHW = "CHW"


class MaskEncoding(Choice):
    png = "png"
    raw = "raw"


class OnError(Choice):
    skip = "skip"
    fail = "fail"


class ProgressMode(Choice):
    auto = "auto"              # a bar on a terminal, log lines otherwise
    bar = "bar"
    log = "log"
    none = "none"


class ResumeCheck(Choice):
    checksum = "checksum"      # re-hash a complete shard before reusing it
    full = "full"              # also decode every record
    size = "size"              # trust the saved report and the file size; fastest
