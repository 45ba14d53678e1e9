"""The typed sections of a sweep spec, as pydantic models: ``metric``, ``wandb``, ``heartbeat``, ``pruner``, W&B's
``early_terminate``, ``sampler``, ``synth``, ``slurm``, and W&B's ``command`` (:func:`ignored_command`).

Pydantic reads a section, checks its types and reports every problem of it at once; :func:`problems` turns
pydantic's errors into the spec's one-line messages, each naming the key and the value (``wandb.mode='cloud' is
not auto, online, offline or disabled``). The field types below carry those messages (:func:`at_least`,
:func:`one_of`, :data:`Flag`, ...), and the same models give the spec's JSON Schema (``cvae sweep schema``).
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from cvae.core.synth import MINIMUMS, OPTION_HELP, generate_dataset, parse_size
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from cvae.schema import EVAL_COLUMNS, WANDB_KEYS, default_goal

METRICS = {WANDB_KEYS[col]: col for col in ("val_psnr", "val_loss", "train_loss", "train_mse", "train_kl",
                                            "train_psnr", *EVAL_COLUMNS) if col != "val_ssim_copy_first"}
"""Sweep metric name (the W&B key) -> the EpochResult field it reads: the scores a sweep may optimize."""
PRUNERS = ("none", "median", "percentile", "hyperband", "successive_halving")


# -- errors: two kinds of our own, told apart by how their line is written -----------------------------------
VALUE, AT = "value", "at"
"""``value``: ``KEY=VALUE message``; ``at``: ``KEY`` followed by the message (which starts with ``:`` or a space)."""


_NO_VALUE = object()


def refuse(text: str, *, key: str | None = None, value: Any = _NO_VALUE) -> ValidationError:
    """One problem, raised from a validator: of ``key``'s ``value`` (a VALUE line), else of ``key`` or of the
    section (an AT line: ``text`` starts with ``:`` or a space)."""
    kind = AT if value is _NO_VALUE else VALUE
    return ValidationError.from_exception_data("spec", [InitErrorDetails(
        type=PydanticCustomError(kind, text), loc=() if key is None else (key,),
        input=None if value is _NO_VALUE else value)])


def problems(err: ValidationError, prefix: tuple = ()) -> list[str]:
    """pydantic's errors as the spec's lines, each starting with the dotted key (``prefix`` first)."""
    lines = []
    for e in err.errors():
        where = ".".join(str(part) for part in (*prefix, *e["loc"]))
        msg = e["msg"]
        if e["type"] == AT:
            line = f"{where}{msg}" if where else msg.lstrip(": ")
        elif e["type"] == "missing":
            line = f"{where} is required"
        else:
            line = f"{where}={e['input']!r}" + (" " if e["type"] == VALUE and not msg.startswith(":") else
                                                ("" if e["type"] == VALUE else ": ")) + msg
        lines.append(line)
    return lines


def check(ok: Callable[[Any], bool], text: str, convert: Callable[[Any], Any] | None = None) -> BeforeValidator:
    """A field check that says ``text`` of a value ``ok`` refuses (before pydantic's own type check)."""
    def run(value: Any) -> Any:
        if not ok(value):
            raise PydanticCustomError(VALUE, text)
        return value if convert is None else convert(value)
    return BeforeValidator(run)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def at_least(minimum: int, why: str = "", *, whole: bool = False, optional: bool = True) -> Any:
    """An integer >= ``minimum`` (a bool is not one; with ``whole``, 9.0 is 9); None too where ``optional``."""
    def ok(v: Any) -> bool:
        return (v is None and optional) or (
            (is_int(v) or (whole and isinstance(v, float) and v.is_integer())) and v >= minimum)
    return Annotated[int | None if optional else int, Field(ge=minimum), check(
        ok, f"must be an integer >= {minimum}{why}", lambda v: None if v is None else int(v))]


def one_of(*values: str) -> Any:
    """One of ``values`` (said as ``a, b or c``, or ``one of ...`` for more than four)."""
    shown = f"{', '.join(values[:-1])} or {values[-1]}" if len(values) <= 4 else f"one of {', '.join(values)}"
    return Annotated[Literal[values], check(lambda v: isinstance(v, str) and v in values, f"is not {shown}")]


Flag = Annotated[bool | None, check(lambda v: v is None or isinstance(v, bool), "must be true or false")]
Text = Annotated[str | None, Field(min_length=1),
                 check(lambda v: v is None or (isinstance(v, str) and bool(v)), "must be a non-empty string")]
Number = Annotated[float | None, check(lambda v: v is None or is_number(v), "must be a number")]


class Section(BaseModel):
    """A mapping of the spec: not a mapping, or unknown keys, is one line each; the others' problems all come."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
    NOT_MAPPING: ClassVar[str] = " must be a mapping, got {!r}"
    UNLISTED: ClassVar[tuple[str, ...]] = ()
    """Keys accepted but not listed as valid (W&B's that a translation refuses with a message of its own)."""

    @model_validator(mode="wrap")
    @classmethod
    def _read(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        if isinstance(data, cls):
            return data
        data = {} if data is None else data  # a YAML key with nothing under it
        if not isinstance(data, Mapping):
            raise refuse(cls.NOT_MAPPING.format(data))
        keys = list(cls.model_fields)
        unknown = sorted(str(k) for k in data if k not in keys)
        listed = ", ".join(k for k in keys if k not in cls.UNLISTED)
        found = [InitErrorDetails(type=PydanticCustomError(AT, f": unknown key(s) {', '.join(unknown)}; valid keys: "
                                                                f"{listed}"), loc=(), input=None)] if unknown else []
        try:
            out = handler(cls.prepare({k: v for k, v in data.items() if k in keys}))
        except ValidationError as err:
            found += [InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"]), loc=e["loc"], input=e["input"])
                      for e in err.errors()]
        if found:
            raise ValidationError.from_exception_data(cls.__name__, found)
        return out

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The section's keys before validation (a default that depends on another key)."""
        return data

    @classmethod
    def read(cls, raw: Any, where: str, errors: list[str]) -> Any:
        """The section ``raw`` (None: the defaults), its problems appended to ``errors`` (then None)."""
        try:
            return cls.model_validate({} if raw is None else raw)
        except ValidationError as err:
            errors += problems(err, (where,))
            return None


class Options(Section):
    """A section whose fields are keyword options of one call (an Optuna pruner or sampler, ``generate_dataset``):
    it reads as the mapping of the options the spec gave (None: not given, the callee's default applies)."""

    def keys(self) -> list[str]:
        return [k for k in type(self).model_fields if getattr(self, k) is not None]

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self[k]) for k in self.keys()]


class MetricSpec(Section):
    """``metric``: what a trial is judged by; W&B's ``target``: no trial starts once one has reached it."""

    name: one_of(*METRICS) = "val/psnr"
    goal: one_of("maximize", "minimize") = "maximize"
    """By default maximize for a PSNR, minimize for a loss."""
    summary: one_of("best", "last") = "best"
    """A trial's value: its best epoch's or its last epoch's."""
    target: Number = None

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        name = data.get("name", "val/psnr")
        return {"goal": default_goal(name), **data} if isinstance(name, str) else data

    @property
    def field(self) -> str:
        """The EpochResult field (and metrics.csv column) the metric reads."""
        return METRICS[self.name]

    def reached(self, value: float | None) -> bool:
        """Whether ``value`` reaches the target (goal-aware); False without a target, or for None and NaN."""
        if self.target is None or not is_number(value):
            return False
        return value >= self.target if self.goal == "maximize" else value <= self.target

    def reached_by(self, trials: Any) -> int | None:
        """The number of the first of ``trials`` (Optuna FrozenTrials) that reached the target, else None: with
        ``summary: best`` as soon as one of its epochs does (W&B, too, stops starting runs then), with ``last``
        only a complete trial's value counts."""
        for trial in sorted(trials, key=lambda t: t.number) if self.target is not None else ():
            if getattr(trial.state, "name", str(trial.state)) == "COMPLETE" and self.reached(trial.value):
                return trial.number
            if self.summary == "best" and any(self.reached(v) for v in trial.intermediate_values.values()):
                return trial.number
        return None


class WandbSpec(Section):
    """``wandb``: where the trials' runs go (W&B's top-level ``project`` and ``entity`` fill it). The group is
    the sweep's name; each run's tags are its categorical choices (``key=value``) and then ``tags``."""

    project: Text = "cvae-sweeps"
    entity: Text = None
    mode: one_of("auto", "online", "offline", "disabled") = "auto"
    """auto: online when logged in, else offline."""
    tags: Annotated[tuple[str, ...], check(lambda v: isinstance(v, list | tuple) and all(
        isinstance(t, str | int | float) for t in v), "must be a list of strings", lambda v: tuple(map(str, v)))] = ()
    log_model: Annotated[bool | Literal["all"], check(lambda v: isinstance(v, bool) or v == "all",
                                                      "must be true, false or all")] = True
    """Upload each trial's checkpoints as versions of its run's model artifact: true, best.ckpt at each new best
    epoch and last.ckpt at the end; all, last.ckpt at every epoch; false, none (large models)."""
    log_every_n_steps: at_least(1, optional=False) = 50
    """Log each trial's training loss every this many optimizer steps against trainer/global_step."""


class HeartbeatSpec(Section):
    """``heartbeat``: a running trial's worker beats every ``interval`` seconds; a trial without a beat for
    ``grace`` seconds lost its worker and is retried."""

    interval: at_least(1, optional=False) = 10
    grace: at_least(1, optional=False) = 60

    @model_validator(mode="after")
    def _grace(self) -> HeartbeatSpec:
        if self.grace <= self.interval:
            raise refuse(f"must be greater than heartbeat.interval={self.interval}", key="grace", value=self.grace)
        return self


class PrunerSpec(Options):
    """``pruner``: an Optuna pruner and its options, which Optuna checks when the spec builds it once while it
    loads (:func:`cvae.sweeps.space.make_pruner`). Hyperband's ``max_resource`` defaults to ``auto``: the most
    epochs a trial runs."""

    type: one_of(*PRUNERS) = "none"
    n_startup_trials: int | None = None
    n_warmup_steps: int | None = None
    interval_steps: int | None = None
    percentile: float | None = None
    min_resource: int | str | None = None
    max_resource: int | str | None = None
    reduction_factor: int | None = None
    min_early_stopping_rate: int | None = None

    @model_validator(mode="after")
    def _percentile(self) -> PrunerSpec:
        if self.type == "percentile" and self.percentile is None:
            raise refuse(" percentile needs percentile", key="type")
        return self

    @classmethod
    def of(cls, pruner: PrunerSpec | Mapping[str, Any]) -> PrunerSpec:
        """``pruner`` as a PrunerSpec (a mapping is read as a ``pruner`` section).

        Raises:
            ValueError: the mapping is not a valid pruner section (the message says why).
        """
        errors: list[str] = []
        out = cls.read(pruner, "pruner", errors)
        if errors:
            raise ValueError("; ".join(errors))
        return out

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments given to the Optuna pruner."""
        return {k: v for k, v in self.items() if k != "type"}


class EarlyTerminate(Section):
    """W&B's ``early_terminate``, read as Optuna's HyperbandPruner, every key honoured or refused by name.

    W&B stops a run at each *band* (an epoch count) when it is not in the best 1/``eta`` of the runs that reached
    the band. Its bands are ``min_iter * eta**k``, or, given ``max_iter`` and ``s``, the ``s`` bands ``max_iter /
    eta**k`` below ``max_iter``: the rungs of Optuna's first Hyperband bracket, with min_resource = ``min_iter``
    (= ``max_iter / eta**s``), reduction_factor = ``eta`` and max_resource = ``max_iter`` (= ``min_iter *
    eta**s``; by default the most epochs a trial runs). Optuna adds Hyperband's later brackets.
    """

    type: Annotated[Literal["hyperband"], check(lambda v: v == "hyperband", ": W&B's only type is hyperband")]
    min_iter: at_least(1, whole=True) = None
    max_iter: at_least(1, whole=True) = None
    eta: at_least(2, " (Optuna's reduction_factor is an integer)", whole=True) = 3
    s: at_least(1, whole=True) = None
    strict: Annotated[Literal[True] | None, check(lambda v: v in (None, True), (
        ": Optuna compares the value a trial reports at each band, which is W&B's strict: true; W&B's non-strict "
        "rule (a run's best value so far) has no Optuna equivalent: set strict: true or drop it"))] = None

    @model_validator(mode="after")
    def _bands(self) -> EarlyTerminate:
        self.pruner()
        return self

    def pruner(self) -> PrunerSpec:
        """The HyperbandPruner of these bands.

        Raises:
            ValidationError: the keys give no bands, or bands Optuna's Hyperband does not stop at.
        """
        eta, min_iter, max_iter, s = self.eta, self.min_iter, self.max_iter, self.s
        if min_iter is None and max_iter is None:
            raise refuse(" needs min_iter or max_iter (with s)")
        if max_iter is not None and s is not None:
            if max_iter % eta**s:
                bands = sorted({int(max_iter / eta**k) for k in range(1, s + 1) if max_iter / eta**k >= 1})
                raise refuse(f": max_iter={max_iter} is not a multiple of eta**s={eta**s}, so W&B's bands {bands} are "
                             f"not max_iter / eta**k, the epochs Optuna's Hyperband stops at: give a multiple of "
                             f"{eta**s} or min_iter")
            if min_iter is not None and min_iter != max_iter // eta**s:
                raise refuse(f": min_iter={min_iter} is not max_iter / eta**s = {max_iter} / {eta**s}: give two of "
                             "min_iter, max_iter and s")
            min_iter = max_iter // eta**s
        elif min_iter is None:
            raise refuse("needs s (the number of bands below max_iter, as W&B requires) or min_iter",
                         key="max_iter", value=max_iter)
        elif s is not None:
            max_iter = min_iter * eta**s
        if max_iter is not None and min_iter > max_iter:
            raise refuse(f": min_iter={min_iter} > max_iter={max_iter}")
        return PrunerSpec(type="hyperband", min_resource=min_iter, reduction_factor=eta,
                          max_resource=max_iter if max_iter is not None else "auto")


class SamplerSpec(Options):
    """``sampler``: options of the sampler of the spec's method (grid and random take none but ``seed``), which
    Optuna checks when the spec builds it (:func:`cvae.sweeps.space.make_sampler`). ``seed`` defaults to the
    spec's, TPE's ``constant_liar`` to true."""

    seed: int | None = None
    n_startup_trials: int | None = None
    multivariate: bool | None = None
    constant_liar: bool | None = None
    scramble: bool | None = None
    qmc_type: str | None = None


def _size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as err:
        raise PydanticCustomError(VALUE, f": {err}") from None


Size = Annotated[tuple[int, int] | None, BeforeValidator(_size), WithJsonSchema({"anyOf": [
    {"type": "string", "pattern": r"^\s*\d+\s*[xX]\s*\d+\s*$"},
    {"type": "array", "items": {"type": "integer", "minimum": 16}, "minItems": 2, "maxItems": 2}]})]
"""A frame size: ``HxW`` (``64x128``) or ``[H, W]``, read as (H, W)."""


class _Synth(Options):
    NOT_MAPPING: ClassVar[str] = " must be a mapping of `cvae data synth` options, got {!r}"

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options (each a keyword of ``generate_dataset``: a test holds them equal)."""
        return tuple(cls.model_fields)

    def frames(self, split: str) -> int | None:
        """The frames the generator writes for ``split`` (train or val) when given, else None."""
        return getattr(self, f"{split}_frames")


def _synth_option(name: str, default: Any) -> tuple[Any, Any]:
    kind = Size if name == "size" else Flag if isinstance(default, bool) else at_least(MINIMUMS[name])
    return kind, Field(None, description=OPTION_HELP[name])


SynthSpec = create_model(
    "SynthSpec", __base__=_Synth, __module__=__name__,
    __doc__="""``synth``: the options of ``cvae data synth`` that make the sweep's dataset into ``base.DR`` when it
    is missing, an option not given taking the generator's default: the keyword options of
    :func:`cvae.core.synth.generate_dataset`, each typed and bounded as the generator checks it.""",
    **{name: _synth_option(name, p.default) for name, p in inspect.signature(generate_dataset).parameters.items()
       if p.kind is p.KEYWORD_ONLY})


Command = Annotated[tuple[str, ...] | None, check(lambda v: v is None or (isinstance(v, list | tuple) and bool(v) and all(
    isinstance(c, str | int | float) and not isinstance(c, bool) for c in v)),
    "must be a non-empty list of strings, as W&B's [${env}, ${interpreter}, ${program}, ${args}]",
    lambda v: None if v is None else tuple(map(str, v)))]
"""W&B's ``command``: how its agent starts a run."""


DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")
INTERPRETERS = ("${interpreter}", "python", "python3")


def ignored_command(program: str | None, command: tuple[str, ...] | None) -> tuple[str, ...]:
    """What of W&B's ``program`` and ``command`` the sweep does not do, each said as in the spec (empty: all
    honoured); see ``SpecFile.command`` for what is."""
    if program is None and command is None:
        return ()
    given = list(command or DEFAULT_COMMAND)
    while given[:1] and given[0] in ("${env}", "/usr/bin/env", "env"):
        given.pop(0)
    interpreter = int(bool(given) and given[0] in INTERPRETERS)
    rest, ours, ignored = given[interpreter:], True, []
    if not interpreter and rest[:2] == ["cvae", "train"]:
        rest = rest[2:]
    elif interpreter and rest[:3] in (["-m", "cvae", "train"], ["-m", "cvae.cli", "train"]):
        rest = rest[3:]
    elif rest[:1] == ["${program}"]:
        rest, ours = rest[1:], program is not None and is_trainer(program)
        if not ours:
            ignored.append(f"program={program!r}" if program is not None else "${program} (no program given)")
    elif rest[:1] and is_trainer(rest[0]):
        rest = rest[1:]
    else:
        rest, ours = given, False
    extra, has_args, i = [], False, 0
    while i < len(rest):
        pair = ours and rest[i:i + 2] == ["--config", "${args_json_file}"]
        if rest[i] == "${args}" or pair:
            has_args = True
        else:
            extra.append(rest[i])
        i += 1 + pair
    if extra:
        ignored.append("command items " + ", ".join(repr(t) for t in extra))
    elif not has_args:
        ignored.append("a command without ${args}")
    return tuple(ignored)


def is_trainer(program: str) -> bool:
    """Whether ``program`` (a script path) is our trainer: the lab's Trainer.py (``cvae train`` takes its flags)."""
    return os.path.basename(program.strip()).lower() == "trainer.py"


# -- slurm: the job array of `cvae sweep run --launcher slurm` (cvae.sweeps.slurm submits it) ----------------
LAUNCHERS = ("local", "slurm")
"""``launcher``: the workers as processes of this machine, or as the tasks of a Slurm job array."""

_SLURM_TIME = re.compile(r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                         r"|(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)|(?P<mm>\d+)(?::(?P<ss>\d+))?)$")


def slurm_minutes(value: Any) -> int:
    """A Slurm time limit as whole minutes (seconds rounded up): minutes (``90``), ``MM:SS``, ``HH:MM:SS``,
    ``D-HH``, ``D-HH:MM`` or ``D-HH:MM:SS``, as ``sbatch --time`` reads it.

    Raises:
        ValueError: not one of those forms, or no time at all.
    """
    if is_int(value) and value >= 1:
        return int(value)
    match = _SLURM_TIME.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be a Slurm time limit: minutes, MM:SS, HH:MM:SS or D-HH:MM:SS (12:00:00)")
    g = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    seconds = (g.get("d", 0) * 86400 + (g.get("dh", 0) + g.get("h", 0)) * 3600
               + (g.get("dm", 0) + g.get("m", 0) + g.get("mm", 0)) * 60 + g.get("ds", 0) + g.get("s", 0) + g.get("ss", 0))
    if seconds <= 0:
        raise ValueError("must be a Slurm time limit of at least one minute")
    return -(-seconds // 60)


def _minutes(value: Any) -> int:
    try:
        return slurm_minutes(value)
    except ValueError as err:
        raise PydanticCustomError(VALUE, str(err)) from None


SlurmTime = Annotated[int, BeforeValidator(_minutes), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^(\d+-)?\d+(:\d+){0,2}$"}]})]
"""A time limit, read as minutes."""

_MEMORY = re.compile(r"^[1-9]\d*[KMGT]?$", re.IGNORECASE)
Memory = Annotated[str | None, check(lambda v: v is None or (is_int(v) and v > 0) or (
    isinstance(v, str) and bool(_MEMORY.match(v.strip()))), "must be a Slurm memory size: megabytes, or a number "
    "with K, M, G or T (32G)", lambda v: None if v is None else str(v).strip().upper()),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^[1-9]\d*[KMGTkmgt]?$"}]})]

SLURM_OWNED = {"array": "workers (or --workers)", "output": "the launcher (logs in OUTPUT_DIR/logs/slurm)",
               "error": "the launcher (logs in OUTPUT_DIR/logs/slurm)", "open-mode": "the launcher",
               "partition": "slurm.partition", "time": "slurm.time", "gres": "slurm.gpus",
               "gpus-per-node": "slurm.gpus", "cpus-per-task": "slurm.cpus", "mem": "slurm.mem",
               "signal": "slurm.signal_delay", "account": "slurm.account", "qos": "slurm.qos",
               "ntasks": "the launcher (one task per worker)", "nodes": "the launcher (one task per worker)"}
"""sbatch options that ``slurm.sbatch`` may not set, and what sets them."""


def _sbatch_options(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise PydanticCustomError(VALUE, "must be a mapping of sbatch long options to values ({constraint: a100})")
    out = {}
    for key, v in value.items():
        name = str(key).removeprefix("--")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
            raise PydanticCustomError(VALUE, f": {key!r} is not an sbatch long option name (constraint, exclude, ...)")
        if name in SLURM_OWNED:
            raise PydanticCustomError(VALUE, f": {name} is set by {SLURM_OWNED[name]}")
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise PydanticCustomError(VALUE, f": {name}={v!r} must be a string or a number")
        out[name] = str(v)
    return out


class SlurmSpec(Section):
    """``slurm``: the job array that ``cvae sweep run --launcher slurm`` (or ``launcher: slurm``) submits
    through submitit, one task per worker (``workers`` tasks); each task is one ``cvae sweep worker`` of the spec's
    study. The defaults are ``examples/slurm/sweep-workers.sbatch``'s."""

    partition: Text = None
    """The partition (default: the cluster's)."""
    account: Text = None
    qos: Text = None
    time: SlurmTime = 720
    """Each task's time limit: minutes or [D-]HH:MM:SS (default 12:00:00)."""
    gpus: at_least(0, optional=False) = 1
    """GPUs per worker (``--gres=gpu:N``); 0 for none."""
    cpus: at_least(1, optional=False) = 8
    """CPUs per worker (``--cpus-per-task``), and its torch threads."""
    mem: Memory = "32G"
    """Memory per worker (``--mem``): megabytes, or a number with K, M, G or T; null for the cluster's default."""
    parallel: at_least(1) = None
    """The most tasks running at once (``--array=0-N%parallel``; default: all)."""
    signal_delay: at_least(1, optional=False) = 120
    """Seconds before the time limit that each worker gets SIGTERM (``--signal=TERM@120``): it re-queues its
    trial, which another worker resumes from its last epoch checkpoint."""
    setup: Annotated[tuple[str, ...], check(lambda v: isinstance(v, list | tuple) and all(isinstance(s, str) for s in v),
                                            "must be a list of shell lines", tuple)] = ()
    """Shell lines each task runs before its worker (``module load cuda``)."""
    sbatch: Annotated[dict[str, str], BeforeValidator(_sbatch_options)] = {}
    """More sbatch options, by long name without ``--`` (``{constraint: a100, exclude: node7}``)."""
