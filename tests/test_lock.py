"""One output, one writer: the lock on ``out``, tested with real drivers in real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from lmdbshard import ShardedDataset
from lmdbshard.read.verify import verify
from lmdbshard.write.lock import LOCK_NAME, OutputLock, OutputLockedError

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

DRIVER = textwrap.dedent("""
    import sys
    from lmdbshard import ConvertConfig, LmdbshardError, RayConfig, SourceConfig, convert
    from lmdbshard.errors import exit_status
    out, gate, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = ConvertConfig(source=SourceConfig(kind="python", target="gated:Gated", kwargs={"n": 6, "gate": gate}),
                        out=out, seed=seed, shard_size=2, progress="none", ray=RayConfig(num_cpus=1))
    try:
        convert(cfg)
    except LmdbshardError as exc:
        print(f"lmdbshard: error: {exc}", file=sys.stderr)
        sys.exit(exit_status(exc))
""")


def start_driver(out: str, gate: str, seed: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, REPO, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", DRIVER, out, gate, str(seed)], env=env, cwd=str(TESTS),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.ray   # the job starts its own Ray cluster
def test_two_drivers_started_at_once_one_writes_the_other_refuses(tmp_path):
    out, gate = str(tmp_path / "out"), str(tmp_path / "gate")
    drivers = {seed: start_driver(out, gate, seed) for seed in (1, 2)}   # same out, different plans
    try:
        deadline = time.monotonic() + 180
        while all(d.poll() is None for d in drivers.values()):   # the winner waits at the gate
            assert time.monotonic() < deadline, "neither driver finished or refused"
            time.sleep(0.1)
        (loser_seed,) = [s for s, d in drivers.items() if d.poll() is not None]
        (winner_seed,) = [s for s in drivers if s != loser_seed]
        loser, winner = drivers[loser_seed], drivers[winner_seed]
        _, err = loser.communicate()
        assert loser.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err        # one line, no traceback
        assert (f"is being written by another conversion, pid {winner.pid} on host {socket.gethostname()}"
                in lines[0]), lines[0]
    finally:
        open(gate, "w").close()
    _, err = winner.communicate(timeout=300)
    assert winner.returncode == 0, err[-3000:]
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["seed"] == winner_seed and not os.path.exists(os.path.join(out, LOCK_NAME))
    reports = [json.load(open(os.path.join(out, "reports", n))) for n in sorted(os.listdir(os.path.join(out, "reports")))]
    assert {r["plan_sha256"] for r in reports} == {manifest["plan_sha256"]} and len(reports) == 3
    assert verify(out).ok
    with ShardedDataset(out) as ds:
        assert sorted(ds.record(i).source_index for i in range(len(ds))) == list(range(6))


def write_lock(out, **holder) -> None:
    os.makedirs(out, exist_ok=True)
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "pid_start": None,
           "token": "feed", **holder}
    with open(os.path.join(out, LOCK_NAME), "w") as f:
        json.dump(doc, f)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_drivers_lock_is_taken_over_with_a_log_line(tmp_path, caplog):
    out = str(tmp_path / "out")
    write_lock(out, pid=dead_pid())
    with caplog.at_level("WARNING", logger="lmdbshard"):
        with OutputLock(out) as lock:
            held = json.load(open(os.path.join(out, LOCK_NAME)))
            assert held["pid"] == os.getpid() and held["token"] == lock.holder.token
    assert "took over the lock of a dead conversion" in caplog.text
    assert os.listdir(out) == []       # released, and nothing moved aside is left


def test_a_live_drivers_lock_is_refused_and_kept(tmp_path):
    out = str(tmp_path / "out")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(out, pid=sleeper.pid)
        with pytest.raises(OutputLockedError, match=rf"another conversion, pid {sleeper.pid} on host"):
            OutputLock(out).acquire()
        assert json.load(open(os.path.join(out, LOCK_NAME)))["pid"] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lock_from_another_host_is_refused_with_how_to_clear_it(tmp_path):
    out = str(tmp_path / "out")
    write_lock(out, host="gpu-node-17", pid=4242)
    with pytest.raises(OutputLockedError) as info:
        OutputLock(out).acquire()
    message = str(info.value)
    assert "pid 4242 on host gpu-node-17" in message and f"delete {os.path.join(out, LOCK_NAME)}" in message
    assert "\n" not in message and os.path.exists(os.path.join(out, LOCK_NAME))
