"""``cvae``: dispatches to each package's subcommands (core: data, train, test)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvae",
        description="Pose-conditioned video prediction (the Lab-4 cVAE): data, training, testing, sweeps, analysis.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from cvae.analysis.cli import register as register_analysis
    from cvae.core.cli import register as register_core
    from cvae.sweeps.cli import register as register_sweeps

    register_core(sub)
    register_sweeps(sub)
    register_analysis(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the command line of this process: no storage password may stay in it (`ps` shows it)
        from cvae.secrets import hide_password_from_process_list

        hide_password_from_process_list(sys.argv[1:])
    args = build_parser().parse_args(argv)
    # A logging handler that cannot write (W&B's debug logs on a full disk) drops the record instead of printing
    # a traceback for every record: thousands of lines that bury the one that says what happened.
    logging.raiseExceptions = False
    # What libraries record of the command line (W&B's run metadata) must not carry a storage password;
    # the parsed arguments keep it.
    from cvae.secrets import mask_argv

    mask_argv()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("cvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
