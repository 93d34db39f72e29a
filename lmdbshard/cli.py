"""The ``lmdbshard`` command line: look at and check converted datasets."""

from __future__ import annotations

import argparse
import json
import logging
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


def _verify(args: argparse.Namespace) -> int:
    from .progress import Progress
    from .verify import verify

    m = load_manifest(args.root)
    with Progress(m.num_samples, len(m.shards), args.progress, interval=10.0, desc="verifying") as progress:
        def on_done(exp, problems):
            progress.update(progress.done + exp.count, progress.shards_done + 1, 0,
                            progress.failed + bool(problems))
        result = verify(args.root, decode=not args.no_decode, workers=args.workers, on_done=on_done)
    if args.json:
        print(json.dumps({"root": args.root, "ok": result.ok, "shards": result.shards, "records": result.records,
                          "broken_shards": result.broken_shards,
                          "problems": [{"shard": p.shard, "key": p.key, "message": p.message}
                                       for p in result.problems]}, indent=1))
    else:
        for p in result.problems:
            print(f"{args.root}: {p}")
        checks = "keys, counts, checksums and record CRCs" + ("" if args.no_decode else ", and decoded every record")
        if result.ok:
            print(f"{args.root}: OK: {result.shards} shards, {result.records} records; checked {checks}")
        else:
            shards = ", ".join(map(str, result.broken_shards)) or "none"
            print(f"{args.root}: FAILED: {len(result.problems)} problem(s) in shard(s) {shards}; rerun the "
                  f"conversion command to rebuild shards whose checksum fails, or add shards=[{shards}] to force it")
    return 0 if result.ok else 1


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
    p = sub.add_parser("verify", help="re-read every shard: key order, counts, checksums, record CRCs, decoding",
                       description="Re-read every shard of a dataset and check it against manifest.json: keys "
                       "in order and dense, record counts, the shard checksum, each record's CRC and (unless "
                       "--no-decode) that every field decodes. Exit status 0 when all holds, 1 otherwise; "
                       "each problem is printed with its shard and key.")
    p.add_argument("root", help="dataset folder (holds manifest.json)")
    p.add_argument("--no-decode", action="store_true", help="skip decoding images (faster; CRCs still checked)")
    p.add_argument("--workers", type=int, default=None, help="threads to check shards with (default: up to 8)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--progress", choices=["auto", "bar", "log", "none"], default="auto",
                   help="progress display on stderr (default: a bar on a terminal, log lines otherwise)")
    p.set_defaults(func=_verify)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s lmdbshard: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except (LmdbshardError, OSError) as exc:
        print(f"lmdbshard: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
