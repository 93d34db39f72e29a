"""Real signals to a real driver (``jobs/convert.py``): Ctrl-C (SIGINT to the process group, as a terminal
sends it) or SIGTERM (to the driver alone, as a scheduler sends it) mid-job, and Ctrl-C while Ray starts.

Each must end within seconds with exit status 130, one line that says what is kept and how to resume, no
traceback, no scratch folder, and no process of the driver's private Ray cluster left running; the same
command then finishes the job. A shard is held mid-way by a named pipe standing in for one of its images.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from lmdbshard.read.dataset import ShardedDataset
from lmdbshard.read.verify import verify

from helpers import make_tree
from faults import FifoImage, readers_of, session_processes, start_driver, wait_for

HELD = "dog/img_03.jpg"
IMAGES = 21          # make_tree: 3 classes x 7 images, shard_size=5 -> 5 shards
STOP_WITHIN_S = 30   # from the signal to the driver's exit, on a busy 2-core machine
START_WITHIN_S = 120  # a signal during ray.init waits for it to return (breaking into it can crash)


@pytest.fixture
def held_tree(tmp_path):
    """A source tree whose image HELD blocks its reader until released; restored afterwards."""
    tree = make_tree(str(tmp_path / "src"))
    held = FifoImage(os.path.join(tree.root, HELD))
    yield tree.root, held
    held.restore()


def args(tmp_path) -> list[str]:
    return [f"scratch_dir={tmp_path / 'scratch'}", f"hydra.run.dir={tmp_path / 'hydra'}"]


def stop(driver, sig: int, group: bool) -> tuple[int, str, float]:
    """Send ``sig``; returns (exit status, output, seconds until the driver exited)."""
    t = time.monotonic()
    if group:
        os.killpg(driver.pid, sig)
    else:
        driver.send_signal(sig)
    try:
        output, _ = driver.communicate(timeout=120)
    except BaseException:
        os.killpg(driver.pid, signal.SIGKILL)
        raise
    return driver.returncode, output, time.monotonic() - t


def assert_stopped_cleanly(driver, code: int, output: str, seconds: float, tmp_path, pattern: str,
                           within: float = STOP_WITHIN_S) -> None:
    assert code == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [ln for ln in output.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and re.search(pattern, lines[0]), output[-3000:]
    assert seconds < within, f"the driver took {seconds:.1f} s to stop"
    print(f"stopped in {seconds:.1f} s")
    scratch = str(tmp_path / "scratch")
    assert not os.path.isdir(scratch) or os.listdir(scratch) == []
    # The cluster's processes (raylet, GCS, workers, agents) are in the driver's session: none may outlive it.
    left = session_processes(driver.pid)
    assert not left, f"still running after the driver exited: {sorted(left.values())}"


@pytest.mark.ray   # starts a driver, and its Ray cluster, in a subprocess
def test_ctrl_c_mid_job_prints_one_line_keeps_complete_shards_and_the_rerun_finishes(held_tree, tmp_path):
    src, held = held_tree
    out = str(tmp_path / "out")
    driver = start_driver(src, out, *args(tmp_path))
    reports = os.path.join(out, "reports")
    wait_for(lambda: readers_of(held.path) and len(glob.glob(os.path.join(reports, "*.json"))) >= 3,
             timeout=240, what="three shards done while a fourth is held")
    code, output, seconds = stop(driver, signal.SIGINT, group=True)
    kept = len(os.listdir(reports))
    assert_stopped_cleanly(driver, code, output, seconds, tmp_path,
                           rf"interrupted: {kept} of 5 shards complete and kept; rerun the same command to resume$")
    assert "Token authentication" not in output   # Ray's notice, about a cluster the user never sees
    assert not readers_of(held.path)   # the held task was cancelled, not left reading
    assert not os.path.exists(os.path.join(out, "manifest.json"))

    held.release()
    rerun = start_driver(src, out, *args(tmp_path))
    log, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, log[-3000:]
    assert f"shards          5 ({5 - kept} built, {kept} reused)" in log
    # The last progress line ends on the rate that the summary reports.
    last_rate = re.findall(r"progress \d+/\d+ images \([\d.]+%\) ([\d.]+) img/s", log)[-1]
    assert f"throughput      {last_rate} images/s" in log, log[-3000:]
    assert "augment" not in next(ln for ln in log.splitlines() if "stage time" in ln)   # none was asked for
    assert verify(out).ok and len(ShardedDataset(out)) == IMAGES


@pytest.mark.ray
def test_sigterm_mid_job_stops_in_seconds_and_leaves_no_scratch_or_ray_process(held_tree, tmp_path):
    src, held = held_tree
    out = str(tmp_path / "out")
    driver = start_driver(src, out, *args(tmp_path))
    wait_for(lambda: readers_of(held.path), timeout=240, what="a worker to open the held image")
    assert os.listdir(tmp_path / "scratch")   # the held task is building its shard there
    running = " | ".join(session_processes(driver.pid).values())
    assert "raylet" in running and "gcs_server" in running and "ray::" in running   # what must not outlive it
    code, output, seconds = stop(driver, signal.SIGTERM, group=False)
    assert_stopped_cleanly(driver, code, output, seconds, tmp_path,
                           r"interrupted by SIGTERM: \d of 5 shards complete and kept; rerun the same command "
                           r"to resume$")


@pytest.mark.ray
def test_ctrl_c_while_ray_starts_leaves_no_ray_process(tmp_path):
    src = make_tree(str(tmp_path / "src")).root
    driver = start_driver(src, str(tmp_path / "out"), *args(tmp_path))
    wait_for(lambda: any("gcs_server" in cmd or "raylet" in cmd for cmd in session_processes(driver.pid).values()),
             timeout=120, what="Ray to start its processes")
    code, output, seconds = stop(driver, signal.SIGINT, group=True)
    assert_stopped_cleanly(driver, code, output, seconds, tmp_path,
                           r"interrupted: (Ray was starting, so this run built no shard|\d of 5 shards complete and kept); "
                           r"rerun the same command to resume$", within=START_WITHIN_S)


def test_a_later_run_removes_scratch_of_dead_runs_on_its_host_and_never_a_live_runs(tmp_path):
    from lmdbshard.write.writer import _host, scratch_dir, scratch_owner
    parent = tmp_path / "scratch"
    parent.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()   # a pid that no longer runs
    host = _host()
    dead = parent / f"lmdbshard-{host}-{gone.pid}-000003-abc_12xy"
    live = parent / f"lmdbshard-{host}-{os.getpid()}-000001-q9z8y7x6"
    other_host = parent / f"lmdbshard-not-{host}-{gone.pid}-000002-k2j3h4g5"
    user = parent / "lmdbshard-tmp-abcdefgh"   # a temporary dataset, not scratch
    for d in (dead, live, other_host, user):
        (d / "shard-000001.lmdb").parent.mkdir()
        (d / "shard-000001.lmdb").write_bytes(b"x" * 100)
    fresh = scratch_dir(4, str(parent))
    assert sorted(os.listdir(parent)) == sorted([live.name, other_host.name, user.name, os.path.basename(fresh)])
    assert scratch_owner(os.path.basename(fresh)) == (host, os.getpid())


def test_between_ray_start_and_the_shard_loop_ctrl_c_acts_as_usual(ray_local):
    """Only starting Ray, the shard loop and shutting Ray down hold a signal back; code a caller runs
    inside the session (the benchmark's bare loops, say) is interrupted at once, and handlers come back."""
    from lmdbshard import RayConfig
    from lmdbshard.write.session import ray_session
    # Python's own handler, whatever an earlier test in this process left behind (the full suite runs a
    # Ray Train example before this test).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sigterm = signal.getsignal(signal.SIGTERM)
        t = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            with ray_session(RayConfig()):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)
        assert time.monotonic() - t < 10
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # the handlers came back
        assert signal.getsignal(signal.SIGTERM) == sigterm
    finally:
        signal.signal(signal.SIGINT, previous)
