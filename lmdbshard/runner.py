"""Running shard tasks on Ray: the only module that talks to Ray.

One task per shard, a bounded number in flight, retries on worker or node death
(Ray's ``max_retries``), per-image progress through a small actor, reports handed
to the caller as each shard finishes so nothing done is lost if the driver dies.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .config import RayConfig
from .progress import Progress
from .shard import ShardReport, ShardTask, WriteOptions, write_shard

log = logging.getLogger("lmdbshard")


@contextmanager
def ray_session(cfg: RayConfig) -> Iterator[float]:
    """Connect to (``address``) or start a local Ray cluster unless one is up; yields start-up seconds."""
    t = time.monotonic()
    started = False
    if not ray.is_initialized():
        # address None starts a private local cluster ("local"), never one that `ray start` left running.
        kwargs = dict(address=cfg.address or "local", include_dashboard=False, logging_level=logging.WARNING,
                      log_to_driver=True)
        if cfg.address is None:
            kwargs["num_cpus"] = cfg.num_cpus
        ray.init(**kwargs)
        started = True
    try:
        yield time.monotonic() - t
    finally:
        if started:
            ray.shutdown()


@ray.remote(num_cpus=0)
class _ProgressBoard:
    """Images done so far in each running shard, as last reported by its task."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def set(self, shard: int, n: int) -> None:
        self.done[shard] = n

    def snapshot(self) -> dict[int, int]:
        return self.done


def _new_board():
    """The progress actor, placed on the driver's node when it can be: a lost worker node must not take it."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return _ProgressBoard.options(scheduling_strategy=here).remote()


def _run_one(task: ShardTask, opts: WriteOptions, board) -> ShardReport:
    return write_shard(task, opts, progress=lambda k, n: board.set.remote(k, n))


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
    log.info("Ray cluster: %d node(s), %g CPUs; up to %d shard tasks in flight, %g CPU each",
             nodes, cpus, limit, cfg.cpus_per_task)
    board = _new_board()
    opts_ref = ray.put(opts)
    in_flight: dict[ray.ObjectRef, ShardTask] = {}
    failures: list[ShardFailure] = []
    finished_images, skipped = progress.done, progress.skipped
    shards_done = progress.shards_done
    snapshot_ref = None
    partial: dict[int, int] = {}
    try:
        while True:
            while not failures and len(in_flight) < limit:
                task = next(tasks, None)
                if task is None:
                    break
                in_flight[remote.remote(task, opts_ref, board)] = task
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0.5, fetch_local=False)
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
            if snapshot_ref is not None and ray.wait([snapshot_ref], timeout=0)[0]:
                try:
                    partial = ray.get(snapshot_ref)
                except ray.exceptions.RayActorError:   # its node died: progress only, so start another
                    log.warning("the progress actor died; restarting it (shard results are unaffected)")
                    board = _new_board()
                snapshot_ref = None
            if snapshot_ref is None:
                snapshot_ref = board.snapshot.remote()
            running_ids = {t.index for t in in_flight.values()}
            running = sum(n for k, n in partial.items() if k in running_ids)
            progress.update(finished_images + running, shards_done, skipped, len(failures))
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.kill(board)
    return failures


def _reason(exc: BaseException) -> str:
    """One line for a failed task: the original exception's message when there is one."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, ray.exceptions.RayError):
        return f"{type(cause).__name__}: {cause}"
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
