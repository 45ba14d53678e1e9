"""The lab's protocol written out the straightforward way: the yardstick of the optimized trainer.

Nothing here trains a model for users, so it is not part of the package: ``benchmarks/core_throughput.py``
imports it from beside itself, ``tests/core/test_model.py`` loads it from this file. The tests check that :func:`core.trainer.forward_clip` and
:func:`core.rollout.rollout` give the same numbers as these loops, and ``benchmarks/`` times them side by
side. Each function follows ``shared/lab4/MODEL.md`` step by step, with the costs of the lab's template:

- training: one time step at a time; the frame encoder runs twice per step (on the previous frame and on
  the current ground truth), the pose encoder and the posterior once per step;
- validation: batch 1, and the posterior q(z | x_t, P_t) is computed every step although z is drawn from
  N(0, I) (so the ground-truth frame is encoded too);
- data: every PNG is decoded and resized again each time a clip is drawn (:class:`PngClips`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from cvae.core.data import num_clips
from cvae.core.layout import paired_frames
from cvae.core.model import CVAE
from PIL import Image
from torch import nn
from torch.nn import functional as F


def lab_clip_forward(model: CVAE, frames: torch.Tensor, poses: torch.Tensor, *, teacher_forcing: bool,
                     eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The lab's training step loop over a (B, T, 3, H, W) clip.

    Args:
        eps: optional (B, T-1, N, H, W) posterior noise; default: drawn per step from the global RNG.

    Returns:
        ``(preds, mse_t, kl_t)``: (B, T-1, 3, H, W) predictions and the (T-1,) per-step MSE and KL terms.
    """
    batch, steps = frames.shape[:2]
    prev = frames[:, 0]
    preds, mses, kls = [], [], []
    for t in range(1, steps):
        f_prev = model.frame_transformation(prev)
        f_cur = model.frame_transformation(frames[:, t])
        pose = model.label_transformation(poses[:, t])
        z, mu, logvar = model.Gaussian_Predictor(f_cur, pose, None if eps is None else eps[:, t - 1])
        pred = model.Generator(model.Decoder_Fusion(f_prev, pose, z))
        preds.append(pred)
        mses.append(F.mse_loss(pred, frames[:, t]))
        kls.append(-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / batch)
        prev = frames[:, t] if teacher_forcing else pred
    return torch.stack(preds, 1), torch.stack(mses), torch.stack(kls)


def lab_train_step(model: CVAE, optimizer: torch.optim.Optimizer, frames: torch.Tensor, poses: torch.Tensor, *,
                   beta: float, teacher_forcing: bool, grad_clip: float = 1.0,
                   eps: torch.Tensor | None = None) -> tuple[float, float, float]:
    """One optimizer step of the lab: loss = mean_t [MSE_t + β·KL_t], gradient norm clipped. Returns (loss, mse, kl)."""
    optimizer.zero_grad(set_to_none=True)
    _, mse_t, kl_t = lab_clip_forward(model, frames, poses, teacher_forcing=teacher_forcing, eps=eps)
    loss = (mse_t + beta * kl_t).mean()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item(), mse_t.mean().item(), kl_t.mean().item()


@torch.no_grad()
def lab_rollout(model: CVAE, frames: torch.Tensor, poses: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """The lab's validation: one video at a time, the unused posterior included.

    Args:
        frames: (B, T, 3, H, W) float ground truth (frame 0 starts the rollout; the others feed the posterior).
        poses: (B, T, 3, H, W) float.
        generator: source of z ~ N(0, I), drawn per video and step with shape (1, N, H, W).

    Returns:
        (B, T, 3, H, W): frame 0 given, frames 1..T-1 predicted.
    """
    was_training = model.training
    model.eval()
    videos = []
    try:
        for b in range(frames.shape[0]):
            prev = frames[b : b + 1, 0]
            out = [prev]
            for t in range(1, frames.shape[1]):
                f_prev = model.frame_transformation(prev)
                f_cur = model.frame_transformation(frames[b : b + 1, t])
                pose = model.label_transformation(poses[b : b + 1, t])
                model.Gaussian_Predictor(f_cur, pose)  # computed and thrown away, as in the lab's val step
                z = torch.randn((1, model.dims.N_dim, *prev.shape[-2:]), generator=generator, device=prev.device)
                prev = model.Generator(model.Decoder_Fusion(f_prev, pose, z))
                out.append(prev)
            videos.append(torch.cat(out).unsqueeze(0))
    finally:
        model.train(was_training)
    return torch.cat(videos)


class PngClips(torch.utils.data.Dataset):
    """The lab's training set: clip k is frames [k·T, (k+1)·T) of ``split/split_img`` + ``split_label``,
    decoded from PNG and resized (bilinear) to ``size`` every time it is drawn, as (frames, poses) in [0, 1]."""

    def __init__(self, root: str | os.PathLike, size: tuple[int, int], clip_len: int, split: str = "train",
                 fraction: float = 1.0) -> None:
        root = Path(root)
        self.images, self.labels = paired_frames(root / split / f"{split}_img", root / split / f"{split}_label")
        self.size = size
        self.clip_len = clip_len
        self.n = num_clips(len(self.images), clip_len, fraction)

    def __len__(self) -> int:
        return self.n

    def _load(self, path: Path) -> torch.Tensor:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((self.size[1], self.size[0]), Image.BILINEAR)
        return torch.from_numpy(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        span = range(index * self.clip_len, (index + 1) * self.clip_len)
        return (torch.stack([self._load(self.images[i]) for i in span]),
                torch.stack([self._load(self.labels[i]) for i in span]))
