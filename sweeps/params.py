"""A spec's ``parameters``: W&B's parameter syntax (``value``, ``values``, ``distribution`` + ``min``/``max``/``q``,
``probabilities``) and ours (``when`` conditions, named choices with ``sets``).

:class:`ParamSpec` (pydantic) reads a parameter as written; :meth:`ParamSpec.to_param` translates it into a
:class:`Param`, each W&B distribution as the Optuna distribution of the same support or refused by name
(:data:`UNSUPPORTED_DISTRIBUTIONS`): nothing is approximated silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

from cvae.core.config import FLAT_KEYS, TrackConfig
from cvae.sweeps.space import Param, is_int_key
from cvae.sweeps.spec_types import Section, check, is_int, is_number, problems
from pydantic import ValidationError, WithJsonSchema


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
"""W&B's distributions that map to an Optuna distribution of the same support (see :meth:`ParamSpec.to_param`)."""
UNSUPPORTED_DISTRIBUTIONS = {
    "normal": "its support is unbounded, and Optuna samples bounded ranges",
    "q_normal": "its support is unbounded, and Optuna samples bounded ranges",
    "log_normal": "its support is unbounded above, and Optuna samples bounded ranges",
    "q_log_normal": "its support is unbounded above, and Optuna samples bounded ranges",
    "beta": "Optuna samples a range uniformly or log-uniformly, never by a beta density",
    "q_beta": "Optuna samples a range uniformly or log-uniformly, never by a beta density",
}
"""W&B's distributions with no Optuna equivalent, each refused by name with why."""
MAX_CHOICES = 1000
"""The most values a quantized log-uniform parameter may take (each a categorical choice)."""
TRACKING_KEYS = tuple(f.name for f in dataclasses.fields(TrackConfig))
"""``cvae train``'s W&B keys: a trial's run is the spec's ``wandb`` section's."""
OWNED_KEYS = ("save_root", "resume", "ckpt_path", "progress", *TRACKING_KEYS)
"""Training keys the sweep sets for every trial; a spec may not set them."""


def owned_message(keys: Sequence[str]) -> str:
    """The error text for training keys a spec may not set."""
    hint = " (a trial's W&B run follows the spec's wandb section)" if set(keys) & set(TRACKING_KEYS) else ""
    return f"{', '.join(keys)} set by the sweep for every trial{hint}"


Bound = Annotated[int | float | None, check(lambda v: v is None or is_number(v), "is not a number")]


class ParamSpec(Section):
    """One parameter as W&B writes it: ``value``; ``values`` (with ``probabilities``); or ``distribution`` with
    ``min``/``max``/``q``. Ours: ``when`` (a condition on parameters above it) and ``sets`` (a named choice)."""

    NOT_MAPPING: ClassVar[str] = ": expected a mapping (value, values or distribution + min/max), got {!r}"
    UNLISTED: ClassVar[tuple[str, ...]] = ("mu", "sigma", "a", "b", "parameters")

    value: Any = None
    """A constant."""
    values: Annotated[list[Any] | None, check(lambda v: v is None or isinstance(v, list), "must be a list")] = None
    """The choices of a categorical."""
    distribution: Annotated[str | None, check(
        lambda v: v is None or v in SUPPORTED_DISTRIBUTIONS or v in UNSUPPORTED_DISTRIBUTIONS,
        f"is unknown; supported: {', '.join(SUPPORTED_DISTRIBUTIONS)}"),
        WithJsonSchema({"enum": list(SUPPORTED_DISTRIBUTIONS)})] = None
    """W&B's distribution; by default constant, categorical, int_uniform or uniform, from the keys given."""
    min: Bound = None
    max: Bound = None
    q: Bound = None
    """The quantum of int_uniform and the q_ distributions."""
    when: Annotated[dict[str, Any] | None, check(lambda v: v is None or (isinstance(v, Mapping) and bool(v)),
                                                 "must map parameter names to lists of values")] = None
    """The parameter applies only where parameters above it took these values."""
    sets: Annotated[dict[str, Any] | None, check(lambda v: v is None or isinstance(v, Mapping),
                                                 "must map each value to the training keys it sets")] = None
    """A named choice: each value sets these training keys."""
    probabilities: Annotated[list[float] | None, check(lambda v: v is None or (isinstance(v, list) and all(
        is_number(p) for p in v)), "must be a list of numbers, one per value")] = None
    """W&B's: one per value, summing to 1 (method random draws with them)."""
    mu: Any = None
    sigma: Any = None
    a: Any = None
    b: Any = None
    parameters: Any = None

    def to_param(self, name: str, where: str, errors: list[str]) -> Param | None:
        """The :class:`Param`: ``uniform``, ``int_uniform``, ``log_uniform_values`` as they are; ``log_uniform``
        (min/max are natural-log exponents) and ``inv_log_uniform_values`` (log(1/x) uniform: x is log-uniform
        in [min, max]) as log-uniform ranges, ``inv_log_uniform`` as the log-uniform [exp(-max), exp(-min)];
        ``q_uniform`` (round(x/q)*q) as the multiples of q from round(min/q)*q to round(max/q)*q (an integer
        key's as integers); the ``q_log_uniform`` ones (Optuna has no quantized log distribution) as a
        categorical of those multiples with W&B's probability for each. None (and a problem): refused."""
        given = self.model_fields_set

        def bad(text: str) -> None:
            errors.append(where + text)

        dist = self.distribution
        if "parameters" in given:
            return bad(".parameters: W&B's nested parameters have no cvae train key (its keys are flat: name each "
                       "one under parameters)")
        if dist in UNSUPPORTED_DISTRIBUTIONS:
            return bad(f".distribution={dist!r} has no Optuna equivalent ({UNSUPPORTED_DISTRIBUTIONS[dist]}); "
                       f"supported: {', '.join(SUPPORTED_DISTRIBUTIONS)}")
        if given & set(self.UNLISTED):
            return bad(f": unknown key(s) {', '.join(sorted(given & set(self.UNLISTED)))}; valid keys: "
                       f"{', '.join(k for k in type(self).model_fields if k not in self.UNLISTED)}")
        if dist is None:
            if "value" in given:
                dist = "constant"
            elif self.values is not None:
                dist = "categorical"
            elif self.min is not None and self.max is not None:
                dist = "int_uniform" if is_int(self.min) and is_int(self.max) else "uniform"
            else:
                return bad(": give value, values, or distribution with min/max")
        when = {str(k): tuple(v) if isinstance(v, list | tuple) else (v,) for k, v in (self.when or {}).items()}
        if dist == "constant":
            return Param(name, dist, (self.value,), when=when) if "value" in given else bad(
                ": distribution constant needs value")
        if dist in ("categorical", "categorical_w_probabilities"):
            return self._categorical(name, where, dist, when, errors)
        if self.probabilities is not None:
            return bad(f".probabilities: probabilities weigh the values of a categorical, not a {dist} range")
        if self.min is None or self.max is None:
            return bad(f": distribution {dist} needs min and max")
        low, high, q = float(self.min), float(self.max), None if self.q is None else float(self.q)
        if low > high:
            return bad(f": min={self.min} > max={self.max}")
        if q is not None and q <= 0:
            return bad(f".q={self.q} must be > 0")
        if q is not None and dist not in ("int_uniform", "q_uniform", "q_log_uniform", "q_log_uniform_values"):
            return bad(f".q: q quantizes int_uniform and the q_ distributions, not {dist}")
        if dist == "int_uniform" and not (low.is_integer() and high.is_integer() and (q is None or q.is_integer())):
            return bad(f": int_uniform needs integer min/max/q (got {self.min}, {self.max})")
        if dist in ("log_uniform_values", "inv_log_uniform_values", "q_log_uniform_values") and low <= 0:
            return bad(f": {dist} needs min > 0 (got {self.min})")
        if dist == "inv_log_uniform_values":
            return Param(name, "log_uniform_values", (), low, high, None, when, declared=dist)
        if dist == "inv_log_uniform":  # x = exp(-u), u uniform in [min, max]
            return Param(name, "log_uniform_values", (), math.exp(-high), math.exp(-low), None, when, declared=dist)
        if dist == "q_uniform":
            q = q or 1.0
            low, high = round(round(low / q) * q, 12), round(round(high / q) * q, 12)  # W&B's round(x / q) * q
            if is_int_key(name) and low.is_integer() and high.is_integer() and q.is_integer():
                return Param(name, "int_uniform", (), low, high, q, when, declared=dist)
            return Param(name, dist, (), low, high, q, when)
        if dist in ("q_log_uniform", "q_log_uniform_values"):
            return _quantized_log(where, name, dist, low, high, q or 1.0, when, errors)
        return Param(name, dist, (), low, high, q, when)

    def _categorical(self, name: str, where: str, dist: str, when: dict, errors: list[str]) -> Param | None:
        values, probabilities = self.values, self.probabilities
        if not isinstance(values, list):
            errors.append(f"{where}.values must be a list, got {values!r}")
            return None
        problem = None
        if not values:
            problem = ".values is empty"
        elif probabilities is not None and len(probabilities) != len(values):
            problem = f".probabilities has {len(probabilities)} number(s) for {len(values)} value(s)"
        elif probabilities is not None and any(p < 0 for p in probabilities):
            problem = f".probabilities={probabilities!r} must not be negative"
        elif probabilities is not None and abs(sum(probabilities) - 1.0) > 1e-6:
            problem = f".probabilities={probabilities!r} sum to {sum(probabilities):.6g}, not 1"
        elif probabilities is None and dist == "categorical_w_probabilities":
            problem = ": distribution categorical_w_probabilities needs probabilities"
        elif self.sets is None and any(not (v is None or isinstance(v, bool | int | float | str)) for v in values):
            lists = [v for v in values if not (v is None or isinstance(v, bool | int | float | str))]
            problem = (f".values must be scalars (Optuna's categorical choices), not {lists[0]!r}; a list-valued key "
                       "takes a string such as '2,5'")
        if problem:
            errors.append(where + problem)
            return None
        probabilities = None if probabilities is None else tuple(map(float, probabilities))
        if self.sets is None:
            return Param(name, "categorical", tuple(values), when=when, probabilities=probabilities)
        before = len(errors)
        errors += [f"{where}.sets has no entry for value {v!r}" for v in values if not isinstance(v, str) or v not in self.sets]
        for choice, keys in self.sets.items():
            if not isinstance(keys, Mapping) or not keys:
                errors.append(f"{where}.sets.{choice} must be a mapping of training keys, got {keys!r}")
                continue
            if bad := sorted(set(keys) - set(FLAT_KEYS)):
                errors.append(f"{where}.sets.{choice}: unknown training key(s) {', '.join(bad)}")
            if owned := sorted(set(keys) & set(OWNED_KEYS)):
                errors.append(f"{where}.sets.{choice}: {owned_message(owned)}")
        return None if len(errors) > before else Param(
            name, "categorical", tuple(values), when=when, sets={k: dict(v) for k, v in self.sets.items()},
            probabilities=probabilities)


def _quantized_log(where: str, name: str, dist: str, low: float, high: float, q: float, when: dict,
                   errors: list[str]) -> Param | None:
    """W&B's ``q_log_uniform`` (min/max are exponents) and ``q_log_uniform_values``: round(x/q)*q with x
    log-uniform, as the categorical of every multiple of q it takes, each with W&B's probability: the share of
    [log lo, log hi] that rounds to it (method random draws with them; other methods see the choices)."""
    lo, hi = (math.exp(low), math.exp(high)) if dist == "q_log_uniform" else (low, high)
    first, last = round(lo / q), round(hi / q)
    if last - first + 1 > MAX_CHOICES:
        errors.append(f"{where}: {dist} takes {last - first + 1} multiples of q={q:g}: at most {MAX_CHOICES} (raise q)")
        return None
    span = math.log(hi) - math.log(lo)
    values, weights = [], []
    for k in range(first, last + 1):
        a, b = max(lo, (k - 0.5) * q), min(hi, (k + 0.5) * q)
        weight = (math.log(b) - math.log(a)) / span if span > 0 else 1.0
        if weight > 0:
            values.append(round(k * q, 12))
            weights.append(weight)
    if is_int_key(name):
        if not all(float(v).is_integer() for v in values):
            errors.append(f"{where}: {name} is an integer; {dist} with q={q:g} takes {values[0]!r}, ...")
            return None
        values = [int(v) for v in values]
    return Param(name, "categorical", tuple(values), when=when, probabilities=tuple(w / sum(weights) for w in weights),
                 declared=dist)


def parse_params(raw: Any, method: Any, errors: list[str]) -> tuple[Param, ...]:
    """``parameters``: each parameter, then their ``when`` conditions, then what a grid needs of them; the
    parameters with no problem come back (a problem appended to ``errors`` for each of the others)."""
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
        elif pname in FLAT_KEYS and is_bundle:
            errors.append(f"{where}: a named choice with sets: needs a name that is not a training key")
        elif pname in OWNED_KEYS:
            errors.append(f"{where}: {pname} is{owned_message([pname]).removeprefix(pname)}" + (
                "; a constant (value: PATH) is the folder the runs' folders go in, as output_dir" if
                pname == "save_root" else ""))
        elif (param := _read_param(where, pname, praw, errors)) is not None:
            params.append(param)
    names = [p.name for p in params]
    bad: set[str] = set()
    for i, p in enumerate(params):
        for ref, allowed in p.when.items():
            if ref not in names:
                errors.append(f"parameters.{p.name}.when names unknown parameter {ref!r}; parameters: {', '.join(names)}")
            elif names.index(ref) > i:
                errors.append(f"parameters.{p.name}.when names {ref!r}, which must be declared above it")
            elif params[names.index(ref)].is_finite and (never := [
                    v for v in allowed if v not in params[names.index(ref)].grid_values()]):
                errors.append(f"parameters.{p.name}.when: {ref} never takes {never!r}")
            else:
                continue
            bad.add(p.name)
        if method == "grid" and not p.is_finite:
            errors.append(f"parameters.{p.name}: method grid needs values (or int_uniform / q_uniform), not a "
                          f"continuous {p.distribution} distribution")
            bad.add(p.name)
    return tuple(p for p in params if p.name not in bad)


def _read_param(where: str, name: str, raw: Any, errors: list[str]) -> Param | None:
    try:
        param = ParamSpec.model_validate(raw).to_param(name, where, errors)
    except ValidationError as err:
        errors += problems(err, tuple(where.split(".", 1)))
        return None
    if param is None or not is_int_key(name):
        return param
    if param.distribution in ("uniform", "q_uniform", "log_uniform"):
        errors.append(f"{where}: {name} is an integer; use int_uniform, q_uniform with integer min/max/q, "
                      f"log_uniform_values with integer min/max, or values (not {param.wandb_distribution})")
    elif param.distribution == "log_uniform_values" and not (float(param.low).is_integer()
                                                           and float(param.high).is_integer()):
        errors.append(f"{where}: {name} is an integer; {param.wandb_distribution} needs integer min/max "
                      f"(here {param.low:g} and {param.high:g})")
    else:
        return param
    return None


WANDB_EXAMPLE_KEYS = {"learning_rate": "lr", "learn_rate": "lr", "epochs": "num_epoch", "optimizer": "optim",
                      "batchsize": "batch_size"}
"""The hyperparameter names of W&B's documentation examples -> the ``cvae train`` key a user most likely means
(a hint in the error only: nothing is renamed)."""


def _key_hint(name: str) -> str | None:
    if name in WANDB_EXAMPLE_KEYS:
        return WANDB_EXAMPLE_KEYS[name]
    close = difflib.get_close_matches(name, list(FLAT_KEYS), n=1, cutoff=0.75)
    return close[0] if close else None
