"""Subcommands of the ``hrv`` command line, one module per group (see ``hrv.cli``)."""

from __future__ import annotations

import argparse
import math

DEVICE_HELP = "auto (CUDA if available), cpu, cuda or cuda:N"
DTYPE_HELP = "auto (the model preset's; float16 on CUDA), float32, float16 or bfloat16"


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless it is None or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or "default" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


# argparse types: a bad number is refused with one line naming the option, before any work


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def image_side(text: str) -> int:
    """Height or width in pixels: a positive multiple of 8 (the VAE's scale factor)."""
    value = _int(text)
    if value < 8 or value % 8:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 8 pixels, got {text!r}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


SEEDS_HELP = "seeds: a range 1-10, a list 10 20 30 or 1,3,5, or a mix (every command reads seeds so)"


def add_seeds_arg(p: argparse.ArgumentParser, default: str) -> None:
    """``--seeds``, the same syntax in every command: ``1-10``, ``10 20 30``, ``1,3,7-9``."""
    p.add_argument(
        "--seeds", nargs="+", default=[default], metavar="SEEDS", help=f"{SEEDS_HELP}; default {default}"
    )


def seed_list(values: list[str] | str) -> list[int]:
    """The seeds of ``--seeds`` values (each a number, a range a-b, or a comma list)."""
    from hrv.generate import parse_seeds

    return parse_seeds(",".join(values) if isinstance(values, list) else values)


def add_overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (without it, an existing file is refused)",
    )


def check_new_files(args: argparse.Namespace, *flags: str) -> None:
    """Refuse to replace an existing file named by ``flags`` (e.g. ``"out"``, ``"table"``) unless
    ``--overwrite`` was given: a PNG or CSV does not say which command wrote it, so replacing one
    is the user's explicit choice. Checked before any work is done."""
    from pathlib import Path

    from hrv.errors import HRVInputError

    for flag in flags:
        value = getattr(args, flag, None)
        if value is None:
            continue
        path = Path(value)
        if path.is_dir():
            raise HRVInputError(f"--{flag} {value} is a folder; give a file name")
        if path.exists() and not args.overwrite:
            raise HRVInputError(
                f"--{flag} {value} exists; give a new file name, or pass --overwrite to replace it"
            )
