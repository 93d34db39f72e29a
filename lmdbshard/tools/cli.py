"""The ``lmdbshard`` command line: look at, picture and time converted datasets.

Argument parsing only; each subcommand's work lives in its own module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from lmdbshard import __version__
from lmdbshard.errors import LmdbshardError, exit_status
from lmdbshard.write.choices import ProgressMode
from lmdbshard.write.progress import Progress, plural

log = logging.getLogger("lmdbshard")

EPILOG = "Convert with: make convert CONF=imagenet ARGS=\"source.root=... out=...\" (see README.md)"


def _info(args: argparse.Namespace) -> int:
    from lmdbshard.tools.info import info_json, info_text
    print(json.dumps(info_json(args.root), indent=1) if args.json else info_text(args.root))
    return 0


def _len(args: argparse.Namespace) -> int:
    from lmdbshard.read.dataset import ShardedDataset
    print(len(ShardedDataset(args.root)))
    return 0


def _preview(args: argparse.Namespace) -> int:
    from lmdbshard.tools.preview import PreviewOptions, default_preview_file, preview
    output = args.output or default_preview_file(args.root)
    path, n = preview(args.root, output, PreviewOptions(args.n, args.seed, args.class_name, args.cell))
    where = f" of class {args.class_name}" if args.class_name is not None else ""
    print(f"wrote {path}: {plural(n, 'sample')}{where}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from lmdbshard.tools.stats import collect, stats_png, text_report
    if args.output is None and not args.text:
        raise argparse.ArgumentTypeError("pass -o stats.png to draw the plot, or --text to print the numbers")
    s = collect(args.root, args.samples)
    if args.text:
        print(text_report(s))
    if args.output is not None:
        print(f"wrote {stats_png(s, args.output)}")
    return 0


def _bench_read(args: argparse.Namespace) -> int:
    from lmdbshard.tools.read_speed import as_json, bench_read, report
    passes = bench_read(args.root, args.n, args.seed, args.max_seconds)
    print(json.dumps(as_json(args.root, passes), indent=1) if args.json else report(args.root, passes))
    return 0


class _VerifyProgress(Progress):
    """``verify`` in its own words: records and shards checked, shards with problems."""

    def __init__(self, records: int, shards: int, mode: str):
        super().__init__(records, shards, mode, interval=10.0, desc="verifying", unit="rec")

    def _postfix(self, shards_done: int, skipped: int, failed: int) -> str:
        return f"shards {shards_done}/{self.shards} checked, {failed} with problems"

    def _line(self) -> None:
        self._last_line = time.monotonic()
        log.info("verify: %d/%d records checked (%.0f/s), %s", self.done, self.total, self.rate(),
                 self._postfix(self.shards_done, 0, self.failed))


def _verify(args: argparse.Namespace) -> int:
    from lmdbshard.read.roots import load_root
    from lmdbshard.read.verify import verify

    m = load_root(args.root)
    with _VerifyProgress(m.num_samples, len(m.shards), args.progress) as progress:
        progress.restart_clock()

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
            print(f"{args.root}: OK: {plural(result.shards, 'shard')}, {plural(result.records, 'record')}; "
                  f"checked {checks}")
        else:
            shards = ", ".join(map(str, result.broken_shards)) or "none"
            print(f"{args.root}: FAILED: {plural(len(result.problems), 'problem')} in "
                  f"{'shard' if len(result.broken_shards) == 1 else 'shards'} {shards}; rerun the "
                  f"conversion command to rebuild shards whose checksum fails, or add rebuild=[{shards}] to force it")
    return 0 if result.ok else 1


def _root(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="dataset folder (the one holding manifest.json), or its URL (s3://bucket/prefix: "
                                "shards are read through the cache in $LMDBSHARD_CACHE, else ~/.cache/lmdbshard)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmdbshard", epilog=EPILOG,
                                     description="Inspect, picture and time lmdbshard datasets.")
    parser.add_argument("--version", action="version", version=f"lmdbshard {__version__}")
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
    p.add_argument("-o", "--output", metavar="PNG",
                   help="PNG file to write (default: <dataset folder name>-preview.png here)")
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

    p = sub.add_parser("verify", help="re-read every shard: key order, counts, checksums, record CRCs, decoding",
                       description="Re-read every shard of a dataset and check it against manifest.json: keys "
                       "in order and dense, record counts, the shard checksum, each record's CRC and (unless "
                       "--no-decode) that every field decodes. Exit status 0 when all holds, 1 otherwise; "
                       "each problem is printed with its shard and key.")
    _root(p)
    p.add_argument("--no-decode", action="store_true", help="skip decoding images (faster; CRCs still checked)")
    p.add_argument("--workers", type=int, default=None, help="threads to check shards with (default: up to 8)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--progress", choices=list(ProgressMode), default=ProgressMode.auto,
                   help="progress display on stderr (default: a bar on a terminal, log lines otherwise)")
    p.set_defaults(func=_verify)

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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s lmdbshard: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except BrokenPipeError:   # e.g. `lmdbshard stats --text | head`: stop quietly, like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:   # Ctrl-C: nothing these commands do needs cleaning up
        print("lmdbshard: interrupted", file=sys.stderr)
        return exit_status(KeyboardInterrupt())
    except argparse.ArgumentTypeError as exc:   # a combination of options argparse cannot express
        print(f"lmdbshard: error: {exc}", file=sys.stderr)
        return 2
    except (LmdbshardError, OSError, ValueError) as exc:
        print(f"lmdbshard: error: {exc}", file=sys.stderr)
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
