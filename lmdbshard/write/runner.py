"""Running shard tasks on Ray: the only module that talks to Ray.

One task per shard, a bounded number in flight, retries on worker or node death
(Ray's ``max_retries``), per-image progress through a small actor, reports handed
to the caller as each shard finishes so nothing done is lost if the driver dies.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from lmdbshard.write.config import RayConfig
from lmdbshard.write.interrupt import STOP, caught_signals, descendants, is_running
from lmdbshard.write.progress import Progress, plural
from lmdbshard.write.task import ShardReport, ShardTask, WriteOptions, write_shard
from lmdbshard.write.writer import remove_dead_scratch

log = logging.getLogger("lmdbshard")


class _QuietTokenNotice(logging.Filter):
    """Ray announces token authentication whenever it starts a cluster. lmdbshard's private local cluster
    lives as long as the job, keeps the authentication, and needs no opt-out advice on the job's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


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


def pickle_for_workers(obj: object) -> bytes:
    """``obj`` pickled as Ray pickles task arguments: classes and functions of ``__main__`` (a script,
    a notebook) by value, so that workers can rebuild them. Plain ``pickle.loads`` reads it back."""
    return ray.cloudpickle.dumps(obj)


@ray.remote(num_cpus=0)
class _ProgressBoard:
    """Images done so far in each running shard, as last reported by its task, per job."""

    def __init__(self) -> None:
        self.done: dict[str, dict[int, int]] = {}

    def set(self, job: str, shard: int, n: int) -> None:
        self.done.setdefault(job, {})[shard] = n

    def snapshot(self, job: str) -> dict[int, int]:
        return self.done.get(job, {})

    def forget(self, job: str) -> None:
        self.done.pop(job, None)


BOARD_NAME = "lmdbshard-progress"


def _new_board():
    """The progress actor of this driver, placed on the driver's node when it can be (a lost worker node
    must not take it). Named, so every job of one Ray session shares it: an actor costs a new worker
    process (measured: 0.6-1.0 CPU-s to start, and as much again for the worker Ray starts to replace
    it), 10-20% of the CPU of a 2,000-image job on 2 cores when each job started and killed its own."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return _ProgressBoard.options(name=BOARD_NAME, get_if_exists=True, scheduling_strategy=here).remote()


#: Seconds between a task's reports of its images done. Each report is an actor call that costs the
#: actor about 1.5 ms of CPU, and more the first time a worker calls it; the bar needs no finer grain.
TASK_PROGRESS_S = 2.0


def _run_one(task: ShardTask, opts: WriteOptions, board, job: str) -> ShardReport:
    if board is None:
        return write_shard(task, opts)
    last = time.monotonic()

    def report(k: int, n: int) -> None:
        nonlocal last
        if time.monotonic() - last >= TASK_PROGRESS_S:
            last = time.monotonic()
            board.set.remote(job, k, n)

    return write_shard(task, opts, progress=report)


@dataclass
class ShardFailure:
    index: int
    message: str


def run_shards(tasks: Iterator[ShardTask], opts: WriteOptions, cfg: RayConfig, progress: Progress,
               on_report: Callable[[ShardReport], None]) -> list[ShardFailure]:
    """Run every task; call ``on_report`` as each shard completes. Stops submitting after a failure."""
    remote = ray.remote(_run_one).options(num_cpus=cfg.cpus_per_task, max_retries=cfg.max_retries,
                                          retry_exceptions=False)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    limit = cfg.max_in_flight or max(1, int(2 * cpus / cfg.cpus_per_task))
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    log.info("Ray cluster: %s, %s; up to %s in flight, %g CPU each", plural(nodes, "node"),
             plural(cpus, "CPU"), plural(limit, "shard task"), cfg.cpus_per_task)
    board = _new_board() if progress.mode != "none" else None   # nothing shows per-image progress
    job = uuid.uuid4().hex
    opts_ref = ray.put(opts)
    in_flight: dict[ray.ObjectRef, ShardTask] = {}
    failures: list[ShardFailure] = []
    finished_images, skipped = progress.done, progress.skipped
    shards_done = progress.shards_done
    snapshot_ref = None
    last_snapshot = 0.0
    partial: dict[int, int] = {}
    with caught_signals():   # a signal is seen at the top of the loop, between Ray calls
        try:
            while True:
                STOP.check(f"{shards_done} of {plural(progress.shards, 'shard')} complete and kept")
                while not failures and len(in_flight) < limit:
                    task = next(tasks, None)
                    if task is None:
                        break
                    in_flight[remote.remote(task, opts_ref, board, job)] = task
                if not in_flight:
                    break
                # Back as soon as one shard is done, so the next is submitted at once (max_in_flight may equal
                # the worker count); at least every 0.5 s for the progress display.
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5, fetch_local=False)
                for ref in ready:
                    task = in_flight.pop(ref)
                    try:
                        report: ShardReport = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        failures.append(ShardFailure(task.index, _reason(exc)))
                        log.error("shard %d failed: %s", task.index, failures[-1].message)
                        continue
                    on_report(report)
                    finished_images += report.planned
                    skipped += len(report.errors)
                    shards_done += 1
                if board is None:
                    progress.update(finished_images, shards_done, skipped, len(failures))
                    continue
                if snapshot_ref is not None and ray.wait([snapshot_ref], timeout=0)[0]:
                    try:
                        partial = ray.get(snapshot_ref)
                    except ray.exceptions.RayActorError:   # its node died: progress only, so start another
                        log.warning("the progress actor died; restarting it (shard results are unaffected)")
                        board = _new_board()
                    snapshot_ref = None
                if snapshot_ref is None and time.monotonic() - last_snapshot >= TASK_PROGRESS_S:
                    snapshot_ref, last_snapshot = board.snapshot.remote(job), time.monotonic()
                running_ids = {t.index for t in in_flight.values()}
                running = sum(n for k, n in partial.items() if k in running_ids)
                progress.update(finished_images + running, shards_done, skipped, len(failures))
        except BaseException:
            _cancel(list(in_flight))
            raise
        finally:
            progress.stop_clock()
            if board is not None:
                board.forget.remote(job)
    return failures


#: Seconds to wait for cancelled tasks to end before the driver goes on.
CANCEL_WAIT_S = 5.0


def _cancel(refs: list) -> None:
    """Stop running tasks now: their workers are killed (a task blocked reading a file would not see a
    gentler request), then wait a little for Ray to confirm, so that their scratch can be removed."""
    for ref in refs:
        ray.cancel(ref, force=True)
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S, fetch_local=False)


def _reason(exc: BaseException) -> str:
    """One line for a failed task: the original exception's message when there is one."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, ray.exceptions.RayError):
        return f"{type(cause).__name__}: {cause}"
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def check_shards_on_ray(expectations: list, decode: bool = True) -> tuple[int, list]:
    """``verify.check_shards`` as Ray tasks spread over the cluster's nodes (the shard files must be
    reachable from every node, as for writing them): up to four tasks per CPU, a few shards each, every
    task scanning its shards with read-ahead. Returns (records read, problems in shard order)."""
    from lmdbshard.read.verify import check_shards
    expectations = list(expectations)
    if not expectations:
        return 0, []
    tasks = min(len(expectations), 4 * max(1, int(ray.cluster_resources().get("CPU", 1))))
    remote = ray.remote(check_shards).options(num_cpus=1, scheduling_strategy="SPREAD", max_retries=3)
    results = ray.get([remote.remote(expectations[i::tasks], decode, 2) for i in range(tasks)])
    problems = sorted((p for _, found in results for p in found), key=lambda p: p.shard if p.shard is not None else -1)
    return sum(n for n, _ in results), problems
