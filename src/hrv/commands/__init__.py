"""Subcommands of the ``hrv`` command line, one module per group (see ``hrv.cli``)."""

from __future__ import annotations

import argparse

DEVICE_HELP = "auto (CUDA if available), cpu, cuda or cuda:N"
DTYPE_HELP = "auto (the model preset's; float16 on CUDA), float32, float16 or bfloat16"


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless it is None or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or "default" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)
