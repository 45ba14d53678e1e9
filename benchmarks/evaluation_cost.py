"""What the evaluation of a stochastic predictor costs against the lab's one rollout, on this machine.

Usage:
    python benchmarks/evaluation_cost.py                         # the main job's model, 1 and 2 threads
    python benchmarks/evaluation_cost.py --dims lab --threads 2  # the lab's model sizes
    python benchmarks/evaluation_cost.py --out benchmarks/results/evaluation_cost.csv
    python benchmarks/evaluation_cost.py --summary benchmarks/results/evaluation_cost.csv   # the medians again

One 630-frame validation video of the main job's generated data (``sweeps/configs/quickstart.yaml``'s
``synth``), a model at the main job's sizes (``F_dim 24, L_dim 8, N_dim 12, D_out_dim 24``) or the lab's, in
the memory format training uses (channels_last). Timed, interleaved so that drift in the machine's speed hits
every variant alike, ``--repeats`` times each:

- ``lab``: :func:`cvae.core.rollout.rollout`, the lab's validation (one rollout, one draw of z);
- ``k1``: :func:`cvae.core.evaluate.evaluate` with K = 1 and no diagnostics (the lab's rollout + SSIM);
- ``light``: K = 1 with the posterior's statistics: what an epoch's validation costs by default on a CPU;
- ``k5``: K = 5 samples of z in one batch, no diagnostics;
- ``k5_diag``: K = 5 with every diagnostic (z = 0, the frame input replaced twice on every
  ``val_frame_stride``-th frame, the posterior): the full evaluation, as a judged epoch runs it;
- ``k5_diag_all``: the same with the frame replacements on every frame (stride 1, the full evaluation before
  the stride);
- ``complete``: ``light``, then completed into ``k5_diag`` (``first=``): a new best epoch under
  ``val_eval_at: best``;
- ``k5_loop``: five separate K = 1 evaluations, what batching replaces.

Each row of the CSV is one timed call; the summary prints medians and their ratios to ``lab``.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from cvae.core.config import ModelConfig, RunConfig
from cvae.core.data import load_split
from cvae.core.evaluate import evaluate, other_video_frames
from cvae.core.model import CVAE
from cvae.core.rollout import rollout
from cvae.core.synth import generate_dataset

DIMS = {"main": ModelConfig(F_dim=24, L_dim=8, N_dim=12, D_out_dim=24), "lab": ModelConfig()}


def variants(model, frames, poses, other):
    first = frames[:, 0].float() / 255

    def lab():
        rollout(model, first, poses, generator=torch.Generator().manual_seed(0))

    stride = RunConfig.val_frame_stride

    def k(samples, diagnostics, frame_stride=stride, **kw):
        return lambda: evaluate(model, frames, poses, seed=0, samples=samples, diagnostics=diagnostics, other=other,
                                frame_stride=frame_stride, **kw)

    def complete():
        first = evaluate(model, frames, poses, seed=0, samples=1, diagnostics=False, posterior=True)
        evaluate(model, frames, poses, seed=0, samples=5, other=other, frame_stride=stride, first=first)

    def loop():
        for s in range(5):
            evaluate(model, frames, poses, seed=s, samples=1, diagnostics=False)

    return {"lab": lab, "k1": k(1, False), "light": k(1, False, posterior=True), "k5": k(5, False),
            "k5_diag": k(5, True), "k5_diag_all": k(5, True, frame_stride=1), "complete": complete, "k5_loop": loop}


def summarize(rows: list[dict], threads_list: list[int], names: list[str]) -> None:
    print("\nmedian seconds (ratio to the lab's one rollout)")
    for threads in threads_list:
        med = {n: statistics.median(r["seconds"] for r in rows if r["threads"] == threads and r["variant"] == n)
               for n in names}
        base = med.get("lab")
        print(f"  threads {threads}: " + ", ".join(
            f"{n} {v:.1f} s" + (f" ({v / base:.2f}x)" if base else "") for n, v in med.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", choices=sorted(DIMS), default="main")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--frames", type=int, default=630, help="validation frames (the lab's 630)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="+", help="variants to time (default all)")
    ap.add_argument("--out", type=Path, help="CSV of every timed call (appended to)")
    ap.add_argument("--summary", type=Path, help="only print the medians of a CSV this script wrote")
    args = ap.parse_args()
    if args.summary:
        with args.summary.open(newline="") as fh:
            rows = [{**r, "threads": int(r["threads"]), "seconds": float(r["seconds"])} for r in csv.DictReader(fh)]
        summarize(rows, sorted({r["threads"] for r in rows}), list(dict.fromkeys(r["variant"] for r in rows)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate_dataset(root, train_frames=768, train_video_len=48, val_frames=args.frames, test_sequences=1,
                         test_frames=8, dancers=1, seed=0, workers=2)
        val = load_split(root, "val", (32, 64), workers=2, cache_dir=tmp)
        train = load_split(root, "train", (32, 64), workers=2, cache_dir=tmp)
    frames, poses = val.frames[None], val.poses[None]
    other = other_video_frames(train.frames, frames[:, 0])
    torch.manual_seed(0)
    model = CVAE(DIMS[args.dims]).to(memory_format=torch.channels_last).eval()
    runs = variants(model, frames, poses, other)
    names = args.only or list(runs)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        # warm-up: kernels built, caches filled
        evaluate(model, frames[:, :20], poses[:, :20], seed=0, samples=5, other=other)
        for rep in range(args.repeats):
            for name in names:
                t0 = time.perf_counter()
                runs[name]()
                seconds = time.perf_counter() - t0
                rows.append({"dims": args.dims, "threads": threads, "variant": name, "repeat": rep,
                             "frames": args.frames, "seconds": round(seconds, 3), "cpu": platform.processor()
                             or platform.machine()})
                print(f"threads {threads} {name:8s} repeat {rep}: {seconds:7.2f} s", flush=True)
    summarize(rows, args.threads, names)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        new = not args.out.exists()
        with args.out.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
