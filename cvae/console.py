"""What every ``cvae`` command prints when it fails, its exit codes, and the log lines of the long-running ones.

Shared by core, sweeps and analysis; no heavy imports.
"""

from __future__ import annotations

import logging
import sys

from cvae.secrets import mask_secrets

EXIT_FAILED = 1
"""A run that went wrong on its own (a crashed worker, no trial with a value)."""
EXIT_BAD_INPUT = 2
"""Bad input or a fault of the machine: the one line says what to fix (argparse's code for usage errors)."""


def fail(command: str, message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print the error, one line per problem (a spec with three mistakes: three lines), each with the
    command's prefix and every storage password masked, and return the exit code."""
    for line in mask_secrets(message).splitlines() or [message]:
        print(f"cvae {command}: error: {line}", file=sys.stderr)
    return code


class _MaskSecrets(logging.Filter):
    """Mask storage passwords in every log line (a library's error text can carry the URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(prefix: str = "", *, level: int = logging.INFO, timestamps: bool = True) -> None:
    """Log lines to stderr, each with ``prefix`` (a worker's ``[worker 0] ``) and the time, passwords masked."""
    fmt = f"{prefix}%(asctime)s %(message)s" if timestamps else f"{prefix}%(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_MaskSecrets())
