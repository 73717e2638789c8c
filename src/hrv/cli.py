"""The ``hrv`` command: the pipeline's steps without Snakemake.

Each command module in ``COMMAND_MODULES`` has ``register(subparsers)``; a command's function
takes the parsed arguments and returns an exit code. Bad input prints one clear line, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from hrv import __version__
from hrv.errors import HRVInputError

COMMAND_MODULES = [
    "hrv.commands.core",
    "hrv.commands.steering",
    "hrv.commands.weakening",
    "hrv.commands.editing",
    "hrv.commands.editing_scores",
    "hrv.commands.bgdino",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrv", description="Head Relevance Vectors for text-to-image diffusion models"
    )
    parser.add_argument("--version", action="version", version=f"hrv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HRVInputError as err:
        print(f"hrv {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
