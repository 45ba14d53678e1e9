"""Evaluating a stochastic video predictor as the field does, in one batched pass per validation.

The lab judges a model by one number: the PSNR of one rollout with one draw of z. That number cannot tell a
model that uses its latent from one whose posterior collapsed, nor a model that carries its input frame from
one that only renders the pose. So every validation (and ``cvae test`` where ground truth exists) measures,
as stochastic video prediction is evaluated since SVG (Denton & Fergus 2018):

- **the lab's rollout** (sample 0): z ~ N(0, I) drawn from ``seed`` exactly as :func:`core.rollout.rollout`
  draws it, scored by PSNR (``val_psnr``, unchanged) and SSIM;
- **K samples of z** from the prior (``samples``; sample 0 is the lab's rollout, the others draw from a second
  generator seeded from ``seed``): per video the mean, the best and the spread of the samples' average PSNR
  and SSIM; the best sample is chosen per video by its average (by PSNR for PSNR, by SSIM for SSIM);
- **z = 0**, the prior's mean: a model whose frames differ from the z = 0 rollout's uses its latent;
- **what the model takes from its previous frame**: the rollout with the frame input replaced at every step
  by the clip's first frame (``no_prev``: what it takes from the recent past) and by a frame of another video
  (``swapped_frame``: what it takes of the video's look), both with sample 0's z, against the normal rollout;
  on every ``frame_stride``-th frame, their drop from the rollout on the same frames estimating the whole's;
- **posterior collapse**: the posterior q(z | x_t, P_t) on every ground-truth frame: its KL from the prior per
  latent channel, and the active units of Burda et al. (2016): a channel is active when the variance over the
  data of its posterior mean (per position, averaged over the channel's H x W positions) exceeds 0.01.

The K samples and the z = 0 rollout are rows of one batch through the model (autoregressive over time); the
two frame-input diagnostics and the posterior have no recurrence and run batched over time steps. Memory is
bounded: time is processed in chunks of :data:`core.rollout.POSE_CHUNK` steps. An evaluation can be completed
later (``first=``): an epoch's validation runs the lab's rollout alone, and once that epoch turns out to be
the one a run is judged by, the other samples and diagnostics are added without rolling sample 0 out again.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from cvae.core.data import to_float
from cvae.core.metrics import psnr, ssim
from cvae.core.model import CVAE
from cvae.core.rollout import POSE_CHUNK
from tqdm.auto import tqdm

from cvae.schema import ACTIVE_THRESHOLD

EXTRA_SAMPLES_SEED = 0x5EED
"""Samples 1..K-1 draw z from a generator seeded with ``seed + EXTRA_SAMPLES_SEED``, so sample 0 is the lab's
rollout and adding samples never changes it."""
DECODE_FRAMES = 16
"""Frames decoded per call by the diagnostics that run batched over time (bounds their working set)."""


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a set of videos (see the module docstring).

    ``metrics`` keys are :data:`cvae.schema.EVAL_COLUMNS` and ``val_psnr``, ``val_loss`` without their ``val_``
    prefix (``psnr``, ``ssim``, ``psnr_best_of_k``, ...); NaN where not measured (a diagnostic turned off, a
    spread of one sample). ``curves`` holds every predicted frame's score averaged over the videos, keyed as
    :data:`cvae.schema.FRAME_COLUMNS`; ``per_video`` the per-video averages of the same scores.
    """

    metrics: dict[str, float]
    curves: dict[str, list[float]]
    per_video: dict[str, list[float]]
    latents: list[dict[str, float]] = field(default_factory=list)
    """Per latent channel: ``channel``, ``kl`` (nats per frame), ``mean_var`` (variance of its posterior mean),
    ``active`` (0 or 1); empty without diagnostics."""
    video: torch.Tensor | None = field(default=None, repr=False)
    """The lab's rollout (sample 0), (B, T, 3, H, W) float, frame 0 given."""
    samples: int = 1
    first: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    """Sample 0's scores per (video, frame), ``psnr`` and ``ssim`` (B, T-1), and its summed squared error
    ``sq_err``: what a later :func:`evaluate` with ``first=`` this evaluation reuses instead of rolling it out again."""


def _float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 frames as :func:`core.data.to_float` converts them (pinned copies to CUDA); float ones as they are."""
    return to_float(x, device) if x.dtype == torch.uint8 else x.to(device).float()


def other_video_frames(pool: torch.Tensor, firsts: torch.Tensor) -> torch.Tensor:
    """For each clip, a frame of another video: the frame of ``pool`` least like the clip's first frame (largest
    mean squared difference), so that where the pool holds other looks (dancers, clothes, backgrounds) it shows
    one. ``pool``: (N, 3, H, W), ``firsts``: (B, 3, H, W), both uint8 or both float; returns (B, 3, H, W)."""
    flat = pool.reshape(pool.shape[0], -1)
    picks = []
    for first in firsts:
        ref = first.reshape(1, -1).float()
        # In chunks: the lab's 20k-frame training set as floats at once would be half a gigabyte.
        diff = torch.cat([(part.float() - ref).pow_(2).mean(dim=1) for part in flat.split(4096)])
        picks.append(pool[int(diff.argmax())])
    return torch.stack(picks)


def stride_frames(start: int, stop: int, stride: int) -> list[int]:
    """The offsets in ``[start, stop)`` of the predicted frames (numbered from 1) that a frame stride measures:
    frames 1, 1 + stride, 1 + 2 stride, ..."""
    first = start + (-(start - 1)) % stride
    return [t - start for t in range(first, stop, stride)]


def _decode_constant_frame(model: CVAE, frame_feat: torch.Tensor, pose_feat: torch.Tensor, z: torch.Tensor,
                           autocast) -> torch.Tensor:
    """Decode every step of a chunk from the same frame features (no recurrence): (B, n, 3, H, W)."""
    batch, steps = pose_feat.shape[:2]
    step = max(1, DECODE_FRAMES // batch)
    out = []
    for s in range(0, steps, step):
        n = min(step, steps - s)
        feat = frame_feat[:, None].expand(batch, n, *frame_feat.shape[1:]).flatten(0, 1)
        with autocast():
            pred = model.decode(feat, pose_feat[:, s:s + n].flatten(0, 1), z[:, s:s + n].flatten(0, 1))
        out.append(pred.float().unflatten(0, (batch, n)))
    return torch.cat(out, dim=1)


class _Posterior:
    """Running sums of the posterior's statistics over ground-truth frames (float64: no cancellation)."""

    def __init__(self) -> None:
        self.frames = 0
        self.kl = self.mu = self.mu2 = None

    def add(self, model: CVAE, target: torch.Tensor, pose_feat: torch.Tensor, autocast) -> None:
        batch, steps = target.shape[:2]
        step = max(1, DECODE_FRAMES // batch)
        for s in range(0, steps, step):
            n = min(step, steps - s)
            with autocast():
                feat = model.frame_transformation(target[:, s:s + n].flatten(0, 1))
                mu, logvar = model.Gaussian_Predictor.posterior(feat, pose_feat[:, s:s + n].flatten(0, 1))
            mu, logvar = mu.double(), logvar.double()
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(dim=(0, 2, 3))  # (N,) summed over frames
            if self.kl is None:
                self.kl, self.mu, self.mu2 = kl, mu.sum(0), mu.pow(2).sum(0)
            else:
                self.kl += kl
                self.mu += mu.sum(0)
                self.mu2 += mu.pow(2).sum(0)
            self.frames += mu.shape[0]

    def channels(self) -> list[dict[str, float]]:
        if self.kl is None:
            return []
        mean = self.mu / self.frames
        var = (self.mu2 / self.frames - mean.pow(2)).clamp_(min=0).mean(dim=(1, 2))  # (N,) over positions
        kl = self.kl / self.frames
        return [{"channel": c, "kl": float(kl[c]), "mean_var": float(var[c]), "active": int(var[c] > ACTIVE_THRESHOLD)}
                for c in range(kl.shape[0])]


def _valid(x: torch.Tensor) -> torch.Tensor:
    """A score that can be ranked: not NaN and not -inf (a rollout that left the finite range)."""
    return ~torch.isnan(x) & (x != -math.inf)


def _best_of(per_frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, B, T) scores -> per video the best sample's average (B,) and its per-frame scores (B, T); NaN for a
    video none of whose samples is valid."""
    avg = per_frame.mean(dim=-1)
    ranked = torch.where(_valid(avg), avg, torch.full_like(avg, -math.inf))
    idx = ranked.argmax(dim=0)  # (B,)
    cols = torch.arange(per_frame.shape[1], device=per_frame.device)
    best_avg = torch.where(_valid(avg).any(dim=0), avg[idx, cols], torch.full_like(avg[0], math.nan))
    return best_avg, per_frame[idx, cols]


def _std(avg: torch.Tensor) -> torch.Tensor:
    """(K, B) -> the samples' standard deviation per video (NaN for one sample)."""
    return avg.std(dim=0) if avg.shape[0] > 1 else torch.full_like(avg[0], math.nan)


@torch.no_grad()
def evaluate(model: CVAE, frames: torch.Tensor, poses: torch.Tensor, *, seed: int, samples: int = 5,
             diagnostics: bool = True, z0: bool | None = None, frame_inputs: bool | None = None,
             posterior: bool | None = None, other: torch.Tensor | None = None, frame_stride: int = 1,
             first: Evaluation | None = None, autocast: torch.autocast | None = None, progress: bool = False,
             desc: str = "validation") -> Evaluation:
    """Evaluate ``model`` on videos with ground truth (see the module docstring).

    Args:
        model: the cVAE; put in eval mode (BatchNorm uses its running statistics) and restored after.
        frames: (B, T, 3, H, W) ground truth, uint8 or float in [0, 1], any device: frame 0 starts every
            rollout, frames 1..T-1 are scored and feed the posterior diagnostics.
        poses: (B, T, 3, H, W) pose images, uint8 or float.
        seed: the seed of z (``val_seed``): sample 0 draws exactly as the lab's rollout does.
        samples: K, the rollouts with z from the prior (>= 1).
        diagnostics: also the z = 0 rollout, the frame-input replacements and the posterior statistics; each
            can be set apart with ``z0``, ``frame_inputs`` and ``posterior`` (None: as ``diagnostics``).
        other: (B, 3, H, W) a frame of another video per clip (:func:`other_video_frames`), for the
            swapped-frame diagnostic; None leaves it out.
        frame_stride: the frame replacements decode every this many predicted frames (:func:`stride_frames`);
            their score is the lab's rollout's average plus their mean difference from it on those frames (a
            paired estimate: the rollout's frame-to-frame changes cancel out). 1: every frame, a plain average.
        first: an earlier evaluation of the same model, videos and ``seed`` (the lab's rollout of an epoch's
            validation): its sample 0 is reused, not rolled out again, and so are its posterior statistics.
        autocast: an optional autocast context (bf16 on CUDA).
        progress: a progress bar over time steps.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1 (got {samples})")
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1 (got {frame_stride})")
    z0 = diagnostics if z0 is None else z0
    frame_inputs = diagnostics if frame_inputs is None else frame_inputs
    posterior_on = (diagnostics if posterior is None else posterior) and not (first is not None and first.latents)
    device = next(model.parameters()).device
    amp = (lambda: autocast) if autocast is not None else contextlib.nullcontext
    batch, steps = frames.shape[:2]
    size = frames.shape[-2:]
    n_dim = model.dims.N_dim
    lead = 0 if first is not None else 1  # sample 0 rolled out here, or reused from ``first``
    reps = lead + samples - 1 + int(z0)  # rows of the batch: [sample 0], samples 1..K-1, [z = 0]
    gen0 = torch.Generator(device=device).manual_seed(seed)
    gen_k = torch.Generator(device=device).manual_seed(seed + EXTRA_SAMPLES_SEED)
    was_training = model.training
    model.eval()
    try:
        first_frame = _float(frames[:, 0], device)
        video = first.video if first is not None else torch.empty((batch, steps, 3, *size), dtype=torch.float32,
                                                                  device=device)
        video[:, 0] = first_frame
        prev = first_frame.repeat(reps, 1, 1, 1)
        scores = {name: torch.full((reps * batch, steps - 1), math.nan, device=device) for name in ("psnr", "ssim")}
        frame_input = {}
        if frame_inputs:
            with amp():
                frame_input["psnr_no_prev"] = model.frame_transformation(first_frame)
                if other is not None:
                    frame_input["psnr_swapped_frame"] = model.frame_transformation(_float(other, device))
        constant = {name: torch.full((batch, steps - 1), math.nan, device=device) for name in frame_input}
        posterior = _Posterior()
        sq_err = 0.0
        bar = tqdm(total=steps - 1, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
        for start in range(1, steps, POSE_CHUNK):
            stop = min(start + POSE_CHUNK, steps)
            n = stop - start
            measured = stride_frames(start, stop, frame_stride) if frame_input else []
            if not reps and not frame_input and not posterior_on:  # nothing of this chunk to compute (nor to draw)
                bar.update(n)
                continue
            target = _float(frames[:, start:stop], device)
            with amp():
                # The pose encoder in eval mode is per-image: batching it over time is the same math.
                pose_feat = model.encode_poses(_float(poses[:, start:stop], device))
            preds = torch.empty((reps * batch, n, 3, *size), dtype=torch.float32, device=device)
            z_first = torch.empty((batch, n, n_dim, *size), dtype=torch.float32, device=device)
            for k in range(n):
                # Sample 0's z is drawn even when ``first`` rolled it out: the frame replacements use it.
                z_first[:, k] = torch.randn((batch, n_dim, *size), generator=gen0, device=device)
                z = [z_first[:, k]] if lead else []
                if samples > 1:
                    z.append(torch.randn(((samples - 1) * batch, n_dim, *size), generator=gen_k, device=device))
                if z0:
                    z.append(torch.zeros((batch, n_dim, *size), device=device))
                if reps:
                    z = torch.cat(z) if len(z) > 1 else z[0]
                    pose_k = pose_feat[:, k].repeat(reps, 1, 1, 1) if reps > 1 else pose_feat[:, k]
                    with amp():
                        pred = model.decode(model.frame_transformation(prev), pose_k, z)
                    preds[:, k] = pred.float()
                    prev = pred
                bar.update()
            if reps:
                truth = target.repeat(reps, 1, 1, 1, 1)
                scores["psnr"][:, start - 1:stop - 1] = psnr(preds, truth)
                scores["ssim"][:, start - 1:stop - 1] = ssim(preds, truth)
            if lead:
                video[:, start:stop] = preds[:batch]
                sq_err += float((preds[:batch] - target).double().pow(2).sum())
            for name, feat in frame_input.items():
                if measured:
                    cols = [start - 1 + k for k in measured]
                    constant[name][:, cols] = psnr(_decode_constant_frame(
                        model, feat, pose_feat[:, measured], z_first[:, measured], amp), target[:, measured])
            if posterior_on:
                posterior.add(model, target, pose_feat, amp)
        bar.close()
    finally:
        model.train(was_training)
    if first is not None:
        scores = {name: torch.cat([first.first[name].to(device), scores[name]]) for name in scores}
        sq_err = float(first.first["sq_err"])
    return _reduce(scores, constant, posterior if first is None or not first.latents else first.latents, video,
                   samples=samples, z0=z0, frame_stride=frame_stride, sq_err=sq_err,
                   mse=sq_err / max(1, batch * (steps - 1) * 3 * size[0] * size[1]))


def _reduce(scores: dict[str, torch.Tensor], constant: dict[str, torch.Tensor],
            posterior: _Posterior | list[dict[str, float]], video: torch.Tensor, *, samples: int, z0: bool,
            frame_stride: int, sq_err: float, mse: float) -> Evaluation:
    batch = video.shape[0]
    metrics: dict[str, float] = {"loss": mse}
    curves: dict[str, list[float]] = {}
    per_video: dict[str, list[float]] = {}

    def put(name: str, per_frame: torch.Tensor, avg: torch.Tensor | None = None) -> None:
        """``per_frame``: (B, T) -> its curve over frames, per-video averages and overall mean."""
        avg = per_frame.mean(dim=1) if avg is None else avg
        curves[name] = per_frame.mean(dim=0).cpu().tolist()
        per_video[name] = avg.cpu().tolist()
        metrics[name] = float(avg.mean())

    for metric in ("psnr", "ssim"):
        drawn = scores[metric][: samples * batch].unflatten(0, (samples, batch))  # (K, B, T)
        put(metric, drawn[0])
        avg = drawn.mean(dim=-1)
        best_avg, best_frames = _best_of(drawn)
        put(f"{metric}_best_of_k", best_frames, best_avg)
        put(f"{metric}_mean_of_k", drawn.mean(dim=0))
        spread = _std(avg)
        per_video[f"{metric}_std_of_k"] = spread.cpu().tolist()
        metrics[f"{metric}_std_of_k"] = float(spread.mean())
        if z0:
            put(f"{metric}_z0", scores[metric][samples * batch:])
    lab = scores["psnr"][:batch]
    for name, values in constant.items():
        if frame_stride == 1:
            put(name, values)
        else:
            # Measured on every frame_stride-th frame: the rollout's average plus the mean change on those frames.
            cols = torch.arange(0, values.shape[1], frame_stride, device=values.device)  # frames 1, 1 + stride, ...
            put(name, values, lab.mean(dim=1) + (values[:, cols] - lab[:, cols]).mean(dim=1))
    latents = posterior.channels() if isinstance(posterior, _Posterior) else posterior
    metrics["kl"] = sum(c["kl"] for c in latents) if latents else math.nan
    metrics["active_units"] = float(sum(c["active"] for c in latents)) if latents else math.nan
    for name in ("psnr_z0", "ssim_z0", "psnr_no_prev", "psnr_swapped_frame"):
        metrics.setdefault(name, math.nan)
    first = {"psnr": scores["psnr"][:batch].cpu(), "ssim": scores["ssim"][:batch].cpu(),
             "sq_err": torch.tensor(sq_err, dtype=torch.float64)}
    return Evaluation(metrics=metrics, curves=curves, per_video=per_video, latents=latents, video=video,
                      samples=samples, first=first)
