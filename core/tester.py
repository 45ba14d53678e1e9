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
from cvae.core.data import DatasetError, load_split, load_test, to_float
from cvae.core.evaluate import Evaluation, evaluate, other_video_frames
from cvae.core.model import CVAE
from cvae.core.records import BASELINE_NAMES, write_gif, write_psnr_plot
from cvae.core.rollout import rollout
from cvae.core.trainer import memory_format, resolve_device

from cvae.schema import FRAME_COLUMNS, LATENT_COLUMNS, LATENTS_CSV

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
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per evaluated video (``val``, ``test0``, ...): the evaluation's metrics (:func:`core.evaluate.evaluate`:
    ``psnr``, ``ssim``, ``psnr_best_of_k``, ..., ``active_units``), as ``evaluation.csv`` holds them."""
    evaluation_csv: Path | None = None


EVALUATION_CSV = "evaluation.csv"
"""``cvae test``: one row per evaluated video (the validation video, each test sequence with ground truth)."""
EVALUATION_KEYS = ("psnr", "ssim", "psnr_mean_of_k", "psnr_best_of_k", "psnr_std_of_k", "ssim_mean_of_k",
                   "ssim_best_of_k", "psnr_z0", "psnr_no_prev", "psnr_swapped_frame", "kl", "active_units")


def _per_video(ev: Evaluation, i: int) -> dict[str, float]:
    """Video ``i``'s metrics of an evaluation (the posterior's numbers are over every video evaluated)."""
    out = {key: ev.per_video[key][i] if key in ev.per_video else ev.metrics.get(key, math.nan)
           for key in EVALUATION_KEYS}
    return {key: float(v) for key, v in out.items()}


def evaluation_line(metrics: dict[str, float], samples: int) -> str:
    """``SSIM 0.812; 5 samples of z: best 25.10, mean 24.31 ± 0.40 dB; z = 0: 24.90 dB; ...``."""
    m = metrics
    parts = [f"SSIM {m['ssim']:.3f}"]
    if samples > 1:
        parts.append(f"{samples} samples of z: best {m['psnr_best_of_k']:.2f}, mean {m['psnr_mean_of_k']:.2f} "
                     f"± {m['psnr_std_of_k']:.2f} dB")
    if not math.isnan(m["psnr_z0"]):
        parts.append(f"z = 0: {m['psnr_z0']:.2f} dB")
    for key, text in (("psnr_no_prev", "first frame as input"), ("psnr_swapped_frame", "another video's frame")):
        if not math.isnan(m[key]):
            parts.append(f"{text} {m[key] - m['psnr']:+.2f} dB")
    if not math.isnan(m["active_units"]):
        parts.append(f"{m['active_units']:.0f} active latent channel(s)")
    return "; ".join(parts)


def _other_frames(DR: str, size: tuple[int, int], firsts: torch.Tensor, *, workers: int, cache_dir: str | None,
                  ) -> torch.Tensor | None:
    """The swapped-frame diagnostic's frames of other videos, from the training set; None (one log line)
    when the dataset has no readable training set."""
    try:
        pool = load_split(DR, "train", size, workers=workers, cache_dir=cache_dir).frames
    except DatasetError as err:
        log.info("no training set to draw another video's frame from (%s): the swapped-frame diagnostic is "
                 "skipped", err)
        return None
    return other_video_frames(pool, firsts)


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
             do_test: bool = True, do_val: bool = True, channels_last: bool = True, samples: int = 5,
             diagnostics: bool = True, frame_stride: int = 1) -> TestResult:
    """Roll out every test sequence (all in one batch) and evaluate the validation video.

    Writes ``pred_seq{i}.gif`` and ``submission.csv`` for the test set, and for the validation video the PSNR
    and SSIM per frame with the evaluation's other curves (``val_psnr_per_frame.csv``, a plot) and its posterior
    per latent channel (``latents.csv``), into ``save_root``. Every video with ground truth (the validation
    video, test sequences with ``test_gt``) is evaluated as in training (:func:`core.evaluate.evaluate`:
    ``samples`` samples of z and, with ``diagnostics``, what the model uses, its frame replacements on every
    ``frame_stride``-th frame), one row each in ``evaluation.csv``. The frame size comes from the flags, else
    from our checkpoint's config, else the lab's 32x64.
    """
    dev = resolve_device(device)
    model, ckpt = load_model(ckpt_path, dims, dev, channels_last=channels_last)
    saved_size = ckpt.get("frame_size") or [32, 64]
    size = (frame_H or int(saved_size[0]), frame_W or int(saved_size[1]))
    if ckpt.get("frame_size") and size != (int(saved_size[0]), int(saved_size[1])):
        # The lab's Tester runs a model at any frame size (it is convolutional): accepted, but not what it learned.
        log.warning("warning: %s: the model was trained on %dx%d frames; testing it on %dx%d (frame_H x frame_W) "
                    "shows it a scene at another scale than it learned", ckpt_path, int(saved_size[0]),
                    int(saved_size[1]), *size)
    out = Path(save_root)  # created once there is something to write: bad input leaves no empty folder
    gifs: list[Path] = []
    submission = None
    test_scores: dict[int, tuple[float, Baselines]] = {}
    evaluations: dict[str, dict[str, float]] = {}

    def other(firsts: torch.Tensor) -> torch.Tensor | None:
        if not diagnostics:
            return None
        return _other_frames(DR, size, firsts, workers=num_workers, cache_dir=cache_dir)

    if do_test:
        sequences = load_test(DR, size, expected_len=test_vi_len, workers=num_workers, cache_dir=cache_dir)
        first = torch.stack([s.first_frame for s in sequences])
        poses = torch.stack([s.poses for s in sequences])
        truth_of = {s.index: torch.cat([s.first_frame[None], s.ground_truth[1:]]) for s in sequences
                    if s.ground_truth is not None}
        desc = f"test ({len(sequences)} sequences)"
        if len(truth_of) == len(sequences):
            # Every sequence has ground truth: the evaluation's sample 0 is the submission's rollout (same z).
            frames = torch.stack([truth_of[s.index] for s in sequences])
            ev = evaluate(model, frames, poses, seed=seed, samples=samples, diagnostics=diagnostics,
                          frame_stride=frame_stride, other=other(first), progress=progress, desc=desc)
            videos = ev.video.cpu()
            scored = {s.index: (i, ev) for i, s in enumerate(sequences)}
        else:
            videos = rollout(model, to_float(first, dev), poses, generator=torch.Generator(device=dev).manual_seed(seed),
                             progress=progress, desc=desc).cpu()
            scored = {}
            with_gt = [s for s in sequences if s.ground_truth is not None]
            if with_gt:
                ev = evaluate(model, torch.stack([truth_of[s.index] for s in with_gt]),
                              torch.stack([s.poses for s in with_gt]), seed=seed, samples=samples,
                              diagnostics=diagnostics, frame_stride=frame_stride,
                              other=other(torch.stack([s.first_frame for s in with_gt])),
                              progress=progress, desc="test (ground truth)")
                scored = {s.index: (i, ev) for i, s in enumerate(with_gt)}
        out.mkdir(parents=True, exist_ok=True)
        for seq, video in zip(sequences, videos, strict=True):
            path = out / f"pred_seq{seq.index}.gif"
            write_gif(video, path)
            gifs.append(path)
        submission = out / "submission.csv"
        write_submission(videos, submission)
        log.info("wrote %s (%d rows) and %d GIFs", submission, videos.shape[0] * videos.shape[1], len(gifs))
        for index, (i, ev) in sorted(scored.items()):
            truth = to_float(truth_of[index][None], torch.device("cpu"))
            evaluations[f"test{index}"] = _per_video(ev, i)
            test_scores[index] = (evaluations[f"test{index}"]["psnr"], score_baselines(truth))
    val_psnr, val_csv, val_plot, val_baselines = math.nan, None, None, None
    if do_val:
        val = load_split(DR, "val", size, workers=num_workers, cache_dir=cache_dir)
        if len(val) < val_vi_len:
            raise ConfigError(f"{DR}/val/val_img: {len(val)} frames, fewer than val_vi_len={val_vi_len}")
        frames = val.frames[:val_vi_len][None]
        ev = evaluate(model, frames, val.poses[:val_vi_len][None], seed=seed, samples=samples,
                      diagnostics=diagnostics, frame_stride=frame_stride, other=other(frames[:, 0]),
                      progress=progress, desc="validation")
        val_baselines = score_baselines(to_float(frames, dev))
        val_psnr = ev.metrics["psnr"]
        evaluations["val"] = _per_video(ev, 0)
        out.mkdir(parents=True, exist_ok=True)
        val_csv = out / "val_psnr_per_frame.csv"
        curves = {name: ev.curves[name] for name in FRAME_COLUMNS if name in ev.curves}
        refs = {name: getattr(val_baselines, name).psnr_per_frame for name in BASELINE_NAMES}
        refs |= {f"ssim_{name}": getattr(val_baselines, name).ssim_per_frame for name in BASELINE_NAMES}
        columns = {**curves, **refs}
        with val_csv.open("w") as fh:
            fh.write("frame," + ",".join(columns) + "\n")
            fh.writelines(f"{i + 1}," + ",".join(repr(float(v[i])) for v in columns.values()) + "\n"
                          for i in range(val_vi_len - 1))
        if ev.latents:
            with (out / LATENTS_CSV).open("w") as fh:
                fh.write(",".join(LATENT_COLUMNS[1:]) + "\n")
                fh.writelines(",".join(repr(c[k]) for k in LATENT_COLUMNS[1:]) + "\n" for c in ev.latents)
        val_plot = out / "val_psnr_per_frame.png"
        write_psnr_plot(ev.curves["psnr"], val_plot, title=f"Validation PSNR per frame ({Path(ckpt_path).name})",
                        references={n: refs[n] for n in ("copy_first", "mean_frame")})
        write_gif(ev.video[0].cpu(), out / "pred_val.gif")
        log.info("validation: %.3f dB average PSNR over %d predicted frames", val_psnr, val_vi_len - 1)
    evaluation_csv = None
    if evaluations:
        evaluation_csv = out / EVALUATION_CSV
        with evaluation_csv.open("w") as fh:
            fh.write("video,samples," + ",".join(EVALUATION_KEYS) + "\n")
            fh.writelines(f"{name},{samples}," + ",".join("" if math.isnan(m[k]) else repr(m[k]) for k in EVALUATION_KEYS)
                          + "\n" for name, m in evaluations.items())
    return TestResult(submission, gifs, val_psnr, val_csv, val_plot, val_baselines, test_scores, evaluations,
                      evaluation_csv)
