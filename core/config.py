"""Typed, frozen training configuration.

One dataclass per section (data, model, schedule, optim, run). Users speak in the lab's flat key names
(``N_dim: 32``, ``kl_anneal_type: cyclical``), on the command line and in YAML alike: every field name is
unique across sections, so a flat mapping resolves to exactly one field. Precedence, stated once:
defaults < YAML file < command-line flags.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from cvae.core import safe_yaml

KL_ANNEAL_ALIASES: dict[str, str] = {
    "cyclical": "cyclical",
    "monotonic": "monotonic",
    "linear": "monotonic",
    "none": "none",
    "constant": "none",
    "without": "none",
    "hybrid": "hybrid",
}
"""Spellings used by the lab and the reports, case-insensitive, mapped to the canonical names."""

OPTIM_ALIASES = {"adam": "Adam", "adamw": "AdamW"}


class ConfigError(ValueError):
    """Invalid configuration; the message names every offending key and value."""


@dataclass(frozen=True)
class DataConfig:
    DR: str | None = None
    """Dataset root in the lab's layout (``train/train_img``, ``val/val_img``, ...)."""
    frame_H: int = 32
    """Height the frames are resized to."""
    frame_W: int = 64
    """Width the frames are resized to."""
    train_vi_len: int = 16
    """Frames per training clip (consecutive, non-overlapping, as the lab's Dataset_Dance cuts them)."""
    val_vi_len: int = 630
    """Frames of the validation rollout."""
    partial: float = 1.0
    """Fraction of the training frames used."""
    fast_train: bool = False
    """Train on ``fast_partial`` of the data for the first epochs (the lab's --fast_train)."""
    fast_partial: float = 0.4
    """Fraction used while fast_train is on."""
    fast_train_epoch: int = 5
    """fast_train switches off after this epoch (the lab's exact rule: see schedules.train_fraction)."""
    num_workers: int = 4
    """Threads that decode PNGs when the frame cache is built."""
    shuffle: bool = True
    """Shuffle clip order every epoch (the lab did not; seeded, so resumes are exact)."""
    augment: bool = False
    """Report 001's joint augmentation: RandomResizedCrop + horizontal flip, identical over a clip."""
    aug_crop_scale: tuple[float, float] = (0.08, 1.0)
    """RandomResizedCrop's area range (torchvision's default, which report 001 used)."""
    cache_dir: str | None = None
    """Where decoded frames are cached; default ``$CVAE_CACHE_DIR`` or ``~/.cache/cvae``."""


@dataclass(frozen=True)
class ModelConfig:
    """Channel sizes of the model (the lab's ``--F_dim --L_dim --N_dim --D_out_dim``).

    The one model-dims type: the ``model`` section of the config, what ``CVAE`` is built from and what
    ``dims_from_state_dict`` infers from a checkpoint.
    """

    F_dim: int = 128
    """Frame feature channels."""
    L_dim: int = 32
    """Pose feature channels."""
    N_dim: int = 12
    """Latent (noise) channels."""
    D_out_dim: int = 192
    """Decoder-fusion output channels."""


@dataclass(frozen=True)
class ScheduleConfig:
    kl_anneal_type: Literal["cyclical", "monotonic", "none", "hybrid"] = "cyclical"
    """KL weight schedule. Aliases: Cyclical, Monotonic, linear, constant, None."""
    kl_anneal_cycle: int = 10
    """Number of cycles over the whole training (cyclical, hybrid)."""
    kl_anneal_ratio: float = 1.0
    """Fraction of a cycle spent ramping β from 0 to 1 (cyclical, monotonic, hybrid)."""
    kl_hybrid_switch: float = 0.5
    """Hybrid: fraction of the epochs run cyclically before β is held at 1 (report 000)."""
    tfr: float = 1.0
    """Initial teacher-forcing ratio, in [0, 1]."""
    tfr_sde: int = 10
    """Epoch from which the ratio decays."""
    tfr_d_step: float = 0.1
    """Decay of the ratio per epoch."""
    tf_per: Literal["batch", "epoch"] = "batch"
    """Draw teacher forcing per batch (report 001) or once per epoch (the lab template)."""


@dataclass(frozen=True)
class OptimConfig:
    optim: Literal["Adam", "AdamW"] = "Adam"
    """Optimizer."""
    lr: float = 0.001
    """Learning rate."""
    weight_decay: float | None = None
    """Default: 0 for Adam, 0.01 for AdamW."""
    lr_scheduler: Literal["multistep", "cosine", "none"] = "multistep"
    """MultiStepLR (the lab's), cosine annealing to 0 over num_epoch, or none."""
    lr_milestones: tuple[int, ...] = (2, 5)
    """MultiStepLR milestones (epochs)."""
    lr_gamma: float = 0.1
    """MultiStepLR decay factor."""
    lr_warmup: int = 0
    """Optimizer steps over which the learning rate rises linearly to its scheduled value (0: none, the lab's)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping."""
    batch_size: int = 2
    """Clips per batch."""


@dataclass(frozen=True)
class RunConfig:
    save_root: str | None = None
    """Output folder: checkpoints, config.yaml, metrics.csv, psnr_per_frame.csv."""
    num_epoch: int = 70
    """Epochs to train."""
    per_save: int = 3
    """Keep an ``epoch={e}.ckpt`` every per_save epochs (``last.ckpt`` is written every epoch)."""
    ckpt_path: str | None = None
    """Checkpoint to start from: ours resumes exactly, the lab's loads weights for fine-tuning."""
    resume: bool = False
    """Resume from ``save_root/last.ckpt`` when it exists."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda, cuda:N."""
    amp: Literal["none", "bf16"] = "none"
    """bf16 autocast (CUDA only)."""
    seed: int = 1
    """Seed of everything random in training."""
    val_seed: int = 0
    """Seed of z in the validation rollout, so every epoch and run is compared on the same noise."""
    val_samples: int = 5
    """K: validation rollouts with z drawn from the prior, one batch (the first is the lab's): their mean, best, spread."""
    val_diagnostics: bool = True
    """Also measure what the model uses: z = 0, its previous frame replaced, posterior collapse (active units)."""
    val_eval_every: int | Literal["auto"] = "auto"
    """The full evaluation (the K samples, z = 0, the frame replacements) every this many epochs and at the last;
    0: never by the epoch count. auto: every epoch on a GPU, 0 on a CPU, where an epoch's validation then costs
    what the lab's does (its one rollout, with SSIM and the posterior's statistics)."""
    val_eval_at: Literal["none", "last", "best"] = "none"
    """Also the full evaluation at the epoch a run is judged by: its last, or each new best ``val_psnr`` (which
    then shares its rollout). A sweep sets it from its metric's ``summary``."""
    val_frame_stride: int = 4
    """The frame replacements (``val_psnr_no_prev``, ``val_psnr_swapped_frame``) measured on every this many
    predicted frames, and their drop estimated against the rollout on the same frames (1: every frame)."""
    num_threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    time_chunk: int | None = None
    """Time steps per batched call in training (default: 4 // batch_size on a CPU, the whole clip on CUDA); same math."""
    channels_last: bool = True
    """NHWC memory format for the convolutions: same math, faster on a CPU (False: the lab's NCHW)."""
    progress: bool = True
    """Progress bars."""
    validate: bool = True
    """Roll out the validation video every epoch."""


@dataclass(frozen=True)
class TrackConfig:
    """W&B tracking of a ``cvae train`` run (sweep trials are tracked as their spec's ``wandb`` section says)."""

    wandb: bool = False
    """Log the run to W&B (offline without credentials); a run started by ``wandb agent`` always logs."""
    wandb_project: str | None = None
    """W&B project (default: $WANDB_PROJECT, else W&B's default)."""
    wandb_entity: str | None = None
    """W&B entity, a team or user (default: $WANDB_ENTITY, else your default entity)."""
    wandb_group: str | None = None
    """W&B run group (default: $WANDB_RUN_GROUP)."""
    wandb_tags: tuple[str, ...] = ()
    """W&B run tags."""
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto: online when W&B credentials exist, else offline ($WANDB_MODE wins over auto)."""
    wandb_log_model: bool | Literal["all"] = True
    """Upload the checkpoints as versions of the run's model artifact: true, best.ckpt at each new best epoch and
    last.ckpt at the end; all, last.ckpt at every epoch (W&B Lightning's log_model="all"); false, none (large
    models)."""
    wandb_log_every_n_steps: int = 50
    """Log the training loss every this many optimizer steps against trainer/global_step (Lightning's
    log_every_n_steps), besides every epoch's."""


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "schedule": ScheduleConfig,
    "optim": OptimConfig,
    "run": RunConfig,
    "track": TrackConfig,
}


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole training configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def to_flat(self) -> dict[str, Any]:
        """Flat ``{key: value}`` with YAML-friendly values (lists, not tuples)."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, name)).items():
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_flat(cls, values: Mapping[str, Any], *, source: str = "config",
                  origins: Mapping[str, str] | None = None) -> ExperimentConfig:
        """Build and validate a config from flat keys (defaults fill the rest).

        Args:
            values: flat ``{key: value}``.
            source: where the values come from, the prefix of error messages.
            origins: per-key sources where they differ (e.g. a YAML file and the command line).

        Raises:
            ConfigError: unknown keys, values of the wrong type, and values out of range, all in one
                message, each prefixed by where its key came from.
        """
        origins = origins or {}
        errors: list[str] = []
        unknown = sorted(set(values) - set(FLAT_KEYS))
        for where in dict.fromkeys(origins.get(k, source) for k in unknown):
            keys = [k for k in unknown if origins.get(k, source) == where]
            errors.append(
                f"{where}: unknown key(s) {', '.join(keys)}; valid keys: {', '.join(sorted(FLAT_KEYS))}"
            )
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, raw in values.items():
            if key not in FLAT_KEYS:
                continue
            try:
                sections[FLAT_KEYS[key]][key] = _coerce(key, raw, FIELD_TYPES[key])
            except ConfigError as err:
                errors.append(f"{origins.get(key, source)}: {err}")
        # Range checks run on the valid keys (defaults standing in for rejected ones), so one message
        # lists every problem.
        cfg = cls(**{name: SECTIONS[name](**kw) for name, kw in sections.items()})
        errors += [f"{origins.get(key, source)}: {msg}" for key, msg in cfg.keyed_problems()]
        if errors:
            raise ConfigError("; ".join(errors))
        return cfg

    def replace(self, **flat: Any) -> ExperimentConfig:
        """A copy with some flat keys changed (validated)."""
        merged = self.to_flat()
        merged.update(flat)
        return ExperimentConfig.from_flat(merged)

    def problems(self) -> list[str]:
        """Every range and cross-field violation, as messages naming key and value."""
        return [msg for _, msg in self.keyed_problems()]

    def keyed_problems(self) -> list[tuple[str, str]]:
        """Every range and cross-field violation as (the key it is about, message)."""
        d, m, s, o, r = self.data, self.model, self.schedule, self.optim, self.run
        p: list[tuple[str, str]] = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                p.append((msg.split(maxsplit=1)[0].split("/")[0].split("=")[0], msg))

        need(d.frame_H >= 4 and d.frame_W >= 4, f"frame_H/frame_W must be >= 4 (got {d.frame_H}x{d.frame_W})")
        need(d.train_vi_len >= 2, f"train_vi_len must be >= 2 (got {d.train_vi_len})")
        need(d.val_vi_len >= 2, f"val_vi_len must be >= 2 (got {d.val_vi_len})")
        need(0 < d.partial <= 1, f"partial must be in (0, 1] (got {d.partial})")
        need(0 < d.fast_partial <= 1, f"fast_partial must be in (0, 1] (got {d.fast_partial})")
        need(d.fast_train_epoch >= 0, f"fast_train_epoch must be >= 0 (got {d.fast_train_epoch})")
        need(d.num_workers >= 0, f"num_workers must be >= 0 (got {d.num_workers})")
        lo, hi = d.aug_crop_scale
        need(0 < lo <= hi <= 1, f"aug_crop_scale must be 0 < min <= max <= 1 (got {list(d.aug_crop_scale)})")
        need(m.F_dim >= 8, f"F_dim must be >= 8 (got {m.F_dim})")
        need(m.L_dim >= 2, f"L_dim must be >= 2 (got {m.L_dim})")
        need(m.N_dim >= 4, f"N_dim must be >= 4 (got {m.N_dim})")
        need(m.D_out_dim >= 8, f"D_out_dim must be >= 8 (got {m.D_out_dim})")
        need(s.kl_anneal_cycle >= 1, f"kl_anneal_cycle must be >= 1 (got {s.kl_anneal_cycle})")
        need(s.kl_anneal_ratio > 0, f"kl_anneal_ratio must be > 0 (got {s.kl_anneal_ratio})")
        need(0 <= s.kl_hybrid_switch <= 1, f"kl_hybrid_switch must be in [0, 1] (got {s.kl_hybrid_switch})")
        need(0 <= s.tfr <= 1, f"tfr must be in [0, 1] (got {s.tfr})")
        need(s.tfr_sde >= 0, f"tfr_sde must be >= 0 (got {s.tfr_sde})")
        need(s.tfr_d_step >= 0, f"tfr_d_step must be >= 0 (got {s.tfr_d_step})")
        need(o.lr > 0, f"lr must be > 0 (got {o.lr})")
        need(o.weight_decay is None or o.weight_decay >= 0, f"weight_decay must be >= 0 (got {o.weight_decay})")
        need(o.lr_gamma > 0, f"lr_gamma must be > 0 (got {o.lr_gamma})")
        need(o.lr_warmup >= 0, f"lr_warmup must be >= 0 (got {o.lr_warmup})")
        need(o.grad_clip > 0, f"grad_clip must be > 0 (got {o.grad_clip})")
        need(o.batch_size >= 1, f"batch_size must be >= 1 (got {o.batch_size})")
        need(all(e >= 0 for e in o.lr_milestones), f"lr_milestones must be >= 0 (got {list(o.lr_milestones)})")
        need(r.num_epoch >= 1, f"num_epoch must be >= 1 (got {r.num_epoch})")
        need(r.per_save >= 1, f"per_save must be >= 1 (got {r.per_save})")
        need(r.val_samples >= 1, f"val_samples must be >= 1 (got {r.val_samples})")
        need(r.val_eval_every == "auto" or r.val_eval_every >= 0,
             f"val_eval_every must be >= 0 or auto (got {r.val_eval_every})")
        need(r.val_frame_stride >= 1, f"val_frame_stride must be >= 1 (got {r.val_frame_stride})")
        need(r.num_threads is None or r.num_threads >= 1, f"num_threads must be >= 1 (got {r.num_threads})")
        need(r.time_chunk is None or r.time_chunk >= 1, f"time_chunk must be >= 1 (got {r.time_chunk})")
        need(
            r.device == "auto" or r.device == "cpu" or r.device == "cuda" or r.device.startswith("cuda:"),
            f"device must be auto, cpu, cuda or cuda:N (got {r.device!r})",
        )
        return p

    def warnings(self) -> list[tuple[str, str]]:
        """Settings the lab accepts that are probably not what was meant, as (key, message); never refused.

        - A stage narrower than RGB: with ``F_dim // 8 < 3`` the frame encoder's first stage, and with
          ``D_out_dim // 8 < 3`` the generator's last stage (whose 1x1 conv makes the RGB output), have fewer
          than 3 channels; the generator's then confines every predicted pixel to a plane (or line) of RGB.
        - A teacher-forcing decay that never starts (``tfr_sde >= num_epoch``): the ratio stays at ``tfr``.
          The lab's own ``Trainer.py --num_epoch 1`` (tfr 1.0, tfr_sde 10) is such a run.
        """
        m, s, r = self.model, self.schedule, self.run
        out: list[tuple[str, str]] = []
        for key, value, stage in (("F_dim", m.F_dim, "the frame encoder's first stage"),
                                  ("D_out_dim", m.D_out_dim, "the generator's last stage")):
            if value // 8 < 3:
                out.append((key, f"{key}={value}: {stage} has {key} // 8 = {value // 8} channel(s), fewer than "
                                 f"RGB's 3; {key} >= 24 keeps it at least as wide as a colour"))
        if s.tfr > 0 and s.tfr_d_step > 0 and s.tfr_sde >= r.num_epoch:
            out.append(("tfr_sde", f"tfr_sde={s.tfr_sde} >= num_epoch={r.num_epoch}: the teacher-forcing ratio "
                                   f"stays at tfr={s.tfr} for the whole run (its decay by tfr_d_step="
                                   f"{s.tfr_d_step} would start at epoch {s.tfr_sde})"))
        return out


FLAT_KEYS: dict[str, str] = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}
"""Flat key -> the section that holds it."""

FIELD_TYPES: dict[str, Any] = {
    name: hint for cls in SECTIONS.values() for name, hint in get_type_hints(cls).items()
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, raw: Any, hint: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise ConfigError naming the key and value."""
    origin = get_origin(hint)
    args = get_args(hint)
    if raw is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{key} must not be null")
    if origin is Literal:
        text = str(raw)
        if key == "kl_anneal_type":
            text = KL_ANNEAL_ALIASES.get(text.lower(), text)
        elif key == "optim":
            text = OPTIM_ALIASES.get(text.lower(), text)
        else:
            text = text.lower()
        if text not in args:
            choices = sorted(KL_ANNEAL_ALIASES) if key == "kl_anneal_type" else list(args)
            raise ConfigError(f"{key}={raw!r} is not one of {', '.join(choices)}")
        return text
    if type(None) in args:  # Optional[X]
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, raw, inner)
    if origin is not tuple and (bool in args or int in args):  # bool | Literal[...], int | Literal[...]: a value or a word
        words = [w for a in args if get_origin(a) is Literal for w in get_args(a)]
        if isinstance(raw, str) and raw.lower() in words:
            return raw.lower()
        kind = bool if bool in args else int
        try:
            return _coerce(key, raw, kind)
        except ConfigError:
            what = "a boolean" if kind is bool else "an integer"
            raise ConfigError(f"{key}={raw!r} is not {what} or {' or '.join(words)}") from None
    if origin is tuple:
        items = raw
        if isinstance(raw, str):
            items = [x for x in raw.replace("[", "").replace("]", "").split(",") if x.strip()]
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{key}={raw!r} must be a list")
        elem = args[0]
        values = tuple(_coerce(key, x, elem) for x in items)
        if args[-1] is not Ellipsis and len(values) != len(args):
            raise ConfigError(f"{key}={raw!r} must have {len(args)} items")
        return values
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in _TRUE:
            return True
        if str(raw).lower() in _FALSE:
            return False
        raise ConfigError(f"{key}={raw!r} is not a boolean")
    if hint is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}={raw!r} is not an integer")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r} is not an integer") from None
        if not value.is_integer():
            raise ConfigError(f"{key}={raw!r} is not an integer")
        return int(value)
    if hint is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}={raw!r} is not a number")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key}={raw!r} is not a finite number")
        return value
    if hint is str:
        if isinstance(raw, dict | list):
            raise ConfigError(f"{key}={raw!r} must be a string")
        return os.fspath(raw) if isinstance(raw, os.PathLike) else str(raw)
    raise TypeError(f"no coercion for {key}: {hint}")  # a programming error, not user input


def read_yaml_mapping(path: str | os.PathLike, what: str = "config file") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is an empty mapping).

    Raises:
        ConfigError: the file is missing, not valid YAML (with line and column), or not a mapping; the
            message names the file and says what it should be (``what``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what} ({err.strerror})") from None
    except UnicodeDecodeError as err:  # YAML is UTF-8 text; say where, not only the codec's words
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{err.object[err.start]:02x}); save the "
                          f"{what} as UTF-8") from None
    try:
        data = safe_yaml.load(text, str(path))
    except safe_yaml.YamlError as err:
        raise ConfigError(str(err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of keys to values, not {type(data).__name__}")
    return data


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a flat training-config YAML file (see :func:`read_yaml_mapping`)."""
    return read_yaml_mapping(path, "config file")


def resolve_config(
    yaml_path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None
) -> ExperimentConfig:
    """defaults < YAML file < overrides (e.g. command-line flags), validated once."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if yaml_path is not None:
        merged.update(load_yaml_config(yaml_path))
        origins.update(dict.fromkeys(merged, str(yaml_path)))
    for key, value in (overrides or {}).items():
        merged[key] = value
        origins[key] = "command line"
    return ExperimentConfig.from_flat(merged, source="config", origins=origins)


def field_docs() -> dict[str, str]:
    """The attribute docstrings of every config field (the CLI's help texts), read from this module's source."""
    import ast
    import inspect
    import sys

    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    docs: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name in {c.__name__ for c in SECTIONS.values()}):
            continue
        for prev, cur in zip(node.body, node.body[1:], strict=False):
            if (isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name)
                    and isinstance(cur, ast.Expr) and isinstance(cur.value, ast.Constant)):
                docs[prev.target.id] = str(cur.value.value)
    return docs
