"""Benchmark: can the lab's model learn, in a CPU budget, to use its previous frame? And on which data?

Usage:

    .venv/bin/python benchmarks/carry.py                # the measurement: 12 trials, ~25 min on 2 cores
    .venv/bin/python benchmarks/carry.py --report-only  # the table again, from the records

One sweep through our own machinery (``cvae sweep run benchmarks/configs/carry.yaml``): four generated datasets
that differ only in what a frame holds that its pose does not (nothing: one dancer in one setting; a spotlight
wandering at random, ``cvae data synth --spotlight``; the background, one dancer in 4 settings,
``--backgrounds 4``; the video's exposure and colour of light, ``--lighting``) crossed with three training
recipes (the spec says which). Every trial's last epoch is
evaluated in full: beside its validation PSNR and copying the first frame, what it costs to feed the model the
clip's first frame (``no_prev``) or another video's frame (``swapped_frame``) instead of its previous frame,
and z = 0. It prints one row per trial and writes them to ``benchmarks/results/carry.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "benchmarks" / "configs" / "carry.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "carry.csv"
SYNTH = {"train_frames": 768, "train_video_len": 48, "val_frames": 630, "test_sequences": 1, "seed": 0,
         "dancers": 1}
"""The datasets' shared arguments (the quickstart's: one dancer); the folder name adds the rest."""
DATA = {"carry-plain": {}, "carry-spotlight": {"spotlight": True}, "carry-backgrounds4": {"backgrounds": 4},
        "carry-lighting": {"lighting": True}}
CONFIG = ("F_dim", "tfr", "tfr_sde", "tfr_d_step")
"""The configured values a row keeps (``tfr`` is the schedule's start, not the last epoch's ratio)."""
COLUMNS = ("data", "recipe", "F_dim", "tfr", "tfr_sde", "tfr_d_step", "num_epoch", "val_psnr",
           "val_psnr_copy_first", "margin", "val_psnr_best_of_k", "val_psnr_z0", "val_psnr_no_prev",
           "val_psnr_swapped_frame", "swapped_frame_cost", "no_prev_cost", "val_active_units", "val_ssim",
           "best_epoch_val_psnr")  # fmt: skip


def generate(spec: dict) -> None:
    from cvae.core.synth import generate_dataset

    for folder in spec["parameters"]["DR"]["values"]:
        generate_dataset(ROOT / folder, **SYNTH, **DATA[Path(folder).name], workers=2)


def rows(spec: dict) -> list[dict]:
    """One row per finished trial: its configuration and its last epoch, fully evaluated."""
    from cvae.analysis.load import load_local

    data = load_local(ROOT / spec["output_dir"])
    out = []
    for _, run in data.runs.iterrows():
        epochs = data.epochs[data.epochs.run == run.run].sort_values("epoch")
        last = epochs.iloc[-1]
        row = {"data": Path(str(run.DR)).name.removeprefix("carry-"), "recipe": run.recipe,
               "num_epoch": int(last.epoch) + 1, "best_epoch_val_psnr": epochs.val_psnr.max()}
        row |= {key: run[key] for key in CONFIG}
        row |= {key: last[key] for key in COLUMNS if key in last.index and key not in CONFIG}
        row["margin"] = last.val_psnr - last.val_psnr_copy_first
        row["swapped_frame_cost"] = last.val_psnr - last.val_psnr_swapped_frame
        row["no_prev_cost"] = last.val_psnr - last.val_psnr_no_prev
        out.append(row)
    return sorted(out, key=lambda r: (r["data"], r["recipe"]))


def write(table: list[dict]) -> None:
    pd.DataFrame(table, columns=COLUMNS).to_csv(RESULTS, index=False, float_format="%.4f")


def markdown(table: list[dict]) -> str:
    lines = ["| data | recipe | val PSNR, last epoch (dB) | vs copy-first | another video's frame costs | "
             "the first frame costs | best of 5 | z = 0 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in table:
        lines.append(f"| {r['data']} | {r['recipe']} | {r['val_psnr']:.2f} | {r['margin']:+.2f} | "
                     f"{r['swapped_frame_cost']:+.2f} | {r['no_prev_cost']:+.2f} | {r['val_psnr_best_of_k']:.2f} | "
                     f"{r['val_psnr_z0']:.2f} |")
    return "\n".join(lines)


def report(spec: dict) -> str:
    table = rows(spec)
    write(table)
    return f"{markdown(table)}\nper trial: {RESULTS.relative_to(ROOT)}"


def main(argv: list[str] | None = None) -> int:
    # The benchmarks' one launcher (this folder is on sys.path when run as a script).
    from pruning import sweep_main

    return sweep_main(__doc__, SPEC, generate, report, argv)


if __name__ == "__main__":
    sys.exit(main())
