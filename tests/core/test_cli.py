"""Tests of the ``cvae`` command line (cvae/cli.py, core/cli.py): exit codes, messages, help.

Everything runs in-process through ``cvae.cli.main`` except one subprocess run of the installed
``cvae`` console script. No test trains: bad input is rejected before any model is built.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cvae.core.cli import _train_overrides
from cvae.core.config import ModelConfig, resolve_config
from PIL import Image

from cvae.cli import build_parser, main


def run(argv: list[str]) -> int:
    """``cvae argv`` in-process; argparse's SystemExit becomes the returned code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- cvae train ------------------------------------------------------------------------------------------


def test_train_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", "--bogus_flag", "1"]) == 2
    assert "--bogus_flag" in capsys.readouterr().err


def test_train_out_of_range_value_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", "--tfr", "1.5"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "tfr" in line and "1.5" in line


def test_train_config_with_unknown_key_exits_2_naming_key_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.01\nnot_a_key: 1\n")
    assert run(["train", "--config", str(config)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "not_a_key" in line and str(config) in line


def test_train_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nope.yaml"
    assert run(["train", "--config", str(config)]) == 2
    assert str(config) in _one_line(capsys.readouterr().err)


def test_lab_spellings_are_accepted_as_flags() -> None:
    args = build_parser().parse_args(
        ["train", "--kl_anneal_type", "Cyclical", "--optim", "AdamW", "--fast_train", "--lr_milestones", "3", "6"]
    )
    cfg = resolve_config(args.config, _train_overrides(args))
    assert cfg.schedule.kl_anneal_type == "cyclical"
    assert cfg.optim.optim == "AdamW"
    assert cfg.data.fast_train is True
    assert cfg.optim.lr_milestones == (3, 6)


def test_unset_flags_do_not_override_yaml(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.01\nbatch_size: 4\n")
    args = build_parser().parse_args(["train", "--config", str(config), "--batch_size", "8"])
    cfg = resolve_config(args.config, _train_overrides(args))
    assert (cfg.optim.lr, cfg.optim.batch_size) == (0.01, 8)


def test_train_missing_dataset_exits_2_naming_path_not_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dr = tmp_path / "no_such_dataset"
    argv = ["train", "--DR", str(dr), "--save_root", str(tmp_path / "out"), "--kl_anneal_type", "Cyclical",
            "--optim", "AdamW", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert run(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(dr) in line
    assert "kl_anneal_type" not in line and "optim" not in line


@pytest.mark.parametrize("layout", ["missing", "no-train-folder"])
def test_train_with_a_bad_dataset_leaves_no_save_root_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    dr = tmp_path / "dataset"
    if layout == "no-train-folder":
        (dr / "val" / "val_img").mkdir(parents=True)
    save_root = tmp_path / "runs" / "first"
    argv = ["train", "--DR", str(dr), "--save_root", str(save_root), "--device", "cpu", "--no-progress"]
    assert run(argv) == 2
    assert str(dr) in _one_line(capsys.readouterr().err)
    assert not save_root.exists() and not (tmp_path / "runs").exists()


def _tiny_model_checkpoint(path: Path) -> Path:
    import torch
    from cvae.core.model import CVAE

    torch.save({"state_dict": CVAE(ModelConfig(16, 8, 4, 16)).state_dict(), "last_epoch": 0}, path)
    return path


BAD_CHECKPOINTS = {
    "text": (lambda p: p.write_text("not a checkpoint, just notes\n"), "not a PyTorch checkpoint"),
    "empty-state_dict": (lambda p: _save(p, {"state_dict": {}}), "'state_dict' is empty"),
    "string-state_dict": (lambda p: _save(p, {"state_dict": "weights"}), "'state_dict' is a str"),
    "other-model": (lambda p: _save(p, {"state_dict": _other_model()}), "the state_dict is not this cVAE's"),
}


def _save(path: Path, obj: object) -> None:
    import torch

    torch.save(obj, path)


def _other_model() -> dict:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Linear(2, 1)).state_dict()


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_test_with_a_bad_checkpoint_exits_2_with_one_line_naming_it(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    write, expected = BAD_CHECKPOINTS[kind]
    ckpt = tmp_path / "model.ckpt"
    write(ckpt)
    argv = ["test", "--DR", str(tiny_dataset), "--save_root", str(tmp_path / "out"), "--ckpt_path", str(ckpt),
            "--device", "cpu", "--no-progress", "--test_vi_len", "24", "--val_vi_len", "24"]  # fmt: skip
    assert run(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"cvae test: error: {ckpt}: ") and expected in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["text", "other-model"])
def test_train_resuming_a_bad_checkpoint_exits_2_with_one_line_naming_it(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    write, expected = BAD_CHECKPOINTS[kind]
    ckpt = tmp_path / "model.ckpt"
    write(ckpt)
    save_root = tmp_path / "out"
    argv = ["train", "--DR", str(tiny_dataset), "--save_root", str(save_root), "--ckpt_path", str(ckpt),
            "--device", "cpu", "--no-progress", "--F_dim", "24", "--L_dim", "8", "--N_dim", "4", "--D_out_dim", "24",
            "--train_vi_len", "4", "--val_vi_len", "24", "--batch_size", "4", "--num_workers", "1"]  # fmt: skip
    assert run(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"cvae train: error: {ckpt}: ") and expected in line, line
    assert not save_root.exists()


def test_train_on_a_full_disk_exits_2_with_one_line_naming_the_file(
    tiny_dataset: Path, full_disk_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--DR", str(tiny_dataset), "--save_root", str(full_disk_dir), "--device", "cpu", "--no-progress",
            "--F_dim", "24", "--L_dim", "8", "--N_dim", "4", "--D_out_dim", "24", "--train_vi_len", "4",
            "--val_vi_len", "24", "--batch_size", "4", "--num_workers", "1", "--num_epoch", "1", "--tfr_sde", "0",
            "--log-level", "warning"]  # fmt: skip
    assert run(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == f"cvae train: error: [Errno 28] No space left on device: cannot write checkpoint: " \
                   f"'{full_disk_dir / 'last.ckpt'}'"
    assert not any(p.name.endswith(".tmp") for p in full_disk_dir.iterdir())


TINY_TRAIN = ["--device", "cpu", "--no-progress", "--F_dim", "24", "--L_dim", "8", "--N_dim", "4", "--D_out_dim", "24",
              "--train_vi_len", "4", "--val_vi_len", "24", "--batch_size", "4", "--num_workers", "1",
              "--num_epoch", "2", "--tfr_sde", "0", "--log-level", "warning"]  # fmt: skip


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_train_that_diverges_in_its_first_epoch_exits_2_and_leaves_no_records(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], existing: bool
) -> None:
    save_root = tmp_path / "runs" / "diverged"
    if existing:
        save_root.mkdir(parents=True)
        (save_root / "notes.txt").write_text("mine\n")
    argv = ["train", "--DR", str(tiny_dataset), "--save_root", str(save_root), "--lr", "1e6", *TINY_TRAIN]
    assert run(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("cvae train: error: epoch 0, batch ") and "training diverged" in line, line
    if existing:  # the user's folder and file stay; nothing the run began is left in it
        assert sorted(p.name for p in save_root.iterdir()) == ["notes.txt"]
    else:
        assert not (tmp_path / "runs").exists()


def test_test_with_a_bad_dataset_leaves_no_save_root_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _tiny_model_checkpoint(tmp_path / "model.ckpt")
    dr = tmp_path / "no_such_dataset"
    argv = ["test", "--DR", str(dr), "--save_root", str(tmp_path / "out"), "--ckpt_path", str(ckpt),
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert run(argv) == 2
    assert str(dr) in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# -- cvae test -------------------------------------------------------------------------------------------


def test_test_missing_checkpoint_exits_2_naming_it(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "missing.ckpt"
    argv = ["test", "--DR", str(tiny_dataset), "--save_root", str(tmp_path / "out"), "--ckpt_path", str(ckpt),
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert run(argv) == 2
    assert str(ckpt) in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("sizes", [["16", "8", "4", "16"], ["16", "8", "12", "16"]])
def test_test_size_flags_are_checked_against_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sizes: list[str]
) -> None:
    """Sizes given by flags must equal those inferred from the tensors (16, 8, 4, 16), else one line names both."""
    ckpt = _tiny_model_checkpoint(tmp_path / "model.ckpt")
    dr = tmp_path / "no_such_dataset"
    flags = [f"--{k}" for k in ("F_dim", "L_dim", "N_dim", "D_out_dim")]
    argv = ["test", "--DR", str(dr), "--save_root", str(tmp_path / "out"), "--ckpt_path", str(ckpt),
            "--device", "cpu", "--no-progress", *(a for pair in zip(flags, sizes, strict=True) for a in pair)]
    assert run(argv) == 2
    line = _one_line(capsys.readouterr().err)
    if sizes[2] == "4":  # the model loaded; the dataset is what is missing
        assert str(dr) in line and "model sizes" not in line, line
    else:
        assert line == (f"cvae test: error: {ckpt}: checkpoint has model sizes "
                        f"{ModelConfig(16, 8, 4, 16)}, flags ask for {ModelConfig(16, 8, 12, 16)}")


def test_test_needs_all_size_flags_or_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["test", "--DR", str(tmp_path), "--save_root", str(tmp_path / "out"), "--ckpt_path",
            str(tmp_path / "model.ckpt"), "--N_dim", "4"]
    assert run(argv) == 2
    assert "give all of --F_dim --L_dim --N_dim --D_out_dim, or none" in _one_line(capsys.readouterr().err)


# -- cvae data -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["64by128", "64x", "64x128x3", "axb"])
def test_synth_bad_size_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str) -> None:
    out = tmp_path / "ds"
    assert run(["data", "synth", "--out", str(out), "--size", size]) == 2
    assert size in _one_line(capsys.readouterr().err)
    assert not (out / "train").exists()


def test_synth_writes_the_lab_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    argv = ["data", "synth", "--out", str(out), "--train-frames", "6", "--train-video-len", "3",
            "--val-frames", "4", "--test-sequences", "2", "--test-frames", "3", "--size", "16x32"]  # fmt: skip
    assert run(argv) == 0
    assert str(out) in capsys.readouterr().out
    expected = {"train/train_img": 6, "train/train_label": 6, "val/val_img": 4, "val/val_label": 4,
                "test/test_img/0": 1, "test/test_img/1": 1, "test/test_label/0": 3, "test/test_label/1": 3}
    for folder, n in expected.items():
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(f"frame{i}.png" for i in range(n))
    with Image.open(out / "train/train_img/frame0.png") as img:
        assert img.size == (32, 16)


def test_synth_options_reach_the_generator(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    argv = ["data", "synth", "--out", str(out), "--train-frames", "4", "--train-video-len", "2", "--val-frames", "2",
            "--test-sequences", "1", "--test-frames", "2", "--size", "16x32", "--dancers", "1", "--backgrounds", "2",
            "--spotlight", "--lighting"]  # fmt: skip
    assert run(argv) == 0
    args = json.loads((out / "synth.json").read_text())["args"]
    assert (args["dancers"], args["backgrounds"], args["spotlight"], args["lighting"]) == (1, 2, True, True)


def test_synth_invalid_argument_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "synth", "--out", str(tmp_path / "ds"), "--size", "8x8"]) == 2
    assert "size" in _one_line(capsys.readouterr().err)


def test_check_prints_the_counts(tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "check", "--DR", str(tiny_dataset), "--test_vi_len", "24"]) == 0
    out = capsys.readouterr().out
    assert "train 96 frames" in out
    assert "val 24 frames" in out
    assert "2 test sequences (24, 24 poses)" in out


def test_check_wrong_test_length_exits_2_naming_folder(
    tiny_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["data", "check", "--DR", str(tiny_dataset)]) == 2  # default --test_vi_len 630
    line = _one_line(capsys.readouterr().err)
    assert str(tiny_dataset / "test" / "test_label" / "0") in line and "630" in line


@pytest.mark.parametrize("folder, frames", [
    ("train/train_img", [10]), ("train/train_label", [10]), ("val/val_label", [3, 4, 5]),
    ("test/test_label/1", [7]),
], ids=["train-frames", "train-poses", "val-poses", "test-poses"])
def test_check_a_gap_in_frame_numbering_exits_2_naming_folder_and_frames(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str, frames: list[int]
) -> None:
    dr = Path(shutil.copytree(tiny_dataset, tmp_path / "ds"))
    for n in frames:
        (dr / folder / f"frame{n}.png").unlink()
    assert run(["data", "check", "--DR", str(dr), "--test_vi_len", "24"]) == 2
    line = _one_line(capsys.readouterr().err)
    missing = f"frame{frames[0]}.png is" if len(frames) == 1 else "frames " + ", ".join(map(str, frames)) + " are"
    assert line == f"cvae data check: error: {dr / folder}: frame numbering has a gap: {missing} missing (the frames " \
                   f"run from frame0.png to frame{23 if folder.startswith(('val', 'test')) else 95}.png)"


def test_check_a_repeated_frame_number_exits_2(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dr = Path(shutil.copytree(tiny_dataset, tmp_path / "ds"))
    shutil.copy(dr / "val/val_img/frame7.png", dr / "val/val_img/frame007.png")
    assert run(["data", "check", "--DR", str(dr), "--test_vi_len", "24"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.endswith(f"{dr / 'val/val_img'}: frame number 7 is used more than once (frame007.png, frame7.png)")


def _odd_frame(dr: Path) -> Path:
    """Replaces train/train_img/frame5.png by a 100x37 (W x H) picture; returns it."""
    odd = dr / "train/train_img/frame5.png"
    Image.new("RGB", (100, 37), (200, 30, 30)).save(odd)
    return odd


def test_check_a_frame_of_another_size_exits_2_naming_it(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dr = Path(shutil.copytree(tiny_dataset, tmp_path / "ds"))
    _odd_frame(dr)
    assert run(["data", "check", "--DR", str(dr), "--test_vi_len", "24"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == (f"cvae data check: error: {dr / 'train/train_img'}: frame5.png is 37x100, not 32x64 like the "
                    "other 95 frame(s); every frame is resized to 32x64")


def test_check_a_frame_size_that_distorts_the_frames_exits_2(
    tiny_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["data", "check", "--DR", str(tiny_dataset), "--test_vi_len", "24", "--frame_H", "7", "--frame_W", "13"]
    assert run(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert "frames of 32x64 (width/height 2.00) are resized to frame_H x frame_W = 7x13 (width/height 1.86)" in line
    assert "(" in line and "more problem(s) of size" in line  # every folder has the same problem; one is shown


def test_training_accepts_odd_sizes_as_the_lab_does_with_a_warning_naming_them(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cvae.core import data

    monkeypatch.setattr(data, "_SAID", set())
    dr = Path(shutil.copytree(tiny_dataset, tmp_path / "ds"))
    _odd_frame(dr)
    with caplog.at_level("WARNING", logger="cvae"):
        train = data.load_split(dr, "train", (32, 64), cache_dir=tmp_path / "cache")
        data.load_split(dr, "val", (7, 13), cache_dir=tmp_path / "cache")
    assert tuple(train.frames.shape) == (96, 3, 32, 64)  # resized, as the lab's transforms.Resize does
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: {dr / 'train/train_img'}: frame5.png is 37x100, not 32x64 like the other 95 frame(s); every "
        "frame is resized to 32x64",
        f"warning: {dr / 'val/val_img'}: frames of 32x64 (width/height 2.00) are resized to frame_H x frame_W = 7x13 "
        "(width/height 1.86): the picture is distorted",
    ]  # said once, not again for the poses


def test_test_at_another_frame_size_than_the_models_warns_naming_both(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch
    from cvae.core.model import CVAE

    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": CVAE(ModelConfig(16, 8, 4, 16)).state_dict(), "last_epoch": 0,
                "frame_size": [32, 64]}, ckpt)
    argv = ["test", "--DR", str(tiny_dataset), "--save_root", str(tmp_path / "out"), "--ckpt_path", str(ckpt),
            "--device", "cpu", "--no-progress", "--test_vi_len", "24", "--val_vi_len", "24", "--frame_H", "16", "--frame_W", "32",
            "--samples", "1", "--no-diagnostics"]
    with caplog.at_level("WARNING", logger="cvae"):
        assert run(argv) == 0  # accepted, as the lab's Tester accepts it
    assert f"warning: {ckpt}: the model was trained on 32x64 frames; testing it on 16x32" in caplog.text


def test_check_missing_dataset_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "check", "--DR", str(tmp_path / "none")]) == 2
    assert str(tmp_path / "none") in _one_line(capsys.readouterr().err)


# -- help ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--help"], ["data", "train", "test"]),
        (["train", "--help"], ["--DR", "--kl_anneal_type", "--config", "--tfr_sde", "--optim"]),
        (["test", "--help"], ["--DR", "--ckpt_path", "--save_root"]),
        (["data", "synth", "--help"], ["--out", "--size"]),
        (["data", "check", "--help"], ["--DR", "--test_vi_len"]),
    ],
)
def test_help_exits_0(argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(argv) == 0
    out = capsys.readouterr().out
    for word in expected:
        assert word in out


def test_no_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([]) == 2
    assert "usage" in capsys.readouterr().err


# -- the installed console script ------------------------------------------------------------------------


def _cvae_script() -> str:
    candidate = Path(sys.executable).parent / "cvae"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("cvae")
    if found is None:
        pytest.fail("the cvae console script is not installed next to the interpreter nor on PATH")
    return found


def test_console_script_exit_code_and_single_error_line() -> None:
    proc = subprocess.run(
        [_cvae_script(), "train", "--tfr", "1.5"], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    line = _one_line(proc.stderr)
    assert line.startswith("cvae train: error:") and "tfr" in line


def test_flag_errors_are_attributed_to_the_command_line_not_the_yaml(tmp_path, capsys):
    good = tmp_path / "ok.yaml"
    good.write_text("lr: 0.0002\n")
    assert main(["train", "--config", str(good), "--tfr", "1.5", "--DR", "x", "--save_root", "y"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cvae train: error: command line: tfr must be in [0, 1] (got 1.5)"
