"""Figures: the two lab reports' comparison figures, rebuilt from a sweep's tidy tables.

Every figure is one function, data in (a :class:`analysis.load.SweepData`), a :class:`FigureResult` out:
the matplotlib figure, its title, a caption that says what it shows and which runs it covers, and those runs.

==================  ===========================================================================================
name                what it shows (report 000 = Sénéclauze Bertolo, report 001 = Chi)
==================  ===========================================================================================
tfr_loss            teacher-forcing ratio and training loss per epoch, one panel per TF configuration
                    (000 fig. 5, 001 fig. 1)
tfr_psnr            validation PSNR per epoch with the teacher-forcing ratio, one panel per TF configuration
                    (000 figs. 6-7)
kl_beta_psnr        β and validation PSNR per epoch, one panel per KL annealing configuration (000 figs. 8-11)
kl_psnr             validation PSNR per epoch, one line per KL annealing configuration (000 fig. 12)
kl_loss             training loss per epoch, one line per KL annealing configuration (001 fig. 2)
psnr_per_frame      PSNR of every predicted frame of the validation rollout at each run's last epoch, one line
                    per configuration, "<label>: 26.15 dB average PSNR" (000 fig. 13, 001 fig. 3)
ndim_psnr           validation PSNR per epoch for each N_dim (000 fig. 14)
optimization_history  the metric per trial in trial order with the best so far
param_importances   importances of the swept parameters (fANOVA or PED-ANOVA on an in-memory Optuna study)
parallel_coordinates  one polyline per run across the swept parameters and the metric
==================  ===========================================================================================

:func:`render_compare` draws any per-epoch metric grouped by any parameter. :data:`FIGURES` maps each name
to ``(applicable, render)``; :func:`render_all` renders the applicable ones (or those asked for) to PNG + SVG.

Conventions: configurations are the runs' ``label`` (replicates share it). Where several runs make one line,
the line is their mean per x and the shaded band its 95% t-interval (none where one run contributes).
Runs that did not complete (pruned, failed, running) are drawn dashed and named in the legend ("(pruned)",
"(1 of 2 pruned)"); runs without any data for a figure are named in its caption. Colours are a stable
palette keyed by the naturally sorted labels, so a configuration has one colour in every figure.

Figures are plain :class:`matplotlib.figure.Figure` objects on an Agg canvas (headless whatever the
session's backend; importing this module does not switch it): no pyplot state, no window, nothing to close.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from cvae.analysis.load import SweepData
from cvae.core.config import FLAT_KEYS
from cvae.core.records import BASELINE_TITLES
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, MaxNLocator
from scipy import stats as _stats

__all__ = [
    "FIGURES", "FigureResult", "Importances", "applicable_figures", "palette", "param_importances",
    "render_all", "render_compare", "render_kl_beta_psnr", "render_kl_loss", "render_kl_psnr",
    "render_ndim_psnr", "render_optimization_history", "render_parallel_coordinates",
    "render_param_importances", "render_psnr_per_frame", "render_tfr_loss", "render_tfr_psnr", "save_figure",
]

DPI = 130
WIDTH = 10.0
"""Inches: a figure's width (an HTML report's column at DPI 130 is ~1300 px)."""

TF_KEYS = ("tfr", "tfr_sde", "tfr_d_step")
KL_KEYS = ("kl_anneal_type", "kl_anneal_cycle", "kl_anneal_ratio", "kl_hybrid_switch")
_TF_SHORT = {"tfr": "tfr", "tfr_sde": "sde", "tfr_d_step": "step"}
_KL_SHORT = {"kl_anneal_type": "", "kl_anneal_cycle": "cycle", "kl_anneal_ratio": "ratio",
             "kl_hybrid_switch": "switch"}

LABELS = {
    "train_loss": "training loss", "train_mse": "training MSE", "train_kl": "training KL divergence",
    "train_psnr": "training PSNR (dB)", "val_loss": "validation loss", "val_psnr": "validation PSNR (dB)",
    "beta": "β (KL weight)", "tfr": "teacher-forcing ratio", "tf_fraction": "teacher-forced fraction of batches",
    "lr": "learning rate", "frames_per_s": "training throughput (frames/s)",
    "train_seconds": "training time per epoch (s)", "val_seconds": "validation time per epoch (s)",
    "epoch_seconds": "time per epoch (s)", "psnr": "PSNR (dB)",
}
"""Axis labels of the per-epoch metrics (``epochs`` columns)."""

_NO_EPOCHS = "no epochs recorded"


@dataclass
class FigureResult:
    """One rendered figure: ``name`` is its registry key (and file stem)."""

    name: str
    fig: Figure
    title: str
    caption: str
    runs: list[str]


# -- small helpers -------------------------------------------------------------------------------------------
_REFERENCE_STYLES = {"copy_first": ("--", "0.25"), "mean_frame": (":", "0.45")}
"""The baselines drawn as reference lines (copy_prev, an oracle far above every model, goes in the caption)."""


def _baseline_of_runs(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Each run's value of a per-run constant column (the first recorded)."""
    if frame is None or frame.empty or column not in frame:
        return np.array([])
    values = pd.to_numeric(frame[column], errors="coerce")
    return frame.assign(_v=values).dropna(subset=["_v"]).groupby("run")["_v"].first().to_numpy(dtype=float)


def _references(axes: Sequence, frame: pd.DataFrame, yr: _YRange, *, per_frame: bool = False) -> tuple[list, str]:
    """Draw the trivial predictors' PSNR on PSNR axes: horizontal lines per epoch (``frame``: epochs rows with
    ``val_psnr_copy_first``, ...), or curves per frame (``frame``: frames rows with ``copy_first``, ...).

    Returns the legend handles (one per baseline) and a caption sentence; nothing when the runs recorded no
    baselines (an older sweep, or a source without them).
    """
    handles: list = []
    parts: list[str] = []
    for name, (style, color) in _REFERENCE_STYLES.items():
        column = name if per_frame else f"val_psnr_{name}"
        per_run = _baseline_of_runs(frame, column)
        if per_run.size == 0:
            continue
        label = BASELINE_TITLES[name]
        if per_frame:
            sub = frame.assign(_v=pd.to_numeric(frame[column], errors="coerce")).dropna(subset=["_v"])
            curve = sub.groupby(["run", "frame"])["_v"].first().groupby("frame").mean()
            avg = float(sub.groupby("run")["_v"].mean().mean())
            for ax in axes:
                (line,) = ax.plot(curve.index.to_numpy(dtype=float), curve.to_numpy(dtype=float), ls=style,
                                  color=color, lw=1.1, label=f"{label}: {avg:.2f} dB average PSNR", zorder=1)
            yr.runs.append(curve.to_numpy(dtype=float))
        else:
            avg = float(per_run.mean())
            for ax in axes:
                line = ax.axhline(avg, ls=style, color=color, lw=1.2, label=f"{label}: {avg:.2f} dB", zorder=1)
            yr.runs.append(np.array([avg]))
        line.set_gid(f"baseline:{name}")
        handles.append(line)
        spread = "" if np.ptp(per_run) < 0.005 else (
            f", a mean over the runs' validation videos ({per_run.min():.2f} to {per_run.max():.2f} dB)")
        parts.append(f"{label} ({avg:.2f} dB{spread})")
    if not parts:
        return [], ""
    oracle = _baseline_of_runs(frame, "copy_prev" if per_frame else "val_psnr_copy_prev")
    prev = (f"; copying the previous ground-truth frame, an oracle a rollout cannot use, scores "
            f"{oracle.mean():.2f} dB") if oracle.size else ""
    return handles, (f" Grey reference lines: the trivial predictors on the same validation clips, "
                     f"{' and '.join(parts)}{prev}. A model below copying the first frame has learned nothing.")


def _natural_key(text: str) -> list:
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower()) for tok in re.split(r"(\d+)", str(text))]


def palette(keys: Iterable[str]) -> dict[str, str]:
    """A stable colour per key: the keys naturally sorted (``N_dim=4`` before ``N_dim=12``), then tab10,
    tab20 or an evenly sampled turbo map by how many there are."""
    ordered = sorted(dict.fromkeys(str(k) for k in keys), key=_natural_key)
    n = len(ordered)
    if n <= 10:
        colors = [colormaps["tab10"](i) for i in range(n)]
    elif n <= 20:  # the ten strong colours first, then their light twins
        colors = [colormaps["tab20"](2 * i if i < 10 else 2 * (i - 10) + 1) for i in range(n)]
    else:
        colors = [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]
    return {k: to_hex(c) for k, c in zip(ordered, colors, strict=True)}


def _colors_for(data: SweepData, keys: Iterable[str]) -> dict[str, str]:
    """The labels' palette when every key is a run label (one colour per configuration everywhere)."""
    keys = list(keys)
    labels = set(_labels(data.runs))
    return palette(labels) if keys and set(keys) <= labels else palette(keys)


def _group_colors(data: SweepData, order: Sequence[str], of_run: Mapping[str, str]) -> dict[str, str]:
    """Colours of groups of runs: each group's label colour when every group is exactly one configuration
    (``cyclical`` drawn in the colour of ``kl_anneal_type=cyclical``), else a palette of the group names."""
    labels = dict(zip(_order_runs(data), _labels(data.runs), strict=True))
    per_group = {g: {labels[r] for r, gg in of_run.items() if gg == g and r in labels} for g in order}
    chosen = [next(iter(v)) for v in per_group.values() if len(v) == 1]
    if len(chosen) == len(order) and len(set(chosen)) == len(chosen):
        colors = palette(labels.values())
        return {g: colors[next(iter(per_group[g]))] for g in order}
    return _colors_for(data, order)


def _labels(runs: pd.DataFrame) -> list[str]:
    if "label" not in runs:
        return ["base"] * len(runs)
    return ["base" if _missing(v) else str(v) for v in runs["label"].tolist()]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(isinstance(value, float | np.floating) and math.isnan(value))
    except TypeError:
        return False


def _fmt(value: Any) -> str:
    """A config value as the reports write it: 1.0, 0.05, 10, cyclical."""
    if _missing(value):
        return "—"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return str(value)


def _has(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].notna().any()


def _states(data: SweepData) -> dict[str, str]:
    if "state" not in data.runs:
        return {r: "complete" for r in data.runs["run"]}
    return {r: ("unknown" if _missing(s) else str(s)) for r, s in zip(data.runs["run"], data.runs["state"], strict=True)}


def _run_span(runs: Sequence[str]) -> str:
    """``t0000-t0005, t0008`` for the trial folders, else the names (at most 12)."""
    runs = list(dict.fromkeys(str(r) for r in runs))
    if not runs:
        return "none"
    matches = [re.fullmatch(r"t(\d+)", r) for r in runs]
    if all(matches):
        width = len(matches[0].group(1))
        nums = sorted({int(m.group(1)) for m in matches})
        parts, start, prev = [], nums[0], nums[0]
        for n in [*nums[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            parts.append(f"t{start:0{width}d}" + (f"-t{prev:0{width}d}" if prev > start else ""))
            if n is not None:
                start = prev = n
        return ", ".join(parts)
    shown = sorted(runs, key=_natural_key)
    return ", ".join(shown[:12]) + (f", … ({len(shown)} runs)" if len(shown) > 12 else "")


def _runs_sentence(runs: Sequence[str]) -> str:
    runs = list(runs)
    return f"Run {_run_span(runs)}." if len(runs) == 1 else f"Runs {_run_span(runs)}."


def _partial_suffix(runs: Sequence[str], states: Mapping[str, str]) -> str:
    """``""`` when every run completed, ``" (pruned)"`` when none did, ``" (1 of 2 pruned)"`` in between."""
    partial = [states.get(r, "complete") for r in runs if states.get(r, "complete") != "complete"]
    if not partial:
        return ""
    kinds = ", ".join(dict.fromkeys(partial))
    if len(partial) == len(runs):
        return f" ({kinds})"
    return f" ({len(partial)} of {len(runs)} {kinds})"


def _missing_note(wanted: Sequence[str], drawn: Sequence[str], states: Mapping[str, str], what: str) -> str:
    absent = [r for r in wanted if r not in set(drawn)]
    if not absent:
        return ""
    items = ", ".join(f"{r} ({states.get(r, 'unknown')})" for r in absent)
    return f" No {what} recorded for {items}."


def _stat(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean, 95% t-interval and count of ``y`` per ``x`` over the runs in ``frame`` (one value per run and x)."""
    sub = frame[["run", x, y]].assign(**{y: pd.to_numeric(frame[y], errors="coerce")}).dropna(subset=[y])
    sub = sub.groupby(["run", x], as_index=False)[y].mean()
    g = sub.groupby(x)[y]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).sort_index()
    half = np.full(len(out), np.nan)
    many = out["n"].to_numpy() >= 2
    if many.any():
        n = out["n"].to_numpy()[many]
        half[many] = _stats.t.ppf(0.975, n - 1) * out["std"].to_numpy()[many] / np.sqrt(n)
    out["lo"] = out["mean"] - half
    out["hi"] = out["mean"] + half
    return out


def _draw_mean(ax, st: pd.DataFrame, *, color: str, label: str, dashed: bool, gid: str = "",
               markers: bool = True, lw: float = 1.8) -> Line2D:
    x = st.index.to_numpy(dtype=float)
    (line,) = ax.plot(x, st["mean"].to_numpy(dtype=float), color=color, lw=lw, label=label,
                      ls="--" if dashed else "-", marker="o" if markers and len(x) <= 30 else "", ms=3.5)
    if gid:
        line.set_gid(gid)
    if (st["n"] >= 2).any():
        band = ax.fill_between(x, st["lo"].to_numpy(dtype=float), st["hi"].to_numpy(dtype=float), color=color,
                               alpha=0.18, lw=0, where=(st["n"] >= 2).to_numpy(), interpolate=False)
        band.set_label(f"_ci {label}")
        if gid:
            band.set_gid(f"{gid}:ci")
    return line


def _legend_font(n: int) -> float:
    return 9 if n <= 4 else 8 if n <= 8 else 7 if n <= 14 else 6


def _legend(ax, handles: list, *, below: bool | None = None, ncols: int | None = None) -> None:
    """Inside (best place) for a few entries, else under the axes in columns with a smaller font."""
    handles = [h for h in handles if not h.get_label().startswith("_")]
    if not handles:
        return
    n = len(handles)
    longest = max(len(h.get_label()) for h in handles)
    if below is None:
        below = n > 4 or longest > 40
    if not below:
        ax.legend(handles=handles, loc="best", fontsize=_legend_font(n), framealpha=0.85)
        return
    if ncols is None:
        ncols = 1 if longest > 55 else 2 if longest > 28 else 3
        ncols = max(1, min(ncols, n))
    fig = ax.get_figure()
    if sum(a.get_label() == "panel" for a in fig.axes) == 1:  # the figure's only panel: let the layout place it
        fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=_legend_font(n),
                   frameon=False)
        return
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=ncols,
              fontsize=_legend_font(n), frameon=False, borderaxespad=0.0)


def _panel_legends(fig: Figure, panel_handles: list[tuple[Any, list]]) -> None:
    """One legend under the figure when every panel has the same entries (colours are shared), else one under
    each panel, one column, so a narrow panel keeps its width."""
    if not panel_handles:
        return
    texts = [tuple(h.get_label() for h in handles) for _, handles in panel_handles]
    if len(panel_handles) == 1:
        _legend(panel_handles[0][0], panel_handles[0][1])
        return
    if all(t == texts[0] for t in texts) and texts[0]:
        handles = panel_handles[0][1]
        n = len(handles)
        longest = max(len(t) for t in texts[0])
        ncols = max(1, min(n, 4 if longest <= 24 else 3 if longest <= 34 else 2 if longest <= 60 else 1))
        fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=_legend_font(n),
                   frameon=False)
        return
    for ax, handles in panel_handles:
        _legend(ax, handles, below=True, ncols=1)


def _new_figure(n_panels: int, *, width: float = WIDTH, row_height: float = 3.6, max_cols: int = 3):
    ncols = max(1, min(n_panels, max_cols))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(width, row_height * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for extra in axes[n_panels:]:
        fig.delaxes(extra)
    axes = axes[:n_panels]
    for ax in axes:
        ax.set_label("panel")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    return fig, axes


def _message_figure(name: str, title: str, message: str, caption: str, runs: Sequence[str] = ()) -> FigureResult:
    """A figure that says why there is nothing to draw (no runs, a metric this source lacks)."""
    fig = Figure(figsize=(8, 2.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_label("message")
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, color="0.35", wrap=True,
            transform=ax.transAxes)
    fig.suptitle(title)
    return FigureResult(name, fig, title, caption, list(runs))


def _empty_result(name: str, title: str, data: SweepData) -> FigureResult:
    return _message_figure(name, title, "no runs", f"No runs in {data.name}: nothing to plot.")


def _maybe_log(axes: Sequence, values: np.ndarray) -> bool:
    """Log y when the positive values span two decades or more (β·KL can dwarf the MSE)."""
    values = values[np.isfinite(values)]
    if values.size == 0 or (values <= 0).any() or values.max() / values.min() < 100:
        return False
    for ax in axes:
        ax.set_yscale("log")
    return True


class _YRange:
    """The y-range of what the runs recorded; a CI band reaching beyond it is cut at the axes (with two
    replicates t(0.975, 1) = 12.7 makes bands that would otherwise flatten every line)."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []
        self.bands: list[np.ndarray] = []

    def add(self, run_values: Any, st: pd.DataFrame) -> None:
        self.runs.append(np.asarray(run_values, dtype=float))
        self.bands.append(st[["lo", "hi"]].to_numpy(dtype=float).ravel())

    def apply(self, axes: Sequence, *, log_ok: bool) -> tuple[bool, bool]:
        """Set the limits (and a log scale when allowed and needed); returns (log, some band was cut)."""
        values = np.concatenate(self.runs) if self.runs else np.array([])
        values = values[np.isfinite(values)]
        if values.size == 0:
            return False, False
        log = log_ok and _maybe_log(axes, values)
        lo, hi = values.min(), values.max()
        if log:
            low, high = lo / 1.5, hi * 1.5
        else:
            pad = 0.06 * (hi - lo or abs(hi) or 1.0)
            low, high = lo - pad, hi + pad
        for ax in axes:
            ax.set_ylim(low, high)
        bands = np.concatenate(self.bands) if self.bands else np.array([])
        bands = bands[np.isfinite(bands)]
        return log, bool(bands.size and (bands.min() < low or bands.max() > high))


_CUT_NOTE = " CI bands reaching beyond the runs' range are cut at the axes."
_LOG_NOTE = " Log y-scale: the values span decades (β·KL can dwarf the MSE)."


def _order_runs(data: SweepData) -> list[str]:
    return [str(r) for r in data.runs["run"].tolist()]


def _group_noun(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _counts_text(groups: Mapping[str, Sequence[str]], pooled: Sequence[str], labels: Mapping[str, str]) -> str:
    """``2 replicates each``, ``4 runs each, pooled over tfr, N_dim``, ``1-3 runs each``."""
    sizes = [len(v) for v in groups.values() if v]
    if not sizes:
        return "no runs"
    size = f"{sizes[0]}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
    replicates_only = all(len({labels.get(r) for r in v}) <= 1 for v in groups.values())
    if max(sizes) == 1:
        text = "1 run each"
    elif replicates_only:
        text = f"{size} replicates each"
    else:
        text = f"{size} runs each"
    if pooled and not replicates_only:
        text += f", pooled over {', '.join(pooled)}"
    if max(sizes) > 1:
        text += "; shaded: 95% CI of the mean"
    return text


# -- schedule configurations (teacher forcing, KL annealing) ---------------------------------------------------
@dataclass
class _Groups:
    """Runs split into schedule configurations."""

    of_run: dict[str, str]
    order: list[str]
    settings: dict[str, str]
    absorbed: set[str]
    named: bool


def _choice_sets(data: SweepData, param: str, keys: Sequence[str]) -> bool | None:
    """Whether the spec's ``sets`` of a named choice touch ``keys``; None when the spec does not say."""
    spec_param = ((data.spec or {}).get("parameters") or {}).get(param)
    if isinstance(spec_param, dict) and isinstance(spec_param.get("sets"), dict):
        return any(isinstance(v, dict) and bool(set(v) & set(keys)) for v in spec_param["sets"].values())
    return None


def _schedule_groups(data: SweepData, keys: Sequence[str], kind: str) -> _Groups:
    """TF (``kind="tf"``) or KL (``"kl"``) configurations: distinct resolved ``keys``, or a named choice
    (``TF1``; from the spec's ``sets``, else from how the resolved columns follow it, else from its name when the
    source has no resolved columns, as an Optuna study has not)."""
    runs = data.runs
    names = [str(r) for r in runs["run"].tolist()]
    cols = [k for k in keys if k in runs.columns and runs[k].notna().any()]
    varying_cols = [k for k in cols if runs[k].astype(str).nunique() > 1]
    choices = []
    for p in data.params:
        if p in FLAT_KEYS or p not in runs.columns:
            continue
        says = _choice_sets(data, p, keys)
        if says is None:
            if varying_cols:
                pairs = runs[[p, *varying_cols]].astype(str).drop_duplicates()
                says = pairs[p].is_unique and len(pairs) > 1
            elif not cols:
                pattern = r"(^|_)(tf|teacher)" if kind == "tf" else r"(^|_)(kl|anneal|beta)"
                says = re.search(pattern, p.lower()) is not None
            else:
                says = False
        if says:
            choices.append(p)
    short = _TF_SHORT if kind == "tf" else _KL_SHORT

    shown_cols = cols if kind == "tf" else [k for k in cols if k in varying_cols or k == "kl_anneal_type"]

    def settings_of(i: int) -> str:
        parts = []
        for k in shown_cols:
            v = runs[k].iloc[i]
            parts.append(f"{short[k]}={_fmt(v)}" if short[k] else _fmt(v))
        return ", ".join(parts)

    of_run, order, settings = {}, [], {}
    for i, run in enumerate(names):
        if choices:
            title = ", ".join(_fmt(runs[c].iloc[i]) for c in choices)
        elif kind == "tf":
            title = settings_of(i) if cols else "all runs"
        elif cols:
            title = settings_of(i)
        else:
            title = "all runs"
        of_run[run] = title
        if title not in settings:
            order.append(title)
            settings[title] = settings_of(i)
    return _Groups(of_run, order, settings, set(keys) | set(choices), bool(choices))


def _sublabels(data: SweepData, absorbed: set[str]) -> dict[str, str]:
    """Each run's label without the absorbed parameters (the loader's format: ``TF1``, ``N_dim=12``)."""
    runs = data.runs
    others = [p for p in data.params if p not in absorbed and p in runs.columns]
    columns = {p: runs[p].tolist() for p in others}
    out = {}
    for i, run in enumerate(runs["run"].tolist()):
        parts = []
        for p in others:
            v = columns[p][i]
            if _missing(v):
                continue
            parts.append(str(v) if p not in FLAT_KEYS else f"{p}={v}")
        out[str(run)] = ", ".join(parts)
    return out


def _tf_groups(data: SweepData) -> _Groups:
    return _schedule_groups(data, TF_KEYS, "tf")


def _kl_groups(data: SweepData) -> _Groups:
    return _schedule_groups(data, KL_KEYS, "kl")


def _unplottable(data: SweepData, name: str, title: str, y: str) -> FigureResult | None:
    """The figure to return instead when there are no runs or no per-epoch ``y``; None when plottable."""
    if data.is_empty():
        return _empty_result(name, title, data)
    if not _has(data.epochs, y):
        return _message_figure(name, title, f"no {LABELS.get(y, y)} per epoch in this source",
                               f"The source ({data.source or data.name}) records no per-epoch {y}: nothing to plot.")
    return None


# -- panel figures: a metric per epoch with its schedule on a twin axis -----------------------------------------
def _schedule_panels(data: SweepData, groups: _Groups, *, name: str, title: str, y: str, sched: str,
                     group_noun: str, what: str) -> FigureResult:
    unplottable = _unplottable(data, name, title, y)
    if unplottable is not None:
        return unplottable
    ep = data.epochs
    states = _states(data)
    has_sched = _has(ep, sched)
    subl = _sublabels(data, groups.absorbed)
    all_sub = [s for s in dict.fromkeys(subl[r] for r in _order_runs(data))]
    sub_colors = _colors_for(data, [s for s in all_sub if s]) if any(all_sub) else {}
    group_colors = _group_colors(data, groups.order, groups.of_run)
    fig, axes = _new_figure(len(groups.order), row_height=3.4)
    ref_note = ""
    drawn: list[str] = []
    yr = _YRange()
    panel_handles = []
    cell_sizes = [1]
    multi_curve = False
    for ax, group in zip(axes, groups.order, strict=True):
        runs = [r for r in _order_runs(data) if groups.of_run[r] == group]
        ax.set_title(group, fontsize=11)
        ax.set_xlabel("epoch")
        ax.set_ylabel(LABELS.get(y, y))
        by_sub: dict[str, list[str]] = {}
        for r in runs:
            by_sub.setdefault(subl[r], []).append(r)
        handles = []
        sched_curves: list[tuple[str, str, pd.DataFrame]] = []
        for sub, members in by_sub.items():
            frame = ep[ep["run"].isin(members)]
            st = _stat(frame, "epoch", y)
            used = [r for r in members if r in set(frame.dropna(subset=[y])["run"])]
            if st.empty:
                continue
            drawn += used
            cell_sizes.append(len(used))
            yr.add(frame[y], st)
            color = sub_colors.get(sub) or group_colors.get(group, "C0")
            text = (sub or LABELS.get(y, y)) + _partial_suffix(used, states)
            handles.append(_draw_mean(ax, st, color=color, label=text, dashed=bool(_partial_suffix(used, states)),
                                      gid=f"{group}|{sub}"))
            if has_sched:
                s = _stat(frame, "epoch", sched)
                if not s.empty:
                    sched_curves.append((sub, color, s))
        if has_sched and sched_curves:
            twin = ax.twinx()
            twin.set_label("twin")
            ax.set_zorder(twin.get_zorder() + 1)  # data lines above the schedule
            ax.patch.set_visible(False)
            first = sched_curves[0][2]["mean"]
            same = all(c["mean"].index.equals(first.index) and np.allclose(c["mean"], first, equal_nan=True)
                       for _, _, c in sched_curves)
            curves = sched_curves[:1] if same else sched_curves
            multi_curve |= not same
            for sub, color, s in curves:
                label = LABELS.get(sched, sched) + ("" if same or not sub else f" ({sub})")
                (line,) = twin.plot(s.index.to_numpy(dtype=float), s["mean"].to_numpy(dtype=float),
                                    color="0.25" if same else color, lw=2.6 if same else 1.4, alpha=0.45,
                                    ls="-" if same else "-.", marker="s", ms=3, label=label)
                line.set_gid(f"{group}|{sched}")
                handles.append(line)
            twin.set_ylabel(LABELS.get(sched, sched), color="0.3")
            values = np.concatenate([c[2]["mean"].to_numpy(dtype=float) for c in curves])
            if np.nanmin(values) >= 0 and np.nanmax(values) <= 1:
                twin.set_ylim(-0.05, 1.05)
        if y == "val_psnr":
            refs, ref_note = _references([ax], ep[ep["run"].isin(runs)], yr)
            handles += refs
        panel_handles.append((ax, handles))
    _panel_legends(fig, panel_handles)
    log, cut = yr.apply(axes, log_ok=y != "val_psnr")
    fig.suptitle(title)
    wanted = _order_runs(data)
    settings = ""
    if groups.named:
        settings = " Configurations: " + "; ".join(f"{g}: {groups.settings[g]}" for g in groups.order
                                                    if groups.settings.get(g)) + "."
        if settings == " Configurations: .":
            settings = ""
    extra = max(cell_sizes)
    lines = (" Within a panel one line per other configuration"
             + (" (mean over its replicates; shaded: 95% CI)." if extra > 1 else ".")) if any(all_sub) else (
        " Mean over the panel's replicates; shaded: 95% CI." if extra > 1 else "")
    sched_note = "" if has_sched else f" No per-epoch {sched} in this source: the schedule is not drawn."
    if multi_curve:
        sched_note += " The schedule differs between a panel's configurations: one dash-dotted curve each."
    caption = (f"{what}, one panel per {group_noun} ({_group_noun(len(groups.order), 'configuration')})."
               f"{settings}{lines}{sched_note}{ref_note}{_LOG_NOTE if log else ''}{_CUT_NOTE if cut else ''}"
               f" {_runs_sentence(list(dict.fromkeys(drawn)))}"
               f"{_missing_note(wanted, drawn, states, y)}")
    return FigureResult(name, fig, title, caption, list(dict.fromkeys(drawn)))


def render_tfr_loss(data: SweepData) -> FigureResult:
    """Teacher-forcing ratio and training loss per epoch, one panel per TF configuration (report 000 fig. 5,
    report 001 fig. 1)."""
    return _schedule_panels(data, _tf_groups(data), name="tfr_loss",
                            title="Teacher-forcing ratio and training loss per epoch", y="train_loss", sched="tfr",
                            group_noun="teacher-forcing configuration",
                            what="Training loss (left axis) and teacher-forcing ratio (right axis, grey) per epoch")


def render_tfr_psnr(data: SweepData) -> FigureResult:
    """Validation PSNR per epoch with the teacher-forcing ratio, one panel per TF configuration (report 000
    figs. 6-7)."""
    return _schedule_panels(data, _tf_groups(data), name="tfr_psnr",
                            title="Validation PSNR and teacher-forcing ratio per epoch", y="val_psnr", sched="tfr",
                            group_noun="teacher-forcing configuration",
                            what="Validation PSNR (left axis, dB) and teacher-forcing ratio (right axis, grey) "
                                 "per epoch")


def render_kl_beta_psnr(data: SweepData) -> FigureResult:
    """β (the KL weight) and validation PSNR per epoch, one panel per KL annealing configuration (report 000
    figs. 8-11)."""
    return _schedule_panels(data, _kl_groups(data), name="kl_beta_psnr",
                            title="KL annealing: β and validation PSNR per epoch", y="val_psnr", sched="beta",
                            group_noun="KL annealing configuration",
                            what="Validation PSNR (left axis, dB) and β, the KL weight (right axis, grey), per epoch")


# -- single-panel comparisons ----------------------------------------------------------------------------------
def _grouped_lines(data: SweepData, of_run: Mapping[str, str], order: Sequence[str], *, name: str, title: str,
                   y: str, noun: str, what: str, pooled: Sequence[str], legend_title: str | None = None,
                   log_ok: bool = False) -> FigureResult:
    """One line per group (mean over its runs per epoch, 95% CI band when several)."""
    unplottable = _unplottable(data, name, title, y)
    if unplottable is not None:
        return unplottable
    ep = data.epochs
    states = _states(data)
    fig, (ax,) = _new_figure(1, width=WIDTH, row_height=4.6)
    colors = _group_colors(data, order, of_run)
    labels = dict(zip(_order_runs(data), _labels(data.runs), strict=True))
    members_of = {g: [r for r in _order_runs(data) if of_run.get(r) == g] for g in order}
    handles, drawn, used_of, yr = [], [], {}, _YRange()
    for g in order:
        members = members_of[g]
        frame = ep[ep["run"].isin(members)]
        st = _stat(frame, "epoch", y)
        if st.empty:
            continue
        used = [r for r in members if r in set(frame.dropna(subset=[y])["run"])]
        used_of[g] = used
        drawn += used
        yr.add(frame[y], st)
        suffix = _partial_suffix(used, states)
        handles.append(_draw_mean(ax, st, color=colors[g], label=f"{g}{suffix}", dashed=bool(suffix), gid=g))
    ref_note = ""
    if y == "val_psnr":
        refs, ref_note = _references([ax], ep[ep["run"].isin(drawn)], yr)
        handles += refs
        log_ok = False
    log, cut = yr.apply([ax], log_ok=log_ok)
    ax.set_xlabel("epoch")
    ax.set_ylabel(LABELS.get(y, y))
    ax.set_title(title)
    _legend(ax, handles, below=len(handles) > 6 or max((len(h.get_label()) for h in handles), default=0) > 40)
    if legend_title and ax.get_legend() is not None:
        ax.get_legend().set_title(legend_title, prop={"size": _legend_font(len(handles))})
    caption = (f"{what}, one line per {noun} ({_group_noun(len(used_of), 'configuration')}, "
               f"{_counts_text(used_of, pooled, labels)}).{ref_note}"
               f"{_LOG_NOTE if log else ''}{_CUT_NOTE if cut else ''}"
               f" {_runs_sentence(drawn)}{_missing_note(_order_runs(data), drawn, states, y)}")
    return FigureResult(name, fig, title, caption, drawn)


def _pooled_over(data: SweepData, absorbed: set[str]) -> list[str]:
    return [p for p in data.params if p not in absorbed]


def render_kl_psnr(data: SweepData) -> FigureResult:
    """Validation PSNR per epoch, one line per KL annealing configuration (report 000 fig. 12)."""
    g = _kl_groups(data)
    return _grouped_lines(data, g.of_run, g.order, name="kl_psnr", title="Validation PSNR per epoch by KL annealing",
                          y="val_psnr", noun="KL annealing configuration",
                          what="Validation PSNR per epoch", pooled=_pooled_over(data, g.absorbed))


def render_kl_loss(data: SweepData) -> FigureResult:
    """Training loss per epoch, one line per KL annealing configuration (report 001 fig. 2); log y-scale when
    the losses span decades."""
    g = _kl_groups(data)
    return _grouped_lines(data, g.of_run, g.order, name="kl_loss", title="Training loss per epoch by KL annealing",
                          y="train_loss", noun="KL annealing configuration", what="Training loss (MSE + β·KL) per epoch",
                          pooled=_pooled_over(data, g.absorbed), log_ok=True)


def _value_groups(data: SweepData, param: str) -> tuple[dict[str, str], list[str]]:
    """Runs by the value of ``param``: ``N_dim=12`` for a training key, the value itself for a named choice."""
    runs = data.runs
    col = runs[param]
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)

    def text(v: Any) -> str:
        return f"{param}={_fmt(v)}" if param in FLAT_KEYS else _fmt(v)

    of_run = {str(r): text(v) for r, v in zip(runs["run"], col, strict=True)}
    values = list(dict.fromkeys(v for v in col.tolist()))
    if numeric:
        values = sorted(values, key=lambda v: (math.isnan(v), v if not math.isnan(v) else 0))
    order = list(dict.fromkeys(text(v) for v in values))
    return of_run, order


def render_ndim_psnr(data: SweepData) -> FigureResult:
    """Validation PSNR per epoch for each noise size N_dim (report 000 fig. 14)."""
    title = "Validation PSNR per epoch by noise size N_dim"
    if data.is_empty():
        return _empty_result("ndim_psnr", title, data)
    if "N_dim" not in data.runs:
        return _message_figure("ndim_psnr", title, "N_dim is not known for these runs",
                               "The source records no N_dim: nothing to compare.")
    of_run, order = _value_groups(data, "N_dim")
    return _grouped_lines(data, of_run, order, name="ndim_psnr", title=title, y="val_psnr", noun="N_dim",
                          what="Validation PSNR per epoch for each noise size N_dim",
                          pooled=_pooled_over(data, {"N_dim"}))


def render_compare(data: SweepData, param: str, y: str) -> FigureResult:
    """Any per-epoch metric ``y`` (an ``epochs`` column) grouped by any ``param`` (a ``runs`` column): one line
    per value, the mean over the runs sharing it with a 95% CI band.

    Raises:
        ValueError: ``param`` is not a column of the runs or ``y`` not a numeric column of the epochs; the
            message lists the valid names.
    """
    runs_cols = [c for c in data.runs.columns if c != "run"]
    if param not in data.runs.columns or param == "run":
        swept = ", ".join(data.params) or "none"
        others = ", ".join(sorted(c for c in runs_cols if c not in data.params))
        raise ValueError(f"unknown parameter {param!r}: not a column of the runs; swept parameters: {swept}; "
                         f"other columns: {others}")
    metrics = [c for c in data.epochs.columns if c not in ("run", "epoch")
               and pd.api.types.is_numeric_dtype(data.epochs[c])]
    if y not in metrics:
        raise ValueError(f"unknown metric {y!r}: not a numeric column of the per-epoch records; valid metrics: "
                         f"{', '.join(metrics) or 'none (no per-epoch records)'}")
    title = f"{LABELS.get(y, y)[:1].upper()}{LABELS.get(y, y)[1:]} per epoch by {param}"
    name = f"compare_{param}_{y}"
    if data.is_empty():
        return _empty_result(name, title, data)
    of_run, order = _value_groups(data, param)
    return _grouped_lines(data, of_run, order, name=name, title=title, y=y, noun=f"value of {param}",
                          what=f"{LABELS.get(y, y)[:1].upper()}{LABELS.get(y, y)[1:]} per epoch",
                          pooled=_pooled_over(data, {param}), log_ok=True)


def render_psnr_per_frame(data: SweepData) -> FigureResult:
    """PSNR of every predicted frame of the validation rollout at each run's last recorded epoch, one line per
    configuration, with "<label>: 26.15 dB average PSNR" in the legend (report 000 fig. 13, report 001 fig. 3)."""
    name, title = "psnr_per_frame", "PSNR per frame of the validation rollout (last epoch)"
    if data.is_empty():
        return _empty_result(name, title, data)
    fr = data.frames
    states = _states(data)
    if fr is None or fr.empty or not _has(fr, "psnr"):
        return _message_figure(name, title, "no per-frame PSNR in this source",
                               f"The source ({data.source or data.name}) records no per-frame PSNR: nothing to plot.")
    fr = fr.dropna(subset=["psnr"])
    last = fr.groupby("run")["epoch"].transform("max")
    fr = fr[fr["epoch"] == last]
    last_epoch = fr.groupby("run")["epoch"].max()
    runs = _order_runs(data)
    labels = dict(zip(runs, _labels(data.runs), strict=True))
    order = list(dict.fromkeys(labels[r] for r in runs))
    colors = _colors_for(data, order)
    n_frames = fr.groupby("run")["frame"].nunique()
    fig, (ax,) = _new_figure(1, width=WIDTH, row_height=4.6)
    handles, drawn, used_of, yr = [], [], {}, _YRange()
    for label in order:
        members = [r for r in runs if labels[r] == label and r in last_epoch.index]
        if not members:
            continue
        frame = fr[fr["run"].isin(members)]
        st = _stat(frame, "frame", "psnr")
        used_of[label] = members
        drawn += members
        average = float(np.mean([frame.loc[frame["run"] == r, "psnr"].mean() for r in members]))
        suffix = _partial_suffix(members, states)
        line = _draw_mean(ax, st, color=colors[label], label=f"{label}{suffix}: {average:.2f} dB average PSNR",
                          dashed=bool(suffix), gid=label, markers=False, lw=1.3)
        handles.append(line)
        yr.add(frame["psnr"], st)
    refs, ref_note = _references([ax], fr[fr["run"].isin(drawn)], yr, per_frame=True)
    handles += refs
    _, cut = yr.apply([ax], log_ok=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10, steps=[1, 2, 5, 10]))
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    _legend(ax, handles, below=len(handles) > 4 or max((len(h.get_label()) for h in handles), default=0) > 45)
    epochs_used = sorted({int(last_epoch[r]) for r in drawn})
    epochs_text = (f"epoch {epochs_used[0]}" if len(epochs_used) == 1
                   else f"epochs {epochs_used[0]}-{epochs_used[-1]}")
    frames_text = (f"{int(n_frames.max())} predicted frames" if len(n_frames) else "frames")
    labels_by_run = labels
    caption = (f"PSNR of each of the {frames_text} of the validation rollout at each run's last recorded epoch "
               f"({epochs_text}), one line per configuration ({_group_noun(len(used_of), 'configuration')}, "
               f"{_counts_text(used_of, (), labels_by_run)}); the legend gives each configuration's average over "
               f"frames{' and replicates' if any(len(v) > 1 for v in used_of.values()) else ''}.{ref_note}"
               f"{_CUT_NOTE if cut else ''} "
               f"{_runs_sentence(drawn)}{_missing_note(runs, drawn, states, 'per-frame PSNR')}")
    return FigureResult(name, fig, title, caption, drawn)


# -- sweep-level figures ---------------------------------------------------------------------------------------
def _metric_label(data: SweepData) -> str:
    return LABELS.get(data.metric_field, data.metric)


def _values(data: SweepData) -> pd.Series:
    if "value" not in data.runs:
        return pd.Series(np.nan, index=data.runs.index)
    return pd.to_numeric(data.runs["value"], errors="coerce")


def _trial_order(data: SweepData) -> np.ndarray:
    trial = pd.to_numeric(data.runs["trial"], errors="coerce") if "trial" in data.runs else None
    if trial is None or trial.isna().all():
        return np.arange(len(data.runs), dtype=float)
    return trial.to_numpy(dtype=float)


def render_optimization_history(data: SweepData) -> FigureResult:
    """The metric of every run in trial order, with the best so far over the complete runs (Optuna's
    optimization history; replicates are separate trials)."""
    name = "optimization_history"
    title = f"Optimization history: {data.metric} per trial"
    if data.is_empty():
        return _empty_result(name, title, data)
    runs = _order_runs(data)
    states = _states(data)
    x = _trial_order(data)
    v = _values(data).to_numpy(dtype=float)
    complete = np.array([states[r] == "complete" for r in runs]) & np.isfinite(v)
    partial = np.array([states[r] != "complete" for r in runs]) & np.isfinite(v)
    fig, (ax,) = _new_figure(1, width=9.0, row_height=4.2)
    handles = []
    if complete.any():
        (h,) = ax.plot(x[complete], v[complete], "o", color="C0", ms=6, label="complete run")
        handles.append(h)
        idx = np.argsort(x[complete], kind="stable")
        xs, vs = x[complete][idx], v[complete][idx]
        best = np.maximum.accumulate(vs) if data.goal == "maximize" else np.minimum.accumulate(vs)
        (h,) = ax.plot(xs, best, color="C3", lw=1.8, drawstyle="steps-post", label="best so far")
        handles.append(h)
    for state in dict.fromkeys(states[r] for r, p in zip(runs, partial, strict=True) if p):
        mask = partial & np.array([states[r] == state for r in runs])
        (h,) = ax.plot(x[mask], v[mask], "x", color="0.45", ms=7, mew=1.5, label=f"{state} run")
        handles.append(h)
    ref_note = ""
    if data.metric_field == "val_psnr":
        refs, ref_note = _references([ax], data.epochs, _YRange())
        handles += refs
    ax.set_xlabel("trial number")
    ax.set_ylabel(_metric_label(data))
    ax.set_title(title)
    _legend(ax, handles, below=False)
    drawn = [r for r, c, p in zip(runs, complete, partial, strict=True) if c or p]
    best_text = ""
    if complete.any():
        i = int(np.nanargmax(np.where(complete, v, -np.inf)) if data.goal == "maximize"
                else np.nanargmin(np.where(complete, v, np.inf)))
        best_text = f" Best: {v[i]:.4g} ({runs[i]}, {_labels(data.runs)[i]})."
    caption = (f"{data.metric} ({data.goal}) of each run by trial number, with the best so far over the "
               f"{_group_noun(int(complete.sum()), 'complete run')}{'; crosses: runs that did not complete' if partial.any() else ''}."
               f"{best_text}{ref_note} {_runs_sentence(drawn)}"
               f"{_missing_note(runs, drawn, states, 'metric value')}")
    return FigureResult(name, fig, title, caption, drawn)


MIN_IMPORTANCE_RUNS = 4
"""Complete runs (with a metric value) below which importances are noise and not computed."""


class Importances(dict):
    """Parameter -> importance (sums to 1, most important first).

    ``reason`` says why it is empty; ``method`` how it was computed; ``n_runs`` the complete runs it used;
    ``left_out`` the swept parameters missing in some of them (conditional ones)."""

    def __init__(self, values: Mapping[str, float] | None = None, *, reason: str = "", n_runs: int = 0,
                 left_out: Sequence[str] = (), method: str = ""):
        super().__init__(values or {})
        self.reason = reason
        self.n_runs = n_runs
        self.left_out = list(left_out)
        self.method = method


def _complete_with_values(data: SweepData) -> pd.DataFrame:
    runs = data.runs
    if runs.empty or "state" not in runs:
        return runs.iloc[0:0]
    v = _values(data)
    return runs[(runs["state"] == "complete") & np.isfinite(v.to_numpy(dtype=float))].assign(value=v)


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _importance_inputs(data: SweepData) -> tuple[pd.DataFrame, list[str], list[str], str]:
    """(complete runs with a value, the varying swept parameters, those left out, why not computable or "")."""
    ok = _complete_with_values(data)
    if len(ok) < MIN_IMPORTANCE_RUNS:
        return ok, [], [], (f"{len(ok)} complete run(s) with a {data.metric} value: importances need at least "
                            f"{MIN_IMPORTANCE_RUNS}")
    params = [p for p in data.params if p in ok.columns]
    left_out = [p for p in params if ok[p].isna().any()]
    varying = [p for p in params if p not in left_out and ok[p].astype(str).nunique() > 1]
    if len(varying) < 2:
        what = (f"only {varying[0]} varies" if varying else "no swept parameter varies")
        return ok, varying, left_out, (f"{what} among the {len(ok)} complete runs: a single parameter's "
                                       f"importance is 1 by definition" if varying else
                                       f"{what} among the {len(ok)} complete runs")
    if ok["value"].nunique() < 2:
        return ok, varying, left_out, f"{data.metric} is the same for every complete run"
    return ok, varying, left_out, ""


def _evaluator(n_runs: int, seed: int) -> tuple[Any, str]:
    """fANOVA (Optuna's default) when scikit-learn is installed, else PED-ANOVA (no extra package), aimed at
    the top quantile that holds about 5 runs (Optuna's advice), between 10% and 50%."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    try:
        import sklearn  # noqa: F401
    except ImportError:
        q = min(0.5, max(0.1, 5 / n_runs))
        return (PedAnovaImportanceEvaluator(target_quantile=q, evaluate_on_local=False),
                f"PED-ANOVA: how much each parameter matters to reach the top {q:.0%} of the metric")
    return FanovaImportanceEvaluator(seed=seed), "fANOVA: each parameter's share of the metric's variance"


def param_importances(data: SweepData, *, seed: int = 0) -> Importances:
    """Importances of the swept parameters for the sweep's metric, from the complete runs alone.

    No Optuna storage is needed: an in-memory study is rebuilt from ``runs`` (one trial per complete run, so
    replicates count separately; categorical distributions for text and booleans, int/float ranges from the
    observed min and max for numbers) and :func:`optuna.importance.get_param_importances` is fitted on it,
    with fANOVA when scikit-learn is installed, else PED-ANOVA (see :func:`_evaluator`; ``.method`` says
    which). Parameters missing in some complete runs (conditional ones) are left out (``.left_out``).

    Empty, with ``.reason`` set, when fewer than :data:`MIN_IMPORTANCE_RUNS` complete runs have a value, fewer
    than two swept parameters vary among them (one parameter's importance is 1 by definition), the metric is
    the same for all, or the fit fails.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.importance import get_param_importances
    from optuna.trial import create_trial

    ok, varying, left_out, reason = _importance_inputs(data)
    if reason:
        return Importances(reason=reason, n_runs=len(ok), left_out=left_out)
    dists: dict[str, Any] = {}
    convert: dict[str, Callable[[Any], Any]] = {}
    for p in varying:
        values = [_python(v) for v in ok[p].tolist()]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            low, high = min(values), max(values)
            log = low > 0 and high / low >= 100
            if all(isinstance(v, int) for v in values):
                dists[p], convert[p] = IntDistribution(int(low), int(high), log=log), int
            else:
                dists[p], convert[p] = FloatDistribution(float(low), float(high), log=log), float
        elif all(isinstance(v, bool) for v in values):
            dists[p], convert[p] = CategoricalDistribution(sorted(set(values))), bool
        else:
            dists[p] = CategoricalDistribution(sorted({str(v) for v in values}, key=_natural_key))
            convert[p] = str
    evaluator, method = _evaluator(len(ok), seed)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(direction="maximize" if data.goal == "maximize" else "minimize")
            for _, row in ok.iterrows():
                study.add_trial(create_trial(params={p: convert[p](_python(row[p])) for p in varying},
                                             distributions=dists, value=float(row["value"])))
            result = get_param_importances(study, evaluator=evaluator)
    except Exception as err:  # noqa: BLE001 - a fit that fails is a figure that says why
        return Importances(reason=f"the importance fit failed ({type(err).__name__}: {err})", n_runs=len(ok),
                           left_out=left_out, method=method)
    finally:
        optuna.logging.set_verbosity(level)
    ordered = dict(sorted(((k, float(v)) for k, v in result.items()), key=lambda kv: -kv[1]))
    return Importances(ordered, n_runs=len(ok), left_out=left_out, method=method)


def render_param_importances(importances: Mapping[str, float], *, metric: str = "val/psnr", reason: str = "",
                             runs: Sequence[str] = (), name: str = "param_importances") -> FigureResult:
    """A horizontal bar chart of ``importances`` (most important on top); with none, a figure saying ``reason``
    (taken from an :class:`Importances` when not given)."""
    title = f"Parameter importances for {metric}"
    reason = reason or getattr(importances, "reason", "")
    if not importances:
        return _message_figure(name, title, f"no importances: {reason or 'nothing to rank'}",
                               f"Parameter importances could not be computed: {reason or 'nothing to rank'}.",
                               runs)
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(8.5, 1.6 + 0.45 * len(items)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_label("panel")
    bars = ax.barh([k for k, _ in items], [v for _, v in items], color="C0", height=0.6)
    for bar, (_, v) in zip(bars, items, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, max(1.0, max(v for _, v in items)) * 1.08)
    method = getattr(importances, "method", "")
    ax.set_xlabel(f"importance ({method.split(':')[0]}, normalized to sum to 1)" if method
                  else "importance (normalized to sum to 1)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    n = getattr(importances, "n_runs", 0) or len(runs)
    left = getattr(importances, "left_out", [])
    caption = (f"Importance of each varying swept parameter for {metric}"
               f"{' (' + method + ')' if method else ''}, from {_group_noun(n, 'complete run')}; the values sum "
               f"to 1.{' Left out (missing in some runs): ' + ', '.join(left) + '.' if left else ''}"
               f"{' ' + _runs_sentence(runs) if runs else ''}")
    return FigureResult(name, fig, title, caption, list(runs))


def _render_importances(data: SweepData) -> FigureResult:
    if data.is_empty():
        return _empty_result("param_importances", f"Parameter importances for {data.metric}", data)
    imp = param_importances(data)
    ok = _complete_with_values(data)
    return render_param_importances(imp, metric=data.metric, runs=[str(r) for r in ok["run"]])


def render_parallel_coordinates(data: SweepData) -> FigureResult:
    """One polyline per run with a metric value across the swept parameters and the metric; categorical axes
    at evenly spaced positions with their values as tick labels; complete runs coloured by the metric (colour
    bar), the others grey and dashed."""
    name = "parallel_coordinates"
    title = f"Parallel coordinates: swept parameters and {data.metric}"
    if data.is_empty():
        return _empty_result(name, title, data)
    runs_df = data.runs
    states = _states(data)
    v = _values(data)
    keep = np.isfinite(v.to_numpy(dtype=float))
    sub = runs_df[keep].assign(value=v[keep])
    params = [p for p in data.params if p in runs_df.columns]
    if sub.empty or not params:
        why = "no run has a metric value" if sub.empty else "no swept parameter varies"
        return _message_figure(name, title, why, f"Nothing to draw: {why}.")
    axes_names = [*params, "value"]
    positions: dict[str, np.ndarray] = {}
    ticks: dict[str, list[tuple[float, str]]] = {}
    for p in axes_names:
        col = sub[p]
        vals = [_python(x) for x in col.tolist()]
        present = [x for x in vals if not _missing(x)]
        numeric = bool(present) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in present)
        if numeric:
            arr = np.array([np.nan if _missing(x) else float(x) for x in vals])
            lo, hi = np.nanmin(arr), np.nanmax(arr)
            log = lo > 0 and hi / lo >= 100
            f = np.log10 if log else (lambda a: a)
            span = f(hi) - f(lo)
            positions[p] = (f(arr) - f(lo)) / span if span > 0 else np.where(np.isnan(arr), np.nan, 0.5)
            uniq = sorted(set(present))
            if len(uniq) <= 6:
                ticks[p] = [(((f(u) - f(lo)) / span) if span > 0 else 0.5, _fmt(u) if p != "value" else f"{u:.4g}")
                            for u in uniq]
            else:
                locator = MaxNLocator(5) if not log else LogLocator()
                marks = [t for t in locator.tick_values(lo, hi) if lo <= t <= hi] or [lo, hi]
                ticks[p] = [((f(t) - f(lo)) / span, f"{t:.4g}") for t in marks]
        else:
            cats = sorted(dict.fromkeys(str(x) for x in present), key=_natural_key)
            pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
            positions[p] = np.array([np.nan if _missing(x) else pos[str(x)] for x in vals])
            ticks[p] = [(pos[c], c) for c in cats]
    complete = np.array([states.get(str(r)) == "complete" for r in sub["run"]])
    values = sub["value"].to_numpy(dtype=float)
    cvals = values[complete] if complete.any() else values
    lo, hi = float(np.min(cvals)), float(np.max(cvals))
    norm = Normalize(lo, hi if hi > lo else lo + 1e-9)
    if lo > 0 and hi / lo >= 1000:
        norm = LogNorm(lo, hi)
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(max(8.0, min(12.0, 2.2 * len(axes_names) + 3)), 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_label("panel")
    xs = np.arange(len(axes_names), dtype=float)
    drawn: list[str] = []
    partial_handle = None
    for i, run in enumerate(sub["run"].tolist()):
        ys = np.array([positions[p][i] for p in axes_names])
        if complete[i]:
            (line,) = ax.plot(xs, ys, color=cmap(norm(values[i])), lw=1.6, alpha=0.85, label=f"_{run}")
        else:
            (line,) = ax.plot(xs, ys, color="0.55", lw=1.2, ls="--", alpha=0.8, label=f"_{run}")
            partial_handle = partial_handle or Line2D([], [], color="0.55", ls="--", label="did not complete")
        line.set_gid(str(run))
        drawn.append(str(run))
    for i, p in enumerate(axes_names):
        ax.axvline(i, color="0.2", lw=1.0, zorder=0)
        for pos, text in ticks[p]:
            ax.text(i - 0.03, pos, text, ha="right", va="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})
    ax.set_xticks(xs, [*params, data.metric])
    ax.set_xlim(-0.45, len(axes_names) - 0.8)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(title)
    if partial_handle is not None:
        ax.legend(handles=[partial_handle], loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False,
                  fontsize=9, borderaxespad=0.2)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_metric_label(data), pad=0.02)
    n_complete = int(complete.sum())
    caption = (f"Each line is one run ({_group_noun(n_complete, 'complete run')}"
               f"{f', {len(drawn) - n_complete} that did not complete, grey and dashed' if len(drawn) > n_complete else ''})"
               f" across the swept parameters ({', '.join(params)}) and {data.metric}, coloured by {data.metric}. "
               f"{_runs_sentence(drawn)}{_missing_note(_order_runs(data), drawn, states, 'metric value')}")
    return FigureResult(name, fig, title, caption, drawn)


# -- registry ---------------------------------------------------------------------------------------------------
def _tf_varies(data: SweepData) -> bool:
    return not data.is_empty() and len(_tf_groups(data).order) > 1


def _kl_varies(data: SweepData) -> bool:
    return not data.is_empty() and len(_kl_groups(data).order) > 1


def _epochs_have(data: SweepData, *columns: str) -> bool:
    return all(_has(data.epochs, c) for c in columns)


def _n_valued(data: SweepData, *, complete: bool) -> int:
    if data.is_empty():
        return 0
    ok = np.isfinite(_values(data).to_numpy(dtype=float))
    if complete:
        ok &= (data.runs["state"] == "complete").to_numpy() if "state" in data.runs else False
    return int(ok.sum())


def _importances_applicable(data: SweepData) -> bool:
    return not data.is_empty() and not _importance_inputs(data)[3]


FIGURES: dict[str, tuple[Callable[[SweepData], bool], Callable[[SweepData], FigureResult]]] = {
    "tfr_loss": (lambda d: _tf_varies(d) and _epochs_have(d, "tfr", "train_loss"), render_tfr_loss),
    "tfr_psnr": (lambda d: _tf_varies(d) and _epochs_have(d, "tfr", "val_psnr"), render_tfr_psnr),
    "kl_beta_psnr": (lambda d: _kl_varies(d) and _epochs_have(d, "beta", "val_psnr"), render_kl_beta_psnr),
    "kl_psnr": (lambda d: _kl_varies(d) and _epochs_have(d, "val_psnr"), render_kl_psnr),
    "kl_loss": (lambda d: _kl_varies(d) and _epochs_have(d, "train_loss"), render_kl_loss),
    "psnr_per_frame": (lambda d: not d.is_empty() and d.frames is not None and _has(d.frames, "psnr"),
                       render_psnr_per_frame),
    "ndim_psnr": (lambda d: not d.is_empty() and "N_dim" in d.runs and d.runs["N_dim"].dropna().nunique() > 1
                  and _epochs_have(d, "val_psnr"), render_ndim_psnr),
    "optimization_history": (lambda d: _n_valued(d, complete=False) >= 2, render_optimization_history),
    "param_importances": (_importances_applicable, _render_importances),
    "parallel_coordinates": (lambda d: _n_valued(d, complete=True) >= 2 and bool(d.params),
                             render_parallel_coordinates),
}
"""Figure name -> (applicable(data), render(data)), in the order the reports present them."""


def applicable_figures(data: SweepData) -> list[str]:
    """The names of the figures the data supports, in :data:`FIGURES` order (none for an empty sweep)."""
    return [name for name, (ok, _) in FIGURES.items() if ok(data)]


def save_figure(result: FigureResult, out_dir: str | Path, *, dpi: int = DPI) -> tuple[Path, Path]:
    """Write ``<name>.png`` and ``<name>.svg`` into ``out_dir`` (created); returns their paths. The SVG is
    reproducible (no date, fixed ids)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{result.name}.png", out / f"{result.name}.svg"
    result.fig.savefig(png, dpi=dpi, facecolor="white")
    with matplotlib.rc_context({"svg.hashsalt": "cvae-sweeps"}):
        result.fig.savefig(svg, metadata={"Date": None}, facecolor="white")
    return png, svg


def render_all(data: SweepData, out_dir: str | Path, only: Sequence[str] | None = None
               ) -> list[tuple[FigureResult, Path, Path]]:
    """Render the applicable figures (or exactly ``only``, applicable or not) into ``out_dir`` as PNG and SVG.

    An empty sweep warns and gives one ``no_runs`` figure. Nothing stays open: the figures are plain
    :class:`~matplotlib.figure.Figure` objects that no pyplot manager holds, freed with their results.

    Raises:
        ValueError: a name in ``only`` is not a figure; the message lists the valid names.
    """
    if only is not None:
        only = [str(n) for n in only]
        unknown = [n for n in only if n not in FIGURES]
        if unknown:
            raise ValueError(f"unknown figure(s): {', '.join(unknown)}; valid figures: {', '.join(FIGURES)}")
    if data.is_empty():
        warnings.warn(f"{data.name}: no runs, nothing to plot", UserWarning, stacklevel=2)
        if not only:
            results = [_empty_result("no_runs", f"{data.name}: no runs", data)]
        else:
            results = [FIGURES[n][1](data) for n in dict.fromkeys(only)]
    else:
        names = list(dict.fromkeys(only)) if only is not None else applicable_figures(data)
        results = [FIGURES[n][1](data) for n in names]
    written = []
    for result in results:
        png, svg = save_figure(result, out_dir)
        written.append((result, png, svg))
    return written
