"""The stored plan and listing: compact, exact, versioned; tasks that fetch their items by position."""

import hashlib
import json
import os
import pickle
import shutil
import zipfile

import lmdb
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from helpers import job, make_tree
from lmdbshard import RayConfig, convert
from lmdbshard.write.runner import check_shards_on_ray
from lmdbshard.errors import FormatError, PlanMismatchError
from lmdbshard.benchmark.scale_plan import synthetic_listing
from lmdbshard.write.listing import Listing, PathTable
from lmdbshard.write.plan import make_plan
from lmdbshard.write.resume import OutputDir
from lmdbshard.write.sources.imagefolder import list_imagefolder
from lmdbshard.write.stored_listing import LISTING_NAME, load_listing, save_listing
from lmdbshard.write.task import ItemTable, ShardItem, ShardTask

# Non-UTF-8 bytes included; no NUL (no file name holds one) and not empty.
raw_paths = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b)


def flip_a_record_byte(shard: str) -> None:
    """Change one byte inside the third record's value, in the file itself (its size stays the same)."""
    env = lmdb.open(shard, subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        value = list(txn.cursor())[2][1]
    env.close()
    with open(shard, "r+b") as f:
        at = f.read().index(value) + 120
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x5A]))


def reference_digest(paths, labels, masks=None) -> str:
    """The listing digest as every earlier version computed it, one item at a time."""
    h = hashlib.sha256()
    for i, (path, label) in enumerate(zip(paths, labels)):
        mask = b"\t" + os.fsencode(masks[i]) if masks else b""
        h.update(b"%d\t" % label + os.fsencode(path) + mask + b"\n")
    return h.hexdigest()


def test_plans_stay_what_they_were():
    """Pinned from the previous implementation: above the key chunk, with rounds (a resume depends on it)."""
    plan = make_plan((1 << 20) + 5, 7, 2560, 2)
    assert plan.digest() == "24d0e01298f394e5d112e745c366575073409a12e3aa0fb94fcd11d49e7ea058"
    assert plan.order[:5].tolist() == [1260016, 845409, 1681763, 680087, 282727]
    assert make_plan(10, 0, 4).order.tolist() == [1, 4, 5, 7, 6, 9, 0, 3, 2, 8]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(raw_paths, st.integers(-1, 70000), raw_paths), min_size=1, max_size=60), st.booleans())
def test_the_stored_listing_round_trips_exactly(tmp_path_factory, rows, with_masks):
    paths = [os.fsdecode(p) for p, _, _ in rows]
    labels = [lbl for _, lbl, _ in rows]
    masks = [os.fsdecode(m) for _, _, m in rows] if with_masks else None
    listing = Listing("/src", [], paths, labels, mask_paths=masks, kind="paired" if masks else "filelist")
    assert list(listing.paths) == paths and listing.labels.tolist() == labels
    assert listing.digest() == reference_digest(paths, labels, masks)
    path = str(tmp_path_factory.mktemp("listing") / LISTING_NAME)
    save_listing(path, listing.paths, listing.labels, listing.mask_paths)
    back = load_listing(path)
    assert [back.paths.raw(i) for i in range(len(rows))] == [p for p, _, _ in rows]   # byte-exact
    assert list(back.paths) == paths and back.labels.tolist() == labels
    assert (list(back.mask_paths) if back.mask_paths is not None else None) == masks


def test_a_damaged_listing_is_one_line_naming_the_fix(tmp_path):
    path = str(tmp_path / LISTING_NAME)
    save_listing(path, PathTable.of(["a/1.jpg", "b/2.jpg"]), np.array([0, 1]))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(FormatError, match=r"cannot be read as a listing .*overwrite=true") as exc:
        load_listing(path)
    assert "\n" not in str(exc.value)


def test_an_old_plan_is_refused_in_one_line_and_overwrite_replaces_it(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=2)
    out = str(tmp_path / "out")
    os.makedirs(out)
    listing = list_imagefolder(tree.root, [".jpg", ".png", ".jpeg"])
    plan = make_plan(len(listing), 0, 5)
    old = {"format_version": 1, "plan_sha256": plan.digest(), "num_shards": plan.num_shards,
           "sources": [[p, int(lbl)] for p, lbl in zip(listing.paths, listing.labels)]}
    with open(os.path.join(out, "plan.json"), "w") as f:
        json.dump(old, f)
    with pytest.raises(PlanMismatchError, match=r"plan of an earlier lmdbshard .*overwrite=true") as exc:
        OutputDir(out).prepare(job(tree.root, out), listing, plan)
    assert "\n" not in str(exc.value)
    OutputDir(out).prepare(job(tree.root, out, overwrite=True), listing, plan)
    assert json.load(open(os.path.join(out, "plan.json")))["format_version"] == 2
    assert OutputDir(out).source_paths() == list(listing.paths)


def test_a_changed_listing_is_explained_from_the_stored_one(tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=2)
    out = str(tmp_path / "out")
    listing = list_imagefolder(tree.root, [".jpg", ".png", ".jpeg"])
    OutputDir(out).prepare(job(tree.root, out), listing, make_plan(len(listing), 0, 5))
    os.remove(os.path.join(tree.root, "dog", "img_00.jpg"))
    changed = list_imagefolder(tree.root, [".jpg", ".png", ".jpeg"])
    with pytest.raises(PlanMismatchError, match=r"1 removed \(e\.g\. 'dog/img_00\.jpg'\)"):
        OutputDir(out).prepare(job(tree.root, out), changed, make_plan(len(changed), 0, 5))


def test_tasks_carry_positions_and_slice_the_same_items_as_before():
    paths = [f"c{i % 3}/{i:03d}.png" for i in range(23)]
    masks = [f"m/{i:03d}.png" for i in range(23)]
    listing = Listing("/src", [], paths, [i % 3 for i in range(23)], mask_paths=masks, kind="paired")
    plan = make_plan(23, 5, 4, rounds=2)
    table = ItemTable(plan.order.astype(np.int32), 23, listing.paths, listing.labels, listing.mask_paths)
    for k in range(plan.num_shards):
        start, stop = plan.shard_range(k)
        sources, rounds = plan.shard_items(k)
        before = tuple(ShardItem(s, r, paths[s], s % 3, masks[s]) for s, r in zip(sources.tolist(), rounds.tolist()))
        task = ShardTask(k, start, stop - start, "/src")
        assert len(pickle.dumps(task)) < 300   # what the driver sends per task: no items
        bound = task.bind(table)
        assert bound.item_range(0, task.count) == before
        assert bound.item_range(1, min(3, task.count)) == before[1:3]
    with pytest.raises(IndexError):
        bound.item_range(0, task.count + 1)


def test_a_million_paths_are_held_and_stored_compactly(tmp_path):
    """The driver's listing at 10⁶: compact in memory, and the stored plan within 16 B per sample beyond
    the compressed path bytes (measured: 0.04 B)."""
    n = 10**6
    listing = synthetic_listing(n)
    memory = listing.paths.nbytes + listing.labels.nbytes
    assert memory <= len(listing.paths.data) + 12 * n + 8   # path bytes + 8 B offset + 4 B label
    plan = make_plan(n, 0, 2560)
    out = str(tmp_path / "out")
    OutputDir(out).prepare(job("/data/imagenet/train", out, shard_size=2560), listing, plan)
    with zipfile.ZipFile(os.path.join(out, LISTING_NAME)) as zf:
        compressed_paths = zf.getinfo("paths.npy").compress_size
    stored = os.path.getsize(os.path.join(out, LISTING_NAME)) + os.path.getsize(os.path.join(out, "plan.json"))
    assert (stored - compressed_paths) / n <= 16
    assert compressed_paths / n < 8   # ~30 B paths deflate to under 4 B
    back = load_listing(os.path.join(out, LISTING_NAME))
    assert back.paths.raw(n - 1) == listing.paths.raw(n - 1) and np.array_equal(back.labels, listing.labels)


def test_the_resume_check_runs_as_ray_tasks_and_the_summary_says_how_long(demo_out, tmp_path, ray_local):
    tree, src = demo_out
    out = shutil.copytree(src, str(tmp_path / "copy"))
    flip_a_record_byte(os.path.join(out, "shards", "shard-000003.lmdb"))
    saved = json.load(open(os.path.join(out, "plan.json")))
    plan = make_plan(saved["num_sources"], saved["seed"], saved["shard_size"])
    kept, notes = OutputDir(out).complete_shards(plan, "checksum", checker=check_shards_on_ray)
    assert sorted(r.index for r in kept) == [0, 1, 2, 4]
    assert notes and notes[0].startswith("shard 3 failed its checksum check and is rebuilt")
    # with ray.address (a cluster) the rerun's check runs on Ray (the test session's cluster is up already)
    result = convert(job(tree.root, out, ray=RayConfig(address="auto", max_in_flight=4)))
    assert (result.shards_reused, result.shards_built) == (4, 1)
    assert "  resume check    " in result.summary() and result.check_s > 0


def test_reports_of_file_sources_hold_no_label_counts_and_the_manifest_still_counts_classes(demo_out):
    tree, out = demo_out
    report = json.load(open(os.path.join(out, "reports", "shard-000000.json")))
    assert "label_counts" not in report
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    per_class = [sum(1 for lbl in tree.files.values() if lbl == k) for k in range(len(manifest["classes"]))]
    assert manifest["class_counts"] == per_class
