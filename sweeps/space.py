"""The one place where the spec's search space becomes Optuna: suggest calls, samplers, pruners."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from core.config import FLAT_KEYS
from sweeps.spec import Param, SweepSpec, _is_int_key


def suggest(trial: optuna.Trial, param: Param) -> Any:
    """Ask ``trial`` for a value of ``param``, mapping W&B's distribution names to Optuna's calls."""
    d = param.distribution
    if d == "constant":
        return param.values[0]
    if d == "categorical":
        return trial.suggest_categorical(param.name, list(param.values))
    if d == "int_uniform":
        return trial.suggest_int(param.name, int(param.low), int(param.high), step=int(param.q or 1))
    if d == "uniform":
        return trial.suggest_float(param.name, param.low, param.high)
    if d == "q_uniform":
        return trial.suggest_float(param.name, param.low, param.high, step=param.q)
    if d == "log_uniform_values":
        if param.name in FLAT_KEYS and _is_int_key(param.name):
            return trial.suggest_int(param.name, int(param.low), int(param.high), log=True)
        return trial.suggest_float(param.name, param.low, param.high, log=True)
    if d == "log_uniform":  # W&B: min and max are natural-log exponents
        return trial.suggest_float(param.name, math.exp(param.low), math.exp(param.high), log=True)
    raise ValueError(f"unsupported distribution {d!r}")  # the spec's validation makes this unreachable


def suggest_all(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Every active parameter of the trial, in spec order (a ``when`` sees the values chosen above it).

    Enqueued trials (grid points, retries) answer from their fixed parameters.
    """
    chosen: dict[str, Any] = {}
    for param in spec.params:
        if param.active(chosen):
            chosen[param.name] = suggest(trial, param)
    return chosen


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """The sampler of ``spec.method``. Grid points are enqueued trials, so a grid needs no GridSampler."""
    kw = dict(spec.sampler)
    seed = kw.pop("seed", spec.seed)
    if spec.method in ("grid", "random"):
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.method == "tpe":
        # constant_liar keeps parallel workers from proposing the same point while others run.
        kw.setdefault("constant_liar", spec.workers > 1)
        return optuna.samplers.TPESampler(seed=seed, **kw)
    if spec.method == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **kw)
    if spec.method == "gp":
        return optuna.samplers.GPSampler(seed=seed, **kw)
    if spec.method == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, **kw)
    raise ValueError(f"unknown method {spec.method!r}")


def first_pruning_step(pruner: Mapping[str, Any]) -> int | None:
    """The first step (0-based epoch) at which ``pruner`` may stop a trial; None: no pruner, or unknown
    until trials run (successive halving's ``min_resource: auto``)."""
    kind = pruner.get("type", "none")
    if kind in ("median", "percentile"):
        return int(pruner.get("n_warmup_steps", 0))
    if kind == "hyperband":
        return int(pruner.get("min_resource", 1))
    if kind == "successive_halving":
        min_resource = pruner.get("min_resource", "auto")
        if min_resource == "auto":
            return None
        return int(min_resource) * int(pruner.get("reduction_factor", 4)) ** int(pruner.get("min_early_stopping_rate", 0))
    return None


def make_pruner(spec: SweepSpec, num_epoch: int) -> optuna.pruners.BasePruner:
    """The pruner of ``spec.pruner`` (W&B's hyperband early_terminate maps to Optuna's HyperbandPruner)."""
    kw = {k: v for k, v in spec.pruner.items() if k != "type"}
    kind = spec.pruner.get("type", "none")
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(**kw)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(**kw)
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**kw)
    if kind == "hyperband":
        if kw.get("max_resource", "auto") == "auto":
            kw["max_resource"] = num_epoch
        return optuna.pruners.HyperbandPruner(**kw)
    raise ValueError(f"unknown pruner {kind!r}")
