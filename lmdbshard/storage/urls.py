"""Object-store URLs: which strings are URLs, how they join, and the client that serves them.

A URL is ``s3://bucket/prefix`` or ``gs://bucket/prefix``; anything else is a local path. The
client comes from pyarrow.fs, configured from the standard environment: ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) for an S3-compatible server, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION`` (or ``AWS_REGION``),
else the SDK's chain: config files, then the instance or pod role. Google Cloud Storage uses the
Google SDK's default credentials. Transient errors are retried by the SDK with capped
exponential back-off, ``MAX_ATTEMPTS`` tries in all, so one request waits a bounded time.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lmdbshard.errors import ConfigError

SCHEMES = ("s3", "gs")
#: Tries per request (the first one included), with the SDK's capped exponential back-off between.
MAX_ATTEMPTS = 6

_clients: dict[tuple, Any] = {}
_lock = threading.Lock()


def is_url(path: object) -> bool:
    """Whether ``path`` names an object-store location (``s3://`` or ``gs://``) rather than a local path."""
    return isinstance(path, str) and path.split("://", 1)[0].lower() in SCHEMES and "://" in path


def check_url(url: str, what: str = "path") -> str:
    """``url`` without a trailing '/', or ConfigError when it is a URL lmdbshard cannot use."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() not in SCHEMES:
        raise ConfigError(f"{what} {url!r} uses the scheme {scheme}://, which lmdbshard does not read; use a "
                          f"local path, s3://bucket/prefix or gs://bucket/prefix")
    if sep and not rest.strip("/"):
        raise ConfigError(f"{what} {url!r} names no bucket; pass {scheme}://bucket/prefix")
    return url.rstrip("/") if sep else url


def join(root: str, *parts: str) -> str:
    """``root/part/...`` with '/' separators: URLs for URLs, ``os.path.join`` for local paths."""
    if not is_url(root):
        return os.path.join(root, *parts)
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts if p)])


def name(url: str) -> str:
    """The last part of a URL or path."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def filesystem(url: str) -> tuple[Any, str]:
    """(pyarrow filesystem, the path within it: ``bucket/key``) for ``url``; one client per process and
    environment, shared by threads (pyarrow's clients are thread-safe)."""
    scheme, _, rest = check_url(url).partition("://")
    scheme = scheme.lower()
    key = (scheme, _endpoint(), os.environ.get("AWS_ACCESS_KEY_ID"), _region())
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _make(scheme)
    return client, rest.strip("/")


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str | None:
    return os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None


def _make(scheme: str) -> Any:
    import pyarrow.fs as pafs
    if scheme == "gs":
        return pafs.GcsFileSystem(retry_time_limit=_retry_seconds())
    # allow_delayed_open: an object smaller than one part is sent as one PUT when closed, not as a
    # multipart upload of three requests (large ones still go in parts).
    options: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=MAX_ATTEMPTS),
                               "allow_delayed_open": True}
    if _endpoint():
        options["endpoint_override"] = _endpoint()
    if _region():
        options["region"] = _region()
    return pafs.S3FileSystem(**options)


def _retry_seconds() -> Any:
    from datetime import timedelta
    return timedelta(seconds=30)
