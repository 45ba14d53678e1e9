"""Baselines: the trivial predictors on hand-made videos with known PSNRs, their cache, and the run records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from cvae.core import baselines as B
from cvae.core.config import ExperimentConfig
from cvae.core.data import FrameSequence, load_split
from cvae.core.records import BASELINE_COLUMNS, MARGIN_COLUMN, METRIC_COLUMNS, read_csv
from cvae.core.trainer import fit


def psnr_of(err: float) -> float:
    """PSNR (data range 1) of a frame whose every pixel is off by ``err``."""
    return -10 * math.log10(err**2)


def flat_video(levels: list[float], size: tuple[int, int] = (4, 6)) -> torch.Tensor:
    """(T, 3, H, W): frame t is uniformly ``levels[t]``."""
    return torch.tensor(levels, dtype=torch.float32)[:, None, None, None].expand(len(levels), 3, *size).clone()


def test_each_predictor_on_a_video_with_known_psnrs() -> None:
    clip = flat_video([0.5, 0.6, 0.3])  # mean 14/30
    scores = B.score_baselines(clip[None])
    mean = (0.5 + 0.6 + 0.3) / 3
    expected = {
        "copy_first": [psnr_of(0.1), psnr_of(0.2)],
        "mean_frame": [psnr_of(0.6 - mean), psnr_of(0.3 - mean)],
        "copy_prev": [psnr_of(0.1), psnr_of(0.3)],
    }
    for name, per_frame in expected.items():
        got = getattr(scores, name)
        assert got.psnr_per_frame == pytest.approx(per_frame, abs=1e-4), name
        assert got.avg_psnr == pytest.approx(sum(per_frame) / 2, abs=1e-4), name
    assert scores.avg_psnr() == pytest.approx({k: sum(v) / 2 for k, v in expected.items()}, abs=1e-4)


def test_clips_are_averaged_per_frame_and_overall_like_a_rollout() -> None:
    levels = [[0.5, 0.6, 0.8], [0.2, 0.3, 0.6]]
    scores = B.score_baselines(torch.stack([flat_video(v) for v in levels]))
    for name, predict in (("copy_first", lambda v, t: v[0]), ("mean_frame", lambda v, t: sum(v) / 3),
                          ("copy_prev", lambda v, t: v[t - 1])):
        pairs = [[psnr_of(v[t] - predict(v, t)) for t in (1, 2)] for v in levels]  # (clip, frame)
        got = getattr(scores, name)
        assert got.psnr_per_frame == pytest.approx([(a + b) / 2 for a, b in zip(*pairs, strict=True)], abs=1e-4)
        assert got.avg_psnr == pytest.approx(sum(map(sum, pairs)) / 4, abs=1e-4)


def test_a_moving_square_ranks_the_predictors_as_expected() -> None:
    """A bright square sliding one pixel per frame over grey: copying the previous frame beats the mean frame,
    which beats copying the first frame once the square has left its first place."""
    video = torch.full((12, 3, 8, 16), 0.5)
    for t in range(12):
        video[t, :, 2:5, t : t + 3] = 1.0
    avg = B.score_baselines(video[None]).avg_psnr()
    assert avg["copy_prev"] > avg["mean_frame"] > avg["copy_first"]
    # copy_prev: 2 columns of 3 pixels wrong by 0.5 in each 8x16 frame, every frame.
    assert avg["copy_prev"] == pytest.approx(-10 * math.log10(6 * 0.25 / 128), abs=1e-4)


def test_video_baselines_cuts_the_clips_validation_uses_and_caches_them(tmp_path: Path) -> None:
    frames = (torch.rand(10, 3, 4, 6) * 255).to(torch.uint8)
    video = FrameSequence(frames, frames.clone(), key="k" * 32)
    got = B.video_baselines(video, 4, cache_dir=tmp_path)  # 2 clips of 4; the last 2 frames are left out
    clips = frames[:8].float().div(255).unflatten(0, (2, 4))
    assert got == B.score_baselines(clips)
    cached = tmp_path / f"{'k' * 32}-clips4.baselines.json"
    assert json.loads(cached.read_text())["baselines"]["copy_first"]["avg_psnr"] == got.copy_first.avg_psnr
    # A new process reads the file; a damaged file is recomputed.
    B._MEMORY.clear()
    assert B.video_baselines(video, 4, cache_dir=tmp_path) == got
    B._MEMORY.clear()
    cached.write_text("{not json")
    assert B.video_baselines(video, 4, cache_dir=tmp_path) == got
    assert json.loads(cached.read_text())["format"] == B.CACHE_FORMAT


def test_a_runs_records_carry_its_baselines(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_flat({
        "DR": str(tiny_dataset), "save_root": str(tmp_path / "run"), "F_dim": 32, "L_dim": 8, "N_dim": 4,
        "D_out_dim": 32, "train_vi_len": 4, "val_vi_len": 12, "batch_size": 4, "num_epoch": 2, "tfr_sde": 1,
        "progress": False, "num_workers": 1, "device": "cpu", "num_threads": 1,
    })
    run = fit(cfg)
    val = load_split(tiny_dataset, "val", (32, 64), workers=1)
    expected = B.video_baselines(val, 12)  # the 24-frame video as 2 clips of 12, as validation cuts it
    assert run.baselines == expected.avg_psnr()
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert set(BASELINE_COLUMNS) | {MARGIN_COLUMN} <= set(METRIC_COLUMNS)
    for row in rows:
        for name, col in zip(B.BASELINES, BASELINE_COLUMNS, strict=True):
            assert float(row[col]) == pytest.approx(expected.avg_psnr()[name], rel=1e-12)
        assert float(row[MARGIN_COLUMN]) == pytest.approx(float(row["val_psnr"]) - expected.copy_first.avg_psnr)
    per_frame = read_csv(tmp_path / "run" / "baselines.csv")
    assert [int(r["frame"]) for r in per_frame] == list(range(1, 12))
    for name in B.BASELINES:
        assert [float(r[name]) for r in per_frame] == pytest.approx(getattr(expected, name).psnr_per_frame)
    # ... and the result carries them, per frame, for whoever called fit (the sweeps read no file back)
    assert run.baseline_frames == expected.per_frame() == run.history[-1].baseline_frames
    assert all(run.baseline_frames[c] == pytest.approx([float(r[c]) for r in per_frame]) for c in per_frame[0]
               if c != "frame")


def test_summary_line_names_the_margin_and_the_oracles() -> None:
    scores = B.score_baselines(flat_video([0.5, 0.6, 0.3])[None])
    line = B.summary_line(20.0, scores)
    assert line.startswith(f"20.00 dB: {20.0 - scores.copy_first.avg_psnr:+.2f} dB over copy-first-frame")
    assert f"mean frame {scores.mean_frame.avg_psnr:.2f} dB" in line and "copy previous ground truth" in line
