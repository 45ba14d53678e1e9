"""How long a training will take, from a short timing on this machine: ``cvae sweep plan``'s estimate."""

from __future__ import annotations

import time

import torch
from cvae.core.config import ExperimentConfig
from cvae.core.data import num_clips
from cvae.core.evaluate import evaluate
from cvae.core.model import CVAE
from cvae.core.trainer import (
    default_time_chunk,
    evaluation_options,
    full_evaluation,
    memory_format,
    train_step,
)


def epoch_seconds(cfg: ExperimentConfig, train_frames: int | None, val_frames: int | None,
                  *, threads: int | None = None) -> tuple[float, float]:
    """(seconds of one training epoch, mean seconds of one validation) of ``cfg``'s training on CPU, for a
    dataset of ``train_frames`` training and ``val_frames`` validation frames (None: unknown, 0 s).

    Times training steps on clips of 2 and 3 frames and 2 validation steps of the config's model on random
    input, extrapolated to its clip lengths: a step's cost grows linearly with its clip's length (one
    prediction per frame), and the lab's model at train_vi_len 16 costs seconds here, not minutes.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _epoch_seconds(cfg, train_frames, val_frames)
    finally:
        torch.set_num_threads(previous)


def _epoch_seconds(cfg: ExperimentConfig, train_frames: int | None, val_frames: int | None) -> tuple[float, float]:
    device = torch.device("cpu")
    model = CVAE(cfg.model).to(memory_format=memory_format(cfg.run.channels_last))
    opt = torch.optim.Adam(model.parameters())
    b, t, h, w = cfg.optim.batch_size, cfg.data.train_vi_len, cfg.data.frame_H, cfg.data.frame_W

    def train_seconds(length: int) -> float:
        frames, poses = torch.rand(b, length, 3, h, w), torch.rand(b, length, 3, h, w)
        t0 = time.perf_counter()
        train_step(model, opt, frames, poses, beta=1.0, teacher_forcing=False, grad_clip=1.0,
                   time_chunk=default_time_chunk(device, b))
        return time.perf_counter() - t0

    train_seconds(2)  # kernels built before the timing
    two, three = train_seconds(2), train_seconds(3)
    step = two + max(three - two, 0.5 * two) * (t - 2)  # a noisy difference never makes frames free
    batches = num_clips(train_frames, t, cfg.data.partial) // b if train_frames else 0
    val = 0.0
    if cfg.run.validate:
        # validate() evaluates every val_vi_len-frame clip of the validation video, in one batch: the lab's
        # rollout, SSIM and the posterior every epoch, the K samples and the frame replacements on full epochs.
        clips = max(1, num_clips(val_frames, cfg.data.val_vi_len, 1.0)) if val_frames else 1
        frames, val_poses = torch.rand(clips, 3, 3, h, w), torch.rand(clips, 3, 3, h, w)
        seconds = {}
        for full in (True, False):
            kw = dict(seed=0, other=frames[:, 0], **evaluation_options(cfg, full))
            evaluate(model, frames[:, :2], val_poses[:, :2], **kw)  # kernels built before the timing
            t0 = time.perf_counter()
            evaluate(model, frames, val_poses, **kw)
            seconds[full] = (time.perf_counter() - t0) / 2 * (cfg.data.val_vi_len - 1)
        epochs = range(cfg.run.num_epoch)
        # val_eval_at best: every epoch counted as a new best (an upper bound; early epochs mostly are).
        val = sum(seconds[full_evaluation(cfg, e, device) or cfg.run.val_eval_at == "best"] for e in epochs) \
            / len(epochs)
    return step * batches, val
