"""Trivial predictors of a video, scored exactly like a model's rollout: every PSNR beside its baselines.

A PSNR alone cannot be read: copying the first frame scores 19.8 dB on one generated validation video and
25.6 dB on another. So every validation (and every test sequence with ground truth) is scored next to

- ``copy_first``: every later frame predicted as the clip's first frame (the rollout's own input);
- ``mean_frame``: every frame predicted as the clip's mean frame (an oracle: it has seen the whole clip);
- ``copy_prev``: frame t predicted as the ground-truth frame t-1 (an oracle a rollout can never use).

They use the same clips as validation and the same PSNR code (:func:`core.rollout.score`), so a model's
``val_psnr`` minus ``copy_first`` (the *margin*) says whether it learned anything: a model under the copy
baseline has not. Each video's baselines are computed once and cached beside its decoded frames.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from cvae.core.data import FrameSequence, clips_of, default_cache_dir, to_float
from cvae.core.rollout import VideoScore, score

from cvae.schema import BASELINE_NAMES as BASELINES

CACHE_FORMAT = 2
"""2: SSIM beside PSNR (a format-1 file is recomputed)."""


@dataclass(frozen=True)
class Baselines:
    """The trivial predictors' scores on one set of clips (see the module docstring)."""

    copy_first: VideoScore
    mean_frame: VideoScore
    copy_prev: VideoScore

    def avg_psnr(self) -> dict[str, float]:
        """``{name: mean PSNR over every (clip, predicted frame)}`` in :data:`BASELINES` order."""
        return {name: getattr(self, name).avg_psnr for name in BASELINES}

    def avg_ssim(self) -> dict[str, float]:
        """``{name: mean SSIM over every (clip, predicted frame)}`` in :data:`BASELINES` order."""
        return {name: getattr(self, name).avg_ssim for name in BASELINES}

    def per_frame(self) -> dict[str, list[float]]:
        """Each predictor's PSNR of every predicted frame keyed by its name, then its SSIM keyed ``ssim_<name>``
        (``baselines.csv``'s columns)."""
        return {**{n: list(getattr(self, n).psnr_per_frame) for n in BASELINES},
                **{f"ssim_{n}": list(getattr(self, n).ssim_per_frame) for n in BASELINES}}

    def to_json(self) -> dict:
        return {name: asdict(getattr(self, name)) for name in BASELINES}

    @classmethod
    def from_json(cls, data: dict) -> Baselines:
        return cls(**{name: VideoScore(**data[name]) for name in BASELINES})


NO_BASELINES = Baselines(*(VideoScore([], math.nan, math.nan) for _ in BASELINES))
"""What a run without validation records: NaN everywhere."""


def predictions(frames: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each trivial predictor's video for (B, T, 3, H, W) ground-truth clips; frame 0 is the given frame."""
    first = frames[:, :1].expand_as(frames)
    mean = frames.mean(dim=1, keepdim=True).expand_as(frames)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    return {"copy_first": first, "mean_frame": mean, "copy_prev": prev}


def score_baselines(frames: torch.Tensor) -> Baselines:
    """Score the trivial predictors on (B, T, 3, H, W) float clips in [0, 1], as :func:`score` scores a rollout."""
    frames = frames.float()
    return Baselines(**{name: score(pred, frames) for name, pred in predictions(frames).items()})


_MEMORY: dict[str, Baselines] = {}


def video_baselines(video: FrameSequence, clip_len: int, *, cache_dir: str | os.PathLike | None = None) -> Baselines:
    """The baselines of a validation video cut into ``clip_len``-frame clips, as :func:`validate` cuts it.

    Cached by the video's decoded-frame key and the clip length, in this process and as a small JSON file
    beside the decoded frames; a video without a key (built in memory) is scored every time.
    """
    key = f"{video.key}-clips{clip_len}" if video.key else None
    if key and key in _MEMORY:
        return _MEMORY[key]
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"{key}.baselines.json"
    result = None
    if key and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("format") == CACHE_FORMAT:
                result = Baselines.from_json(data["baselines"])
        except (OSError, ValueError, KeyError, TypeError):
            result = None  # a damaged cache file is recomputed, never trusted
    if result is None:
        frames, _ = clips_of(video, clip_len)
        result = score_baselines(to_float(frames, torch.device("cpu")))
        if key:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"format": CACHE_FORMAT, "baselines": result.to_json()}))
                os.replace(tmp, path)
            except OSError:
                pass  # a read-only cache only costs a recomputation (milliseconds)
    if key:
        _MEMORY[key] = result
    return result


def summary_line(model_psnr: float, baselines: Baselines) -> str:
    """``25.31 dB: +5.47 dB over copy-first-frame (19.84), mean frame 22.08, copy previous GT 37.41``."""
    b = baselines.avg_psnr()
    return (f"{model_psnr:.2f} dB: {model_psnr - b['copy_first']:+.2f} dB over copy-first-frame "
            f"({b['copy_first']:.2f} dB); mean frame {b['mean_frame']:.2f} dB, copy previous ground truth "
            f"{b['copy_prev']:.2f} dB (oracles)")
