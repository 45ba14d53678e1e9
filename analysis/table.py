"""``cvae analysis table``: one row per configuration, replicates reduced to mean ± 95% CI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from cvae.analysis.load import SweepData
from cvae.analysis.stats import mean_ci

__all__ = ["config_table", "fmt_ci", "mean_ci", "render_terminal"]


def config_table(data: SweepData) -> pd.DataFrame:
    """Per configuration (``label``): final and best metric (mean, CI), epoch of the best, time, states.

    "Final" is the metric at each run's last recorded epoch, "best" its best epoch (max for maximize);
    both are reduced over the configuration's replicates. Sorted best first by the mean best value.

    Where the runs recorded their baselines, ``copy_first`` is the copy-first-frame PSNR of their validation
    video and ``margin`` (with ``margin_ci95``) the validation PSNR at each run's best epoch minus it: above
    0, the configuration beats copying the first frame.
    """
    field = data.metric_field
    rows = []
    for label, group in data.runs.groupby("label", sort=False):
        finals, bests, best_epochs, margins, copies = [], [], [], [], []
        for run in group.run:
            ep = data.epochs[data.epochs.run == run] if not data.epochs.empty else data.epochs
            if ep.empty or field not in ep or ep[field].dropna().empty:
                continue
            series = ep.set_index("epoch")[field].dropna()
            finals.append(float(series.iloc[-1]))
            best_epoch = series.idxmax() if data.goal == "maximize" else series.idxmin()
            bests.append(float(series[best_epoch]))
            best_epochs.append(int(best_epoch))
            if "val_psnr_copy_first" in ep and "val_psnr" in ep:
                at_best = ep[ep.epoch == best_epoch].iloc[-1]
                if pd.notna(at_best["val_psnr_copy_first"]) and pd.notna(at_best["val_psnr"]):
                    copies.append(float(at_best["val_psnr_copy_first"]))
                    margins.append(float(at_best["val_psnr"]) - copies[-1])
        final_mean, final_ci = mean_ci(finals)
        best_mean, best_ci = mean_ci(bests)
        margin_mean, margin_ci = mean_ci(margins)
        states = group.state.value_counts().to_dict()
        row = {
            "configuration": label, "runs": len(group), **{p: group[p].iloc[0] for p in data.params if p in group},
            f"final_{field}": final_mean, f"final_{field}_ci95": final_ci,
            f"best_{field}": best_mean, f"best_{field}_ci95": best_ci,
            "best_epoch": float(np.mean(best_epochs)) if best_epochs else math.nan,
            "copy_first": float(np.mean(copies)) if copies else math.nan,
            "margin": margin_mean, "margin_ci95": margin_ci,
            "train_time_s": float(group.duration_s.astype(float).mean()) if group.duration_s.notna().any() else math.nan,
        }
        for state in ("complete", "pruned", "failed", "running"):
            row[state] = int(states.get(state, 0))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(f"best_{field}", ascending=data.goal != "maximize", na_position="last",
                             kind="stable").reset_index(drop=True)


def fmt_ci(mean: float, ci: float, unit: str = "") -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.2f}{unit}" if math.isnan(ci) else f"{mean:.2f} ± {ci:.2f}{unit}"


def render_terminal(data: SweepData, table: pd.DataFrame):
    """A rich Table of :func:`config_table`'s output."""
    from rich.table import Table

    field = data.metric_field
    unit = " dB" if field.endswith("psnr") else ""
    out = Table(title=f"{data.name}: {data.metric} per configuration ({data.goal}; mean ± 95% CI over replicates)")
    for col in ("configuration", "runs", "final", "best", "margin over copy-first", "best epoch", "time",
                "complete/pruned/failed/running"):
        out.add_column(col, justify="left" if col == "configuration" else "right")
    for _, r in table.iterrows():
        margin = "-" if math.isnan(r.margin) else (
            ("+" if r.margin >= 0 else "") + fmt_ci(r.margin, r.margin_ci95, " dB") + f" (of {r.copy_first:.2f})")
        out.add_row(
            str(r.configuration), str(r.runs), fmt_ci(r[f"final_{field}"], r[f"final_{field}_ci95"], unit),
            fmt_ci(r[f"best_{field}"], r[f"best_{field}_ci95"], unit), margin,
            "-" if math.isnan(r.best_epoch) else f"{r.best_epoch:.1f}",
            "-" if math.isnan(r.train_time_s) else f"{r.train_time_s:.0f} s",
            f"{r.complete}/{r.pruned}/{r.failed}/{r.running}",
        )
    return out
