"""The search space: each parameter's values, the grid, how many epochs the trials run, each trial's training
config, and their Optuna form (suggest calls, grid distributions, the study's sampler and pruner).

The spec (:mod:`cvae.sweeps.spec`) reads a file into these parameters and checks its trials with them; this
module never imports the spec (a SweepSpec is only a type here).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

import optuna
from cvae.core.config import FIELD_TYPES, ConfigError, ExperimentConfig, RunConfig
from cvae.sweeps.spec_types import PrunerSpec
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

if TYPE_CHECKING:
    from cvae.sweeps.spec import SweepSpec


def is_int_key(name: str) -> bool:
    """Whether ``name`` is a training key that takes an integer (not a float)."""
    hint = FIELD_TYPES.get(name)
    return hint is int or (int in get_args(hint) and float not in get_args(hint))


@dataclass(frozen=True)
class Param:
    """One swept parameter (W&B syntax) and its condition."""

    name: str
    distribution: str
    values: tuple[Any, ...] = ()
    """categorical choices, or the constant value (one item)."""
    low: float | None = None
    high: float | None = None
    q: float | None = None
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    sets: Mapping[str, Mapping[str, Any]] | None = None
    """A named choice (ours): each value names a group of training keys it sets, e.g. TF1 -> tfr, tfr_sde."""
    probabilities: tuple[float, ...] | None = None
    """A categorical's W&B ``probabilities``, one per value (method random draws with them)."""
    declared: str = ""
    """The distribution as the spec wrote it, where it is read as another: ``inv_log_uniform*`` as
    ``log_uniform_values``, ``q_log_uniform*`` as a categorical of the multiples of ``q`` with W&B's
    probabilities, ``q_uniform`` over an integer key as ``int_uniform`` with step ``q``."""

    @property
    def wandb_distribution(self) -> str:
        """The distribution's W&B name, as the spec wrote it."""
        return self.declared or self.distribution

    @property
    def is_quantized_log(self) -> bool:
        return self.declared in ("q_log_uniform", "q_log_uniform_values")

    @property
    def is_finite(self) -> bool:
        """True when the parameter has a finite set of values (it can be part of a grid)."""
        return self.distribution in ("constant", "categorical", "int_uniform", "q_uniform")

    def n_values(self) -> int:
        """How many values a grid takes (without listing them: an int range can be huge)."""
        if self.distribution in ("constant", "categorical"):
            return len(self.values)
        if not self.is_finite:
            raise ValueError(f"parameter {self.name}: a {self.distribution} distribution has no grid")
        return int(math.floor((self.high - self.low) / (self.q or 1) + 1e-9)) + 1

    def grid_values(self) -> list[Any]:
        """Every value a grid takes, in order."""
        if self.distribution in ("constant", "categorical"):
            return list(self.values)
        if self.distribution == "int_uniform":
            return list(range(int(self.low), int(self.high) + 1, int(self.q or 1)))
        return [round(self.low + i * self.q, 12) for i in range(self.n_values())]

    def boundary_values(self) -> list[Any]:
        """Values that exercise a trial config's validation: every choice, or both ends of a range."""
        if self.is_quantized_log:  # ordered multiples of q: the ends
            return [self.values[0], self.values[-1]] if len(self.values) > 1 else list(self.values)
        if self.distribution in ("constant", "categorical"):
            return list(self.values)
        if self.is_finite:
            values = self.grid_values()
            return values if len(values) <= 16 else [values[0], values[-1]]
        return list(self.value_range())

    def value_range(self) -> tuple[Any, Any]:
        """The lowest and the highest value the parameter takes (a range's ends; without listing a grid)."""
        if self.distribution in ("constant", "categorical"):
            return min(self.values), max(self.values)
        if self.distribution in ("int_uniform", "q_uniform"):
            high = self.low + (self.n_values() - 1) * (self.q or 1)
            return (int(self.low), int(high)) if self.distribution == "int_uniform" else (self.low, round(high, 12))
        if self.distribution == "log_uniform":
            return math.exp(self.low), math.exp(self.high)
        if self.distribution == "log_uniform_values" and is_int_key(self.name):
            return int(self.low), int(self.high)
        return self.low, self.high

    def active(self, chosen: Mapping[str, Any]) -> bool:
        """Whether this parameter applies given the values chosen so far (its ``when`` condition)."""
        return all(k in chosen and chosen[k] in allowed for k, allowed in self.when.items())


def expand(params: tuple[Param, ...], i: int, chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every combination of ``params[i:]``'s grid values given ``chosen`` (inactive parameters skipped)."""
    if i == len(params):
        yield dict(chosen)
        return
    p = params[i]
    if not p.active(chosen):
        yield from expand(params, i + 1, chosen)
        return
    for value in p.grid_values():
        chosen[p.name] = value
        yield from expand(params, i + 1, chosen)
        del chosen[p.name]


def grid(params: tuple[Param, ...]) -> list[dict[str, Any]]:
    """Every parameter combination of the grid, conditional branches expanded, duplicates removed."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for combo in expand(params, 0, {}):
        key = json.dumps(combo, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(combo)
    return out


def grid_points(spec: SweepSpec) -> list[tuple[int, dict[str, Any]]]:
    """The grid points the sweep runs, in run order, each with its index in ``grid()`` (its queue slot).

    ``grid_order: shuffled`` permutes the whole grid with ``seed`` before ``run_cap`` cuts it, so a capped
    grid is a random subset, and a raised ``run_cap`` extends the same order.
    """
    points = list(enumerate(grid(spec.params)))
    if spec.grid_order == "shuffled":
        random.Random(spec.seed).shuffle(points)
    return points[: spec.run_cap] if spec.run_cap else points


DEFAULT_NUM_EPOCH = next(f.default for f in dataclasses.fields(RunConfig) if f.name == "num_epoch")


@dataclass(frozen=True)
class NumEpoch:
    """``num_epoch`` across a sweep's trials: the base's, and the values parameters give it when it is swept
    (a ``num_epoch`` parameter, or a named choice whose ``sets`` hold it)."""

    base: int
    """The base config's (cvae train's default when the base has none)."""
    swept: tuple[int, int] | None = None
    """The lowest and the highest value parameters give num_epoch; None: it is not swept."""
    base_used: bool = True
    """Whether some trials keep the base's value (no parameter sets num_epoch in every trial)."""

    @property
    def is_swept(self) -> bool:
        return self.swept is not None

    @property
    def min(self) -> int:
        """The fewest epochs a trial runs."""
        return min(([self.base] if self.base_used else []) + ([self.swept[0]] if self.swept else []))

    @property
    def max(self) -> int:
        """The most epochs a trial runs: what a pruner that needs to know (Hyperband's ``max_resource``) uses."""
        return max(([self.base] if self.base_used else []) + ([self.swept[1]] if self.swept else []))


def num_epoch(params: tuple[Param, ...], base: Mapping[str, Any]) -> NumEpoch:
    """How many epochs the trials run: the base's, or the range of a swept ``num_epoch``."""
    ranges: list[tuple[Any, Any]] = []
    base_used = True
    for p in params:
        if p.name == "num_epoch":
            ranges.append(p.value_range())
            base_used = base_used and bool(p.when)
        elif p.sets and any("num_epoch" in keys for keys in p.sets.values()):
            values = [keys["num_epoch"] for keys in p.sets.values() if "num_epoch" in keys]
            ranges.append((min(values), max(values)))
            base_used = base_used and (bool(p.when) or not all("num_epoch" in keys for keys in p.sets.values()))
    epochs = NumEpoch(int(base.get("num_epoch", DEFAULT_NUM_EPOCH)))
    if not ranges:
        return epochs
    return NumEpoch(epochs.base, (int(min(r[0] for r in ranges)), int(max(r[1] for r in ranges))), base_used)


def trial_config(spec: SweepSpec, params: Mapping[str, Any], *, save_root: Any, replicate: int = 0,
                 num_threads: int | None = None) -> ExperimentConfig:
    """The full training config of one trial: base < params < what the sweep owns."""
    flat = dict(spec.base)
    bundles = {p.name: p.sets for p in spec.params if p.sets}
    for name, value in params.items():
        if name in bundles:
            flat.update(bundles[name][value])
        else:
            flat[name] = value
    flat.update(save_root=str(save_root), resume=True, progress=False)
    # The epoch a trial is judged by gets the full evaluation (K samples, z = 0, the frame replacements) wherever
    # it runs; on a CPU no other epoch does unless the spec says so (val_eval_every).
    flat.setdefault("val_eval_at", "last" if spec.metric.summary == "last" else "best")
    if num_threads:
        flat["num_threads"] = num_threads
    cfg = ExperimentConfig.from_flat(flat, source=f"{spec.source}: trial config")
    return cfg.replace(seed=cfg.run.seed + replicate) if replicate else cfg


MAX_CHECKED_CONFIGS = 2048


def representative_params(spec: SweepSpec) -> list[dict[str, Any]]:
    """Parameter sets that stand for the whole space: every grid point, or every combination of each
    parameter's choices and range ends (both at most MAX_CHECKED_CONFIGS)."""
    if spec.method == "grid":
        return grid(spec.params)[:MAX_CHECKED_CONFIGS]
    boundary = tuple(Param(p.name, "categorical", tuple(p.boundary_values()), when=p.when) for p in spec.params)
    return list(itertools.islice(grid(boundary), MAX_CHECKED_CONFIGS))


def check_trial_configs(spec: SweepSpec) -> tuple[list[str], tuple[str, ...]]:
    """What `cvae train` would say of the spec's trials (every grid point, or every range's ends).

    Returns:
        The problems that make it refuse some of them, and what it would warn about, each message once, with
        the number of trial configs it concerns and an example.
    """
    problems: dict[str, list[dict[str, Any]]] = {}
    warned: dict[str, list[dict[str, Any]]] = {}
    combos = representative_params(spec)
    for combo in combos:
        try:
            cfg = trial_config(spec, combo, save_root="x")
        except ConfigError as err:
            message = str(err).split(": ", 2)[-1]
            problems.setdefault(message, []).append(combo)
            continue
        for _, message in cfg.warnings():
            warned.setdefault(message, []).append(combo)
    rejected = [f"trials would be rejected by cvae train: {msg} (e.g. with {examples[0] or 'the base config'})"
                for msg, examples in problems.items()]
    return rejected, tuple(
        message + ("" if len(examples) == len(combos) else
                   f" ({len(examples)} of {len(combos)} trial configs, e.g. {examples[0]})")
        for message, examples in warned.items()
    )


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
    """The sampler of ``spec.method`` with the spec's ``sampler`` options (see :class:`SamplerSpec`), which
    Optuna checks here (TypeError, ValueError). A grid's points are enqueued trials, so it needs no GridSampler.

    ``method: random`` with W&B ``probabilities`` (or a quantized log-uniform parameter, a categorical with
    W&B's probabilities) draws those parameters with them (:class:`WeightedRandomSampler`), as W&B's random
    search does; other methods warn (the spec's ``warnings``) that they do not.
    """
    kw = dict(spec.sampler)
    seed = kw.pop("seed", spec.seed)
    weights = {p.name: (p.values, p.probabilities) for p in spec.params if p.probabilities}
    if spec.method in ("grid", "random"):
        return WeightedRandomSampler(weights, seed=seed) if spec.method == "random" and weights else (
            optuna.samplers.RandomSampler(seed=seed))
    if spec.method == "tpe":
        # constant_liar keeps workers that share the study from proposing the same point while others run,
        # whatever ``workers`` says: a one-worker spec may run as a Slurm array of `cvae sweep worker`s.
        kw.setdefault("constant_liar", True)
    samplers = {"tpe": optuna.samplers.TPESampler, "cmaes": optuna.samplers.CmaEsSampler,
                "gp": optuna.samplers.GPSampler, "qmc": optuna.samplers.QMCSampler}
    return samplers[spec.method](seed=seed, **kw)


def first_pruning_step(pruner: PrunerSpec | Mapping[str, Any]) -> int | None:
    """The first step (0-based epoch) at which ``pruner`` (a spec's, or a ``pruner`` section) may stop a
    trial; None: no pruner, or unknown until trials run (successive halving's ``min_resource: auto``)."""
    p = PrunerSpec.of(pruner)
    if p.type in ("median", "percentile"):
        return int(p.n_warmup_steps or 0)
    if p.type == "hyperband":
        return int(p.min_resource if p.min_resource is not None else 1)
    if p.type == "successive_halving" and p.min_resource not in (None, "auto"):
        factor = p.reduction_factor if p.reduction_factor is not None else 4
        return int(p.min_resource) * int(factor) ** int(p.min_early_stopping_rate or 0)
    return None


def make_pruner(spec: SweepSpec, num_epoch: int | None = None) -> optuna.pruners.BasePruner:
    """The pruner of ``spec.pruner`` (W&B's hyperband early_terminate maps to Optuna's HyperbandPruner), with its
    options, which Optuna checks here (TypeError, ValueError).

    Args:
        num_epoch: The most epochs a trial runs, Hyperband's ``max_resource: auto``. By default the spec's
            :attr:`~cvae.sweeps.spec.SweepSpec.num_epoch` ``.max``: the largest value a swept ``num_epoch``
            takes, else the base's.
    """
    pruner = PrunerSpec.of(spec.pruner)
    kw = pruner.options
    if pruner.type == "hyperband" and kw.get("max_resource", "auto") == "auto":
        kw["max_resource"] = num_epoch if num_epoch is not None else spec.num_epoch.max
    return {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
            "percentile": optuna.pruners.PercentilePruner, "hyperband": optuna.pruners.HyperbandPruner,
            "successive_halving": optuna.pruners.SuccessiveHalvingPruner}[pruner.type](**kw)
