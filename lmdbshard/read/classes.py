"""One label space for several outputs read together; labels are never mixed silently.

Each root stores labels as indices into its own manifest's ``classes``. Reading roots
together needs a rule when those lists differ:

- default: the lists must be equal, else :class:`ClassMismatchError` names both roots and the fix;
- ``classes="merge"``: the sorted union of the class names; labels are remapped by name;
- ``classes=[names...]``: an explicit list (for example a model's output order); remapped by name;
- ``label_offsets=[o0, o1, ...]``: root ``i``'s label ``y`` becomes ``o_i + y``; the resulting
  class list must have no gap, no position claimed by two names and no name at two positions.
"""

from __future__ import annotations

from typing import Optional, Sequence

from lmdbshard.errors import ClassMismatchError

#: Per root: stored label -> combined label, or None where the two are equal.
LabelMap = Optional[tuple[int, ...]]


def combine_classes(roots: Sequence[str], class_lists: Sequence[Sequence[str]], classes=None,
                    label_offsets: Optional[Sequence[int]] = None) -> tuple[list[str], list[LabelMap]]:
    """(combined classes, one label map per root) under the rule chosen by ``classes`` / ``label_offsets``."""
    if label_offsets is not None:
        if classes is not None:
            raise ValueError("pass either classes= or label_offsets=, not both")
        return _by_offsets(roots, class_lists, label_offsets)
    if classes is None:
        first = list(class_lists[0])
        for root, names in zip(roots[1:], class_lists[1:]):
            if list(names) != first:
                raise ClassMismatchError(
                    f"class lists differ between {roots[0]!r} ({len(first)} classes) and {root!r} "
                    f"({len(names)} classes); labels would mix silently: pass classes='merge' to map labels "
                    "by class name, or label_offsets=[...] to keep each root's labels apart")
        return first, [None] * len(roots)
    if isinstance(classes, str):
        if classes != "merge":
            raise ValueError(f"classes must be None, 'merge' or a list of class names, got {classes!r}")
        target = sorted({name for names in class_lists for name in names})
    else:
        target = [str(name) for name in classes]
        if len(set(target)) != len(target):
            raise ValueError("classes= lists a class name more than once; give each class one label")
    index = {name: i for i, name in enumerate(target)}
    maps: list[LabelMap] = []
    for root, names in zip(roots, class_lists):
        missing = [n for n in names if n not in index]
        if missing:
            raise ClassMismatchError(f"{root!r} has classes missing from classes=: {missing[:5]}; "
                                     "add them, or use classes='merge'")
        mapped = tuple(index[n] for n in names)
        maps.append(None if mapped == tuple(range(len(names))) else mapped)
    return target, maps


def _by_offsets(roots, class_lists, offsets) -> tuple[list[str], list[LabelMap]]:
    offsets = [int(o) for o in offsets]
    if len(offsets) != len(roots) or min(offsets) < 0:
        raise ValueError(f"label_offsets needs one offset >= 0 per root ({len(roots)}), got {offsets!r}")
    slots: dict[int, str] = {}
    for root, names, off in zip(roots, class_lists, offsets):
        for j, name in enumerate(names):
            if slots.setdefault(off + j, name) != name:
                raise ClassMismatchError(f"label_offsets give label {off + j} to both {slots[off + j]!r} and "
                                         f"{name!r} (from {root!r}); choose offsets whose label ranges do not overlap")
    combined = [slots.get(i) for i in range(max(slots) + 1 if slots else 0)]
    if None in combined:
        gap = combined.index(None)
        raise ClassMismatchError(f"label_offsets leave label {gap} without a class; choose offsets with no gap")
    seen: dict[str, int] = {}
    for i, name in enumerate(combined):
        if seen.setdefault(name, i) != i:
            raise ClassMismatchError(f"class {name!r} would have labels {seen[name]} and {i}; use classes='merge' "
                                     "to give one class one label")
    maps = [None if off == 0 else tuple(range(off, off + len(names))) for names, off in zip(class_lists, offsets)]
    return combined, maps
