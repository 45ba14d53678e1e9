"""Reading a study back: counts, the best trial, and terminal tables (rows: :func:`cvae.schema.trial_row`).

Torch-free: ``cvae sweep status`` and ``best`` start without the trainer."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import optuna
from cvae.sweeps.queue import orphaned, trial_params
from cvae.sweeps.spec import SweepSpec
from optuna.trial import FrozenTrial, TrialState

from cvae.schema import MARGIN_COLUMN, RUN_DIR, STATE_OF_OPTUNA, trial_row


def counts(study: optuna.Study) -> Counter:
    return Counter(STATE_OF_OPTUNA.get(t.state.name, "other") for t in study.get_trials(deepcopy=False))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def eta_seconds(study: optuna.Study, workers: int) -> float | None:
    """Remaining time: mean duration of finished trials x trials left, spread over the workers."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.datetime_complete]
    if not done:
        return None
    mean = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) / len(done)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING and t.datetime_start]
    now = time.time()
    left_running = sum(max(0.0, mean - (now - t.datetime_start.timestamp())) for t in running)
    return (waiting * mean + left_running) / max(1, workers)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def trials_table(spec: SweepSpec, study: optuna.Study, *, title: str | None = None):
    """A rich Table of every trial: state, params, metric, epochs, duration."""
    from rich.table import Table

    trials = study.get_trials(deepcopy=False)
    names = [p.name for p in spec.params if len({str(t.params.get(p.name)) for t in trials}) > 1 or
             p.distribution != "constant"]
    table = Table(title=title or f"sweep {spec.name}", show_lines=False)
    margin = "vs copy-first"
    rows = [trial_row(t) for t in trials]
    evaluated = [col for col in EVALUATION if any(r[EVALUATION[col][0]] is not None for r in rows)]
    numeric = {"trial", spec.metric.name, margin, "epochs", *evaluated}
    for col in ("trial", "run", "state", *names, spec.metric.name, margin, *evaluated, "epochs", "duration", "note"):
        table.add_column(col, justify="right" if col in numeric else "left")
    best = best_trial(study)
    copy_first = set()
    for t, row in zip(trials, rows, strict=True):
        style = "bold green" if best is not None and t.number == best.number else None
        if row["val_psnr_copy_first"] is not None:
            copy_first.add(round(row["val_psnr_copy_first"], 2))
        note = row["reason"][:60] or (f"retry of trial {row['retry_of']}" if row["retry_of"] is not None else "")
        params = trial_params(t)  # a queued grid point shows its values before it runs
        table.add_row(
            str(t.number), row["run"], row["state"], *(_fmt(params.get(n)) for n in names), _fmt(t.value),
            "-" if row[MARGIN_COLUMN] is None else f"{row[MARGIN_COLUMN]:+.2f} dB",
            *(_evaluation_cell(row, col) for col in evaluated),
            str(row["epochs"]), fmt_duration(row["duration_s"]), note, style=style,
        )
    captions = []
    if copy_first:
        captions.append(f"vs copy-first: validation PSNR minus copying each clip's first frame ("
                        f"{', '.join(f'{v:.2f}' for v in sorted(copy_first))} dB): below 0, a trial learned nothing")
    if evaluated:
        captions.append(EVALUATION_CAPTION)
    table.caption = "\n".join(captions) or None
    return table


EVALUATION = {
    "SSIM": ("val_ssim", None, "{:.3f}"),
    "best of K": ("val_psnr_best_of_k", None, "{:.2f}"),
    "z spread": ("val_psnr_std_of_k", None, "±{:.2f}"),
    "w/o prev frame": ("val_psnr_no_prev", "val_psnr", "{:+.2f} dB"),
    "other look": ("val_psnr_swapped_frame", "val_psnr", "{:+.2f} dB"),
    "active z": ("val_active_units", None, "{:.0f}"),
}
"""Status columns of the evaluation (docs/evaluation.md): column -> (trial column, the column it is shown
relative to, format)."""
EVALUATION_CAPTION = (
    "SSIM and best of K (PSNR of each video's best of K samples of z) at the trial's value epoch; z spread: "
    "the PSNR's standard deviation over the K samples; w/o prev frame, other look: the PSNR change when the "
    "frame input is the clip's first frame or another video's frame at every step (near 0: the model does not "
    "use it); active z: latent channels whose posterior varies with the data (0: posterior collapse)")


def _evaluation_cell(row: dict[str, Any], column: str) -> str:
    key, relative_to, fmt = EVALUATION[column]
    value = row.get(key)
    if value is None or (relative_to is not None and row.get(relative_to) is None):
        return "-"
    return fmt.format(value - (row[relative_to] if relative_to else 0.0))


def summary_line(spec: SweepSpec, study: optuna.Study, workers: int) -> str:
    c = counts(study)
    best = best_trial(study)
    best_text = f"best {spec.metric.name} {best.value:.4f} (trial {best.number})" if best else "best -"
    left = len(orphaned(study, spec))
    waiting = f"{c['waiting'] - left} waiting" + (
        f" (+{left} queued for grid points no longer in the spec: left as they are, not run)" if left else "")
    return (f"{spec.name}: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed, "
            f"{c['running']} running, {waiting} | {best_text} | "
            + ("runs until stopped (Ctrl-C)" if spec.until_stopped else f"ETA {fmt_duration(eta_seconds(study, workers))}"))


def best_config_text(spec: SweepSpec, study: optuna.Study) -> str:
    best = best_trial(study)
    if best is None:
        return f"{spec.name}: no completed trial yet"
    lines = [f"best trial {best.number} ({best.user_attrs.get(RUN_DIR)}): {spec.metric.name} = {best.value:.4f}"]
    lines += [f"  {k}: {v}" for k, v in best.params.items()]
    return "\n".join(lines)


def rows(study: optuna.Study) -> Sequence[dict[str, Any]]:
    return [trial_row(t) for t in study.get_trials(deepcopy=False)]
