"""The lab Tester's job: roll out the test set from a checkpoint, write GIFs and the Kaggle submission."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from cvae.core import checkpoint as ckpt_io
from cvae.core.baselines import Baselines, score_baselines
from cvae.core.config import ConfigError, ModelConfig
from cvae.core.data import load_split, load_test, to_float
from cvae.core.model import CVAE
from cvae.core.records import BASELINE_NAMES, write_gif, write_psnr_plot
from cvae.core.rollout import rollout, score
from cvae.core.trainer import memory_format, resolve_device

log = logging.getLogger("cvae")


@dataclass(frozen=True)
class TestResult:
    """What ``run_test`` wrote and measured."""

    submission: Path | None
    gifs: list[Path]
    val_psnr: float
    val_csv: Path | None
    val_plot: Path | None
    val_baselines: Baselines | None = None
    """The trivial predictors on the same validation clip."""
    test_scores: dict[int, tuple[float, Baselines]] = field(default_factory=dict)
    """Test sequences with ground truth: index -> (the rollout's PSNR, the trivial predictors')."""


def load_model(ckpt_path: str | os.PathLike, dims: ModelConfig | None, device: torch.device, *,
               channels_last: bool = True) -> tuple[CVAE, dict]:
    """A model from a checkpoint (ours or the lab's), sizes inferred from its tensors, in eval mode.

    Raises:
        CheckpointError: unreadable, not a cVAE's weights, or sizes given by flags that disagree with the
            tensors; one line naming the file.
    """
    ckpt = ckpt_io.load(ckpt_path)
    found = ckpt_io.state_dict_dims(ckpt["state_dict"], ckpt_path)
    if dims is not None and dims != found:
        raise ckpt_io.CheckpointError(f"{ckpt_path}: checkpoint has model sizes {found}, flags ask for {dims}")
    model = CVAE(found)
    ckpt_io.load_weights(model, ckpt["state_dict"], ckpt_path)
    return model.to(device, memory_format=memory_format(channels_last)).eval(), ckpt


def write_submission(videos: torch.Tensor, path: str | os.PathLike) -> None:
    """The Kaggle CSV: ``id,0,...,3*H*W-1``, one row per frame of every sequence, pixels ×255 rounded.

    Pixels are clamped to [0, 1] first: values outside can only be further from any real frame.
    """
    flat = videos.detach().float().clamp(0, 1).mul(255).round().to(torch.int16).flatten(2)  # (S, T, 3HW)
    rows = flat.reshape(-1, flat.shape[-1]).cpu().numpy()
    ids = np.arange(rows.shape[0])[:, None]
    header = "id," + ",".join(str(i) for i in range(rows.shape[1]))
    np.savetxt(path, np.hstack([ids, rows]), fmt="%d", delimiter=",", header=header, comments="")


def run_test(DR: str, save_root: str, ckpt_path: str, *, frame_H: int | None = None, frame_W: int | None = None,
             dims: ModelConfig | None = None, device: str = "auto", seed: int = 0, test_vi_len: int = 630,
             val_vi_len: int = 630, num_workers: int = 4, cache_dir: str | None = None, progress: bool = True,
             do_test: bool = True, do_val: bool = True, channels_last: bool = True) -> TestResult:
    """Roll out every test sequence (all in one batch) and the validation video.

    Writes ``pred_seq{i}.gif`` and ``submission.csv`` for the test set, and ``val_psnr_per_frame.csv`` +
    ``val_psnr_per_frame.png`` for the validation video, into ``save_root``. The frame size comes from the
    flags, else from our checkpoint's config, else the lab's 32x64.
    """
    dev = resolve_device(device)
    model, ckpt = load_model(ckpt_path, dims, dev, channels_last=channels_last)
    saved_size = ckpt.get("frame_size") or [32, 64]
    size = (frame_H or int(saved_size[0]), frame_W or int(saved_size[1]))
    out = Path(save_root)  # created once there is something to write: bad input leaves no empty folder
    generator = torch.Generator(device=dev).manual_seed(seed)
    gifs: list[Path] = []
    submission = None
    test_scores: dict[int, tuple[float, Baselines]] = {}
    if do_test:
        sequences = load_test(DR, size, expected_len=test_vi_len, workers=num_workers, cache_dir=cache_dir)
        first = torch.stack([s.first_frame for s in sequences])
        poses = torch.stack([s.poses for s in sequences])
        videos = rollout(model, to_float(first, dev), poses, generator=generator, progress=progress,
                         desc=f"test ({len(sequences)} sequences)").cpu()
        out.mkdir(parents=True, exist_ok=True)
        for seq, video in zip(sequences, videos, strict=True):
            path = out / f"pred_seq{seq.index}.gif"
            write_gif(video, path)
            gifs.append(path)
        submission = out / "submission.csv"
        write_submission(videos, submission)
        log.info("wrote %s (%d rows) and %d GIFs", submission, videos.shape[0] * videos.shape[1], len(gifs))
        for seq, video in zip(sequences, videos, strict=True):
            if seq.ground_truth is not None:
                truth = to_float(seq.ground_truth[None], torch.device("cpu"))
                test_scores[seq.index] = (score(video[None], truth).avg_psnr, score_baselines(truth))
    val_psnr, val_csv, val_plot, val_baselines = math.nan, None, None, None
    if do_val:
        val = load_split(DR, "val", size, workers=num_workers, cache_dir=cache_dir)
        if len(val) < val_vi_len:
            raise ConfigError(f"{DR}/val/val_img: {len(val)} frames, fewer than val_vi_len={val_vi_len}")
        frames = val.frames[:val_vi_len][None]
        pred = rollout(model, to_float(frames[:, 0], dev), val.poses[:val_vi_len][None],
                       generator=torch.Generator(device=dev).manual_seed(seed), progress=progress,
                       desc="validation")
        truth = to_float(frames, dev)
        result = score(pred, truth)
        val_baselines = score_baselines(truth)
        val_psnr = result.avg_psnr
        out.mkdir(parents=True, exist_ok=True)
        val_csv = out / "val_psnr_per_frame.csv"
        refs = {name: getattr(val_baselines, name).psnr_per_frame for name in BASELINE_NAMES}
        with val_csv.open("w") as fh:
            fh.write("frame,psnr," + ",".join(BASELINE_NAMES) + "\n")
            fh.writelines(f"{i + 1},{v!r}," + ",".join(repr(r[i]) for r in refs.values()) + "\n"
                          for i, v in enumerate(result.psnr_per_frame))
        val_plot = out / "val_psnr_per_frame.png"
        write_psnr_plot(result.psnr_per_frame, val_plot, title=f"Validation PSNR per frame ({Path(ckpt_path).name})",
                        references={n: refs[n] for n in ("copy_first", "mean_frame")})
        write_gif(pred[0].cpu(), out / "pred_val.gif")
        log.info("validation: %.3f dB average PSNR over %d predicted frames", val_psnr, val_vi_len - 1)
    return TestResult(submission, gifs, val_psnr, val_csv, val_plot, val_baselines, test_scores)
