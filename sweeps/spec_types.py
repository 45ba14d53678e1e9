"""The typed sections of a sweep spec: ``metric``, ``wandb`` (with W&B's top-level ``project`` and ``entity``),
``pruner`` (or W&B's ``early_terminate``), ``sampler``, ``heartbeat``, ``synth``, and W&B's ``program`` and
``command`` (:class:`CommandSpec`).

Each section is a frozen dataclass with a ``parse`` classmethod that reads the section as YAML gave it,
appends one line per problem to ``errors`` (naming the key and the value: ``wandb.mode='cloud' is not ...``)
and returns a usable value anyway (the defaults where the section was wrong), so that
:func:`cvae.sweeps.spec.parse_spec` reports every problem of a spec at once.

The pruner and the sampler build their Optuna objects here (Optuna is imported only then): the spec builds
them once to check their options, and ``cvae.sweeps.space`` builds them for a study. This module imports
neither of those two, so they need not import each other.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cvae.schema import EVAL_COLUMNS, WANDB_KEYS, default_goal

METRICS = {WANDB_KEYS[col]: col for col in ("val_psnr", "val_loss", "train_loss", "train_mse", "train_kl",
                                            "train_psnr", *EVAL_COLUMNS) if col != "val_ssim_copy_first"}
"""Sweep metric name (the W&B key, cvae.schema.WANDB_KEYS) -> the EpochResult field it reads: the scores a
sweep may optimize, not the baselines or the schedule."""

GOALS = ("maximize", "minimize")
SUMMARIES = ("best", "last")
WANDB_MODES = ("auto", "online", "offline", "disabled")
PRUNERS = ("none", "median", "percentile", "hyperband", "successive_halving")


# -- reading a section: each helper appends its one-line problem to ``errors`` ---------------------------
def read_mapping(where: str, raw: Any, allowed: tuple[str, ...], errors: list[str]) -> dict[str, Any]:
    """``raw`` as a dict (empty when absent or not a mapping); unknown keys are reported, and kept."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        errors.append(f"{where} must be a mapping, got {raw!r}")
        return {}
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        errors.append(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(allowed)}")
    return dict(raw)


def read_int(where: str, raw: Any, errors: list[str], minimum: int) -> int | None:
    """``raw`` when it is an integer >= ``minimum`` (a bool is not), else None and a problem."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        errors.append(f"{where}={raw!r} must be an integer >= {minimum}")
        return None
    return raw


def _read_str(where: str, raw: Any, errors: list[str]) -> str | None:
    if not isinstance(raw, str) or not raw:
        errors.append(f"{where}={raw!r} must be a non-empty string")
        return None
    return raw


class _Options(Mapping[str, Any]):
    """A section whose fields are keyword options of one call (an Optuna pruner or sampler,
    ``generate_dataset``): it reads as the mapping of the options the spec gave, a field left at None
    being one it did not give (the callee's default applies)."""

    def _given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if getattr(self, f.name) is not None}

    def __getitem__(self, key: str) -> Any:
        return self._given()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._given())

    def __len__(self) -> int:
        return len(self._given())


# -- metric -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricSpec:
    """``metric``: what a trial is judged by, and W&B's ``target``: the sweep stops once a trial reaches it."""

    name: str = "val/psnr"
    goal: str = "maximize"
    """maximize or minimize; by default maximize for a PSNR, minimize for a loss."""
    summary: str = "best"
    """A trial's value: its best epoch's (best) or its last epoch's (last)."""
    target: float | None = None
    """W&B's ``target``: no trial starts once one has reached it (>= when maximizing, <= when minimizing)."""

    KEYS: ClassVar[tuple[str, ...]] = ("name", "goal", "summary", "target")

    @property
    def direction(self) -> str:
        """The Optuna study direction."""
        return "maximize" if self.goal == "maximize" else "minimize"

    @property
    def field(self) -> str:
        """The EpochResult field (and metrics.csv column) the metric reads."""
        return METRICS[self.name]

    def reached(self, value: float | None) -> bool:
        """Whether ``value`` reaches the target (goal-aware); False without a target, or for None and NaN."""
        if self.target is None or value is None or isinstance(value, bool):
            return False
        value = float(value)
        if math.isnan(value):
            return False
        return value >= self.target if self.goal == "maximize" else value <= self.target

    def reached_by(self, trials: Any) -> int | None:
        """The number of the first of ``trials`` (Optuna FrozenTrials) that reached the target, else None.

        With ``summary: best`` a trial reaches it as soon as one of its epochs does (its value can only be that
        good or better: W&B, too, stops starting runs while the run that reached it still runs); with
        ``summary: last`` only a complete trial's value counts.
        """
        if self.target is None:
            return None
        for trial in sorted(trials, key=lambda t: t.number):
            if getattr(trial.state, "name", str(trial.state)) == "COMPLETE" and self.reached(trial.value):
                return trial.number
            if self.summary == "best" and any(self.reached(v) for v in trial.intermediate_values.values()):
                return trial.number
        return None

    @classmethod
    def parse(cls, raw: Any, errors: list[str]) -> MetricSpec:
        section = read_mapping("metric", raw, cls.KEYS, errors)
        name = section.get("name", cls.name)
        if not isinstance(name, str) or name not in METRICS:
            errors.append(f"metric.name={name!r} is not one of {', '.join(METRICS)}")
            name = cls.name
        goal = section.get("goal", default_goal(name))
        if goal not in GOALS:
            errors.append(f"metric.goal={goal!r} is not maximize or minimize")
            goal = cls.goal
        summary = section.get("summary", cls.summary)
        if summary not in SUMMARIES:
            errors.append(f"metric.summary={summary!r} is not best or last")
            summary = cls.summary
        target = section.get("target")
        if target is not None and (isinstance(target, bool) or not isinstance(target, int | float)
                                   or math.isnan(target)):
            errors.append(f"metric.target={target!r} must be a number (the {name} value that ends the sweep)")
            target = None
        return cls(name, goal, summary, None if target is None else float(target))


# -- wandb --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WandbSpec:
    """``wandb``: where the trials' runs go. The group is the sweep's name; each run's tags are its
    categorical choices (``key=value``) and then ``tags``."""

    project: str = "cvae-sweeps"
    entity: str | None = None
    mode: str = "auto"
    """auto (online when logged in, else offline), online, offline or disabled."""
    tags: tuple[str, ...] = ()
    log_model: bool = True
    """Upload each trial's best.ckpt and last.ckpt as its run's model artifact (off for large models)."""

    KEYS: ClassVar[tuple[str, ...]] = ("project", "entity", "mode", "tags", "log_model")

    @classmethod
    def parse(cls, raw: Any, errors: list[str], top: Mapping[str, Any] | None = None) -> WandbSpec:
        """The ``wandb`` section; ``top`` (the whole spec) gives W&B's top-level ``project`` and ``entity``,
        which fill the section's unless it sets them too: the same value is fine, two values an error."""
        section = read_mapping("wandb", raw, cls.KEYS, errors)
        for key in ("project", "entity"):
            if top is None or key not in top:
                continue
            value = _read_str(key, top[key], errors)
            if value is None:
                continue
            if key in section and section[key] != value:
                errors.append(f"{key}={value!r} and wandb.{key}={section[key]!r} disagree: give one (W&B writes "
                              f"{key} at the top level)")
                continue
            section[key] = value
        project = _read_str("wandb.project", section.get("project", cls.project), errors) or cls.project
        entity = section.get("entity")
        if entity is not None:
            entity = _read_str("wandb.entity", entity, errors)
        mode = section.get("mode", cls.mode)
        if mode not in WANDB_MODES:
            errors.append(f"wandb.mode={mode!r} is not auto, online, offline or disabled")
            mode = cls.mode
        tags = section.get("tags") or []
        if not isinstance(tags, list | tuple) or not all(isinstance(t, str | int | float) for t in tags):
            errors.append(f"wandb.tags={tags!r} must be a list of strings")
            tags = []
        log_model = section.get("log_model", cls.log_model)
        if not isinstance(log_model, bool):
            errors.append(f"wandb.log_model={log_model!r} must be true or false")
            log_model = cls.log_model
        return cls(project, entity, mode, tuple(str(t) for t in tags), log_model)


# -- heartbeat ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeartbeatSpec:
    """``heartbeat``: a running trial's worker beats every ``interval`` seconds; a trial without a beat
    for ``grace`` seconds lost its worker and is retried."""

    interval: int = 10
    grace: int = 60

    KEYS: ClassVar[tuple[str, ...]] = ("interval", "grace")

    @classmethod
    def parse(cls, raw: Any, errors: list[str]) -> HeartbeatSpec:
        section = read_mapping("heartbeat", raw, cls.KEYS, errors)
        interval = read_int("heartbeat.interval", section.get("interval", cls.interval), errors, 1) or cls.interval
        grace = read_int("heartbeat.grace", section.get("grace", cls.grace), errors, 1) or cls.grace
        if grace <= interval:
            errors.append(f"heartbeat.grace={grace} must be greater than heartbeat.interval={interval}")
        return cls(interval, grace)


# -- pruner -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrunerSpec(_Options):
    """``pruner`` (Optuna's pruners) or ``early_terminate`` (W&B's hyperband, read as Optuna's
    HyperbandPruner: ``min_iter`` (or ``max_iter / eta**s``) -> min_resource, ``eta`` -> reduction_factor,
    ``max_iter`` (or ``min_iter * eta**s``) -> max_resource, ``strict: true`` is Optuna's rule). An option left at None was not given: Optuna's default applies, except that
    Hyperband's ``max_resource`` defaults to ``auto`` (the most epochs a trial runs).

    Reads as the mapping ``{"type": ..., **the options given}``; which options a type takes, and their
    values, Optuna checks when :meth:`build` runs (the spec builds its pruner once while it loads).
    """

    type: str = "none"
    n_startup_trials: int | None = None
    n_warmup_steps: int | None = None
    interval_steps: int | None = None
    percentile: float | None = None
    min_resource: int | str | None = None
    max_resource: int | str | None = None
    reduction_factor: int | None = None
    min_early_stopping_rate: int | None = None

    KEYS: ClassVar[tuple[str, ...]] = (
        "type", "n_startup_trials", "n_warmup_steps", "interval_steps", "percentile", "min_resource",
        "max_resource", "reduction_factor", "min_early_stopping_rate",
    )
    EARLY_TERMINATE_KEYS: ClassVar[tuple[str, ...]] = ("type", "min_iter", "max_iter", "eta", "s", "strict")

    @classmethod
    def parse(cls, raw: Mapping[str, Any], errors: list[str]) -> PrunerSpec:
        """The pruner of a whole spec ``raw``: its ``early_terminate`` or its ``pruner`` (not both)."""
        if "early_terminate" in raw and "pruner" in raw:
            errors.append("give early_terminate (W&B) or pruner (Optuna), not both")
            return cls()
        if "early_terminate" in raw:
            return cls._parse_early_terminate(raw["early_terminate"], errors)
        if "pruner" in raw:
            return cls.parse_section(raw["pruner"], errors)
        return cls()

    @classmethod
    def _parse_early_terminate(cls, raw: Any, errors: list[str]) -> PrunerSpec:
        """W&B's ``early_terminate`` as Optuna's HyperbandPruner, every key honoured or refused by name.

        W&B stops a run at each *band* (an epoch count) when it is not in the best 1/``eta`` of the runs that
        reached the band. Its bands are ``min_iter * eta**k``, or, given ``max_iter`` and ``s``, the ``s`` bands
        ``max_iter / eta**k`` below ``max_iter``: the rungs ``min_resource * reduction_factor**k`` of
        Optuna's first Hyperband bracket, with min_resource = ``min_iter`` (= ``max_iter / eta**s``),
        reduction_factor = ``eta`` and max_resource = ``max_iter`` (= ``min_iter * eta**s``; by default the
        most epochs a trial runs). Optuna adds Hyperband's other brackets, which start later (``s + 1``
        brackets in all when ``s`` is given, as in the Hyperband paper's ``s_max``).
        """
        et = read_mapping("early_terminate", raw, cls.EARLY_TERMINATE_KEYS, errors)
        if et.get("type") != "hyperband":
            errors.append(f"early_terminate.type={et.get('type')!r}: W&B's only type is hyperband")
            return cls()
        values: dict[str, int] = {}
        for key, minimum in (("min_iter", 1), ("max_iter", 1), ("s", 1), ("eta", 2)):
            if key in et:
                value = et[key]
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                    why = " (Optuna's reduction_factor is an integer)" if key == "eta" else ""
                    errors.append(f"early_terminate.{key}={et[key]!r} must be an integer >= {minimum}{why}")
                    return cls()
                values[key] = value
        if "strict" in et and et["strict"] is not True:
            errors.append(f"early_terminate.strict={et['strict']!r}: Optuna compares the value a trial reports "
                          "at each band, which is W&B's strict: true; W&B's non-strict rule (a run's best value so "
                          "far) has no Optuna equivalent: set strict: true or drop it")
            return cls()
        eta = values.get("eta", 3)
        min_iter, max_iter, s = values.get("min_iter"), values.get("max_iter"), values.get("s")
        if min_iter is None and max_iter is None:
            errors.append("early_terminate needs min_iter or max_iter (with s)")
            return cls()
        if max_iter is not None and s is not None:
            if max_iter % eta**s:
                bands = sorted({int(max_iter / eta**k) for k in range(1, s + 1) if max_iter / eta**k >= 1})
                errors.append(f"early_terminate: max_iter={max_iter} is not a multiple of eta**s={eta**s}, so "
                              f"W&B's bands {bands} are not max_iter / eta**k, the epochs Optuna's Hyperband "
                              f"stops at: give a multiple of {eta**s} or min_iter")
                return cls()
            if min_iter is not None and min_iter != max_iter // eta**s:
                errors.append(f"early_terminate: min_iter={min_iter} is not max_iter / eta**s = {max_iter} / "
                              f"{eta**s}: give two of min_iter, max_iter and s")
                return cls()
            min_iter = max_iter // eta**s
        elif max_iter is not None and min_iter is None:
            errors.append(f"early_terminate.max_iter={max_iter} needs s (the number of bands below max_iter, as "
                          "W&B requires) or min_iter")
            return cls()
        elif s is not None:  # min_iter and s: the s bands min_iter * eta**k, k < s
            max_iter = min_iter * eta**s
        if max_iter is not None and min_iter > max_iter:
            errors.append(f"early_terminate: min_iter={min_iter} > max_iter={max_iter}")
            return cls()
        return cls("hyperband", min_resource=min_iter, reduction_factor=eta,
                   max_resource=max_iter if max_iter is not None else "auto")

    @classmethod
    def parse_section(cls, raw: Any, errors: list[str], where: str = "pruner") -> PrunerSpec:
        """A ``pruner`` section alone."""
        section = read_mapping(where, raw, cls.KEYS, errors)
        kind = section.get("type", "none")
        if kind not in PRUNERS:
            errors.append(f"{where}.type={section.get('type')!r} is not one of {', '.join(PRUNERS)}")
            return cls()
        if kind == "percentile" and "percentile" not in section:
            errors.append(f"{where}.type percentile needs percentile")
        return cls(**{k: v for k, v in section.items() if k in cls.KEYS})

    @classmethod
    def of(cls, pruner: PrunerSpec | Mapping[str, Any]) -> PrunerSpec:
        """``pruner`` as a PrunerSpec: itself, or a ``pruner`` section given as a mapping.

        Raises:
            ValueError: the mapping is not a valid pruner section (the message says why).
        """
        if isinstance(pruner, PrunerSpec):
            return pruner
        errors: list[str] = []
        out = cls.parse_section(pruner, errors)
        if errors:
            raise ValueError("; ".join(errors))
        return out

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments given to the Optuna pruner."""
        return {k: v for k, v in self.items() if k != "type"}

    @property
    def first_step(self) -> int | None:
        """The first step (0-based epoch) at which the pruner may stop a trial; None: no pruner, or unknown
        until trials run (successive halving's ``min_resource: auto``)."""
        if self.type in ("median", "percentile"):
            return int(self.n_warmup_steps or 0)
        if self.type == "hyperband":
            return int(self.min_resource if self.min_resource is not None else 1)
        if self.type == "successive_halving":
            if self.min_resource in (None, "auto"):
                return None
            factor = self.reduction_factor if self.reduction_factor is not None else 4
            return int(self.min_resource) * int(factor) ** int(self.min_early_stopping_rate or 0)
        return None

    def build(self, max_epochs: int) -> Any:
        """The Optuna pruner; ``max_epochs``: the most epochs a trial runs (Hyperband's ``max_resource: auto``).

        Raises:
            TypeError, ValueError: Optuna refuses an option or its value.
        """
        import optuna

        kw = self.options
        if self.type == "none":
            return optuna.pruners.NopPruner()
        if self.type == "median":
            return optuna.pruners.MedianPruner(**kw)
        if self.type == "percentile":
            return optuna.pruners.PercentilePruner(**kw)
        if self.type == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**kw)
        if self.type == "hyperband":
            if kw.get("max_resource", "auto") == "auto":
                kw["max_resource"] = max_epochs
            return optuna.pruners.HyperbandPruner(**kw)
        raise ValueError(f"unknown pruner {self.type!r}")


# -- sampler ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSpec(_Options):
    """``sampler``: options of the sampler of the spec's method (grid and random take none but ``seed``).

    An option left at None was not given: ``seed`` defaults to the spec's ``seed``, TPE's
    ``constant_liar`` to true (any number of workers may share a study), the others to Optuna's defaults. Which options
    a method takes Optuna checks when :meth:`build` runs (the spec builds its sampler once while it loads).
    """

    seed: int | None = None
    n_startup_trials: int | None = None
    multivariate: bool | None = None
    constant_liar: bool | None = None
    scramble: bool | None = None
    qmc_type: str | None = None

    KEYS: ClassVar[tuple[str, ...]] = ("seed", "n_startup_trials", "multivariate", "constant_liar", "scramble",
                                       "qmc_type")

    @classmethod
    def parse(cls, raw: Any, errors: list[str]) -> SamplerSpec:
        section = read_mapping("sampler", raw, cls.KEYS, errors)
        return cls(**{k: v for k, v in section.items() if k in cls.KEYS})

    def build(self, method: str, *, seed: int, workers: int) -> Any:
        """The Optuna sampler of ``method``; grid points are enqueued trials, so a grid needs no GridSampler.

        Raises:
            TypeError, ValueError: Optuna refuses an option or its value (or ``method`` is unknown).
        """
        import optuna

        kw = dict(self)
        seed = kw.pop("seed", seed)
        if method in ("grid", "random"):
            return optuna.samplers.RandomSampler(seed=seed)
        if method == "tpe":
            # constant_liar keeps workers that share the study from proposing the same point while others run.
            # On by default whatever ``workers`` says: a spec of one worker may run as a Slurm or SSH array of
            # `cvae sweep worker`s against one study, which the spec cannot know; with a single worker it
            # changes nothing (no trial runs while the sampler proposes). ``constant_liar: false`` turns it off.
            kw.setdefault("constant_liar", True)
            return optuna.samplers.TPESampler(seed=seed, **kw)
        if method == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, **kw)
        if method == "gp":
            return optuna.samplers.GPSampler(seed=seed, **kw)
        if method == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, **kw)
        raise ValueError(f"unknown method {method!r}")


# -- synth --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthSpec(_Options):
    """``synth``: the options of ``cvae data synth`` (``cvae.core.synth.generate_dataset``) that make the
    sweep's dataset into ``base.DR`` when it is missing. An option left at None was not given: the
    generator's default applies. Reads as the mapping of the options given (the call's keyword arguments).
    """

    train_frames: int | None = None
    val_frames: int | None = None
    test_sequences: int | None = None
    test_frames: int | None = None
    size: tuple[int, int] | None = None
    """(H, W); the spec gives ``HxW`` (``64x128``) or ``[H, W]``."""
    seed: int | None = None
    train_video_len: int | None = None
    dancers: int | None = None
    backgrounds: int | None = None
    spotlight: bool | None = None
    lighting: bool | None = None
    workers: int | None = None
    progress: bool | None = None

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options, the fields above (each a keyword of ``generate_dataset``: a test holds them equal)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls, raw: Any, errors: list[str]) -> SynthSpec | None:
        """The section, or None when the spec has none (or an empty one)."""
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            errors.append(f"synth must be a mapping of `cvae data synth` options, got {raw!r}")
            return None
        from cvae.core.synth import MINIMUMS  # the generator's own bounds: a wrong value fails before a study

        section = read_mapping("synth", raw, cls.option_names(), errors)
        if not section:
            return None
        values: dict[str, Any] = {}
        for key, value in section.items():
            if key in MINIMUMS:
                if key in ("dancers", "backgrounds") and value is None:
                    continue
                values[key] = read_int(f"synth.{key}", value, errors, MINIMUMS[key])
            elif key == "size":
                values[key] = cls._parse_size(value, errors)
            elif key in ("progress", "spotlight", "lighting"):
                if not isinstance(value, bool):
                    errors.append(f"synth.{key}={value!r} must be true or false")
                else:
                    values[key] = value
        return cls(**values)

    @classmethod
    def _parse_size(cls, raw: Any, errors: list[str]) -> tuple[int, int] | None:
        from cvae.core.synth import parse_size  # the one parser of a frame size, the CLI's too

        try:
            return parse_size(raw)
        except ValueError as err:
            errors.append(f"synth.size={raw!r}: {err}")
            return None

    def frames(self, split: str) -> int | None:
        """The frames the generator writes for ``split`` (train or val) when given, else None."""
        return getattr(self, f"{split}_frames")


# -- program and command (W&B's) ------------------------------------------------------------------------
@dataclass(frozen=True)
class CommandSpec:
    """W&B's ``program`` and ``command``: how W&B's agent starts a run. Here a worker runs each trial itself,
    as ``cvae train`` with the swept values as its flags: what ``[cvae, train, ${args}]`` does, and what W&B's
    default ``[${env}, ${interpreter}, ${program}, ${args}]`` does when the program is our trainer (``cvae
    train``, ``python -m cvae train``, or the lab's ``Trainer.py``, whose flags ``cvae train`` takes).

    ``--config ${args_json_file}`` after ``cvae train`` is honoured as well (``--config`` reads a flat YAML file,
    and JSON is YAML). What else the command or the program asks for (another program, fixed arguments, the
    other ``${args_*}`` forms, custom macros) cannot be honoured: :attr:`ignored` names it, and the spec warns
    once.
    """

    program: str | None = None
    command: tuple[str, ...] | None = None
    ignored: tuple[str, ...] = ()
    """What of ``program`` and ``command`` the sweep does not do, each as ``key=value`` (empty: all honoured)."""

    DEFAULT_COMMAND: ClassVar[tuple[str, ...]] = ("${env}", "${interpreter}", "${program}", "${args}")
    """W&B's command when a spec gives ``program`` without ``command``."""
    ENV: ClassVar[tuple[str, ...]] = ("${env}", "/usr/bin/env", "env")
    INTERPRETERS: ClassVar[tuple[str, ...]] = ("${interpreter}", "python", "python3")
    TRAINER_SCRIPTS: ClassVar[tuple[str, ...]] = ("trainer.py",)
    """Script names (any case, any folder) that are our trainer: the lab's Trainer.py."""

    @property
    def warning(self) -> str | None:
        """The one warning about what is ignored, or None."""
        if not self.ignored:
            return None
        return (f"{', '.join(self.ignored)} ignored: each trial runs `cvae train` with the swept values as its "
                "flags, as `command: [cvae, train, ${args}]` does")

    @classmethod
    def parse(cls, raw: Mapping[str, Any], errors: list[str]) -> CommandSpec:
        """``program`` and ``command`` of a whole spec ``raw``."""
        program = raw.get("program")
        if program is not None and (not isinstance(program, str) or not program.strip()):
            errors.append(f"program={program!r} must be a non-empty string (W&B's training script)")
            program = None
        command = raw.get("command")
        if command is not None:
            if (not isinstance(command, list | tuple) or not command
                    or not all(isinstance(c, str | int | float) and not isinstance(c, bool) for c in command)):
                errors.append(f"command={command!r} must be a non-empty list of strings, as W&B's "
                              "[${env}, ${interpreter}, ${program}, ${args}]")
                command = None
            else:
                command = tuple(str(c) for c in command)
        if program is None and command is None:
            return cls()
        tokens = command if command is not None else cls.DEFAULT_COMMAND
        return cls(program, command, tuple(cls._ignored(program, tokens)))

    @classmethod
    def _ignored(cls, program: str | None, tokens: tuple[str, ...]) -> list[str]:
        """What of ``tokens`` (and of ``program``, where the tokens run it) a worker does not do."""
        i = 0
        while i < len(tokens) and tokens[i] in cls.ENV:
            i += 1
        ours = False
        program_used = False
        rest = list(tokens[i:])
        if rest[:2] == ["cvae", "train"]:
            ours, rest = True, rest[2:]
        elif rest[:1] and rest[0] in cls.INTERPRETERS and rest[1:4] in (["-m", "cvae", "train"],
                                                                        ["-m", "cvae.cli", "train"]):
            ours, rest = True, rest[4:]
        else:
            if rest[:1] and rest[0] in cls.INTERPRETERS:
                rest = rest[1:]
            if rest[:1] == ["${program}"]:
                program_used = True
                ours = program is not None and cls.is_trainer(program)
                rest = rest[1:]
            elif rest[:1] and cls.is_trainer(rest[0]):
                ours, rest = True, rest[1:]
        ignored: list[str] = []
        if program_used and not ours:
            ignored.append(f"program={program!r}" if program is not None else "${program} (no program given)")
        if not ours and not program_used:
            rest = list(tokens[i:])  # no trainer found: the whole command is someone else's
        has_args = False
        extra: list[str] = []
        j = 0
        while j < len(rest):
            if rest[j] == "${args}":
                has_args = True
            elif rest[j:j + 2] == ["--config", "${args_json_file}"] and ours:
                has_args = True
                j += 1
            else:
                extra.append(rest[j])
            j += 1
        if extra:
            ignored.append("command items " + ", ".join(repr(t) for t in extra))
        elif not has_args:
            ignored.append("a command without ${args}")
        return ignored

    @classmethod
    def is_trainer(cls, program: str) -> bool:
        """Whether ``program`` (a script path) is our trainer: the lab's Trainer.py (``cvae train`` takes its
        flags)."""
        return os.path.basename(program.strip()).lower() in cls.TRAINER_SCRIPTS
