"""Subcommands of the ``hrv`` CLI, one module per topic (see hrv.cli.COMMAND_MODULES)."""
