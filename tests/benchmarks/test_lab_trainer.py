"""benchmarks/lab_trainer.py: its pure parts (command lines, environment, imports, links, summary); no training."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from bench_loader import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


lt = load_benchmark("lab_trainer")


def _row(arm: str, seconds: float, exit_code: int = 0, **meta) -> dict:
    base = {"arm": arm, "repeat": 0, "seconds": seconds, "exit_code": exit_code, "command": "x", "threads": "",
            "common_flags": "--device cpu", "lab_shim": "cpu", "trainer_sha256": "abc", "cpu": "x86_64",
            "torch": "2.0"}
    return {**base, **meta}


def test_commands_share_the_labs_command_line():
    kw = dict(python="py", cvae="cvae", data=Path("/d"), save_root=Path("/r"), flags=["--device", "cpu"])
    common = ["--DR", "/d", "--save_root", "/r", "--num_epoch", "1", "--device", "cpu"]
    assert lt.arm_command("lab", shim=False, **kw) == ["py", "Trainer.py", *common]
    assert lt.arm_command("lab", shim=True, **kw) == ["py", "-c", lt.CPU_SHIM, "Trainer.py", *common]
    assert lt.arm_command("ours", shim=True, **kw) == ["cvae", "train", *common]
    assert lt.arm_command("ours_equal", shim=True, **kw) == [
        "cvae", "train", *common, "--val_samples", "1", "--no-val_diagnostics"]
    with pytest.raises(ValueError):
        lt.arm_command("other", shim=False, **kw)


def test_common_flags_and_environment():
    assert lt.common_flags(None, []) == []
    assert lt.common_flags("cpu", ["--fast_train"]) == ["--device", "cpu", "--fast_train"]
    env = lt.arm_env({"PATH": "/bin", "WANDB_MODE": "online"}, None, Path("/c"))
    assert env == {"PATH": "/bin", "WANDB_MODE": "offline", "MPLBACKEND": "Agg", "CVAE_CACHE_DIR": "/c"}
    env = lt.arm_env({}, 2, Path("/c"))
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"


def test_third_party_imports_leave_out_the_standard_library_and_the_labs_own():
    sources = ["import os\nimport torch.nn as nn\nfrom torchvision import transforms\nimport imageio\n"
               "from modules import Generator\nfrom dataloader import Dataset_Dance\nfrom math import log10\n",
               "from .layers import X\nimport matplotlib.pyplot as plt\n"]
    assert lt.third_party_imports(sources, {"modules", "dataloader"}) == [
        "imageio", "matplotlib", "torch", "torchvision"]


def test_lab_problem_names_what_is_missing(tmp_path):
    assert "needs --lab DIR" in lt.lab_problem(None)
    assert "no Trainer.py, dataloader.py, modules" in lt.lab_problem(tmp_path)
    (tmp_path / "Trainer.py").touch()
    (tmp_path / "dataloader.py").touch()
    (tmp_path / "modules").mkdir()
    assert lt.lab_problem(tmp_path) is None


def test_mirror_links_files_and_packages_and_makes_other_folders_empty(tmp_path):
    lab = tmp_path / "lab"
    (lab / "modules").mkdir(parents=True)
    (lab / "modules" / "__init__.py").touch()
    (lab / "figures" / "None").mkdir(parents=True)
    (lab / "figures" / "None" / "PSNR.png").touch()
    (lab / "Trainer.py").write_text("pass\n")
    lt.mirror_lab(lab, tmp_path / "cwd")
    cwd = tmp_path / "cwd"
    assert (cwd / "Trainer.py").is_symlink() and (cwd / "modules").is_symlink()
    assert (cwd / "figures" / "None").is_dir() and not (cwd / "figures").is_symlink()
    assert not (cwd / "figures" / "None" / "PSNR.png").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX links")
def test_dataset_view_holds_the_windows_names_too(tmp_path):
    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / split / f"{split}_img").mkdir(parents=True)
        (data / split / f"{split}_img" / "frame3.png").write_bytes(b"png")
    view = lt.dataset_view(data, tmp_path / "view")
    assert (view / "train" / "train_img" / "frame3.png").read_bytes() == b"png"
    assert (view / "train\\train_img\\frame3.png").read_bytes() == b"png"
    assert (view / "val\\val_img\\frame3.png").exists()


def test_stderr_tail_is_one_line():
    assert lt.stderr_tail("a\nb\r  c\n\nTraceback\nValueError: x\n", 2) == "Traceback | ValueError: x"
    assert lt.stderr_tail("") == "(no stderr)"


def test_summary_medians_ratios_and_failed_runs_left_out():
    rows = [_row("lab", 100), _row("lab", 120), _row("lab", 1, exit_code=1), _row("ours", 50), _row("ours", 70),
            _row("ours_equal", 40), _row("ours_equal", 40)]
    lines = lt.summarize(rows)
    assert "(2/2/2 run(s))" in lines[0] and "common flags --device cpu" in lines[0]
    assert lines[1:] == ["  lab (its Trainer.py): 110.0 s",
                         "  ours (the lab's command line): 60.0 s, 1.83x the lab's speed",
                         "  ours_equal (+ --val_samples 1 --no-val_diagnostics: the lab's one rollout): 40.0 s, "
                         "2.75x the lab's speed"]


def test_summary_reads_back_a_csv_it_appended(tmp_path):
    out = tmp_path / "r.csv"
    for row in (_row("lab", 90, threads=2), _row("ours", 60, threads=2), _row("lab", 80, threads="")):
        lt.append_row(out, row)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    lines = lt.summarize(rows)
    assert sum(line.startswith("\nmedian") for line in lines) == 2  # one group per threads setting
    assert "  ours (the lab's command line): 60.0 s, 1.50x the lab's speed" in lines
