"""Parameter importances of a sweep, from its complete runs, without its Optuna storage.

An in-memory study is rebuilt from the ``runs`` table (one trial per complete run with a metric value) and
:func:`optuna.importance.get_param_importances` is fitted on it with PED-ANOVA, Optuna's default evaluator
since 5.0 and free of extra packages, or with fANOVA (the default before 5.0) when scikit-learn is installed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from cvae.analysis.groups import natural_key, python, values
from cvae.analysis.load import SweepData

MIN_IMPORTANCE_RUNS = 4
"""Complete runs (with a metric value) below which importances are noise and not computed."""
FEW_IMPORTANCE_RUNS = 10
"""Complete runs below which importances are computed but rough: their caption says so."""


def too_few_reason(n_runs: int, metric: str) -> str:
    """Why no importances: ``importances need at least 4 complete trials with a val/psnr value, this sweep has 2``."""
    return (f"importances need at least {MIN_IMPORTANCE_RUNS} complete trials with a {metric} value, this sweep has "
            f"{n_runs}")


class Importances(dict):
    """Parameter -> importance (sums to 1, most important first).

    ``reason`` says why it is empty; ``method`` how it was computed; ``n_runs`` the complete runs it used;
    ``left_out`` the swept parameters missing in some of them (conditional ones); ``one_value`` those with one
    value in all of them (a categorical the sampler gave one value), not ranked."""

    def __init__(self, values: Mapping[str, float] | None = None, *, reason: str = "", n_runs: int = 0,
                 left_out: Sequence[str] = (), method: str = "", one_value: Sequence[str] = ()):
        super().__init__(values or {})
        self.reason = reason
        self.n_runs = n_runs
        self.left_out = list(left_out)
        self.method = method
        self.one_value = list(one_value)

    @property
    def caveat(self) -> str:
        """What to say beside the importances: why there are none, that few trials make them rough, or ""."""
        if not self:
            return self.reason
        if self.n_runs < FEW_IMPORTANCE_RUNS:
            return (f"from only {self.n_runs} complete trials (fewer than {FEW_IMPORTANCE_RUNS}): rough, a ranking "
                    "more trials may change")
        return ""


def complete_with_values(data: SweepData) -> pd.DataFrame:
    """The complete runs that have a metric value, ``value`` numeric."""
    runs = data.runs
    if runs.empty or "state" not in runs:
        return runs.iloc[0:0]
    v = values(data)
    return runs[(runs["state"] == "complete") & np.isfinite(v.to_numpy(dtype=float))].assign(value=v)


def importance_inputs(data: SweepData) -> tuple[pd.DataFrame, list[str], list[str], str]:
    """(complete runs with a value, the varying swept parameters, those left out, why not computable or "")."""
    ok = complete_with_values(data)
    if len(ok) < MIN_IMPORTANCE_RUNS:
        return ok, [], [], too_few_reason(len(ok), data.metric)
    params = [p for p in data.params if p in ok.columns]
    left_out = [p for p in params if ok[p].isna().any()]
    varying = [p for p in params if p not in left_out and ok[p].astype(str).nunique() > 1]
    if len(varying) < 2:
        if not varying:
            return ok, varying, left_out, f"no swept parameter varies among the {len(ok)} complete runs"
        return ok, varying, left_out, (f"only {varying[0]} varies among the {len(ok)} complete runs: a single "
                                       f"parameter's importance is 1 by definition")
    if ok["value"].nunique() < 2:
        return ok, varying, left_out, f"{data.metric} is the same for every complete run"
    return ok, varying, left_out, ""


def evaluator(n_runs: int, seed: int) -> tuple[Any, str]:
    """fANOVA (a variance decomposition; Optuna's default before 5.0) when scikit-learn is installed, else
    PED-ANOVA (Optuna 5's default; no extra package), aimed at the top quantile that holds about 5 runs
    (Optuna's advice), between 10% and 50%. Returns the evaluator and how to describe it."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    try:
        import sklearn  # noqa: F401
    except ImportError:
        q = min(0.5, max(0.1, 5 / n_runs))
        return (PedAnovaImportanceEvaluator(target_quantile=q, evaluate_on_local=False),
                f"PED-ANOVA: how much each parameter matters to reach the top {q:.0%} of the metric")
    return FanovaImportanceEvaluator(seed=seed), "fANOVA: each parameter's share of the metric's variance"


def _distributions(ok: pd.DataFrame, varying: Sequence[str], log_params: Sequence[str] = ()
                   ) -> tuple[dict[str, Any], dict[str, Callable]]:
    """Optuna distributions of the observed values: int/float ranges (log for ``log_params``, the
    log-distributed ones, and where they span two decades), categorical for booleans and text; with the
    conversion of each value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists: dict[str, Any] = {}
    convert: dict[str, Callable[[Any], Any]] = {}
    for p in varying:
        vals = [python(v) for v in ok[p].tolist()]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            low, high = min(vals), max(vals)
            log = low > 0 and (p in log_params or high / low >= 100)
            if all(isinstance(v, int) for v in vals):
                dists[p], convert[p] = IntDistribution(int(low), int(high), log=log), int
            else:
                dists[p], convert[p] = FloatDistribution(float(low), float(high), log=log), float
        elif all(isinstance(v, bool) for v in vals):
            dists[p], convert[p] = CategoricalDistribution(sorted(set(vals))), bool
        else:
            dists[p] = CategoricalDistribution(sorted({str(v) for v in vals}, key=natural_key))
            convert[p] = str
    return dists, convert


def param_importances(data: SweepData, *, seed: int = 0) -> Importances:
    """Importances of the swept parameters for the sweep's metric, from the complete runs alone.

    No Optuna storage is needed: an in-memory study is rebuilt from ``runs`` (one trial per complete run, so
    replicates count separately; categorical distributions for text and booleans, int/float ranges from the
    observed min and max for numbers) and :func:`optuna.importance.get_param_importances` is fitted on it,
    with PED-ANOVA (Optuna's default evaluator), or fANOVA when scikit-learn is installed (see
    :func:`evaluator`; ``.method`` says which). Parameters missing in some complete runs (conditional ones) are
    left out (``.left_out``).

    Empty, with ``.reason`` set, when fewer than :data:`MIN_IMPORTANCE_RUNS` complete runs have a value, fewer
    than two swept parameters vary among them (one parameter's importance is 1 by definition), the metric is
    the same for all, or the fit fails.
    """
    import optuna
    from optuna.importance import get_param_importances
    from optuna.trial import create_trial

    ok, varying, left_out, reason = importance_inputs(data)
    if reason:
        return Importances(reason=reason, n_runs=len(ok), left_out=left_out)
    one_value = [p for p in data.params if p in ok.columns and p not in varying and p not in left_out]
    dists, convert = _distributions(ok, varying, data.log_params)
    fitter, method = evaluator(len(ok), seed)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(direction="maximize" if data.goal == "maximize" else "minimize")
            for _, row in ok.iterrows():
                study.add_trial(create_trial(params={p: convert[p](python(row[p])) for p in varying},
                                             distributions=dists, value=float(row["value"])))
            result = get_param_importances(study, evaluator=fitter)
    except Exception as err:  # noqa: BLE001 - a fit that fails is a figure that says why
        return Importances(reason=f"the importance fit failed ({type(err).__name__}: {err})", n_runs=len(ok),
                           left_out=left_out, method=method, one_value=one_value)
    finally:
        optuna.logging.set_verbosity(level)
    ordered = dict(sorted(((k, float(v)) for k, v in result.items()), key=lambda kv: -kv[1]))
    return Importances(ordered, n_runs=len(ok), left_out=left_out, method=method, one_value=one_value)
