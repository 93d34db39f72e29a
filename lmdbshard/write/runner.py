"""Running shard tasks on Ray (``session`` starts and stops it): with it, the only module that talks to Ray.

Each shard is cut into work units (``ray.unit_size`` items) that run on any CPUs and return their
values through the object store, and one light writer task per shard appends them in order and
publishes the file: every CPU works whatever the shard count, also at the end of a job, while a
shard is still committed whole. A bounded number of units in flight and of shards open, retries on
worker or node death (Ray's ``max_retries``), per-image progress from finished units (no actor, whose
worker process would cost 0.6-1.0 CPU-s to start), reports handed to the caller as each shard finishes
so nothing done is lost if the driver dies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator

import ray

from lmdbshard.write.config import RayConfig
from lmdbshard.write.interrupt import STOP, caught_signals
from lmdbshard.write.progress import Progress, plural
from lmdbshard.write.task import ShardReport, ShardTask, UnitResult, WriteOptions, encode_unit, write_shard, write_units
from lmdbshard.write.units import UnitSizer, tapered_ranges, unit_ranges

log = logging.getLogger("lmdbshard")


def pickle_for_workers(obj: object) -> bytes:
    """``obj`` pickled as Ray pickles task arguments: classes and functions of ``__main__`` (a script,
    a notebook) by value, so that workers can rebuild them. Plain ``pickle.loads`` reads it back."""
    return ray.cloudpickle.dumps(obj)


def _run_one(task: ShardTask, opts: WriteOptions) -> ShardReport:
    """A whole shard in one task: a shard of one work unit, or ``ray.unit_size=0``."""
    return write_shard(task, opts, unit_size=task.count or 1)


def _encode_unit(task: ShardTask, start: int, stop: int, opts: WriteOptions) -> UnitResult:
    """One work unit: its values go back through the object store to the shard's writer."""
    return encode_unit(task, start, stop, opts)


def _write_units(task: ShardTask, opts: WriteOptions, units: list) -> ShardReport:
    """A shard's writer: waits for its units in offset order, appends their values, publishes the file.
    ``units`` is ``[[ref, ...]]``: refs inside a list reach the task as refs, not as values."""
    return write_units(task, opts, (ray.get(ref) for ref in units[0]))


@dataclass
class ShardFailure:
    index: int
    message: str


@dataclass
class _Shard:
    """A shard being built: its units (refs; for a whole-shard task, that task) and its writer."""

    task: ShardTask
    units: list
    writer: object
    sizes: dict = field(default_factory=dict)   # unit ref -> its items (none for a whole-shard task)
    done: int = 0                               # items of its finished units


class _Submitter:
    """Opens shards (their unit tasks and writer) while CPUs would otherwise idle, within the bounds:
    at most ``limit`` work units unfinished, and at most enough shards open to feed them plus one
    (a unit's values wait in the object store until its shard is published)."""

    def __init__(self, opts: WriteOptions, cfg: RayConfig, limit: int, slots: int):
        common = dict(max_retries=cfg.max_retries, retry_exceptions=False)
        self.whole = ray.remote(_run_one).options(num_cpus=cfg.cpus_per_task, **common)
        self.unit = ray.remote(_encode_unit).options(num_cpus=cfg.cpus_per_task, **common)
        self.writer = ray.remote(_write_units).options(num_cpus=0, **common)
        self.opts_ref, self.limit = ray.put(opts), limit
        self.max_open = limit + 1
        self.slots = slots
        self.sizer = UnitSizer(cfg.unit_size, slots, 0, cfg.unit_seconds)

    @property
    def unit_size(self) -> int:
        return self.sizer.size

    def open(self, task: ShardTask, last: bool) -> _Shard:
        """Submit ``task``'s units and writer; ``last``: the job's last shard, whose units taper."""
        self.sizer.largest = max(self.sizer.largest, task.count)
        if not self.unit_size:
            ranges = [(0, task.count)]
        elif last:
            ranges = tapered_ranges(task.count, self.unit_size, self.slots)
        else:
            ranges = unit_ranges(task.count, self.unit_size)
        self.max_open = max(2, -(-self.limit // len(ranges)) + 1)
        if len(ranges) == 1:
            ref = self.whole.remote(task, self.opts_ref)
            return _Shard(task, [ref], ref)
        units = [self.unit.remote(task, a, b, self.opts_ref) for a, b in ranges]   # positions, not items
        writer = self.writer.remote(task, self.opts_ref, [units])
        return _Shard(task, units, writer, {ref: b - a for ref, (a, b) in zip(units, ranges)})


def run_shards(tasks: Iterator[ShardTask], opts: WriteOptions, cfg: RayConfig, progress: Progress,
               on_report: Callable[[ShardReport], None]) -> list[ShardFailure]:
    """Run every task; call ``on_report`` as each shard completes. Stops submitting after a failure.

    A shard is cut into work units of ``cfg.unit_size`` items, which run on any CPUs, and one light
    writer task (no CPU reserved) appends their values in order and publishes the shard."""
    cpus = ray.cluster_resources().get("CPU", 1.0)
    limit = cfg.max_in_flight or max(1, int(2 * cpus / cfg.cpus_per_task))
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    log.info("Ray cluster: %s, %s; up to %s in flight, %g CPU each", plural(nodes, "node"),
             plural(cpus, "CPU"), plural(limit, "work unit"), cfg.cpus_per_task)
    submit = _Submitter(opts, cfg, limit, max(1, min(limit, int(cpus / cfg.cpus_per_task))))   # units at once
    tasks = _marking_last(tasks)
    shards: dict[object, _Shard] = {}   # writer ref -> its shard
    running: set = set()                # unit refs not yet finished
    unit_of: dict[object, _Shard] = {}   # unit ref -> its shard, until the unit finishes
    failures: list[ShardFailure] = []
    finished_images, skipped = progress.done, progress.skipped
    shards_done = progress.shards_done
    with caught_signals():   # a signal is seen at the top of the loop, between Ray calls
        try:
            while True:
                STOP.check(f"{shards_done} of {plural(progress.shards, 'shard')} complete and kept")
                while not failures and len(running) < limit and len(shards) < submit.max_open:
                    task, last = next(tasks, (None, True))
                    if task is None:
                        break
                    shard = submit.open(task, last)
                    shards[shard.writer] = shard
                    running.update(shard.units)
                    unit_of.update(dict.fromkeys(shard.sizes, shard))
                if not shards:
                    break
                # Back as soon as a unit or a shard is done, so that the next is submitted at once; at least
                # every 0.5 s for the progress display.
                ready, _ = ray.wait(list(running | shards.keys()), num_returns=1, timeout=0.5, fetch_local=False)
                for ref in ready:
                    running.discard(ref)
                    if ref in unit_of:   # a unit: its writer fetches it
                        owner = unit_of.pop(ref)
                        owner.done += owner.sizes[ref]
                        was = submit.unit_size
                        grown = submit.sizer.finished(owner.sizes[ref])
                        if grown:
                            log.info("work units grow from %d to %d images for the next shards: at %.0f images/s on "
                                     "%d CPUs, a unit took %.2f s (ray.unit_seconds=%g)", was, grown[0], grown[1],
                                     submit.slots, submit.slots * was / grown[1], cfg.unit_seconds)
                        continue
                    shard = shards.pop(ref)
                    running.difference_update(shard.units)
                    for unit in shard.units:
                        unit_of.pop(unit, None)
                    try:
                        report: ShardReport = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        failures.append(ShardFailure(shard.task.index, _reason(exc)))
                        log.error("shard %d failed: %s", shard.task.index, failures[-1].message)
                        continue
                    on_report(report)
                    finished_images += report.planned
                    skipped += len(report.errors)
                    shards_done += 1
                # Per-image progress: the images of finished units (a whole-shard task's, once it is done).
                progress.update(finished_images + sum(s.done for s in shards.values()), shards_done, skipped,
                                len(failures))
        except BaseException:
            _cancel(list(running | shards.keys()))
            raise
        finally:
            progress.stop_clock()
    return failures


def _marking_last(tasks: Iterator[ShardTask]) -> Iterator[tuple[ShardTask, bool]]:
    """``(task, is_the_last_one)``: looks one task ahead."""
    task = next(tasks, None)
    while task is not None:
        following = next(tasks, None)
        yield task, following is None
        task = following


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
    while isinstance(cause, ray.exceptions.RayTaskError) and getattr(cause, "cause", None) is not None:
        cause = cause.cause   # a unit's failure, as its shard's writer met it
    if cause is not None and not isinstance(cause, ray.exceptions.RayError):
        return f"{type(cause).__name__}: {cause}"
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def check_shards_on_ray(expectations: list, decode: bool = True) -> tuple[int, list]:
    """``verify.check_shards`` as Ray tasks spread over the cluster's nodes (the shard files must be
    reachable from every node, as for writing them): up to four tasks per CPU, a few shards each, every
    task scanning its shards with read-ahead. Returns (records read, problems in shard order)."""
    from lmdbshard.read.verify import check_shards
    results = _spread(check_shards, expectations, decode, 2)
    return sum(n for n, _ in results), _by_shard(p for _, found in results for p in found)


def check_objects_on_ray(entries: list, store, threads: int) -> list:
    """``object_check.check_objects`` as Ray tasks spread over the nodes, each reading two objects at a
    time: a rerun into an object store hashes the shard objects where the CPUs and network links are, not
    all through the driver (10^8 samples are some 40,000 shards, terabytes). Problems in shard order."""
    from lmdbshard.write.object_check import check_objects
    return _by_shard(p for found in _spread(check_objects, entries, store, min(threads, 2)) for p in found)


def _spread(fn: Callable, items: list, *args) -> list:
    """``fn(some_items, *args)`` as up to four Ray tasks per CPU, spread over the nodes; their results."""
    tasks = min(len(items), 4 * max(1, int(ray.cluster_resources().get("CPU", 1))))
    remote = ray.remote(fn).options(num_cpus=1, scheduling_strategy="SPREAD", max_retries=3)
    return ray.get([remote.remote(items[i::tasks], *args) for i in range(tasks)])


def _by_shard(problems) -> list:
    return sorted(problems, key=lambda p: -1 if p.shard is None else p.shard)
