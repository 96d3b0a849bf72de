"""`tp-sweep data ...`: the command line of the beton writer, without its imports.

trainer/data/write.py needs numpy, FFCV and the data package (torch); its options do not (they
are in trainer/beton_options.py), so `tp-sweep data --help` and `tp-sweep data write --help`
answer at once, and the writer is imported only once the arguments are known to be good.
"""

from __future__ import annotations

import argparse

from trainer.beton_options import DEFAULT_SMART_THRESHOLD, SOURCES, WRITE_MODES


def write_parser(
    prog: str = "tp-sweep data write", parser: argparse.ArgumentParser | None = None
) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog=prog)
    p.description = (
        "Convert a data set to an FFCV .beton file. Pages fit the images: digits' 1,442 train images "
        "(32x32, raw) take 4.7 MB (FFCV's 8 MiB pages made them 25 MB); an image folder without "
        "--max-resolution keeps FFCV's 8 MiB pages."
    )
    p.add_argument("--from", dest="kind", required=True, choices=SOURCES)
    p.add_argument(
        "src", nargs="?", default=None, help="source folder (ignored for digits/synthetic; '-' allowed)"
    )
    p.add_argument("--out", required=True, help="output .beton path")
    p.add_argument(
        "--split",
        default="train",
        choices=["train", "test"],
        help="cifar, digits, synthetic: which split to write (default train: write the test split "
        "with a second command, --split test); imagefolder: SRC is the split's folder",
    )
    p.add_argument("--max-resolution", type=int, default=None)
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--write-mode", default="smart", choices=WRITE_MODES)
    p.add_argument("--compress-probability", type=float, default=0.5)
    p.add_argument("--smart-threshold", type=int, default=DEFAULT_SMART_THRESHOLD)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--subset", type=int, default=None, help="write only the first N images")
    p.add_argument("--size", type=int, default=256, help="synthetic: number of images")
    p.add_argument("--classes", type=int, default=10, help="synthetic: number of classes")
    p.add_argument("--image-size", type=int, default=32, help="synthetic: image side")
    p.add_argument("--data-seed", type=int, default=0, help="synthetic: data seed")
    p.add_argument("--no-progress", action="store_true")
    return p


def data_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tp-sweep data", description="Data sets for the trainer.")
    sub = p.add_subparsers(dest="action", required=True, metavar="{write}")
    write_parser(
        parser=sub.add_parser(
            "write", help="build an FFCV .beton: --from imagefolder|cifar|digits|synthetic SRC --out F"
        )
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """`tp-sweep data ACTION ...`: parse here, then import the writer and run it."""
    args = data_parser().parse_args(argv)
    from trainer.data.write import run  # numpy, FFCV and torch: only once the arguments are good

    return run(args)


def write_main(argv: list[str] | None = None) -> int:
    """`tp-sweep data write ...` without the `data write` words (what the tests call)."""
    return main(["write", *(argv or [])])
