"""Progress display: a live bar with rate and ETA on a terminal, plain lines elsewhere, in plain words."""

import io
import logging
import re
import time

from lmdbshard.write.progress import Progress, SteadyRate, plural, stage_fractions, stage_shares


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_shows_images_rate_eta_shards_and_bounding_stage():
    stream = FakeTTY()
    with Progress(1000, 10, mode="auto", stream=stream) as p:
        assert p.mode == "bar"
        p.reuse(100, 1)
        p.restart_clock()
        for done in range(200, 1001, 100):
            p.add_stage_seconds({"read": 0.1, "decode": 0.6, "encode": 0.3})
            p.update(done, done // 100, skipped=2)
            time.sleep(0.01)
    text = stream.getvalue()
    assert "1000/1000" in text and "shards 10/10 reused 1 failed 0 skipped 2" in text
    assert "| decode 60%" in text
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", text)   # tqdm's elapsed<remaining (the ETA)
    final = text.rsplit("\r", 1)[-1]
    # The bar ends on the job's own rate (images built by this run over its time), which the summary prints.
    assert p.rate() > 0 and f"{p.rate():5.2f}img/s" in final


def test_nothing_is_drawn_before_the_work_starts():
    """What start-up prints (Ray's notices) must never land inside the bar."""
    stream = FakeTTY()
    p = Progress(1000, 10, mode="bar", stream=stream)
    p.reuse(300, 3)
    assert stream.getvalue() == ""
    p.restart_clock()
    assert "300/1000" in stream.getvalue()
    p.close()


def test_plain_lines_when_not_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger="lmdbshard"):
        with Progress(50, 2, mode="auto", interval=0.0, stream=io.StringIO()) as p:
            assert p.mode == "log"
            p.restart_clock()
            p.update(25, 1, skipped=0)
            p.add_stage_seconds({"read": 1.0, "decode": 3.0, "transform": 0.0, "augment": 0.0001, "encode": 1.0,
                                 "write": 0.0})
            p.update(50, 2, skipped=1, failed=1)
    lines = [r.getMessage() for r in caplog.records]
    assert any(l.startswith("progress 25/50 images (50.0%)") and "img/s ETA" in l and "stages" not in l
               for l in lines)
    assert lines[-1].startswith("progress 50/50 images (100.0%)")
    assert lines[-1].endswith("shards 2/2 reused 0 failed 1 skipped 1 stages decode 60%, read 20%, encode 20%")


def test_a_rerun_that_builds_nothing_says_so(caplog):
    for mode in ("log", "bar"):
        caplog.clear()
        stream = FakeTTY()
        with caplog.at_level(logging.INFO, logger="lmdbshard"):
            with Progress(21, 5, mode=mode, stream=stream) as p:
                p.reuse(21, 5)
        assert [r.getMessage() for r in caplog.records] == ["nothing to build: all 5 shards were complete already"]
        assert stream.getvalue() == ""   # no bar, and no "0.0 img/s ETA ?"


def test_stage_shares_name_the_bounding_stage_first_and_leave_out_what_rounds_to_zero():
    seconds = {"read": 0.5, "decode": 6.1, "transform": 0.4, "encode": 2.2, "write": 0.8}
    assert stage_shares(seconds) == "decode 61%, encode 22%, write 8%, read 5%, transform 4%"
    assert list(stage_fractions(seconds)) == ["decode", "encode", "write", "read", "transform"]
    assert abs(sum(stage_fractions(seconds).values()) - 1) < 1e-3
    assert stage_fractions({"read": 0.0}) == {} and stage_shares({}).startswith("n/a")
    # No augmentation: its timer measures a no-op, which the text leaves out and the numbers keep.
    no_augment = {**seconds, "augment": 0.0002}
    assert "augment" not in stage_shares(no_augment) and "augment" in stage_fractions(no_augment)


def test_counts_take_the_right_number():
    assert [plural(n, "shard") for n in (0, 1, 2)] == ["0 shards", "1 shard", "2 shards"]
    assert plural(1, "class", "classes") == "1 class" and plural(3, "class", "classes") == "3 classes"
    assert plural(2.0, "CPU") == "2 CPUs" and plural(1.0, "CPU") == "1 CPU"


def test_steady_rate_leaves_out_the_start_and_the_end():
    """A job that starts slowly (listing, the first tasks) and ends slowly (the last shard's publish):
    the steady rate is its middle's, from the update that reached 10% of the images to the one that
    reached 90%."""
    rate = SteadyRate(1000)
    assert rate.rate() is None
    rate.add(0, now=0.0)
    rate.add(64, now=2.0)      # start-up: 2 s for the first unit
    rate.add(128, now=2.1)     # past 100 (10%): the first mark
    for k in range(3, 15):
        rate.add(64 * k, now=2.1 + 0.1 * (k - 2))
    assert rate.rate() is None   # 896 of 1000: not yet 90%
    rate.add(960, now=3.4)     # past 900: the second mark, 832 images in 1.3 s
    rate.add(1000, now=9.0)    # the end: slow, and left out
    assert abs(rate.rate() - 832 / 1.3) < 1e-9
    one_update = SteadyRate(40)
    one_update.add(40, now=1.0)   # a job done in one step has no steady state to measure
    assert one_update.rate() is None


def test_progress_measures_the_steady_rate_over_this_runs_images():
    """Images reused from an earlier run are no part of this run's rate: its 10% and 90% are of the rest."""
    with Progress(1100, 11, mode="none") as p:
        p.reuse(100, 1)
        p.restart_clock()
        for done in range(200, 1101, 100):
            p.update(done, done // 100, skipped=0)
    assert p.steady.bounds == (100, 900) and [d for _, d in p.steady.marks] == [100, 900]
    assert p.steady.rate() > 0
