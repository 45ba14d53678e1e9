"""``cvae analysis table``: one row per configuration, replicates reduced to mean ± 95% CI."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from cvae.analysis.load import SweepData
from cvae.analysis.numbers import number
from cvae.analysis.stats import mean_ci

__all__ = ["EVAL_COLUMNS", "EVAL_MEASURES", "at_value_epoch", "config_table", "eval_cells", "eval_measures", "fmt_ci", "mean_ci",
           "render_terminal"]

EVAL_MEASURES: dict[str, tuple[str, str | None, str]] = {
    "ssim": ("val_ssim", None, "SSIM"),
    "psnr_best_of_k": ("val_psnr_best_of_k", None, "PSNR best of K (dB)"),
    "psnr_mean_of_k": ("val_psnr_mean_of_k", None, "PSNR mean of K (dB)"),
    "psnr_std_of_k": ("val_psnr_std_of_k", None, "PSNR spread over z (dB)"),
    "no_prev_change": ("val_psnr_no_prev", "val_psnr", "Δ without prev. frame (dB)"),
    "swapped_frame_change": ("val_psnr_swapped_frame", "val_psnr", "Δ other video's frame (dB)"),
    "z0_change": ("val_psnr_z0", "val_psnr", "Δ z = 0 (dB)"),
    "active_units": ("val_active_units", None, "active units"),
}
"""The evaluation's columns of the table: name -> (records column, the column it is a change from, heading).
A change (Δ) is the PSNR change ``column - from`` at one epoch: ``no_prev_change`` is the validation PSNR
without the previous frame minus the lab's (near 0 or above: the model does not use its previous frame)."""
EVAL_NOTE = ("SSIM of the lab's rollout; PSNR best and mean of K rollouts with z from the prior, and their spread "
             "(standard deviation over z); Δ: the PSNR change of the rollout with its frame input replaced by the "
             "clip's first frame (without prev. frame: near 0 or above, the model does not use it), by another "
             "video's frame, or with z = 0; active units: latent channels the posterior uses (0: posterior "
             "collapse). All at one epoch of each run: the epoch of its value (its best; its last with "
             "metric.summary: last) among those that ran the full evaluation.")
"""What the evaluation's columns mean, under a table that has them."""
NO_DROP_DB = 0.1
"""A configuration does not use its previous frame when its validation PSNR without it is within this of the
lab's rollout's, or above (``no_prev_change >= -NO_DROP_DB``)."""
EVAL_COLUMNS = tuple(dict.fromkeys(c for column, base, _ in EVAL_MEASURES.values() for c in (column, base) if c))
"""Every records column the evaluation's measures read; a run's values of all of them come from one epoch."""


def value_summary(data: SweepData) -> str:
    """``best`` or ``last``: which epoch a run's value comes from (the spec's ``metric.summary``; best when the
    source does not say)."""
    metric = data.spec.get("metric") if isinstance(data.spec, dict) else None
    return "last" if isinstance(metric, dict) and metric.get("summary") == "last" else "best"


def _value_row(ep: pd.DataFrame, field: str, goal: str, summary: str) -> Any:
    """The index of ``ep``'s row the value comes from: its best by ``field``, or its last with a value of it
    (``summary``); None when it has no value."""
    values = ep[field].dropna() if field in ep else pd.Series(dtype=float)
    if values.empty:
        return None
    if summary == "last":
        return ep.loc[values.index, "epoch"].idxmax()
    return values.idxmax() if goal == "maximize" else values.idxmin()


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def at_value_epoch(data: SweepData, columns: Sequence[str] = EVAL_COLUMNS) -> pd.DataFrame:
    """``run``, ``label``, ``state``, ``epoch`` and ``columns``: each run's values at the epoch its value comes
    from, all from one epoch.

    That epoch is, among the epochs that measured every one of ``columns`` the run's epochs record (the K samples
    and the frame replacements may skip epochs: ``val_eval_every``, ``val_eval_at``), the run's best by the sweep metric, or its
    last with ``metric.summary: last`` (:func:`value_summary`). Columns its epochs never record come from the
    run's own record (``runs``: the trial's columns at the epoch of its value), else NaN.
    """
    field, epochs, rows = data.metric_field, data.epochs, []
    summary = value_summary(data)
    for _, run in data.runs.iterrows():
        ep = epochs[epochs["run"] == run["run"]] if "run" in epochs else epochs
        ep = ep.assign(**{c: pd.to_numeric(ep[c], errors="coerce") for c in columns if c in ep})
        measured = [c for c in columns if c in ep and ep[c].notna().any()]
        best = _value_row(ep.dropna(subset=measured), field, data.goal, summary)
        row = {"run": run["run"], "label": run.get("label"), "state": run.get("state"),
               "epoch": ep.loc[best, "epoch"] if best is not None else run.get("best_epoch")}
        for c in columns:
            if c in measured:
                row[c] = float(ep.loc[best, c]) if best is not None else math.nan
            else:
                row[c] = _number(run.get(c))
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", "label", "state", "epoch", *columns])


def eval_measures(data: SweepData) -> pd.DataFrame:
    """``run``, ``label`` and each of :data:`EVAL_MEASURES` at one epoch of each run, that of its value
    (:func:`at_value_epoch`); a measure no run recorded is left out."""
    out = pd.DataFrame({"run": data.runs["run"].tolist(), "label": data.runs["label"].tolist()})
    values = at_value_epoch(data)
    for name, (column, base, _) in EVAL_MEASURES.items():
        change = values[column] - values[base] if base else values[column]
        if change.notna().any():
            out[name] = change.to_numpy(dtype=float)
    return out


def config_table(data: SweepData) -> pd.DataFrame:
    """Per configuration (``label``): final and best metric (mean, CI), epoch of the best, time, states.

    "Final" is the metric at each run's last recorded epoch, "best" its best epoch (max for maximize);
    both are reduced over the configuration's replicates. Sorted best first by the mean best value.

    Where the runs recorded their baselines, ``copy_first`` is the copy-first-frame PSNR of their validation
    video and ``margin`` (with ``margin_ci95``) the validation PSNR at each run's best epoch minus it: above
    0, the configuration beats copying the first frame.

    Where the runs recorded the evaluation of a stochastic predictor, each of :data:`EVAL_MEASURES` (``ssim``,
    ``psnr_best_of_k``, ..., ``no_prev_change``, ``active_units``) with its ``_ci95``, over the runs' values at
    the epoch of their value (:func:`eval_measures`); a measure no run recorded has no column.
    """
    field = data.metric_field
    measures = eval_measures(data).set_index("run")
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
        for name in measures.columns.drop("label"):
            row[name], row[f"{name}_ci95"] = mean_ci(measures.loc[group.run, name])
        for state in ("complete", "pruned", "failed", "running"):
            row[state] = int(states.get(state, 0))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(f"best_{field}", ascending=data.goal != "maximize", na_position="last",
                             kind="stable").reset_index(drop=True)


def fmt_ci(mean: float, ci: float, unit: str = "", *, digits: int = 2, sign: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return f"{text}{unit}" if math.isnan(ci) else f"{text} ± {ci:.{digits}f}{unit}"


def eval_cells(table: pd.DataFrame, row: pd.Series) -> list[tuple[str, str]]:
    """(heading, text) of each :data:`EVAL_MEASURES` column the table has: mean ± 95% CI, changes signed."""
    out = []
    for name, (_, base, heading) in EVAL_MEASURES.items():
        if name in table:
            out.append((heading, fmt_ci(row[name], row[f"{name}_ci95"], digits=3 if name == "ssim" else 2,
                                        sign=base is not None)))
    return out


def render_terminal(data: SweepData, table: pd.DataFrame):
    """A rich Table of :func:`config_table`'s output; where the runs recorded the evaluation of a stochastic
    predictor, a second table of :data:`EVAL_MEASURES` under it (a Group of both)."""
    from rich.console import Group
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
            "-" if math.isnan(r.best_epoch) else number(r.best_epoch),
            "-" if math.isnan(r.train_time_s) else f"{r.train_time_s:.0f} s",
            f"{r.complete}/{r.pruned}/{r.failed}/{r.running}",
        )
    if table.empty or not eval_cells(table, table.iloc[0]):
        return out
    uses = Table(title=f"{data.name}: what each configuration uses (mean ± 95% CI over replicates)",
                 caption=EVAL_NOTE)
    uses.add_column("configuration", no_wrap=True)
    for heading, _ in eval_cells(table, table.iloc[0]):
        uses.add_column(heading, justify="right")
    for _, r in table.iterrows():
        uses.add_row(str(r.configuration), *(t for _, t in eval_cells(table, r)))
    return Group(out, uses)
