"""A local S3-protocol server for the benchmark: moto's server mode on a free localhost port.

``local_s3`` starts it, points the standard AWS environment variables at it for the duration
(so that every client lmdbshard makes talks to it, never to AWS), creates a bucket, and stops
it afterwards. ``available`` says whether moto is installed (``pip install 'moto[server]'``).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def available() -> bool:
    return importlib.util.find_spec("moto") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, start_timeout: float = 30.0) -> subprocess.Popen:
    """A moto server process listening on ``127.0.0.1:port``, once it accepts connections."""
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + start_timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the local S3 server (python -m moto.server) did not start") from None
            time.sleep(0.1)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextmanager
def local_s3(start_timeout: float = 30.0) -> Iterator[tuple[str, str]]:
    """(endpoint URL, the URL of a new empty bucket) of a moto server that lives for the ``with`` block."""
    import pyarrow.fs as pafs
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = start_server(port, start_timeout)
    saved = {k: os.environ.get(k) for k in ENV}
    try:
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="lmdbshard-bench",
                          AWS_SECRET_ACCESS_KEY="lmdbshard-bench", AWS_DEFAULT_REGION="us-east-1")
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir(bucket)
        yield endpoint, f"s3://{bucket}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_server(proc)
