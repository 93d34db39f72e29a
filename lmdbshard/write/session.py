"""The Ray session of a job: connect to a cluster, or start a private local one and shut it down whole.

``ray_session`` is the only place lmdbshard starts or stops Ray; ``runner`` runs the shard tasks on it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager, suppress
from typing import Iterator, Optional

import ray

from lmdbshard.write.config import RayConfig
from lmdbshard.write.interrupt import STOP, caught_signals, descendants, is_running
from lmdbshard.write.writer import remove_dead_scratch


class _QuietTokenNotice(logging.Filter):
    """Ray announces token authentication whenever it starts a cluster. lmdbshard's private local cluster
    lives as long as the job, keeps the authentication, and needs no opt-out advice on the job's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


#: Ray settings of the private local cluster, which lives as long as the job (or the benchmark). Its idle
#: workers are kept: by default Ray exits a worker beyond the CPU count after 1 s idle, and a shard's writer
#: (no CPU reserved) then starts a new one for the next shard, 0.6-0.8 CPU-s each (3-4 per job of 20 shards
#: on 2 CPUs, measured). A job needs at most its CPUs' unit workers plus its open shards' writers.
PRIVATE_CLUSTER = {"idle_worker_killing_time_threshold_ms": 24 * 3600 * 1000}


@contextmanager
def ray_session(cfg: RayConfig, scratch_dir: Optional[str] = None) -> Iterator[float]:
    """Connect to (``address``) or start a local Ray cluster unless one is up; yields start-up seconds.

    SIGINT and SIGTERM wait while Ray starts, while shard tasks run (``run_shards``) and while Ray shuts
    down, then stop the job in order with one ``JobInterrupted``; in between (the caller's own code) they
    act as usual. A cluster it started is shut down on the way out, also on an interrupt, and none of its
    processes outlive it; then the scratch folders that killed tasks left on this host are removed."""
    t = time.monotonic()
    started, private = not ray.is_initialized(), cfg.address is None
    before: set[int] = set()
    try:
        if started:
            # address None starts a private local cluster ("local"), never one that `ray start` left running.
            kwargs = dict(address=cfg.address or "local", include_dashboard=False,
                          logging_level=logging.WARNING, log_to_driver=True)
            if private:
                kwargs["num_cpus"] = cfg.num_cpus
                kwargs["_system_config"] = PRIVATE_CLUSTER
                before = set(descendants(os.getpid()))
            with caught_signals() as reinstall:
                _start(kwargs, private)
                reinstall()   # ray.init set its own SIGTERM handler; it is put back on the way out
                STOP.check("Ray was starting, so this run built no shard")
        yield time.monotonic() - t
    finally:
        with caught_signals():
            if started:
                _shutdown(private, before)
            remove_dead_scratch(scratch_dir)


def _start(kwargs: dict, private: bool) -> None:
    """``ray.init``; a SIGTERM while it runs (Ray's own handler raises ``SystemExit``) becomes an interrupt."""
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    quiet = _QuietTokenNotice()
    if private:
        notice.addFilter(quiet)
    try:
        ray.init(**kwargs)
    except SystemExit:
        STOP.handle(signal.SIGTERM, None)
    finally:
        notice.removeFilter(quiet)


#: Seconds a shut-down private cluster gets to exit before its processes are killed.
SHUTDOWN_WAIT_S = 10.0


def _shutdown(private: bool, before: set[int]) -> None:
    """``ray.shutdown``; for the private cluster, also wait until every process it started (the Ray
    processes below this one that were not there before ``ray.init``) has exited."""
    family = [pid for pid in descendants(os.getpid()) if pid not in before and _is_ray(pid)] if private else []
    ray.shutdown(wait_for_processes=private)
    deadline = time.monotonic() + SHUTDOWN_WAIT_S
    while family and time.monotonic() < deadline:
        family = [pid for pid in family if is_running(pid)]
        time.sleep(0.05)
    for pid in family:   # still there: ray::IDLE workers whose raylet is gone, agents
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _is_ray(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ray" in f.read()
    except OSError:
        return False
