"""Paired image and mask folders for segmentation: ``root/images/<stem>.*`` with ``root/masks/<stem>.*``.

Files pair by their path below each folder without the extension (``a/b.jpg`` with ``a/b.png``).
Images without a mask, and masks without an image, are left out and named in the warnings.
Records carry no label (-1); the mask is the record's ``mask`` field.
"""

from __future__ import annotations

import os
import posixpath

from lmdbshard.write.config import SourceConfig
from lmdbshard.errors import SourceError
from lmdbshard.storage.urls import is_url, join
from lmdbshard.write.listing import UNLISTED, Listing
from lmdbshard.write.sources import source_root
from lmdbshard.write.sources.remote import walk_files


def _stems(top: str, exts: tuple[str, ...], unlisted: list[str]) -> dict[str, str]:
    """stem (relative, '/' separators, no extension) -> relative path, in sorted walk order. Folders that
    cannot be listed are added to ``unlisted`` (relative to ``top``)."""
    found: dict[str, str] = {}
    if is_url(top):
        for path in walk_files(top):
            if path.lower().endswith(exts):
                found.setdefault(posixpath.splitext(path)[0], path)
        return found

    def failed(exc: OSError) -> None:
        unlisted.append(os.path.relpath(exc.filename, top).replace(os.sep, "/"))

    for dirpath, dirnames, fnames in sorted(os.walk(top, followlinks=True, onerror=failed)):
        dirnames.sort()
        rel = os.path.relpath(dirpath, top).replace(os.sep, "/")
        for name in sorted(fnames):
            if name.lower().endswith(exts):
                path = name if rel == "." else f"{rel}/{name}"
                found.setdefault(os.path.splitext(path)[0], path)
    return found


def list_paired(cfg: SourceConfig) -> Listing:
    """Pairs by stem; a folder that cannot be listed is an item of its own (see ``listing.UNLISTED``)."""
    root = source_root(cfg.root)
    exts = tuple(e.lower() for e in cfg.extensions)
    unlisted_images: list[str] = []
    unlisted_masks: list[str] = []
    images = _stems(join(root, cfg.images_dir), exts, unlisted_images)
    masks = _stems(join(root, cfg.masks_dir), exts, unlisted_masks)
    stems = sorted(set(images) & set(masks))
    if not stems:
        raise SourceError(f"no image in {cfg.root!r}/{cfg.images_dir} has a mask with the same stem in "
                          f"{cfg.masks_dir}; check source.images_dir and source.masks_dir")
    warnings = []
    for what, only in (("images without a mask", set(images) - set(masks)),
                       ("masks without an image", set(masks) - set(images))):
        if only:
            warnings.append(f"{len(only)} {what} are left out (e.g. {sorted(only)[0]!r})")
    pairs = [(f"{cfg.images_dir}/{images[s]}", f"{cfg.masks_dir}/{masks[s]}") for s in stems]
    folders = sorted(f"{top}/{rel}{UNLISTED}" if rel != "." else f"{top}{UNLISTED}"
                     for top, rels in ((cfg.images_dir, unlisted_images), (cfg.masks_dir, unlisted_masks))
                     for rel in rels)
    pairs += [(folder, folder) for folder in folders]   # the shard task records each as an error
    return Listing(root, [], [p for p, _ in pairs], [-1] * len(pairs), warnings,
                   kind="paired", mask_paths=[m for _, m in pairs])
