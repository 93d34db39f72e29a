"""File names in JSON: strict UTF-8 text, with the exact bytes kept beside any name that is not UTF-8.

POSIX file names are bytes. Python decodes the ones that are not valid UTF-8 with
``surrogateescape`` (byte 0xE9 becomes the lone surrogate U+DCE9), and ``json.dumps``
would write that as ``"\\udce9"``, which strict JSON parsers refuse. lmdbshard stores
every string as valid UTF-8 instead: such bytes appear as U+FFFD, for display, and a
name that must round-trip (a skipped sample's ``path``, a class name) also gets its
raw bytes as standard base64 in a sibling key (``path_b64``, ``classes_b64``), which
a reader prefers when present. See docs/FORMAT.md, "File names that are not UTF-8".
"""

from __future__ import annotations

import base64
import os
from typing import Any, Optional


def is_clean(text: str) -> bool:
    """True when ``text`` encodes as strict UTF-8 (it holds no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display(text: str) -> str:
    """``text`` as valid UTF-8: every undecodable byte of a file name becomes U+FFFD."""
    if is_clean(text):
        return text
    return os.fsencode(text).decode("utf-8", "replace") if _all_escapes(text) else \
        text.encode("utf-8", "replace").decode("utf-8")


def _all_escapes(text: str) -> bool:
    """Whether every lone surrogate is a surrogateescape byte (U+DC80..U+DCFF), as in file names."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def exact_b64(text: str) -> Optional[str]:
    """The file name's raw bytes as base64 when it is not valid UTF-8; None when ``display`` is exact."""
    if is_clean(text) or not _all_escapes(text):
        return None
    return base64.b64encode(os.fsencode(text)).decode("ascii")


def from_b64(value: str) -> str:
    """The name stored by ``exact_b64``, decoded as Python decodes file names (surrogateescape)."""
    return os.fsdecode(base64.b64decode(value.encode("ascii"), validate=True))


def strict(obj: Any) -> Any:
    """``obj`` with every string made valid UTF-8 (``display``): what JSON files may hold."""
    if isinstance(obj, str):
        return display(obj)
    if isinstance(obj, dict):
        return {display(str(k)): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj
