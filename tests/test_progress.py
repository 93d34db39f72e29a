"""Progress display: a live bar with rate and ETA on a terminal, plain lines elsewhere."""

import io
import logging

from lmdbshard.write.progress import Progress, stage_fractions, stage_shares


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_shows_images_rate_eta_shards_and_bounding_stage():
    stream = FakeTTY()
    with Progress(1000, 10, mode="auto", stream=stream) as p:
        assert p.mode == "bar"
        p.reuse(100, 1)
        for done in range(200, 1001, 100):
            p.add_stage_seconds({"read": 0.1, "decode": 0.6, "encode": 0.3})
            p.update(done, done // 100, skipped=2)
    text = stream.getvalue()
    assert "1000/1000" in text and "img/s" in text and "shards 10/10 reused 1 failed 0 skipped 2" in text
    assert "| decode 60%" in text
    assert "<" in text   # tqdm's elapsed<remaining (ETA) field


def test_plain_lines_when_not_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger="lmdbshard"):
        with Progress(50, 2, mode="auto", interval=0.0, stream=io.StringIO()) as p:
            assert p.mode == "log"
            p.update(25, 1, skipped=0)
            p.add_stage_seconds({"read": 1.0, "decode": 3.0, "transform": 0.0, "encode": 1.0, "write": 0.0})
            p.update(50, 2, skipped=1, failed=1)
    lines = [r.getMessage() for r in caplog.records]
    assert any(l.startswith("progress 25/50 images (50.0%)") and "img/s ETA" in l and "stages" not in l
               for l in lines)
    assert lines[-1].startswith("progress 50/50 images (100.0%)")
    assert lines[-1].endswith("shards 2/2 reused 0 failed 1 skipped 1 "
                              "stages decode 60%, read 20%, encode 20%, transform 0%, write 0%")


def test_stage_shares_name_the_bounding_stage_first():
    seconds = {"read": 0.5, "decode": 6.1, "transform": 0.4, "encode": 2.2, "write": 0.8}
    assert stage_shares(seconds) == "decode 61%, encode 22%, write 8%, read 5%, transform 4%"
    assert list(stage_fractions(seconds)) == ["decode", "encode", "write", "read", "transform"]
    assert abs(sum(stage_fractions(seconds).values()) - 1) < 1e-3
    assert stage_fractions({"read": 0.0}) == {} and stage_shares({}).startswith("n/a")
