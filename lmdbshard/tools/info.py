"""``lmdbshard info``: what a converted dataset holds and how it was made, from its manifest.

Reads ``manifest.json`` and stats the files under the root (O(shards); at a URL, one
listing of the prefix); it never opens a shard. Manifests written before ``class_counts`` existed show classes
without counts.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from lmdbshard.format.manifest import Manifest
from lmdbshard.read.roots import load_root
from lmdbshard.storage import objects
from lmdbshard.storage.urls import is_url
from lmdbshard.write.progress import plural, stage_fractions, stage_shares

MAX_CLASS_LINES = 30
MAX_ERROR_LINES = 5


def bytes_on_disk(root: str) -> int:
    """Sizes of every file under ``root``: shards, reports, plan and manifest."""
    if is_url(root):
        return sum(size for _, size in objects.walk(root))
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:   # removed while walking
                pass
    return total


def error_reasons(errors: list[dict]) -> dict[str, int]:
    """Skipped samples per kind of reason (the text before the first colon), most common first."""
    kinds = Counter(str(e.get("reason", "?")).split(":", 1)[0].strip() for e in errors)
    return dict(kinds.most_common())


def summarize(m: Manifest) -> dict[str, Any]:
    """The manifest (less the per-sample error list) plus what ``info`` derives from it."""
    d = m.data
    summary = {k: v for k, v in d.items() if k != "errors"}
    summary["bytes_on_disk"] = bytes_on_disk(m.root)
    summary["error_reasons"] = error_reasons(d.get("errors", []))
    stages = d.get("stats", {}).get("stage_seconds", {})
    summary.setdefault("stats", {}).setdefault("stage_shares", stage_fractions(stages))
    return summary


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _flat(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _flat(f"{prefix}{k}.", v)]
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return [f"{prefix.rstrip('.')}={value}"]


def _class_lines(classes: list[str], counts: list[int] | None) -> list[str]:
    if counts is None or len(counts) != len(classes):
        shown = ", ".join(classes[:MAX_CLASS_LINES])
        more = f" ... ({len(classes) - MAX_CLASS_LINES} more)" if len(classes) > MAX_CLASS_LINES else ""
        return [f"  classes   {len(classes)} (counts not recorded by this version): {shown}{more}"]
    lo, hi = min(counts, default=0), max(counts, default=0)
    each = f"{plural(lo, 'sample')} each" if lo == hi else f"{lo} to {hi} samples each"
    lines = [f"  classes   {len(classes)}, {each}"]
    width = max((len(c) for c in classes[:MAX_CLASS_LINES]), default=0)
    for i, (name, n) in enumerate(zip(classes[:MAX_CLASS_LINES], counts)):
        lines.append(f"    {i:>4}  {name:<{width}}  {n}")
    if len(classes) > MAX_CLASS_LINES:
        lines.append(f"    ... {len(classes) - MAX_CLASS_LINES} more (all of them: lmdbshard info --json, "
                     "or lmdbshard stats --text)")
    return lines


def _field(f: dict) -> str:
    return f"{f['name']}: {f['encoding']} {f['dtype']} {f['layout']}"


def format_info(root: str, s: dict[str, Any], errors_head: list[dict]) -> str:
    """The human-readable ``info`` report."""
    stats = s.get("stats", {})
    shard_bytes = sum(sh["bytes"] for sh in s["shards"])
    lines = [
        f"{root}: lmdbshard format version {s['format_version']} (written by lmdbshard {s['lmdbshard_version']})",
        f"  samples   {s['num_samples']} of {s.get('num_planned', s['num_samples'])} planned, "
        f"in {plural(len(s['shards']), 'shard')} of up to {s['shard_size']}",
        f"  bytes     {shard_bytes} in shards ({_human(shard_bytes)}); {s['bytes_on_disk']} on disk "
        f"with plan and reports ({_human(s['bytes_on_disk'])})",
        f"  fields    {', '.join(_field(f) for f in s['fields'])}",
        *_class_lines(s["classes"], s.get("class_counts")),
    ]
    n_err = s["num_errors"]
    if n_err:
        reasons = ", ".join(f"{n} {why}" for why, n in s["error_reasons"].items())
        lines.append(f"  errors    {plural(n_err, 'sample')} skipped: {reasons}")
        lines += [f"    {e['path']}: {e['reason']}" for e in errors_head]
        if n_err > MAX_ERROR_LINES:
            lines.append(f"    ... every skipped file is listed under \"errors\" in {root}/manifest.json")
    else:
        lines.append("  errors    none: every planned sample was stored")
    for w in s.get("warnings", [])[:MAX_ERROR_LINES]:
        lines.append(f"  warning   {w}")
    stages = stats.get("stage_seconds", {})
    if stages:
        lines.append(f"  stages    {stage_shares(stages)} of {sum(stages.values()):.1f} s summed over workers")
    run = stats.get("last_run")
    if run:
        lines.append(f"  last run  {plural(run['shards_built'], 'shard')} built, {run['shards_reused']} reused, "
                     f"{run['wall_s']:.1f} s, {run['images_per_s']:.1f} images/s")
    config = s.get("config", {})
    if config:
        top = [item for k, v in config.items() if not isinstance(v, dict) for item in _flat(f"{k}.", v)]
        lines.append(f"  config    {' '.join(top)}")
        for k, v in config.items():
            if isinstance(v, dict):
                lines.append(f"            {' '.join(_flat(f'{k}.', v))}")
    return "\n".join(lines)


def info_text(root: str) -> str:
    m = load_root(root)
    return format_info(root, summarize(m), m.data.get("errors", [])[:MAX_ERROR_LINES])


def info_json(root: str) -> dict[str, Any]:
    return summarize(load_root(root))
