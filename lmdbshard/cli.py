"""The ``lmdbshard`` command line: look at and check converted datasets."""

from __future__ import annotations

import argparse
import json
import sys

from .dataset import ShardedDataset
from .errors import LmdbshardError
from .manifest import load_manifest


def _info(args: argparse.Namespace) -> int:
    m = load_manifest(args.root)
    d = m.data
    if args.json:
        print(json.dumps({k: d[k] for k in d if k not in ("errors",)} | {"num_errors": d["num_errors"]}, indent=1))
        return 0
    print(f"{args.root}: lmdbshard format {m.version} (written by lmdbshard {d['lmdbshard_version']})")
    print(f"  samples   {m.num_samples} in {len(m.shards)} shards, {sum(s.bytes for s in m.shards)} bytes")
    print(f"  classes   {len(m.classes)}: {', '.join(m.classes[:8])}{' ...' if len(m.classes) > 8 else ''}")
    print(f"  fields    {', '.join(f['name'] + ':' + f['encoding'] for f in d['fields'])}")
    print(f"  seed      {d['seed']}, shard size {d['shard_size']}")
    print(f"  errors    {d['num_errors']} samples skipped")
    for e in d["errors"][:10]:
        print(f"    {e['path']}: {e['reason']}")
    return 0


def _len(args: argparse.Namespace) -> int:
    print(len(ShardedDataset(args.root)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmdbshard", description="Inspect lmdbshard datasets. "
                                     "Convert with: make convert CONF=imagenet ARGS=\"source.root=... out=...\"")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="samples, shards, classes, fields and errors of a dataset")
    p.add_argument("root", help="dataset folder (holds manifest.json)")
    p.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    p.set_defaults(func=_info)
    p = sub.add_parser("len", help="number of samples (opens the dataset as a reader would)")
    p.add_argument("root")
    p.set_defaults(func=_len)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (LmdbshardError, OSError) as exc:
        print(f"lmdbshard: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
