"""Where the spec's search space becomes Optuna: suggest calls, grid distributions, and the study's sampler
and pruner (each built by its spec section, :mod:`cvae.sweeps.spec_types`).

This module depends on the spec, never the other way round: ``cvae.sweeps.spec`` does not import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna
from cvae.sweeps.params import Param, is_int_key
from cvae.sweeps.spec import SweepSpec
from cvae.sweeps.spec_types import PrunerSpec
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution


def suggest(trial: optuna.Trial, param: Param) -> Any:
    """Ask ``trial`` for a value of ``param``, mapping W&B's distribution names to Optuna's calls (the spec has
    read ``inv_log_uniform*`` as ``log_uniform_values``, ``q_log_uniform*`` as a categorical)."""
    d = param.distribution
    if d == "constant":
        return param.values[0]
    if d == "categorical":
        return trial.suggest_categorical(param.name, list(param.values))
    if d == "int_uniform":
        return trial.suggest_int(param.name, int(param.low), int(param.high), step=int(param.q or 1))
    if d == "uniform":
        return trial.suggest_float(param.name, param.low, param.high)
    if d == "q_uniform":  # low and high are multiples of q (W&B's round(x / q) * q); an integer key's is int_uniform
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


class WeightedRandomSampler(optuna.samplers.RandomSampler):
    """Optuna's RandomSampler, except that it draws the categorical parameters given in ``weights`` with
    their W&B ``probabilities`` instead of uniformly.

    Why a sampler rather than a custom suggest (e.g. a float in [0, 1) mapped to the cumulative probabilities):
    the parameter stays a categorical of its own values, so the trial's params, the dashboard, importance and
    a retry's enqueued parameters all show and take the chosen value, and the distribution recorded in the
    study is the one other samplers (a later run with method tpe) see. Only the draw changes.
    """

    def __init__(self, weights: Mapping[str, tuple[tuple[Any, ...], tuple[float, ...]]], seed: int | None = None):
        super().__init__(seed=seed)
        self._weights = {name: (tuple(values), tuple(p / sum(probs) for p in probs))
                         for name, (values, probs) in weights.items()}

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        weighted = self._weights.get(param_name)
        if weighted is None or not isinstance(param_distribution, CategoricalDistribution) or (
                tuple(param_distribution.choices) != weighted[0]):
            return super().sample_independent(study, trial, param_name, param_distribution)
        index = int(self._rng.rng.choice(len(weighted[0]), p=weighted[1]))
        return param_distribution.choices[index]


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """The sampler of ``spec.method`` with the spec's ``sampler`` options (see :class:`SamplerSpec`).

    ``method: random`` with W&B ``probabilities`` (or a quantized log-uniform parameter, a categorical with
    W&B's probabilities) draws those parameters with them (:class:`WeightedRandomSampler`), as W&B's random
    search does; other methods warn (the spec's ``warnings``) that they do not.
    """
    weights = {p.name: (p.values, p.probabilities) for p in spec.params if p.probabilities}
    if spec.method == "random" and weights:
        seed = spec.sampler.seed if spec.sampler.seed is not None else spec.seed
        return WeightedRandomSampler(weights, seed=seed)
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
