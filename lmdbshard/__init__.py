"""lmdbshard: convert image datasets into globally shuffled, sharded LMDB databases with Ray, and read them back fast."""

__version__ = "0.1.0"

from lmdbshard.write.config import (
    AugmentConfig, AugmentOp, ConvertConfig, RayConfig, SourceConfig, StorageConfig, TransformConfig, parse_config,
)
from lmdbshard.errors import (
    ClassMismatchError, ConfigError, DiskFullError, FormatError, FormatVersionError, JobFailedError,
    LmdbshardError, PlanMismatchError, ResumeError, SampleError, ShardError, SourceError,
)

#: The reading side, imported on first use: a conversion job (and its ``--help``) never needs it.
_LAZY = {"ShardedDataset": "lmdbshard.read.dataset", "ShardSampler": "lmdbshard.read.sampler",
         "verify": "lmdbshard.read.verify", "ShardStream": "lmdbshard.read.stream"}


def convert(cfg: "ConvertConfig", *, temporary: bool = False, dataset: object = None):
    """Convert ``cfg.source`` into ``cfg.out``; see :func:`lmdbshard.write.coordinator.convert`. Imports Ray lazily.

    ``temporary=True`` converts into a fresh temporary folder and returns a
    :class:`~lmdbshard.write.temporary.TemporaryDataset`, a context manager that removes it when closed.
    ``dataset``: an in-memory indexable dataset for ``source.kind=python`` (pickled once for the workers).
    """
    if temporary:
        from lmdbshard.write.temporary import convert_temporary
        return convert_temporary(cfg, dataset)
    from lmdbshard.write.coordinator import convert as _convert
    return _convert(cfg, dataset)


def ray_dataset(roots, **kwargs):
    """A ``ray.data.Dataset`` over the shards of ``roots``; see :func:`lmdbshard.read.ray_data.ray_dataset`.
    Imports Ray Data lazily."""
    from lmdbshard.read.ray_data import ray_dataset as _ray_dataset
    return _ray_dataset(roots, **kwargs)


def __getattr__(name: str):
    # ShardStream subclasses torch's IterableDataset when torch is installed: importing it on first use
    # only means that ``import lmdbshard`` never imports torch.
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lmdbshard' has no attribute {name!r}")


__all__ = [
    "ConvertConfig", "SourceConfig", "TransformConfig", "AugmentConfig", "AugmentOp", "StorageConfig", "RayConfig",
    "parse_config",
    "ShardedDataset", "ShardSampler", "ShardStream", "convert", "verify", "ray_dataset", "LmdbshardError",
    "ConfigError", "SourceError", "PlanMismatchError", "FormatError", "FormatVersionError", "ClassMismatchError",
    "ResumeError", "SampleError", "ShardError", "DiskFullError", "JobFailedError", "__version__",
]
