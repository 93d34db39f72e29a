"""Concatenation: one dataset over several outputs, with labels that always mean the right class."""

from __future__ import annotations

import numpy as np
import pytest

from lmdbshard.write.resume import OutputDir
from lmdbshard import ClassMismatchError, ShardedDataset, convert

from helpers import job, make_tree


@pytest.fixture(scope="module")
def outputs(demo_out, tmp_path_factory):
    """Three converted outputs: the demo (cat, dog, zebra), one sharing 'dog', one with disjoint classes."""
    base = tmp_path_factory.mktemp("concat")
    outs = {"a": demo_out[1]}
    for name, classes in (("b", ["ant", "dog", "yak"]), ("c", ["owl", "yak"])):
        tree = make_tree(str(base / f"src_{name}"), per_class=3, classes=classes)
        convert(job(tree.root, str(base / name)))
        outs[name] = str(base / name)
    return outs


def folder_names(root: str) -> list[str]:
    """The class folder of every sample of one output, in index order, from its records and plan."""
    sources = OutputDir(root).source_paths()
    with ShardedDataset(root) as ds:
        return [sources[ds.record(i).source_index].split("/")[0] for i in range(len(ds))]


def assert_labels_name_their_folders(ds: ShardedDataset, roots: list[str]) -> None:
    names = [n for root in roots for n in folder_names(root)]
    assert len(ds) == len(names)
    assert [ds.classes[label] for _, label in ds] == names
    assert all(ds.class_to_idx[ds.classes[i]] == i for i in range(len(ds.classes)))


def test_same_classes_concatenate(outputs):
    a = outputs["a"]
    both = ShardedDataset([a, a])
    n = len(ShardedDataset(a))
    assert len(both) == 2 * n and both[n + 2][1] == both[2][1]
    assert_labels_name_their_folders(both, [a, a])


def test_different_classes_are_refused_with_the_fix(outputs):
    a, b = outputs["a"], outputs["b"]
    with pytest.raises(ClassMismatchError) as err:
        ShardedDataset([a, b])
    msg = str(err.value)
    assert a in msg and b in msg and "classes='merge'" in msg and "label_offsets" in msg and "\n" not in msg
    with pytest.raises(ClassMismatchError):
        ShardedDataset(a) + ShardedDataset(b)


def test_merge_maps_labels_by_class_name(outputs):
    a, b = outputs["a"], outputs["b"]
    merged = ShardedDataset([a, b], classes="merge")
    assert merged.classes == ["ant", "cat", "dog", "yak", "zebra"]
    assert_labels_name_their_folders(merged, [a, b])
    dogs = {label for _, label in merged if merged.classes[label] == "dog"}
    assert dogs == {2}   # "dog" of both roots is one class


def test_explicit_class_list_orders_labels(outputs):
    a, c = outputs["a"], outputs["c"]
    order = ["zebra", "yak", "owl", "dog", "cat"]
    ds = ShardedDataset([c, a], classes=order)
    assert ds.classes == order
    assert_labels_name_their_folders(ds, [c, a])
    with pytest.raises(ClassMismatchError, match="missing from classes="):
        ShardedDataset([a, c], classes=["cat", "dog", "zebra"])


def test_label_offsets_keep_roots_apart(outputs):
    a, b, c = outputs["a"], outputs["b"], outputs["c"]
    ds = ShardedDataset([a, c], label_offsets=[0, 3])
    assert ds.classes == ["cat", "dog", "zebra", "owl", "yak"]
    assert_labels_name_their_folders(ds, [a, c])
    with pytest.raises(ClassMismatchError, match="'dog' would have labels 1 and 4"):
        ShardedDataset([a, b], label_offsets=[0, 3])
    with pytest.raises(ClassMismatchError, match="label 2 to both"):
        ShardedDataset([a, c], label_offsets=[0, 2])
    with pytest.raises(ClassMismatchError, match="without a class"):
        ShardedDataset([a, c], label_offsets=[0, 4])


def test_adding_datasets(outputs):
    a, b = outputs["a"], outputs["b"]
    one = ShardedDataset([a, b], classes="merge")
    two = ShardedDataset(a, classes=one.classes) + ShardedDataset(b, classes=one.classes)
    assert isinstance(two, ShardedDataset) and len(two) == len(one) and two.classes == one.classes
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(one, two))
    assert_labels_name_their_folders(two, [a, b])
    with pytest.raises(ValueError, match="different options"):
        ShardedDataset(a) + ShardedDataset(a, decode=False)
