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
    "hrv.commands.multiconcept",
    "hrv.commands.editing",
    "hrv.commands.editing_scores",
    "hrv.commands.bgdino",
]


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (naming the option and pointing at --help), not the whole usage."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hrv", description="Head Relevance Vectors for text-to-image diffusion models")
    parser.add_argument("--version", action="version", version=f"hrv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "device", None) not in (None, "auto"):
            from hrv.models import resolve_device

            resolve_device(args.device)  # an unknown device or missing CUDA: refused before any work
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except HRVInputError as err:
        print(f"hrv {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        print(f"hrv {args.command}: error: {err.filename}: {err.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # outputs are written atomically, so nothing partial is left behind
        print(
            f"hrv {args.command}: interrupted; no output was written for the unfinished step", file=sys.stderr
        )
        return 130
    except BrokenPipeError:
        # the reader went away (`hrv config | head`): stop quietly, as other Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
