"""Reading JSON objects of the format with one-line errors: a missing key or a wrong type names the
file, where in it, and what was expected, instead of surfacing as a KeyError or TypeError."""

from __future__ import annotations

import binascii
from typing import Any, NoReturn, Optional

from lmdbshard.errors import FormatError
from lmdbshard.format import names

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def exact_int(value: Any) -> Optional[int]:
    """``value`` if it is a JSON integer (not ``true``/``false``, which Python counts as ints), else None."""
    return value if type(value) is int else None


def optional_str(data: dict, key: str, path: str) -> Optional[str]:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise FormatError(f"{path}: {key} must be a string, got {value!r}; the file is damaged or not "
                          "written by lmdbshard")
    return value


class Fields:
    """One JSON object of file ``path``, at ``where`` (e.g. ``shards[3]``), read key by key with checks."""

    def __init__(self, data: dict, path: str, where: str = ""):
        self.data, self.path, self.where = data, path, where

    def fail(self, problem: str) -> NoReturn:
        at = f", {self.where}" if self.where else ""
        raise FormatError(f"{self.path}{at}: {problem}; the file is damaged or was not written by lmdbshard "
                          "(rerun the conversion to rewrite it)")

    def get(self, key: str, kind: type) -> Any:
        if key not in self.data:
            self.fail(f"missing key {key!r}")
        value = self.data[key]
        if (exact_int(value) is None) if kind is int else not isinstance(value, kind):
            self.fail(f"{key} must be {_TYPE_NAMES[kind]}, got {value!r:.60}")
        return value

    def opt(self, key: str, kind: type) -> Any:
        return None if self.data.get(key) is None else self.get(key, kind)

    def count(self, key: str) -> int:
        """A non-negative integer."""
        value = self.get(key, int)
        if value < 0:
            self.fail(f"{key} must be >= 0, got {value}")
        return value

    def b64(self, key: str) -> str:
        """A file name stored as base64 bytes (see names.py)."""
        try:
            return names.from_b64(self.get(key, str))
        except (binascii.Error, ValueError):
            self.fail(f"{key} is not base64")

    def sub(self, data: Any, where: str) -> "Fields":
        if not isinstance(data, dict):
            self.fail(f"{where} must be an object, got {data!r:.60}")
        return Fields(data, self.path, where)

    def objects(self, key: str, optional: bool = False) -> list["Fields"]:
        """The objects of list ``key``, each as ``Fields`` (``key[i]``)."""
        items = self.opt(key, list) if optional else self.get(key, list)
        prefix = f"{self.where}.{key}" if self.where else key
        return [self.sub(item, f"{prefix}[{i}]") for i, item in enumerate(items or [])]
