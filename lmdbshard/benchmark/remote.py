"""The ``remote`` section of ``make bench``: conversion into an object store against a local folder.

The object store is a local S3 server (moto's server mode, ``python -m moto.server``) that the
section starts itself, on a free port, when ``moto`` is importable; else the section says it is
skipped. Its address goes into the environment (``AWS_ENDPOINT_URL`` and test credentials) before
Ray starts, so the tasks that upload shards reach it, and the previous environment is restored after.
The same conversion (``bench.shard_sizes``' last size, all workers) runs into a fresh local folder
and into a fresh ``s3://`` prefix, interleaved, ``bench.repeats`` times; the median of each is
compared (target: into s3:// at least 0.9x into a local folder).

    python -m lmdbshard.benchmark.remote /path/to/imagefolder [work folder] [repeats]   # this section alone
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Optional

from lmdbshard.write.config import ConvertConfig

log = logging.getLogger("lmdbshard")

#: Conversion into s3:// against into a local folder: the target ratio of their throughputs.
CONVERSION_TARGET = 0.9
BUCKET = "lmdbshard-bench"


@dataclass(frozen=True)
class S3Server:
    """The section's local S3 server: its endpoint and process."""

    endpoint: str
    pid: int

    def cpu_s(self) -> float:
        """CPU seconds the server has used so far (it shares this machine's cores with the conversion)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RemoteConversion:
    """Seconds per repeat of one conversion into a local folder and into s3:// (``skipped``: why not run),
    and the CPU seconds the local S3 server used during each s3:// conversion."""

    images: int = 0
    shards: int = 0
    local_s: list[float] = field(default_factory=list)
    s3_s: list[float] = field(default_factory=list)
    server_cpu_s: list[float] = field(default_factory=list)
    skipped: Optional[str] = None

    def ratio(self) -> float:
        return statistics.median(self.local_s) / statistics.median(self.s3_s)

    def conversion_rows(self) -> list[str]:
        if self.skipped:
            return [f"conversion into s3://: skipped ({self.skipped})"]
        local, s3 = (self.images / statistics.median(s) for s in (self.local_s, self.s3_s))
        verdict = "PASS" if self.ratio() >= CONVERSION_TARGET else "MISS"
        return [f"conversion into a local folder ({self.shards} shards): {local:,.0f} images/s",
                f"conversion into s3:// (local S3 server): {s3:,.0f} images/s; the server used "
                f"{statistics.median(self.server_cpu_s):.1f} CPU-s of this machine's cores per run",
                f"s3:// vs local folder: {self.ratio():.2f}x (target >= {CONVERSION_TARGET}x): {verdict}"]

    def as_json(self) -> dict:
        return dataclasses.asdict(self) | ({} if self.skipped else {"ratio": self.ratio()})


def moto_missing() -> Optional[str]:
    """Why the local S3 server cannot start here, or None."""
    return None if importlib.util.find_spec("moto") else "moto is not installed; pip install 'moto[server]'"


@contextlib.contextmanager
def local_s3_server() -> Iterator[Optional[S3Server]]:
    """A local S3 server for the section, its endpoint in the environment meanwhile; yields it (None when
    moto is missing). Enter it before Ray starts, so that Ray's workers inherit the endpoint."""
    if moto_missing():
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    names = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in names}
    try:
        _wait_for_port(port, proc)
        for k in names:
            os.environ.pop(k, None)
        os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        yield S3Server(os.environ["AWS_ENDPOINT_URL"], proc.pid)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the local S3 server (python -m moto.server) did not start") from None
            time.sleep(0.1)


def run_remote_conversion(base: ConvertConfig, work: str, repeats: int, server: Optional[S3Server]) -> RemoteConversion:
    """``base`` (source set, Ray up) into ``work/remote-local`` and into ``s3://lmdbshard-bench/...``,
    interleaved, each into a fresh output; ``server``: the one ``local_s3_server`` started."""
    if server is None:
        return RemoteConversion(skipped=moto_missing())
    import pyarrow.fs as pafs
    from lmdbshard.storage import objects
    from lmdbshard.write.coordinator import convert
    pafs.S3FileSystem(endpoint_override=server.endpoint, allow_bucket_creation=True).create_dir(BUCKET)
    found = RemoteConversion()
    local = os.path.join(os.path.abspath(work), "remote-local")
    log.info("bench: conversion into a local folder and into s3:// (a local S3 server), %d repeats", repeats)
    for i in range(repeats):
        shutil.rmtree(local, ignore_errors=True)
        url = f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}"
        for out, times in ((local, found.local_s), (url, found.s3_s)):
            t, cpu = time.perf_counter(), server.cpu_s()
            result = convert(dataclasses.replace(base, out=out))
            times.append(time.perf_counter() - t)
            if out == url:
                found.server_cpu_s.append(server.cpu_s() - cpu)
            found.images, found.shards = result.images_written, result.shards
        objects.remove(url)
    shutil.rmtree(local, ignore_errors=True)
    return found


def main(argv: list[str]) -> int:
    """This section alone, over the ImageFolder ``argv[0]`` (its own Ray cluster; bench defaults)."""
    from lmdbshard.benchmark.config import BenchConfig
    from lmdbshard.write.config import RayConfig, SourceConfig, TransformConfig
    from lmdbshard.write.runner import ray_session
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bench = BenchConfig()
    root, work = argv[0], argv[1] if len(argv) > 1 else bench.work
    base = ConvertConfig(source=SourceConfig(root=os.path.abspath(root)), shard_size=bench.shard_sizes[-1],
                         transform=TransformConfig(resize_shorter=256), progress="none")
    with local_s3_server() as server, ray_session(RayConfig(num_cpus=max(bench.workers))):
        found = run_remote_conversion(base, work, int(argv[2]) if len(argv) > 2 else bench.repeats, server)
    print("\n".join(found.conversion_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
