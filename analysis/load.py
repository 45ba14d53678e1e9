"""Loaders: run records, an Optuna study, or W&B runs (online or offline folders) -> one set of tidy tables.

Every loader returns a :class:`SweepData` with three DataFrames:

- ``runs``: one row per trial chain. Columns: ``run`` (``t0003``), ``trial``, ``state`` (complete, pruned,
  failed, running, waiting), ``value`` (the sweep metric), ``best_epoch``, ``epochs_done``, ``duration_s``,
  ``replicate``, ``config_id`` (replicates share it), ``label`` (the swept values, e.g. ``TF1`` or
  ``kl_anneal_type=none, N_dim=12``), ``reason``, then every swept parameter and every training config key
  that is known, as its own column (``tfr``, ``N_dim``, ``kl_anneal_type``, ...).
- ``epochs``: one row per run and epoch: ``run``, ``epoch`` and the metrics of ``metrics.csv``
  (``train_loss``, ``val_psnr``, ``beta``, ``tfr``, ...); a source that lacks a metric lacks its column.
- ``frames``: one row per run, epoch and predicted frame of the validation rollout: ``run``, ``epoch``,
  ``frame``, ``psnr``, the evaluation's other curves (:data:`cvae.schema.FRAME_COLUMNS`: ``ssim``,
  ``psnr_best_of_k``, ...) and the trivial predictors of the same frame (``copy_first``, ``mean_frame``,
  ``copy_prev``, and their SSIM ``ssim_copy_first``, ...) where the source has them.

Every validation PSNR comes with its baselines (see ``core.baselines``): ``epochs`` carries
``val_psnr_copy_first``, ``val_psnr_mean_frame``, ``val_psnr_copy_prev`` and ``val_psnr_margin`` (val PSNR
minus copy-first) where the source recorded them, and the evaluation of a stochastic predictor
(:data:`cvae.schema.EVAL_COLUMNS`: ``val_ssim``, ``val_psnr_best_of_k``, ``val_psnr_no_prev``,
``val_active_units``, ...; NaN at an epoch that did not measure them). ``runs`` carries the same
(:data:`cvae.schema.TRIAL_COLUMNS`) at the epoch the run's value comes from, where the source says; ``latents``
(:data:`cvae.schema.LATENT_COLUMNS` after ``run``) the posterior per latent channel and validation. Records
older than a column lack it.

Analysis never imports the trainer: it reads files, a database, or the W&B API.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from cvae.analysis.numbers import distinct
from cvae.core import safe_yaml

# The training config's key names only (no torch): they tell a named choice (TF1) from a training key.
from cvae.core.config import FLAT_KEYS

from cvae.schema import (
    BASELINE_COLUMNS,
    BASELINES_CSV,
    COLUMN_OF_WANDB_KEY,
    CONFIG_YAML,
    FRAME_TABLE_BASELINES,
    FRAMES_CSV,
    LATENT_COLUMNS,
    LATENTS_CSV,
    MARGIN_COLUMN,
    METRICS_CSV,
    SPEC,
    SPEC_YAML,
    TRIAL_COLUMNS,
    TRIAL_JSON,
    WANDB_KEYS,
    TrialRecord,
    default_goal,
    metric_column,
    read_table,
    run_name,
    trial_attr,
    trial_row,
)

LOG_DISTRIBUTIONS = ("log_uniform", "log_uniform_values", "inv_log_uniform", "inv_log_uniform_values",
                     "q_log_uniform", "q_log_uniform_values")
"""A spec's (W&B's) distributions whose values spread evenly in log: their parameter is drawn on a log axis."""
RUN_COLUMNS = ["run", "trial", "state", "value", "best_epoch", "epochs_done", "duration_s", "replicate",
               "config_id", "label", "reason"]
LATENTS = ["run", *LATENT_COLUMNS]
"""``latents``' columns."""


class AnalysisError(ValueError):
    """A source that cannot be read or holds no runs; the message names it."""


@dataclass
class SweepData:
    """The tidy tables of one sweep and what is known about it."""

    runs: pd.DataFrame
    epochs: pd.DataFrame
    frames: pd.DataFrame
    params: list[str]
    """Swept parameters, in spec order: those the spec (or the Optuna study) gives several values or a range,
    whether or not the sampler happened to pick different ones, and, where the source does not say, those whose
    values differ between runs. A constant of the spec is left out."""
    name: str = "sweep"
    metric: str = "val/psnr"
    goal: str = "maximize"
    source: str = ""
    spec: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    latents: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LATENTS))
    """One row per run, validation and latent channel (empty when the source has none)."""
    log_params: list[str] = field(default_factory=list)
    """The parameters of :attr:`params` drawn on a log axis: log-distributed in the spec
    (:data:`LOG_DISTRIBUTIONS`) or in the Optuna study (``log=True``)."""

    @property
    def metric_field(self) -> str:
        return metric_column(self.metric).replace("/", "_")

    def is_empty(self) -> bool:
        return self.runs.empty


def _label(texts: dict[str, str]) -> str:
    """A configuration's name from its parameters' displayed values: a named choice (TF1) alone, training keys
    as key=value."""
    parts = [text if key not in FLAT_KEYS else f"{key}={text}" for key, text in texts.items()]
    return ", ".join(parts) if parts else "base"


def run_labels(runs: pd.DataFrame, params: Sequence[str]) -> list[str]:
    """Each run's label from its values of ``params`` (a missing value left out), numbers rounded for people
    (:func:`~.numbers.distinct`: different values stay different, so are different configurations)."""
    params = [p for p in params if p in runs]
    columns = {p: runs[p].tolist() for p in params}
    fmts = {p: distinct(columns[p]) for p in params}
    return [_label({p: fmts[p](columns[p][i]) for p in params if not _missing(columns[p][i])})
            for i in range(len(runs))]


def _varying(runs: pd.DataFrame, names: list[str]) -> list[str]:
    out = []
    for name in names:
        if name in runs and runs[name].astype(str).nunique(dropna=False) > 1:
            out.append(name)
    return out


@dataclass
class Swept:
    """What a source says of its parameters: ``swept`` those given several values or a range (not a constant),
    ``log`` the log-distributed ones."""

    swept: set[str] = field(default_factory=set)
    log: set[str] = field(default_factory=set)


def spec_swept(spec: dict[str, Any] | None) -> Swept | None:
    """:class:`Swept` of a spec's ``parameters`` (W&B syntax: ``value``, ``values``, ``distribution``, ``min``,
    ``max``); None without any."""
    params = (spec or {}).get("parameters")
    if not isinstance(params, dict):
        return None
    out = Swept()
    for name, p in params.items():
        name = str(name)
        if not isinstance(p, dict):
            continue
        dist = p.get("distribution")
        if dist == "constant" or "value" in p or (isinstance(p.get("values"), list) and len(p["values"]) < 2):
            continue
        out.swept.add(name)
        if dist in LOG_DISTRIBUTIONS:
            out.log.add(name)
    return out


def study_swept(trials: Sequence[Any]) -> Swept:
    """:class:`Swept` of an Optuna study's trials' distributions (a categorical of one choice is a constant)."""
    out = Swept()
    for t in trials:
        for name, dist in t.distributions.items():
            choices = getattr(dist, "choices", None)
            if len(choices) > 1 if choices is not None else dist.low < dist.high:
                out.swept.add(name)
            if getattr(dist, "log", False):
                out.log.add(name)
    return out


def _swept_params(runs: pd.DataFrame, param_order: list[str], swept: Swept | None) -> list[str]:
    """The parameters of :attr:`SweepData.params`, in ``param_order``: those the source says are swept (a
    categorical the sampler gave one value included) that some run has, and those whose values differ between
    runs (where the source does not say, or its spec was edited between runs). A constant that every run shares
    is left out."""
    said = swept.swept if swept else set()
    varying = set(_varying(runs, param_order))
    return [p for p in param_order if p in runs and runs[p].notna().any() and (p in varying or p in said)]


def _finish(runs_rows: list[dict], epochs_rows: list[dict], frames_rows: list[dict], param_order: list[str],
            latents_rows: list[dict] = (), swept: Swept | None = None, **kw: Any) -> SweepData:
    runs = pd.DataFrame(runs_rows)
    if runs.empty:
        runs = pd.DataFrame(columns=RUN_COLUMNS)
    for col in RUN_COLUMNS:
        if col not in runs:
            runs[col] = None
    params = _swept_params(runs, param_order, swept)
    log_params = [p for p in params if swept and p in swept.log]
    runs["label"] = run_labels(runs, params)
    runs = runs.sort_values(["trial", "run"], na_position="last", kind="stable").reset_index(drop=True)
    epochs = pd.DataFrame(epochs_rows, columns=None if epochs_rows else ["run", "epoch"])
    frames = pd.DataFrame(frames_rows, columns=None if frames_rows else ["run", "epoch", "frame", "psnr"])
    if not epochs.empty:
        epochs = epochs.sort_values(["run", "epoch"], kind="stable").reset_index(drop=True)
    if not frames.empty:
        frames = frames.sort_values(["run", "epoch", "frame"], kind="stable").reset_index(drop=True)
    latents = pd.DataFrame(list(latents_rows), columns=LATENTS)
    if not latents.empty:
        latents = latents.sort_values(["run", "epoch", "channel"], kind="stable").reset_index(drop=True)
    return SweepData(runs=runs, epochs=epochs, frames=frames, params=params, latents=latents, log_params=log_params,
                     **kw)


def one_run(run: str, epoch: int, curves: Mapping[str, Sequence[float]], baselines: Mapping[str, Sequence[float]],
            *, params: Mapping[str, Any] | None = None, name: str = "sweep", state: str = "complete") -> SweepData:
    """One run's validated epoch as a :class:`SweepData`, from what the process holds (a trial's epoch result:
    nothing read back from disk): its per-frame ``curves`` (``psnr``, ``ssim``, ... as in ``frames``) and the
    trivial predictors of the same frames (``baselines``: ``copy_first``, ..., ``ssim_copy_first``, ...), the
    run labelled by its ``params``."""
    n = len(curves.get("psnr", ()))
    columns = {k: v for k, v in {**curves, **baselines}.items() if len(v) == n}
    frames = [{"run": run, "epoch": epoch, "frame": i + 1, **{k: float(v[i]) for k, v in columns.items()}}
              for i in range(n)]
    params = dict(params or {})
    return _finish([{"run": run, "trial": 0, "state": state, **params}], [], frames, list(params),
                   swept=Swept(swept=set(params)), name=name)


def _known(values: Any) -> dict[str, float]:
    """The :data:`~cvae.schema.TRIAL_COLUMNS` among ``values`` (a mapping) that hold a number; a missing or NaN
    value is left out, so that records older than a column lack it."""
    out = {}
    for col in TRIAL_COLUMNS:
        try:
            value = float(values.get(col))
        except (TypeError, ValueError):
            continue
        if not math.isnan(value):
            out[col] = value
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _warn(message: str) -> None:
    """One warning line on stderr: something was skipped, the rest goes on."""
    print(f"cvae analysis: warning: {message}", file=sys.stderr, flush=True)


def _json_error(err: json.JSONDecodeError) -> str:
    return f"not valid JSON (line {err.lineno} col {err.colno})"


def _read_json(path: Path, *, text: str | None = None) -> Any:
    """A JSON file that must parse.

    Raises:
        AnalysisError: not valid JSON; the message names the file, line and column.
    """
    try:
        return json.loads(path.read_text() if text is None else text)
    except json.JSONDecodeError as err:
        raise AnalysisError(f"{path}: {_json_error(err)}: {err.msg}") from None


def _read_yaml(path: Path) -> Any:
    """A YAML file (safe, alias bombs refused); raises :class:`AnalysisError` naming it."""
    try:
        return safe_yaml.load(path.read_text(), str(path))
    except safe_yaml.YamlError as err:
        raise AnalysisError(str(err)) from None


# -- local run records --------------------------------------------------------------------------------------
def _numbers(values: list[str]) -> list[Any]:
    """A record column's strings as ints when every one is an int, else floats (an empty field is NaN)."""
    try:
        return [int(v) for v in values]
    except ValueError:
        return [float(v) if v != "" else math.nan for v in values]


def _read_csv(path: Path) -> pd.DataFrame:
    """A record CSV as numbers. Rows that are not whole (a run writing its last line, a damaged row) are
    dropped with a warning naming the file and line (see ``core.records.read_table``)."""
    if not path.is_file():
        return pd.DataFrame()
    header, rows = read_table(path, numeric=True, warn=_warn)
    if not header:
        return pd.DataFrame()
    return pd.DataFrame({name: _numbers([row[name] for row in rows]) for name in header}, columns=header)


def _read_trial(folder: Path) -> TrialRecord | None:
    """``trial.json``, or None when it is not a JSON object (warned: the run may still be writing it)."""
    path = folder / TRIAL_JSON
    try:
        return TrialRecord.read(path)
    except json.JSONDecodeError as err:
        _warn(f"skipping {path}: {_json_error(err)}: the run may still be writing it")
    except TypeError as err:
        _warn(f"skipping {path}: {err}")
    return None


def load_local(runs_dir: str | os.PathLike) -> SweepData:
    """A sweep's ``output_dir`` (``t0000/``, ... with ``trial.json``), or a single ``cvae train`` save_root.

    Runs still running or killed show their state from ``trial.json`` (``running``) and whatever epochs they
    recorded; a folder without ``trial.json`` (plain ``cvae train``) is a ``complete`` run if its last epoch
    reached ``num_epoch``, else ``running``.

    Raises:
        AnalysisError: the folder does not exist or holds no run.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise AnalysisError(f"{root}: no such folder")
    spec = None
    if (root / SPEC_YAML).is_file():
        spec = _read_yaml(root / SPEC_YAML)
        if spec is not None and not isinstance(spec, dict):
            raise AnalysisError(f"{root / SPEC_YAML}: a sweep spec must be a mapping, not {type(spec).__name__}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and ((p / TRIAL_JSON).is_file() or (p / METRICS_CSV).is_file()))
    if not folders and (root / METRICS_CSV).is_file():
        folders = [root]
    if not folders:
        raise AnalysisError(f"{root}: no runs (no t*/trial.json or metrics.csv): is it a sweep's output_dir?")
    runs_rows, epochs_rows, frames_rows, latents_rows = [], [], [], []
    param_order: list[str] = [str(k) for k in (spec or {}).get("parameters", {})]
    metric, goal = "val/psnr", "maximize"
    if spec and isinstance(spec.get("metric"), dict):
        metric = spec["metric"].get("name", metric)
        goal = spec["metric"].get("goal", default_goal(metric))
    skipped = 0
    for folder in folders:
        run = folder.name if folder != root else root.name
        config: Any = {}
        if (folder / CONFIG_YAML).is_file():
            try:
                config = _read_yaml(folder / CONFIG_YAML)
            except AnalysisError as err:
                _warn(f"skipping {folder}: {err}")
                skipped += 1
                continue
            if not isinstance(config, dict):
                _warn(f"skipping {folder}: {folder / CONFIG_YAML} is a {type(config).__name__}, not a mapping")
                skipped += 1
                continue
        record = None
        if (folder / TRIAL_JSON).is_file():
            record = _read_trial(folder)
            if record is None:
                skipped += 1
                continue
        epochs = _read_csv(folder / METRICS_CSV)
        if record is None:
            done = not epochs.empty and int(epochs["epoch"].max()) + 1 >= int(config.get("num_epoch", 0) or 0)
            field_name = metric_column(metric)
            values = epochs[field_name].dropna() if field_name in epochs else pd.Series(dtype=float)
            best = values.idxmax() if goal == "maximize" and not values.empty else (values.idxmin() if not values.empty else None)
            record = TrialRecord(
                study="", trial_number=None, state="complete" if done else "running", metric=metric, goal=goal,
                value=float(values[best]) if best is not None else None,
                best_epoch=int(epochs.loc[best, "epoch"]) if best is not None else None, epochs_done=len(epochs),
                duration_s=float(epochs["epoch_seconds"].sum()) if "epoch_seconds" in epochs else None,
                config_id=run)
            # As a sweep trial records them: the trial columns at the epoch of its value.
            record.update(**_known(epochs.loc[best] if best is not None else {}))
        else:
            metric, goal = record.metric, record.goal
        params = record.params or {}
        for key in params:
            if key not in param_order:
                param_order.append(key)
        row = {**config, **params, "run": run, "trial": record.trial_number, "state": record.state,
               "value": record.value, "best_epoch": record.best_epoch, "epochs_done": record.epochs_done,
               "duration_s": record.duration_s, "replicate": record.replicate, "config_id": record.config_id,
               "reason": record.reason, "wandb_run_id": record.wandb_run_id, "run_dir": str(folder),
               **_known(record.to_dict())}
        runs_rows.append(row)
        for rec in epochs.to_dict("records"):
            epochs_rows.append({"run": run, **rec})
        frames = _read_csv(folder / FRAMES_CSV)
        refs = _read_csv(folder / BASELINES_CSV)
        if not frames.empty and not refs.empty and "frame" in refs:
            frames = frames.merge(refs, on="frame", how="left")
        for rec in frames.to_dict("records"):
            frames_rows.append({"run": run, **rec})
        latents_rows += [{"run": run, **rec} for rec in _read_csv(folder / LATENTS_CSV).to_dict("records")]
    if not runs_rows:
        raise AnalysisError(f"{root}: none of its {skipped} run(s) could be read (see the warnings above)")
    name = (spec or {}).get("name") or root.name
    return _finish(runs_rows, epochs_rows, frames_rows, param_order, latents_rows, swept=spec_swept(spec), name=name,
                   metric=metric, goal=goal, source=str(root), spec=spec)


# -- Optuna storage -------------------------------------------------------------------------------------------
def load_optuna(storage: str, study: str) -> SweepData:
    """States, parameters, values and intermediate values (the metric per epoch) from the study itself.

    Retried trials are folded into their chain (the run of the first trial): the latest attempt's state
    wins and intermediate values of every attempt are kept. The trial columns (SSIM, best of K, ...) come from the
    user attributes of the latest attempt. Optuna holds no per-frame PSNR: ``frames`` is empty.

    Raises:
        AnalysisError: the storage cannot be opened or the study does not exist.
    """
    import optuna

    from cvae.secrets import mask_secrets as _mask
    from cvae.secrets import with_password

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        st = optuna.load_study(study_name=study, storage=with_password(storage))
    except KeyError:
        raise AnalysisError(f"{_mask(storage)}: no study named {study!r}") from None
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's many errors become one message
        raise AnalysisError(f"{_mask(storage)}: cannot open the study storage ({str(err).splitlines()[0]})") from None
    return from_study(st, source=_mask(storage))


def from_study(st: Any, source: str = "") -> SweepData:
    """:func:`load_optuna`'s tables from an open :class:`optuna.Study` (a running sweep's own)."""
    spec_attrs = st.user_attrs.get(SPEC, {})
    metric = spec_attrs.get("metric", "val/psnr")
    field_name = metric_column(metric)
    chains: dict[int, list] = {}
    trials = st.get_trials(deepcopy=False)
    for t in trials:
        if t.state.name == "WAITING" and "failed_trial" in t.system_attrs:
            continue  # a queued retry: its chain's row already says what happened
        chains.setdefault(int(t.system_attrs.get("failed_trial", t.number)), []).append(t)
    runs_rows, epochs_rows = [], []
    order: list[str] = []
    for key, attempts in sorted(chains.items()):
        last = attempts[-1]
        for p in last.params:
            if p not in order:
                order.append(p)
        run = run_name(key)
        start = attempts[0].datetime_start
        end = last.datetime_complete
        values: dict[int, float] = {}
        for t in attempts:
            values.update(t.intermediate_values)
        row = trial_row(last)
        runs_rows.append({
            **last.params, **{k: row[k] for k in ("state", "value", "replicate", "config_id", "reason",
                                                  "wandb_run_id", "run_dir")},
            "run": run, "trial": key, "best_epoch": None, "epochs_done": len(values),
            "duration_s": (end - start).total_seconds() if start and end else None, **_known(row),
        })
        if values:
            goal_max = st.direction.name == "MAXIMIZE"
            best = (max if goal_max else min)(values, key=values.get)
            runs_rows[-1]["best_epoch"] = best
        refs = {col: last.user_attrs.get(trial_attr(col)) for col in BASELINE_COLUMNS}
        refs = {col: float(v) for col, v in refs.items() if v is not None}
        for e, v in sorted(values.items()):
            row = {"run": run, "epoch": e, field_name: v, **refs}
            if field_name == "val_psnr" and "val_psnr_copy_first" in refs:
                row[MARGIN_COLUMN] = v - refs["val_psnr_copy_first"]
            epochs_rows.append(row)
    return _finish(runs_rows, epochs_rows, [], order, swept=study_swept(trials), name=st.study_name, metric=metric,
                   goal="maximize" if st.direction.name == "MAXIMIZE" else "minimize", source=source)


# -- W&B ------------------------------------------------------------------------------------------------------
def _unwrap(value: Any) -> Any:
    """A W&B summary value: ``define_metric`` makes ``{"max": ...}`` (or min, last, ...), older runs a number."""
    if isinstance(value, dict):
        return next((value[k] for k in ("max", "min", "best", "last") if k in value), None)
    return value


def _summary_value(summary: dict, metric_key: str) -> Any:
    """A trial's value from its W&B summary: the Optuna value it recorded (``sweep_value``), else the metric's
    summary, which ``define_metric`` makes ``{"max": ...}`` (or min, last, ...) and older runs a number."""
    if summary.get("sweep_value") is not None:
        return summary["sweep_value"]
    return _unwrap(summary.get(metric_key))


def _table_paths(history: list[dict], key: str) -> dict[int, str]:
    """Epoch -> the file of the table logged under ``key`` (``val/psnr_per_frame``) at that epoch; where an epoch
    logged it twice (the final media row repeats the best epoch's), the later one wins."""
    out = {}
    for h in history:
        ref = h.get(key)
        if "epoch" in h and isinstance(ref, dict) and ref.get("path"):
            out[int(h["epoch"])] = str(ref["path"])
    return out


def _number(value: Any) -> float:
    """A table cell as a float (NaN for an empty one: W&B writes a NaN as null)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _wandb_rows(run_id: str, config: dict, summary: dict, history: list[dict],
                read_table: Callable[[str], dict | None]):
    """One W&B run as rows of the four tables; ``read_table`` reads a logged table's JSON by its path in the
    run's files (None when absent)."""
    params = {k.removeprefix("param/"): v for k, v in config.items() if k.startswith("param/")}
    key = config.get("run_key", config.get("trial"))
    run = run_name(int(key)) if key is not None else run_id  # a plain training (cvae train, an agent run): its id
    plain = {k: v for k, v in config.items() if k in FLAT_KEYS}
    epochs = []
    for h in history:
        if "epoch" not in h or not any(k in h for k in COLUMN_OF_WANDB_KEY):
            continue
        epochs.append({"run": run, "epoch": int(h["epoch"]),
                       **{COLUMN_OF_WANDB_KEY[k]: v for k, v in h.items() if k in COLUMN_OF_WANDB_KEY}})
    # A resumed run may log an epoch twice (before a crash and after): the later one wins.
    dedup = {e["epoch"]: e for e in epochs}
    metric_key = config.get("sweep_metric", "val/psnr")
    best_epoch = summary.get("best_epoch")
    # The trial's columns at its best epoch, as trial.json has them; the summary where the history lacks one
    # (define_metric's max summaries are the best over the epochs, not the value at the best epoch).
    trial = {**_known({col: _unwrap(summary.get(WANDB_KEYS[col])) for col in TRIAL_COLUMNS}),
             **_known(dedup.get(best_epoch, {}))}
    row = {
        **plain, **params, "run": run, "trial": key, "state": summary.get("state", "running"),
        "value": _summary_value(summary, metric_key), "best_epoch": best_epoch,
        "epochs_done": len(dedup), "duration_s": None, "replicate": config.get("replicate", 0),
        "config_id": config.get("config_id"), "reason": summary.get("fail_reason", ""), "wandb_run_id": run_id,
        **trial,
    }
    frames, latents = [], []
    for epoch, path in sorted(_table_paths(history, "val/psnr_per_frame").items()):
        table = read_table(path) or {}
        # Columns by name: frame, psnr, the evaluation's curves (ssim, ...), then psnr_copy_first, ... where the
        # run logged its baselines.
        names = [FRAME_TABLE_BASELINES.get(c, c) for c in table.get("columns", ["frame", "psnr"])]
        for values in table.get("data", []):
            rec = {name: _number(v) for name, v in zip(names, values, strict=False)}
            frames.append({"run": run, "epoch": epoch, **rec, "frame": int(rec["frame"])})
    for epoch, path in sorted(_table_paths(history, "val/latents").items()):
        table = read_table(path) or {}
        for values in table.get("data", []):
            rec = {name: _number(v) for name, v in zip(table.get("columns", []), values, strict=False)}
            latents.append({"run": run, "epoch": epoch, **rec, "channel": int(rec["channel"]),
                            "active": int(rec["active"])})
    return row, list(dedup.values()), frames, latents, list(params), metric_key


def _offline_table(folders: Sequence[os.PathLike], name: str) -> dict | None:
    """A table an offline run logged (``media/table/...``), from the latest of its folders that holds it (a resumed
    run's segments each hold their own files); None when none does."""
    found = [Path(f) / "files" / name for f in folders if (Path(f) / "files" / name).is_file()]
    return _read_json(found[-1]) if found else None


def load_wandb_offline(wandb_dir: str | os.PathLike, group: str | None = None) -> SweepData:
    """Offline W&B run folders (``wandb/offline-run-*``), read with the wandb package's record format.

    No account or network: an air-gapped cluster can analyse before ``wandb sync``. The trainings (a sweep's
    trials, job_type ``trial``; ``cvae train`` runs, W&B agent runs among them, job_type ``train``) of
    ``group`` (default: the only group present, else the runs without a group) are loaded; the runs left out
    are named in one warning.

    Raises:
        AnalysisError: no offline runs, or several groups and none chosen; a logged table that is not valid
            JSON.
    """
    from cvae.wandb_offline import read_offline_runs_merged

    root = Path(wandb_dir)
    try:
        runs = read_offline_runs_merged(root)
    except (OSError, ValueError) as err:
        raise AnalysisError(f"{root}: cannot read W&B offline runs ({err})") from None
    trainings = [r for r in runs.values() if r.job_type in ("trial", "train")]
    groups = sorted({r.group for r in trainings if r.group})
    if group is None:
        if len(groups) > 1:
            raise AnalysisError(f"{root}: runs of several sweeps ({', '.join(groups)}): choose one with --group")
        group = groups[0] if groups else None
    trials = [r for r in trainings if (r.group or None) == group]
    if not trials:
        raise AnalysisError(f"{root}: no W&B training runs" + (f" in group {group!r}" if group else ""))
    left = sorted(f"{r.run_id} ({f'group {r.group}' if r.group else 'no group'}, {r.job_type or 'no job type'})"
                  for r in runs.values() if r not in trials and r.job_type != "sweep-summary")
    if left:
        _warn(f"{root}: {len(left)} W&B run(s) left out, not trainings of " + (f"group {group}" if group else
              "no group") + f": {', '.join(left[:8])}{', ...' if len(left) > 8 else ''}")
    runs_rows, epochs_rows, frames_rows, latents_rows, order = [], [], [], [], []
    metric = "val/psnr"
    for r in trials:
        row, epochs, frames, latents, params, metric_key = _wandb_rows(
            r.run_id, r.config, r.summary, r.history, lambda name, r=r: _offline_table(r.paths, name))
        metric = metric_key or metric
        runs_rows.append(row)
        epochs_rows += epochs
        frames_rows += frames
        latents_rows += latents
        order += [p for p in params if p not in order]
    return _finish(runs_rows, epochs_rows, frames_rows, order, latents_rows, name=group or "sweep", metric=metric,
                   goal=default_goal(metric), source=str(root))


def load_wandb_online(path: str, group: str) -> SweepData:
    """A sweep's trial runs from the W&B server (``ENTITY/PROJECT``, the sweep's group), via ``wandb.Api()``.

    Raises:
        AnalysisError: the API cannot be reached or the group holds no trial runs.
    """
    import wandb

    try:
        api = wandb.Api(timeout=30)
        remote = list(api.runs(path, filters={"group": group, "jobType": "trial"}))
    except Exception as err:  # noqa: BLE001 - network and auth errors become one message
        raise AnalysisError(f"W&B {path} group {group}: cannot list runs ({str(err).splitlines()[0]})") from None
    if not remote:
        raise AnalysisError(f"W&B {path}: no trial runs in group {group!r}")
    runs_rows, epochs_rows, frames_rows, latents_rows, order = [], [], [], [], []
    metric = "val/psnr"
    for r in remote:
        history = list(r.scan_history())

        def read_table(name: str, r=r) -> dict | None:
            with r.file(name).download(replace=True, root=os.path.join(".wandb-cache", r.id)) as fh:
                return _read_json(Path(f"wandb:{path}/{r.id}/{name}"), text=fh.read())

        row, epochs, frames, latents, params, metric_key = _wandb_rows(r.id, dict(r.config), dict(r.summary),
                                                                        history, read_table)
        metric = metric_key or metric
        runs_rows.append(row)
        epochs_rows += epochs
        frames_rows += frames
        latents_rows += latents
        order += [p for p in params if p not in order]
    return _finish(runs_rows, epochs_rows, frames_rows, order, latents_rows, name=group, metric=metric,
                   goal=default_goal(metric), source=f"wandb:{path}")
