"""``make bench``: lmdbshard's conversion and reads side by side with the plain loops that set
the limit on this machine, with every target reported as PASS or MISS.

- ``config.py``: ``BenchConfig``, the ``bench:`` section of conf/benchmark.yaml;
- ``baselines.py``: the plain loops (bare chain, folder2lmdb recipe, ``txn.get``, PIL decode, ImageFolder);
- ``conversion.py``: conversion runs, interleaved and repeated, Ray start-up apart;
- ``reads.py``: random and sequential read passes;
- ``opening.py``: opening a dataset of many shards, time and RSS;
- ``report.py``: the table, the targets and the JSON;
- ``run.py``: ``run_bench``, all of it in order.
"""

from lmdbshard.benchmark.config import BenchConfig

__all__ = ["BenchConfig", "run_bench"]


def run_bench(*args, **kwargs):
    """See :func:`lmdbshard.benchmark.run.run_bench`. Imported on call: the conversion job's schema
    imports ``BenchConfig`` from here, and must not pay for torch (``ShardStream``) on every start."""
    from lmdbshard.benchmark.run import run_bench as _run_bench
    return _run_bench(*args, **kwargs)
