"""One hierarchy of lmdbshard errors.

Each class mixes in the standard-library type a caller would already catch
(``ValueError`` for bad values, ``OSError`` for storage), so ``except ValueError``
keeps working while ``except LmdbshardError`` catches everything of ours.
Messages are one line: what is wrong, and how to fix it.
"""

from __future__ import annotations


class LmdbshardError(Exception):
    """Base class of every error lmdbshard raises on purpose."""


class ConfigError(LmdbshardError, ValueError):
    """A configuration value is missing, unknown or of the wrong type. Raised before any work."""


class SourceError(LmdbshardError, ValueError):
    """The source dataset cannot be listed (missing root, no classes, no images)."""


class PlanMismatchError(LmdbshardError, ValueError):
    """An output folder holds a plan that does not match this job's source or config."""


class FormatError(LmdbshardError, ValueError):
    """A record, key or manifest is malformed."""


class FormatVersionError(FormatError):
    """Data was written by a newer format version than this reader understands."""

    def __init__(self, what: str, found: int, supported: int):
        super().__init__(
            f"{what} has format version {found}, but this lmdbshard reads versions up to "
            f"{supported}; upgrade lmdbshard to read it"
        )
        self.found = found
        self.supported = supported


class ClassMismatchError(LmdbshardError, ValueError):
    """Datasets read together have different class lists, and no rule to combine their labels was given."""


class ResumeError(LmdbshardError, ValueError):
    """A saved sampler state does not fit the sampler or dataset it is loaded into."""


class SampleError(LmdbshardError, ValueError):
    """One source sample could not be read or decoded."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ShardError(LmdbshardError, RuntimeError):
    """A shard could not be written, or failed verification."""


class DiskFullError(LmdbshardError, OSError):
    """A disk filled up while writing; the message names the file, the space needed and what is free."""


class JobFailedError(LmdbshardError, RuntimeError):
    """The conversion did not complete; complete shards are kept for the rerun."""


class JobInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the job; complete shards are kept, and rerunning the same command resumes.

    A ``KeyboardInterrupt``, so that code which lets Ctrl-C through keeps doing so."""


def exit_status(exc: BaseException) -> int:
    """The process exit status every entry point uses for ``exc``: 130 for an interrupt (as a shell
    reports SIGINT), 2 for bad input (a config, a value, a path), 1 for anything else."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, ValueError):
        return 2
    return 1
