"""A tiny end-to-end run through the real CLIs: generate, train, test; checks the real artifacts."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

from core.model import CVAE
from cvae.cli import main

pytestmark = pytest.mark.slow


def test_synth_train_test_end_to_end(tmp_path, capsys):
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "test"
    assert main(["data", "synth", "--out", str(data), "--train-frames", "64", "--train-video-len", "32",
                 "--val-frames", "630", "--test-sequences", "2", "--test-frames", "630", "--size", "32x64"]) == 0
    assert main(["train", "--DR", str(data), "--save_root", str(run), "--num_epoch", "2", "--tfr_sde", "1",
                 "--F_dim", "16", "--L_dim", "8", "--N_dim", "4", "--D_out_dim", "16", "--train_vi_len", "8",
                 "--batch_size", "2", "--kl_anneal_type", "Monotonic", "--no-progress"]) == 0
    assert "completed: 2 epoch(s)" in capsys.readouterr().out

    ckpt = torch.load(run / "last.ckpt")
    model = CVAE(__import__("core.model", fromlist=["dims_from_state_dict"]).dims_from_state_dict(ckpt["state_dict"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)

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
