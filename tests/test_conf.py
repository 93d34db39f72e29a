"""Every conf/*.yaml composes with Hydra and parses into the typed config; base.yaml lists every key."""

import dataclasses
import glob
import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmdbshard import ConvertConfig, parse_config
from lmdbshard.benchmark import BenchConfig

CONF = os.path.join(os.path.dirname(__file__), "..", "conf")
NAMES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONF, "*.yaml")))


def composed(name, overrides=()):
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    data.pop("demo", None)
    data.pop("imagenet", None)
    data.pop("bench", None)   # conf/bench.yaml: the benchmark's own settings, checked below
    return data


@pytest.mark.parametrize("name", NAMES)
def test_every_config_composes_and_parses(name):
    cfg = parse_config(composed(name))
    assert isinstance(cfg, ConvertConfig)


def test_base_lists_every_setting_with_the_dataclass_default():
    cfg = parse_config(composed("base"))
    assert (cfg.source.root, cfg.out) == ("???", "???")   # required: refused by validate()
    cfg.source.root = cfg.out = None
    assert cfg == ConvertConfig()   # defaults agree, so every key is overridable without '+'
    assert {f.name for f in dataclasses.fields(ConvertConfig)} <= set(composed("base"))


def test_imagenet_defaults():
    cfg = parse_config(composed("imagenet", ["source.root=/data/train", "out=/data/out"]))
    assert cfg.transform.resize_shorter == 256 and cfg.storage.quality == 90
    assert 300 <= -(-1_281_167 // cfg.shard_size) <= 800   # a few hundred shards for ImageNet-1k
    assert cfg.source.root == "/data/train"


def test_bench_settings_parse():
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base="1.3"):
        cfg = compose(config_name="bench", overrides=["bench.workers=[1,2,4,8,16]"])
    bench = parse_config(OmegaConf.to_container(cfg.bench, resolve=True), BenchConfig)
    assert bench.workers == [1, 2, 4, 8, 16] and bench.source is None and bench.corpus.per_class * 20 == 2000
    assert parse_config(composed("bench")).transform.resize_shorter == 256


def test_demo_is_self_contained():
    cfg = parse_config(composed("demo"))
    assert cfg.source.root == "data/demo" and cfg.out == "out/demo"


@pytest.mark.parametrize("split, kind", [("train", "imagefolder"), ("val", "imagenet_val")])
def test_imagenet_splits_share_one_root(split, kind):
    cfg = parse_config(composed("imagenet", [f"+split={split}", "imagenet.root=/d/in", "imagenet.out=/d/out"]))
    assert cfg.source.kind == kind and cfg.source.root == f"/d/in/{split}" and cfg.out == f"/d/out/{split}"
    if split == "val":   # val labels follow the train folders' class indices
        assert cfg.source.classes_from == "/d/in/train" and cfg.source.labels_file == "/d/in/LOC_val_solution.csv"


@pytest.mark.parametrize("group, option", [(g, os.path.basename(p)[:-5]) for g in ("source", "storage", "augment")
                                           for p in sorted(glob.glob(os.path.join(CONF, g, "*.yaml")))])
def test_every_group_option_composes_and_parses(group, option):
    cfg = parse_config(composed("base", [f"{group}={option}"]))
    if group == "source":
        assert cfg.source.kind == option
    elif group == "storage":
        assert cfg.storage.encoding == option
    else:
        assert cfg.augment.rounds >= 1 and all(op.op for op in cfg.augment.ops)
