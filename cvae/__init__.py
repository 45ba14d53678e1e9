"""The ``cvae`` command: one entry point, a subcommand per package."""
