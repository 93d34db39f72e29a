"""Config parsing and validation: every mistake is refused before work, in one line naming the key."""

import dataclasses

import pytest

from lmdbshard import ConfigError, ConvertConfig, parse_config


def valid(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    return {"source": {"root": str(tmp_path / "src")}, "out": str(tmp_path / "out")}


def test_parse_builds_typed_dataclasses(tmp_path):
    cfg = parse_config(dict(valid(tmp_path), shard_size=7, storage={"encoding": "raw"}, max_error_rate=0))
    assert isinstance(cfg, ConvertConfig) and cfg.shard_size == 7 and cfg.storage.encoding == "raw"
    assert cfg.max_error_rate == 0.0 and isinstance(cfg.max_error_rate, float)
    assert cfg.validate() is cfg


@pytest.mark.parametrize("patch, match", [
    ({"shard_sise": 5}, r"unknown config key 'shard_sise'; did you mean shard_size\?"),
    ({"storage": {"qualty": 5}}, r"unknown config key 'storage.qualty'; did you mean storage.quality\?"),
    ({"shard_size": "big"}, r"shard_size must be an integer, got 'big'"),
    ({"shard_size": True}, r"shard_size must be an integer"),
    ({"storage": {"encoding": "webp"}}, r"storage.encoding must be one of jpeg, png, raw, passthrough, caffe_datum; got 'webp'"),
    ({"overwrite": "yes"}, r"overwrite must be true or false"),
    ({"source": {"extensions": ".jpg"}}, r"source.extensions must be a list"),
    ({"transform": 5}, r"transform must be a mapping"),
])
def test_parse_refuses_unknown_keys_and_wrong_types(tmp_path, patch, match):
    data = valid(tmp_path)
    for k, v in patch.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    with pytest.raises(ConfigError, match=match) as info:
        parse_config(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change, match", [
    (lambda c, p: setattr(c.source, "root", None), r"source.root is required; pass source.root="),
    (lambda c, p: setattr(c.source, "root", str(p / "nope")), r"source.root .*nope.* is not a directory"),
    (lambda c, p: setattr(c, "out", None), r"out is required"),
    (lambda c, p: (p.joinpath("file").write_text("x"), setattr(c, "out", str(p / "file"))),
     r"out .*file.* is a file, not a directory"),
    (lambda c, p: setattr(c, "shard_size", 0), r"shard_size must be a positive integer, got 0"),
    (lambda c, p: setattr(c.storage, "quality", 101), r"storage.quality must be in 1..100"),
    (lambda c, p: setattr(c.transform, "resize_shorter", -3), r"transform.resize_shorter must be a positive"),
    (lambda c, p: setattr(c, "max_error_rate", 2.0), r"max_error_rate must be in \[0, 1\]"),
    (lambda c, p: setattr(c.ray, "cpus_per_task", 0), r"ray.cpus_per_task must be > 0"),
    (lambda c, p: setattr(c.ray, "unit_size", -1), r"ray.unit_size must be >= 0 \(0: one task per shard\), got -1"),
    (lambda c, p: setattr(c.ray, "unit_seconds", -0.5),
     r"ray.unit_seconds must be >= 0 \(0: units keep ray.unit_size\), got -0.5"),
    (lambda c, p: setattr(c.transform, "max_file_bytes", 0), r"transform.max_file_bytes must be a positive integer, got 0"),
])
def test_validate_names_the_key_and_the_fix(tmp_path, change, match):
    cfg = parse_config(valid(tmp_path))
    change(cfg, tmp_path)
    with pytest.raises(ConfigError, match=match) as info:
        cfg.validate()
    assert "\n" not in str(info.value)


def test_output_identity_covers_what_changes_bytes():
    a, b = ConvertConfig(), ConvertConfig()
    b.ray.num_cpus, b.progress, b.out = 64, "log", "/elsewhere"
    assert a.output_identity() == b.output_identity()   # where and how fast: not the output
    for field, value in [("seed", 1), ("shard_size", 3)]:
        c = dataclasses.replace(ConvertConfig(), **{field: value})
        assert c.output_identity() != a.output_identity()
    c = ConvertConfig()
    c.storage.quality = 50
    assert c.output_identity() != a.output_identity()
