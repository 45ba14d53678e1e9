"""The run-records format: one definition that the trainer, the sweeps and the analysis share.

Torch-free and Optuna-free (a trial is read through the attributes of Optuna's ``FrozenTrial``), so the
commands that only read records (``cvae sweep status``/``best``, ``cvae analysis``) start fast.

What it defines (docs/records.md is the prose version):

- the files of a run folder (:data:`TRIAL_JSON`, :data:`METRICS_CSV`, ...);
- ``metrics.csv``'s columns (:data:`METRIC_COLUMNS`), with the trivial predictors every validation PSNR is
  recorded beside (:data:`BASELINE_NAMES`, :data:`BASELINE_COLUMNS`, :data:`MARGIN_COLUMN`) and the evaluation
  of a stochastic predictor (:data:`EVAL_COLUMNS`: SSIM, K samples of z, what the model uses);
- ``psnr_per_frame.csv``'s per-frame curves (:data:`FRAME_COLUMNS`) and ``latents.csv``'s per-channel rows
  (:data:`LATENT_COLUMNS`);
- the W&B key of each column (:data:`WANDB_KEYS`; :data:`COLUMN_OF_WANDB_KEY` is its inverse);
- the Optuna attributes a sweep sets (``cvae:*``) and the names of trial states (:data:`STATE_OF_OPTUNA`);
- :class:`TrialRecord`, the typed ``trial.json``;
- :func:`trial_row`, the one function that turns an Optuna trial into a row (status table, ``trials.csv``,
  the W&B summary table, the analysis loaders).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- files of a run folder ------------------------------------------------------------------------------------
TRIAL_JSON = "trial.json"
CONFIG_YAML = "config.yaml"
METRICS_CSV = "metrics.csv"
FRAMES_CSV = "psnr_per_frame.csv"
BASELINES_CSV = "baselines.csv"
LATENTS_CSV = "latents.csv"
SAMPLE_GIF = "sample.gif"
SPEC_YAML = "spec.yaml"
"""A sweep's ``output_dir`` holds the spec as run; its ``t<run key>/`` folders are the run folders."""
TRIALS_CSV = "trials.csv"


def run_name(key: int) -> str:
    """A trial chain's run folder and table name: ``t0003``."""
    return f"t{key:04d}"


# -- metrics.csv ----------------------------------------------------------------------------------------------
BASELINE_NAMES = ("copy_first", "mean_frame", "copy_prev")
"""The trivial predictors every validation PSNR is recorded beside (see :mod:`cvae.core.baselines`)."""
BASELINE_TITLES = {
    "copy_first": "copy first frame",
    "mean_frame": "mean frame (oracle)",
    "copy_prev": "copy previous ground truth (oracle)",
}
"""How figures, tables and charts name them."""
BASELINE_COLUMNS = tuple(f"val_psnr_{name}" for name in BASELINE_NAMES)
MARGIN_COLUMN = "val_psnr_margin"
"""``val_psnr - val_psnr_copy_first``: above 0 the model beats copying the first frame."""

EVAL_COLUMNS = (
    "val_ssim", "val_ssim_copy_first",
    "val_psnr_mean_of_k", "val_psnr_best_of_k", "val_psnr_std_of_k", "val_ssim_mean_of_k", "val_ssim_best_of_k",
    "val_psnr_z0", "val_psnr_no_prev", "val_psnr_swapped_frame", "val_kl", "val_active_units",
)
"""How a stochastic predictor is evaluated (:mod:`cvae.core.evaluate`; docs/evaluation.md), per validation:

- ``val_ssim``: SSIM of the lab's rollout (the one ``val_psnr`` scores), ``val_ssim_copy_first`` its baseline;
- ``val_psnr_mean_of_k`` / ``_best_of_k`` / ``_std_of_k``, ``val_ssim_mean_of_k`` / ``_best_of_k``: over K
  rollouts with z drawn from the prior (``val_samples``; the first is the lab's rollout), per video the mean,
  the best and the standard deviation of the samples' average PSNR (SSIM), then averaged over videos;
- ``val_psnr_z0``: the rollout with z = 0, the prior's mean;
- ``val_psnr_no_prev``: the frame input replaced at every step by the clip's first frame (what the model takes
  from the recent past); ``val_psnr_swapped_frame``: by a frame of another video (what it takes of the look);
- ``val_kl``: the posterior's KL from the prior on the validation frames (nats per frame, as ``train_kl``);
  ``val_active_units``: latent channels whose posterior mean varies over the data (variance > 0.01, Burda
  et al. 2016).
"""
METRIC_COLUMNS = (
    "epoch", "train_loss", "train_mse", "train_kl", "train_psnr", "val_loss", "val_psnr", *BASELINE_COLUMNS,
    MARGIN_COLUMN, *EVAL_COLUMNS, "beta", "tfr", "tf_fraction", "lr", "frames_per_s", "train_seconds",
    "val_seconds", "epoch_seconds",
)
"""``metrics.csv``'s header: one row per epoch."""
TRIAL_COLUMNS = ("val_psnr", *BASELINE_COLUMNS, MARGIN_COLUMN, *EVAL_COLUMNS)
"""The columns a sweep trial records at the epoch its value comes from (whatever its metric): in
``trial.json``, as Optuna user attributes (:func:`trial_attr`), in :func:`trial_row`."""

FRAME_COLUMNS = ("psnr", "ssim", "psnr_mean_of_k", "psnr_best_of_k", "ssim_best_of_k", "psnr_z0", "psnr_no_prev",
                 "psnr_swapped_frame")
"""``psnr_per_frame.csv``'s curves (after ``epoch, frame``): each predicted frame's score, averaged over the
validation videos; ``*_best_of_k`` follow each video's best sample (by its average), as SVG reports it."""
LATENT_COLUMNS = ("epoch", "channel", "kl", "mean_var", "active")
"""``latents.csv``: per validation and latent channel, its KL from the prior (nats per frame, summed over the
channel's positions), the variance over the data of its posterior mean (averaged over positions), and
whether it is active (``mean_var`` > :data:`ACTIVE_THRESHOLD`)."""
ACTIVE_THRESHOLD = 0.01
"""Burda et al. (2016): a latent unit is active when the variance over the data of its posterior mean exceeds this."""

# -- W&B ------------------------------------------------------------------------------------------------------
WANDB_KEYS = {
    "train_loss": "train/loss", "train_mse": "train/mse", "train_kl": "train/kl", "train_psnr": "train/psnr",
    "val_psnr": "val/psnr", "val_loss": "val/loss",
    **{col: col.replace("val_", "val/", 1) for col in (*BASELINE_COLUMNS, MARGIN_COLUMN, *EVAL_COLUMNS)},
    "beta": "schedule/beta", "tfr": "schedule/tfr", "lr": "lr", "frames_per_s": "perf/frames_per_s",
}
"""``metrics.csv`` column -> the W&B history key it is logged under (against the ``epoch`` x-axis)."""
COLUMN_OF_WANDB_KEY = {key: col for col, key in WANDB_KEYS.items()}
"""W&B history key -> ``metrics.csv`` column."""
FRAME_TABLE_BASELINES = {f"psnr_{name}": name for name in BASELINE_NAMES}
"""The W&B per-frame table's baseline columns -> the baselines' names (``frames`` columns in analysis)."""


def default_goal(metric: str) -> str:
    """A metric's direction when a spec does not say: ``minimize`` for a loss, an MSE or a KL, ``maximize``
    for the rest (PSNRs, SSIMs, active units)."""
    name = metric_column(metric)
    return "minimize" if any(part in name for part in ("loss", "mse", "kl")) else "maximize"


def metric_column(metric: str) -> str:
    """The ``metrics.csv`` column of a sweep metric given by its W&B key (``val/psnr`` -> ``val_psnr``);
    a metric that is already a column name is returned as it is."""
    return COLUMN_OF_WANDB_KEY.get(metric, metric)


# -- Optuna ---------------------------------------------------------------------------------------------------
SLOT = "cvae:slot"
"""User attribute: the queue slot a trial fills (``g<config id>-r<replicate>`` on a grid, ``s<i>-r<rep>``)."""
REPLICATE = "cvae:replicate"
CONFIG_ID = "cvae:config_id"
"""User attribute: a short id of the parameter set; replicates share it."""
RUN_DIR = "cvae:run_dir"
RUN_ID = "cvae:wandb_run_id"
WANDB_PATH = "cvae:wandb_run_path"
"""User attribute: where the trial's W&B run is: ``entity/project/run_id`` online, its local run folder offline
(``wandb sync`` that folder to upload it; the run keeps the id :data:`RUN_ID`)."""
WANDB_URL = "cvae:wandb_url"
"""User attribute: the W&B run's page (online runs only)."""
REASON = "cvae:fail_reason"
HEARTBEAT = "cvae:heartbeat"
"""System attribute: the worker's last heartbeat (storages without Optuna's native heartbeat)."""
READY = "cvae:ready"
"""Study attribute: the queue is filled."""
UID = "cvae:uid"
"""Study attribute: a random id that keeps W&B run ids of two studies with one name apart."""
DESCRIPTION = "cvae:description"
"""Study attribute: the spec's ``description`` (also the study's note in optuna-dashboard)."""
SPEC = "cvae:spec"
"""Study attribute: the spec's metric, goal, method and output_dir (the analysis reads the metric from it)."""
RETRY_HISTORY = "retry_history"
FAILED_TRIAL = "failed_trial"
"""System attributes Optuna's ``RetryFailedTrialCallback`` convention sets on a retry: every earlier
trial of the chain, and the first one."""


def trial_attr(column: str) -> str:
    """The user attribute holding one of a trial's :data:`TRIAL_COLUMNS`: ``cvae:val_psnr_copy_first``,
    ``cvae:val_ssim``, ..."""
    return f"cvae:{column}"



STATES = ("complete", "pruned", "failed", "running", "waiting")
"""Trial states as records, tables and W&B tags name them."""
STATE_OF_OPTUNA = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
                   "WAITING": "waiting"}
"""Optuna's ``TrialState`` names -> :data:`STATES`."""


def state_name(state: Any) -> str:
    """The record name of an Optuna ``TrialState`` (or of its name)."""
    name = getattr(state, "name", str(state))
    return STATE_OF_OPTUNA.get(name, name.lower())


def run_key(trial: Any) -> int:
    """The number of the first trial of a retry chain: it names the run folder and the W&B run."""
    return int(trial.system_attrs.get(FAILED_TRIAL, trial.number))


def trial_row(trial: Any) -> dict[str, Any]:
    """One Optuna trial (a ``FrozenTrial``) as a flat row: for the status table, ``trials.csv``, the W&B
    summary table and the analysis loaders."""
    start, end = trial.datetime_start, trial.datetime_complete
    return {
        "trial": trial.number, "run": run_name(run_key(trial)), "state": state_name(trial.state),
        "value": trial.value,
        "epochs": max(trial.intermediate_values) + 1 if trial.intermediate_values else 0,
        "duration_s": (end - start).total_seconds() if start and end else None,
        "replicate": trial.user_attrs.get(REPLICATE, 0), "config_id": trial.user_attrs.get(CONFIG_ID),
        "run_dir": trial.user_attrs.get(RUN_DIR), "wandb_run_id": trial.user_attrs.get(RUN_ID),
        "reason": trial.user_attrs.get(REASON, ""),
        "retry_of": (trial.system_attrs.get(RETRY_HISTORY) or [None])[-1],
        **{col: trial.user_attrs.get(trial_attr(col)) for col in TRIAL_COLUMNS},
        **{f"param/{k}": v for k, v in trial.params.items()},
    }


# -- trial.json -----------------------------------------------------------------------------------------------
@dataclass
class TrialRecord:
    """``trial.json``: a sweep trial's record in its run folder, written at its start and at its end.

    The outcome is on disk before W&B is told; analysis reads it without Optuna or W&B. Unknown keys (a newer
    writer) are kept in :attr:`extra` and written back.
    """

    study: str
    trial_number: int | None
    run_key: int | None = None
    retry_of: list[int] = field(default_factory=list)
    slot: str | None = None
    replicate: int = 0
    config_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    state: str = "running"
    metric: str = "val/psnr"
    goal: str = "maximize"
    value: float | None = None
    best_epoch: int | None = None
    epochs_done: int = 0
    reason: str = ""
    wandb_run_id: str | None = None
    wandb_mode: str | None = None
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    worker: dict[str, Any] = field(default_factory=dict)
    val_psnr: float | None = None
    """The lab's validation PSNR at the value's epoch (the value itself when the metric is ``val/psnr``)."""
    val_psnr_copy_first: float | None = None
    val_psnr_mean_frame: float | None = None
    val_psnr_copy_prev: float | None = None
    val_psnr_margin: float | None = None
    # The evaluation at the value's epoch (EVAL_COLUMNS; None where not measured).
    val_ssim: float | None = None
    val_ssim_copy_first: float | None = None
    val_psnr_mean_of_k: float | None = None
    val_psnr_best_of_k: float | None = None
    val_psnr_std_of_k: float | None = None
    val_ssim_mean_of_k: float | None = None
    val_ssim_best_of_k: float | None = None
    val_psnr_z0: float | None = None
    val_psnr_no_prev: float | None = None
    val_psnr_swapped_frame: float | None = None
    val_kl: float | None = None
    val_active_units: float | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrialRecord:
        """A record from ``trial.json``'s object; missing keys take their defaults, unknown ones go to extra."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in raw.items() if k in names}
        known.setdefault("study", "")
        known.setdefault("trial_number", None)
        return cls(**known, extra={k: v for k, v in raw.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    def update(self, **values: Any) -> None:
        for key, value in values.items():
            if key in self.__dataclass_fields__ and key != "extra":
                setattr(self, key, value)
            else:
                self.extra[key] = value

    @classmethod
    def read(cls, path: str | os.PathLike) -> TrialRecord:
        """Raises ``json.JSONDecodeError`` for a file cut off mid-write and ``TypeError`` for JSON that is
        not an object."""
        raw = json.loads(Path(path).read_text())
        if not isinstance(raw, dict):
            raise TypeError(f"a {type(raw).__name__}, not a JSON object of the trial's record")
        return cls.from_dict(raw)

    def write(self, path: str | os.PathLike) -> None:
        """Atomically: a reader sees the old record or the new one, never half of it."""
        path = Path(path)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        os.replace(tmp, path)


# -- reading the records' CSVs (torch- and PIL-free: the analysis and the W&B layer read them too) ----------
def _bad_row(header: Sequence[str], fields: Sequence[str], numeric: bool) -> str | None:
    """Why a row is not whole: a field count other than the header's or, when the CSV holds numbers only,
    a field that is not a number (an empty field is a NaN)."""
    if len(fields) != len(header):
        return f"{len(fields)} field(s) where the header has {len(header)}"
    if numeric:
        for name, text in zip(header, fields, strict=True):
            if text == "":
                continue
            try:
                float(text)
            except ValueError:
                return f"{name}={text!r} is not a number"
    return None


def read_table(path: str | os.PathLike, *, numeric: bool = False, warn: Callable[[str], None] | None = None,
               ) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the whole rows of a CSV as dicts of strings.

    A row that is not whole (another field count than the header's; with ``numeric``, as for ``metrics.csv``,
    ``psnr_per_frame.csv`` and ``baselines.csv``, a field that is not a number; or a last line without its
    newline: every writer ends a row with one) is dropped, and ``warn`` (default: the ``cvae`` logger's
    warning) is told the file, the line and why, once per row: a run may still be writing it. An empty file
    is no header and no rows.
    """
    path = Path(path)
    warn = warn or logging.getLogger("cvae").warning
    with path.open(newline="") as fh:
        text = fh.read()
    total = len(io.StringIO(text).readlines())
    cut = not text.endswith(("\n", "\r"))
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return [], []
    rows = []
    for fields in reader:
        if not fields:
            continue  # a blank line
        line = reader.line_num
        why = _bad_row(header, fields, numeric)
        if why is None and cut and line == total:
            why = "the file ends in the middle of it (no newline)"
        if why is not None:
            hint = "a run may still be writing it" if line == total else "a damaged row"
            warn(f"{path}: skipping line {line}: {why} ({hint})")
            continue
        rows.append(dict(zip(header, fields, strict=True)))
    return header, rows


def read_csv(path: str | os.PathLike, *, numeric: bool = False,
             warn: Callable[[str], None] | None = None) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of strings; rows that are not whole are dropped (see :func:`read_table`)."""
    return read_table(path, numeric=numeric, warn=warn)[1]
