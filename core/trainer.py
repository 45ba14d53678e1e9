"""The training loop, split into small named steps: ``forward_clip``, ``train_step``, ``train_epoch``,
``validate``, ``fit``.

Core knows nothing of Optuna or W&B: ``fit`` calls the callbacks it is given once per epoch with an
:class:`EpochResult`; a callback may raise :class:`StopTraining` to end the run after that epoch (its
checkpoint is already written).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from cvae.core import checkpoint as ckpt_io
from cvae.core.baselines import NO_BASELINES, Baselines, video_baselines
from cvae.core.config import ConfigError, ExperimentConfig
from cvae.core.data import ClipBatches, DatasetError, FrameSequence, clips_of, load_split, num_clips
from cvae.core.evaluate import Evaluation, evaluate, other_video_frames
from cvae.core.metrics import kl_divergence, psnr
from cvae.core.model import CVAE
from cvae.core.records import CsvLog, baseline_metrics, write_baselines, write_config
from cvae.core.schedules import kl_beta, teacher_forcing_ratio, train_fraction, warmup_factor
from torch import nn
from tqdm.auto import tqdm

from cvae.schema import (
    BASELINES_CSV,
    CONFIG_YAML,
    EVAL_COLUMNS,
    FRAME_COLUMNS,
    FRAMES_CSV,
    LATENT_COLUMNS,
    LATENTS_CSV,
    METRIC_COLUMNS,
    METRICS_CSV,
)

log = logging.getLogger("cvae")


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; no checkpoint of the diverged state was written."""


class StopTraining(Exception):  # noqa: N818 - a control-flow signal, like StopIteration
    """Raised by a callback to end training after the current epoch (e.g. a pruned trial)."""

    def __init__(self, reason: str = "stopped by a callback") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class EpochResult:
    """Everything measured in one epoch; ``val_*`` are NaN when validation is off."""

    epoch: int
    num_epoch: int
    train_loss: float
    train_mse: float
    train_kl: float
    train_psnr: float
    val_loss: float
    val_psnr: float
    val_psnr_copy_first: float
    """The trivial predictors on the same validation clips (:mod:`core.baselines`)."""
    val_psnr_mean_frame: float
    val_psnr_copy_prev: float
    val_psnr_margin: float
    """``val_psnr - val_psnr_copy_first``: above 0, the model beats copying the first frame."""
    val_psnr_per_frame: list[float]
    beta: float
    tfr: float
    tf_fraction: float
    lr: float
    frames_per_s: float
    train_seconds: float
    val_seconds: float
    epoch_seconds: float
    is_best: bool
    best_val_psnr: float
    save_root: str
    val_video: torch.Tensor | None = field(default=None, repr=False)
    """The first validation video's rollout (T, 3, H, W), for callbacks that log a sample."""
    # The evaluation of a stochastic predictor (core.evaluate; cvae.schema.EVAL_COLUMNS): NaN when not measured.
    val_ssim: float = math.nan
    val_ssim_copy_first: float = math.nan
    val_psnr_mean_of_k: float = math.nan
    val_psnr_best_of_k: float = math.nan
    val_psnr_std_of_k: float = math.nan
    val_ssim_mean_of_k: float = math.nan
    val_ssim_best_of_k: float = math.nan
    val_psnr_z0: float = math.nan
    val_psnr_no_prev: float = math.nan
    val_psnr_swapped_frame: float = math.nan
    val_kl: float = math.nan
    val_active_units: float = math.nan
    val_curves: dict[str, list[float]] = field(default_factory=dict, repr=False)
    """Every predicted frame's scores (``psnr_per_frame.csv``'s columns, cvae.schema.FRAME_COLUMNS)."""
    val_latents: list[dict[str, float]] = field(default_factory=list, repr=False)
    """Per latent channel: ``channel``, ``kl``, ``mean_var``, ``active`` (``latents.csv``)."""
    baseline_frames: dict[str, list[float]] = field(default_factory=dict, repr=False)
    """The validation video's trivial predictors per frame, the same every epoch (``baselines.csv``'s columns:
    :meth:`cvae.core.baselines.Baselines.per_frame`); empty without validation."""
    train_steps: list[StepStats] = field(default_factory=list, repr=False)
    """Every optimizer step's loss, MSE, KL and PSNR, in order (W&B's per-step history)."""
    first_step: int = 0
    """The optimizer steps of the epochs before this one: ``train_steps[i]`` is global step ``first_step + i + 1``."""

    def metrics(self) -> dict[str, float]:
        """The scalar metrics, keyed as in ``metrics.csv``."""
        return {k: getattr(self, k) for k in METRIC_COLUMNS}


@dataclass(frozen=True)
class RunResult:
    """The outcome of :func:`fit`."""

    status: str
    """``completed`` or ``stopped`` (a callback raised StopTraining)."""
    reason: str
    epochs_run: int
    last_epoch: int
    best_val_psnr: float
    best_epoch: int
    history: list[EpochResult]
    """The epochs this call ran (a resumed run's earlier epochs are in its ``metrics.csv``)."""
    save_root: str
    parameters: int
    baselines: dict[str, float] = field(default_factory=dict)
    """The validation video's trivial predictors (``copy_first``, ...), NaN without validation."""
    baseline_frames: dict[str, list[float]] = field(default_factory=dict, repr=False)
    """The same per frame (:attr:`EpochResult.baseline_frames`)."""


class Callback(Protocol):
    """What ``fit`` calls; every method is optional (see :class:`BaseCallback`)."""

    def on_train_start(self, cfg: ExperimentConfig, start_epoch: int) -> None: ...

    def on_before_save(self, result: EpochResult) -> None: ...

    def on_epoch_end(self, result: EpochResult) -> None: ...

    def on_train_end(self, result: RunResult) -> None: ...


class BaseCallback:
    """No-op callback to subclass."""

    def on_train_start(self, cfg: ExperimentConfig, start_epoch: int) -> None:
        pass

    def on_before_save(self, result: EpochResult) -> None:
        """An epoch is done and nothing of it is written yet (records, checkpoints, the other callbacks): an
        exception raised here ends the run with nothing of that epoch written (a sweep worker that lost its trial
        to another machine must not write over it)."""

    def on_epoch_end(self, result: EpochResult) -> None:
        pass

    def on_train_end(self, result: RunResult) -> None:
        pass


@dataclass(frozen=True)
class StepStats:
    loss: float
    mse: float
    kl: float
    psnr: float


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}: CUDA is not available on this machine (use device: cpu or auto)")
    return device


def make_autocast(cfg: ExperimentConfig, device: torch.device) -> torch.autocast | None:
    """bf16 autocast on CUDA when asked for; on a CPU it is refused (no bf16 hardware: ~150x slower here)."""
    if cfg.run.amp == "none":
        return None
    if device.type != "cuda":
        raise ConfigError("amp=bf16 needs a CUDA device; on a CPU bf16 autocast is far slower than fp32")
    return torch.autocast("cuda", dtype=torch.bfloat16)


def build_optimizer(cfg: ExperimentConfig, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optim == "AdamW":
        wd = 0.01 if o.weight_decay is None else o.weight_decay
        return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay or 0.0)


def build_scheduler(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer):
    o = cfg.optim
    if o.lr_scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(o.lr_milestones), gamma=o.lr_gamma)
    if o.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.run.num_epoch, eta_min=0)
    return None


def _scheduler_state(scheduler) -> dict[str, Any] | None:
    if scheduler is None:
        return None
    # MultiStepLR keeps its milestones in a Counter, which weights_only loading refuses: store a dict.
    return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in scheduler.state_dict().items()}


def _load_scheduler_state(scheduler, state: dict[str, Any]) -> None:
    if isinstance(state.get("milestones"), dict):
        state = {**state, "milestones": Counter(state["milestones"])}
    scheduler.load_state_dict(state)


def _over_time(fn, chunk: int | None, *xs: torch.Tensor):
    """Apply ``fn`` to (B, T, ...) tensors with batch and time folded, ``chunk`` time steps per call.

    The folded modules have no batch-dependent layer, so any chunking is the same math; it only trades
    call overhead against working-set size (see :func:`default_time_chunk`).
    """
    batch, steps = xs[0].shape[:2]
    step = steps if chunk is None else chunk
    # split, not slicing in a loop: the backward of one split is one cat, while every slice's backward
    # would allocate and zero a gradient of the whole (B, T, ...) tensor (12% of a CPU step at T=16).
    parts = []
    for pieces in zip(*(x.split(step, dim=1) for x in xs), strict=True):
        n = pieces[0].shape[1]
        out = fn(*(p.flatten(0, 1) for p in pieces))
        parts.append([o.unflatten(0, (batch, n)) for o in (out if isinstance(out, tuple) else (out,))])
    joined = [torch.cat(list(group), dim=1) for group in zip(*parts, strict=True)]
    return joined if len(joined) > 1 else joined[0]


def memory_format(channels_last: bool) -> torch.memory_format:
    """The model's memory format: NHWC (channels_last) or the lab's NCHW; the math is the same."""
    return torch.channels_last if channels_last else torch.contiguous_format


def default_time_chunk(device: torch.device, batch_size: int) -> int | None:
    """Time steps per batched call: about 4 images per call on a CPU, the whole clip on an accelerator.

    Measured on 2 cores at the lab's sizes (batch 2, channels_last, benchmarks/core_throughput.py beside
    the lab's loop, ``--time_chunk N``): 1 step per call 6.45 frames/s, 2 steps 6.85, 4 steps 6.00; whole
    clips are slower still (their activations fall out of cache).
    """
    return None if device.type == "cuda" else max(1, 4 // batch_size)


def forward_clip(model: CVAE, frames: torch.Tensor, poses: torch.Tensor, teacher_forcing: bool,
                 eps: torch.Tensor | None = None, time_chunk: int | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predict frames 1..T-1 of a clip (the reports' training protocol).

    The math is the lab's step loop; only the order of independent work differs:

    - the frame encoder runs once per ground-truth frame, so under teacher forcing f_{t-1} is reused
      instead of being recomputed as the lab does;
    - the pose encoder runs one time step at a time, because in train mode its BatchNorm normalises with
      the statistics of the batch it is given, exactly as in the lab;
    - the posterior (it depends on ground truth only), and under teacher forcing the decoder and the
      generator too, run over time in calls of ``time_chunk`` steps (None: all at once);
    - ``eps`` for every step is drawn up front, shape (B, T-1, N, H, W), so every path uses the same noise.

    Returns:
        ``(preds, mse_t, kl_t)``: (B, T-1, 3, H, W) predictions and the (T-1,) per-step MSE and KL terms.
    """
    batch, steps = frames.shape[:2]
    size = frames.shape[-2:]
    gt_feat = _over_time(model.frame_transformation, time_chunk, frames)  # (B, T, F, H, W)
    pose_feat = torch.stack([model.label_transformation(poses[:, t]) for t in range(1, steps)], dim=1)
    if eps is None:
        eps = torch.randn((batch, steps - 1, model.dims.N_dim, *size), device=frames.device)
    z, mu, logvar = _over_time(model.Gaussian_Predictor, time_chunk, gt_feat[:, 1:], pose_feat,
                               eps.to(gt_feat.dtype))
    if teacher_forcing:
        preds = _over_time(model.decode, time_chunk, gt_feat[:, :-1], pose_feat, z)
    else:
        prev = gt_feat[:, 0]
        out = []
        for t, (pose_t, z_t) in enumerate(zip(pose_feat.unbind(1), z.unbind(1), strict=True)):
            pred = model.decode(prev, pose_t, z_t)
            out.append(pred)
            if t < steps - 2:
                prev = model.frame_transformation(pred)
        preds = torch.stack(out, dim=1)
    target = frames[:, 1:]
    mse_t = (preds.float() - target.float()).pow(2).mean(dim=(0, 2, 3, 4))
    kl_t = kl_divergence(mu.float(), logvar.float(), batch, dim=(0, 2, 3, 4))
    return preds, mse_t, kl_t


def train_step(model: CVAE, optimizer: torch.optim.Optimizer, frames: torch.Tensor, poses: torch.Tensor, *,
               beta: float, teacher_forcing: bool, grad_clip: float,
               autocast: torch.autocast | None = None, time_chunk: int | None = None) -> StepStats:
    """One optimizer step on a batch of clips: loss = mean_t MSE_t + β · mean_t KL_t, gradients clipped.

    Raises:
        DivergenceError: the loss is NaN or infinite (nothing is stepped).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast if autocast is not None else contextlib.nullcontext():
        preds, mse_t, kl_t = forward_clip(model, frames, poses, teacher_forcing, time_chunk=time_chunk)
    mse, kl = mse_t.mean(), kl_t.mean()
    loss = mse + beta * kl
    if not torch.isfinite(loss):
        raise DivergenceError(
            f"loss is {loss.item()} (mse={mse.item()}, kl={kl.item()}, beta={beta}): training diverged"
        )
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    with torch.no_grad():
        frame_psnr = psnr(preds.detach(), frames[:, 1:]).mean()
    return StepStats(loss.item(), mse.item(), kl.item(), frame_psnr.item())


def eval_every(cfg: ExperimentConfig, device: torch.device) -> int:
    """``val_eval_every`` resolved: ``auto`` is every epoch on a GPU, where a batch of K rollouts costs about
    one, and 0 (never by the epoch count) on a CPU, where it costs about K (docs/evaluation.md)."""
    every = cfg.run.val_eval_every
    return (1 if device.type == "cuda" else 0) if every == "auto" else int(every)


def full_evaluation(cfg: ExperimentConfig, epoch: int, device: torch.device) -> bool:
    """Whether ``epoch``'s validation runs the full evaluation (the K samples, z = 0, the frame replacements)
    from the start: every ``val_eval_every`` epochs and at the last, or at the last with ``val_eval_at: last``.
    The lab's rollout, SSIM and the posterior run every epoch; ``val_eval_at: best`` completes an epoch's
    evaluation once it is a new best (:meth:`Trainer.fit`)."""
    last = epoch == cfg.run.num_epoch - 1
    every = eval_every(cfg, device)
    return bool(every) and ((epoch + 1) % every == 0 or last) or (last and cfg.run.val_eval_at == "last")


def validate(model: CVAE, video: FrameSequence, cfg: ExperimentConfig, *, full: bool = True,
             other: torch.Tensor | None = None, first: Evaluation | None = None,
             autocast: torch.autocast | None = None, progress: bool = False) -> Evaluation:
    """Evaluate the model on every ``val_vi_len``-frame clip of the validation video (:func:`evaluate`): the
    lab's rollout from each clip's first frame with z under ``val_seed`` (``val_psnr``) and its SSIM; with
    ``full``, ``val_samples`` samples of z; with ``val_diagnostics``, what the model uses (z = 0 and the frame
    replacements only when ``full``; ``other``: a frame of another video per clip). ``first``: this epoch's
    validation without ``full``, completed rather than run again."""
    frames, poses = clips_of(video, cfg.data.val_vi_len)
    return evaluate(model, frames, poses, seed=cfg.run.val_seed, other=other, first=first, autocast=autocast,
                    progress=progress, **evaluation_options(cfg, full))


def evaluation_options(cfg: ExperimentConfig, full: bool) -> dict[str, Any]:
    """:func:`evaluate`'s ``samples``, ``z0``, ``frame_inputs``, ``posterior`` and ``frame_stride`` of a validation:
    the K samples, z = 0 and the frame replacements on full epochs (:func:`full_evaluation`), the posterior on
    every epoch."""
    diag = cfg.run.val_diagnostics
    return {"samples": cfg.run.val_samples if full else 1, "z0": diag and full, "frame_inputs": diag and full,
            "posterior": diag, "frame_stride": cfg.run.val_frame_stride}


def evaluation_plan(cfg: ExperimentConfig, device: torch.device) -> str:
    """What an epoch's validation runs and when the full evaluation does, in one line (``cvae train`` logs it
    at its start: a default's cost is said before it is paid)."""
    r = cfg.run
    light = "the lab's rollout with SSIM" + (" and the posterior's statistics" if r.val_diagnostics else "")
    extra = [f"{r.val_samples} samples of z"] if r.val_samples > 1 else []
    extra += ["z = 0 and the frame replacements"] if r.val_diagnostics else []
    if not extra:
        return f"validation: {light} every epoch (val_samples 1, no diagnostics: nothing more to evaluate)"
    every, at = eval_every(cfg, device), r.val_eval_at
    when = []
    if every:
        when.append("every epoch" if every == 1 else f"every {every} epochs and at the last")
    if at != "none" and not (at == "last" and every):
        when.append("at the last epoch" if at == "last" else "at each new best epoch")
    rows = r.val_samples + (1 if r.val_diagnostics else 0)
    # One thread, benchmarks/evaluation_cost.py (docs/evaluation.md): a batch row costs about 0.78 of a rollout,
    # the frame replacements and the posterior together about 0.45 at the default stride (5.36 for K = 5 in all).
    cost = f"about {1 + 0.78 * (rows - 1) + (0.45 if r.val_diagnostics else 0):.0f} lab rollouts" \
        if device.type == "cpu" else "a batch of rollouts"
    full = f"the full evaluation ({', '.join(extra)}: {cost})"
    if not when:
        how = ("val_eval_at last|best for the epoch a run is judged by, val_eval_every N, or cvae test --full on a "
               "checkpoint")
        return f"validation: {light} every epoch, the lab's cost; {full} never ({how})"
    return f"validation: {light} every epoch; {full} {' and '.join(when)}"


def _finite_or_nan(value: float) -> float:
    return value if math.isfinite(value) or value == math.inf else math.nan


SAMPLED_COLUMNS = ("val_psnr_mean_of_k", "val_psnr_best_of_k", "val_psnr_std_of_k", "val_ssim_mean_of_k",
                   "val_ssim_best_of_k")
"""The columns of the K samples: NaN at an epoch that ran only the lab's rollout (``val_eval_every``)."""


def evaluation_fields(ev: Evaluation, baselines: Baselines, *, full: bool = True) -> dict[str, Any]:
    """An evaluation as :class:`EpochResult`'s ``val_*`` fields (a score that left the finite range: NaN; the
    K samples' columns NaN unless ``full``)."""
    m = {name: _finite_or_nan(v) for name, v in ev.metrics.items()}
    if not full:
        m.update({col.removeprefix("val_"): math.nan for col in SAMPLED_COLUMNS})
    val_psnr = m["psnr"]
    out: dict[str, Any] = {"val_loss": ev.metrics["loss"] if math.isfinite(ev.metrics["loss"]) else math.nan,
                           "val_psnr": val_psnr, **baseline_metrics(val_psnr, baselines),
                           "val_ssim_copy_first": baselines.avg_ssim()["copy_first"]}
    for col in EVAL_COLUMNS:
        if col != "val_ssim_copy_first":
            out[col] = m[col.removeprefix("val_")]
    out["val_psnr_per_frame"] = [_finite_or_nan(v) for v in ev.curves["psnr"]]
    out["val_curves"] = {name: [_finite_or_nan(v) for v in ev.curves[name]] for name in FRAME_COLUMNS
                         if name in ev.curves and (full or "_of_k" not in name)}
    out["val_latents"] = ev.latents
    return out


def _clip_count_check(name: str, seq: FrameSequence, length: int, fraction: float, batch: int) -> None:
    clips = num_clips(len(seq), length, fraction)
    if clips // batch < 1:
        raise DatasetError(
            f"{name}: {len(seq)} frames give {clips} clip(s) of {length} at fraction {fraction}, "
            f"fewer than one batch of {batch}"
        )


class Trainer:
    """State of one training run; :func:`fit` is the usual entry point."""

    def __init__(self, cfg: ExperimentConfig, callbacks: Sequence[Callback] = ()) -> None:
        if cfg.data.DR is None:
            raise ConfigError("DR (the dataset root) is required")
        if cfg.run.save_root is None:
            raise ConfigError("save_root (the output folder) is required")
        self.cfg = cfg
        self.callbacks = list(callbacks)
        if cfg.run.num_threads:
            torch.set_num_threads(cfg.run.num_threads)
        self.device = resolve_device(cfg.run.device)
        self.autocast = make_autocast(cfg, self.device)
        self.time_chunk = cfg.run.time_chunk or default_time_chunk(self.device, cfg.optim.batch_size)
        self.save_root = Path(cfg.run.save_root)
        torch.manual_seed(cfg.run.seed)
        random.seed(cfg.run.seed)

        size = (cfg.data.frame_H, cfg.data.frame_W)
        kw = {"workers": cfg.data.num_workers, "cache_dir": cfg.data.cache_dir}
        self.train_data = load_split(cfg.data.DR, "train", size, **kw)
        min_fraction = min(cfg.data.partial, cfg.data.fast_partial if cfg.data.fast_train else 1.0)
        _clip_count_check(f"{cfg.data.DR}/train", self.train_data, cfg.data.train_vi_len, min_fraction,
                          cfg.optim.batch_size)
        self.val_data = None
        if cfg.run.validate:
            self.val_data = load_split(cfg.data.DR, "val", size, **kw)
            if len(self.val_data) < cfg.data.val_vi_len:
                raise DatasetError(
                    f"{cfg.data.DR}/val/val_img: {len(self.val_data)} frames, fewer than val_vi_len="
                    f"{cfg.data.val_vi_len}"
                )
        self.baselines: Baselines = NO_BASELINES
        self.other_frames = None
        if self.val_data is not None:
            self.baselines = video_baselines(self.val_data, cfg.data.val_vi_len, cache_dir=cfg.data.cache_dir)
            if cfg.run.val_diagnostics:
                # The swapped-frame diagnostic's "another video": the training frame least like each clip's first.
                firsts = clips_of(self.val_data, cfg.data.val_vi_len)[0][:, 0]
                self.other_frames = other_video_frames(self.train_data.frames, firsts)
            log.info("%s", evaluation_plan(cfg, self.device))

        if self.device.type == "cuda":
            # Decoded once, kept on the GPU: batches are gathered there, with no host copy per step.
            self.train_data = self.train_data.to(self.device)
            self.val_data = self.val_data.to(self.device) if self.val_data is not None else None
        self.model = CVAE(cfg.model).to(self.device, memory_format=memory_format(cfg.run.channels_last))
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.start_epoch = 0
        self.best_val_psnr = -math.inf
        self.best_epoch = -1
        self._remove_stale_temporaries()
        self._maybe_resume()
        # Only now, with the dataset and any checkpoint accepted: bad input leaves no empty folder behind.
        # The folders this run creates, outermost first: removed again if it diverges before its first epoch.
        self._created = [p for p in (self.save_root, *self.save_root.parents) if not p.exists()][::-1]
        try:
            self.save_root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"save_root={str(self.save_root)!r}: cannot create the folder ({err.strerror})") from None

    def _remove_unfinished_run(self) -> None:
        """A run that diverged in its first epoch leaves nothing: the folders it created are removed, and in a
        folder that was there before, the records it began (no epoch of them was written)."""
        if self._created:
            shutil.rmtree(self._created[0], ignore_errors=True)
            return
        for name in (CONFIG_YAML, BASELINES_CSV, METRICS_CSV, FRAMES_CSV, LATENTS_CSV):
            (self.save_root / name).unlink(missing_ok=True)

    # -- checkpoints -------------------------------------------------------------------------------------
    def _remove_stale_temporaries(self) -> None:
        """Delete the temporary checkpoint files a kill during a save left in save_root (atomic_save's names
        only: ``.last.ckpt.XXXXXXXX.tmp``, ...); one run writes a save_root, so none is in use."""
        count, size = ckpt_io.remove_stale_temporaries(self.save_root)
        if count:
            log.info("removed %d temporary checkpoint file(s) left by an interrupted save (%d bytes, %.1f MB) "
                     "from %s", count, size, size / 1e6, self.save_root)

    def _maybe_resume(self) -> None:
        path = self.cfg.run.ckpt_path
        last = self.save_root / "last.ckpt"
        if path is None and self.cfg.run.resume and last.is_file():
            path = str(last)
        if path is None:
            return
        ckpt = ckpt_io.load(path)
        dims = ckpt_io.state_dict_dims(ckpt["state_dict"], path)
        if dims != self.model.dims:
            raise ckpt_io.CheckpointError(
                f"{path}: checkpoint has {dataclasses.asdict(dims)}, the config asks for "
                f"{dataclasses.asdict(self.model.dims)}"
            )
        ckpt_io.load_weights(self.model, ckpt["state_dict"], path)
        if ckpt_io.is_ours(ckpt):
            try:
                self.optimizer.load_state_dict(ckpt["optimizer"])
                if self.scheduler is not None and ckpt.get("scheduler") is not None:
                    _load_scheduler_state(self.scheduler, ckpt["scheduler"])
                ckpt_io.set_rng_state(ckpt["rng"])
                self.start_epoch = int(ckpt["next_epoch"])
                self.best_val_psnr = float(ckpt.get("best_val_psnr", -math.inf))
                self.best_epoch = int(ckpt.get("best_epoch", -1))
            except (KeyError, ValueError, TypeError, RuntimeError) as err:
                first = (str(err).strip().splitlines() or [""])[0]
                raise ckpt_io.CheckpointError(
                    f"{path}: cannot restore the training state ({type(err).__name__}: {first})"
                ) from None
            log.info("resumed %s at epoch %d", path, self.start_epoch)
        else:
            # The lab's checkpoint: weights only. Its last_epoch was completed, so continue after it, with
            # the schedules (β, tfr, LR) at that epoch as pure functions of the config.
            self.start_epoch = int(ckpt.get("last_epoch", -1)) + 1
            if self.scheduler is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # stepping the scheduler without a step
                    for _ in range(self.start_epoch):
                        self.scheduler.step()
            log.info("loaded lab checkpoint %s (last_epoch %s): fine-tuning from epoch %d", path,
                     ckpt.get("last_epoch"), self.start_epoch)

    def checkpoint_state(self, epoch: int, tfr: float, beta: float) -> dict[str, Any]:
        """The checkpoint after ``epoch`` completed: the lab's five keys plus what a resume needs."""
        return {
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.optimizer.param_groups[0]["lr"],
            "tfr": tfr,
            "last_epoch": epoch,
            "format": ckpt_io.FORMAT,
            "next_epoch": epoch + 1,
            "beta": beta,
            "scheduler": _scheduler_state(self.scheduler),
            "rng": ckpt_io.rng_state(),
            "best_val_psnr": self.best_val_psnr,
            "best_epoch": self.best_epoch,
            "config": self.cfg.to_flat(),
            "model_dims": dataclasses.asdict(self.model.dims),
            "frame_size": [self.cfg.data.frame_H, self.cfg.data.frame_W],
        }

    # -- epochs ------------------------------------------------------------------------------------------
    def steps_before(self, epoch: int) -> int:
        """Optimizer steps of epochs 0..epoch-1 (their clip counts are pure functions of the config)."""
        d, b = self.cfg.data, self.cfg.optim.batch_size
        return sum(num_clips(len(self.train_data), d.train_vi_len, train_fraction(d, e)) // b for e in range(epoch))

    def train_epoch(self, epoch: int) -> tuple[StepStats, float, float, int, float, list[StepStats]]:
        """Run one epoch. Returns (mean stats, β, tfr, predicted frames, fraction of TF batches, every step's
        stats)."""
        cfg = self.cfg
        beta = kl_beta(cfg.schedule, cfg.run.num_epoch, epoch)
        tfr = teacher_forcing_ratio(cfg.schedule, epoch)
        batches = ClipBatches(
            self.train_data, cfg.data.train_vi_len, cfg.optim.batch_size, train_fraction(cfg.data, epoch),
            shuffle=cfg.data.shuffle, augment=cfg.data.augment, crop_scale=cfg.data.aug_crop_scale,
            device=self.device,
        )
        epoch_tf = random.random() < tfr if cfg.schedule.tf_per == "epoch" else None
        scheduled = [group["lr"] for group in self.optimizer.param_groups]
        first_step = self.steps_before(epoch) if cfg.optim.lr_warmup else 0
        self.model.train()
        sums = {"loss": 0.0, "mse": 0.0, "kl": 0.0, "psnr": 0.0}
        steps: list[StepStats] = []
        n = tf_count = 0
        # Epochs are numbered from 0 everywhere (records, checkpoints, W&B, Optuna); the count says how far.
        bar = tqdm(batches, desc=f"epoch {epoch} ({epoch + 1} of {cfg.run.num_epoch})", disable=not cfg.run.progress,
                   leave=False, dynamic_ncols=True)
        for frames, poses in bar:
            if first_step + n < cfg.optim.lr_warmup:
                share = warmup_factor(first_step + n, cfg.optim.lr_warmup)
                for group, lr in zip(self.optimizer.param_groups, scheduled, strict=True):
                    group["lr"] = lr * share
            tf = epoch_tf if epoch_tf is not None else random.random() < tfr
            try:
                stats = train_step(self.model, self.optimizer, frames, poses, beta=beta, teacher_forcing=tf,
                                   grad_clip=cfg.optim.grad_clip, autocast=self.autocast,
                                   time_chunk=self.time_chunk)
            except DivergenceError as err:
                raise DivergenceError(f"epoch {epoch}, batch {n}: {err}") from None
            n += 1
            tf_count += tf
            steps.append(stats)
            for k in sums:
                sums[k] += getattr(stats, k)
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}", psnr=f"{sums['psnr'] / n:.2f}", beta=f"{beta:.3g}",
                            tfr=f"{tfr:.2f}")
        for group, lr in zip(self.optimizer.param_groups, scheduled, strict=True):
            group["lr"] = lr  # the epoch scheduler goes on from the scheduled value, warmup or not
        mean = StepStats(**{k: v / max(n, 1) for k, v in sums.items()})
        frames_done = n * cfg.optim.batch_size * (cfg.data.train_vi_len - 1)
        return mean, beta, tfr, frames_done, tf_count / max(n, 1), steps

    def _end_epoch(self, result: EpochResult, metrics_log: CsvLog, frames_log: CsvLog, latents_log: CsvLog,
                   tfr: float, beta: float) -> None:
        """Append the epoch's rows, then write its checkpoints, then log it."""
        cfg, epoch = self.cfg, result.epoch
        metrics_log.append([result.metrics()])
        curves = result.val_curves or {"psnr": result.val_psnr_per_frame}
        frames_log.append([{"epoch": epoch, "frame": i + 1, **{name: values[i] for name, values in curves.items()}}
                           for i in range(len(result.val_psnr_per_frame))])
        latents_log.append([{"epoch": epoch, **row} for row in result.val_latents])
        # Records before the checkpoint: a kill between the two redoes this epoch (its half-written rows are
        # dropped on resume), never leaves a checkpoint ahead of its records.
        state = self.checkpoint_state(epoch, tfr, beta)
        ckpt_io.atomic_save(state, self.save_root / "last.ckpt")
        if result.is_best:
            ckpt_io.atomic_save(state, self.save_root / "best.ckpt")
        if epoch % cfg.run.per_save == 0 or epoch == cfg.run.num_epoch - 1:
            ckpt_io.atomic_save(state, self.save_root / f"epoch={epoch}.ckpt")
        log.info(
            "epoch %d (%d of %d)  loss %.5f (mse %.5f kl %.3f)  train psnr %.2f  val psnr %.2f dB (%+.2f over "
            "copy-first-frame)  beta %.3g  tfr %.2f  lr %.3g  %.1f frames/s", epoch, epoch + 1, cfg.run.num_epoch,
            result.train_loss, result.train_mse, result.train_kl, result.train_psnr, result.val_psnr,
            result.val_psnr_margin, beta, tfr, result.lr, result.frames_per_s,
        )

    def fit(self) -> RunResult:
        cfg = self.cfg
        metrics_log = CsvLog(self.save_root / METRICS_CSV, METRIC_COLUMNS)
        frames_log = CsvLog(self.save_root / FRAMES_CSV, ("epoch", "frame", *FRAME_COLUMNS))
        latents_log = CsvLog(self.save_root / LATENTS_CSV, LATENT_COLUMNS)
        for records in (metrics_log, frames_log, latents_log):
            records.truncate_from(self.start_epoch)
        write_config(cfg.to_flat(), self.save_root / CONFIG_YAML)
        if self.val_data is not None:
            write_baselines(self.baselines, self.save_root / BASELINES_CSV)
        for cb in self.callbacks:
            cb.on_train_start(cfg, self.start_epoch)

        history: list[EpochResult] = []
        status, reason = "completed", ""
        baseline_frames = self.baselines.per_frame() if self.val_data is not None else {}
        for epoch in range(self.start_epoch, cfg.run.num_epoch):
            t0 = time.perf_counter()
            try:
                stats, beta, tfr, frames_done, tf_fraction, steps = self.train_epoch(epoch)
            except DivergenceError:
                if epoch == 0:
                    self._remove_unfinished_run()
                raise
            train_seconds = time.perf_counter() - t0
            lr = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                self.scheduler.step()
            val_fields: dict[str, Any] = {"val_loss": math.nan, "val_psnr": math.nan, "val_psnr_per_frame": [],
                                          **baseline_metrics(math.nan, self.baselines)}
            val_video, val_seconds = None, 0.0
            if self.val_data is not None:
                t1 = time.perf_counter()
                full = full_evaluation(cfg, epoch, self.device)
                ev = validate(self.model, self.val_data, cfg, full=full, other=self.other_frames,
                              autocast=self.autocast, progress=cfg.run.progress)
                if not full and cfg.run.val_eval_at == "best" and ev.metrics["psnr"] > self.best_val_psnr:
                    # A new best: the epoch a run judged by its best is judged by gets the full evaluation, its
                    # lab's rollout reused. (NaN is never a new best, as below.)
                    full = True
                    ev = validate(self.model, self.val_data, cfg, full=True, other=self.other_frames, first=ev,
                                  autocast=self.autocast, progress=cfg.run.progress)
                val_seconds = time.perf_counter() - t1
                val_video = ev.video[0].cpu()
                val_fields = evaluation_fields(ev, self.baselines, full=full)
                if math.isnan(val_fields["val_psnr"]):
                    # The rollout feeds unclamped predictions back (the lab's math), and a model that leans on
                    # the posterior's z (beta near 0) can blow up when z comes from the prior: a real outcome
                    # of this epoch's weights, not a training divergence (that is the loss check). The lab logs
                    # NaN and trains on; so do we, recording no PSNR for this epoch.
                    bad = sum(math.isnan(v) for v in val_fields["val_psnr_per_frame"])
                    log.warning("epoch %d: the validation rollout left the finite range (%d of %d frames not "
                                "finite): no validation PSNR for this epoch", epoch, bad,
                                len(val_fields["val_psnr_per_frame"]))
            val_psnr = val_fields["val_psnr"]
            is_best = self.val_data is not None and val_psnr > self.best_val_psnr  # never for NaN
            if is_best:
                self.best_val_psnr, self.best_epoch = val_psnr, epoch

            result = EpochResult(
                epoch=epoch, num_epoch=cfg.run.num_epoch, train_loss=stats.loss, train_mse=stats.mse,
                train_kl=stats.kl, train_psnr=stats.psnr, **val_fields, beta=beta, tfr=tfr,
                tf_fraction=tf_fraction, lr=lr, frames_per_s=frames_done / train_seconds,
                train_seconds=train_seconds, val_seconds=val_seconds,
                epoch_seconds=time.perf_counter() - t0, is_best=is_best, best_val_psnr=self.best_val_psnr,
                save_root=str(self.save_root), val_video=val_video, baseline_frames=baseline_frames,
                train_steps=steps, first_step=self.steps_before(epoch),
            )
            for cb in self.callbacks:
                cb.on_before_save(result)
            try:
                # Records, checkpoints and callbacks (W&B, Optuna) as one unit: Ctrl-C or SIGTERM arriving
                # in it is delivered after every callback has this epoch, so the checkpoint a resume starts
                # from is never ahead of what the trackers were told.
                with ckpt_io.signals_deferred():
                    self._end_epoch(result, metrics_log, frames_log, latents_log, tfr, beta)
                    history.append(result)
                    for cb in self.callbacks:
                        cb.on_epoch_end(result)
            except StopTraining as stop:
                status, reason = "stopped", stop.reason
                break

        last = history[-1].epoch if history else self.start_epoch - 1
        run = RunResult(
            status=status, reason=reason, epochs_run=len(history), last_epoch=last,
            best_val_psnr=self.best_val_psnr, best_epoch=self.best_epoch, history=history,
            save_root=str(self.save_root), parameters=sum(p.numel() for p in self.model.parameters()),
            baselines=self.baselines.avg_psnr(), baseline_frames=baseline_frames,
        )
        for cb in self.callbacks:
            cb.on_train_end(run)
        return run


def fit(cfg: ExperimentConfig, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train a cVAE as ``cfg`` says, calling ``callbacks`` every epoch.

    Raises:
        ConfigError, DatasetError, CheckpointError: bad input, with a message naming it.
        DivergenceError: the loss became NaN/inf (checkpoints of earlier epochs stay intact).
    """
    threads = torch.get_num_threads()
    try:
        return Trainer(cfg, callbacks).fit()
    finally:
        torch.set_num_threads(threads)  # num_threads is this run's: the caller's process keeps its own
