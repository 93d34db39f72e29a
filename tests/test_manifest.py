"""manifest.json: malformed manifests are refused with one line, and file names that are not UTF-8
are stored as strict JSON (U+FFFD for display, the exact bytes as base64 beside them)."""

from __future__ import annotations

import copy
import json
import os
import re

import pytest

from lmdbshard.errors import FormatError
from lmdbshard.format.manifest import DatasetFacts, ShardEntry, Skipped, build_manifest, load_manifest
from lmdbshard.write.atomic import write_json_atomic

#: Latin-1 names, as a file system hands them to Python: not valid UTF-8, so they hold lone surrogates.
CLASS = os.fsdecode(b"\xe9t\xe9")
PATH = os.fsdecode(b"dog/caf\xe9.png")


def good_document() -> dict:
    """Three shards of size 4 holding 4, 4 and 2 records (one sample skipped), two classes."""
    entries = [ShardEntry(0, "shards/shard-000000.lmdb", 0, 4, 8192, "a" * 64),
               ShardEntry(1, "shards/shard-000001.lmdb", 4, 4, 8192, "b" * 64),
               ShardEntry(2, "shards/shard-000002.lmdb", 8, 2, 8192, "c" * 64)]
    skipped = [Skipped(2, 10, 3, 0, "b/broken.png", "cannot decode: broken data stream")]
    facts = DatasetFacts(classes=["a", "b"], class_counts=[5, 5], shard_size=4, library_version="test",
                         fields=[{"name": "image", "encoding": "raw", "dtype": "uint8", "layout": "HWC"}])
    return json.loads(json.dumps(build_manifest(facts, entries, skipped, 11, {})))


def load(tmp_path, doc: dict):
    with open(tmp_path / "manifest.json", "w") as f:
        json.dump(doc, f)
    return load_manifest(str(tmp_path))


def test_a_good_manifest_loads_with_typed_entries(tmp_path):
    m = load(tmp_path, good_document())
    assert m.num_samples == 10 and [s.count for s in m.shards] == [4, 4, 2] and m.classes == ["a", "b"]
    assert m.errors == [Skipped(2, 10, 3, 0, "b/broken.png", "cannot decode: broken data stream")]


def _del(*path):
    def edit(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


def _set(value, *path):
    def edit(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _duplicate(doc):
    doc["shards"][2] = copy.deepcopy(doc["shards"][1])


MALFORMED = {
    "missing shards": (_del("shards"), "missing key 'shards'"),
    "missing num_samples": (_del("num_samples"), "missing key 'num_samples'"),
    "missing a shard's checksum": (_del("shards", 1, "sha256"), "shards[1]: missing key 'sha256'"),
    "missing an error's path": (_del("errors", 0, "path"), "errors[0]: missing key 'path'"),
    "shards not a list": (_set({"0": {}}, "shards"), "shards must be a list"),
    "a shard not an object": (_set(7, "shards", 0), "shards[0] must be an object"),
    "count as text": (_set("4", "shards", 0, "count"), "shards[0]: count must be an integer, got '4'"),
    "count as a float": (_set(4.0, "shards", 0, "count"), "count must be an integer, got 4.0"),
    "negative count": (_set(-1, "shards", 2, "count"), "shards[2]: count must be >= 0, got -1"),
    "negative first key": (_set(-4, "shards", 1, "first_key"), "first_key must be >= 0"),
    "lowered num_samples": (_set(9, "num_samples"), "num_samples is 9, but the shards hold 10 records"),
    "lowered shard count": (_set(3, "shards", 0, "count"), "num_samples is 10, but the shards hold 9 records"),
    "count over shard_size": (_set(5, "shards", 2, "count"), "shard 2 has count 5, more than shard_size 4"),
    "duplicated shard": (_duplicate, "shard 1 is listed twice"),
    "missing shard": (_del("shards", 1), "shard 1 is missing"),
    "overlapping shards": (_set(2, "shards", 1, "first_key"), "shard 1 starts at key 2, inside the previous"),
    "format_version true": (_set(True, "format_version"), "format_version must be an integer, got True"),
    "format_version text": (_set("1", "format_version"), "format_version must be an integer, got '1'"),
    "classes not strings": (_set([0, 1], "classes"), "classes must be a list of strings"),
    "classes shorter than the labels": (_set(["a"], "classes"), "class_counts counts 2 labels, but classes names only 1"),
    "negative class count": (_set([6, -1], "class_counts"), "class_counts must be 2 non-negative integers"),
    "class counts over the records": (_set([9, 9], "class_counts"), "class_counts add up to 18"),
    "classes_b64 not an index": (_set({"x": "AA=="}, "classes_b64"), "classes_b64 key 'x' is not the index"),
    "path_b64 not base64": (_set("%%%", "errors", 0, "path_b64"), "path_b64 is not base64"),
    "errors not a list": (_set("none", "errors"), "errors must be a list"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_is_refused_with_one_line(tmp_path, case):
    edit, expected = MALFORMED[case]
    doc = good_document()
    edit(doc)
    with pytest.raises(FormatError) as info:
        load(tmp_path, doc)
    message = str(info.value)
    assert expected in message, message
    assert message.startswith(str(tmp_path / "manifest.json")) and "\n" not in message
    assert not isinstance(info.value.__context__, (KeyError, TypeError, AttributeError))


def test_invalid_utf8_in_the_file_itself_is_a_format_error(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b'{"format": "lmdbshard", "x": "\xe9"}')
    with pytest.raises(FormatError, match="not valid JSON"):
        load_manifest(str(tmp_path))


def strict_strings(value) -> bool:
    """Whether every string in a parsed JSON value is valid Unicode text (no lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(strict_strings(k) and strict_strings(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(strict_strings, value))
    return True


def test_names_that_are_not_utf8_are_strict_json_and_round_trip(tmp_path):
    facts = DatasetFacts(classes=["cat", CLASS], class_counts=[1, 0], shard_size=2, library_version="test",
                         fields=[], config={"source": {"root": f"/data/{CLASS}"}}, warnings=[f"{CLASS}: empty"])
    doc = build_manifest(facts, [ShardEntry(0, "shards/shard-000000.lmdb", 0, 1, 100, "a" * 64)],
                         [Skipped(0, 1, 1, 0, PATH, f"cannot read {PATH}: No such file")], 2, {})
    write_json_atomic(str(tmp_path / "manifest.json"), doc)
    text = (tmp_path / "manifest.json").read_bytes().decode("utf-8")
    parsed = json.loads(text)
    assert strict_strings(parsed) and "\\udc" not in text          # what strict parsers accept
    assert parsed["classes"] == ["cat", "\ufffdt\ufffd"] and parsed["classes_b64"] == {"1": "6XTp"}
    (error,) = parsed["errors"]
    assert error["path"] == "dog/caf\ufffd.png" and error["path_b64"] == "ZG9nL2NhZukucG5n"
    assert parsed["config"]["source"]["root"] == "/data/\ufffdt\ufffd"
    m = load_manifest(str(tmp_path))
    assert m.classes == ["cat", CLASS] and m.errors[0].path == PATH       # the exact bytes come back
    assert os.fsencode(m.errors[0].path) == b"dog/caf\xe9.png"


def test_a_shard_report_round_trips_through_strict_json():
    from lmdbshard.write.atomic import json_bytes
    from lmdbshard.write.report import ShardReport
    report = ShardReport(ShardEntry(3, "shards/shard-000003.lmdb", 12, 3, 4096, "d" * 64,
                                    "shards/shard-000003-label.lmdb", 2048, "e" * 64),
                         planned=4, errors=[Skipped(3, 13, 7, 1, PATH, "cannot decode: truncated")],
                         seconds={"read": 0.5, "decode": 1.25}, passthrough=1, masks=3, label_counts={"0": 2, "1": 1},
                         plan_sha256="f" * 64)
    text = json_bytes(report.to_json()).decode("ascii")
    assert "\\udc" not in text
    assert ShardReport.from_json(json.loads(text), "r.json") == report


@pytest.mark.parametrize("edit, expected", [
    (_del("planned"), "missing key 'planned'"),
    (_set("3", "count"), "count must be an integer, got '3'"),
    (_set([{"position": 1}], "errors"), "errors[0]: missing key 'path'"),
    (_set({"read": "fast"}, "seconds"), "seconds must map stage names to numbers"),
])
def test_a_malformed_report_is_a_format_error_naming_the_file(edit, expected):
    from lmdbshard.write.report import ShardReport
    doc = ShardReport(ShardEntry(0, "shards/shard-000000.lmdb", 0, 3, 4096, "d" * 64), planned=3).to_json()
    edit(doc)
    with pytest.raises(FormatError, match=r"^reports/shard-000000.json.*" + re.escape(expected)):
        ShardReport.from_json(doc, "reports/shard-000000.json")
