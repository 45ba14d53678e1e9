"""The evaluation of a stochastic predictor: SSIM, K samples of z, z = 0, what the model uses, posterior
collapse (core/evaluate.py, core/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cvae.core.config import ModelConfig
from cvae.core.data import load_split
from cvae.core.evaluate import evaluate, other_video_frames
from cvae.core.metrics import ssim
from cvae.core.model import CVAE
from cvae.core.rollout import rollout, score
from scipy.ndimage import gaussian_filter

DIMS = ModelConfig(F_dim=16, L_dim=8, N_dim=4, D_out_dim=16)


def _reference_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """Wang et al. (2004) as scikit-image computes it (gaussian_weights=True, sigma 1.5, population
    covariances, the border of half a window cropped), averaged over channels: an independent implementation."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64), strict=True):  # channels
        blur = lambda v: gaussian_filter(v, sigma=1.5, truncate=3.5)  # noqa: E731 - an 11x11 window
        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        values.append(s[5:-5, 5:-5].mean())
    return float(np.mean(values))


def test_ssim_of_identical_frames_is_one():
    frames = torch.rand(3, 5, 3, 32, 64)
    assert torch.allclose(ssim(frames, frames), torch.ones(3, 5), atol=1e-6)


def test_ssim_matches_the_definition_on_known_images():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 32, 64, generator=gen)
    noisy = (clean + 0.3 * torch.randn(4, 3, 32, 64, generator=gen)).clamp(0, 1)
    ours = ssim(noisy, clean)
    expected = [_reference_ssim(a.numpy(), b.numpy()) for a, b in zip(noisy, clean, strict=True)]
    assert ours.tolist() == pytest.approx(expected, abs=1e-5)
    assert all(0 < v < 0.9 for v in expected)  # noise costs structure: a test that can fail


def test_ssim_of_flat_frames_is_its_luminance_term():
    # Constant frames have no variance: SSIM reduces to (2ab + C1) / (a² + b² + C1).
    a, b = 0.3, 0.7
    got = ssim(torch.full((1, 3, 32, 64), a), torch.full((1, 3, 32, 64), b))
    c1 = 0.01**2
    assert float(got) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)


def test_ssim_of_frames_smaller_than_the_window():
    frames = torch.rand(2, 3, 6, 9)
    assert torch.allclose(ssim(frames, frames), torch.ones(2), atol=1e-6)
    assert float(ssim(frames, 1 - frames).mean()) < 0.9


@pytest.fixture(scope="module")
def clip(tiny_dataset):
    val = load_split(tiny_dataset, "val", (32, 64), workers=1)
    return val.frames[None], val.poses[None]  # (1, 24, 3, 32, 64) uint8


def _model(seed: int = 0) -> CVAE:
    torch.manual_seed(seed)
    return CVAE(DIMS).eval()


def test_sample_zero_is_the_labs_rollout(clip):
    frames, poses = clip
    model = _model()
    ev = evaluate(model, frames, poses, seed=3, samples=4)
    lab = rollout(model, frames[:, 0].float() / 255, poses, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(ev.video, lab, atol=1e-5)
    truth = frames.float() / 255
    assert ev.metrics["psnr"] == pytest.approx(score(lab, truth).avg_psnr, abs=1e-3)
    assert ev.metrics["ssim"] == pytest.approx(score(lab, truth).avg_ssim, abs=1e-5)
    # More samples never change the lab's rollout's noise (a CPU convolution's last bits may depend on the
    # batch it is in: the same math).
    alone = evaluate(model, frames, poses, seed=3, samples=1, diagnostics=False)
    assert torch.allclose(alone.video, ev.video, atol=1e-5)
    assert alone.metrics["psnr"] == pytest.approx(ev.metrics["psnr"], abs=1e-3)


def test_best_of_k_is_never_below_the_mean_of_k(clip):
    frames, poses = clip
    # Two clips of one video, so that "per video" means something.
    frames2, poses2 = frames.unflatten(1, (2, 12)).flatten(0, 1), poses.unflatten(1, (2, 12)).flatten(0, 1)
    for seed in range(3):
        ev = evaluate(_model(seed), frames2, poses2, seed=seed, samples=5, diagnostics=False)
        for metric in ("psnr", "ssim"):
            best, mean = ev.per_video[f"{metric}_best_of_k"], ev.per_video[f"{metric}_mean_of_k"]
            assert all(b >= m - 1e-9 for b, m in zip(best, mean, strict=True)), (seed, metric)
            assert ev.metrics[f"{metric}_best_of_k"] >= ev.metrics[f"{metric}_mean_of_k"] - 1e-9
            assert ev.metrics[f"{metric}_best_of_k"] >= ev.metrics[metric] - 1e-9  # sample 0 is one of the K
            assert ev.metrics[f"{metric}_std_of_k"] > 0  # a random decoder does use z
        assert len(ev.curves["psnr_best_of_k"]) == 11


def test_one_sample_has_no_spread(clip):
    ev = evaluate(_model(), *clip, seed=0, samples=1)
    assert ev.metrics["psnr_best_of_k"] == ev.metrics["psnr_mean_of_k"] == ev.metrics["psnr"]
    assert math.isnan(ev.metrics["psnr_std_of_k"])


def test_posterior_equal_to_the_prior_has_no_active_unit(clip):
    model = _model()
    head = model.Gaussian_Predictor[6]  # the 1x1 conv that outputs (mu, logvar)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    ev = evaluate(model, *clip, seed=0, samples=2)
    assert ev.metrics["active_units"] == 0
    assert ev.metrics["kl"] == 0
    assert [c["kl"] for c in ev.latents] == [0.0] * DIMS.N_dim


def test_active_units_and_kl_per_channel_follow_their_definition(clip):
    frames, poses = clip
    model = _model()
    head = model.Gaussian_Predictor[6]
    with torch.no_grad():
        head.weight[:2] *= 200  # channels 0 and 1 of mu vary strongly with the frame; 2 and 3 barely
        head.weight[2:4] *= 0.0
    ev = evaluate(model, frames, poses, seed=0, samples=2)
    with torch.no_grad():
        x = frames[0, 1:].float() / 255
        mu, logvar = model.Gaussian_Predictor.posterior(model.frame_transformation(x),
                                                        model.label_transformation(poses[0, 1:].float() / 255))
    mean_var = mu.double().var(dim=0, unbiased=False).mean(dim=(1, 2))
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).double().sum(dim=(2, 3)).mean(0)
    assert [c["mean_var"] for c in ev.latents] == pytest.approx(mean_var.tolist(), rel=1e-4, abs=1e-9)
    assert [c["kl"] for c in ev.latents] == pytest.approx(kl.tolist(), rel=1e-4)
    assert ev.metrics["active_units"] == int((mean_var > 0.01).sum()) == 2
    assert ev.metrics["kl"] == pytest.approx(float(kl.sum()), rel=1e-4)


def _scale_inputs(model: CVAE, channels: slice, factor: float) -> CVAE:
    """Scale every weight through which the decoder's input channels ``channels`` reach its output (0 cuts
    them): the first block's two 1x1 convolutions and the next block's convolution and 1x1 shortcut (identity
    shortcuts carry the channels unchanged up to there)."""
    fusion = model.Decoder_Fusion
    with torch.no_grad():
        for weight in (fusion[0].block[0].conv1[0].weight, fusion[0].block[1].conv.weight,
                       fusion[1].conv1.weight, fusion[1].skip.weight):
            weight[:, channels] *= factor
    return model


Z = slice(DIMS.F_dim + DIMS.L_dim, DIMS.F_dim + DIMS.L_dim + DIMS.N_dim)
FRAME = slice(0, DIMS.F_dim)


def test_a_decoder_that_ignores_z_has_no_spread_over_samples(clip):
    ev = evaluate(_scale_inputs(_model(), Z, 0.0), *clip, seed=0, samples=4)
    assert ev.metrics["psnr_std_of_k"] == pytest.approx(0, abs=1e-9)
    assert ev.metrics["psnr_best_of_k"] == pytest.approx(ev.metrics["psnr_mean_of_k"], abs=1e-9)
    assert ev.metrics["psnr_z0"] == pytest.approx(ev.metrics["psnr"], abs=1e-9)
    # while the same decoder with its z weights spreads (little: at initialisation the frames are far off)
    ev = evaluate(_model(), *clip, seed=0, samples=4)
    assert ev.metrics["psnr_std_of_k"] > 1e-6
    assert abs(ev.metrics["psnr_z0"] - ev.metrics["psnr"]) > 1e-6


def test_replacing_the_previous_frame_changes_nothing_for_a_model_that_ignores_it(clip, tiny_dataset):
    frames, poses = clip
    train = load_split(tiny_dataset, "train", (32, 64), workers=1)
    other = other_video_frames(train.frames, frames[:, 0])
    ev = evaluate(_scale_inputs(_model(), FRAME, 0.0), frames, poses, seed=0, samples=2, other=other)
    assert ev.metrics["psnr_no_prev"] == pytest.approx(ev.metrics["psnr"], abs=1e-6)
    assert ev.metrics["psnr_swapped_frame"] == pytest.approx(ev.metrics["psnr"], abs=1e-6)
    # while the same model with its frame weights does change
    ev = evaluate(_model(), frames, poses, seed=0, samples=2, other=other)
    assert abs(ev.metrics["psnr_no_prev"] - ev.metrics["psnr"]) > 1e-5
    assert abs(ev.metrics["psnr_swapped_frame"] - ev.metrics["psnr"]) > 1e-5


def test_the_other_video_frame_is_the_pool_frame_least_like_the_first():
    pool = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (10, 200, 90)])
    firsts = torch.stack([torch.full((3, 4, 4), 20, dtype=torch.uint8), torch.full((3, 4, 4), 190, dtype=torch.uint8)])
    picked = other_video_frames(pool, firsts)
    assert picked[:, 0, 0, 0].tolist() == [200, 10]


def test_without_diagnostics_only_the_samples_are_measured(clip):
    ev = evaluate(_model(), *clip, seed=0, samples=3, diagnostics=False)
    assert all(math.isnan(ev.metrics[k]) for k in ("psnr_z0", "psnr_no_prev", "psnr_swapped_frame", "kl",
                                                   "active_units"))
    assert ev.latents == [] and math.isfinite(ev.metrics["psnr_best_of_k"])


def test_the_evaluation_restores_train_mode(clip):
    model = _model().train()
    evaluate(model, *clip, seed=0, samples=2)
    assert model.training


def test_a_training_writes_every_evaluation_column(tiny_dataset, tmp_path):
    from cvae.core.config import ExperimentConfig
    from cvae.core.records import read_csv
    from cvae.core.trainer import fit

    from cvae.schema import EVAL_COLUMNS, FRAME_COLUMNS, LATENT_COLUMNS

    cfg = ExperimentConfig.from_flat({
        "DR": str(tiny_dataset), "save_root": str(tmp_path / "run"), "F_dim": 16, "L_dim": 8, "N_dim": 4,
        "D_out_dim": 16, "train_vi_len": 4, "val_vi_len": 24, "batch_size": 4, "num_epoch": 2, "progress": False,
        "num_workers": 1, "device": "cpu", "val_samples": 3, "val_eval_every": 1, "val_frame_stride": 1})
    run = fit(cfg)
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 2
    for row in rows:
        for col in EVAL_COLUMNS:
            assert math.isfinite(float(row[col])), (col, row[col])
        assert float(row["val_psnr_best_of_k"]) >= float(row["val_psnr_mean_of_k"])
        assert 0 <= float(row["val_active_units"]) <= 4
    frames = read_csv(tmp_path / "run" / "psnr_per_frame.csv")
    assert len(frames) == 2 * 23 and set(FRAME_COLUMNS) <= set(frames[0])
    assert all(math.isfinite(float(r[c])) for r in frames for c in FRAME_COLUMNS)
    latents = read_csv(tmp_path / "run" / "latents.csv")
    assert [int(r["channel"]) for r in latents] == [0, 1, 2, 3] * 2 and set(LATENT_COLUMNS) == set(latents[0])
    assert sum(int(r["active"]) for r in latents if r["epoch"] == "1") == float(rows[1]["val_active_units"])
    best = run.history[run.best_epoch]
    assert best.val_curves["psnr"] == best.val_psnr_per_frame
    baselines = read_csv(tmp_path / "run" / "baselines.csv")
    assert float(rows[0]["val_ssim_copy_first"]) == pytest.approx(
        sum(float(r["ssim_copy_first"]) for r in baselines) / len(baselines), rel=1e-6)


SAMPLED = ("val_psnr_best_of_k", "val_psnr_mean_of_k", "val_psnr_z0", "val_psnr_no_prev", "val_psnr_swapped_frame")


@pytest.mark.parametrize(("options", "full_epochs"), [
    ({}, [False, False, False]),  # a CPU's default: the lab's cost every epoch, nothing more
    ({"val_eval_every": 2}, [False, True, True]),  # epoch 1 (the 2nd) and the last
    ({"val_eval_at": "last"}, [False, False, True]),
    ({"val_eval_every": 0, "val_eval_at": "none"}, [False, False, False]),
], ids=["default", "every-2", "at-last", "never"])
def test_the_full_evaluation_runs_at_the_epochs_its_options_say(tiny_dataset, tmp_path, options, full_epochs):
    from cvae.core.config import ExperimentConfig
    from cvae.core.records import read_csv
    from cvae.core.trainer import fit

    cfg = ExperimentConfig.from_flat({
        "DR": str(tiny_dataset), "save_root": str(tmp_path / "run"), "F_dim": 16, "L_dim": 8, "N_dim": 4,
        "D_out_dim": 16, "train_vi_len": 4, "val_vi_len": 24, "batch_size": 4, "num_epoch": 3, "progress": False,
        "num_workers": 1, "device": "cpu", "val_samples": 2, "partial": 0.5, **options})
    fit(cfg)
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert [all(r[c] != "" for c in SAMPLED) for r in rows] == full_epochs
    assert [any(r[c] != "" for c in SAMPLED) for r in rows] == full_epochs  # all of it, or none
    for r in rows:  # every epoch: the lab's rollout, its SSIM and the posterior
        assert all(math.isfinite(float(r[c])) for c in ("val_psnr", "val_ssim", "val_kl", "val_active_units"))


def test_val_eval_at_best_completes_the_evaluation_of_each_new_best_epoch(tiny_dataset, tmp_path):
    from cvae.core.config import ExperimentConfig
    from cvae.core.records import read_csv
    from cvae.core.trainer import fit

    flat = {"DR": str(tiny_dataset), "save_root": str(tmp_path / "run"), "F_dim": 16, "L_dim": 8, "N_dim": 4,
            "D_out_dim": 16, "train_vi_len": 4, "val_vi_len": 24, "batch_size": 4, "num_epoch": 2, "progress": False,
            "num_workers": 1, "device": "cpu", "val_samples": 2, "partial": 0.5, "val_eval_at": "best", "resume": True}
    first = fit(ExperimentConfig.from_flat(flat))
    # A best no later epoch can beat (as after a lucky epoch): those epochs keep the lab's cost.
    last = tmp_path / "run" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    torch.save({**state, "best_val_psnr": 1e9}, last)
    second = fit(ExperimentConfig.from_flat({**flat, "num_epoch": 4}))
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    is_best = [r.is_best for r in [*first.history, *second.history]]
    assert is_best[0] and is_best[2:] == [False, False]
    assert [all(r[c] != "" for c in SAMPLED) for r in rows] == is_best
    assert [any(r[c] != "" for c in SAMPLED) for r in rows] == is_best
    for r in rows[:1]:  # sample 0, reused, is one of the K: the best of K is never below it
        assert float(r["val_psnr_best_of_k"]) >= float(r["val_psnr"]) - 1e-9


def test_completing_an_evaluation_gives_what_running_it_whole_does(clip, tiny_dataset):
    frames, poses = clip
    other = other_video_frames(load_split(tiny_dataset, "train", (32, 64), workers=1).frames, frames[:, 0])
    model = _model()
    whole = evaluate(model, frames, poses, seed=5, samples=4, other=other, frame_stride=3)
    lab = evaluate(model, frames, poses, seed=5, samples=1, diagnostics=False, posterior=True, frame_stride=3)
    done = evaluate(model, frames, poses, seed=5, samples=4, other=other, frame_stride=3, first=lab)
    assert done.video is lab.video and done.latents == lab.latents  # reused, not computed again
    assert set(done.metrics) == set(whole.metrics)
    for name, value in whole.metrics.items():  # a batch's composition may move a convolution's last bits
        assert done.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    for name, curve in whole.curves.items():
        assert done.curves[name] == pytest.approx(curve, rel=1e-4, abs=1e-5, nan_ok=True), name


def test_the_frame_replacements_on_every_nth_frame_estimate_the_whole(clip, tiny_dataset):
    frames, poses = clip
    other = other_video_frames(load_split(tiny_dataset, "train", (32, 64), workers=1).frames, frames[:, 0])
    model = _model()
    every = evaluate(model, frames, poses, seed=0, samples=1, other=other)
    strided = evaluate(model, frames, poses, seed=0, samples=1, other=other, frame_stride=5)
    lab = torch.tensor(every.curves["psnr"])
    for name in ("psnr_no_prev", "psnr_swapped_frame"):
        full, part = torch.tensor(every.curves[name]), torch.tensor(strided.curves[name])
        measured = torch.arange(0, 23, 5)  # frames 1, 6, 11, 16, 21
        assert torch.allclose(part[measured], full[measured], atol=1e-4)  # the same decodes on those frames
        assert part.isnan().sum() == 23 - 5  # and none on the others
        # the rollout's average plus the mean change on the measured frames (a paired estimate)
        expected = float(lab.mean() + (full[measured] - lab[measured]).mean())
        assert strided.metrics[name] == pytest.approx(expected, abs=1e-4)
        assert every.metrics[name] == pytest.approx(float(full.mean()), abs=1e-4)  # stride 1: a plain average
    assert strided.metrics["psnr"] == every.metrics["psnr"]


@pytest.mark.parametrize(("start", "stop", "stride", "offsets"), [
    (1, 65, 4, list(range(0, 64, 4))), (65, 129, 4, list(range(0, 64, 4))), (65, 75, 3, [2, 5, 8]),
    (1, 5, 1, [0, 1, 2, 3]), (2, 4, 5, []),
])
def test_stride_frames_counts_the_predicted_frames_from_one(start, stop, stride, offsets):
    from cvae.core.evaluate import stride_frames

    assert stride_frames(start, stop, stride) == offsets


@pytest.mark.parametrize(("options", "device", "epochs"), [
    ({}, "cpu", []),
    ({}, "cuda", [0, 1, 2, 3, 4]),  # auto: every epoch on a GPU
    ({"val_eval_every": 2}, "cpu", [1, 3, 4]),
    ({"val_eval_every": 2}, "cuda", [1, 3, 4]),  # a number is a number everywhere
    ({"val_eval_at": "last"}, "cpu", [4]),
    ({"val_eval_at": "best"}, "cpu", []),  # completed by fit once an epoch turns out a new best
    ({"val_eval_every": 0}, "cuda", []),
])
def test_full_evaluation_by_epoch_device_and_options(options, device, epochs):
    from cvae.core.config import ExperimentConfig
    from cvae.core.trainer import full_evaluation

    cfg = ExperimentConfig.from_flat({"num_epoch": 5, **options})
    assert [e for e in range(5) if full_evaluation(cfg, e, torch.device(device))] == epochs


@pytest.mark.parametrize(("options", "device", "says"), [
    ({}, "cpu", ["every epoch, the lab's cost", "never", "val_eval_at last|best", "cvae test --full"]),
    ({"val_eval_at": "last"}, "cpu", ["the full evaluation (5 samples of z, z = 0 and the frame replacements: about",
                                      "lab rollouts) at the last epoch"]),
    ({"val_eval_at": "best"}, "cpu", ["at each new best epoch"]),
    ({"val_eval_every": 3}, "cpu", ["every 3 epochs and at the last"]),
    ({}, "cuda", ["a batch of rollouts) every epoch"]),
    ({"val_samples": 1, "val_diagnostics": False}, "cpu", ["the lab's rollout with SSIM every epoch", "nothing more"]),
])
def test_a_training_says_what_its_validation_will_cost(options, device, says):
    from cvae.core.config import ExperimentConfig
    from cvae.core.trainer import evaluation_plan

    line = evaluation_plan(ExperimentConfig.from_flat(options), torch.device(device))
    assert line.startswith("validation: ") and all(part in line for part in says), line
