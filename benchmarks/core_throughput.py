"""Measure the trainer: training frames/s and one 630-frame validation rollout, at given model sizes.

Usage:
    python benchmarks/core_throughput.py [--F_dim 128 --L_dim 32 --N_dim 12 --D_out_dim 192]
        [--batch_size 2] [--train_vi_len 16] [--steps 6] [--warmup 2] [--rollout 630] [--threads N]

Random inputs of the lab's frame size (32x64); the data path is not measured (it is a cached tensor
gather). Teacher forcing is measured both on and off, since the two paths differ in cost. Prints one
line per measurement; the figures in the README come from this script.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from core.model import CVAE, ModelDims
from core.rollout import rollout
from core.trainer import default_time_chunk, train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, default in (("F_dim", 128), ("L_dim", 32), ("N_dim", 12), ("D_out_dim", 192), ("batch_size", 2),
                         ("train_vi_len", 16), ("steps", 6), ("warmup", 2), ("rollout", 630)):
        p.add_argument(f"--{key}", type=int, default=default)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--time_chunk", type=int, default=None, help="default: 1 on CPU, whole clip on CUDA")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    dims = ModelDims(args.F_dim, args.L_dim, args.N_dim, args.D_out_dim)
    model = CVAE(dims).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = torch.rand(args.batch_size, args.train_vi_len, 3, 32, 64, device=device)
    poses = torch.rand_like(frames)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads "
          f"{torch.get_num_threads()}, device {device}, dims {dims}, batch {args.batch_size}x{args.train_vi_len}")
    per_batch = args.batch_size * (args.train_vi_len - 1)
    for tf in (True, False):
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            train_step(model, opt, frames, poses, beta=0.5, teacher_forcing=tf, grad_clip=1.0,
                       time_chunk=args.time_chunk or default_time_chunk(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"train  teacher_forcing={tf!s:5}  {args.steps * per_batch / dt:7.2f} predicted frames/s  "
              f"({dt / args.steps:.3f} s/batch)")
    first = torch.rand(1, 3, 32, 64, device=device)
    seq = torch.randint(0, 256, (1, args.rollout, 3, 32, 64), dtype=torch.uint8)
    gen = torch.Generator(device=device).manual_seed(0)
    rollout(model, first, seq[:, :8], generator=gen)  # warm-up
    t0 = time.perf_counter()
    rollout(model, first, seq, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"rollout {args.rollout} frames (batch 1): {dt:.1f} s  ({(args.rollout - 1) / dt:.1f} frames/s)")


if __name__ == "__main__":
    main()
