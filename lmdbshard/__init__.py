"""lmdbshard: convert image datasets into globally shuffled, sharded LMDB databases with Ray, and read them back fast."""

__version__ = "0.1.0"

from .config import ConvertConfig, RayConfig, SourceConfig, StorageConfig, TransformConfig, parse_config  # noqa: E402
from .dataset import ShardedDataset  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError, DiskFullError, FormatError, FormatVersionError, JobFailedError, LmdbshardError, PlanMismatchError,
    SampleError, ShardError, SourceError,
)
from .verify import verify  # noqa: E402


def convert(cfg: "ConvertConfig"):
    """Convert ``cfg.source`` into ``cfg.out``; see :func:`lmdbshard.coordinator.convert`. Imports Ray lazily."""
    from .coordinator import convert as _convert
    return _convert(cfg)


__all__ = [
    "ConvertConfig", "SourceConfig", "TransformConfig", "StorageConfig", "RayConfig", "parse_config",
    "ShardedDataset", "convert", "LmdbshardError", "ConfigError", "SourceError", "PlanMismatchError",
    "FormatError", "FormatVersionError", "SampleError", "ShardError", "DiskFullError", "JobFailedError", "verify", "__version__",
]
