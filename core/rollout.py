"""Autoregressive generation: one first frame and a pose sequence in, a predicted video out."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from cvae.core.data import to_float
from cvae.core.metrics import psnr, ssim
from cvae.core.model import CVAE
from tqdm.auto import tqdm

POSE_CHUNK = 64
"""Time steps whose poses are encoded in one batched call (bounds memory on 630-frame rollouts)."""


@torch.no_grad()
def rollout(model: CVAE, first_frame: torch.Tensor, poses: torch.Tensor, *, generator: torch.Generator,
            autocast: torch.autocast | None = None, progress: bool = False, desc: str = "rollout") -> torch.Tensor:
    """Generate a video from its first frame and all its poses, with z ~ N(0, I).

    Args:
        model: the cVAE; it is put in eval mode (BatchNorm uses its running statistics) and restored after.
        first_frame: (B, 3, H, W) float in [0, 1], on the model's device.
        poses: (B, T, 3, H, W) uint8 or float, any device; pose t conditions frame t.
        generator: source of z, on the model's device, so a rollout is reproducible and draws nothing from
            the training RNG.
        autocast: an optional autocast context (bf16 on CUDA).
        progress: show a progress bar over time steps.
        desc: the progress bar's label.

    Returns:
        (B, T, 3, H, W) float: frame 0 is ``first_frame``, frames 1..T-1 are predictions (not clamped).
    """
    was_training = model.training
    model.eval()
    device = first_frame.device
    batch, steps = poses.shape[:2]
    n_dim = model.dims.N_dim
    out = torch.empty((batch, steps, *first_frame.shape[1:]), dtype=torch.float32, device=device)
    out[:, 0] = first_frame
    prev = first_frame
    pose_feat = None
    try:
        for t in tqdm(range(1, steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            with autocast if autocast is not None else contextlib.nullcontext():
                k = (t - 1) % POSE_CHUNK
                if k == 0:
                    # The pose encoder in eval mode is per-image, so batching it over time is the same math.
                    chunk = poses[:, t : t + POSE_CHUNK]
                    chunk = to_float(chunk, device) if chunk.dtype == torch.uint8 else chunk.to(device)
                    pose_feat = model.encode_poses(chunk)
                z = torch.randn((batch, n_dim, *prev.shape[-2:]), generator=generator, device=device)
                pred = model.decode(model.frame_transformation(prev), pose_feat[:, k], z)
            out[:, t] = pred.float()
            prev = pred
    finally:
        model.train(was_training)
    return out


@dataclass(frozen=True)
class VideoScore:
    """Quality of a rollout (or of a trivial predictor's video) against its ground truth."""

    psnr_per_frame: list[float]
    """PSNR (dB, data range 1) of frames 1..T-1, each averaged over the videos of the batch."""
    avg_psnr: float
    """Mean over every (video, predicted frame) pair."""
    mse: float
    """Mean squared error over every predicted pixel (the validation loss)."""
    ssim_per_frame: list[float] = field(default_factory=list)
    """SSIM (:func:`core.metrics.ssim`) of frames 1..T-1, each averaged over the videos."""
    avg_ssim: float = math.nan
    """Mean SSIM over every (video, predicted frame) pair."""


def score(pred: torch.Tensor, target: torch.Tensor) -> VideoScore:
    """PSNR and SSIM per (video, frame), then averaged; frame 0 (given, not predicted) is excluded."""
    frame_psnr = psnr(pred[:, 1:], target[:, 1:])  # (B, T-1)
    frame_ssim = ssim(pred[:, 1:], target[:, 1:])
    mse = (pred[:, 1:].float() - target[:, 1:].float()).pow(2).mean()
    return VideoScore(
        psnr_per_frame=frame_psnr.mean(0).tolist(),
        avg_psnr=float(frame_psnr.mean()),
        mse=float(mse),
        ssim_per_frame=frame_ssim.mean(0).tolist(),
        avg_ssim=float(frame_ssim.mean()),
    )
