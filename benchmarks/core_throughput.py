"""The trainer against the lab's protocol, side by side in one process: training frames/s, validation rollout.

Usage:
    python benchmarks/core_throughput.py                       # everything, lab defaults, CPU
    python benchmarks/core_throughput.py --only train --steps 6
    python benchmarks/core_throughput.py --only rollout --rollout 630 --test_sequences 5
    python benchmarks/core_throughput.py --device cuda --amp bf16   # GPU (ours: bf16, whole clips)

Baseline = ``benchmarks/reference.py``, the lab's protocol written straight: batch 2, one time step at a time with
the frame encoder run twice per step, fp32 NCHW, activations out of place, every PNG decoded again each
time a clip is drawn, and a batch-1 validation that computes the unused posterior. Ours = ``core.trainer``
/ ``core.rollout`` as ``cvae train`` runs them (cached uint8 frames, channels_last, in-place activations,
batched independent work; on CUDA bf16 autocast and whole clips per call when --amp bf16).

Both sides start from the same weights and see the same amount of work; their steps are interleaved
(lab, ours, lab, ours...) so that drift in the machine's speed hits both alike. Before timing, one
fixed-seed batch checks that both give the same losses and gradients. FLOPs are counted with
``torch.utils.flop_counter`` and compared with this machine's measured fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
from pathlib import Path

import torch
from cvae.core.config import ModelConfig
from cvae.core.data import ClipBatches, load_split
from cvae.core.model import CVAE, set_inplace_activations
from cvae.core.rollout import rollout
from cvae.core.synth import generate_dataset
from cvae.core.trainer import default_time_chunk, forward_clip, memory_format, train_step
from reference import PngClips, lab_clip_forward, lab_rollout, lab_train_step  # beside this script
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured dense matmul GFLOP/s: the practical peak the convolutions are compared with."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def row(name: str, lab: float, ours: float, unit: str, higher_is_better: bool = True) -> str:
    ratio = ours / lab if higher_is_better else lab / ours
    return f"  {name:<34} {lab:>10.2f} {ours:>10.2f}  {unit:<12} {ratio:5.2f}x"


def header(title: str) -> None:
    print(f"\n{title}\n  {'':<34} {'lab':>10} {'ours':>10}  {'unit':<12} {'ours/lab':>8}")


def models(args: argparse.Namespace, device: torch.device, dims: ModelConfig):
    """(lab, ours, ours' autocast): the same weights, the lab's as its code runs them, ours as cvae train does."""
    torch.manual_seed(0)
    lab = set_inplace_activations(CVAE(dims), False).to(device)
    ours = CVAE(dims).to(device)
    ours.load_state_dict(lab.state_dict())
    ours.to(memory_format=memory_format(not args.nchw))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if args.amp == "bf16" else None
    return lab, ours, autocast


def bench_train(args: argparse.Namespace, device: torch.device, dims: ModelConfig, peak: float) -> None:
    b, t = args.batch_size, args.train_vi_len
    ours_b = args.ours_batch_size or b
    rounds = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            generate_dataset(root, train_frames=max(b, ours_b) * t * rounds * 2, val_frames=t, test_sequences=1,
                             test_frames=2, seed=0)
        size = (32, 64)
        lab_data = PngClips(root, size, t)
        lab_loader = torch.utils.data.DataLoader(lab_data, batch_size=b, shuffle=True, drop_last=True)
        ours_data = load_split(root, "train", size, cache_dir=Path(tmp) / "cache")

        lab, ours, autocast = models(args, device, dims)
        chunk = args.time_chunk or default_time_chunk(device, ours_b)

        # Same losses and gradients on one fixed-seed batch (fp32 on both sides for this check).
        frames, poses = next(iter(lab_loader))
        frames, poses = frames.to(device), poses.to(device)
        eps = torch.randn(b, t - 1, dims.N_dim, *size, device=device)
        for tf in (True, False):
            _, mse_a, kl_a = lab_clip_forward(lab, frames, poses, teacher_forcing=tf, eps=eps)
            _, mse_b, kl_b = forward_clip(ours, frames, poses, tf, eps, time_chunk=chunk)
            loss_a, loss_b = (mse_a + 0.5 * kl_a).mean(), mse_b.mean() + 0.5 * kl_b.mean()
            lab.zero_grad(), ours.zero_grad()
            loss_a.backward(), loss_b.backward()
            ga = torch.cat([q.grad.flatten() for q in lab.parameters()])
            gb = torch.cat([q.grad.flatten() for q in ours.parameters()])  # flatten follows logical order
            grad_diff = float((ga - gb).norm() / ga.norm())
            print(f"  same batch, teacher_forcing={tf!s:5}: loss lab {loss_a.item():.7f} ours {loss_b.item():.7f} "
                  f"(rel. diff {abs(loss_a.item() - loss_b.item()) / abs(loss_a.item()):.1e}); "
                  f"gradients: |g_ours - g_lab| / |g_lab| = {grad_diff:.1e}")
        lab.zero_grad(set_to_none=True), ours.zero_grad(set_to_none=True)
        # Identical BatchNorm statistics again before timing.
        ours.load_state_dict(lab.state_dict())

        lab_opt = torch.optim.Adam(lab.parameters(), lr=1e-4)
        ours_opt = torch.optim.Adam(ours.parameters(), lr=1e-4)
        frames_per_step = {"lab": b * (t - 1), "ours": ours_b * (t - 1)}
        flops = {}
        for tf in (True, False):
            lab_iter = iter(lab_loader)
            ours_iter = iter(ClipBatches(ours_data, t, ours_b, 1.0, shuffle=True, augment=False,
                                         crop_scale=(1.0, 1.0), device=device))

            def lab_step(tf=tf, it=lab_iter) -> None:
                f, p = next(it)
                lab_train_step(lab, lab_opt, f.to(device), p.to(device), beta=0.5, teacher_forcing=tf)

            def ours_step(tf=tf, it=ours_iter) -> None:
                f, p = next(it)
                train_step(ours, ours_opt, f, p, beta=0.5, teacher_forcing=tf, grad_clip=1.0, autocast=autocast,
                           time_chunk=chunk)

            seconds = {"lab": 0.0, "ours": 0.0}
            for i in range(rounds):
                for name, step in (("lab", lab_step), ("ours", ours_step)):
                    sync(device)
                    t0 = time.perf_counter()
                    step()
                    sync(device)
                    if i >= args.warmup:
                        seconds[name] += time.perf_counter() - t0
            fps = {k: args.steps * frames_per_step[k] / seconds[k] for k in seconds}
            if device.type == "cpu" and tf:
                flops = {"lab": count_flops(lab_step) / frames_per_step["lab"],
                         "ours": count_flops(ours_step) / frames_per_step["ours"]}
            header(f"training, teacher_forcing={tf} ({args.steps} timed steps each, batch lab {b} / ours {ours_b} "
                   f"x {t} frames)")
            print(row("predicted frames/s", fps["lab"], fps["ours"], "frames/s"))
            print(row("seconds per step", seconds["lab"] / args.steps, seconds["ours"] / args.steps, "s",
                      higher_is_better=False))
            if flops and tf:
                lab_gf, ours_gf = flops["lab"] / 1e9, flops["ours"] / 1e9
                print(row("GFLOP per predicted frame (f+b)", lab_gf, ours_gf, "GFLOP", higher_is_better=False))
                print(row("achieved GFLOP/s", lab_gf * fps["lab"], ours_gf * fps["ours"], "GFLOP/s"))
                print(row("% of measured fp32 matmul peak", 100 * lab_gf * fps["lab"] / peak,
                          100 * ours_gf * fps["ours"] / peak, "%"))
                print(row("lab-equivalent GFLOP/s (lab FLOPs)", lab_gf * fps["lab"], lab_gf * fps["ours"], "GFLOP/s"))
            if device.type == "cuda":
                print(f"  ours: peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def bench_rollout(args: argparse.Namespace, device: torch.device, dims: ModelConfig) -> None:
    lab, ours, autocast = models(args, device, dims)
    n, s = args.rollout, args.test_sequences
    frames = torch.rand(s, n, 3, 32, 64, device=device)
    poses_u8 = torch.randint(0, 256, (s, n, 3, 32, 64), dtype=torch.uint8)
    poses = poses_u8.to(device).float() / 255

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(0)

    lab_rollout(lab, frames[:1, :3], poses[:1, :3], generator=gen())  # warm-up
    rollout(ours, frames[:1, 0], poses_u8[:1, :3], generator=gen(), autocast=autocast)
    sync(device)
    t0 = time.perf_counter()
    want = lab_rollout(lab, frames[:1], poses[:1], generator=gen())
    sync(device)
    lab_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = rollout(ours, frames[:1, 0], poses_u8[:1], generator=gen(), autocast=autocast)
    sync(device)
    ours_s = time.perf_counter() - t0
    header(f"validation rollout, {n} frames (batch 1)")
    print(row("seconds", lab_s, ours_s, "s", higher_is_better=False))
    print(row("frames/s", (n - 1) / lab_s, (n - 1) / ours_s, "frames/s"))
    diff = (got - want).abs().amax(dim=(0, 2, 3, 4))
    print(f"  same frames: largest |ours - lab| {diff[:10].max():.1e} over frames 1-9, {diff.max():.1e} over all "
          f"{n} (autoregression amplifies rounding)")
    if s > 1:
        t0 = time.perf_counter()
        rollout(ours, frames[:, 0], poses_u8, generator=gen(), autocast=autocast)
        sync(device)
        batched = time.perf_counter() - t0
        header(f"test set: {s} sequences x {n} frames (lab: one after another, estimated from the batch-1 run)")
        print(row("seconds", lab_s * s, batched, "s", higher_is_better=False))
        print(row("seconds per sequence", lab_s, batched / s, "s", higher_is_better=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, default in (("F_dim", 128), ("L_dim", 32), ("N_dim", 12), ("D_out_dim", 192), ("batch_size", 2),
                         ("train_vi_len", 16), ("steps", 4), ("warmup", 1), ("rollout", 630),
                         ("test_sequences", 5)):
        p.add_argument(f"--{key}", type=int, default=default)
    p.add_argument("--ours_batch_size", type=int, default=None,
                   help="ours trains with this batch (default: the lab's; a GPU wants more)")
    p.add_argument("--only", choices=["train", "rollout"], default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="ours only; CUDA only")
    p.add_argument("--nchw", action="store_true", help="ours without channels_last")
    p.add_argument("--time_chunk", type=int, default=None, help="default: 4 // batch on CPU, whole clip on CUDA")
    p.add_argument("--data", default=None, help="a dataset root in the lab's layout (default: generated)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.amp == "bf16" and device.type != "cuda":
        p.error("--amp bf16 is for CUDA only (this CPU has no bf16 hardware)")
    dims = ModelConfig(args.F_dim, args.L_dim, args.N_dim, args.D_out_dim)
    peak = matmul_peak(device, torch.float32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, {name}, {torch.get_num_threads()} threads, {dims}")
    print(f"measured fp32 matmul peak: {peak:.0f} GFLOP/s" + (
        f"; bf16: {matmul_peak(device, torch.bfloat16):.0f} GFLOP/s" if device.type == "cuda" else ""))
    with torch.backends.cudnn.flags(benchmark=True) if device.type == "cuda" else contextlib.nullcontext():
        if args.only in (None, "train"):
            bench_train(args, device, dims, peak)
        if args.only in (None, "rollout"):
            bench_rollout(args, device, dims)


if __name__ == "__main__":
    main()
