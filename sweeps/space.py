"""Where the spec's search space becomes Optuna: suggest calls, grid distributions, and the study's sampler
and pruner (each built by its spec section, :mod:`cvae.sweeps.spec_types`).

This module depends on the spec, never the other way round: ``cvae.sweeps.spec`` does not import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna
from cvae.sweeps.spec import Param, SweepSpec, is_int_key
from cvae.sweeps.spec_types import PrunerSpec
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution


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
        if is_int_key(param.name):
            return trial.suggest_int(param.name, int(param.low), int(param.high), log=True)
        return trial.suggest_float(param.name, param.low, param.high, log=True)
    if d == "log_uniform":  # W&B: min and max are natural-log exponents
        return trial.suggest_float(param.name, math.exp(param.low), math.exp(param.high), log=True)
    raise ValueError(f"unsupported distribution {d!r}")  # the spec's validation makes this unreachable


def suggest_all(trial: optuna.Trial, spec: SweepSpec, study: optuna.Study | None = None) -> dict[str, Any]:
    """Every active parameter of the trial, in spec order (a ``when`` sees the values chosen above it).

    Enqueued trials (grid points, retries) answer from their fixed parameters. A grid's parameters are
    recorded with distributions that survive an edit of the grid between runs (:func:`grid_distribution`).
    """
    recorded = recorded_distributions(study) if spec.method == "grid" and study is not None else {}
    chosen: dict[str, Any] = {}
    for param in spec.params:
        if not param.active(chosen):
            continue
        if spec.method == "grid" and param.distribution != "constant":
            chosen[param.name] = _suggest_from(trial, param.name, grid_distribution(param, recorded.get(param.name)))
        else:
            chosen[param.name] = suggest(trial, param)
    return chosen


def _suggest_from(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high)
    return trial.suggest_float(name, dist.low, dist.high)


def recorded_distributions(study: optuna.Study) -> dict[str, optuna.distributions.BaseDistribution]:
    """The distribution the study first recorded for each parameter (Optuna checks new ones against it)."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            out.setdefault(name, dist)
    return out


def grid_distribution(param: Param, recorded: optuna.distributions.BaseDistribution | None = None,
                      ) -> optuna.distributions.BaseDistribution:
    """The distribution a grid parameter is recorded with.

    Optuna fixes a categorical parameter's choices for the whole study, so a grid of numbers is recorded as
    an int or float range instead: any later range is compatible, and the grid can grow or shrink between
    runs. Text, booleans and mixed numbers stay categorical; so does a parameter the study already recorded
    as categorical (studies created before this rule), whose choices must then hold every grid value.
    """
    values = param.grid_values()
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    floats = all(isinstance(v, float) for v in values)
    if isinstance(recorded, CategoricalDistribution) or not (ints or floats):
        choices = recorded.choices if isinstance(recorded, CategoricalDistribution) else tuple(values)
        return CategoricalDistribution(choices)
    low, high = min(values), max(values)
    if ints and not isinstance(recorded, FloatDistribution):
        return IntDistribution(int(low), int(high))
    return FloatDistribution(float(low), float(high))


def grid_conflicts(spec: SweepSpec, study: optuna.Study) -> list[str]:
    """What keeps this grid from running in ``study``: values new to a parameter it recorded as categorical."""
    if spec.method != "grid":
        return []
    recorded = recorded_distributions(study)
    problems = []
    for param in spec.params:
        dist = recorded.get(param.name)
        if param.distribution == "constant" or not isinstance(dist, CategoricalDistribution):
            continue
        new = [v for v in param.grid_values() if v not in dist.choices]
        if new:
            problems.append(f"parameters.{param.name}: {new!r} not among the choices {list(dist.choices)!r} that "
                            f"study {spec.name!r} recorded")
    return problems


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """The sampler of ``spec.method`` with the spec's ``sampler`` options (see :class:`SamplerSpec`)."""
    return spec.sampler.build(spec.method, seed=spec.seed, workers=spec.workers)


def first_pruning_step(pruner: PrunerSpec | Mapping[str, Any]) -> int | None:
    """The first step (0-based epoch) at which ``pruner`` (a spec's, or a ``pruner`` section) may stop a
    trial; None: no pruner, or unknown until trials run (successive halving's ``min_resource: auto``)."""
    return PrunerSpec.of(pruner).first_step


def make_pruner(spec: SweepSpec, num_epoch: int | None = None) -> optuna.pruners.BasePruner:
    """The pruner of ``spec.pruner`` (W&B's hyperband early_terminate maps to Optuna's HyperbandPruner).

    Args:
        num_epoch: The most epochs a trial runs, Hyperband's ``max_resource: auto``. By default the spec's
            :attr:`~cvae.sweeps.spec.SweepSpec.num_epoch` ``.max``: the largest value a swept ``num_epoch``
            takes, else the base's.
    """
    return PrunerSpec.of(spec.pruner).build(num_epoch if num_epoch is not None else spec.num_epoch.max)
