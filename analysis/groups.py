"""Runs into configurations: teacher-forcing and KL schedules, values of a parameter, labels, colours.

A configuration is what the reports compare: replicates share the runs' ``label``; a figure about teacher
forcing groups the runs by their TF schedule (a named choice such as ``TF1``, or the resolved ``tfr``,
``tfr_sde`` and ``tfr_d_step``), one about KL annealing by their KL schedule. Colours are keyed by the
naturally sorted labels so that a configuration has one colour in every figure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from cvae.analysis import numbers
from cvae.analysis.load import SweepData, run_labels
from cvae.core.config import FLAT_KEYS
from matplotlib import colormaps
from matplotlib.colors import to_hex

TF_KEYS = ("tfr", "tfr_sde", "tfr_d_step")
KL_KEYS = ("kl_anneal_type", "kl_anneal_cycle", "kl_anneal_ratio", "kl_hybrid_switch")
_TF_SHORT = {"tfr": "tfr", "tfr_sde": "sde", "tfr_d_step": "step"}
_KL_SHORT = {"kl_anneal_type": "", "kl_anneal_cycle": "cycle", "kl_anneal_ratio": "ratio",
             "kl_hybrid_switch": "switch"}


# -- values ----------------------------------------------------------------------------------------------------
def missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(isinstance(value, float | np.floating) and math.isnan(value))
    except TypeError:
        return False


def fmt(value: Any) -> str:
    """A config value as the reports write it: 1.0, 0.05, 0.00221, 10, cyclical (:func:`.numbers.value`)."""
    return numbers.value(value)


def formatter(values: Iterable[Any]) -> Callable[[Any], str]:
    """:func:`fmt` for one column's ``values`` that prints different values differently
    (:func:`.numbers.distinct`): runs grouped by the text stay apart."""
    return numbers.distinct(values)


def python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def natural_key(text: str) -> list:
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower()) for tok in re.split(r"(\d+)", str(text))]


def has(frame: pd.DataFrame | None, column: str) -> bool:
    return frame is not None and column in frame.columns and frame[column].notna().any()


# -- runs ------------------------------------------------------------------------------------------------------
def order_runs(data: SweepData) -> list[str]:
    return [str(r) for r in data.runs["run"].tolist()]


def labels(runs: pd.DataFrame) -> list[str]:
    if "label" not in runs:
        return ["base"] * len(runs)
    return ["base" if missing(v) else str(v) for v in runs["label"].tolist()]


def label_of(data: SweepData) -> dict[str, str]:
    return dict(zip(order_runs(data), labels(data.runs), strict=True))


def states(data: SweepData) -> dict[str, str]:
    if "state" not in data.runs:
        return {str(r): "complete" for r in data.runs["run"]}
    return {str(r): ("unknown" if missing(s) else str(s))
            for r, s in zip(data.runs["run"], data.runs["state"], strict=True)}


def values(data: SweepData) -> pd.Series:
    """The sweep metric of each run (NaN where unknown)."""
    if "value" not in data.runs:
        return pd.Series(np.nan, index=data.runs.index)
    return pd.to_numeric(data.runs["value"], errors="coerce")


# -- colours ---------------------------------------------------------------------------------------------------
def palette(keys: Iterable[str]) -> dict[str, str]:
    """A stable colour per key: the keys naturally sorted (``N_dim=4`` before ``N_dim=12``), then tab10,
    tab20 or an evenly sampled turbo map by how many there are."""
    ordered = sorted(dict.fromkeys(str(k) for k in keys), key=natural_key)
    n = len(ordered)
    if n <= 10:
        colors = [colormaps["tab10"](i) for i in range(n)]
    elif n <= 20:  # the ten strong colours first, then their light twins
        colors = [colormaps["tab20"](2 * i if i < 10 else 2 * (i - 10) + 1) for i in range(n)]
    else:
        colors = [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]
    return {k: to_hex(c) for k, c in zip(ordered, colors, strict=True)}


def colors_for(data: SweepData, keys: Iterable[str]) -> dict[str, str]:
    """The labels' palette when every key is a run label (one colour per configuration everywhere)."""
    keys = list(keys)
    known = set(labels(data.runs))
    return palette(known) if keys and set(keys) <= known else palette(keys)


def group_colors(data: SweepData, order: Sequence[str], of_run: Mapping[str, str]) -> dict[str, str]:
    """Colours of groups of runs: each group's label colour when every group is exactly one configuration
    (``cyclical`` drawn in the colour of ``kl_anneal_type=cyclical``), else a palette of the group names."""
    label = label_of(data)
    per_group = {g: {label[r] for r, gg in of_run.items() if gg == g and r in label} for g in order}
    chosen = [next(iter(v)) for v in per_group.values() if len(v) == 1]
    if len(chosen) == len(order) and len(set(chosen)) == len(chosen):
        colors = palette(label.values())
        return {g: colors[next(iter(per_group[g]))] for g in order}
    return colors_for(data, order)


# -- schedule configurations (teacher forcing, KL annealing) ---------------------------------------------------
@dataclass
class Groups:
    """Runs split into configurations: ``of_run`` run -> group, ``order`` the groups in run order,
    ``settings`` each group's resolved schedule in words, ``absorbed`` the parameters the grouping accounts
    for, ``named`` whether the groups are a named choice's values (``TF1``)."""

    of_run: dict[str, str]
    order: list[str]
    settings: dict[str, str]
    absorbed: set[str]
    named: bool

    def members(self, group: str) -> list[str]:
        return [r for r, g in self.of_run.items() if g == group]


def _choice_sets(data: SweepData, param: str, keys: Sequence[str]) -> bool | None:
    """Whether the spec's ``sets`` of a named choice touch ``keys``; None when the spec does not say."""
    spec_param = ((data.spec or {}).get("parameters") or {}).get(param)
    if isinstance(spec_param, dict) and isinstance(spec_param.get("sets"), dict):
        return any(isinstance(v, dict) and bool(set(v) & set(keys)) for v in spec_param["sets"].values())
    return None


def schedule_groups(data: SweepData, kind: str) -> Groups:
    """TF (``kind="tf"``) or KL (``"kl"``) configurations: distinct resolved keys, or a named choice
    (``TF1``; from the spec's ``sets``, else from how the resolved columns follow it, else from its name when the
    source has no resolved columns, as an Optuna study has not)."""
    keys, short = (TF_KEYS, _TF_SHORT) if kind == "tf" else (KL_KEYS, _KL_SHORT)
    runs = data.runs
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
    shown_cols = cols if kind == "tf" else [k for k in cols if k in varying_cols or k == "kl_anneal_type"]
    fmts = {k: formatter(runs[k].tolist()) for k in [*shown_cols, *choices]}

    def settings_of(i: int) -> str:
        return ", ".join(f"{short[k]}={fmts[k](runs[k].iloc[i])}" if short[k] else fmts[k](runs[k].iloc[i])
                         for k in shown_cols)

    of_run, order, settings = {}, [], {}
    for i, run in enumerate(order_runs(data)):
        if choices:
            title = ", ".join(fmts[c](runs[c].iloc[i]) for c in choices)
        else:
            title = settings_of(i) if cols else "all runs"
        of_run[run] = title
        if title not in settings:
            order.append(title)
            settings[title] = settings_of(i)
    return Groups(of_run, order, settings, set(keys) | set(choices), bool(choices))


def tf_groups(data: SweepData) -> Groups:
    return schedule_groups(data, "tf")


def kl_groups(data: SweepData) -> Groups:
    return schedule_groups(data, "kl")


def sublabels(data: SweepData, absorbed: set[str]) -> dict[str, str]:
    """Each run's label without the absorbed parameters (the loader's format: ``TF1``, ``N_dim=12``, numbers
    rounded); empty where no other parameter is swept."""
    runs = data.runs
    others = [p for p in data.params if p not in absorbed and p in runs.columns]
    if not others:
        return {str(r): "" for r in runs["run"]}
    labels = run_labels(runs, others)
    return {str(r): ("" if text == "base" else text) for r, text in zip(runs["run"], labels, strict=True)}


def value_groups(data: SweepData, param: str) -> Groups:
    """Runs by the value of ``param``: ``N_dim=12`` for a training key, the value itself for a named choice;
    numbers in numeric order."""
    col = data.runs[param]
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    shown = formatter(col.tolist())

    def text(v: Any) -> str:
        return f"{param}={shown(v)}" if param in FLAT_KEYS else shown(v)

    of_run = {str(r): text(v) for r, v in zip(data.runs["run"], col, strict=True)}
    values_ = list(dict.fromkeys(col.tolist()))
    if numeric:
        values_ = sorted(values_, key=lambda v: (math.isnan(v), v if not math.isnan(v) else 0))
    order = list(dict.fromkeys(text(v) for v in values_))
    return Groups(of_run, order, {}, {param}, False)


def pooled_over(data: SweepData, absorbed: set[str]) -> list[str]:
    """The swept parameters a grouping does not account for and whose values differ between runs (its lines
    pool over them; a categorical the sampler gave one value pools nothing)."""
    return [p for p in data.params if p not in absorbed
            and (p not in data.runs or data.runs[p].astype(str).nunique(dropna=False) > 1)]
