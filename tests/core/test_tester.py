"""``cvae test``: the lab Tester's outputs plus the evaluation of every video with ground truth."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from cvae.core.config import ModelConfig
from cvae.core.data import load_test
from cvae.core.evaluate import evaluate
from cvae.core.model import CVAE
from cvae.core.records import read_csv
from cvae.core.tester import EVALUATION_KEYS
from PIL import Image

from cvae.cli import main
from cvae.schema import FRAME_COLUMNS

DIMS = ModelConfig(16, 8, 4, 16)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.manual_seed(0)
    torch.save({"state_dict": CVAE(DIMS).state_dict(), "last_epoch": 0}, path)
    return path


def _test(dr: Path, out: Path, ckpt: Path, *extra: str) -> int:
    return main(["test", "--DR", str(dr), "--save_root", str(out), "--ckpt_path", str(ckpt), "--device", "cpu",
                 "--no-progress", "--test_vi_len", "24", "--val_vi_len", "24", "--num_workers", "1", *extra])


def test_every_video_with_ground_truth_is_evaluated(tiny_dataset, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _test(tiny_dataset, out, checkpoint, "--full", "--samples", "3") == 0
    printed = capsys.readouterr().out
    rows = read_csv(out / "evaluation.csv")
    assert [r["video"] for r in rows] == ["test0", "test1", "val"] and {r["samples"] for r in rows} == {"3"}
    for row in rows:
        assert all(math.isfinite(float(row[k])) for k in EVALUATION_KEYS), row
        assert float(row["psnr_best_of_k"]) >= float(row["psnr_mean_of_k"])
        assert 0 <= float(row["active_units"]) <= DIMS.N_dim
    frames = read_csv(out / "val_psnr_per_frame.csv")
    assert len(frames) == 23 and set(FRAME_COLUMNS) <= set(frames[0]) and "ssim_copy_first" in frames[0]
    assert [int(r["channel"]) for r in read_csv(out / "latents.csv")] == list(range(DIMS.N_dim))
    # The console: each video's PSNR beside its baselines, then its evaluation in one line.
    lines = printed.splitlines()
    for prefix in ("test sequence 0:", "test sequence 1:", "validation:"):
        i = next(i for i, line in enumerate(lines) if line.startswith(prefix))
        assert lines[i + 1].startswith("  SSIM ") and "3 samples of z: best" in lines[i + 1]
        assert "first frame as input" in lines[i + 1] and "active latent channel(s)" in lines[i + 1]
    # Every test sequence has ground truth: its evaluation's first sample is the submission's rollout.
    with Image.open(out / "pred_seq1.gif") as gif:
        assert gif.n_frames == 24
    sequences = load_test(tiny_dataset, (32, 64), expected_len=24, workers=1)
    model = CVAE(DIMS)
    model.load_state_dict(torch.load(checkpoint)["state_dict"])
    truth = torch.stack([torch.cat([s.first_frame[None], s.ground_truth[1:]]) for s in sequences])
    ev = evaluate(model.to(memory_format=torch.channels_last), truth, torch.stack([s.poses for s in sequences]),
                  seed=0, samples=3)
    assert [float(r["psnr"]) for r in rows[:2]] == pytest.approx(ev.per_video["psnr"], abs=1e-3)


@pytest.mark.parametrize("flags", [(), ("--samples", "1", "--no-diagnostics")], ids=["default", "by-flags"])
def test_on_a_cpu_the_default_costs_the_labs_tester_and_one_validation_rollout(tiny_dataset, checkpoint, tmp_path,
                                                                                 capsys, flags):
    out = tmp_path / "out"
    assert _test(tiny_dataset, out, checkpoint, *flags, "--no-test") == 0
    (row,) = read_csv(out / "evaluation.csv")
    assert row["psnr_best_of_k"] == row["psnr_mean_of_k"] == row["psnr"] and row["psnr_std_of_k"] == ""
    assert all(row[k] == "" for k in ("psnr_z0", "psnr_no_prev", "psnr_swapped_frame", "kl", "active_units"))
    assert not (out / "latents.csv").exists()
    line = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("  SSIM ") and "samples of z" not in ln for ln in line)


def test_only_the_sequences_with_ground_truth_are_evaluated(tiny_dataset, checkpoint, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    shutil.rmtree(data / "test" / "test_gt" / "1")
    out = tmp_path / "out"
    assert _test(data, out, checkpoint, "--samples", "2", "--no-val") == 0
    assert [r["video"] for r in read_csv(out / "evaluation.csv")] == ["test0"]
    assert (out / "pred_seq1.gif").exists() and (out / "submission.csv").exists()


def test_samples_must_be_positive(tiny_dataset, checkpoint, tmp_path, capsys):
    assert _test(tiny_dataset, tmp_path / "out", checkpoint, "--samples", "0") == 2
    assert capsys.readouterr().err.strip() == "cvae test: error: --samples must be >= 1 (got 0)"
    assert not (tmp_path / "out").exists()
