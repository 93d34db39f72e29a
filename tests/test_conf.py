"""conf/*.yaml against the ConfigStore schema (jobs/hydra_app.py): every config composes into the typed
dataclasses, holds what it says, writes no default twice, and the command line is checked before Hydra."""

import dataclasses
import glob
import os
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir

from lmdbshard import AugmentOp, ConfigError, ConvertConfig, parse_config
from lmdbshard.benchmark import BenchConfig
from lmdbshard.tools.demo import DemoSpec

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "jobs"))
from hydra_app import (  # noqa: E402
    BENCHMARK, CONF, BenchmarkJob, ConvertJob, check_command_line, composed, conversion, conversion_configs,
)

PRIMARY = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONF, "*.yaml")))
SCHEMA = {BENCHMARK: BenchmarkJob}


def job(name, overrides=()):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return composed(compose(config_name=name, overrides=list(overrides)))


@pytest.mark.parametrize("name", PRIMARY)
def test_every_config_composes_into_its_schema(name):
    cfg = job(name)
    assert type(cfg) is SCHEMA.get(name, ConvertJob)
    plain = conversion(cfg)
    assert type(plain) is ConvertConfig
    assert parse_config(dataclasses.asdict(plain)) == plain   # the library's parser agrees with OmegaConf's


def test_conversion_configs_leave_out_the_benchmark():
    assert conversion_configs() == ["base", "demo", "imagenet"] and BENCHMARK in PRIMARY


def test_base_is_the_dataclass_defaults():
    assert conversion(job("base")) == ConvertConfig()


def flat(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", PRIMARY)
def test_no_config_repeats_a_default(name):
    with open(os.path.join(CONF, f"{name}.yaml")) as f:
        raw = {k: v for k, v in (yaml.safe_load(f) or {}).items() if k not in ("defaults", "hydra")}
    defaults = dataclasses.asdict(SCHEMA.get(name, ConvertJob)())
    for key, value in flat(raw):
        node = defaults
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        assert value != node, f"conf/{name}.yaml repeats the default {key}={value!r}"


def test_demo_generates_its_source():
    cfg = job("demo")
    assert cfg.demo == DemoSpec() and (cfg.source.root, cfg.out, cfg.shard_size) == ("data/demo", "out/demo", 64)


def test_imagenet_settings():
    cfg = job("imagenet", ["source.root=/data/train", "out=/data/out"])
    assert (cfg.transform.resize_shorter, cfg.transform.center_crop, cfg.storage.quality) == (256, None, 90)
    assert 300 <= -(-1_281_167 // cfg.shard_size) <= 800   # a few hundred shards for ImageNet-1k
    assert (cfg.source.root, cfg.max_error_rate) == ("/data/train", 0.001)


@pytest.mark.parametrize("split, kind", [("train", "imagefolder"), ("val", "imagenet_val")])
def test_imagenet_splits_share_one_root(split, kind):
    cfg = job("imagenet", [f"+split={split}", "imagenet.root=/d/in", "imagenet.out=/d/out"])
    assert cfg.source.kind == kind and cfg.source.root == f"/d/in/{split}" and cfg.out == f"/d/out/{split}"
    if split == "val":   # val labels follow the train folders' class indices
        assert cfg.source.classes_from == "/d/in/train" and cfg.source.labels_file == "/d/in/LOC_val_solution.csv"


def test_a_split_without_its_root_names_the_root():
    with pytest.raises(ConfigError, match=r"^imagenet.root is required: source.root is \$\{imagenet.root\}/val"):
        job("imagenet", ["+split=val", "imagenet.out=/d/out"])


def test_benchmark_settings():
    cfg = job(BENCHMARK, ["bench.workers=[1,2,4,8,16]", "bench.corpus.per_class=7"])
    assert cfg.bench.workers == [1, 2, 4, 8, 16] and cfg.bench.source is None
    assert cfg.bench.corpus == dataclasses.replace(BenchConfig().corpus, per_class=7)
    assert (cfg.shard_size, cfg.transform.resize_shorter, cfg.progress) == (100, 256, "none")


GROUPS = {   # option -> what the section must hold
    ("source", "imagefolder"): lambda c: c.source.kind == "imagefolder",
    ("source", "imagenet_val"): lambda c: c.source.kind == "imagenet_val",
    ("source", "filelist"): lambda c: c.source.kind == "filelist",
    ("source", "paired"): lambda c: (c.source.kind, c.source.images_dir, c.source.masks_dir) == ("paired", "images", "masks"),
    ("source", "python"): lambda c: c.source.kind == "python" and c.source.root is None,
    ("storage", "jpeg"): lambda c: (c.storage.encoding, c.storage.quality) == ("jpeg", 90),
    ("storage", "png"): lambda c: c.storage.encoding == "png",
    ("storage", "raw"): lambda c: (c.storage.encoding, c.storage.layout) == ("raw", "HWC"),
    ("storage", "passthrough"): lambda c: c.storage.encoding == "passthrough",
    ("storage", "caffe_datum"): lambda c: (c.storage.encoding, c.storage.datum_encoded) == ("caffe_datum", False),
    ("augment", "none"): lambda c: (c.augment.ops, c.augment.rounds) == ([], 1),
    ("augment", "flip"): lambda c: c.augment.ops == [AugmentOp(op="hflip", p=0.5)],
    ("augment", "imagenet_train"): lambda c: c.augment.ops == [
        AugmentOp(op="random_resized_crop", size=224, scale=[0.08, 1.0], ratio=[0.75, 1.3333333]),
        AugmentOp(op="hflip", p=0.5),
        AugmentOp(op="color_jitter", brightness=0.4, contrast=0.4, saturation=0.4)] and c.augment.rounds == 1,
}


def test_every_group_option_is_checked_here():
    on_disk = {(g, os.path.basename(p)[:-5]) for g in ("source", "storage", "augment")
               for p in glob.glob(os.path.join(CONF, g, "*.yaml"))}
    assert on_disk == set(GROUPS)


@pytest.mark.parametrize("group, option", sorted(GROUPS))
def test_every_group_option_holds_what_it_says(group, option):
    cfg = conversion(job("base", [f"{group}={option}"]))
    assert GROUPS[group, option](cfg), getattr(cfg, group)
    assert parse_config(dataclasses.asdict(cfg)) == cfg


@pytest.mark.parametrize("argv, match", [
    (["shard_sise=100"], r"^unknown config key 'shard_sise'; did you mean shard_size\?$"),
    (["+shard_sise=100"], r"^unknown config key 'shard_sise'; did you mean shard_size\?$"),
    (["transform.resize_shortr=1"], r"^unknown config key 'transform.resize_shortr'; did you mean transform.resize_shorter\?$"),
    (["demo.clases=3"], r"did you mean demo.classes\?"),
    (["+shard_size=4"], r"^shard_size is a setting already; drop the '\+': shard_size=4$"),
    (["shard_size=abc"], r"^shard_size must be an integer, got 'abc'; set shard_size=N$"),
    (["-m", "shard_size=8,abc"], r"^shard_size must be an integer, got 'abc'"),
    (["storage.encoding=webp"], r"^storage.encoding must be one of jpeg, png, raw, passthrough, caffe_datum; got 'webp'$"),
    (["overwrite=yes"], r"^overwrite must be true or false, got 'yes'$"),
    (["storage=jpg"], r"^unknown storage option 'jpg'; did you mean storage=jpeg\? the options are caffe_datum, jpeg,"),
    (["--config-name", "doesnotexist"], r"^no config 'doesnotexist'; the configs are base, demo, imagenet "),
    (["--config-name", BENCHMARK], r"^'benchmark' is make bench's config, not a conversion; the configs are base, "),
])
def test_command_line_is_checked_before_hydra(argv, match):
    with pytest.raises(ConfigError, match=match):
        check_command_line(argv, ConvertJob, conversion_configs(), "demo")


@pytest.mark.parametrize("argv", [
    ["shard_size=8", "transform.resample=bicubic", "rebuild=[3,17]", "out=null", "source=paired", "+split=val",
     "imagenet.root=/d", "source.kwargs.train=true", "+source.kwargs.root=/x", "hydra.verbose=true", "--help"],
    ["-m", "shard_size=8,16", "augment=flip,none", "out=${imagenet.out}/x"],
    ["--config-dir", "/my/conf", "--config-name", "mine", "source=my_source"],   # the user's own configs
])
def test_valid_command_lines_pass(argv):
    check_command_line(argv, ConvertJob, conversion_configs(), "demo")
