"""Object-store basics against a real S3-protocol server: what lmdbshard relies on from the client."""

from __future__ import annotations

import os

import pytest

from lmdbshard.errors import ConfigError
from lmdbshard.storage import objects
from lmdbshard.storage.urls import check_url, is_url, join


def test_urls_are_told_from_local_paths_and_bad_ones_refused():
    assert is_url("s3://b/p") and is_url("gs://b") and not is_url("/data/s3://x") and not is_url("data")
    assert join("s3://b/p/", "shards", "a.lmdb") == "s3://b/p/shards/a.lmdb"
    assert join("/d", "a") == os.path.join("/d", "a")
    with pytest.raises(ConfigError, match="does not read"):
        check_url("http://example.com/x")
    with pytest.raises(ConfigError, match="names no bucket"):
        check_url("s3://")


def test_objects_round_trip_list_and_delete(bucket, tmp_path):
    data = os.urandom(3 * objects.CHUNK // 2 + 7)   # more than one chunk, not a multiple
    (tmp_path / "big.bin").write_bytes(data)
    url = join(bucket, "pre", "big.bin")
    assert objects.size(url) is None
    assert objects.upload(str(tmp_path / "big.bin"), url) == len(data)
    assert objects.size(url) == len(data)
    objects.write_bytes(join(bucket, "pre", "sub", "small.json"), b"{}")
    assert objects.read_bytes(join(bucket, "pre", "sub", "small.json")) == b"{}"
    assert b"".join(objects.chunks(url, chunk=1 << 20)) == data
    assert objects.download(url, str(tmp_path / "copy.bin")) == len(data)
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert [n for n in os.listdir(tmp_path) if "partial" in n] == []
    assert objects.listdir(join(bucket, "pre")) == [("big.bin", False, len(data)), ("sub", True, 0)]
    assert objects.walk(join(bucket, "pre")) == [("big.bin", len(data)), ("sub/small.json", 2)]
    with pytest.raises(ValueError, match="over the limit"):
        objects.read_bytes(url, limit=10)
    objects.remove(url)
    assert objects.size(url) is None
    with pytest.raises(FileNotFoundError, match="no object at"):
        objects.read_bytes(url)


def test_a_failed_upload_leaves_no_object(bucket, tmp_path):
    class Broken(Exception):
        pass

    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(objects.CHUNK + 1))
    url = join(bucket, "half.bin")
    real_read = open
    # a local read error after the first chunk: the upload must not leave the part sent under the name
    import builtins

    def failing_open(path, mode="r", *a, **k):
        f = real_read(path, mode, *a, **k)
        if path == str(src):
            first = f.read

            def read(n=-1):
                if f.tell() > 0:
                    raise Broken()
                return first(n)
            f.read = read
        return f
    builtins.open = failing_open
    try:
        with pytest.raises(Broken):
            objects.upload(str(src), url)
    finally:
        builtins.open = real_read
    assert objects.size(url) is None
