"""Any indexable Python dataset: ``target: "package.module:Name"`` called with ``args``/``kwargs``.

``len(dataset)`` gives the number of items and ``dataset[i]`` returns ``(image, target)``: the
image a PIL image or a uint8 array (HxW or HxWxC), the target an integer label, ``None``, or a
mask (a PIL image or a 2-D array, stored as the ``mask`` field). The driver builds the dataset
once for its length and ``classes``; every shard task builds its own copy and fetches its items
by index, so no sample passes through the driver. An in-memory dataset object can be passed
instead (``convert(cfg, dataset=obj)``); it is pickled once for the workers, by the ``dumps`` the
caller passes (the runner's, which pickles classes of ``__main__`` by value, as Ray pickles task
arguments; plain ``pickle.dumps`` by default), and read back with plain ``pickle.loads``.
"""

from __future__ import annotations

import importlib
import numbers
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from lmdbshard.write.config import SourceConfig
from lmdbshard.errors import SampleError, SourceError
from lmdbshard.write.listing import IndexNames, Listing

_FIX = "install it on every node, or make its folder importable there (PYTHONPATH, ray runtime_env)"


@dataclass(frozen=True)
class PythonSource:
    """How a worker gets the dataset: import and build ``target``, or unpickle ``pickled``."""

    target: Optional[str]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    pickled: Optional[bytes] = None

    def open(self, where: str = "a Ray worker") -> Any:
        if self.pickled is not None:
            try:
                return pickle.loads(self.pickled)
            except Exception as exc:   # any import or constructor error of the user's class
                raise SourceError(f"the dataset object cannot be unpickled on {where} "
                                  f"({type(exc).__name__}: {exc}); {_FIX}") from None
        module, _, name = self.target.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise SourceError(f"source.target {self.target!r} cannot be imported on {where} "
                              f"({type(exc).__name__}: {exc}); {_FIX}") from None
        try:
            return obj(*self.args, **self.kwargs)
        except Exception as exc:   # the user's constructor: report whatever it raised, in one line
            raise SourceError(f"source.target {self.target!r} failed to build on {where} "
                              f"({type(exc).__name__}: {exc}); check source.args and source.kwargs") from None


def python_source(cfg: SourceConfig, dataset: Optional[object] = None,
                  dumps: Callable[[object], bytes] = pickle.dumps) -> PythonSource:
    """How workers get the dataset: ``cfg.target``, or ``dataset`` pickled once with ``dumps``."""
    if dataset is None:
        return PythonSource(cfg.target, tuple(cfg.args), dict(cfg.kwargs))
    try:
        pickled = dumps(dataset)
    except Exception as exc:   # pickling raises TypeError, PicklingError, or the object's own error
        raise SourceError(f"the dataset object {type(dataset).__name__} cannot be pickled for the Ray workers "
                          f"({type(exc).__name__}: {exc}); pass source.target='module:Class' so that each "
                          "worker builds it instead") from None
    return PythonSource(None, pickled=pickled)


def list_python(cfg: SourceConfig, dataset: Optional[object] = None) -> Listing:
    ds = python_source(cfg).open("the driver") if dataset is None else dataset
    try:
        n = len(ds)
    except TypeError:
        raise SourceError(f"the dataset {type(ds).__name__} has no len(); a python source must be indexable "
                          "with a length (a map-style dataset)") from None
    if n <= 0:
        raise SourceError(f"the dataset {type(ds).__name__} is empty")
    classes = [str(c) for c in getattr(ds, "classes", None) or []]
    name = cfg.target or f"<{type(ds).__module__}.{type(ds).__qualname__}>"
    identity = repr([name, list(cfg.args), sorted(cfg.kwargs.items())])
    return Listing(name, classes, IndexNames(name, n), [-1] * n, [], kind="python", identity=identity)


def split_item(item: Any, name: str) -> tuple[Image.Image, Optional[Image.Image], int]:
    """(image, mask or None, label) of ``dataset[i]``; SampleError with the fix when it is neither."""
    if isinstance(item, tuple) and len(item) == 2:
        image, target = item
    else:
        image, target = item, None
    image = _as_image(image, name, "image")
    if target is None:
        return image, None, -1
    if isinstance(target, numbers.Integral) or (isinstance(target, np.ndarray) and target.ndim == 0):
        return image, None, int(target)
    if isinstance(target, Image.Image) or (isinstance(target, np.ndarray) and target.ndim == 2):
        return image, _as_image(target, name, "mask"), -1
    raise SampleError(name, f"target of type {type(target).__name__} is neither an integer label nor a mask "
                            "(a PIL image or 2-D array); return (image, int) or (image, mask)")


def _as_image(value: Any, name: str, what: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and (
            value.ndim == 2 or (value.ndim == 3 and value.shape[2] in (1, 3, 4))):
        return Image.fromarray(value[:, :, 0] if value.ndim == 3 and value.shape[2] == 1 else value)
    kind = f"array of {value.dtype} with shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
    raise SampleError(name, f"the {what} is a {kind}; return a PIL image or a uint8 array of shape HxW or HxWxC")
