"""The ``lmdbshard`` console script, run as a user runs it: exit status, output, and the PNGs it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lmdbshard import convert
from lmdbshard.format.record import Field
from lmdbshard.write.direct import Sample, write_dataset

from helpers import job, make_tree

SCRIPT = os.path.join(os.path.dirname(sys.executable), "lmdbshard")
COMMANDS = ["verify", "info", "len", "preview", "stats", "bench-read"]


def cli(*args, check_ok=True):
    proc = subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check_ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def one_error_line(proc, code=2):
    assert proc.returncode == code and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmdbshard: error: ")
    return lines[0]


def png(path) -> np.ndarray:
    assert os.path.getsize(path) > 1000
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        return np.asarray(img)


def variety(arr: np.ndarray) -> tuple[int, float]:
    """(distinct colours, standard deviation of the pixel values)."""
    return len(np.unique(arr.reshape(-1, 3), axis=0)), float(arr.std())


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_subcommand(command):
    proc = cli(*([command] if command else []), "--help")
    assert proc.stdout.startswith(f"usage: lmdbshard{' ' + command if command else ''}")
    if command is None:
        assert all(c in proc.stdout for c in COMMANDS)
    else:
        assert "root" in proc.stdout


def test_info_shows_samples_bytes_classes_config_errors_and_version(demo_out):
    _, out = demo_out
    text = cli("info", out).stdout
    for expected in (f"{out}: lmdbshard format version 1", "samples   21 of 21 planned, in 5 shards of up to 5",
                     "on disk with plan and reports", "fields    image: jpeg uint8 HWC",
                     "classes   3, 7 samples each", "errors    none", "stages    ", "summed over workers",
                     "config    ", "shard_size=5", "transform.resize_shorter=32", "storage.encoding=jpeg"):
        assert expected in text, expected
    rows = [ln.split() for ln in text.splitlines() if ln.startswith("       ") and "=" not in ln]
    assert rows == [["0", "cat", "7"], ["1", "dog", "7"], ["2", "zebra", "7"]]


def test_info_json_has_counts_bytes_on_disk_and_no_error_list(demo_out):
    _, out = demo_out
    d = json.loads(cli("info", "--json", out).stdout)
    assert d["format_version"] == 1 and d["num_samples"] == 21 and d["class_counts"] == [7, 7, 7]
    assert d["bytes_on_disk"] > sum(s["bytes"] for s in d["shards"]) > 0
    assert "errors" not in d and d["num_errors"] == 0 and d["error_reasons"] == {}
    assert d["config"]["storage"]["encoding"] == "jpeg" and set(d["stats"]["stage_shares"]) >= {"decode", "write"}


def test_info_summarises_skipped_files(ray_local, tmp_path):
    tree = make_tree(str(tmp_path / "src"), per_class=3)
    for rel, data in {"cat/empty.jpg": b"", "dog/text.jpg": b"not an image", "dog/also.jpg": b"nor this"}.items():
        with open(os.path.join(tree.root, rel), "wb") as f:
            f.write(data)
    out = str(tmp_path / "out")
    convert(job(tree.root, out, max_error_rate=0.5))
    text = cli("info", out).stdout
    assert "errors    3 samples skipped: 2 not an image Pillow can identify (corrupt, or a different file " \
           "type), 1 empty file (0 bytes)" in text
    assert "    cat/empty.jpg: empty file (0 bytes)" in text and "dog/text.jpg: not an image" in text
    assert "classes   3, 3 samples each" in text


def test_len(demo_out):
    assert cli("len", demo_out[1]).stdout == "21\n"


def test_preview_writes_a_captioned_contact_sheet(demo_out, tmp_path):
    _, out = demo_out
    grid = tmp_path / "grid.png"
    assert cli("preview", out, "-o", grid, "--n", 9, "--seed", 1).stdout == f"wrote {grid}: 9 samples\n"
    arr = png(grid)
    assert arr.shape == (30 + 3 * (128 + 32 + 6) + 6, 6 + 3 * (128 + 6), 3)   # 3 x 3 cells of 128 px + captions
    colours, std = variety(arr)
    assert colours > 2000 and std > 30
    again, other = tmp_path / "again.png", tmp_path / "other.png"
    cli("preview", out, "-o", again, "--n", 9, "--seed", 1)
    cli("preview", out, "-o", other, "--n", 9, "--seed", 2)
    assert grid.read_bytes() == again.read_bytes() and grid.read_bytes() != other.read_bytes()


def test_preview_of_one_class(demo_out, tmp_path):
    _, out = demo_out
    grid = tmp_path / "dogs.png"
    assert cli("preview", out, "-o", grid, "--class", "dog", "--cell", 64).stdout == \
        f"wrote {grid}: 7 samples of class dog\n"     # every dog, since there are fewer than --n
    assert png(grid).shape[:2] == (30 + 3 * (64 + 32 + 6) + 6, 320)


def test_preview_refuses_unknown_class_and_missing_folder(demo_out, tmp_path):
    _, out = demo_out
    line = one_error_line(cli("preview", out, "-o", tmp_path / "x.png", "--class", "dgo", check_ok=False))
    assert line == "lmdbshard: error: --class 'dgo' is not a class of this dataset; did you mean dog?"
    line = one_error_line(cli("preview", out, "-o", tmp_path / "no" / "x.png", check_ok=False), code=1)
    assert "folder" in line and "does not exist" in line
    assert not (tmp_path / "x.png").exists()


def test_preview_overlays_masks(tmp_path):
    """A hand-built dataset of flat grey images whose records carry a ``mask`` field."""
    image = np.full((40, 60, 3), 128, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:40] = 1
    fields = [Field("image", "raw", image.tobytes(), image.shape, "uint8", "HWC"),
              Field("mask", "raw", mask.tobytes(), mask.shape, "uint8", "none")]
    root = write_dataset(str(tmp_path / "masked"), [[Sample(fields, label=i % 2) for i in range(4)]], ["a", "b"])
    cli("preview", root, "-o", tmp_path / "m.png", "--n", 4)
    arr = png(tmp_path / "m.png").astype(int)
    reddish = (arr[..., 0] - arr[..., 1] > 60) & (arr[..., 0] - arr[..., 2] > 60)
    assert reddish.sum() > 4 * 100      # each 20 x 20 mask square, scaled into its cell, is tinted red


def test_stats_plot(demo_out, tmp_path):
    _, out = demo_out
    plot = tmp_path / "stats.png"
    assert cli("stats", out, "-o", plot).stdout == f"wrote {plot}\n"
    arr = png(plot)
    assert arr.shape == (52 + 44 + 18 * 3 + 12 + 240 + 12, 960, 3)   # 3 named class bars, 3 size panels
    colours, std = variety(arr)
    assert colours > 20 and std > 10
    bar = np.array([84, 160, 232])      # the class bars are drawn at equal length: 7 samples each
    rows = [(arr[y] == bar).all(axis=1).sum() for y in range(arr.shape[0])]
    assert len({n for n in rows if n > 100}) == 1


def test_stats_text_prints_the_same_numbers(demo_out):
    _, out = demo_out
    text = cli("stats", out, "--text").stdout
    assert text.startswith(f"{out}: 21 samples in 5 shards, 3 classes\nsamples per class (from the manifest)\n")
    assert "     0  cat    7\n     1  dog    7\n     2  zebra  7\n  min 7  median 7  max 7  max/min 1.00\n" in text
    assert "stored image size (all 21 samples)" in text
    lines = text.splitlines()
    width, height = (next(ln for ln in lines if ln.startswith(f"  {k} ")) for k in ("width", "height"))
    assert "min 32" in width or "min 32" in height          # resize_shorter=32
    assert len(lines) == 10   # concise: the histograms themselves are in the PNG


def test_stats_needs_an_output(demo_out):
    line = one_error_line(cli("stats", demo_out[1], check_ok=False))
    assert "pass -o stats.png" in line and "--text" in line


def test_bench_read_reports_sequential_and_random_throughput(demo_out):
    _, out = demo_out
    text = cli("bench-read", out, "--n", 15).stdout
    assert text.startswith(f"bench-read {out}: 21 samples in 5 shards")
    for what in ("sequential read ", "random read ", "sequential read+decode", "random read+decode"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(what))
        assert "     15 samples" in line and "/s" in line and "MB/s" in line
    d = json.loads(cli("bench-read", out, "--n", 5, "--json").stdout)
    assert [(p["order"], p["decode"], p["samples"]) for p in d["passes"]] == [
        ("sequential", False, 5), ("random", False, 5), ("sequential", True, 5), ("random", True, 5)]
    assert all(p["per_s"] > 0 and p["bytes"] > 0 for p in d["passes"])


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_dataset_is_one_clear_line(command, tmp_path):
    extra = {"preview": ["-o", tmp_path / "x.png"], "stats": ["--text"]}.get(command, [])
    line = one_error_line(cli(command, tmp_path / "nothing", *extra, check_ok=False), code=1)
    assert "manifest.json not found" in line and "not a complete lmdbshard dataset" in line


def test_readme_preview_is_the_documented_command_output():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(root, "README.md")).read()
    assert "`.venv/bin/lmdbshard preview out/demo -o docs/preview.png --n 25 --cell 96`" in readme
    assert "](docs/preview.png)" in readme
    arr = png(os.path.join(root, "docs", "preview.png"))
    assert arr.shape == (30 + 5 * (96 + 32 + 6) + 6, 6 + 5 * (96 + 6), 3)    # 25 samples in 5 x 5 cells of 96 px
    assert os.path.getsize(os.path.join(root, "docs", "preview.png")) < 300_000 and variety(arr)[0] > 2000


def test_preview_samples_are_distinct_and_of_the_asked_class(demo_out):
    from lmdbshard import ShardedDataset
    from lmdbshard.tools.preview import pick
    with ShardedDataset(demo_out[1]) as ds:
        for seed in range(3):
            some = pick(ds, 10, seed)
            assert len(set(some)) == 10 and some == sorted(some)
            dogs = pick(ds, 4, seed, label=1)
            assert len(set(dogs)) == 4 and all(ds[i][1] == 1 for i in dogs)
        assert pick(ds, 100, 0) == list(range(21))


def test_version():
    from lmdbshard import __version__
    assert cli("--version").stdout == f"lmdbshard {__version__}\n"


def test_preview_writes_to_a_default_file_named_after_the_dataset(demo_out, tmp_path):
    _, out = demo_out
    proc = subprocess.run([SCRIPT, "preview", out, "--n", "4"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    name = f"{os.path.basename(out)}-preview.png"
    assert proc.returncode == 0 and proc.stdout == f"wrote {name}: 4 samples\n", proc.stderr
    png(tmp_path / name)


def test_verify_reports_its_progress_in_its_own_words(demo_out):
    _, out = demo_out
    proc = cli("verify", out, "--progress", "log")
    assert proc.stdout == (f"{out}: OK: 5 shards, 21 records; checked keys, counts, checksums and record CRCs, "
                           "and decoded every record\n")
    last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith("verify: 21/21 records checked" + last.split("checked", 1)[1])
    assert last.endswith("shards 5/5 checked, 0 with problems")
    assert not any(word in proc.stderr for word in ("reused", "skipped", "img/s", "converting"))


def test_stats_text_names_the_extreme_classes_when_there_are_many():
    from lmdbshard.tools.stats import DatasetStats, text_report
    classes = [f"n{i:08d}" for i in range(1000)]
    counts = [1300] * 1000
    counts[7], counts[500], counts[999] = 732, 1100, 1301
    sizes = np.arange(50, 150)
    text = text_report(DatasetStats("in1k", 1_281_167, 1252, classes, counts, True, 100, sizes, sizes, sizes * 90))
    lines = text.splitlines()
    assert len(lines) <= 10, text
    assert lines[0] == "in1k: 1281167 samples in 1252 shards, 1000 classes"
    assert lines[2].split()[:5] == ["fewest", "n00000007", "732,", "n00000500", "1100,"]
    assert lines[3].split()[:3] == ["most", "n00000999", "1301,"]
    assert "min 732  median 1300  max 1301  max/min 1.78" in text


def test_one_shard_is_said_in_the_singular(ray_local, tmp_path):
    src = make_tree(str(tmp_path / "src"), per_class=1)
    out = str(tmp_path / "out")
    convert(job(src.root, out, shard_size=10))
    assert cli("verify", out).stdout.startswith(f"{out}: OK: 1 shard, 3 records;")
    info = cli("info", out).stdout
    assert "in 1 shard of up to 10" in info and "last run  1 shard built" in info
    assert cli("stats", out, "--text").stdout.startswith(f"{out}: 3 samples in 1 shard, 3 classes\n")
