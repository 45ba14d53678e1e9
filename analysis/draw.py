"""Drawing: a figure's tidy frame (:mod:`.figdata`) onto a :class:`~matplotlib.figure.Figure`.

Seaborn's axes-level functions on the figure's own axes (no pyplot state): a line is the mean of its runs per x
with the 95% t-band (:func:`.stats.t_interval` as seaborn's ``errorbar``; none where one run contributes),
dashed when it holds a run that did not complete; schedules on a twin axis; baselines as grey reference lines.
The legends are built from the frame's ``line`` and ``color`` columns, so they match what is drawn.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
import seaborn as sns
from cvae.analysis.stats import t_interval
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

WIDTH = 10.0
"""Inches: a figure's width (an HTML report's column at DPI 130 is ~1300 px)."""
REFERENCE_STYLES = {"copy_first": ("--", "0.25"), "mean_frame": (":", "0.45")}
DASHES = (4, 2)
BEST_OF_K_STYLE = (0, (6, 2, 1.5, 2))
"""Dash-dot: the best of K samples of z, in the colour of the line it goes with (dotted is the mean frame's)."""


def _canvas(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _new_figure(n_panels: int, *, width: float = WIDTH, row_height: float = 3.6, max_cols: int = 3):
    ncols = max(1, min(n_panels, max_cols))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = _canvas((width, row_height * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for extra in axes[n_panels:]:
        fig.delaxes(extra)
    for ax in axes[:n_panels]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    return fig, axes[:n_panels]


def _message(df: pd.DataFrame) -> Figure:
    fig = _canvas((8, 2.6))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, df.attrs["message"], ha="center", va="center", fontsize=13, color="0.35", wrap=True,
            transform=ax.transAxes)
    fig.suptitle(df.attrs["title"])
    return fig


# -- legends ---------------------------------------------------------------------------------------------------
def _font(n: int) -> float:
    return 9 if n <= 4 else 8 if n <= 8 else 7 if n <= 14 else 6


def _legend(ax, handles: list, *, below: bool, alone: bool = True, ncols: int | None = None) -> None:
    """Inside (best place) for a few entries, else under the axes (under the figure when it is the only panel)
    in columns with a smaller font."""
    if not handles:
        return
    n, longest = len(handles), max(len(h.get_label()) for h in handles)
    if not below:
        ax.legend(handles=handles, loc="best", fontsize=_font(n), framealpha=0.85)
        return
    ncols = ncols or max(1, min(1 if longest > 55 else 2 if longest > 28 else 3, n))
    if alone:
        ax.get_figure().legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=_font(n),
                               frameon=False)
    else:
        # under the x label whatever the axes' height (an offset in points, not a fraction of the axes), each
        # entry wrapped to the panel's width so that it does not run under the next panel
        fig = ax.get_figure()
        width = ax.get_position().width * fig.get_figwidth() * 72 / (0.55 * _font(n)) - 6  # characters
        for h in handles:
            h.set_label(textwrap.fill(h.get_label(), max(24, int(width / ncols)), subsequent_indent="  "))
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=ncols, fontsize=_font(n),
                  frameon=False, borderaxespad=0.0,
                  bbox_transform=offset_copy(ax.transAxes, fig=fig, y=-40, units="points"))


def _panel_legends(fig: Figure, panel_handles: list[tuple]) -> None:
    """One legend under the figure when every panel has the same entries (colours are shared), else one under
    each panel, one column, so a narrow panel keeps its width."""
    texts = [tuple(h.get_label() for h in handles) for _, handles in panel_handles]
    if len(panel_handles) == 1:
        ax, handles = panel_handles[0]
        _legend(ax, handles, below=len(handles) > 4 or max((len(t) for t in texts[0]), default=0) > 40)
    elif texts[0] and all(t == texts[0] for t in texts):
        n, longest = len(texts[0]), max(len(t) for t in texts[0])
        ncols = max(1, min(n, 4 if longest <= 24 else 3 if longest <= 34 else 2 if longest <= 60 else 1))
        fig.legend(handles=panel_handles[0][1], loc="outside lower center", ncols=ncols, fontsize=_font(n),
                   frameon=False)
    else:
        for ax, handles in panel_handles:
            _legend(ax, handles, below=True, alone=False, ncols=1)
        _make_room(fig, [ax for ax, _ in panel_handles])


def _make_room(fig: Figure, axes: list) -> None:
    """Taller by the legends under the panels (the tallest of each row of panels), so that the layout keeps the
    axes' height instead of squeezing them (or giving up) to fit a long legend."""
    renderer = fig.canvas.get_renderer()
    rows: dict[int, float] = {}
    for ax in axes:
        legend = ax.get_legend()
        if legend is not None:
            row = ax.get_subplotspec().rowspan.start
            rows[row] = max(rows.get(row, 0.0), legend.get_window_extent(renderer).height / fig.dpi)
    if rows:
        fig.set_figheight(fig.get_figheight() + sum(rows.values()))


# -- lines -----------------------------------------------------------------------------------------------------
def _metric(ax, rows: pd.DataFrame, x: str, *, markers: bool, lw: float) -> list:
    """The mean of each line's runs per x with its 95% t-band; dashed lines hold a run that did not complete."""
    if rows.empty:
        return []
    order = list(dict.fromkeys(rows["line"]))
    colors, dashed = dict(zip(rows["line"], rows["color"], strict=True)), dict(zip(rows["line"], rows["dashed"], strict=True))
    marker = "o" if markers and rows[x].nunique() <= 30 else ""
    sns.lineplot(data=rows, x=x, y="value", hue="line", hue_order=order, palette=colors, style="line",
                 style_order=order, dashes={k: DASHES if dashed[k] else "" for k in order}, estimator="mean",
                 errorbar=t_interval, err_kws={"alpha": 0.18, "linewidth": 0}, marker=marker, markersize=3.5,
                 linewidth=lw, legend=False, ax=ax)
    return [Line2D([], [], color=colors[k], ls="--" if dashed[k] else "-", lw=lw, marker=marker, ms=3.5, label=k)
            for k in order]


def _schedule(ax, rows: pd.DataFrame, x: str, label: str) -> list:
    """The schedule (mean over the runs) on a twin axis: one thick grey line, or one dash-dotted line per
    configuration where they differ."""
    if rows.empty:
        return []
    twin = ax.twinx()
    ax.set_zorder(twin.get_zorder() + 1)  # data lines above the schedule
    ax.patch.set_visible(False)
    order = list(dict.fromkeys(rows["line"]))
    colors = dict(zip(rows["line"], rows["color"], strict=True))
    style = {"lw": 2.6, "ls": "-"} if len(order) == 1 else {"lw": 1.4, "ls": "-."}
    sns.lineplot(data=rows, x=x, y="value", hue="line", hue_order=order, palette=colors, errorbar=None,
                 linewidth=style["lw"], linestyle=style["ls"], alpha=0.45, marker="s", markersize=3, legend=False,
                 ax=twin)
    twin.set_ylabel(label, color="0.3")
    means = rows.groupby(["line", x])["value"].mean()
    if means.min() >= 0 and means.max() <= 1:
        twin.set_ylim(-0.05, 1.05)
    return [Line2D([], [], color=colors[k], alpha=0.45, marker="s", ms=3, label=k, **style) for k in order]


def _best_of_k(ax, rows: pd.DataFrame, x: str, *, markers: bool, lw: float) -> list:
    """The best of K samples of z: dash-dotted, in the colour of the line it goes with, the mean over its runs (no
    band: the solid line carries it); one legend entry for all."""
    if rows.empty:
        return []
    order = list(dict.fromkeys(rows["line"]))
    colors = dict(zip(rows["line"], rows["color"], strict=True))
    marker = "o" if markers and rows[x].nunique() <= 30 else ""
    sns.lineplot(data=rows, x=x, y="value", hue="line", hue_order=order, palette=colors, estimator="mean",
                 errorbar=None, linewidth=lw, linestyle=BEST_OF_K_STYLE, marker=marker, markersize=3.5,
                 markerfacecolor="white", legend=False, ax=ax)
    return [Line2D([], [], color="0.3", ls=BEST_OF_K_STYLE, lw=lw, marker=marker, ms=3.5, mfc="white",
                   label="dash-dot: best of K samples of z")]


def _baselines(ax, rows: pd.DataFrame, x: str) -> list:
    """Grey reference lines: horizontal (x is NaN) or a curve per frame."""
    handles = []
    for name, line in rows.groupby("group", sort=False):
        ls, color = REFERENCE_STYLES[name]
        if line[x].isna().all():
            handles.append(ax.axhline(line["value"].iloc[0], ls=ls, color=color, lw=1.2, zorder=1,
                                      label=line["line"].iloc[0]))
        else:
            handles += ax.plot(line[x], line["value"], ls=ls, color=color, lw=1.1, zorder=1, label=line["line"].iloc[0])
    return handles


def _lines(df: pd.DataFrame) -> Figure:
    a, x = df.attrs, df.attrs["x"]
    single = a["layout"] == "lines"
    fig, axes = _new_figure(len(a["panels"]), row_height=4.6 if single else 3.4)
    panel_handles = []
    for ax, panel in zip(axes, a["panels"], strict=True):
        rows = df[df["panel"] == panel]
        lw = 1.3 if x == "frame" else 1.8
        handles = _metric(ax, rows[rows["kind"] == "metric"], x, markers=x != "frame", lw=lw)
        handles += _best_of_k(ax, rows[rows["kind"] == "best_of_k"], x, markers=x != "frame", lw=lw)
        handles += _schedule(ax, rows[rows["kind"] == "schedule"], x, a.get("twin_label", ""))
        handles += _baselines(ax, rows[rows["kind"] == "baseline"], x)
        ax.set_xlabel(a["xlabel"])
        ax.set_ylabel(a.get("ylabels", {}).get(panel, a["ylabel"]))
        if a.get("log"):
            ax.set_yscale("log")
        ylim = a.get("ylims", {}).get(panel, a.get("ylim"))
        if ylim:
            ax.set_ylim(*ylim)
        if x == "frame":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10, steps=[1, 2, 5, 10]))
        drawn_x = rows.loc[rows["kind"] != "baseline", x].dropna()
        if drawn_x.nunique() == 1:  # one epoch (a run pruned after its first): ticks at whole numbers around it
            ax.set_xlim(float(drawn_x.iloc[0]) - 1, float(drawn_x.iloc[0]) + 1)
        panel_handles.append((ax, handles))
    if single:
        (ax,) = axes
        ax.set_title(a["title"])
        limit = (4, 45) if x == "frame" else (6, 40)
        longest = max((len(h.get_label()) for h in panel_handles[0][1]), default=0)
        _legend(ax, panel_handles[0][1], below=len(panel_handles[0][1]) > limit[0] or longest > limit[1])
    else:
        for ax, panel in zip(axes, a["panels"], strict=True):
            ax.set_title(panel, fontsize=11)
        _panel_legends(fig, panel_handles)
        fig.suptitle(a["title"])
    return fig


# -- sweep-level figures ---------------------------------------------------------------------------------------
def _history(df: pd.DataFrame) -> Figure:
    """Runs as points by trial number (crosses: did not complete), the best so far as a step line."""
    fig, (ax,) = _new_figure(1, width=9.0, row_height=4.2)
    handles = []
    for line, rows in df[df["kind"] != "baseline"].groupby("line", sort=False):
        color = rows["color"].iloc[0]
        if (rows["kind"] == "best").all():
            sns.lineplot(data=rows, x="trial", y="value", estimator=None, color=color, linewidth=1.8,
                         drawstyle="steps-post", ax=ax)
            handles.append(Line2D([], [], color=color, lw=1.8, label=line))
        else:
            cross = bool(rows["dashed"].iloc[0])
            sns.scatterplot(data=rows, x="trial", y="value", color=color, marker="x" if cross else "o",
                            s=49 if cross else 36, linewidth=1.5 if cross else 0.5,
                            **({} if cross else {"edgecolor": color}), ax=ax)  # a cross has no edge
            handles.append(Line2D([], [], color=color, ls="", marker="x" if cross else "o", ms=7 if cross else 6,
                                  mew=1.5 if cross else 1.0, label=line))
    handles += _baselines(ax, df[df["kind"] == "baseline"], "trial")
    ax.set_xlabel(df.attrs["xlabel"])
    ax.set_ylabel(df.attrs["ylabel"])
    ax.set_title(df.attrs["title"])
    _legend(ax, handles, below=False)
    return fig


def _bars(df: pd.DataFrame) -> Figure:
    """Importances as horizontal bars, most important on top, each with its value."""
    fig = _canvas((8.5, 1.6 + 0.45 * len(df)))
    ax = fig.add_subplot()
    sns.barplot(data=df, x="importance", y="param", order=list(df["param"]), orient="h", color="C0", width=0.6,
                saturation=1, ax=ax)
    ax.bar_label(ax.containers[0], fmt=" {:.2f}", fontsize=9)
    ax.set_xlim(0, max(1.0, float(df["importance"].max())) * 1.08)
    ax.set_xlabel(df.attrs["xlabel"])
    ax.set_ylabel("")
    ax.set_title(df.attrs["title"])
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def _parallel(df: pd.DataFrame) -> Figure:
    """One polyline per run across the axes; complete runs coloured by the metric (colour bar), the others
    grey and dashed; each axis's ticks marked and written beside it, its name under it (``(log scale)`` for a
    log axis)."""
    a = df.attrs
    kind, lo, hi = a["norm"]
    norm = LogNorm(lo, hi) if kind == "log" else Normalize(lo, hi)
    n_axes = len(a["axes"])
    fig = _canvas((max(8.0, min(12.0, 2.2 * n_axes + 3)), 5.0))
    ax = fig.add_subplot()
    runs, ticks = df[df["kind"] == "run"], df[df["kind"] == "tick"]
    # a run without a value on an axis (a conditional parameter) is broken there: one unit per stretch
    gaps = runs.groupby("run", sort=False)["position"].transform(lambda p: p.isna().cumsum())
    runs = runs.assign(segment=runs["run"] + ":" + gaps.astype(str))
    common = {"x": "axis_index", "y": "position", "units": "segment", "estimator": None, "legend": False, "ax": ax}
    done, partial = runs[~runs["dashed"].astype(bool)], runs[runs["dashed"].astype(bool)]
    if not done.empty:
        sns.lineplot(data=done, hue="metric", hue_norm=norm, palette="viridis", linewidth=1.6, alpha=0.85, **common)
    if not partial.empty:
        sns.lineplot(data=partial, color="0.55", linewidth=1.2, linestyle="--", alpha=0.8, **common)
        ax.legend(handles=[Line2D([], [], color="0.55", ls="--", label="did not complete")], loc="lower right",
                  bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9, borderaxespad=0.2)
    for i in range(n_axes):
        ax.axvline(i, color="0.2", lw=1.0, zorder=0)
    ax.hlines(ticks["position"].to_numpy(dtype=float), ticks["axis_index"].to_numpy(dtype=float) - 0.03,
              ticks["axis_index"].to_numpy(dtype=float), color="0.2", lw=1.0, zorder=0)
    for _, t in ticks.iterrows():
        ax.text(t["axis_index"] - 0.045, t["position"], t["text"], ha="right", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})
    scales = a.get("scales", {})
    ax.set_xticks(np.arange(n_axes), [f"{name}\n(log scale)" if scales.get(name) == "log" else name
                                      for name in a["axes"]])
    ax.set(xlim=(-0.45, n_axes - 0.8), ylim=(-0.06, 1.06), yticks=[], xlabel="", ylabel="", title=a["title"])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=colormaps["viridis"]), ax=ax, label=a["colorbar_label"], pad=0.02)
    return fig


def _uses(df: pd.DataFrame) -> Figure:
    """One row per configuration, one panel per question: the measures as points (the mean over the runs) with
    their 95% t-interval, dodged by measure; N_dim as a grey bar, the trivial predictors as vertical lines."""
    a = df.attrs
    configs = a["configurations"]
    fig = _canvas((WIDTH, max(3.4, 1.9 + 0.62 * len(configs))))
    axes = fig.subplots(1, len(a["panels"]), sharey=True, squeeze=False)[0]
    for ax, panel in zip(axes, a["panels"], strict=True):
        rows = df[(df["panel"] == panel) & (df["kind"] == "metric")]
        order = list(dict.fromkeys(rows["line"]))
        colors = dict(zip(rows["line"], rows["color"], strict=True))
        sns.pointplot(data=rows, x="value", y="configuration", order=configs, hue="line", hue_order=order,
                      palette=colors, estimator="mean", errorbar=t_interval, orient="h",
                      dodge=0.5 if len(order) > 1 else False, linestyle="none", marker="o", markersize=6,
                      err_kws={"linewidth": 1.6}, legend=False, ax=ax)
        handles = [Line2D([], [], color=colors[k], marker="o", ls="", ms=6, label=k) for k in order]
        ref = df[(df["panel"] == panel) & (df["kind"] == "reference")]
        if not ref.empty:
            ax.scatter(ref["value"], [configs.index(c) for c in ref["configuration"]], marker="|", s=420,
                       linewidths=2.2, color="0.3", zorder=1)
            handles.append(Line2D([], [], color="0.3", marker="|", ls="", ms=14, mew=2.2, label=ref["line"].iloc[0]))
        for name, line in df[(df["panel"] == panel) & (df["kind"] == "baseline")].groupby("group", sort=False):
            ls, color = REFERENCE_STYLES[name]
            handles.append(ax.axvline(line["value"].iloc[0], ls=ls, color=color, lw=1.2, zorder=1,
                                      label=line["line"].iloc[0]))
        if panel == "Latent channels":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(*a["xlims"][panel])
        ax.set(title=panel, xlabel=a["xlabels"][panel], ylabel="")
        ax.grid(True, axis="x", alpha=0.3)
        # under the x label whatever the axes' height (an offset in points, not a fraction of the axes)
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False, ncols=1,
                  bbox_transform=offset_copy(ax.transAxes, fig=fig, y=-40, units="points"),
                  fontsize=_font(len(handles)), borderaxespad=0.0)
    axes[0].set_yticks(range(len(configs)), [textwrap.fill(c, 26) for c in configs])
    fig.suptitle(a["title"])
    return fig


def draw(df: pd.DataFrame) -> Figure:
    """The figure of a :mod:`.figdata` frame, by its ``attrs["layout"]``."""
    layouts = {"panels": _lines, "lines": _lines, "history": _history, "bars": _bars, "parallel": _parallel,
               "uses": _uses, "message": _message}
    return layouts[df.attrs["layout"]](df)
