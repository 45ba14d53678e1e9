"""A spec's ``parameters``: W&B's parameter syntax (``value``, ``values``, ``distribution`` + ``min``/``max``/``q``,
``probabilities``) and ours (``when`` conditions, named choices with ``sets``), read into :class:`Param`.

Every W&B distribution is either mapped to an Optuna distribution of the same support or refused by name
(:data:`UNSUPPORTED_DISTRIBUTIONS`); nothing is approximated silently. :func:`parse_params` reads a whole
``parameters`` mapping and appends one message per problem to ``errors``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from cvae.core.config import FIELD_TYPES, FLAT_KEYS, TrackConfig


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


TRACKING_KEYS = tuple(f.name for f in dataclasses.fields(TrackConfig))
"""``cvae train``'s W&B keys: a trial's run is the spec's ``wandb`` section's."""
OWNED_KEYS = ("save_root", "resume", "ckpt_path", "progress", *TRACKING_KEYS)
"""Training keys the sweep sets for every trial; a spec may not set them."""


def owned_message(keys: Sequence[str]) -> str:
    """The error text for training keys a spec may not set."""
    hint = " (a trial's W&B run follows the spec's wandb section)" if set(keys) & set(TRACKING_KEYS) else ""
    return f"{', '.join(keys)} set by the sweep for every trial{hint}"


PARAM_KEYS = ("value", "values", "distribution", "min", "max", "q", "when", "sets", "probabilities")




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


def expand(params: tuple[Param, ...], i: int, chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
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
            errors.append(f"{where}.sets.{choice}: {owned_message(owned)}")
            ok = False
    return Param(name, "categorical", tuple(values), when=when, sets={k: dict(v) for k, v in sets.items()}) if ok else None


def parse_params(raw: Any, method: Any, errors: list[str]) -> tuple[Param, ...]:
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
            errors.append(f"{where}: {pname} is{owned_message([pname]).removeprefix(pname)}")
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
