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
param_importances   importances of the swept parameters (PED-ANOVA, or fANOVA with scikit-learn, on an
                    in-memory Optuna study)
parallel_coordinates  one polyline per run across the swept parameters and the metric
uses                what each configuration uses at its value's epoch: the validation PSNR without its previous
                    frame and with another video's frame beside the normal rollout, the PSNR's spread over
                    samples of z, the active latent units beside N_dim (records with the diagnostics)
==================  ===========================================================================================

Where the records have the best of K samples of z, the validation-PSNR figures (``tfr_psnr``, ``kl_beta_psnr``,
``kl_psnr``, ``ndim_psnr``, ``compare`` of ``val_psnr``) and ``psnr_per_frame`` draw it dash-dotted beside the lab's
single sample; ``psnr_per_frame`` has an SSIM panel where the records have SSIM.

:func:`render_compare` draws any per-epoch metric grouped by any parameter. :data:`FIGURES` maps each name
to ``(applicable, render)``; :func:`render_all` renders the applicable ones (or those asked for) to PNG + SVG.

Each figure is two steps: :mod:`.figdata` computes what it shows as a tidy DataFrame (its caption in
``attrs``), :mod:`.draw` draws that frame with seaborn. Grouping runs into configurations is
:mod:`.groups`, the words :mod:`.captions`, the importances :mod:`.importance`, the interval :mod:`.stats`.

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
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from cvae.analysis import figdata
from cvae.analysis.captions import LABELS
from cvae.analysis.draw import WIDTH, draw
from cvae.analysis.groups import has, kl_groups, palette, tf_groups, values
from cvae.analysis.importance import MIN_IMPORTANCE_RUNS, Importances, importance_inputs, param_importances
from cvae.analysis.load import SweepData
from matplotlib.figure import Figure

__all__ = [
    "DPI", "FIGURES", "LABELS", "MAX_PANELS", "MIN_IMPORTANCE_RUNS", "WIDTH", "FigureResult", "Importances",
    "applicable_figures", "not_drawn", "palette", "param_importances", "render_all", "render_compare", "render_kl_beta_psnr",
    "render_kl_loss", "render_kl_psnr", "render_ndim_psnr", "render_optimization_history",
    "render_parallel_coordinates", "render_param_importances", "render_psnr_per_frame", "render_tfr_loss",
    "render_tfr_psnr", "render_uses", "save_figure",
]

DPI = 130
MAX_PANELS = 9
"""A schedule figure (``tfr_loss``, ``tfr_psnr``, ``kl_beta_psnr``) has one panel per configuration: with more than
this many (a sampled, continuous teacher-forcing ratio gives each run its own) it is not drawn by default
(:func:`not_drawn` says why; ``parallel_coordinates`` shows the runs)."""


@dataclass
class FigureResult:
    """One rendered figure: ``name`` is its registry key (and file stem); ``data`` the tidy frame it draws."""

    name: str
    fig: Figure
    title: str
    caption: str
    runs: list[str]
    data: pd.DataFrame | None = None


def result(df: pd.DataFrame) -> FigureResult:
    """Draw a :mod:`.figdata` frame."""
    a = df.attrs
    return FigureResult(a["name"], draw(df), a["title"], a["caption"], list(a["runs"]), df)


def render_tfr_loss(data: SweepData) -> FigureResult:
    """Teacher-forcing ratio and training loss per epoch, one panel per TF configuration."""
    return result(figdata.tfr_loss(data))


def render_tfr_psnr(data: SweepData) -> FigureResult:
    """Validation PSNR per epoch with the teacher-forcing ratio, one panel per TF configuration."""
    return result(figdata.tfr_psnr(data))


def render_kl_beta_psnr(data: SweepData) -> FigureResult:
    """β and validation PSNR per epoch, one panel per KL annealing configuration."""
    return result(figdata.kl_beta_psnr(data))


def render_kl_psnr(data: SweepData) -> FigureResult:
    """Validation PSNR per epoch, one line per KL annealing configuration."""
    return result(figdata.kl_psnr(data))


def render_kl_loss(data: SweepData) -> FigureResult:
    """Training loss per epoch, one line per KL annealing configuration (log y when it spans decades)."""
    return result(figdata.kl_loss(data))


def render_psnr_per_frame(data: SweepData) -> FigureResult:
    """PSNR of every predicted frame of the validation rollout at each run's last epoch, per configuration."""
    return result(figdata.psnr_per_frame(data))


def render_ndim_psnr(data: SweepData) -> FigureResult:
    """Validation PSNR per epoch for each noise size N_dim."""
    return result(figdata.ndim_psnr(data))


def render_compare(data: SweepData, param: str, y: str) -> FigureResult:
    """Any per-epoch metric ``y`` grouped by any ``param`` (see :func:`.figdata.compare`).

    Raises:
        ValueError: ``param`` is not a column of the runs or ``y`` not a numeric column of the epochs.
    """
    return result(figdata.compare(data, param, y))


def render_uses(data: SweepData) -> FigureResult:
    """What each configuration uses: its previous frame, its latent z, its active latent units."""
    return result(figdata.uses(data))


def render_optimization_history(data: SweepData) -> FigureResult:
    """The metric of every run in trial order, with the best so far over the complete runs."""
    return result(figdata.optimization_history(data))


def render_param_importances(importances: Mapping[str, float], *, metric: str = "val/psnr", reason: str = "",
                             runs: Sequence[str] = (), name: str = "param_importances") -> FigureResult:
    """A horizontal bar chart of ``importances`` (most important on top); with none, a figure saying ``reason``
    (taken from an :class:`Importances` when not given)."""
    return result(figdata.importances_frame(importances, metric=metric, reason=reason, runs=runs, name=name))


def render_parallel_coordinates(data: SweepData) -> FigureResult:
    """One polyline per run across the swept parameters and the metric, coloured by the metric."""
    return result(figdata.parallel_coordinates(data))


# -- registry ---------------------------------------------------------------------------------------------------
def _tf_varies(data: SweepData, max_groups: float = math.inf) -> bool:
    return not data.is_empty() and 1 < len(tf_groups(data).order) <= max_groups


def _kl_varies(data: SweepData, max_groups: float = math.inf) -> bool:
    return not data.is_empty() and 1 < len(kl_groups(data).order) <= max_groups


def _epochs_have(data: SweepData, *columns: str) -> bool:
    return all(has(data.epochs, c) for c in columns)


def _n_valued(data: SweepData, *, complete: bool) -> int:
    if data.is_empty():
        return 0
    ok = np.isfinite(values(data).to_numpy(dtype=float))
    if complete:
        ok &= (data.runs["state"] == "complete").to_numpy() if "state" in data.runs else False
    return int(ok.sum())


def _importances_applicable(data: SweepData) -> bool:
    return not data.is_empty() and not importance_inputs(data)[3]


FIGURES: dict[str, tuple[Callable[[SweepData], bool], Callable[[SweepData], FigureResult]]] = {
    "tfr_loss": (lambda d: _tf_varies(d, MAX_PANELS) and _epochs_have(d, "tfr", "train_loss"), render_tfr_loss),
    "tfr_psnr": (lambda d: _tf_varies(d, MAX_PANELS) and _epochs_have(d, "tfr", "val_psnr"), render_tfr_psnr),
    "kl_beta_psnr": (lambda d: _kl_varies(d, MAX_PANELS) and _epochs_have(d, "beta", "val_psnr"),
                     render_kl_beta_psnr),
    "kl_psnr": (lambda d: _kl_varies(d) and _epochs_have(d, "val_psnr"), render_kl_psnr),
    "kl_loss": (lambda d: _kl_varies(d) and _epochs_have(d, "train_loss"), render_kl_loss),
    "psnr_per_frame": (lambda d: not d.is_empty() and has(d.frames, "psnr"), render_psnr_per_frame),
    "ndim_psnr": (lambda d: not d.is_empty() and "N_dim" in d.runs and d.runs["N_dim"].dropna().nunique() > 1
                  and _epochs_have(d, "val_psnr"), render_ndim_psnr),
    "uses": (lambda d: not d.is_empty() and any(has(d.epochs, c) or has(d.runs, c) for c in figdata.USES_COLUMNS),
             render_uses),
    "optimization_history": (lambda d: _n_valued(d, complete=False) >= 2, render_optimization_history),
    "param_importances": (_importances_applicable, lambda d: result(figdata.param_importances_data(d))),
    "parallel_coordinates": (lambda d: _n_valued(d, complete=True) >= 2 and bool(d.params),
                             render_parallel_coordinates),
}
"""Figure name -> (applicable(data), render(data)), in the order the reports present them."""

def applicable_figures(data: SweepData) -> list[str]:
    """The names of the figures the data supports, in :data:`FIGURES` order (none for an empty sweep)."""
    return [name for name, (ok, _) in FIGURES.items() if ok(data)]


def not_drawn(data: SweepData) -> dict[str, str]:
    """The figures a sweep's records call for that :func:`applicable_figures` leaves out, each with why, for the
    CLI and the report to say: the parameter importances of a sweep with too few complete trials
    (``importances need at least 4 complete trials with a val/psnr value, this sweep has 2``) or another reason
    (one parameter varies, the metric is the same for all), a schedule figure with more than :data:`MAX_PANELS`
    panels. Empty for an empty sweep or one without swept parameters."""
    out: dict[str, str] = {}
    if data.is_empty() or not data.params:
        return out
    for name, groups, noun, columns in (("tfr_loss", tf_groups, "teacher-forcing", ("tfr", "train_loss")),
                                        ("tfr_psnr", tf_groups, "teacher-forcing", ("tfr", "val_psnr")),
                                        ("kl_beta_psnr", kl_groups, "KL annealing", ("beta", "val_psnr"))):
        n = len(groups(data).order)
        if n > MAX_PANELS and _epochs_have(data, *columns):
            out[name] = (f"{n} {noun} configurations, one panel each is more than {MAX_PANELS}: parallel_coordinates "
                         f"shows them (or draw it anyway with --only {name})")
    if not _importances_applicable(data):
        out["param_importances"] = importance_inputs(data)[3]
    return out


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
            results = [result(figdata.empty("no_runs", f"{data.name}: no runs", data))]
        else:
            results = [FIGURES[n][1](data) for n in dict.fromkeys(only)]
    else:
        names = list(dict.fromkeys(only)) if only is not None else applicable_figures(data)
        results = [FIGURES[n][1](data) for n in names]
    return [(r, *save_figure(r, out_dir)) for r in results]
