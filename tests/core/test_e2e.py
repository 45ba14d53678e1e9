"""A tiny end-to-end run through the real CLIs: generate, train, test; checks the real artifacts."""

from __future__ import annotations

import csv

import pytest
import torch
from cvae.core.baselines import score_baselines, summary_line
from cvae.core.data import load_split
from cvae.core.model import CVAE
from PIL import Image

from cvae.cli import main

pytestmark = pytest.mark.slow


def _synth(tmp_path_factory, name: str, *, val_frames: int, test_sequences: int, test_frames: int):
    """`cvae data synth` at the lab's frame size (32x64) with little to train on (64 frames)."""
    data = tmp_path_factory.mktemp(name) / "data"
    assert main(["data", "synth", "--out", str(data), "--train-frames", "64", "--train-video-len", "32",
                 "--val-frames", str(val_frames), "--test-sequences", str(test_sequences), "--test-frames",
                 str(test_frames), "--size", "32x64"]) == 0
    return data


@pytest.fixture(scope="module")
def lab_sized(tmp_path_factory):
    """A generated dataset with the lab's validation and test lengths (630 frames)."""
    return _synth(tmp_path_factory, "lab-sized", val_frames=630, test_sequences=2, test_frames=630)


@pytest.fixture(scope="module")
def short_validation(tmp_path_factory):
    """A generated dataset with a 24-frame validation video."""
    return _synth(tmp_path_factory, "short-validation", val_frames=24, test_sequences=1, test_frames=8)


def test_the_labs_own_one_epoch_command_line_trains(short_validation, tmp_path, capsys):
    """`Trainer.py --DR D --save_root R --num_epoch 1` runs in the lab (tfr 1.0, tfr_sde 10: the ratio never
    decays), so it runs here with the lab's model: one warning, never a refusal."""
    run = tmp_path / "result"
    # The lab's flags; --val_vi_len (the lab's too) for this dataset's short validation video, and ours only
    # to keep the evaluation to the lab's one rollout: the 630-frame rollout at the lab's model size costs half
    # a minute of CPU, K = 5 samples and the diagnostics minutes (test_synth_train_test_end_to_end and
    # tests/core/test_evaluate.py cover those).
    assert main(["train", "--DR", str(short_validation), "--save_root", str(run), "--num_epoch", "1",
                 "--val_vi_len", "24", "--val_samples", "1", "--val_diagnostics", "false"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("cvae train: warning:")]
    assert warnings == ["cvae train: warning: tfr_sde=10 >= num_epoch=1: the teacher-forcing ratio stays at "
                        "tfr=1.0 for the whole run (its decay by tfr_d_step=0.1 would start at epoch 10)"]
    assert "completed: 1 epoch(s)" in captured.out and "over copy-first-frame" in captured.out
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 1 and float(rows[0]["tfr"]) == 1.0
    ckpt = torch.load(run / "last.ckpt")
    assert ckpt["last_epoch"] == 0 and ckpt["config"]["F_dim"] == 128  # the lab's model


def test_synth_train_test_end_to_end(lab_sized, tmp_path, capsys):
    data, run, out = lab_sized, tmp_path / "run", tmp_path / "test"
    assert main(["train", "--DR", str(data), "--save_root", str(run), "--num_epoch", "2", "--tfr_sde", "1",
                 "--F_dim", "24", "--L_dim", "8", "--N_dim", "4", "--D_out_dim", "24", "--train_vi_len", "8",
                 "--batch_size", "2", "--kl_anneal_type", "Monotonic", "--no-progress", "--val_samples", "2",
                 "--val_eval_every", "2"]) == 0
    captured = capsys.readouterr()
    assert "completed: 2 epoch(s)" in captured.out and "cvae train: warning" not in captured.err
    # The evaluation of the 630-frame rollout: the K samples and the frame replacements at the last epoch only.
    metrics = list(csv.DictReader((run / "metrics.csv").open()))
    assert metrics[0]["val_psnr_best_of_k"] == "" and metrics[0]["val_ssim"] != ""
    assert float(metrics[1]["val_psnr_best_of_k"]) >= float(metrics[1]["val_psnr_mean_of_k"])
    assert metrics[1]["val_psnr_no_prev"] != "" and metrics[1]["val_psnr_swapped_frame"] != ""
    best_line = next(ln for ln in captured.out.splitlines() if ln.startswith("  epoch "))
    assert "SSIM" in best_line and "active latent channel(s)" in best_line

    ckpt = torch.load(run / "last.ckpt")
    model = CVAE(__import__("cvae.core.model", fromlist=["dims_from_state_dict"]).dims_from_state_dict(ckpt["state_dict"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)

    # The default on a CPU, the lab Tester's work and the validation video's one rollout (the full evaluation,
    # --full, is tested on short videos in test_tester.py).
    assert main(["test", "--DR", str(data), "--save_root", str(out), "--ckpt_path", str(run / "best.ckpt"),
                 "--no-progress"]) == 0
    for i in range(2):
        with Image.open(out / f"pred_seq{i}.gif") as gif:
            assert gif.n_frames == 630
            assert gif.size == (64, 32)
    with (out / "submission.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id"] + [str(i) for i in range(3 * 32 * 64)]
    assert len(rows) == 1 + 2 * 630
    assert [int(r[0]) for r in rows[1:]] == list(range(1260))
    pixels = [int(v) for r in rows[1:4] for v in r[1:]]
    assert 0 <= min(pixels) and max(pixels) <= 255
    with (out / "val_psnr_per_frame.csv").open() as fh:
        val = list(csv.DictReader(fh))
    assert len(val) == 629 and val[0]["frame"] == "1"
    with Image.open(out / "val_psnr_per_frame.png") as png:
        assert png.format == "PNG" and png.size[0] > 400
    # Every PSNR beside its baselines: per frame in the CSV, averaged on the console, for the validation video
    # and for each test sequence with ground truth (the generated dataset has test/test_gt).
    truth = load_split(data, "val", (32, 64), workers=1).frames[:630][None].float() / 255
    refs = score_baselines(truth)
    for name in ("copy_first", "mean_frame", "copy_prev"):
        assert [float(r[name]) for r in val] == pytest.approx(getattr(refs, name).psnr_per_frame, rel=1e-6)
    printed = capsys.readouterr().out.splitlines()
    (line,) = [ln for ln in printed if ln.startswith("validation: ")]
    model_psnr = float(line.split()[1])
    assert model_psnr == pytest.approx(sum(float(r["psnr"]) for r in val) / 629, abs=0.006)
    assert line.startswith(f"validation: {summary_line(model_psnr, refs)}")
    tests = [ln for ln in printed if ln.startswith("test sequence ")]
    assert [ln.split(":")[0] for ln in tests] == ["test sequence 0", "test sequence 1"]
    assert all("over copy-first-frame" in ln for ln in tests)
    # Every video with ground truth evaluated: one row each, the validation video's per-frame curves.
    with (out / "evaluation.csv").open() as fh:
        evaluated = list(csv.DictReader(fh))
    assert [r["video"] for r in evaluated] == ["test0", "test1", "val"]
    assert float(evaluated[2]["psnr"]) == pytest.approx(model_psnr, abs=0.006)
    assert {"ssim", "psnr_best_of_k", "ssim_copy_first"} <= set(val[0]) and "psnr_no_prev" not in val[0]
    assert {r["samples"] for r in evaluated} == {"1"} and all(r["psnr_z0"] == "" for r in evaluated)
