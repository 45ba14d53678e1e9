"""``cvae analysis figures | table | report``: from a sweep's runs to figures, a table, an HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cvae.console import EXIT_BAD_INPUT, fail


def _sources(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("source (one of)")
    g.add_argument("--runs", help="a sweep's output_dir (run records; the default source)")
    g.add_argument("--storage", help="an Optuna storage URL (with --study)")
    g.add_argument("--study", help="the study name in --storage")
    g.add_argument("--wandb", metavar="ENTITY/PROJECT", help="W&B online (with --group)")
    g.add_argument("--wandb-dir", help="a folder of W&B offline runs (wandb/offline-run-*), no account needed")
    g.add_argument("--group", help="the sweep's W&B group (its name)")


def register(sub: argparse._SubParsersAction) -> None:
    analysis = sub.add_parser("analysis", help="figures, tables and an HTML report from a sweep's runs")
    asub = analysis.add_subparsers(dest="analysis_command", required=True)

    figures = asub.add_parser("figures", help="draw every figure the runs support (PNG + SVG)")
    _sources(figures)
    figures.add_argument("--out", required=True, help="output folder")
    figures.add_argument("--only", help="comma-separated figure names (drawn even if not applicable)")
    figures.add_argument("--compare", metavar="PARAM", help="also draw a metric per epoch grouped by PARAM")
    figures.add_argument("--y", default="val_psnr", help="the metric of --compare (default val_psnr)")
    figures.set_defaults(func=_cmd_figures)

    table = asub.add_parser("table", help="one row per configuration: final/best metric (mean ± 95%% CI)")
    _sources(table)
    table.add_argument("--csv", help="also write the table as CSV to this file")
    table.set_defaults(func=_cmd_table)

    report = asub.add_parser("report", help="one self-contained HTML page: spec, table, figures, rollouts")
    _sources(report)
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.set_defaults(func=_cmd_report)


def load(args: argparse.Namespace):
    """The SweepData of the chosen source."""
    from cvae.analysis import load as L

    if args.storage or args.study:
        if not (args.storage and args.study):
            raise L.AnalysisError("--storage and --study go together")
        return L.load_optuna(args.storage, args.study)
    if args.wandb:
        if not args.group:
            raise L.AnalysisError("--wandb needs --group (the sweep's name)")
        return L.load_wandb_online(args.wandb, args.group)
    if args.wandb_dir:
        return L.load_wandb_offline(args.wandb_dir, args.group)
    if args.runs:
        return L.load_local(args.runs)
    raise L.AnalysisError("give a source: --runs DIR, --storage URL --study NAME, --wandb-dir DIR, "
                          "or --wandb ENTITY/PROJECT --group NAME")


def _cmd_figures(args: argparse.Namespace) -> int:
    from cvae.analysis.figures import not_drawn, render_all, render_compare, save_figure
    from cvae.analysis.load import AnalysisError

    try:
        data = load(args)
        only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
        written = render_all(data, Path(args.out), only=only)
        if args.compare:
            result = render_compare(data, args.compare, args.y)
            written.append((result, *save_figure(result, Path(args.out))))
    except (AnalysisError, ValueError) as err:
        return fail("analysis figures", str(err), EXIT_BAD_INPUT)
    if not written:
        print(f"{data.name}: no figure applies to these runs ({len(data.runs)} runs)", file=sys.stderr)
    for result, png, svg in written:
        print(f"{png}  {svg}\n    {result.title}: {result.caption}")
    if only is None:
        for name, why in not_drawn(data).items():
            print(f"not drawn: {name}: {why}")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from cvae.analysis.load import AnalysisError
    from cvae.analysis.table import config_table, render_terminal
    from rich.console import Console

    try:
        data = load(args)
    except AnalysisError as err:
        return fail("analysis table", str(err))
    table = config_table(data)
    Console(width=None if sys.stdout.isatty() else 200).print(render_terminal(data, table))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cvae.analysis.load import AnalysisError
    from cvae.analysis.report import build_report

    try:
        out = build_report(load(args), args.out)
    except (AnalysisError, ValueError) as err:
        return fail("analysis report", str(err))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
