"""The ``lmdbshard`` command line: look at, picture and time converted datasets.

Argument parsing only; each subcommand's work lives in its own module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import LmdbshardError

EPILOG = "Convert with: make convert CONF=imagenet ARGS=\"source.root=... out=...\" (see README.md)"


def _info(args: argparse.Namespace) -> int:
    from .info import info_json, info_text
    print(json.dumps(info_json(args.root), indent=1) if args.json else info_text(args.root))
    return 0


def _len(args: argparse.Namespace) -> int:
    from .dataset import ShardedDataset
    print(len(ShardedDataset(args.root)))
    return 0


def _preview(args: argparse.Namespace) -> int:
    from .preview import PreviewOptions, preview
    path, n = preview(args.root, args.output, PreviewOptions(args.n, args.seed, args.class_name, args.cell))
    where = f" of class {args.class_name}" if args.class_name is not None else ""
    print(f"wrote {path}: {n} samples{where}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from .stats import collect, stats_png, text_report
    if args.output is None and not args.text:
        raise argparse.ArgumentTypeError("pass -o stats.png to draw the plot, or --text to print the numbers")
    s = collect(args.root, args.samples)
    if args.text:
        print(text_report(s))
    if args.output is not None:
        print(f"wrote {stats_png(s, args.output)}")
    return 0


def _bench_read(args: argparse.Namespace) -> int:
    from .bench import as_json, bench_read, report
    passes = bench_read(args.root, args.n, args.seed, args.max_seconds)
    print(json.dumps(as_json(args.root, passes), indent=1) if args.json else report(args.root, passes))
    return 0


def _root(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="dataset folder (the one holding manifest.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmdbshard", epilog=EPILOG,
                                     description="Inspect, picture and time lmdbshard datasets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="samples, shards, bytes, classes with counts, config, errors, format version",
                       description="What a dataset holds and how it was made, from its manifest.")
    _root(p)
    p.add_argument("--json", action="store_true", help="print the manifest summary and derived values as JSON")
    p.set_defaults(func=_info)

    p = sub.add_parser("len", help="number of samples (opens the dataset as a reader would)",
                       description="Print the number of samples.")
    _root(p)
    p.set_defaults(func=_len)

    p = sub.add_parser("preview", help="contact sheet PNG of random samples, captioned with class and index",
                       description="Write a contact sheet of random samples, each captioned with its class name, "
                                   "index and stored size; masks are overlaid when records have a 'mask' field.")
    _root(p)
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="PNG file to write, e.g. grid.png")
    p.add_argument("--n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="which random samples (default: 0)")
    p.add_argument("--class", dest="class_name", metavar="NAME", help="only samples of this class")
    p.add_argument("--cell", type=int, default=128, help="pixels per sample, longer side (default: 128)")
    p.set_defaults(func=_preview)

    p = sub.add_parser("stats", help="class histogram and stored image-size distribution (PNG, or --text)",
                       description="Plot the samples per class and the distribution of stored image width, "
                                   "height and bytes; --text prints the same numbers.")
    _root(p)
    p.add_argument("-o", "--output", metavar="PNG", help="PNG file to write, e.g. stats.png")
    p.add_argument("--text", action="store_true", help="print the numbers instead of (or as well as) the plot")
    p.add_argument("--samples", type=int, default=100_000,
                   help="records whose sizes are read, in stored (shuffled) order (default: 100000)")
    p.set_defaults(func=_stats)

    p = sub.add_parser("bench-read", help="sequential and random read throughput on this machine",
                       description="Time reading (and decoding) samples in index order and in random order.")
    _root(p)
    p.add_argument("--n", type=int, default=2000, help="samples per pass (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random order (default: 0)")
    p.add_argument("--max-seconds", type=float, default=10.0, help="stop a pass after this long (default: 10)")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    p.set_defaults(func=_bench_read)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:   # e.g. `lmdbshard stats --text | head`: stop quietly, like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (LmdbshardError, OSError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"lmdbshard: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (ValueError, argparse.ArgumentTypeError)) else 1   # as jobs/convert.py


if __name__ == "__main__":
    sys.exit(main())
