"""The training loop: exact resume, kills, divergence, callbacks, and the lab's checkpoints."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cvae.core import checkpoint as ckpt_io
from cvae.core.config import ExperimentConfig, ModelConfig
from cvae.core.model import CVAE
from cvae.core.records import read_csv
from cvae.core.trainer import BaseCallback, DivergenceError, StopTraining, Trainer, fit

TINY = {
    "F_dim": 16, "L_dim": 8, "N_dim": 4, "D_out_dim": 16, "train_vi_len": 4, "val_vi_len": 24,
    "batch_size": 4, "num_epoch": 3, "tfr": 0.5, "tfr_sde": 1, "tfr_d_step": 0.2, "kl_anneal_cycle": 2,
    "augment": True, "aug_crop_scale": [0.5, 1.0], "progress": False, "num_workers": 1, "device": "cpu",
    "num_threads": 1,
}


def tiny_cfg(dataset: Path, out: Path, **kw) -> ExperimentConfig:
    return ExperimentConfig.from_flat({**TINY, "DR": str(dataset), "save_root": str(out), **kw})


class StopAfter(BaseCallback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.seen: list[int] = []

    def on_epoch_end(self, result):
        self.seen.append(result.epoch)
        if result.epoch == self.epoch:
            raise StopTraining("test stop")


def metric_rows(run: Path) -> list[dict[str, str]]:
    return read_csv(run / "metrics.csv")


LOSS_KEYS = ("epoch", "train_loss", "train_mse", "train_kl", "train_psnr", "val_psnr", "val_loss", "beta", "tfr",
             "tf_fraction", "lr")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"lr_warmup": 15}], ids=["lab", "warmup-across-the-stop"])
def test_resume_equals_uninterrupted_training(tiny_dataset, tmp_path, extra):
    full = fit(tiny_cfg(tiny_dataset, tmp_path / "full", **extra))
    assert full.status == "completed" and full.epochs_run == 3

    stopper = StopAfter(1)
    part = fit(tiny_cfg(tiny_dataset, tmp_path / "part", **extra), [stopper])
    assert part.status == "stopped" and part.reason == "test stop" and stopper.seen == [0, 1]
    resumed = fit(tiny_cfg(tiny_dataset, tmp_path / "part", resume=True, **extra))
    assert [r.epoch for r in resumed.history] == [2]

    want = [{k: r[k] for k in LOSS_KEYS} for r in metric_rows(tmp_path / "full")]
    got = [{k: r[k] for k in LOSS_KEYS} for r in metric_rows(tmp_path / "part")]
    assert got == want  # bit-identical losses, PSNRs and schedules
    a = ckpt_io.load(tmp_path / "full" / "last.ckpt")["state_dict"]
    b = ckpt_io.load(tmp_path / "part" / "last.ckpt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_epoch_records_and_checkpoints(tiny_dataset, tmp_path):
    threads = torch.get_num_threads()
    run = fit(tiny_cfg(tiny_dataset, tmp_path, per_save=2, num_threads=1 if threads > 1 else 2))
    assert torch.get_num_threads() == threads  # num_threads is the run's, not the calling process's
    names = sorted(p.name for p in tmp_path.iterdir())
    assert {"config.yaml", "metrics.csv", "psnr_per_frame.csv", "last.ckpt", "best.ckpt", "epoch=0.ckpt",
            "epoch=2.ckpt"} <= set(names)
    assert "epoch=1.ckpt" not in names
    rows = metric_rows(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    frames = read_csv(tmp_path / "psnr_per_frame.csv")
    assert len(frames) == 3 * 23  # 24-frame rollout: 23 predicted frames per epoch
    per_frame = [float(r["psnr"]) for r in frames if r["epoch"] == "2"]
    assert float(rows[2]["val_psnr"]) == pytest.approx(sum(per_frame) / len(per_frame), rel=1e-5)
    assert run.best_val_psnr == max(float(r["val_psnr"]) for r in rows)
    ckpt = torch.load(tmp_path / "last.ckpt")  # default torch.load (weights_only=True), as the lab's Tester
    assert set(ckpt_io.LAB_KEYS) <= set(ckpt) and ckpt["last_epoch"] == 2 and ckpt["next_epoch"] == 3
    assert ckpt["tfr"] == float(rows[2]["tfr"])
    assert ExperimentConfig.from_flat(ckpt["config"]) == tiny_cfg(tiny_dataset, tmp_path, per_save=2,
                                                                 num_threads=1 if threads > 1 else 2)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    import cvae.core.trainer as trainer_mod

    real = trainer_mod.forward_clip
    calls = {"n": 0}

    def poisoned(model, frames, poses, teacher_forcing, eps=None, time_chunk=None):
        preds, mse_t, kl_t = real(model, frames, poses, teacher_forcing, eps, time_chunk)
        calls["n"] += 1
        return preds, (mse_t * math.nan if calls["n"] > 6 else mse_t), kl_t  # 6 batches per epoch

    monkeypatch.setattr(trainer_mod, "forward_clip", poisoned)
    with pytest.raises(DivergenceError, match=r"epoch 1, batch 0: loss is nan"):
        fit(tiny_cfg(tiny_dataset, tmp_path))
    ckpt = ckpt_io.load(tmp_path / "last.ckpt")
    assert ckpt["last_epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert [r["epoch"] for r in metric_rows(tmp_path)] == ["0"]


def test_lr_warmup_rises_per_step_across_epochs_and_leaves_the_epoch_schedule_alone(tiny_dataset, tmp_path,
                                                                                      monkeypatch):
    import cvae.core.trainer as trainer_mod

    seen: list[float] = []
    real = trainer_mod.train_step

    def spy(model, optimizer, *args, **kw):
        seen.append(optimizer.param_groups[0]["lr"])
        return real(model, optimizer, *args, **kw)

    monkeypatch.setattr(trainer_mod, "train_step", spy)
    cfg = tiny_cfg(tiny_dataset, tmp_path, lr=0.004, lr_warmup=8, lr_scheduler="cosine", augment=False)
    fit(cfg)
    # 6 steps an epoch: the first 8 steps ramp (k+1)/8 of the epoch's scheduled lr, then the cosine schedule.
    cosine = [0.004 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    expected = [cosine[s // 6] * min(1.0, (s + 1) / 8) for s in range(18)]
    assert seen == pytest.approx(expected, rel=1e-9)
    assert [float(r["lr"]) for r in metric_rows(tmp_path)] == pytest.approx(cosine, rel=1e-9)


@pytest.mark.slow
def test_a_rollout_that_blows_up_is_recorded_without_a_psnr_and_training_goes_on(tiny_dataset, tmp_path, monkeypatch,
                                                                                   caplog):
    """A model leaning on the posterior's z (beta near 0) can blow up when the rollout draws z from the prior:
    that epoch has no validation PSNR (the lab logs NaN and trains on), and later epochs are scored as usual."""
    import cvae.core.trainer as trainer_mod

    real_evaluate, real_decode = trainer_mod.evaluate, CVAE.decode
    state = {"validations": 0, "steps": 0}

    def counting(*args, **kw):
        state["validations"] += 1
        return real_evaluate(*args, **kw)

    def exploding(self, *args):
        out = real_decode(self, *args)
        if state["validations"] == 1 and not self.training:  # epoch 0's validation: from frame 5 on
            state["steps"] += 1
            if state["steps"] >= 5:
                out = torch.full_like(out, math.inf if state["steps"] < 9 else math.nan)
        return out

    monkeypatch.setattr(trainer_mod, "evaluate", counting)
    monkeypatch.setattr(CVAE, "decode", exploding)
    with caplog.at_level("WARNING", logger="cvae"):
        run = fit(tiny_cfg(tiny_dataset, tmp_path))
    assert run.status == "completed" and run.epochs_run == 3 and run.best_epoch in (1, 2)
    assert "epoch 0: the validation rollout left the finite range (19 of 23 frames not finite)" in caplog.text
    rows = metric_rows(tmp_path)
    assert rows[0]["val_psnr"] == "" and rows[0]["val_psnr_margin"] == ""
    assert all(math.isfinite(float(r["val_psnr"])) for r in rows[1:])
    frames = read_csv(tmp_path / "psnr_per_frame.csv")
    epoch0 = [r["psnr"] for r in frames if r["epoch"] == "0"]
    assert len(epoch0) == 23 and all(v != "" for v in epoch0[:4]) and epoch0[4:] == [""] * 19


def test_atomic_save_keeps_the_previous_file_when_a_save_dies(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    ckpt_io.atomic_save({"state_dict": {"w": torch.ones(3)}}, path)

    def dying_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_io.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt_io.atomic_save({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt_io.load(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind



@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_atomic_save_is_delivered_after_the_file_is_in_place(tmp_path, monkeypatch, signum):
    # An interrupt raised inside torch.save's C++ writer aborted a sweep worker (SIGABRT) instead of unwinding.
    path = tmp_path / "last.ckpt"
    ckpt_io.atomic_save({"state_dict": {"w": torch.ones(3)}}, path)
    real_save = torch.save
    seen: list[str] = []

    def interrupted_save(obj, fh):
        os.kill(os.getpid(), signum)  # Python runs its handler at the next bytecode, inside this save
        seen.append("after kill")
        real_save(obj, fh)
        seen.append("saved")

    def handler(signum, frame):
        seen.append("handler")
        raise KeyboardInterrupt

    previous = signal.signal(signum, handler)
    monkeypatch.setattr(ckpt_io.torch, "save", interrupted_save)
    try:
        with pytest.raises(KeyboardInterrupt):
            ckpt_io.atomic_save({"state_dict": {"w": torch.zeros(3)}}, path)
        assert signal.getsignal(signum) is handler  # the handler in place before the save, restored
    finally:
        signal.signal(signum, previous)
        monkeypatch.undo()
    assert seen == ["after kill", "saved", "handler"]
    assert torch.equal(ckpt_io.load(path)["state_dict"]["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]

class Interrupter(BaseCallback):
    """Sends the process ``signum`` at the start of epoch 0's on_epoch_end, then notes that it went on."""

    def __init__(self, seen: list[str], signum: int | None) -> None:
        self.seen, self.signum = seen, signum

    def on_epoch_end(self, result):
        if self.signum is not None and result.epoch == 0:
            os.kill(os.getpid(), self.signum)
        self.seen.append(f"interrupter finished epoch {result.epoch}")


class Recorder(BaseCallback):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def on_epoch_end(self, result):
        self.seen.append(f"recorder got epoch {result.epoch}")


@pytest.mark.parametrize("signum, when", [(signal.SIGINT, "callback"), (signal.SIGTERM, "checkpoint")])
def test_a_signal_at_the_end_of_an_epoch_waits_for_every_callback(tiny_dataset, tmp_path, monkeypatch, signum, when):
    """Records, checkpoints and callbacks (W&B, Optuna) are one unit: a resumed run never starts after an epoch
    the trackers were not told about."""
    seen: list[str] = []
    if when == "checkpoint":
        real_save = torch.save

        def save_and_signal(obj, fh):
            if not seen and isinstance(obj, dict) and obj.get("last_epoch") == 0:
                seen.append("signal during the checkpoint")
                os.kill(os.getpid(), signum)
            real_save(obj, fh)

        monkeypatch.setattr(ckpt_io.torch, "save", save_and_signal)

    def handler(signum, frame):
        seen.append("handler")
        raise KeyboardInterrupt

    previous = signal.signal(signum, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(tiny_cfg(tiny_dataset, tmp_path, num_epoch=2),
                [Interrupter(seen, signum if when == "callback" else None), Recorder(seen)])
        assert signal.getsignal(signum) is handler
    finally:
        signal.signal(signum, previous)
    assert seen[-3:] == ["interrupter finished epoch 0", "recorder got epoch 0", "handler"]
    assert [r["epoch"] for r in metric_rows(tmp_path)] == ["0"]
    assert ckpt_io.load(tmp_path / "last.ckpt")["next_epoch"] == 1


def test_stop_training_still_ends_the_run_inside_the_deferred_block(tiny_dataset, tmp_path):
    stopper = StopAfter(0)
    # The handlers the process had (Python's default_int_handler, or SIG_IGN under a shell's `cmd &`).
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    run = fit(tiny_cfg(tiny_dataset, tmp_path), [stopper])
    assert (run.status, run.reason, run.epochs_run, stopper.seen) == ("stopped", "test stop", 1, [0])
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_trainer_removes_the_temporary_files_of_killed_saves_and_nothing_else(tiny_dataset, tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    leftovers = {".last.ckpt.k2j4h1x9.tmp": 4000, ".best.ckpt.a_b0c1d2.tmp": 3000, ".epoch=4.ckpt.zzzzzzzz.tmp": 500}
    for name, size in leftovers.items():
        (run / name).write_bytes(b"\0" * size)
    others = ["notes.txt", ".last.ckpt.tmp", ".metrics.csv.k2j4h1x9.tmp", "last.ckpt.k2j4h1x9.tmp", "metrics.tmp"]
    for name in others:
        (run / name).write_text("keep me")
    with caplog.at_level("INFO", logger="cvae"):
        Trainer(tiny_cfg(tiny_dataset, run))
    assert sorted(p.name for p in run.iterdir()) == sorted(others)
    lines = [r.getMessage() for r in caplog.records if "temporary checkpoint" in r.getMessage()]
    assert lines == [f"removed 3 temporary checkpoint file(s) left by an interrupted save (7500 bytes, 0.0 MB) "
                     f"from {run}"]


def test_resuming_our_checkpoint_without_its_training_state_is_a_checkpoint_error(tiny_dataset, tmp_path):
    fit(tiny_cfg(tiny_dataset, tmp_path / "a", num_epoch=1))
    ckpt = torch.load(tmp_path / "a" / "last.ckpt")
    del ckpt["rng"]
    torch.save(ckpt, tmp_path / "no-rng.ckpt")
    with pytest.raises(ckpt_io.CheckpointError) as info:
        Trainer(tiny_cfg(tiny_dataset, tmp_path / "b", ckpt_path=str(tmp_path / "no-rng.ckpt")))
    assert str(info.value) == f"{tmp_path / 'no-rng.ckpt'}: cannot restore the training state (KeyError: 'rng')"
    assert not (tmp_path / "b").exists()


def lab_checkpoint(path: Path, dims: ModelConfig, last_epoch: int) -> dict:
    torch.manual_seed(3)
    sd = CVAE(dims).state_dict()
    # The lab's format, including its quirk of storing the model's state again under "optimizer".
    ckpt = {"state_dict": sd, "optimizer": sd, "lr": 1e-4, "tfr": 0.5, "last_epoch": last_epoch}
    torch.save(ckpt, path)
    return ckpt


def test_lab_checkpoint_fine_tunes_from_the_epoch_after_its_last(tiny_dataset, tmp_path):
    lab = lab_checkpoint(tmp_path / "lab.ckpt", ModelConfig(16, 8, 4, 16), last_epoch=0)
    trainer = Trainer(tiny_cfg(tiny_dataset, tmp_path / "ft", ckpt_path=str(tmp_path / "lab.ckpt")))
    assert trainer.start_epoch == 1
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in lab["state_dict"].items())
    run = trainer.fit()
    assert [r.epoch for r in run.history] == [1, 2]


def test_checkpoint_with_other_model_sizes_is_refused(tiny_dataset, tmp_path):
    lab_checkpoint(tmp_path / "lab.ckpt", ModelConfig(), last_epoch=0)
    with pytest.raises(ckpt_io.CheckpointError, match="lab.ckpt"):
        Trainer(tiny_cfg(tiny_dataset, tmp_path / "x", ckpt_path=str(tmp_path / "lab.ckpt")))


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_matches_uninterrupted(tiny_dataset, tmp_path):
    args = [sys.executable, "-m", "cvae", "train", "--DR", str(tiny_dataset), "--num_epoch", "4", "--augment"]
    for key, value in TINY.items():
        if key in ("num_epoch", "augment") or isinstance(value, bool):
            continue
        args += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    args += ["--no-progress", "--aug_crop_scale", "0.5", "1.0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*args, "--save_root", str(tmp_path / "full")], check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--save_root", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "epoch=0.ckpt").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = ckpt_io.load(run / "last.ckpt")["next_epoch"]
    assert done_before < 4, "the run finished before it could be killed"
    subprocess.run([*args, "--save_root", str(run), "--resume"], check=True, env=env, capture_output=True)

    want = [{k: r[k] for k in LOSS_KEYS} for r in metric_rows(tmp_path / "full")]
    got = [{k: r[k] for k in LOSS_KEYS} for r in metric_rows(run)]
    assert got == want


def test_gif_has_every_frame_once_and_its_colours(tmp_path):
    """One palette for the whole video: a video of few colours comes back exact, frame for frame."""
    from cvae.core.records import write_gif
    from PIL import Image

    colours = torch.tensor([[0, 0, 0], [255, 0, 0], [30, 200, 90], [250, 250, 250]], dtype=torch.float32) / 255
    index = torch.randint(0, 4, (70, 32, 64), generator=torch.Generator().manual_seed(0))
    video = colours[index].permute(0, 3, 1, 2)  # (T, 3, H, W)
    write_gif(video, tmp_path / "v.gif")
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.n_frames == 70 and gif.size == (64, 32)
        for t in (0, 1, 35, 69):
            gif.seek(t)
            got = torch.from_numpy(np.array(gif.convert("RGB"))).permute(2, 0, 1).float() / 255
            torch.testing.assert_close(got, video[t], atol=0, rtol=0)
