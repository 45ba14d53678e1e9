"""The sweep's summary run in W&B: every trial in one table, parameter importances, the spec.

Each trial's own run is :class:`cvae.tracking.WandbRun`, the same tracking ``cvae train --wandb`` uses.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cvae.tracking import finish_run, start_run


# -- the sweep's summary run ----------------------------------------------------------------------------------
def _table_columns(trials: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns (union of keys, first-seen order) and rows W&B's typed Table accepts.

    A W&B Table types each column from its values and rejects a row that disagrees, so a column keeps its
    values only when they are all numbers, all strings or all booleans (missing values are None);
    otherwise, and for anything else (dicts, lists, paths), every value of that column becomes a string.
    """
    columns = list(dict.fromkeys(str(k) for t in trials for k in t))
    rows = [[t.get(c) for c in columns] for t in trials]

    def kind(v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, numbers.Real):
            return "number"
        if isinstance(v, str):
            return "str"
        return "other"

    for j in range(len(columns)):
        kinds = {kind(r[j]) for r in rows if r[j] is not None}
        if len(kinds) > 1 or kinds == {"other"}:
            for r in rows:
                if r[j] is not None and not isinstance(r[j], str):
                    r[j] = json.dumps(r[j], default=str) if isinstance(r[j], (dict, list, tuple)) else str(r[j])
        elif kinds == {"number"}:
            for r in rows:
                if r[j] is not None:
                    r[j] = float(r[j]) if not isinstance(r[j], numbers.Integral) else int(r[j])
    return columns, rows


def log_sweep_summary(*, project: str, entity: str | None, group: str, name: str, run_id: str, mode: str,
                      trials: Sequence[Mapping[str, Any]], importances: Mapping[str, float], spec_text: str,
                      best: Mapping[str, Any] | None = None) -> None:
    """One ``sweep-summary`` run: all trials as a table, parameter importances as a bar chart, the spec.

    Args:
        project: W&B project.
        entity: W&B entity (team or user); None for the default one.
        group: Run group, the study name, so the summary sits with its trials.
        name: Display name of the summary run.
        run_id: Its id; the same id again updates the same run (``resume="allow"``).
        mode: ``online``, ``offline`` or ``disabled`` (nothing is logged).
        trials: One mapping per trial (number, state, value, params, ...); logged as table ``sweep/trials``.
        importances: Parameter -> importance (Optuna's); a bar chart ``sweep/param_importance`` and summary
            ``importance/<param>``, skipped when empty.
        spec_text: The sweep spec as text, stored as ``config["spec"]``.
        best: Optional best trial's values, stored as summary ``best/<key>`` (the caller knows the direction).

    Raises:
        TrackingError: The run could not start (:func:`cvae.tracking.start_run`).
    """
    if mode == "disabled":
        return
    import wandb

    run = start_run(project=project, entity=entity, group=group, name=name, run_id=run_id,
                     config={"spec": spec_text}, tags=[], mode=mode, job_type="sweep-summary", notes=None)
    run_dir = Path(run.sync_dir)
    exit_code = 0
    try:
        data: dict[str, Any] = {}
        if trials:
            columns, rows = _table_columns(trials)
            data["sweep/trials"] = wandb.Table(columns=columns, data=rows)
        values = {str(k): float(v) for k, v in importances.items()}
        if values:
            table = wandb.Table(columns=["parameter", "importance"],
                                data=sorted(([k, v] for k, v in values.items()), key=lambda kv: -kv[1]))
            n = getattr(importances, "n_runs", 0)
            data["sweep/param_importance"] = wandb.plot.bar(
                table, "parameter", "importance", title=f"Parameter importance ({n} complete trials)" if n else
                "Parameter importance")
        if data:
            run.log(data)
        summary: dict[str, Any] = {"n_trials": len(trials)}
        summary.update({f"importance/{k}": v for k, v in values.items()})
        caveat = getattr(importances, "caveat", "")
        if caveat:  # no importances and why, or why they are rough: beside them, not in a log only
            summary["importance_note"] = caveat
        if best:
            summary.update({f"best/{k}": v for k, v in best.items()})
        run.summary.update(summary)
    except Exception:
        exit_code = 1
        raise
    finally:
        finish_run(run, run_dir, exit_code)
