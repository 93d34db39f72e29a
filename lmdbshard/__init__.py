"""lmdbshard: convert image datasets into globally shuffled, sharded LMDB databases with Ray, and read them back fast."""

__version__ = "0.1.0"

from .config import ConvertConfig, RayConfig, SourceConfig, StorageConfig, TransformConfig, parse_config  # noqa: E402
from .dataset import ShardedDataset  # noqa: E402
from .errors import (  # noqa: E402
    ClassMismatchError, ConfigError, FormatError, FormatVersionError, JobFailedError, LmdbshardError,
    PlanMismatchError, SampleError, ShardError, SourceError,
)


def convert(cfg: "ConvertConfig"):
    """Convert ``cfg.source`` into ``cfg.out``; see :func:`lmdbshard.coordinator.convert`. Imports Ray lazily."""
    from .coordinator import convert as _convert
    return _convert(cfg)


__all__ = [
    "ConvertConfig", "SourceConfig", "TransformConfig", "StorageConfig", "RayConfig", "parse_config",
    "ShardedDataset", "convert", "LmdbshardError", "ConfigError",
    "SourceError", "PlanMismatchError", "FormatError", "FormatVersionError", "ClassMismatchError",
    "SampleError", "ShardError", "JobFailedError", "__version__",
]
