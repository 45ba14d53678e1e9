"""The sweep spec: a YAML file a W&B Sweeps user reads at a glance, validated whole before anything runs.

W&B's keys keep W&B's meaning (``name``, ``description``, ``method``, ``metric``, ``run_cap``, ``parameters``,
``early_terminate``, ``program``, ``command``, ``project``, ``entity``): a stock W&B sweep file runs unchanged
when its parameters name ``cvae train`` keys, and what of it cannot be honoured is refused by name or, for
``program`` and ``command``, ignored with one warning. The rest are ours (``base``, ``replicates``, ``workers``, ``storage``,
``wandb``, ``output_dir``, ``pruner``, ``sampler``, ``synth``, ``heartbeat``, ``max_retry``, ``seed``,
``grid_order``, and a parameter's ``when``). Paths are relative to the working directory, as the lab's
flags are; a ``base`` given as a path is relative to the spec file.

The ``metric``, ``wandb``, ``pruner`` (or ``early_terminate``), ``sampler``, ``heartbeat``, ``synth`` sections and
``program``/``command`` are typed (:mod:`cvae.sweeps.spec_types`), each read by its own ``parse``; this module never imports
``cvae.sweeps.space``, which reads the spec.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import random
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from cvae.core.config import (
    FIELD_TYPES,
    FLAT_KEYS,
    ConfigError,
    ExperimentConfig,
    RunConfig,
    TrackConfig,
    load_yaml_config,
    read_yaml_mapping,
)
from cvae.sweeps.spec_types import (
    CommandSpec,
    HeartbeatSpec,
    MetricSpec,
    PrunerSpec,
    SamplerSpec,
    SynthSpec,
    WandbSpec,
    read_int,
    read_mapping,
)

from cvae.secrets import has_password

METHODS = ("grid", "random", "bayes", "tpe", "cmaes", "gp", "qmc")
SUPPORTED_DISTRIBUTIONS = (
    "constant", "categorical", "categorical_w_probabilities", "int_uniform", "uniform", "q_uniform", "log_uniform",
    "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values",
)
"""W&B's distributions that map to an Optuna distribution of the same support (see :func:`_parse_param`)."""
UNSUPPORTED_DISTRIBUTIONS = {
    "normal": "its support is unbounded, and Optuna samples bounded ranges",
    "q_normal": "its support is unbounded, and Optuna samples bounded ranges",
    "log_normal": "its support is unbounded above, and Optuna samples bounded ranges",
    "q_log_normal": "its support is unbounded above, and Optuna samples bounded ranges",
    "beta": "Optuna samples a range uniformly or log-uniformly, never by a beta density",
    "q_beta": "Optuna samples a range uniformly or log-uniformly, never by a beta density",
}
"""W&B's distributions with no Optuna equivalent, each refused by name with why."""
DISTRIBUTION_OPTIONS = ("mu", "sigma", "a", "b")
"""W&B's options of the refused distributions (not reported as unknown keys: the distribution is the problem)."""
Q_DEFAULT = 1.0
"""W&B's ``q`` when a quantized distribution gives none."""
MAX_CHOICES = 1000
"""The most values a quantized log-uniform parameter may take (each a categorical choice)."""
PROBABILITY_TOLERANCE = 1e-6
GRID_ORDERS = ("listed", "shuffled")
"""``grid_order``: the grid runs as its parameters list it (W&B's order), or shuffled with ``seed`` (Optuna's)."""
TRACKING_KEYS = tuple(f.name for f in dataclasses.fields(TrackConfig))
"""``cvae train``'s W&B keys: a trial's run is the spec's ``wandb`` section's."""
OWNED_KEYS = ("save_root", "resume", "ckpt_path", "progress", *TRACKING_KEYS)
"""Training keys the sweep sets for every trial; a spec may not set them."""


def _owned(keys: Sequence[str]) -> str:
    """The error text for training keys a spec may not set."""
    hint = " (a trial's W&B run follows the spec's wandb section)" if set(keys) & set(TRACKING_KEYS) else ""
    return f"{', '.join(keys)} set by the sweep for every trial{hint}"

TOP_KEYS = (
    "name", "description", "method", "metric", "run_cap", "parameters", "early_terminate", "pruner", "sampler",
    "base", "replicates", "workers", "storage", "wandb", "output_dir", "synth", "heartbeat", "max_retry", "seed",
    "grid_order", "program", "command", "project", "entity",
)
PARAM_KEYS = ("value", "values", "distribution", "min", "max", "q", "when", "sets", "probabilities")


MAX_TRIALS = 10_000
"""The most trials a sweep may queue (parameter sets x replicates): each is a training run, and the queue is
written to the study up front."""

MAX_NAME = 100
"""The longest sweep name (its slug): it names the study, the W&B group and runs (W&B run ids stop at 128
characters)."""
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
"""A name that is its own slug (kept as it is: studies made before names were slugged keep their name)."""


class SpecError(ValueError):
    """An invalid sweep spec: one line per problem, each naming the file, the key and the value.

    ``problems`` holds the lines without the file (empty for an error made from a message alone).
    """

    problems: tuple[str, ...] = ()


def spec_error(source: str, problems: str | Sequence[str]) -> SpecError:
    """A SpecError of ``problems``, one line each, each line starting with ``source``."""
    problems = (problems,) if isinstance(problems, str) else tuple(problems)
    err = SpecError("\n".join(f"{source}: {p}" for p in problems))
    err.problems = problems
    return err


def slugify(text: str) -> str:
    """``text`` as a study and folder name: ASCII, lower case, each run of other characters one ``-``
    ("My KL sweep #2" -> "my-kl-sweep-2")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9_.]+", "-", ascii_text.lower()).strip("-_.")


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

    def n_values(self) -> int:
        """How many values a grid takes (without listing them: an int range can be huge)."""
        if self.distribution in ("constant", "categorical"):
            return len(self.values)
        if self.distribution == "int_uniform":
            return (int(self.high) - int(self.low)) // int(self.q or 1) + 1
        if self.distribution == "q_uniform":
            return int(math.floor((self.high - self.low) / self.q + 1e-9)) + 1
        raise SpecError(f"parameter {self.name}: a {self.distribution} distribution has no grid")

    @property
    def is_finite(self) -> bool:
        """True when the parameter has a finite set of values (it can be part of a grid)."""
        return self.distribution in ("constant", "categorical", "int_uniform") or (
            self.distribution == "q_uniform"
        )

    def grid_values(self) -> list[Any]:
        """Every value a grid takes, in order."""
        if self.distribution in ("constant", "categorical"):
            return list(self.values)
        if self.distribution == "int_uniform":
            step = int(self.q or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.distribution == "q_uniform":
            n = int(math.floor((self.high - self.low) / self.q + 1e-9))
            return [round(self.low + i * self.q, 12) for i in range(n + 1)]
        raise SpecError(f"parameter {self.name}: a {self.distribution} distribution has no grid")

    def boundary_values(self) -> list[Any]:
        """Values that exercise a trial config's validation: every choice, or both ends of a range."""
        if self.is_quantized_log:  # ordered multiples of q: the ends
            return [self.values[0], self.values[-1]] if len(self.values) > 1 else list(self.values)
        if self.distribution in ("constant", "categorical"):
            return list(self.values)
        if self.is_finite:
            values = self.grid_values()
            return values if len(values) <= 16 else [values[0], values[-1]]
        low, high = self.low, self.high
        if self.distribution == "log_uniform":
            low, high = math.exp(low), math.exp(high)
        return [low, high]

    def value_range(self) -> tuple[Any, Any]:
        """The lowest and the highest value the parameter takes (a range's ends; without listing a grid)."""
        if self.distribution in ("constant", "categorical"):
            return min(self.values), max(self.values)
        if self.distribution in ("int_uniform", "q_uniform"):
            step = self.q or 1
            n = int(math.floor((self.high - self.low) / step + 1e-9))
            high = self.low + n * step
            if self.distribution == "int_uniform":
                return int(self.low), int(high)
            return self.low, round(high, 12)
        if self.distribution == "log_uniform":
            return math.exp(self.low), math.exp(self.high)
        if self.distribution == "log_uniform_values" and is_int_key(self.name):
            return int(self.low), int(self.high)
        return self.low, self.high

    def active(self, chosen: Mapping[str, Any]) -> bool:
        """Whether this parameter applies given the values chosen so far (its ``when`` condition)."""
        return all(k in chosen and chosen[k] in allowed for k, allowed in self.when.items())


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


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec."""

    name: str
    """The study's name, the W&B group and the default output folder's: the spec's ``name`` slugged."""
    method: str
    objective: MetricSpec
    """The ``metric`` section (``metric``, ``goal``, ``summary`` read it)."""
    params: tuple[Param, ...]
    base: Mapping[str, Any]
    run_cap: int | None
    replicates: int
    workers: int
    storage: str
    output_dir: Path
    wandb: WandbSpec = WandbSpec()
    pruner: PrunerSpec = PrunerSpec()
    sampler: SamplerSpec = SamplerSpec()
    synth: SynthSpec | None = None
    heartbeat: HeartbeatSpec = HeartbeatSpec()
    max_retry: int = 3
    seed: int = 0
    grid_order: str = "listed"
    description: str = ""
    source: str = "spec"
    warnings: tuple[str, ...] = ()
    """What the sweep does otherwise than the spec asks (ignored ``program``/``command``, ``method: bayes``
    as TPE, probabilities a method does not draw with), then what `cvae train` would warn about in the sweep's
    trials (odd but accepted settings); the CLI prints each."""
    display_name: str = ""
    """The spec's ``name`` as written, when it is not its own slug (``name``); else empty."""
    command: CommandSpec = CommandSpec()
    """W&B's ``program`` and ``command``, and what of them is ignored."""

    @property
    def title(self) -> str:
        """The sweep's name as the spec wrote it (for display)."""
        return self.display_name or self.name

    @property
    def data_root(self) -> str | None:
        """The dataset root every trial reads: ``base.DR``, or a constant ``DR`` parameter (a stock W&B file
        has no ``base``, and says ``parameters: {DR: {value: PATH}}``); None when neither gives it."""
        for p in self.params:
            if p.name == "DR" and p.distribution == "constant" and not p.when:
                return str(p.values[0])
        root = self.base.get("DR")
        return str(root) if root else None

    def target_reached(self, value: float | None) -> bool:
        """Whether a trial value reaches ``metric.target`` (>= when maximizing, <= when minimizing); False
        without a target."""
        return self.objective.reached(value)

    def target_reached_in(self, trials: Any) -> int | None:
        """The number of the first of ``trials`` (``study.get_trials()``) that reached ``metric.target``, else
        None: the sweep starts no trial once one has (see :meth:`MetricSpec.reached_by`)."""
        return self.objective.reached_by(trials)

    @property
    def metric(self) -> str:
        """The metric's name (its W&B key, e.g. ``val/psnr``)."""
        return self.objective.name

    @property
    def goal(self) -> str:
        return self.objective.goal

    @property
    def summary(self) -> str:
        return self.objective.summary

    @property
    def direction(self) -> str:
        return self.objective.direction

    @property
    def metric_field(self) -> str:
        return self.objective.field

    @property
    def heartbeat_interval(self) -> int:
        return self.heartbeat.interval

    @property
    def grace_period(self) -> int:
        return self.heartbeat.grace

    @property
    def num_epoch(self) -> NumEpoch:
        """How many epochs the trials run: the base's, or the range of a swept ``num_epoch``."""
        base = int(self.base.get("num_epoch", DEFAULT_NUM_EPOCH))
        ranges: list[tuple[Any, Any]] = []
        base_used = True
        for p in self.params:
            if p.name == "num_epoch":
                ranges.append(p.value_range())
                base_used = base_used and bool(p.when)
            elif p.sets and any("num_epoch" in keys for keys in p.sets.values()):
                values = [keys["num_epoch"] for keys in p.sets.values() if "num_epoch" in keys]
                ranges.append((min(values), max(values)))
                base_used = base_used and (bool(p.when) or not all("num_epoch" in keys for keys in p.sets.values()))
        if not ranges:
            return NumEpoch(base)
        swept = (int(min(r[0] for r in ranges)), int(max(r[1] for r in ranges)))
        return NumEpoch(base, swept, base_used)

    def grid(self) -> list[dict[str, Any]]:
        """Every parameter combination of the grid, conditional branches expanded, duplicates removed."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for combo in _expand(self.params, 0, {}):
            key = json.dumps(combo, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(combo)
        return out

    def grid_points(self) -> list[tuple[int, dict[str, Any]]]:
        """The grid points the sweep runs, in run order, each with its index in ``grid()`` (its queue slot).

        ``grid_order: shuffled`` permutes the whole grid with ``seed`` before ``run_cap`` cuts it, so a capped
        grid is a random subset, and a raised ``run_cap`` extends the same order.
        """
        points = list(enumerate(self.grid()))
        if self.grid_order == "shuffled":
            random.Random(self.seed).shuffle(points)
        return points[: self.run_cap] if self.run_cap else points

    def n_configs(self) -> int:
        """Parameter sets the sweep runs (each ``replicates`` times)."""
        if self.method == "grid":
            return len(self.grid_points())
        return int(self.run_cap or 0)

    def trial_config(self, params: Mapping[str, Any], *, save_root: str | os.PathLike, replicate: int = 0,
                     num_threads: int | None = None) -> ExperimentConfig:
        """The full training config of one trial: base < params < what the sweep owns."""
        flat = dict(self.base)
        bundles = {p.name: p.sets for p in self.params if p.sets}
        for name, value in params.items():
            if name in bundles:
                flat.update(bundles[name][value])
            else:
                flat[name] = value
        flat.update(save_root=str(save_root), resume=True, progress=False)
        if num_threads:
            flat["num_threads"] = num_threads
        cfg = ExperimentConfig.from_flat(flat, source=f"{self.source}: trial config")
        return cfg.replace(seed=cfg.run.seed + replicate) if replicate else cfg


def _expand(params: tuple[Param, ...], i: int, chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if i == len(params):
        yield dict(chosen)
        return
    p = params[i]
    if not p.active(chosen):
        yield from _expand(params, i + 1, chosen)
        return
    for value in p.grid_values():
        chosen[p.name] = value
        yield from _expand(params, i + 1, chosen)
        del chosen[p.name]


def is_int_key(name: str) -> bool:
    """Whether ``name`` is a training key that takes an integer (not a float)."""
    if name not in FIELD_TYPES:
        return False
    hint = FIELD_TYPES[name]
    return hint is int or (int in get_args(hint) and float not in get_args(hint))


def _num(where: str, key: str, value: Any, errors: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append(f"{where}.{key}={value!r} is not a number")
        return None
    return float(value)


def _parse_param(where: str, name: str, raw: Any, errors: list[str]) -> Param | None:
    """One parameter in W&B's syntax, each W&B distribution read as the Optuna distribution of the same support:

    ``uniform``, ``int_uniform``, ``log_uniform_values`` as they are; ``log_uniform`` (min/max are natural-log
    exponents) and ``inv_log_uniform_values`` (log(1/x) uniform: x is log-uniform in [min, max]) as log-uniform
    ranges, ``inv_log_uniform`` as the log-uniform range [exp(-max), exp(-min)]; ``q_uniform`` (round(x/q)*q)
    as the multiples of q from round(min/q)*q to round(max/q)*q (an integer key's as integers); the
    ``q_log_uniform`` ones (Optuna has no quantized log distribution) as a categorical of those multiples with
    W&B's probability for each. W&B's normal, log-normal and beta distributions are refused by name.
    """
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: expected a mapping (value, values or distribution + min/max), got {raw!r}")
        return None
    if "parameters" in raw:
        errors.append(f"{where}.parameters: W&B's nested parameters have no cvae train key (its keys are flat: "
                      "name each one under parameters)")
        return None
    dist = raw.get("distribution")
    unknown = set(raw) - set(PARAM_KEYS)
    if dist in UNSUPPORTED_DISTRIBUTIONS:
        unknown -= set(DISTRIBUTION_OPTIONS)
    if unknown:
        errors.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(PARAM_KEYS)}")
    if dist is None:
        if "value" in raw:
            dist = "constant"
        elif "values" in raw:
            dist = "categorical"
        elif "min" in raw and "max" in raw:
            both_int = all(isinstance(raw[k], int) and not isinstance(raw[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if both_int else "uniform"
        else:
            errors.append(f"{where}: give value, values, or distribution with min/max")
            return None
    if dist in UNSUPPORTED_DISTRIBUTIONS:
        errors.append(f"{where}.distribution={dist!r} has no Optuna equivalent ({UNSUPPORTED_DISTRIBUTIONS[dist]}); "
                      f"supported: {', '.join(SUPPORTED_DISTRIBUTIONS)}")
        return None
    if dist not in SUPPORTED_DISTRIBUTIONS:
        errors.append(f"{where}.distribution={dist!r} is unknown; supported: {', '.join(SUPPORTED_DISTRIBUTIONS)}")
        return None
    when: dict[str, tuple[Any, ...]] = {}
    if "when" in raw:
        if not isinstance(raw["when"], Mapping) or not raw["when"]:
            errors.append(f"{where}.when must map parameter names to lists of values, got {raw['when']!r}")
        else:
            for k, v in raw["when"].items():
                when[str(k)] = tuple(v) if isinstance(v, list | tuple) else (v,)
    if dist == "constant":
        if "value" not in raw:
            errors.append(f"{where}: distribution constant needs value")
            return None
        return Param(name, dist, (raw["value"],), when=when)
    if dist in ("categorical", "categorical_w_probabilities"):
        return _parse_categorical(where, name, raw, dist, when, errors)
    if "probabilities" in raw:
        errors.append(f"{where}.probabilities: probabilities weigh the values of a categorical, not a {dist} range")
        return None
    if "min" not in raw or "max" not in raw:
        errors.append(f"{where}: distribution {dist} needs min and max")
        return None
    low, high = _num(where, "min", raw["min"], errors), _num(where, "max", raw["max"], errors)
    q = _num(where, "q", raw["q"], errors) if "q" in raw else None
    if low is None or high is None or ("q" in raw and q is None):
        return None
    if low > high:
        errors.append(f"{where}: min={raw['min']} > max={raw['max']}")
        return None
    if q is not None and q <= 0:
        errors.append(f"{where}.q={raw['q']} must be > 0")
        return None
    if q is not None and dist not in ("int_uniform", "q_uniform", "q_log_uniform", "q_log_uniform_values"):
        errors.append(f"{where}.q: q quantizes int_uniform and the q_ distributions, not {dist}")
        return None
    if dist == "int_uniform" and not (low.is_integer() and high.is_integer() and (q is None or q.is_integer())):
        errors.append(f"{where}: int_uniform needs integer min/max/q (got {raw['min']}, {raw['max']})")
        return None
    if dist in ("log_uniform_values", "inv_log_uniform_values", "q_log_uniform_values") and low <= 0:
        errors.append(f"{where}: {dist} needs min > 0 (got {raw['min']})")
        return None
    if dist == "inv_log_uniform_values":  # log(1/x) uniform in [log(1/max), log(1/min)]: log(x) in [log(min), log(max)]
        return Param(name, "log_uniform_values", (), low, high, None, when, declared=dist)
    if dist == "inv_log_uniform":  # x = exp(-u), u uniform in [min, max]: log-uniform in [exp(-max), exp(-min)]
        return Param(name, "log_uniform_values", (), math.exp(-high), math.exp(-low), None, when, declared=dist)
    if dist == "q_uniform":
        q = q if q is not None else Q_DEFAULT
        low, high = round(round(low / q) * q, 12), round(round(high / q) * q, 12)  # W&B's round(x / q) * q
        if is_int_key(name) and low.is_integer() and high.is_integer() and q.is_integer():
            return Param(name, "int_uniform", (), low, high, q, when, declared=dist)
        return Param(name, dist, (), low, high, q, when)
    if dist in ("q_log_uniform", "q_log_uniform_values"):
        return _parse_quantized_log(where, name, dist, low, high, q if q is not None else Q_DEFAULT, when, errors)
    return Param(name, dist, (), low, high, q, when)


def _parse_categorical(where: str, name: str, raw: Mapping[str, Any], dist: str, when: dict, errors: list[str],
                       ) -> Param | None:
    values = raw.get("values")
    if not isinstance(values, list):
        errors.append(f"{where}.values must be a list, got {values!r}")
        return None
    if not values:
        errors.append(f"{where}.values is empty")
        return None
    probabilities = None
    if "probabilities" in raw:
        probabilities = _parse_probabilities(where, raw["probabilities"], len(values), errors)
        if probabilities is None:
            return None
    elif dist == "categorical_w_probabilities":
        errors.append(f"{where}: distribution categorical_w_probabilities needs probabilities")
        return None
    sets = raw.get("sets")
    if sets is not None:
        param = _parse_sets(where, name, values, sets, when, errors)
        return dataclasses.replace(param, probabilities=probabilities) if param else None
    lists = [v for v in values if not (v is None or isinstance(v, bool | int | float | str))]
    if lists:
        errors.append(f"{where}.values must be scalars (Optuna's categorical choices), not {lists[0]!r}; "
                      f"a list-valued key takes a string such as '2,5'")
        return None
    return Param(name, "categorical", tuple(values), when=when, probabilities=probabilities)


def _parse_probabilities(where: str, raw: Any, n: int, errors: list[str]) -> tuple[float, ...] | None:
    """W&B's ``probabilities``: one number >= 0 per value, summing to 1."""
    if not isinstance(raw, list) or not all(isinstance(p, int | float) and not isinstance(p, bool) for p in raw):
        errors.append(f"{where}.probabilities={raw!r} must be a list of numbers, one per value")
        return None
    if len(raw) != n:
        errors.append(f"{where}.probabilities has {len(raw)} number(s) for {n} value(s)")
        return None
    if any(p < 0 for p in raw):
        errors.append(f"{where}.probabilities={raw!r} must not be negative")
        return None
    if abs(sum(raw) - 1.0) > PROBABILITY_TOLERANCE:
        errors.append(f"{where}.probabilities={raw!r} sum to {sum(raw):.6g}, not 1")
        return None
    return tuple(float(p) for p in raw)


def _parse_quantized_log(where: str, name: str, dist: str, low: float, high: float, q: float, when: dict,
                         errors: list[str]) -> Param | None:
    """W&B's ``q_log_uniform`` (min/max are exponents) and ``q_log_uniform_values``: round(x/q)*q with x
    log-uniform. Optuna has no quantized log distribution (a log range takes no step), so the parameter is the
    categorical of every multiple of q it can take, each with W&B's probability: the share of [log lo, log hi]
    that rounds to it (method random draws with them; other methods see the choices)."""
    lo, hi = (math.exp(low), math.exp(high)) if dist == "q_log_uniform" else (low, high)
    first, last = round(lo / q), round(hi / q)
    if last - first + 1 > MAX_CHOICES:
        errors.append(f"{where}: {dist} takes {last - first + 1} multiples of q={q:g}: at most {MAX_CHOICES} "
                      "(raise q)")
        return None
    span = math.log(hi) - math.log(lo)
    values: list[Any] = []
    weights: list[float] = []
    for k in range(first, last + 1):
        a, b = max(lo, (k - 0.5) * q), min(hi, (k + 0.5) * q)
        weight = (math.log(b) - math.log(a)) / span if span > 0 else 1.0
        if weight <= 0:
            continue
        values.append(round(k * q, 12))
        weights.append(weight)
    if is_int_key(name):
        if not all(float(v).is_integer() for v in values):
            errors.append(f"{where}: {name} is an integer; {dist} with q={q:g} takes {values[0]!r}, ...")
            return None
        values = [int(v) for v in values]
    total = sum(weights)
    return Param(name, "categorical", tuple(values), when=when, probabilities=tuple(w / total for w in weights),
                 declared=dist)


def _parse_sets(where: str, name: str, values: list, sets: Any, when: dict, errors: list[str]) -> Param | None:
    if not isinstance(sets, Mapping):
        errors.append(f"{where}.sets must map each value to the training keys it sets, got {sets!r}")
        return None
    ok = True
    for value in values:
        if not isinstance(value, str) or value not in sets:
            errors.append(f"{where}.sets has no entry for value {value!r}")
            ok = False
    for choice, keys in sets.items():
        if not isinstance(keys, Mapping) or not keys:
            errors.append(f"{where}.sets.{choice} must be a mapping of training keys, got {keys!r}")
            ok = False
            continue
        bad = sorted(set(keys) - set(FLAT_KEYS))
        owned = sorted(set(keys) & set(OWNED_KEYS))
        if bad:
            errors.append(f"{where}.sets.{choice}: unknown training key(s) {', '.join(bad)}")
            ok = False
        if owned:
            errors.append(f"{where}.sets.{choice}: {_owned(owned)}")
            ok = False
    return Param(name, "categorical", tuple(values), when=when, sets={k: dict(v) for k, v in sets.items()}) if ok else None


def load_spec(path: str | os.PathLike, *, storage: str | None = None, workers: int | None = None) -> SweepSpec:
    """Read and validate a sweep spec; ``storage``/``workers`` override the file's.

    Raises:
        SpecError: every problem found, in one message naming the file and the keys.
    """
    path = Path(path)
    try:
        raw = read_yaml_mapping(path, "sweep spec")
    except ConfigError as err:
        raise SpecError(str(err)) from None
    if not raw:
        raise spec_error(str(path), "the file is empty: a sweep spec must be a mapping of keys to values")
    return parse_spec(raw, source=str(path), base_dir=path.parent, storage=storage, workers=workers,
                      default_name=path.stem)


def parse_spec(raw: Mapping[str, Any], *, source: str = "spec", base_dir: Path = Path("."),
               storage: str | None = None, workers: int | None = None, default_name: str | None = None,
               ) -> SweepSpec:
    """Validate a spec already read from YAML (see :func:`load_spec`): each section is read on its own,
    its problems collected, and all of them raised together, one line each.

    Args:
        default_name: The name of a spec without ``name`` (W&B's is optional): :func:`load_spec` gives the
            file's stem.
    """
    errors: list[str] = []
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        errors.append(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(TOP_KEYS)}")
    name, display_name = _parse_name(raw.get("name", default_name), errors)
    method = raw.get("method")
    if method not in METHODS:
        errors.append(f"method={method!r} is not one of {', '.join(METHODS)}")
    objective = MetricSpec.parse(raw.get("metric"), errors)
    params = _parse_params(raw.get("parameters"), method, errors)
    counts = _parse_counts(raw, method, workers, errors)
    heartbeat = HeartbeatSpec.parse(raw.get("heartbeat"), errors)
    output_dir, storage_url = _parse_storage(raw, name, storage, errors)
    wandb = WandbSpec.parse(raw.get("wandb"), errors, top=raw)
    pruner = PrunerSpec.parse(raw, errors)
    sampler = SamplerSpec.parse(raw.get("sampler"), errors)
    synth = SynthSpec.parse(raw.get("synth"), errors)
    command = CommandSpec.parse(raw, errors)
    if method == "grid" and not errors:
        upper = math.prod(p.n_values() for p in params)  # before `when` drops branches; cheap to compute
        if upper > 10 * MAX_TRIALS:
            errors.append(f"parameters: the grid has up to {upper:.3g} points: at most {MAX_TRIALS} (use method "
                          "random or tpe with a run_cap)")
    base = _parse_base(raw.get("base"), base_dir, errors)
    if errors:
        raise spec_error(source, errors)

    spec = SweepSpec(
        name=name, method="tpe" if method == "bayes" else method, objective=objective, params=params, base=base,
        storage=storage_url, output_dir=output_dir, wandb=wandb, pruner=pruner, sampler=sampler, synth=synth,
        heartbeat=heartbeat, description=str(raw.get("description", "")), source=source, display_name=display_name,
        command=command, **counts,
    )
    trials = spec.n_configs() * spec.replicates
    if trials > MAX_TRIALS:
        raise spec_error(source, f"{spec.n_configs()} parameter set(s) x {spec.replicates} replicate(s) = {trials} "
                                 f"trials: at most {MAX_TRIALS} (cut the grid or run_cap)")
    spec = dataclasses.replace(spec, warnings=_spec_warnings(spec, method) + _check_trial_configs(spec))
    _check_buildable(spec)
    return spec


def _parse_name(name: Any, errors: list[str]) -> tuple[str, str]:
    """``name`` -> (its slug, the study and folder name; the name as written when that differs, else "").

    W&B's name is free text; a name that is already a slug (letters, digits, '_', '-', '.') is kept as it is.
    """
    if name is None:
        errors.append("name is required: the sweep's name (free text; its slug names the study and output folder)")
        return "sweep", ""
    if isinstance(name, bool) or not isinstance(name, str | int | float):
        errors.append(f"name={name!r} must be text")
        return "sweep", ""
    text = str(name).strip()
    slug = text if re.fullmatch(NAME_PATTERN, text) else slugify(text)
    if not slug:
        errors.append(f"name={text[:60]!r} has no letter or digit to name the study and output folder by "
                      "(a name is slugged: 'My KL sweep #2' -> 'my-kl-sweep-2')")
        return "sweep", ""
    if len(slug) > MAX_NAME:
        errors.append(f"name={text[:40]!r}... makes a study name of {len(slug)} characters: at most {MAX_NAME} (it "
                      "names the study, the W&B group and runs)")
        return "sweep", ""
    return slug, "" if slug == text else text


def _spec_warnings(spec: SweepSpec, method: str) -> tuple[str, ...]:
    """What the spec asks for that the sweep does otherwise: ignored ``program``/``command`` (one warning),
    ``method: bayes`` (TPE here), and W&B probabilities a method does not draw with."""
    warnings = [spec.command.warning] if spec.command.warning else []
    if method == "bayes":
        warnings.append("method: bayes runs Optuna's TPE sampler here (W&B's bayes is a Gaussian-process search): "
                        "write method: gp for a Gaussian-process sampler, or method: tpe to keep TPE without "
                        "this warning")
    for p in spec.params:
        if not p.probabilities or spec.method == "random":
            continue
        if p.is_quantized_log:
            if spec.method != "grid":
                warnings.append(f"parameters.{p.name}: method {method} samples {p.declared} as {len(p.values)} "
                                "unordered choices, the multiples of q (Optuna has no quantized log distribution); "
                                "only method random draws them with W&B's probabilities")
        elif spec.method == "grid":
            warnings.append(f"parameters.{p.name}.probabilities ignored: a grid runs every value")
        else:
            warnings.append(f"parameters.{p.name}.probabilities ignored: method {method} chooses values by its own "
                            "model; only method random draws them with these probabilities (as in W&B)")
    return tuple(warnings)


def _parse_params(raw: Any, method: Any, errors: list[str]) -> tuple[Param, ...]:
    """``parameters``: each parameter, then their ``when`` conditions, then what a grid needs of them."""
    params: list[Param] = []
    if not isinstance(raw, Mapping) or not raw:
        errors.append("parameters is required: a mapping of cvae train keys to value/values/distributions")
        raw = {}
    for pname, praw in raw.items():
        where = f"parameters.{pname}"
        is_bundle = isinstance(praw, Mapping) and "sets" in praw
        if pname not in FLAT_KEYS and not is_bundle:
            hint = _key_hint(str(pname))
            errors.append(f"{where}: {pname!r} is not a cvae train key (or a named choice with sets:)"
                          f"{f'; did you mean {hint!r}?' if hint else ''}; valid keys: {', '.join(sorted(FLAT_KEYS))}")
            continue
        if pname in FLAT_KEYS and is_bundle:
            errors.append(f"{where}: a named choice with sets: needs a name that is not a training key")
            continue
        if pname in OWNED_KEYS:
            errors.append(f"{where}: {pname} is{_owned([pname]).removeprefix(pname)}")
            continue
        param = _parse_param(where, pname, praw, errors)
        if param is None:
            continue
        if is_int_key(pname) and param.distribution in ("uniform", "q_uniform", "log_uniform"):
            errors.append(f"{where}: {pname} is an integer; use int_uniform, q_uniform with integer min/max/q, "
                          f"log_uniform_values with integer min/max, or values (not {param.wandb_distribution})")
            continue
        if is_int_key(pname) and param.distribution == "log_uniform_values" and not (
                float(param.low).is_integer() and float(param.high).is_integer()):
            errors.append(f"{where}: {pname} is an integer; {param.wandb_distribution} needs integer min/max "
                          f"(here {param.low:g} and {param.high:g})")
            continue
        params.append(param)
    names = [p.name for p in params]
    for i, p in enumerate(params):
        for ref, allowed in p.when.items():
            if ref not in names:
                errors.append(f"parameters.{p.name}.when names unknown parameter {ref!r}; parameters: {', '.join(names)}")
            elif names.index(ref) > i:
                errors.append(f"parameters.{p.name}.when names {ref!r}, which must be declared above it")
            else:
                target = params[names.index(ref)]
                if target.is_finite:
                    bad = [v for v in allowed if v not in target.grid_values()]
                    if bad:
                        errors.append(f"parameters.{p.name}.when: {ref} never takes {bad!r}")
    if method == "grid":
        for p in params:
            if not p.is_finite:
                errors.append(f"parameters.{p.name}: method grid needs values (or int_uniform / q_uniform), "
                              f"not a continuous {p.distribution} distribution")
    return tuple(params)


WANDB_EXAMPLE_KEYS = {"learning_rate": "lr", "learn_rate": "lr", "epochs": "num_epoch", "optimizer": "optim",
                      "batchsize": "batch_size"}
"""The hyperparameter names of W&B's documentation examples -> the ``cvae train`` key a user most likely means
(a hint in the error only: nothing is renamed)."""


def _key_hint(name: str) -> str | None:
    if name in WANDB_EXAMPLE_KEYS:
        return WANDB_EXAMPLE_KEYS[name]
    close = difflib.get_close_matches(name, list(FLAT_KEYS), n=1, cutoff=0.75)
    return close[0] if close else None


def _parse_counts(raw: Mapping[str, Any], method: Any, workers: int | None, errors: list[str]) -> dict[str, Any]:
    """``run_cap``, ``replicates``, ``workers`` (``workers`` overrides it), ``seed``, ``grid_order`` and
    ``max_retry``: how many trials run, how, and in which order."""
    run_cap = raw.get("run_cap")
    if run_cap is not None:
        run_cap = read_int("run_cap", run_cap, errors, 1)
        if run_cap is not None and run_cap > MAX_TRIALS:
            errors.append(f"run_cap={run_cap} is over {MAX_TRIALS}: a sweep queues every trial up front")
            run_cap = None
    elif method not in (None, "grid") and method in METHODS:
        errors.append(f"run_cap is required with method {method} (the number of parameter sets to try)")
    replicates = read_int("replicates", raw.get("replicates", 1), errors, 1) or 1
    n_workers = read_int("workers", workers if workers is not None else raw.get("workers", 1), errors, 1) or 1
    seed = read_int("seed", raw.get("seed", 0), errors, 0) or 0
    grid_order = raw.get("grid_order", "listed")
    if grid_order not in GRID_ORDERS:
        errors.append(f"grid_order={grid_order!r} is not listed or shuffled")
    elif "grid_order" in raw and method != "grid":
        errors.append(f"grid_order applies to method grid only, not {method}")
    max_retry = read_int("max_retry", raw.get("max_retry", 3), errors, 0)
    return {"run_cap": run_cap, "replicates": replicates, "workers": n_workers, "seed": seed,
            "grid_order": grid_order, "max_retry": max_retry if max_retry is not None else 3}


def _parse_storage(raw: Mapping[str, Any], name: str, storage: str | None, errors: list[str]) -> tuple[Path, str]:
    """``output_dir`` and ``storage`` (``storage`` overrides it; by default a SQLite file in output_dir)."""
    if isinstance(raw.get("storage"), str) and has_password(raw["storage"]):
        errors.append("storage: the spec must not hold a password (it is committed with the spec); set "
                      "CVAE_DB_PASSWORD or CVAE_DB_PASSWORD_FILE, or use PGPASSWORD / ~/.pgpass")
    output_dir = Path(str(raw.get("output_dir") or f"runs/{name}"))
    url = storage or raw.get("storage") or f"sqlite:///{output_dir / 'study.db'}"
    if not isinstance(url, str) or not re.match(r"^(sqlite|postgresql(\+\w+)?|mysql(\+\w+)?|journal):", url):
        errors.append(f"storage={url!r} must be sqlite:///PATH, postgresql+psycopg2://..., or journal:PATH")
    return output_dir, str(url)


def _check_buildable(spec: SweepSpec) -> None:
    """Build the sampler and pruner once, so a wrong option fails here, not when the first trial starts."""
    for what, build in (("sampler", lambda: spec.sampler.build(spec.method, seed=spec.seed, workers=spec.workers)),
                        ("pruner", lambda: spec.pruner.build(spec.num_epoch.max))):
        try:
            build()
        except (TypeError, ValueError, ImportError) as err:
            raise spec_error(spec.source, f"{what} for method {spec.method}: {err}") from None


def _parse_base(raw: Any, base_dir: Path, errors: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        path = Path(raw) if Path(raw).is_absolute() else base_dir / raw
        try:
            raw = load_yaml_config(path)
        except ConfigError as err:
            errors.append(f"base: {err}")
            return {}
    if not isinstance(raw, Mapping):
        errors.append(f"base must be a mapping of cvae train keys or a path to one, got {raw!r}")
        return {}
    raw = read_mapping("base", raw, tuple(sorted(FLAT_KEYS)), errors)
    owned = sorted(set(raw) & set(OWNED_KEYS))
    if owned:
        errors.append(f"base: {_owned(owned)}")
    return {k: v for k, v in raw.items() if k in FLAT_KEYS and k not in OWNED_KEYS}


MAX_CHECKED_CONFIGS = 2048


def representative_params(spec: SweepSpec) -> list[dict[str, Any]]:
    """Parameter sets that stand for the whole space: every grid point, or every combination of each
    parameter's choices and range ends (both at most MAX_CHECKED_CONFIGS)."""
    if spec.method == "grid":
        return spec.grid()[:MAX_CHECKED_CONFIGS]
    boundary = dataclasses.replace(spec, params=tuple(
        Param(p.name, "categorical", tuple(p.boundary_values()), when=p.when) for p in spec.params
    ))
    return list(itertools.islice(boundary.grid(), MAX_CHECKED_CONFIGS))


def _check_trial_configs(spec: SweepSpec) -> tuple[str, ...]:
    """Reject a spec whose trials `cvae train` would refuse (every grid point, or every range's ends).

    Returns:
        What `cvae train` would warn about in those trials, each message once, with the number of trial
        configs it concerns and an example.
    """
    problems: dict[str, list[dict[str, Any]]] = {}
    warned: dict[str, list[dict[str, Any]]] = {}
    combos = representative_params(spec)
    for combo in combos:
        try:
            cfg = spec.trial_config(combo, save_root="x")
        except ConfigError as err:
            message = str(err).split(": ", 2)[-1]
            problems.setdefault(message, []).append(combo)
            continue
        for _, message in cfg.warnings():
            warned.setdefault(message, []).append(combo)
    if problems:
        raise spec_error(spec.source, [f"trials would be rejected by cvae train: {msg} (e.g. with "
                                       f"{examples[0] or 'the base config'})" for msg, examples in problems.items()])
    return tuple(
        message + ("" if len(examples) == len(combos) else
                   f" ({len(examples)} of {len(combos)} trial configs, e.g. {examples[0]})")
        for message, examples in warned.items()
    )


def dump_spec_summary(spec: SweepSpec) -> str:
    """The spec as YAML-ish text (for logs and the W&B summary run)."""
    return yaml.safe_dump({
        "name": spec.name, **({"title": spec.display_name} if spec.display_name else {}), "method": spec.method,
        "metric": {"name": spec.metric, "goal": spec.goal,
                   **({"target": spec.objective.target} if spec.objective.target is not None else {})},
        "run_cap": spec.run_cap, **({"grid_order": spec.grid_order} if spec.method == "grid" else {}),
        "replicates": spec.replicates, "workers": spec.workers,
        "parameters": {p.name: (list(p.values) if p.values else [p.low, p.high]) for p in spec.params},
        "sets": {p.name: dict(p.sets) for p in spec.params if p.sets},
        "base": dict(spec.base), "output_dir": str(spec.output_dir),
    }, sort_keys=False)
