"""Benchmark: does the quickstart's model learn, and on which data? Learning curves against copying the first frame.

Usage:

    .venv/bin/python benchmarks/learning_curves.py                # the measurement: 3 trials, ~10 min on 2 cores
    .venv/bin/python benchmarks/learning_curves.py --report-only  # the table again, from the records

One sweep through our own machinery (``cvae sweep run benchmarks/configs/learning_curves.yaml``): the same
model, schedule and seeds for 8 epochs on three generated datasets that differ only in their dancers' looks
(``cvae data synth --dancers``): every video its own dancer and background (the generator's default), 4
dancers, or 1 dancer (the quickstart's data). The datasets are generated first, into the spec's ``DR``
values. It prints, per dataset and epoch, the validation PSNR and its margin over copying the first frame of
the validation video, and writes ``runs/bench-learning-curves/table.md``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "benchmarks" / "configs" / "learning_curves.yaml"
SYNTH = {"train_frames": 768, "train_video_len": 48, "val_frames": 630, "test_sequences": 1, "seed": 0}
"""The datasets' shared arguments (the quickstart's); ``dancers`` comes from the folder name."""


def dancers_of(folder: str) -> int | None:
    """``data/lc-dancers4`` -> 4; ``data/lc-per-video`` -> None (every video its own look)."""
    name = Path(folder).name
    return int(name.removeprefix("lc-dancers")) if name.startswith("lc-dancers") else None


def generate(spec: dict) -> None:
    from cvae.core.synth import generate_dataset

    for folder in spec["parameters"]["DR"]["values"]:
        generate_dataset(ROOT / folder, **SYNTH, dancers=dancers_of(folder), workers=2)


def report(spec: dict) -> str:
    from cvae.analysis.load import load_local

    out = ROOT / spec["output_dir"]
    data = load_local(out)
    ep = data.epochs
    lines = ["| data | copy first frame (dB) | " + " | ".join(f"epoch {e + 1}" for e in sorted(ep.epoch.unique()))
             + " | best margin (dB) |", "| --- | --- |" + " --- |" * (ep.epoch.nunique() + 1)]
    for _, run in data.runs.iterrows():
        rows = ep[ep.run == run.run].sort_values("epoch")
        looks = dancers_of(str(run.DR))
        label = "every video its own look" if looks is None else f"{looks} dancer" + ("s" if looks > 1 else "")
        cells = [("-" if math.isnan(v) else f"{v:.2f} ({m:+.2f})") for v, m in zip(rows.val_psnr, rows.val_psnr_margin,
                                                                             strict=True)]
        lines.append(f"| {label} | {rows.val_psnr_copy_first.iloc[0]:.2f} | " + " | ".join(cells)
                     + f" | {rows.val_psnr_margin.max():+.2f} |")
    text = ("Validation PSNR per epoch (its margin over copying the first frame), one run per dataset:\n\n"
            + "\n".join(lines))
    (out / "table.md").write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    # The benchmarks' one launcher (this folder is on sys.path when run as a script).
    from pruning import sweep_main

    return sweep_main(__doc__, SPEC, generate, report, argv)


if __name__ == "__main__":
    sys.exit(main())
