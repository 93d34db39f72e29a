"""Progress display: a live bar with rate and ETA on a terminal, plain lines elsewhere."""

import io
import logging

from lmdbshard.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_shows_images_rate_eta_and_shards():
    stream = FakeTTY()
    with Progress(1000, 10, mode="auto", stream=stream) as p:
        assert p.mode == "bar"
        p.reuse(100, 1)
        for done in range(200, 1001, 100):
            p.update(done, done // 100, skipped=2)
    text = stream.getvalue()
    assert "1000/1000" in text and "img/s" in text and "shards 10/10 reused 1 skipped 2" in text
    assert "<" in text   # tqdm's elapsed<remaining (ETA) field


def test_plain_lines_when_not_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger="lmdbshard"):
        with Progress(50, 2, mode="auto", interval=0.0, stream=io.StringIO()) as p:
            assert p.mode == "log"
            p.update(25, 1, skipped=0)
            p.update(50, 2, skipped=1, failed=0)
    lines = [r.getMessage() for r in caplog.records]
    assert any(l.startswith("progress 25/50 images (50.0%)") and "img/s ETA" in l for l in lines)
    assert lines[-1].startswith("progress 50/50 images (100.0%)") and "shards 2/2 skipped 1" in lines[-1]
