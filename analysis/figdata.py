"""What each figure shows, as a tidy DataFrame: one function per figure, drawing left to :mod:`.draw`.

The line figures (``tfr_loss`` ... ``compare_*``) return one row per run and x (``epoch``, or ``frame`` for
``psnr_per_frame``), the values the runs recorded (averaged when a run recorded an x twice), with columns:

- ``kind``: ``metric`` (the figure's y), ``schedule`` (the teacher-forcing ratio or β on a twin axis),
  ``baseline`` (a trivial predictor's PSNR, a grey reference line; x is NaN for a horizontal line) or
  ``best_of_k`` (the best of K samples of z beside a validation-PSNR line, same ``line`` and colour, where the
  records have it);
- ``panel`` (the panel's title; ``""`` for a single panel), ``line`` (its legend entry: ``cyclical (1 of 2
  pruned)``), ``group`` (the configuration, or the baseline's name), ``run``, ``state``;
- the x column, ``value``, ``dashed`` (the line holds a run that did not complete), ``color``.

A line is drawn as the mean of its runs per x with the 95% t-band (:func:`summary` computes the same numbers
as seaborn draws). ``df.attrs`` holds the rest of the figure: ``name``, ``title``, ``caption``, ``runs`` (those
drawn), ``layout`` (``panels``, ``lines``, ``history``, ``bars``, ``parallel``, ``uses`` or ``message``), the axis
labels, ``panels`` (in order), ``ylim`` and ``log`` (``ylabels`` and ``ylims`` per panel where they differ); a
``message`` figure (no runs, a metric this source lacks) is an empty frame with ``attrs["message"]``.

``uses`` (what each configuration uses) has one row per run, panel and measure, ``configuration`` as its x
(drawn on the y axis): :func:`summary` gives its points and intervals too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from cvae.analysis import captions as C
from cvae.analysis import groups as G
from cvae.analysis import numbers as N
from cvae.analysis.importance import FEW_IMPORTANCE_RUNS, complete_with_values, param_importances
from cvae.analysis.load import SweepData
from cvae.analysis.stats import t_interval
from cvae.analysis.table import NO_DROP_DB, at_value_epoch
from matplotlib.ticker import LogLocator, MaxNLocator

from cvae.schema import BASELINE_TITLES

BEST_OF_K = "val_psnr_best_of_k"
"""Drawn dash-dotted beside the lab's single-sample validation PSNR where the records have it."""
REFERENCES = ("copy_first", "mean_frame")
"""The baselines drawn as reference lines (copy_prev, an oracle far above every model, goes in the caption)."""
GREY, SCHEDULE_GREY = "0.45", "0.25"


def _message(name: str, title: str, message: str, caption: str, runs: Sequence[str] = ()) -> pd.DataFrame:
    df = pd.DataFrame()
    df.attrs.update(name=name, title=title, caption=caption, runs=list(runs), layout="message", message=message)
    return df


def empty(name: str, title: str, data: SweepData) -> pd.DataFrame:
    return _message(name, title, "no runs", f"No runs in {data.name}: nothing to plot.")


def _unplottable(data: SweepData, name: str, title: str, y: str) -> pd.DataFrame | None:
    """The message frame to return instead when there are no runs or no per-epoch ``y``; None when plottable."""
    if data.is_empty():
        return empty(name, title, data)
    if not G.has(data.epochs, y):
        return _message(name, title, f"no {C.label(y)} per epoch in this source",
                        f"The source ({data.source or data.name}) records no per-epoch {y}: nothing to plot.")
    return None


def _per_run(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """``run``, ``x``, ``value``: ``y`` per run and x (numeric, missing values dropped, repeats averaged)."""
    if frame is None or frame.empty or y not in frame:
        return pd.DataFrame(columns=["run", x, "value"])
    sub = frame[["run", x]].assign(value=pd.to_numeric(frame[y], errors="coerce")).dropna(subset=["value"])
    return sub.groupby(["run", x], as_index=False)["value"].mean()


def _tag(pts: pd.DataFrame, states: Mapping[str, str], **columns) -> pd.DataFrame:
    return pts.assign(state=pts["run"].map(states), **columns)


def _tidy(parts: list[pd.DataFrame], x: str, **attrs) -> pd.DataFrame:
    columns = ["kind", "panel", "line", "group", "run", "state", x, "value", "dashed", "color"]
    parts = [p for p in parts if not p.empty]
    df = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    df.attrs.update(x=x, **attrs)
    return df


def summary(df: pd.DataFrame, kind: str = "metric") -> pd.DataFrame:
    """The metric lines (or the rows of another ``kind``: ``best_of_k``) as drawn: ``panel``, ``line``, x,
    ``mean``, ``lo`` and ``hi`` (the 95% t-interval of the mean; NaN where one run contributes) and ``n`` (the
    runs)."""
    x = df.attrs["x"]
    metric = df[df["kind"] == kind]
    out = metric.groupby(["panel", "line", x], sort=False)["value"].agg(
        mean="mean", lo=lambda v: t_interval(v)[0], hi=lambda v: t_interval(v)[1], n="count")
    return out.reset_index().sort_values(["panel", "line", x], kind="stable", ignore_index=True)


# -- baselines -------------------------------------------------------------------------------------------------
def _baseline_of_runs(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Each run's value of a per-run constant column (the first recorded)."""
    if frame is None or frame.empty or column not in frame:
        return np.array([])
    vals = pd.to_numeric(frame[column], errors="coerce")
    return frame.assign(_v=vals).dropna(subset=["_v"]).groupby("run")["_v"].first().to_numpy(dtype=float)


def _frame_curve(frame: pd.DataFrame, column: str) -> tuple[pd.Series, float]:
    """A per-frame baseline's curve (mean over the runs per frame) and its average (mean over the runs)."""
    sub = frame.assign(_v=pd.to_numeric(frame[column], errors="coerce")).dropna(subset=["_v"])
    curve = sub.groupby(["run", "frame"])["_v"].first().groupby("frame").mean()
    return curve, float(sub.groupby("run")["_v"].mean().mean())


def _references(frame: pd.DataFrame, panel: str, x: str, ssim_panel: str | None = None) -> tuple[pd.DataFrame, str]:
    """The trivial predictors' PSNR as reference rows: one per baseline with x NaN (a horizontal line) from
    ``epochs`` rows (``val_psnr_copy_first``, ...), or a curve per frame from ``frames`` rows (``copy_first``,
    ...) when ``x`` is ``frame``; with the caption sentence. Nothing when the runs recorded no baselines.
    ``ssim_panel``: per frame, also their SSIM curves (``ssim_copy_first``, ...) in that panel, where recorded,
    one legend entry giving both averages."""
    per_frame = x == "frame"
    rows, found = [], []
    for name in REFERENCES:
        column = name if per_frame else f"val_psnr_{name}"
        per_run = _baseline_of_runs(frame, column)
        if per_run.size == 0:
            continue
        title = BASELINE_TITLES[name]
        if per_frame:
            curve, avg = _frame_curve(frame, column)
            curves = [(panel, curve)]
            line = f"{title}: {avg:.2f} dB average PSNR"
            if ssim_panel is not None and _baseline_of_runs(frame, f"ssim_{name}").size:
                ssim_curve, ssim_avg = _frame_curve(frame, f"ssim_{name}")
                curves.append((ssim_panel, ssim_curve))
                line += f", {ssim_avg:.3f} SSIM"
            for where, values in curves:
                rows.append(pd.DataFrame({x: values.index.to_numpy(dtype=float), "value": values.to_numpy(dtype=float),
                                          "line": line, "panel": where, "group": name}))
        else:
            avg = float(per_run.mean())
            rows.append(pd.DataFrame({x: [np.nan], "value": [avg], "line": [f"{title}: {avg:.2f} dB"], "panel": panel,
                                      "group": name}))
        found.append((title, avg, float(per_run.min()), float(per_run.max())))
    rows = [r.assign(kind="baseline", run=None, state=None, dashed=False, color=None) for r in rows]
    oracle = _baseline_of_runs(frame, "copy_prev" if per_frame else "val_psnr_copy_prev")
    return (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(),
            C.references_sentence(found, float(oracle.mean()) if oracle.size else None))


def _k_text(data: SweepData, runs: Sequence[str]) -> str:
    """``K = 5`` when the runs share their number of samples of z (``val_samples``), else ``K``."""
    if "val_samples" not in data.runs:
        return "K"
    ks = set(pd.to_numeric(data.runs.loc[data.runs["run"].isin(runs), "val_samples"], errors="coerce").dropna())
    return f"K = {int(ks.pop())}" if len(ks) == 1 else "K"


def _best_of_k(frame: pd.DataFrame, x: str, column: str, states: Mapping[str, str], **columns) -> pd.DataFrame:
    """The best of K samples of z beside a line of the lab's single sample (``kind`` ``best_of_k``, the same
    ``line`` and colour): ``column`` per run and x where measured (an epoch the evaluation skipped is left
    out); empty when the records lack it."""
    pts = _per_run(frame, x, column)
    return _tag(pts, states, kind="best_of_k", **columns) if not pts.empty else pts


def _best_of_k_note(df: pd.DataFrame, data: SweepData, what: str = "PSNR") -> str:
    """The caption sentence of the dash-dotted best-of-K lines (empty without them)."""
    rows = df[df["kind"] == "best_of_k"]
    if rows.empty:
        return ""
    k = _k_text(data, list(dict.fromkeys(rows["run"])))
    return (f" Dash-dotted, in each line's colour: the {what} of the best of {k} samples of z per validation video "
            f"(mean over the runs, no band), as stochastic video prediction is scored; solid: the lab's single "
            f"sample of z.")


def _yrange(df: pd.DataFrame, *, log_ok: bool) -> tuple[tuple[float, float] | None, bool, bool]:
    """(y-limits, log scale, a band was cut): the limits hold what the runs recorded and the reference lines;
    a 95% band reaching beyond is cut at the axes (with two replicates t(0.975, 1) = 12.7 makes bands that
    would otherwise flatten every line). Log when allowed and the positive values span two decades or more."""
    vals = df.loc[df["kind"].isin(["metric", "baseline", "best_of_k"]), "value"].to_numpy(dtype=float)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return None, False, False
    lo, hi = float(vals.min()), float(vals.max())
    log = log_ok and lo > 0 and hi / lo >= 100
    if log:
        low, high = lo / 1.5, hi * 1.5
    else:
        pad = 0.06 * (hi - lo or abs(hi) or 1.0)
        low, high = lo - pad, hi + pad
    bands = summary(df)[["lo", "hi"]].to_numpy(dtype=float).ravel()
    bands = bands[np.isfinite(bands)]
    return (low, high), log, bool(bands.size and (bands.min() < low or bands.max() > high))


# -- panel figures: a metric per epoch with its schedule on a twin axis -----------------------------------------
def _schedule_rows(curves: list[tuple[str, str, pd.DataFrame]], panel: str, schedule: str, states):
    """One grey schedule line when the panel's configurations share it, else one dash-dotted line each."""
    means = [c.groupby("epoch")["value"].mean() for _, _, c in curves]
    # the same where both ran (a run pruned early follows the others as far as it went)
    same = all(np.allclose(m.reindex(common), means[0].reindex(common), equal_nan=True)
               for m in means for common in [m.index.intersection(means[0].index)])
    chosen = curves[:1] if same else curves
    rows = [_tag(pts, states, kind="schedule", panel=panel, group=sub or panel, dashed=False,
                 line=C.label(schedule) + ("" if same or not sub else f" ({sub})"),
                 color=SCHEDULE_GREY if same else color) for sub, color, pts in chosen]
    return rows, not same


def _panels(data: SweepData, groups: G.Groups, *, name: str, title: str, y: str, schedule: str, noun: str,
            what: str) -> pd.DataFrame:
    blocked = _unplottable(data, name, title, y)
    if blocked is not None:
        return blocked
    ep, states, runs = data.epochs, G.states(data), G.order_runs(data)
    has_schedule = G.has(ep, schedule)
    subl = G.sublabels(data, groups.absorbed)
    subs = list(dict.fromkeys(subl[r] for r in runs))
    sub_colors = G.colors_for(data, [s for s in subs if s]) if any(subs) else {}
    group_colors = G.group_colors(data, groups.order, groups.of_run)
    parts, drawn, largest, differs = [], [], 1, False
    for panel in groups.order:
        by_sub: dict[str, list[str]] = {}
        for r in groups.members(panel):
            by_sub.setdefault(subl[r], []).append(r)
        curves = []
        for sub, members in by_sub.items():
            frame = ep[ep["run"].isin(members)]
            pts = _per_run(frame, "epoch", y)
            if pts.empty:
                continue
            used = [r for r in members if r in set(pts["run"])]
            drawn += used
            largest = max(largest, len(used))
            color = sub_colors.get(sub) or group_colors.get(panel, "C0")
            suffix = C.partial_suffix(used, states)
            parts.append(_tag(pts, states, kind="metric", panel=panel, line=(sub or C.label(y)) + suffix,
                              group=sub or panel, dashed=bool(suffix), color=color))
            if y == "val_psnr":
                parts.append(_best_of_k(frame, "epoch", BEST_OF_K, states, panel=panel,
                                        line=(sub or C.label(y)) + suffix, group=sub or panel, dashed=bool(suffix),
                                        color=color))
            sched = _per_run(frame, "epoch", schedule) if has_schedule else pd.DataFrame()
            if not sched.empty:
                curves.append((sub, color, sched))
        if curves:
            rows, differ = _schedule_rows(curves, panel, schedule, states)
            parts += rows
            differs |= differ
        if y == "val_psnr":
            parts.append(_references(ep[ep["run"].isin(groups.members(panel))], panel, "epoch")[0])
    refs = _references(ep[ep["run"].isin(drawn)], "", "epoch")[1] if y == "val_psnr" else ""
    df = _tidy(parts, "epoch")
    ylim, log, cut = _yrange(df, log_ok=y != "val_psnr")
    caption = (C.panels_caption(what, noun, groups, subs=any(subs), replicated=largest > 1, schedule=schedule,
                                has_schedule=has_schedule, schedule_differs=differs)
               + _best_of_k_note(df, data) + C.tail(drawn, runs, states, y, refs=refs, log=log, cut=cut))
    df.attrs.update(name=name, title=title, caption=caption, runs=list(dict.fromkeys(drawn)), layout="panels",
                    panels=list(groups.order), xlabel="epoch", ylabel=C.label(y), twin_label=C.label(schedule),
                    ylim=ylim, log=log)
    return df


def tfr_loss(data: SweepData) -> pd.DataFrame:
    """Teacher-forcing ratio and training loss per epoch, one panel per TF configuration (report 000 fig. 5,
    report 001 fig. 1)."""
    return _panels(data, G.tf_groups(data), name="tfr_loss", y="train_loss", schedule="tfr",
                   title="Teacher-forcing ratio and training loss per epoch", noun="teacher-forcing configuration",
                   what="Training loss (left axis) and teacher-forcing ratio (right axis, grey) per epoch")


def tfr_psnr(data: SweepData) -> pd.DataFrame:
    """Validation PSNR per epoch with the teacher-forcing ratio, one panel per TF configuration (report 000
    figs. 6-7)."""
    return _panels(data, G.tf_groups(data), name="tfr_psnr", y="val_psnr", schedule="tfr",
                   title="Validation PSNR and teacher-forcing ratio per epoch", noun="teacher-forcing configuration",
                   what="Validation PSNR (left axis, dB) and teacher-forcing ratio (right axis, grey) per epoch")


def kl_beta_psnr(data: SweepData) -> pd.DataFrame:
    """β (the KL weight) and validation PSNR per epoch, one panel per KL annealing configuration (report 000
    figs. 8-11)."""
    return _panels(data, G.kl_groups(data), name="kl_beta_psnr", y="val_psnr", schedule="beta",
                   title="KL annealing: β and validation PSNR per epoch", noun="KL annealing configuration",
                   what="Validation PSNR (left axis, dB) and β, the KL weight (right axis, grey), per epoch")


# -- single-panel comparisons ----------------------------------------------------------------------------------
def _lines(data: SweepData, groups: G.Groups, *, name: str, title: str, y: str, noun: str, what: str,
           log_ok: bool = False) -> pd.DataFrame:
    """One line per group (mean over its runs per epoch, 95% CI band when several)."""
    blocked = _unplottable(data, name, title, y)
    if blocked is not None:
        return blocked
    ep, states, runs = data.epochs, G.states(data), G.order_runs(data)
    colors = G.group_colors(data, groups.order, groups.of_run)
    parts, drawn, used_of = [], [], {}
    for group in groups.order:
        frame = ep[ep["run"].isin(groups.members(group))]
        pts = _per_run(frame, "epoch", y)
        if pts.empty:
            continue
        used_of[group] = [r for r in groups.members(group) if r in set(pts["run"])]
        drawn += used_of[group]
        suffix = C.partial_suffix(used_of[group], states)
        parts.append(_tag(pts, states, kind="metric", panel="", line=f"{group}{suffix}", group=group,
                          dashed=bool(suffix), color=colors[group]))
        if y == "val_psnr":
            parts.append(_best_of_k(frame, "epoch", BEST_OF_K, states, panel="", line=f"{group}{suffix}",
                                    group=group, dashed=bool(suffix), color=colors[group]))
    refs = ""
    if y == "val_psnr":
        rows, refs = _references(ep[ep["run"].isin(drawn)], "", "epoch")
        parts.append(rows)
        log_ok = False
    df = _tidy(parts, "epoch")
    ylim, log, cut = _yrange(df, log_ok=log_ok)
    pooled = G.pooled_over(data, groups.absorbed)
    caption = (f"{what}, one line per {noun} ({C.group_noun(len(used_of), 'configuration')}, "
               f"{C.counts_text(used_of, pooled, G.label_of(data))})." + _best_of_k_note(df, data)
               + C.tail(drawn, runs, states, y, refs=refs, log=log, cut=cut))
    df.attrs.update(name=name, title=title, caption=caption, runs=drawn, layout="lines", panels=[""],
                    xlabel="epoch", ylabel=C.label(y), ylim=ylim, log=log)
    return df


def kl_psnr(data: SweepData) -> pd.DataFrame:
    """Validation PSNR per epoch, one line per KL annealing configuration (report 000 fig. 12)."""
    return _lines(data, G.kl_groups(data), name="kl_psnr", title="Validation PSNR per epoch by KL annealing",
                  y="val_psnr", noun="KL annealing configuration", what="Validation PSNR per epoch")


def kl_loss(data: SweepData) -> pd.DataFrame:
    """Training loss per epoch, one line per KL annealing configuration (report 001 fig. 2); log y-scale when
    the losses span decades."""
    return _lines(data, G.kl_groups(data), name="kl_loss", title="Training loss per epoch by KL annealing",
                  y="train_loss", noun="KL annealing configuration", what="Training loss (MSE + β·KL) per epoch",
                  log_ok=True)


def ndim_psnr(data: SweepData) -> pd.DataFrame:
    """Validation PSNR per epoch for each noise size N_dim (report 000 fig. 14)."""
    name, title = "ndim_psnr", "Validation PSNR per epoch by noise size N_dim"
    if data.is_empty():
        return empty(name, title, data)
    if "N_dim" not in data.runs:
        return _message(name, title, "N_dim is not known for these runs",
                        "The source records no N_dim: nothing to compare.")
    return _lines(data, G.value_groups(data, "N_dim"), name=name, title=title, y="val_psnr", noun="N_dim",
                  what="Validation PSNR per epoch for each noise size N_dim")


def compare(data: SweepData, param: str, y: str) -> pd.DataFrame:
    """Any per-epoch metric ``y`` (an ``epochs`` column) grouped by any ``param`` (a ``runs`` column): one line
    per value, the mean over the runs sharing it with a 95% CI band.

    Raises:
        ValueError: ``param`` is not a column of the runs or ``y`` not a numeric column of the epochs; the
            message lists the valid names.
    """
    if param not in data.runs.columns or param == "run":
        others = sorted(c for c in data.runs.columns if c != "run" and c not in data.params)
        raise ValueError(f"unknown parameter {param!r}: not a column of the runs; swept parameters: "
                         f"{', '.join(data.params) or 'none'}; other columns: {', '.join(others)}")
    metrics = [c for c in data.epochs.columns if c not in ("run", "epoch")
               and pd.api.types.is_numeric_dtype(data.epochs[c])]
    if y not in metrics:
        raise ValueError(f"unknown metric {y!r}: not a numeric column of the per-epoch records; valid metrics: "
                         f"{', '.join(metrics) or 'none (no per-epoch records)'}")
    name, title = f"compare_{param}_{y}", f"{C.capitalized(y)} per epoch by {param}"
    if data.is_empty():
        return empty(name, title, data)
    return _lines(data, G.value_groups(data, param), name=name, title=title, y=y, noun=f"value of {param}",
                  what=f"{C.capitalized(y)} per epoch", log_ok=True)


def psnr_per_frame(data: SweepData) -> pd.DataFrame:
    """PSNR of every predicted frame of the validation rollout at each run's last recorded epoch, one line per
    configuration, "<label>: 26.15 dB average PSNR" (report 000 fig. 13, report 001 fig. 3); where the records
    have SSIM, a second panel with the SSIM of the same frames ("..., 0.812 SSIM"), and where they have the best
    of K samples of z, its curves dash-dotted beside the lab's single sample."""
    name, title = "psnr_per_frame", "PSNR per frame of the validation rollout (last epoch)"
    if data.is_empty():
        return empty(name, title, data)
    fr = data.frames
    if not G.has(fr, "psnr"):
        return _message(name, title, "no per-frame PSNR in this source",
                        f"The source ({data.source or data.name}) records no per-frame PSNR: nothing to plot.")
    fr = fr.dropna(subset=["psnr"])
    fr = fr[fr["epoch"] == fr.groupby("run")["epoch"].transform("max")]
    last_epoch = fr.groupby("run")["epoch"].max()
    states, runs, labels = G.states(data), G.order_runs(data), G.label_of(data)
    order = list(dict.fromkeys(labels[r] for r in runs))
    colors = G.colors_for(data, order)
    panels = {"psnr": "PSNR", "ssim": "SSIM"} if G.has(fr, "ssim") else {"psnr": ""}
    parts, drawn, used_of = [], [], {}
    for group in order:
        members = [r for r in runs if labels[r] == group and r in last_epoch.index]
        if not members:
            continue
        sub = fr[fr["run"].isin(members)]
        pts = {score: _per_run(sub, "frame", score) for score in panels}
        used_of[group] = members
        drawn += members
        suffix = C.partial_suffix(members, states)
        line = f"{group}{suffix}: {pts['psnr'].groupby('run')['value'].mean().mean():.2f} dB average PSNR"
        if "ssim" in panels and not pts["ssim"].empty:
            line += f", {pts['ssim'].groupby('run')['value'].mean().mean():.3f} SSIM"
        for score, panel in panels.items():
            tags = {"panel": panel, "group": group, "dashed": bool(suffix), "line": line, "color": colors[group]}
            parts += [_tag(pts[score], states, kind="metric", **tags),
                      _best_of_k(sub, "frame", f"{score}_best_of_k", states, **tags)]
    rows, refs = _references(fr[fr["run"].isin(drawn)], panels["psnr"], "frame", ssim_panel=panels.get("ssim"))
    df = _tidy([*parts, rows], "frame")
    ylims = {p: _yrange(df[df["panel"] == p], log_ok=False) for p in panels.values()}
    n_frames = fr.groupby("run")["frame"].nunique()
    ssim = (" Left: PSNR (dB); right: SSIM (structural similarity, 1 = identical) of the same frames."
            if "ssim" in panels else "")
    caption = (C.per_frame_caption(int(n_frames.max()) if len(n_frames) else None,
                                   {int(last_epoch[r]) for r in drawn}, used_of, labels)
               + ssim + _best_of_k_note(df, data, "PSNR and SSIM" if "ssim" in panels else "PSNR")
               + C.tail(drawn, runs, states, "per-frame PSNR", refs=refs, cut=any(c for _, _, c in ylims.values())))
    df.attrs.update(name=name, title=title, caption=caption, runs=drawn, layout="lines" if len(panels) == 1 else "panels",
                    panels=list(panels.values()), xlabel="frame", ylabel="PSNR (dB)", ylim=ylims[panels["psnr"]][0],
                    log=False)
    if "ssim" in panels:
        df.attrs.update(ylabels={"PSNR": "PSNR (dB)", "SSIM": "SSIM"}, ylims={p: v[0] for p, v in ylims.items()})
    return df


# -- what each configuration uses ---------------------------------------------------------------------------------
USES_PANELS: tuple[tuple[str, str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("Frame input", "validation PSNR (dB)", (
        ("normal rollout", ("val_psnr",)),
        ("without its previous frame", ("val_psnr_no_prev",)),
        ("with another video's frame", ("val_psnr_swapped_frame",)),
    )),
    ("Samples of z", "PSNR spread over z (dB)", (
        ("std over K samples", ("val_psnr_std_of_k",)),
        ("best of K − mean of K", ("val_psnr_best_of_k", "val_psnr_mean_of_k")),
    )),
    ("Latent channels", "active latent units", (("active units", ("val_active_units",)),)),
)
"""The panels of :func:`uses`: (title, x label, measures), each measure (name, its column, or the two columns
whose difference it is). A panel is drawn when a run recorded one of its measures (the first panel: one of
its diagnostics, beyond the normal rollout)."""
USES_COLUMNS = ("val_psnr_no_prev", "val_psnr_swapped_frame", "val_psnr_std_of_k", "val_psnr_best_of_k",
                "val_active_units")
"""Any of them makes :func:`uses` applicable."""
USES_COLORS = dict(zip(["normal rollout", "without its previous frame", "with another video's frame",
                        "std over K samples", "best of K − mean of K", "active units"],
                       ["#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#17becf", "#d62728"], strict=True))
def _interval_limits(values: np.ndarray, extra: Sequence[float] = ()) -> tuple[float, float]:
    """An axis range holding ``values`` (the runs') and ``extra`` (reference values), padded."""
    vals = np.concatenate([np.asarray(values, dtype=float), np.asarray(extra, dtype=float)])
    vals = vals[np.isfinite(vals)]
    lo, hi = float(vals.min()), float(vals.max())
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    return lo - pad, hi + pad


def uses(data: SweepData) -> pd.DataFrame:
    """What each configuration uses, at one epoch of each run (that of its value: :func:`at_value_epoch`): its
    previous frame (the validation PSNR of the lab's
    rollout beside the rollout without its previous frame and with another video's frame), its latent z (the
    PSNR's spread over K samples of z; the best of K minus the mean of K) and how many latent channels it keeps
    active (beside N_dim). One row per run, panel and measure (``kind`` ``metric``; ``line`` the measure,
    ``configuration`` the y position), ``reference`` rows for N_dim, ``baseline`` rows for copying the first
    frame; points are the configuration's mean with its 95% t-interval (:func:`summary`, x ``configuration``)."""
    name, title = "uses", "What each configuration uses: its previous frame, its latent z"
    if data.is_empty():
        return empty(name, title, data)
    states, runs, labels = G.states(data), G.order_runs(data), G.label_of(data)
    panels, parts = [], []
    columns = list(dict.fromkeys(c for _, _, measures in USES_PANELS for _, cols in measures for c in cols))
    vals = at_value_epoch(data, columns)  # every panel of a run from one epoch
    for panel, xlabel, measures in USES_PANELS:
        rows = []
        for measure, cols in measures:
            value = vals[cols[0]] - vals[cols[1]] if len(cols) == 2 else vals[cols[0]]
            rows.append(pd.DataFrame({"run": vals["run"].astype(str), "value": value.to_numpy(dtype=float),
                                      "kind": "metric", "panel": panel, "line": measure,
                                      "color": USES_COLORS[measure]}).dropna(subset=["value"]))
        if panel == "Frame input":
            rows = rows if any(not r.empty for r in rows[1:]) else []
        if any(not r.empty for r in rows):
            panels.append((panel, xlabel))
            parts += rows
    if not panels:
        return _message(name, title, "no diagnostics in these records",
                        f"The source ({data.source or data.name}) records none of {', '.join(USES_COLUMNS)} (older "
                        "records, or runs with val_diagnostics: false): nothing to plot.")
    metric = pd.concat(parts, ignore_index=True)
    drawn = [r for r in runs if r in set(metric["run"])]
    order = list(dict.fromkeys(labels[r] for r in drawn))
    members = {g: [r for r in drawn if labels[r] == g] for g in order}
    shown = {g: g + C.partial_suffix(m, states) for g, m in members.items()}
    metric = metric.assign(group=metric["run"].map(labels), state=metric["run"].map(states),
                           dashed=metric["run"].map(lambda r: states.get(r) != "complete"))
    metric["configuration"] = metric["group"].map(shown)
    extra = []
    if "N_dim" in data.runs and any(p == "Latent channels" for p, _ in panels):
        n_dim = pd.to_numeric(data.runs.set_index("run")["N_dim"], errors="coerce")
        known = {g: n_dim.reindex(m).dropna() for g, m in members.items()}
        extra.append(pd.DataFrame([{"kind": "reference", "panel": "Latent channels", "line": "N_dim (latent channels)",
                                    "group": g, "configuration": shown[g], "value": float(v.iloc[0]), "color": "0.3"}
                                   for g, v in known.items() if not v.empty]))
    refs = ""
    if panels[0][0] == "Frame input":
        rows, refs = _references(data.epochs[data.epochs["run"].isin(drawn)], "Frame input", "configuration")
        extra.append(rows)
    df = _tidy([metric, *extra], "configuration")
    means = summary(df)
    xlims, cut = {}, False
    for panel, _ in panels:
        inside = df[(df["panel"] == panel) & df["kind"].isin(["metric", "reference", "baseline"])]["value"]
        low, high = _interval_limits(inside.to_numpy(dtype=float), [0.0] if panel != "Frame input" else [])
        xlims[panel] = (low, high)
        bars = means.loc[means["panel"] == panel, ["lo", "hi"]].to_numpy(dtype=float).ravel()
        bars = bars[np.isfinite(bars)]
        cut |= bool(bars.size and (bars.min() < low or bars.max() > high))
    caption = (C.uses_caption([p for p, _ in panels], members, labels, k=_k_text(data, drawn), no_drop=NO_DROP_DB,
                              n_dim="reference" in set(df["kind"]))
               + C.tail(drawn, runs, states, "diagnostics", refs=refs, cut=cut).replace("CI bands", "CI bars"))
    df.attrs.update(name=name, title=title, caption=caption, runs=drawn, layout="uses", panels=[p for p, _ in panels],
                    xlabels=dict(panels), xlims=xlims, configurations=[shown[g] for g in order])
    return df


# -- sweep-level figures ---------------------------------------------------------------------------------------
def metric_label(data: SweepData) -> str:
    return C.LABELS.get(data.metric_field, data.metric)


def optimization_history(data: SweepData) -> pd.DataFrame:
    """The metric of every run in trial order (``kind`` ``metric``, ``trial``), with the best so far over the
    complete runs (``kind`` ``best``; Optuna's optimization history; replicates are separate trials)."""
    name, title = "optimization_history", f"Optimization history: {data.metric} per trial"
    if data.is_empty():
        return empty(name, title, data)
    runs, states = G.order_runs(data), G.states(data)
    trial = pd.to_numeric(data.runs["trial"], errors="coerce") if "trial" in data.runs else None
    x = np.arange(len(runs), dtype=float) if trial is None or trial.isna().all() else trial.to_numpy(dtype=float)
    pts = pd.DataFrame({"run": runs, "trial": x, "value": G.values(data).to_numpy(dtype=float)})
    pts = pts[np.isfinite(pts["value"])]
    state = pts["run"].map(states)
    complete = pts[state == "complete"]
    parts = [_tag(complete, states, kind="metric", panel="", line="complete run", group="complete", dashed=False,
                  color="C0")]
    if not complete.empty:
        best = complete.sort_values("trial", kind="stable")
        best = best.assign(value=(np.maximum if data.goal == "maximize" else np.minimum).accumulate(best["value"]))
        parts.append(best.assign(kind="best", panel="", line="best so far", group="best", run=None, state=None,
                                 dashed=False, color="C3"))
    for s in dict.fromkeys(state[state != "complete"]):
        parts.append(_tag(pts[state == s], states, kind="metric", panel="", line=f"{s} run", group=s, dashed=True,
                          color=GREY))
    refs = ""
    if data.metric_field == "val_psnr":
        rows, refs = _references(data.epochs, "", "trial")
        parts.append(rows)
    df = _tidy(parts, "trial")
    drawn = [r for r in runs if r in set(pts["run"])]
    best_text = ""
    if not complete.empty:
        i = complete["value"].idxmax() if data.goal == "maximize" else complete["value"].idxmin()
        best_text = f" Best: {N.number(complete.loc[i, 'value'], 4)} ({runs[i]}, {G.labels(data.runs)[i]})."
    crosses = "; crosses: runs that did not complete" if len(complete) < len(pts) else ""
    caption = (f"{data.metric} ({data.goal}) of each run by trial number, with the best so far over the "
               f"{C.group_noun(len(complete), 'complete run')}{crosses}.{best_text}"
               + C.tail(drawn, runs, states, "metric value", refs=refs))
    df.attrs.update(name=name, title=title, caption=caption, runs=drawn, layout="history", panels=[""],
                    xlabel="trial number", ylabel=metric_label(data), ylim=None, log=False)
    return df


def importances_frame(importances: Mapping[str, float], *, metric: str = "val/psnr", reason: str = "",
                      runs: Sequence[str] = (), name: str = "param_importances") -> pd.DataFrame:
    """``param``, ``importance``, most important first; with none, a message frame saying ``reason`` (taken
    from an :class:`~.importance.Importances` when not given)."""
    title = f"Parameter importances for {metric}"
    reason = reason or getattr(importances, "reason", "") or "nothing to rank"
    if not importances:
        return _message(name, title, f"no importances: {reason}",
                        f"Parameter importances could not be computed: {reason}.", runs)
    df = pd.DataFrame(sorted(importances.items(), key=lambda kv: -kv[1]), columns=["param", "importance"])
    method = getattr(importances, "method", "")
    xlabel = f"importance ({method.split(':')[0]}, normalized to sum to 1)" if method else \
        "importance (normalized to sum to 1)"
    caption = C.importances_caption(metric, method, getattr(importances, "n_runs", 0) or len(runs),
                                    getattr(importances, "left_out", []), runs,
                                    one_value=getattr(importances, "one_value", []), few=FEW_IMPORTANCE_RUNS)
    df.attrs.update(name=name, title=title, caption=caption, runs=list(runs), layout="bars", xlabel=xlabel)
    return df


def param_importances_data(data: SweepData) -> pd.DataFrame:
    """The importances of the swept parameters (:func:`~.importance.param_importances`) as a frame."""
    if data.is_empty():
        return empty("param_importances", f"Parameter importances for {data.metric}", data)
    runs = [str(r) for r in complete_with_values(data)["run"]]
    return importances_frame(param_importances(data), metric=data.metric, runs=runs)


VALUE_TICKS = 8
"""An integer axis with at most this many values has a tick at each (N_dim 4, 8, 16, 32); others round numbers."""


def _round_ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Round-number ticks from the first at or below ``lo`` to the first at or above ``hi`` (matplotlib's
    locators: 1, 2, 5 per decade on a log axis spanning a few decades, 0, 0.2, ... 1 on a linear one), so that
    the axis's two ends are ticks too."""
    if log:
        decades = math.log10(hi / lo)
        subs = (1.0, 2.0, 3.0, 5.0) if decades < 1 else (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)
        ticks = LogLocator(subs=subs, numticks=12).tick_values(lo, hi)
    else:
        ticks = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    ticks = sorted({float(t) for t in ticks if np.isfinite(t) and (t > 0 or not log)})
    tol = 1e-9 * max(abs(lo), abs(hi))
    first = max((t for t in ticks if t <= lo + tol), default=lo)
    last = min((t for t in ticks if t >= hi - tol), default=hi)
    return [t for t in ticks if first - tol <= t <= last + tol]


def _axis(values: list, *, log: bool = False) -> tuple[np.ndarray, list[tuple[float, str]], str]:
    """Positions in [0, 1] of one parallel-coordinates axis's values, its ticks (position, text) and its scale
    (``log``, ``linear`` or ``categorical``). Numbers: on a log axis where ``log`` (a log-distributed parameter) or
    where they span two decades or more, else a linear one; ticks at round numbers, the axis running from the one
    at or below the lowest value to the one at or above the highest (an integer axis with few values: a tick at
    each value, the axis from the lowest to the highest), written for people (:func:`~.numbers.number`).
    Categories: evenly spaced in natural order, each named."""
    present = [v for v in values if not G.missing(v)]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        arr = np.array([np.nan if G.missing(v) else float(v) for v in values])
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        log = lo > 0 and (log or hi / lo >= 100)
        f = np.log10 if log else (lambda a: a)
        uniq = sorted(set(present))
        if all(isinstance(v, int) for v in uniq) and len(uniq) <= VALUE_TICKS or lo == hi:
            marks = [float(u) for u in uniq]
        else:
            marks = _round_ticks(lo, hi, log)
            lo, hi = min(lo, marks[0]), max(hi, marks[-1])
        span = float(f(hi) - f(lo))
        where = (lambda a: (f(a) - f(lo)) / span) if span > 0 else (lambda a: np.where(np.isnan(a), np.nan, 0.5))
        texts = [N.number(t) for t in marks]
        if len(set(texts)) < len(texts):  # close round numbers: as many digits as keep them apart
            texts = [N.distinct(marks, fmt=N.number)(t) for t in marks]
        return (where(arr), [(float(where(np.array(t))), text) for t, text in zip(marks, texts, strict=True)],
                "log" if log else "linear")
    cats = sorted(dict.fromkeys(str(v) for v in present), key=G.natural_key)
    where = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    return (np.array([np.nan if G.missing(v) else where[str(v)] for v in values]), [(where[c], c) for c in cats],
            "categorical")


def parallel_coordinates(data: SweepData) -> pd.DataFrame:
    """One polyline per run with a metric value across the swept parameters and the metric: rows ``kind``
    ``run`` (``run``, ``state``, ``axis``, ``axis_index``, ``position`` in [0, 1], the run's ``metric``,
    ``dashed`` when it did not complete) and ``tick`` (``axis``, ``axis_index``, ``position``, ``text``);
    ``attrs["norm"]`` is the colour scale of the complete runs' metric (``linear`` or ``log``, low, high),
    ``attrs["scales"]`` each axis's scale (``log`` for a log-distributed parameter, ``linear``, ``categorical``;
    :func:`_axis`). Every swept parameter is an axis, one the runs share included."""
    name, title = "parallel_coordinates", f"Parallel coordinates: swept parameters and {data.metric}"
    if data.is_empty():
        return empty(name, title, data)
    states, v = G.states(data), G.values(data)
    keep = np.isfinite(v.to_numpy(dtype=float))
    sub = data.runs[keep].assign(value=v[keep])
    params = [p for p in data.params if p in data.runs.columns]
    if sub.empty or not params:
        why = "no run has a metric value" if sub.empty else "no swept parameter varies"
        return _message(name, title, why, f"Nothing to draw: {why}.")
    runs = [str(r) for r in sub["run"]]
    metric = sub["value"].to_numpy(dtype=float)
    complete = np.array([states.get(r) == "complete" for r in runs])
    parts = []
    scales = {}
    for i, p in enumerate([*params, "value"]):
        pos, ticks, scale = _axis([G.python(x) for x in sub[p].tolist()], log=p in data.log_params)
        axis = data.metric if p == "value" else p
        scales[axis] = scale
        parts.append(pd.DataFrame({"kind": "run", "run": runs, "state": [states.get(r) for r in runs], "axis": axis,
                                   "axis_index": i, "position": pos, "metric": metric, "dashed": ~complete}))
        parts.append(pd.DataFrame({"kind": "tick", "axis": axis, "axis_index": i,
                                   "position": [t for t, _ in ticks], "text": [s for _, s in ticks]}))
    df = pd.concat(parts, ignore_index=True)
    colored = metric[complete] if complete.any() else metric
    lo, hi = float(colored.min()), float(colored.max())
    norm = ("log", lo, hi) if lo > 0 and hi / lo >= 1000 else ("linear", lo, hi if hi > lo else lo + 1e-9)
    n = int(complete.sum())
    partial = f", {len(runs) - n} that did not complete, grey and dashed" if len(runs) > n else ""
    logs = [p for p in params if scales[p] == "log"]
    logs = f" Log scale: {', '.join(logs)}." if logs else ""
    caption = (f"Each line is one run ({C.group_noun(n, 'complete run')}{partial}) across the swept parameters "
               f"({', '.join(params)}) and {data.metric}, coloured by {data.metric}.{logs} {C.runs_sentence(runs)}"
               f"{C.missing_note(G.order_runs(data), runs, states, 'metric value')}")
    df.attrs.update(name=name, title=title, caption=caption, runs=runs, layout="parallel",
                    axes=[*params, data.metric], norm=norm, colorbar_label=metric_label(data), scales=scales)
    return df
